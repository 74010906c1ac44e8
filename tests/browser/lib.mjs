// Shared helpers for Wardgate's browser tests: the system's Chromium, headless, driven by
// playwright-core (no browser download; scripts/browser-deps.sh installs both).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** Launches headless Chromium with nothing running in the background. */
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A fresh context: the gateway's certificate is self-signed in tests. */
export async function newContext(browser) {
  return browser.newContext({ ignoreHTTPSErrors: true });
}

/** Saves a full-page PNG as `$ARTIFACTS/<name>.png` (nothing when ARTIFACTS is unset). */
export async function screenshot(page, name) {
  const dir = process.env.ARTIFACTS;
  if (!dir) return null;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * A virtual platform authenticator (passkey) for `page`, through the DevTools protocol:
 * CTAP2, internal transport, resident keys, user verification that always succeeds.
 * Returns the CDP session and the authenticator's id.
 */
export async function virtualAuthenticator(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
    },
  });
  return { cdp, authenticatorId };
}

/** Fails the run with a clear message. */
export function fail(message) {
  throw new Error(message);
}

/** Runs `main`; on any error prints it and exits non-zero. */
export function run(main) {
  main().then(
    () => process.exit(0),
    (error) => {
      console.error(`FAILED: ${error && error.stack ? error.stack : error}`);
      process.exit(1);
    },
  );
}
