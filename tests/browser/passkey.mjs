// Passkeys in a real browser: Chromium's virtual authenticator (DevTools protocol, CTAP2,
// internal transport, resident key, user verification) registers a passkey on the enrollment
// page, then signs in with it on the login page and reaches a protected page through the proxy.
// A tampered signature is refused. Logged in, the user adds a second authenticator (a virtual
// USB security key) from the gateway's home page, logs out, and logs in with that one. The gateway's own webauthn.js runs
// under the pages' strict CSP.
//
// env: GATEWAY_URL (https://localhost:PORT), ENROLL_TOKEN, USER_NAME, PASSWORD, ARTIFACTS
// stdout: one JSON line with what was observed; exit status non-zero on any failure.

import {
  addAuthenticator, arrive, env, inBrowser, submit, virtualAuthenticator,
} from './lib.mjs';

inBrowser(async ({ page, observed, shot }) => {
  const gateway = env('GATEWAY_URL');
  const token = env('ENROLL_TOKEN');
  const user = env('USER_NAME');
  const password = env('PASSWORD');
  const { cdp, authenticatorId } = await virtualAuthenticator(page);
  // What an authenticator holds: each credential's id (base64) and signature counter.
  const counters = async (id) => {
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: id });
    return credentials.map((c) => ({ id: c.credentialId, sign_count: c.signCount }));
  };

  // Enrollment: the password, then a passkey instead of the app.
  await page.goto(`${gateway}/.wardgate/enroll?token=${encodeURIComponent(token)}`);
  await page.fill('#password', password);
  await submit(page, 'button[type=submit]');
  await shot('1-second-factor-choice');
  const enrolled = await arrive(page, '#webauthn-button', `${gateway}/.wardgate/enroll/webauthn`);
  observed.enrolled = {
    status: enrolled.status(),
    recovery_codes: await page.locator('.recovery-code').count(),
  };
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  observed.credentials = credentials.map((c) => ({
    id: c.credentialId,
    resident: c.isResidentCredential,
    rp: c.rpId,
    sign_count: c.signCount,
  }));
  await shot('2-recovery-codes');

  // Login: password, then the passkey, then back to the protected page.
  const target = `${gateway}/api/records/9`;
  await page.goto(target);
  observed.login_url = page.url();
  await page.fill('#user', user);
  await page.fill('#password', password);
  await submit(page, 'button[type=submit]');
  observed.factor_page = {
    webauthn: await page.locator('#webauthn-button').count(),
    totp: await page.locator('#code').count(),
  };
  await shot('3-passkey-login');

  // A tampered signature (one byte flipped before the form goes out) is refused, and the
  // login can still be finished with a genuine one.
  await page.evaluate(() => {
    const form = document.getElementById('webauthn-form');
    const send = form.submit.bind(form);
    form.submit = () => {
      const credential = JSON.parse(form.elements.credential.value);
      const signature = credential.response.signature;
      const flipped = signature[10] === 'A' ? 'B' : 'A';
      credential.response.signature = signature.slice(0, 10) + flipped + signature.slice(11);
      form.elements.credential.value = JSON.stringify(credential);
      send();
    };
  });
  const tampered = await arrive(page, '#webauthn-button', `${gateway}/.wardgate/login/webauthn`);
  observed.tampered = { status: tampered.status(), error: await page.textContent('#factor-error') };
  const back = await arrive(page, '#webauthn-button', target);
  observed.after_login = { url: page.url(), status: back.status(), body: await page.textContent('body') };
  observed.passkey_after_login = await counters(authenticatorId);
  await shot('4-protected-page');

  // A second authenticator, added from the home page while the second factor is fresh.
  await page.goto(`${gateway}/.wardgate/`);
  await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
  const securityKey = await addAuthenticator(cdp, 'usb');
  const added = await arrive(page, '#webauthn-button', `${gateway}/.wardgate/passkeys`);
  observed.added = { status: added.status(), notice: await page.textContent('#home-notice') };
  observed.security_key_registered = await counters(securityKey);
  await shot('5-passkey-added');
  await submit(page, '#logout');
  await page.goto(target);
  await page.fill('#user', user);
  await page.fill('#password', password);
  await submit(page, 'button[type=submit]');
  const again = await arrive(page, '#webauthn-button', target);
  observed.with_security_key = { url: page.url(), status: again.status() };
  observed.security_key_after_login = await counters(securityKey);
});
