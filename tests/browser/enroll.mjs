// Enrollment in a real browser: the link from `wardgate user add`, a weak password (every
// reason listed), a strong one, the authenticator secret read off the page, a code from
// oathtool (an independent generator), and the recovery codes.
//
// env: GATEWAY_URL (https://localhost:PORT), ENROLL_TOKEN, ARTIFACTS (screenshot directory)
// stdout: one JSON line with what was observed; exit status non-zero on any failure.

import { env, fail, inBrowser, submit, totp } from './lib.mjs';

const WEAK = 'alice';
const STRONG = 'Violet lanterns hum 7 quiet tunes!';

async function texts(page, selector) {
  return page.locator(selector).allTextContents();
}

inBrowser(async ({ page, context, observed, shot }) => {
  const gateway = env('GATEWAY_URL');
  const token = env('ENROLL_TOKEN');
  const first = await page.goto(`${gateway}/.wardgate/enroll?token=${encodeURIComponent(token)}`);
  observed.form_status = first.status();
  observed.csp = first.headers()['content-security-policy'];
  observed.rules = await texts(page, '#password-rules li');
  observed.user_name = await page.inputValue('#user-name');
  observed.autocomplete = await page.getAttribute('#password', 'autocomplete');
  const cookies = await context.cookies();
  const csrf = cookies.find((c) => c.name === '__Host-wardgate-csrf') || fail('no CSRF cookie');
  observed.csrf_cookie = { httpOnly: csrf.httpOnly, secure: csrf.secure, sameSite: csrf.sameSite, expires: csrf.expires };
  await shot('1-password-form');

  await page.fill('#password', WEAK);
  const weak = await submit(page, 'button[type=submit]');
  observed.weak_status = weak.status();
  observed.weak_reasons = await texts(page, '#password-errors li');
  if (observed.weak_reasons.length === 0) fail('the weak password was not refused with reasons');
  await shot('2-password-refused');

  await page.fill('#password', STRONG);
  const strong = await submit(page, 'button[type=submit]');
  observed.totp_status = strong.status();
  const secret = (await page.textContent('#totp-secret') || '').trim();
  if (!/^[A-Z2-7]+=*$/.test(secret)) fail(`no base32 secret on the authenticator page: ${secret}`);
  observed.secret = secret;
  observed.otpauth = await page.getAttribute('#totp-link', 'href');
  const qr = await page.locator('#totp-qr');
  observed.qr_width = await qr.evaluate((img) => img.naturalWidth);
  observed.code_autocomplete = await page.getAttribute('#code', 'autocomplete');
  await shot('3-authenticator');

  await page.fill('#code', totp(secret, 0));
  const done = await submit(page, 'button[type=submit]');
  observed.done_status = done.status();
  observed.recovery_codes = await texts(page, '.recovery-code');
  if (observed.recovery_codes.length !== 10) {
    fail(`expected 10 recovery codes, saw ${observed.recovery_codes.length}`);
  }
  await shot('4-recovery-codes');
});
