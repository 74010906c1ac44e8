// Break-glass in a real browser, from the pages only:
//   1. a physician logs in (password and an authenticator-app code from oathtool, an
//      independent generator); the patient's route refuses them (403, a link to ask);
//   2. later than reauth_within (the Rust test moves the gateway's clock: nothing sleeps), the
//      break-glass page sends them through the step-up and back; they pick a reason and open
//      emergency access, and the route answers at once;
//   3. a privacy officer, in a second browser context, finds the use in the review queue and
//      marks it reviewed;
//   4. past the break-glass duration the route refuses the physician again.
//
// env: GATEWAY_URL, PASSWORD, PHYSICIAN, PHYSICIAN_SECRET, OFFICER, OFFICER_SECRET, PATIENT,
//      REAUTH_WITHIN, DURATION (seconds), ARTIFACTS (screenshot directory)
// stdout: {"advance_clock": N} lines for the test, then one JSON line with what was observed.

import { advanceClock, arrive, env, inBrowser, newContext, screenshot, submit, totp } from './lib.mjs';

const TOTP_BUTTON = 'form[action="/.wardgate/login/totp"] button';

inBrowser(async ({ page, context, observed, shot }) => {
  const gateway = env('GATEWAY_URL');
  const password = env('PASSWORD');
  const patient = env('PATIENT');
  const reauth = Number(env('REAUTH_WITHIN'));
  const duration = Number(env('DURATION'));
  const home = `${gateway}/.wardgate/`;
  const route = `${gateway}/api/patients/${patient}/labs/1`;
  const breakGlass = `${gateway}/.wardgate/access/break-glass`;
  const reviews = `${gateway}/.wardgate/access/reviews`;
  // Password, then an app code: the home page.
  const logIn = async (tab, user, secret) => {
    await tab.goto(`${gateway}/.wardgate/login`);
    await tab.fill('#user', user);
    await tab.fill('#password', password);
    await submit(tab, 'button[type=submit]');
    await tab.fill('#code', totp(secret));
    return arrive(tab, TOTP_BUTTON, home);
  };

  // 1. Logged in; the record is refused, with a link to ask for access.
  await logIn(page, env('PHYSICIAN'), env('PHYSICIAN_SECRET'));
  observed.home_links = await page.$$eval('section a', (links) => links.map((a) => a.id));
  const refused = await page.goto(route);
  observed.before = {
    status: refused.status(),
    code: await page.textContent('#refusal-code'),
    ask: await page.getAttribute('#request-access', 'href'),
  };
  await shot('1-refused');

  // 2. The second factor is no longer fresh: step-up, back to the form, open.
  await advanceClock(reauth + 60);
  await page.goto(home);
  await Promise.all([page.waitForNavigation(), page.click('#link-break-glass')]);
  observed.step_up = {
    url: page.url(),
    notice: await page.textContent('#factor-notice'),
    password_fields: await page.locator('#password').count(),
  };
  await shot('2-step-up');
  await page.fill('#code', totp(env('PHYSICIAN_SECRET')));
  const form = await arrive(page, TOTP_BUTTON, breakGlass);
  observed.form = {
    url: page.url(),
    status: form.status(),
    reasons: await page.$$eval('#reason option', (options) => options.map((o) => o.value)),
  };
  await page.fill('#patient', patient);
  await page.selectOption('#reason', 'unconscious');
  await page.fill('#text', 'found unresponsive in the waiting room');
  await shot('3-break-glass');
  await arrive(page, '#break-glass', `${gateway}/.wardgate/access/mine`);
  observed.opened = {
    status: await page.textContent('.request .status'),
    emergency: await page.textContent('.request .emergency'),
    ends: await page.textContent('.request .ends'),
  };
  await shot('4-opened');
  const open = await page.goto(route);
  observed.during = { status: open.status(), body: await page.textContent('body') };

  // 3. The privacy officer reviews it, in another browser.
  const officerContext = await newContext(context.browser());
  const officer = await officerContext.newPage();
  await logIn(officer, env('OFFICER'), env('OFFICER_SECRET'));
  await officer.click('#link-reviews');
  await officer.waitForURL(reviews);
  observed.queue = {
    entries: await officer.locator('article.request').count(),
    requester: await officer.textContent('.request .requester'),
    patient: await officer.textContent('.request .patient'),
    emergency: await officer.textContent('.request .emergency'),
    reason: await officer.textContent('.request .reason'),
  };
  observed.screenshots.push(await screenshot(officer, '5-review-queue'));
  await officer.fill('.request input[name=comment]', 'checked the chart: justified');
  await arrive(officer, '.request button.appropriate', reviews);
  observed.after_review = {
    entries: await officer.locator('article.request').count(),
    none: await officer.textContent('#none'),
  };
  await officerContext.close();

  // 4. Past its duration the emergency access is over.
  await advanceClock(duration + 1);
  const after = await page.goto(route);
  observed.after = { status: after.status(), code: await page.textContent('#refusal-code') };
  await shot('6-ended');
});
