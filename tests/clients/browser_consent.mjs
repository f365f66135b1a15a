// Drives the cookie banner (/consent.js on /demo/shop) in a real Chromium against a running
// `confiance serve`, as a visitor would, and checks what reaches the server.
//
//   node browser_consent.mjs --base URL --admin-token T --phase main  --state FILE [--artifacts DIR]
//   node browser_consent.mjs --base URL --admin-token T --phase bump  --state FILE --notice-version V
//
// Phase `main` runs every check against a server on the first notice version and saves the
// cookies of its last visitor to --state. Phase `bump` is run after the server restarted with
// another notice version (--notice-version): the same visitor must see the banner again.
//
// stdout: one JSON line per check, {"check": name, "ok": bool, ...details}. Exit status 0 when
// every check passed, 1 when one failed, 2 on bad usage. Chromium is Debian's
// (CONFIANCE_TEST_CHROMIUM, default /usr/bin/chromium); no browser is ever downloaded.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    base: { type: 'string' },
    'admin-token': { type: 'string' },
    phase: { type: 'string', default: 'main' },
    state: { type: 'string' },
    artifacts: { type: 'string' },
    'notice-version': { type: 'string' },
  },
});
if (!opt.base || !opt['admin-token'] || !opt.state || !['main', 'bump'].includes(opt.phase)
    || (opt.phase === 'bump' && !opt['notice-version'])) {
  console.error('usage: browser_consent.mjs --base URL --admin-token T --phase main|bump --state FILE '
    + '[--artifacts DIR] [--notice-version V]');
  process.exit(2);
}
const BASE = opt.base.replace(/\/+$/, '');
const SHOP = `${BASE}/demo/shop`;
const ARTIFACTS = opt.artifacts
  || path.resolve(path.dirname(new URL(import.meta.url).pathname), '../artifacts');
fs.mkdirSync(ARTIFACTS, { recursive: true });
const COOKIE = 'confiance_consent';
const GZIP_LIMIT = 15 * 1024;

// ---- reporting --------------------------------------------------------------------------------

let failed = 0;
function report(check, ok, details = {}) {
  if (!ok) failed += 1;
  console.log(JSON.stringify({ check, ok, ...details }));
}

class CheckError extends Error {
  constructor(message, details = {}) {
    super(message);
    this.details = details;
  }
}
function expect(cond, message, details) {
  if (!cond) throw new CheckError(message, details);
}
// Deep equality, whatever the order of object keys.
function canonical(v) {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]));
  return v;
}
function same(a, b) {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

// Runs one check; a thrown error (or a failed expect) reports it failed and returns null.
async function check(name, body) {
  try {
    const details = (await body()) || {};
    report(name, true, details);
    return details;
  } catch (e) {
    report(name, false, { error: e.message, ...(e.details || {}), stack: e instanceof CheckError ? undefined : e.stack });
    return null;
  }
}

// ---- the browser ------------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: process.env.CONFIANCE_TEST_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

// Before any page script: a gtag stub recording Consent Mode calls, and a layout-shift meter.
const INIT = () => {
  window.dataLayer = [];
  window.gtag = function () { window.dataLayer.push(Array.from(arguments)); };
  window.__layoutShift = 0;
  window.__layoutShifts = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.__layoutShift += e.value;
      window.__layoutShifts += 1;
    }
  }).observe({ type: 'layout-shift', buffered: true });
};

/** A visitor: one browser context (its own cookie jar) that records every request to Confiance's
 * collection endpoints. */
async function visitor({ locale = 'fr-FR', storageState } = {}) {
  const context = await browser.newContext({ locale, storageState, viewport: { width: 1280, height: 800 } });
  await context.addInitScript(INIT);
  const sent = [];
  const pending = new Set();
  const errors = [];
  context.on('request', (r) => {
    const p = new URL(r.url()).pathname;
    if (p.startsWith('/v1/') || p.startsWith('/consent/')) {
      sent.push({ method: r.method(), path: p, body: r.postData(), type: r.resourceType() });
      pending.add(r);
    }
  });
  const done = (r) => pending.delete(r);
  context.on('requestfinished', done);
  context.on('requestfailed', done);
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(e.message));
  return {
    context,
    page,
    sent,
    errors,
    collection: () => sent.filter((s) => s.path.startsWith('/v1/')),
    async settle(ms = 400) {
      await page.waitForTimeout(ms);
      for (let i = 0; i < 100 && pending.size; i++) await page.waitForTimeout(50);
    },
    async cookie() {
      const c = (await context.cookies(BASE)).find((c) => c.name === COOKIE);
      if (!c) return null;
      return { raw: c, value: JSON.parse(Buffer.from(c.value, 'base64url').toString('utf8')) };
    },
    close: () => context.close(),
  };
}

