// Login in a real browser with a password and an authenticator-app code (oathtool, an
// independent generator), then the session's life on protected pages:
//   1. a protected page sends the browser to login; login brings it back to the same page;
//   2. the absolute cap ends the session even while the user stays active (the gateway's clock
//      is moved by the Rust test: nothing sleeps); login brings it back to the same page again;
//   3. a route that wants a fresh second factor (reauth_within) asks for it again without the
//      password (step-up), with a new session cookie, and returns to that route;
//   4. logout from the gateway's own page ends the session.
//
// env: GATEWAY_URL, USER_NAME, PASSWORD, TOTP_SECRET, IDLE_TIMEOUT, ABSOLUTE_TIMEOUT,
//      REAUTH_WITHIN (seconds), ARTIFACTS (screenshot directory)
// stdout: {"advance_clock": N} lines for the test, then one JSON line with what was observed.

import { advanceClock, arrive, env, fail, inBrowser, submit, totp } from './lib.mjs';

const TOTP_BUTTON = 'form[action="/.wardgate/login/totp"] button';

inBrowser(async ({ page, context, observed, shot }) => {
  const gateway = env('GATEWAY_URL');
  const user = env('USER_NAME');
  const password = env('PASSWORD');
  const secret = env('TOTP_SECRET');
  const idle = Number(env('IDLE_TIMEOUT'));
  const absolute = Number(env('ABSOLUTE_TIMEOUT'));
  const reauth = Number(env('REAUTH_WITHIN'));
  const sessionCookie = async () => (await context.cookies())
    .find((c) => c.name === '__Host-wardgate-session');
  const target = `${gateway}/api/records/7?view=full`;
  // Password, then an app code; the answer redirects back to `target`.
  const logIn = async () => {
    await page.fill('#user', user);
    await page.fill('#password', password);
    await submit(page, 'button[type=submit]');
    await page.fill('#code', totp(secret));
    return arrive(page, TOTP_BUTTON, target);
  };
  // 1. To login and back.
  await page.goto(target);
  observed.login_url = page.url();
  observed.login_notices = await page.locator('#login-notice').count();
  await shot('1-login');
  await page.fill('#user', user);
  await page.fill('#password', 'not the password at all');
  const refused = await submit(page, 'button[type=submit]');
  observed.wrong_password = {
    status: refused.status(),
    error: await page.textContent('#login-error'),
    user_kept: await page.inputValue('#user'),
  };
  await page.fill('#password', password);
  const factor = await submit(page, 'button[type=submit]');
  observed.factor_page = {
    status: factor.status(),
    totp: await page.locator('#code').count(),
    webauthn: await page.locator('#webauthn-button').count(),
    recovery: await page.locator('#recovery').count(),
  };
  await shot('2-second-factor');
  await page.fill('#code', '000000');
  const wrong = await submit(page, TOTP_BUTTON);
  observed.wrong_code = { status: wrong.status(), error: await page.textContent('#factor-error') };
  await page.fill('#code', totp(secret));
  const back = await arrive(page, TOTP_BUTTON, target);
  observed.after_login = { url: page.url(), status: back.status(), body: await page.textContent('body') };
  const cookie = await sessionCookie() || fail('no session cookie after login');
  observed.session_cookie = {
    httpOnly: cookie.httpOnly,
    secure: cookie.secure,
    sameSite: cookie.sameSite,
    expires: cookie.expires,
    path: cookie.path,
  };
  await shot('3-protected-page');

  // 2. Active all along, yet ended by the absolute cap.
  const step = idle - 100;
  observed.active_steps = [];
  let elapsed = 0;
  while (elapsed + step < absolute) {
    await advanceClock(step);
    elapsed += step;
    const response = await page.goto(target);
    observed.active_steps.push({ elapsed, url: page.url(), status: response.status() });
  }
  await advanceClock(absolute - elapsed + 1);
  await page.goto(target);
  observed.capped = {
    url: page.url(),
    notice: await page.textContent('#login-notice'),
  };
  await shot('4-absolute-cap');
  const again = await logIn();
  observed.after_relogin = { url: page.url(), status: again.status() };

  // 3. Step-up on a route that wants a fresh second factor.
  const before = (await sessionCookie()).value;
  await advanceClock(reauth + 60);
  const sensitive = `${gateway}/sensitive/1`;
  await page.goto(sensitive);
  observed.step_up = {
    url: page.url(),
    notice: await page.textContent('#factor-notice'),
    password_fields: await page.locator('#password').count(),
    totp: await page.locator('#code').count(),
  };
  await shot('5-step-up');
  await page.fill('#code', totp(secret));
  const stepped = await arrive(page, TOTP_BUTTON, sensitive);
  observed.after_step_up = {
    url: page.url(),
    status: stepped.status(),
    rotated: (await sessionCookie()).value !== before,
  };

  // 4. Logout from the gateway's own page.
  await page.goto(`${gateway}/.wardgate/`);
  observed.home_user = await page.textContent('#home-user');
  await shot('6-home');
  await arrive(page, '#logout', `${gateway}/.wardgate/login?reason=logout`);
  observed.after_logout = {
    url: page.url(),
    notice: await page.textContent('#login-notice'),
    cookie: (await sessionCookie()) ? 'present' : 'gone',
  };
  await page.goto(target);
  observed.after_logout_target = page.url();
});
