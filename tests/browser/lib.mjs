// Shared helpers for Wardgate's browser tests: the system's Chromium, headless, driven by
// playwright-core (no browser download; scripts/browser-deps.sh installs both).

import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
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
  const authenticatorId = await addAuthenticator(cdp, 'internal');
  return { cdp, authenticatorId };
}

/** One more virtual authenticator on `cdp` (`usb` for a security key); returns its id. */
export async function addAuthenticator(cdp, transport) {
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport,
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
    },
  });
  return authenticatorId;
}

/** Fails the run with a clear message. */
export function fail(message) {
  throw new Error(message);
}

/** The environment variable `name`; the run fails when it is not set. */
export function env(name) {
  return process.env[name] || fail(`${name} is not set`);
}

/**
 * Runs `main({ page, context, observed, shot })` in a fresh headless Chromium page; `shot(name)`
 * saves a screenshot into `observed.screenshots`. A failure saves `failure.png` first. At the
 * end prints `observed` as one JSON line (the test's result) and exits.
 */
export function inBrowser(main) {
  run(async () => {
    const observed = { screenshots: [] };
    const browser = await launch();
    const context = await newContext(browser);
    const page = await context.newPage();
    const shot = async (name) => observed.screenshots.push(await screenshot(page, name));
    try {
      await main({ page, context, observed, shot });
    } catch (error) {
      await screenshot(page, 'failure');
      throw error;
    } finally {
      await browser.close();
    }
    console.log(JSON.stringify(observed));
  });
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

let clockLines;
let clockSkew = 0;

/**
 * Moves the gateway's clock forward by `seconds`: prints `{"advance_clock": seconds}` for the
 * Rust test that runs this script and waits for its `ok` on stdin. Nothing sleeps.
 */
export async function advanceClock(seconds) {
  clockLines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  console.log(JSON.stringify({ advance_clock: seconds }));
  const { value, done } = await clockLines.next();
  if (done || value.trim() !== 'ok') fail('the test did not move the gateway clock');
  clockSkew += seconds;
}

/**
 * The TOTP code for `secret` from oathtool (an independent generator), at the gateway's time
 * plus `ahead` seconds: one step ahead keeps a code from repeating the step spent at enrollment.
 */
export function totp(secret, ahead = 30) {
  const at = Math.floor(Date.now() / 1000) + clockSkew + ahead;
  return execFileSync('oathtool', ['--totp', '--base32', secret, '-N', `@${at}`], {
    encoding: 'utf8',
  }).trim();
}

/**
 * Clicks `selector` and waits until the page has arrived at `url` (through any redirects and
 * script steps in between, such as a WebAuthn ceremony); returns the response for `url`.
 */
export async function arrive(page, selector, url) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === url && r.request().isNavigationRequest()),
    page.click(selector),
  ]);
  await page.waitForURL(url);
  return response;
}

/** Clicks `selector` and waits for the navigation it causes; returns the main response. */
export async function submit(page, selector) {
  const [response] = await Promise.all([page.waitForNavigation(), page.click(selector)]);
  return response;
}