async function banner(page) {
  return page.locator('#cf-bar').isVisible();
}
async function waitBanner(page) {
  await page.locator('#cf-bar').waitFor({ state: 'visible', timeout: 10000 });
}
async function choose(v, action) {
  const [resp] = await Promise.all([
    v.page.waitForResponse((r) => new URL(r.url()).pathname === '/consent/choice', { timeout: 10000 }),
    action(),
  ]);
  expect(resp.status() === 200, `POST /consent/choice answered ${resp.status()}`, { body: await resp.text() });
  const answer = await resp.json();
  // The script applies the answer after the response; give it the turn of the event loop.
  await v.page.waitForFunction(() => window.Confiance && window.Confiance.consent() !== null);
  return { answer, request: JSON.parse(resp.request().postData()) };
}
async function active(page) {
  return page.evaluate(() => {
    const a = document.activeElement;
    return {
      tag: a ? a.tagName.toLowerCase() : null,
      id: a && a.id,
      cf: a && a.getAttribute('data-cf'),
      category: a && a.getAttribute('data-category'),
      inBar: !!(a && a.closest('#cf-bar')),
      inModal: !!(a && a.closest('[role="dialog"][aria-modal="true"]')),
      checked: a && a.type === 'checkbox' ? a.checked : undefined,
      text: a ? (a.textContent || '').trim().slice(0, 40) : null,
    };
  });
}
async function tabTo(page, pred, max = 30, key = 'Tab') {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(key);
    const a = await active(page);
    if (pred(a)) return a;
  }
  throw new CheckError(`${key} never reached the wanted element`, { last: await active(page) });
}

async function adminEvents(anonymousId) {
  const url = `${BASE}/api/v1/events?anonymous_id=${encodeURIComponent(anonymousId)}&limit=1000`;
  const r = await fetch(url, { headers: { authorization: `Bearer ${opt['admin-token']}` } });
  const text = await r.text();
  expect(r.status === 200, `GET /api/v1/events answered ${r.status}`, { body: text.slice(0, 300) });
  return JSON.parse(text).events;
}
// The consent ledger's current state of an anonymous id: {purpose: {status, method, notice_version, notice_hash}}.
async function ledger(anonymousId) {
  const url = `${BASE}/api/v1/consents?type=anonymous_id&value=${encodeURIComponent(anonymousId)}`;
  const r = await fetch(url, { headers: { authorization: `Bearer ${opt['admin-token']}` } });
  const text = await r.text();
  expect(r.status === 200, `GET /api/v1/consents answered ${r.status}`, { body: text.slice(0, 300) });
  const state = JSON.parse(text).state;
  return Object.fromEntries(Object.entries(state).map(([p, e]) => [p, { status: e.status, method: e.method,
    notice_version: e.notice_version, notice_hash: e.notice_hash }]));
}
function summary(events) {
  return events.map((e) => ({ type: e.type, event: e.event, purposes: e.purposes }));
}

async function shot(page, name, fullPage = false) {
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage });
  return file;
}

// Opens the preference centre from the panel's link and returns its URL.
async function openPreferenceCentre(v) {
  await v.page.click('#cookies-link');
  await v.page.locator('[role="dialog"][aria-modal="true"]').waitFor();
  const link = v.page.locator('[data-cf="manage"]');
  expect(await link.count() === 1, 'the panel has no "manage my preferences" link');
  await Promise.all([
    v.page.waitForURL((u) => u.pathname === '/preferences', { timeout: 10000 }),
    link.click(),
  ]);
  await v.page.waitForLoadState('load');
  return v.page.url();
}

// ---- phase main -------------------------------------------------------------------------------

