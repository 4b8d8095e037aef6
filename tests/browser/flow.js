// Drives Debian's chromium (never a downloaded browser) through a list of steps, for
// tether's end-to-end tests.
//
//   node tests/browser/flow.js '<json>'
//
// json = {
//   "steps": [ ... ],            // run in order, see below
//   "screenshotDir": "/path",    // screenshots and fail-<index>.png go here
//   "storageState": "/path.json" // optional: cookie jar loaded if it exists and saved at
//                                // the end (also after a failure), so several
//                                // invocations behave like one browser profile
// }
//
// Steps (one key each):
//   {"goto": url}                                   navigate, remember the status
//   {"login": {"user": u, "password": p}}           fill the IdP login form if shown
//   {"click": selector}                             click, wait for any navigation
//   {"check": selector}                             tick a checkbox
//   {"select": {"selector": s, "value": v}}         choose a <select> option by value
//   {"fill": {"selector": s, "value": v}}           type into an input
//   {"expectText": s}                               body text contains s (waits 10 s)
//   {"expectNoText": s}                             body text does not contain s
//   {"expectUrl": s}                                current URL contains s
//   {"expectStatus": n}                             status of the last main-frame
//                                                   document response (goto or a
//                                                   navigation caused by click/login)
//   {"expectDisabled": selector} / {"expectEnabled": selector}
//   {"screenshot": name}                            <screenshotDir>/<name>.png, full page
//   {"text": {"name": n, "selector": s}}            prints TEXT n <json string>
//   {"wait": ms}
//   {"setValue": {"selector": s, "value": v}}      sets an input's value (hidden ones too)
//   {"value": {"name": n, "selector": s}}          prints TEXT n <input value>
//   {"post": {"url": u, "form": {...}, "expect": n}} fetch() POST from the page with
//                                                   credentials 'include'; prints
//                                                   STATUS <code> (0 when the browser
//                                                   hides the response); fails when
//                                                   "expect" is given and differs
//
// stdout protocol: TEXT / STATUS lines as steps run, then FLOW_OK; or
// FLOW_FAIL <step index, 0-based> <message> (and fail-<index>.png) with exit status 1.
// Diagnostics go to stderr. The whole run is bounded by 60 s.

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const GLOBAL_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 30_000;
const TEXT_WAIT_MS = 10_000;

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
];

function out(line) {
  process.stdout.write(`${line}\n`);
}

function log(...args) {
  console.error('flow:', ...args);
}

function oneLine(s) {
  return String(s).replace(/\s+/g, ' ').trim();
}

class StepError extends Error {}

let spec;
try {
  spec = JSON.parse(process.argv[2] || '');
} catch (err) {
  out(`FLOW_FAIL -1 invalid JSON argument: ${oneLine(err.message)}`);
  process.exit(1);
}
const steps = Array.isArray(spec.steps) ? spec.steps : [];
const screenshotDir = spec.screenshotDir || process.cwd();
const storageState = spec.storageState || null;

let browser = null;
let context = null;
let page = null;
let current = -1;
let finished = false;
let lastStatus = null;

async function saveState() {
  if (context && storageState) {
    try {
      fs.mkdirSync(path.dirname(storageState), { recursive: true });
      await context.storageState({ path: storageState });
    } catch (err) {
      log('could not save storage state:', err.message);
    }
  }
}

async function failScreenshot(index) {
  if (!page) return;
  try {
    fs.mkdirSync(screenshotDir, { recursive: true });
    await page.screenshot({ path: path.join(screenshotDir, `fail-${index}.png`), fullPage: true, timeout: 5000 });
  } catch (err) {
    log('could not take failure screenshot:', err.message);
  }
}

async function bodyText() {
  try {
    return await page.evaluate(() => (document.body ? document.body.innerText : ''));
  } catch {
    return ''; // navigating; the caller polls again
  }
}

// Runs `action`; if it starts a main-frame navigation, waits for that page to load.
async function withNavigation(action) {
  const isMainNav = (r) => r.isNavigationRequest() && r.frame() === page.mainFrame();
  const started = page.waitForEvent('request', { predicate: isMainNav, timeout: 2000 }).catch(() => null);
  const loaded = page.waitForNavigation({ waitUntil: 'load', timeout: STEP_TIMEOUT_MS }).catch((err) => err);
  await action();
  if (await started) {
    const res = await loaded;
    if (res instanceof Error) throw res;
  }
  await page.waitForLoadState('load', { timeout: STEP_TIMEOUT_MS });
}