async function phaseMain() {
  await check('script_size', async () => {
    const r = await fetch(`${BASE}/consent.js`);
    expect(r.status === 200, `GET /consent.js answered ${r.status}`);
    const body = Buffer.from(await r.arrayBuffer());
    const gz = zlib.gzipSync(body, { level: 9 }).length;
    const text = body.toString('utf8');
    expect(!text.includes('__CONFIANCE_CONFIG__'), 'the configuration token was not replaced');
    expect(gz < GZIP_LIMIT, `consent.js is ${gz} bytes gzipped (limit ${GZIP_LIMIT})`);
    return { raw_bytes: body.length, gzip_bytes: gz, limit: GZIP_LIMIT, content_type: r.headers.get('content-type') };
  });

  // A first visitor looks and clicks around without choosing.
  const first = await visitor();
  await check('nothing_before_choice', async () => {
    const { page } = first;
    await page.goto(SHOP);
    await waitBanner(page);
    await page.click('.record .cover');
    await page.click('.record .add');
    await page.evaluate(() => window.Confiance.identify('should-wait', {}));
    await first.settle(1000);
    const cookies = await first.context.cookies();
    const storage = await page.evaluate(() => ({
      local: localStorage.length,
      session: sessionStorage.length,
      consent: window.Confiance.consent(),
      documentCookie: document.cookie,
    }));
    expect(cookies.length === 0, 'a cookie was set before any choice', { cookies: cookies.map((c) => c.name) });
    expect(first.sent.length === 0, 'requests were sent before any choice', { sent: first.sent });
    expect(storage.local === 0 && storage.session === 0 && storage.documentCookie === '', 'storage was written', storage);
    expect(storage.consent === null, 'consent() is not null before a choice', storage);
    const gtag = await page.evaluate(() => window.dataLayer);
    expect(same(gtag[0], ['consent', 'default', { ad_storage: 'denied', ad_user_data: 'denied',
      ad_personalization: 'denied', analytics_storage: 'denied' }]), 'Consent Mode default is not all denied', { gtag });
    expect(first.errors.length === 0, 'page errors', { errors: first.errors });
    return { cookies: 0, collection_requests: 0, local_storage: 0, gtag_default: gtag[0][2] };
  });

  await check('banner_accessible', async () => {
    const { page } = first;
    const a11y = await page.evaluate(() => {
      const bar = document.getElementById('cf-bar');
      const ref = (id) => (id && document.getElementById(id) ? document.getElementById(id).textContent : null);
      return {
        role: bar.getAttribute('role'),
        label: ref(bar.getAttribute('aria-labelledby')),
        description: ref(bar.getAttribute('aria-describedby')),
        position: getComputedStyle(bar).position,
      };
    });
    expect(a11y.role === 'dialog' && a11y.label && a11y.description, 'the banner is not a labelled dialog', a11y);
    expect(a11y.position === 'fixed', 'the banner is not an overlay', a11y);
    return a11y;
  });

  await check('no_layout_shift', async () => {
    const cls = await first.page.evaluate(() => ({ sum: window.__layoutShift, entries: window.__layoutShifts }));
    expect(cls.sum === 0, 'the banner shifted the layout', cls);
    return { layout_shift_sum: cls.sum, entries: cls.entries };
  });

  await check('refuse_accept_equal', async () => {
    const styles = await first.page.evaluate(() => {
      const props = ['font-family', 'font-size', 'font-weight', 'font-style', 'line-height', 'letter-spacing',
        'text-transform', 'color', 'background-color', 'background-image', 'border-top-width', 'border-top-style',
        'border-top-color', 'border-bottom-color', 'border-radius', 'padding-top', 'padding-right',
        'padding-bottom', 'padding-left', 'opacity', 'text-decoration-line', 'box-shadow'];
      const read = (e) => {
        const cs = getComputedStyle(e);
        const r = e.getBoundingClientRect();
        const out = { tag: e.tagName, text: e.textContent, width: r.width, height: r.height, top: r.top };
        for (const p of props) out[p] = cs.getPropertyValue(p);
        return out;
      };
      return {
        refuse: read(document.querySelector('#cf-bar [data-cf="refuse"]')),
        accept: read(document.querySelector('#cf-bar [data-cf="accept"]')),
      };
    });
    const diff = Object.keys(styles.refuse).filter((k) => k !== 'text' && styles.refuse[k] !== styles.accept[k]);
    expect(diff.length === 0, 'refusing and accepting differ', { diff: diff.map((k) => [k, styles.refuse[k], styles.accept[k]]) });
    expect(styles.refuse.text === 'Tout refuser' && styles.accept.text === 'Tout accepter', 'button labels', styles);
    const { text, width, height, tag, ...rest } = styles.refuse;
    return { compared: Object.keys(styles.refuse).length - 1, tag, width, height, 'font-size': rest['font-size'],
      'background-color': rest['background-color'], color: rest.color };
  });

  await check('contrast', async () => {
    await first.page.click('#cf-bar [data-cf="choose"]');
    const pairs = await first.page.evaluate(() => {
      const rgb = (s) => s.match(/[\d.]+/g).slice(0, 3).map(Number);
      const lum = (c) => {
        const [r, g, b] = c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const bg = (e) => {
        for (; e; e = e.parentElement) {
          const c = getComputedStyle(e).backgroundColor;
          if (c && !/rgba\(.*, 0\)$/.test(c) && c !== 'transparent') return c;
        }
        return 'rgb(255, 255, 255)';
      };
      const out = {};
      const sel = {
        bar_text: '#cf-bar p', bar_title: '#cf-bar h2', refuse: '#cf-bar [data-cf="refuse"]',
        accept: '#cf-bar [data-cf="accept"]', choose: '#cf-bar [data-cf="choose"]',
        panel_label: '#cf-modal label', panel_detail: '#cf-modal .cf-cat p', panel_note: '#cf-modal .cf-note',
        save: '#cf-modal [data-cf="save"]',
      };
      for (const [k, s] of Object.entries(sel)) {
        const e = document.querySelector(s);
        if (!e) { out[k] = null; continue; }
        const [a, b] = [lum(rgb(getComputedStyle(e).color)), lum(rgb(bg(e)))];
        out[k] = Math.round(((Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)) * 100) / 100;
      }
      return out;
    });
    await first.page.keyboard.press('Escape');
    const low = Object.entries(pairs).filter(([, r]) => r === null || r < 4.5);
    expect(low.length === 0, 'contrast below 4.5:1', { pairs });
    return { ratios: pairs };
  });

  await check('screenshots_fr', async () => {
    await first.page.evaluate(() => window.scrollTo(0, 0));
    const files = [await shot(first.page, 'banner-fr.png')];
    await first.page.click('#cf-bar [data-cf="choose"]');
    files.push(await shot(first.page, 'panel-fr.png'));
    await first.page.keyboard.press('Escape');
    return { files };
  });
  await first.close();

  // Refuse all: remembered, and nothing is ever sent.
  await check('refuse_all', async () => {
    const v = await visitor();
    await v.page.goto(SHOP);
    await waitBanner(v.page);
    await v.page.click('.record .add');
    const { answer, request } = await choose(v, () => v.page.click('#cf-bar [data-cf="refuse"]'));
    await v.settle();
    const cookie = await v.cookie();
    expect(cookie, 'no consent cookie after refusing');
    expect(Object.values(cookie.value.c).every((x) => x === 0), 'the cookie grants something', { cookie: cookie.value });
    expect(Object.values(request.choices).every((x) => x === false), 'the choice sent grants something', { request });
    expect(v.collection().length === 0, 'queued calls were sent after a refusal', { sent: v.collection() });
    await v.page.reload();
    await v.page.waitForFunction(() => window.Confiance);
    await v.page.waitForTimeout(300);
    expect(!(await banner(v.page)), 'the banner shows again after a refusal');
    await v.page.click('.record .cover');
    await v.page.click('.record .add');
    await v.settle(600);
    expect(v.collection().length === 0, 'tracking was sent after a refusal', { sent: v.collection() });
    const consent = await v.page.evaluate(() => window.Confiance.consent());
    const gtag = await v.page.evaluate(() => window.dataLayer);
    expect(same(gtag[0], ['consent', 'default', { ad_storage: 'denied', ad_user_data: 'denied',
      ad_personalization: 'denied', analytics_storage: 'denied' }]), 'Consent Mode after a stored refusal', { gtag });
    const stored = await adminEvents(cookie.value.a);
    expect(stored.length === 0, 'events were stored after a refusal', { stored: summary(stored) });
    await v.close();
    return { recorded: answer.recorded, cookie: cookie.value, max_age_days: Math.round((cookie.raw.expires - Date.now() / 1000) / 86400),
      same_site: cookie.raw.sameSite, http_only: cookie.raw.httpOnly, consent_after_reload: consent, stored_events: 0, collection_requests: 0 };
  });

  // Keyboard only: the banner, the panel, analytics only; then what is sent and stored.
  const kb = await visitor();
  let anonymousId = null;
  let choiceSent = null;
  await check('keyboard_only', async () => {
    const { page } = kb;
    await page.goto(SHOP);
    await waitBanner(page);
    const steps = [];
    let a = await active(page);
    expect(a.inBar, 'focus did not move into the banner', a);
    steps.push('focus in banner');
    await page.keyboard.press('Escape');
    expect(await banner(page), 'Escape closed the banner without a choice');
    steps.push('Escape keeps the banner');
    a = await tabTo(page, (x) => x.cf === 'refuse', 1);
    a = await tabTo(page, (x) => x.cf === 'accept', 1);
    a = await tabTo(page, (x) => x.cf === 'choose', 1);
    steps.push('Tab: Tout refuser, Tout accepter, Personnaliser');
    await page.keyboard.press('Enter');
    await page.locator('[role="dialog"][aria-modal="true"]').waitFor();
    a = await active(page);
    expect(a.inModal, 'focus did not move into the panel', a);
    const ticked = await page.$$eval('#cf-modal input[type="checkbox"]', (l) => l.map((i) => [i.dataset.category, i.checked]));
    expect(ticked.length > 0 && ticked.every(([, c]) => !c), 'a box is pre-ticked', { ticked });
    steps.push('Enter opens the panel, focus inside, nothing ticked');
    for (const key of ['Tab', 'Shift+Tab']) {
      for (let i = 0; i < 14; i++) {
        await page.keyboard.press(key);
        a = await active(page);
        expect(a.inModal, `${key} left the modal panel`, { press: i + 1, a });
      }
    }
    steps.push('focus trapped (14 Tab, 14 Shift+Tab)');
    await page.keyboard.press('Escape');
    expect(!(await page.locator('#cf-modal').count()), 'Escape did not close the panel');
    a = await active(page);
    expect(a.cf === 'choose' && await banner(page), 'focus did not return to "Personnaliser"', a);
    expect(kb.sent.length === 0 && !(await kb.cookie()), 'closing the panel counted as a choice', { sent: kb.sent });
    steps.push('Escape closes the panel, focus back on Personnaliser, still no choice');
    await page.keyboard.press('Enter');
    await page.locator('[role="dialog"][aria-modal="true"]').waitFor();
    a = await tabTo(page, (x) => x.category === 'analytics');
    await page.keyboard.press('Space');
    a = await active(page);
    expect(a.checked === true, 'Space did not tick analytics', a);
    steps.push('Space ticks analytics');
    await tabTo(page, (x) => x.cf === 'save');
    const { request } = await choose(kb, () => page.keyboard.press('Enter'));
    steps.push('Enter on "Enregistrer mes choix"');
    expect(same(request.choices, { analytics: true, personalisation: false, advertising: false }), 'choices sent', { request });
    expect(!(await page.locator('#cf-bar, #cf-modal').count()), 'the banner is still shown after the choice');
    a = await active(page);
    expect(a.tag === 'body', 'focus did not return to where it was (the page)', a);
    steps.push('banner closed, focus back on the page');
    await tabTo(page, (x) => x.id === 'cookies-link', 40);
    await page.keyboard.press('Enter');
    await page.locator('[role="dialog"][aria-modal="true"]').waitFor();
    a = await active(page);
    expect(a.inModal, 'reopening: focus not in the panel', a);
    const boxes = await page.$$eval('#cf-modal input[type="checkbox"]', (l) => Object.fromEntries(l.map((i) => [i.dataset.category, i.checked])));
    expect(same(boxes, { analytics: true, personalisation: false, advertising: false }), 'the panel does not show the stored choice', { boxes });
    await page.keyboard.press('Escape');
    a = await active(page);
    expect(a.id === 'cookies-link', 'focus did not return to the "Cookies" link', a);
    steps.push('footer "Cookies" link reopens the panel with the stored choice; Escape returns focus to it');
    anonymousId = request.anonymousId;
    choiceSent = request;
    expect(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(anonymousId), 'anonymousId is not a v4 uuid', { request });
    expect(request.notice && request.notice.version && request.language === 'fr' && request.touchpoint === 'site_visit'
      && typeof request.writeKey === 'string' && request.writeKey.length > 0, 'choice body', { request });
    return { steps, choice_body: { ...request, writeKey: '[redacted]' } };
  });

  await check('analytics_only', async () => {
    const { page } = kb;
    expect(anonymousId, 'the keyboard check did not record a choice');
    const cookie = await kb.cookie();
    expect(cookie && same(cookie.value.c, { analytics: 1, personalisation: 0, advertising: 0 }) && cookie.value.a === anonymousId,
      'cookie after choosing analytics only', { cookie: cookie && cookie.value });
    await page.click('.record .cover');
    await page.click('.record .add');
    await page.evaluate(() => {
      window.Confiance.track('Newsletter Subscribed', { list: 'nouveautes', placement: 'footer' });
      window.Confiance.track('Order Completed', { order_id: 'VC-ORD-0001', total: 24.9, currency: 'EUR' });
    });
    await kb.settle(800);
    const sent = kb.collection().map((s) => {
      const b = JSON.parse(s.body);
      return { path: s.path, type: b.type, event: b.event || null, anonymousId: b.anonymousId, prefs: b.context.consent.categoryPreferences, library: b.context.library, writeKey: !!b.writeKey };
    });
    const kinds = sent.map((s) => `${s.path} ${s.event || s.type}`);
    expect(same(kinds.sort(), ['/v1/p page', '/v1/t Order Completed', '/v1/t Product Added', '/v1/t Product Viewed'].sort()),
      'what the page sent (the queued page view, both product events, the order; not the newsletter)', { kinds });
    expect(sent.every((s) => s.anonymousId === anonymousId && s.writeKey && s.library.name === 'confiance.js'
      && same(s.prefs, { analytics: true, personalisation: false, advertising: false })), 'message bodies', { sent });
    const gtag = await page.evaluate(() => window.dataLayer);
    const update = gtag.find((g) => g[1] === 'update');
    expect(update && same(update[2], { ad_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied', analytics_storage: 'granted' }),
      'Consent Mode update', { gtag });
    const stored = summary(await adminEvents(anonymousId));
    const byName = Object.fromEntries(stored.map((e) => [e.event || e.type, e.purposes]));
    expect(stored.length === 4, 'stored events', { stored });
    const page_ = stored.find((e) => e.type === 'page');
    expect(page_ && same(page_.purposes, ['analytics']), 'the page view is stored for analytics', { stored });
    for (const n of ['Product Viewed', 'Product Added']) {
      expect(same(byName[n], ['analytics']), `${n} is stored for analytics only`, { stored });
    }
    expect(byName['Order Completed'] && byName['Order Completed'].every((p) => ['service', 'accounting'].includes(p)),
      'Order Completed is kept for the contract and the law only', { stored });
    expect(!stored.some((e) => (e.purposes || []).some((p) => ['personalisation', 'advertising', 'marketing_email'].includes(p))),
      'something is stored for a refused purpose', { stored });
    const proof = await ledger(anonymousId);
    const statuses = Object.fromEntries(Object.entries(proof).map(([p, e]) => [p, e.status]));
    expect(same(statuses, { analytics: 'granted', personalisation: 'denied', advertising: 'denied' }), 'the ledger', { proof });
    expect(Object.values(proof).every((e) => e.method === 'banner' && e.notice_version === choiceSent.notice.version
      && e.notice_hash === choiceSent.notice.hash), 'the proof names the banner and the exact notice shown', { proof });
    return { sent: kinds, not_sent: ['Newsletter Subscribed (marketing_email)'], stored, gtag_update: update[2],
      ledger: statuses, notice: choiceSent.notice };
  });

  await check('withdraw_in_preference_centre', async () => {
    const { page } = kb;
    const before = await adminEvents(anonymousId);
    const url = await openPreferenceCentre(kb);
    const file = await shot(page, 'preferences-fr.png', true);
    const target = page.locator('button[data-purpose="analytics"], [data-purpose="analytics"] button').first();
    expect(await target.count() === 1, 'the preference centre has no withdraw button for analytics',
      { html: (await page.content()).slice(0, 2000) });
    const label = (await target.textContent()).trim();
    await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).origin === BASE, { timeout: 10000 }),
      target.click(),
    ]);
    await page.waitForLoadState('load');
    const cookieAfter = await kb.cookie();
    const sentBefore = kb.collection().length;
    await page.goto(SHOP);
    await page.waitForFunction(() => window.Confiance);
    await page.click('.record .cover');
    await page.click('.record .add');
    await kb.settle(800);
    const sentAfter = kb.collection().slice(sentBefore).map((s) => `${s.path} ${JSON.parse(s.body).event || JSON.parse(s.body).type}`);
    const after = await adminEvents(anonymousId);
    const fresh = after.filter((e) => !before.some((b) => b.message_id === e.message_id));
    expect(fresh.length === 0, 'events were stored after the withdrawal', { stored: summary(fresh), sent_after: sentAfter });
    const proof = await ledger(anonymousId);
    expect(proof.analytics && proof.analytics.status === 'withdrawn', 'the ledger does not show the withdrawal', { proof });
    return { preference_centre: url.replace(/token=[^&]+/, 'token=…'), button: label, screenshot: file,
      cookie_after_withdrawal: cookieAfter && cookieAfter.value, sent_after_withdrawal: sentAfter,
      stored_after_withdrawal: 0, ledger_analytics: proof.analytics };
  });
  await kb.context.storageState({ path: opt.state });
  await kb.close();

  // English: language from <html lang>, screenshots of the banner, panel and preference centre.
  await check('english', async () => {
    const v = await visitor({ locale: 'en-GB' });
    const { page } = v;
    await page.goto(`${SHOP}?lang=en`);
    await waitBanner(page);
    const labels = await page.$$eval('#cf-bar button', (l) => l.map((b) => b.textContent));
    expect(same(labels, ['Refuse all', 'Accept all', 'Choose']), 'English labels', { labels });
    const files = [await shot(page, 'banner-en.png')];
    await page.click('#cf-bar [data-cf="choose"]');
    files.push(await shot(page, 'panel-en.png'));
    const { request } = await choose(v, () => page.click('#cf-modal [data-cf="accept"]'));
    expect(request.language === 'en', 'the choice was not sent as English', { request });
    expect(Object.values(request.choices).every((x) => x === true), 'accept all', { request });
    await openPreferenceCentre(v);
    let prefLang = await page.evaluate(() => document.documentElement.lang);
    if (!/^en/.test(prefLang)) {
      const u = new URL(page.url());
      u.searchParams.set('lang', 'en');
      await page.goto(u.toString());
      prefLang = await page.evaluate(() => document.documentElement.lang);
    }
    files.push(await shot(page, 'preferences-en.png', true));
    await v.close();
    return { labels, choice_language: request.language, preference_centre_lang: prefLang, files };
  });
}

// ---- phase bump -------------------------------------------------------------------------------

async function phaseBump() {
  await check('notice_version_bump', async () => {
    const v = await visitor({ storageState: opt.state });
    const old = await v.cookie();
    expect(old, 'the saved visitor has no consent cookie');
    expect(old.value.v !== opt['notice-version'], 'the saved cookie is already on the new version', { cookie: old.value });
    await v.page.goto(SHOP);
    await waitBanner(v.page);
    await v.page.click('.record .cover');
    await v.settle(600);
    const consent = await v.page.evaluate(() => window.Confiance.consent());
    expect(consent === null, 'consent() is not null under a new notice', { consent });
    expect(v.collection().length === 0, 'tracking was sent under a new notice before a choice', { sent: v.collection() });
    const { request } = await choose(v, () => v.page.click('#cf-bar [data-cf="accept"]'));
    await v.settle();
    const cookie = await v.cookie();
    expect(cookie.value.v === opt['notice-version'], 'the new cookie is not on the new version', { cookie: cookie.value });
    expect(request.notice.version === opt['notice-version'], 'the choice was not made on the new notice', { request });
    expect(cookie.value.a === old.value.a, 'the anonymous id changed', { old: old.value.a, new: cookie.value.a });
    await v.page.reload();
    await v.page.waitForFunction(() => window.Confiance);
    await v.page.waitForTimeout(300);
    expect(!(await banner(v.page)), 'the banner shows again after choosing on the new notice');
    await v.close();
    return { old_version: old.value.v, new_version: cookie.value.v, anonymous_id_kept: true, sent_after_choice: v.collection().map((s) => s.path) };
  });
}

try {
  if (opt.phase === 'main') await phaseMain();
  else await phaseBump();
} catch (e) {
  report('driver', false, { error: e.message, stack: e.stack });
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