const handlers = {
  async goto(url) {
    const res = await page.goto(url, { waitUntil: 'load', timeout: STEP_TIMEOUT_MS });
    if (res) lastStatus = res.status();
  },

  async login({ user, password }) {
    const form = await page.$('input[name=login]');
    if (!form) {
      log('no IdP login form, already signed in');
      return;
    }
    await page.fill('input[name=login]', String(user));
    await page.fill('input[name=password]', String(password));
    await withNavigation(() => page.click('button[type=submit]'));
  },

  async click(selector) {
    await withNavigation(() => page.click(selector, { timeout: STEP_TIMEOUT_MS }));
  },

  async select({ selector, value }) {
    await page.selectOption(selector, String(value), { timeout: STEP_TIMEOUT_MS });
  },

  async check(selector) {
    await page.check(selector, { timeout: STEP_TIMEOUT_MS });
  },

  async fill({ selector, value }) {
    await page.fill(selector, String(value), { timeout: STEP_TIMEOUT_MS });
  },

  async expectText(text) {
    const deadline = Date.now() + TEXT_WAIT_MS;
    let body = '';
    for (;;) {
      body = await bodyText();
      if (body.includes(text)) return;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new StepError(`text ${JSON.stringify(text)} not found in page ${page.url()}; body: ${JSON.stringify(oneLine(body).slice(0, 400))}`);
  },

  async expectNoText(text) {
    const body = await bodyText();
    if (body.includes(text)) {
      throw new StepError(`text ${JSON.stringify(text)} unexpectedly present in page ${page.url()}`);
    }
  },

  async expectUrl(fragment) {
    if (!page.url().includes(fragment)) {
      throw new StepError(`URL ${page.url()} does not contain ${JSON.stringify(fragment)}`);
    }
  },

  async expectStatus(code) {
    if (lastStatus !== Number(code)) {
      throw new StepError(`expected status ${code}, last document status was ${lastStatus}`);
    }
  },

  async expectDisabled(selector) {
    if (!(await page.isDisabled(selector, { timeout: STEP_TIMEOUT_MS }))) {
      throw new StepError(`${selector} is enabled`);
    }
  },

  async expectEnabled(selector) {
    if (!(await page.isEnabled(selector, { timeout: STEP_TIMEOUT_MS }))) {
      throw new StepError(`${selector} is disabled`);
    }
  },

  async screenshot(name) {
    fs.mkdirSync(screenshotDir, { recursive: true });
    await page.screenshot({ path: path.join(screenshotDir, `${name}.png`), fullPage: true });
  },

  async text({ name, selector }) {
    const value = await page.innerText(selector, { timeout: STEP_TIMEOUT_MS });
    out(`TEXT ${name} ${JSON.stringify(value)}`);
  },

  async setValue({ selector, value }) {
    await page.$eval(selector, (el, v) => { el.value = v; }, value);
  },

  async value({ name, selector }) {
    const value = await page.inputValue(selector, { timeout: STEP_TIMEOUT_MS });
    out(`TEXT ${name} ${JSON.stringify(value)}`);
  },

  async wait(ms) {
    await new Promise((r) => setTimeout(r, Number(ms)));
  },

  async post({ url, form, expect }) {
    const status = await page.evaluate(async ({ u, f }) => {
      try {
        const r = await fetch(u, {
          method: 'POST',
          credentials: 'include',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams(f || {}).toString(),
        });
        return r.status;
      } catch {
        return 0;
      }
    }, { u: url, f: form });
    out(`STATUS ${status}`);
    if (expect !== undefined && status !== Number(expect)) {
      throw new StepError(`POST ${url}: expected status ${expect}, got ${status}`);
    }
  },
};

async function finish(code) {
  if (finished) return;
  finished = true;
  await saveState();
  if (browser) {
    await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  }
  process.exit(code);
}

async function main() {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 20_000,
  });
  const haveState = storageState && fs.existsSync(storageState);
  context = await browser.newContext({
    ignoreHTTPSErrors: true,
    ...(haveState ? { storageState } : {}),
  });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  page = await context.newPage();
  page.on('dialog', (d) => d.accept().catch(() => {}));
  page.on('console', (m) => log(`console.${m.type()}:`, m.text()));
  page.on('pageerror', (e) => log('page error:', e.message));
  page.on('response', (r) => {
    const req = r.request();
    if (req.isNavigationRequest() && req.frame() === page.mainFrame() && (r.status() < 300 || r.status() >= 400)) {
      lastStatus = r.status();
    }
  });

  for (let i = 0; i < steps.length; i += 1) {
    current = i;
    const step = steps[i];
    const keys = step && typeof step === 'object' ? Object.keys(step) : [];
    if (keys.length !== 1 || !handlers[keys[0]]) {
      throw new StepError(`unknown step ${JSON.stringify(step)}`);
    }
    log(`step ${i}: ${JSON.stringify(step)}`);
    await handlers[keys[0]](step[keys[0]]);
  }
}

const globalTimer = setTimeout(async () => {
  out(`FLOW_FAIL ${current} global timeout of ${GLOBAL_TIMEOUT_MS / 1000} s exceeded`);
  setTimeout(() => process.exit(1), 8000).unref();
  await failScreenshot(current);
  await finish(1);
}, GLOBAL_TIMEOUT_MS);

main().then(
  async () => {
    if (finished) return;
    clearTimeout(globalTimer);
    out('FLOW_OK');
    await finish(0);
  },
  async (err) => {
    if (finished) return;
    clearTimeout(globalTimer);
    out(`FLOW_FAIL ${current} ${oneLine(err.message)}`);
    await failScreenshot(current);
    await finish(1);
  },
);
