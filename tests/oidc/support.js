// The harness of the OpenID Provider tests: a real `keygate serve` (KEYGATE_BIN, default
// <repo>/target/debug/keygate) on 127.0.0.1:0 with a fresh SQLite file per test, OIDC
// clients made with `keygate clients create … --json` on that database, the relying
// party's redirect URI (a small HTTP server on 127.0.0.1:0 that records what reaches
// it), and the user: Debian's headless Chromium on a fresh profile, clicking through
// keygate's sign-in page.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import { chromium } from 'playwright-core';
// The server, within() and eventually(): shared with the keygate-client package's tests.
import { startKeygate, within, eventually, NO_RATE_LIMITS, KEYGATE_BIN } from '../../clients/js/test/support.js';

export { within, eventually, KEYGATE_BIN };

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const STEP = 20_000; // ceiling for any single answer or page wait
export const FLOW = 90_000; // ceiling for one sign-in in the browser, all steps together
export const SCOPE = 'openid profile offline_access';

/** Runs the keygate binary; resolves with its stdout, rejects with its stderr. */
export function keygate(args, { timeout = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(KEYGATE_BIN, args, { timeout, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } },
      (err, stdout, stderr) => (err ? reject(new Error(`keygate ${args[0]} ${args[1] ?? ''} failed: ${err.message}\n${stderr}`)) : resolve(stdout)));
  });
}

/**
 * `keygate serve` on a fresh SQLite file, as an OpenID Provider (`args`: more flags):
 * resolves with { issuer, origin, db, dir, metadata (the discovery document),
 * createClient(), createKey(), dispose() }.
 */
export async function startProvider({ args = [] } = {}) {
  const server = await startKeygate({ args: [...NO_RATE_LIMITS, ...args] });
  try {
    const res = await fetch(`${server.origin}/.well-known/openid-configuration`, { signal: AbortSignal.timeout(STEP) });
    assert.equal(res.status, 200, 'GET /.well-known/openid-configuration');
    const metadata = await res.json();
    const issuer = metadata.issuer;
    // The issuer is this server, on loopback, by whatever name the server gives itself.
    const url = new URL(issuer);
    assert.equal(url.port, new URL(server.origin).port, `issuer ${issuer} is not this server (${server.origin})`);
    assert.ok(['127.0.0.1', 'localhost'].includes(url.hostname), `issuer ${issuer} is not on loopback`);
    /**
     * `keygate clients create` on this server's database; resolves with its --json
     * answer { client_id, client_secret, app, alg, redirect_uris }.
     */
    const createClient = async ({ name = 'rp', redirectUris, postLogout = [], alg, isPublic = false, firstParty = false } = {}) => {
      const args = ['clients', 'create', '--name', name, '--json', '--database', server.db];
      for (const uri of redirectUris) args.push('--redirect-uri', uri);
      for (const uri of postLogout) args.push('--post-logout-redirect-uri', uri);
      if (alg) args.push('--alg', alg);
      if (isPublic) args.push('--public');
      if (firstParty) args.push('--first-party');
      const out = await keygate(args);
      const created = JSON.parse(out);
      assert.match(created.client_id, /^kgc_[A-Za-z0-9_-]{22}$/, `client_id in ${out}`);
      if (isPublic) assert.equal(created.client_secret, null, 'a public client has no secret');
      else assert.match(created.client_secret, /^kgcs_[A-Za-z0-9_-]{43}$/, 'client_secret');
      assert.equal(typeof created.app, 'string', 'app');
      return created;
    };
    return { ...server, issuer, metadata, createClient };
  } catch (err) {
    await server.dispose();
    throw err;
  }
}

/**
 * The relying party's redirect URIs: an HTTP server on 127.0.0.1:0 answering every
 * request with a small page and recording its URL. `cb` and `logout` are the URIs to
 * register; `next(path, since)` waits for a request to `path` after the `since`-th.
 */
export async function startRelyingParty() {
  const hits = [];
  const server = http.createServer((req, res) => {
    hits.push(new URL(req.url, base));
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!doctype html><title>relying party</title><p id="rp">back at the relying party</p>');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const base = `http://127.0.0.1:${server.address().port}`;
  const next = (pathname, since) => eventually(FLOW, () => hits.slice(since).find((u) => u.pathname === pathname), `a request to ${base}${pathname}`);
  const close = () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); });
  return { base, cb: `${base}/cb`, cb2: `${base}/cb2`, logout: `${base}/logout`, port: server.address().port, hits, next, close };
}

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

/** Debian's Chromium, headless; every context made from it is a fresh profile. */
export async function launchBrowser() {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, timeout: 60_000, args: CHROMIUM_ARGS });
}

/** A fresh browser profile (its own IndexedDB, cookies) with the page's problems collected. */
export async function freshUser(browser) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  context.setDefaultTimeout(STEP);
  context.setDefaultNavigationTimeout(STEP);
  const problems = [];
  const page = await context.newPage();
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
  return { context, page, problems };
}

const visible = (page, sel) => page.isVisible(sel).catch(() => false);
const enabled = (page, sel) => page.isEnabled(sel).catch(() => false);

/**
 * The user at keygate's authorization endpoint: opens `url`, clicks `#continue` on
 * the sign-in page (the first time a profile signs in, that makes its key) and
 * `#allow` (or `#deny`) when the consent screen asks, until the browser reaches the
 * relying party's `pathname`. Resolves with { params (the query the relying party
 * got), consent (the scopes listed, or null when no consent was asked), identity
 * (what #identity showed) }.
 */
export async function authorize(user, rp, url, { pathname = '/cb', answer = '#allow' } = {}) {
  const { page, problems } = user;
  const since = rp.hits.length;
  await page.goto(String(url), { timeout: STEP });
  const end = Date.now() + FLOW;
  let continued = false;
  let consent = null;
  let identity = null;
  for (;;) {
    const arrived = rp.hits.slice(since).find((u) => u.pathname === pathname);
    if (arrived) {
      // The relying party has the request; let the browser finish that navigation too,
      // so that the next page.goto does not race it.
      await page.waitForURL((u) => u.origin === rp.base && u.pathname === pathname, { timeout: STEP, waitUntil: 'load' });
      return { params: arrived.searchParams, consent, identity, url: arrived };
    }
    if (Date.now() > end) {
      const body = await page.textContent('body').catch(() => '?');
      throw new Error(`no redirect to the relying party within ${FLOW} ms; page ${page.url()}: ${body?.trim().slice(0, 500)}; ${problems.join('; ')}`);
    }
    if (await visible(page, '#error')) {
      const text = ((await page.textContent('#error').catch(() => '')) ?? '').trim();
      if (text) throw new Error(`the sign-in page shows an error: ${text}`);
    }
    if (consent === null && await visible(page, `#consent ${answer}`) && await enabled(page, answer)) {
      consent = await page.$$eval('#consent li.scope', (items) => items.map((li) => li.textContent.trim()));
      identity ??= ((await page.textContent('#identity').catch(() => '')) ?? '').trim() || null;
      await page.click(answer, { timeout: STEP });
    } else if (!continued && await visible(page, '#continue') && await enabled(page, '#continue')) {
      continued = true;
      await page.click('#continue', { timeout: STEP });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A JWT's payload, decoded without checking anything. */
export const payloadOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
/** A JWT's header, decoded without checking anything. */
export const headerOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString());

/**
 * One HTTP request, redirects not followed, the body `json` (sent as JSON) or `form` (an
 * object, sent form-urlencoded without its undefined members); resolves with
 * { status, headers, body (JSON or text) }.
 */
export async function request(url, { method = 'GET', headers = {}, json, form } = {}) {
  let body;
  const type = {};
  if (json !== undefined) {
    body = JSON.stringify(json);
    type['content-type'] = 'application/json';
  } else if (form !== undefined) {
    body = new URLSearchParams(Object.entries(form).filter(([, v]) => v !== undefined));
    type['content-type'] = 'application/x-www-form-urlencoded';
  }
  const res = await fetch(url, { method, headers: { ...type, ...headers }, body, redirect: 'manual', signal: AbortSignal.timeout(STEP) });
  const text = await res.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** POST a form to `url`; resolves with { status, headers, body (JSON or text) }. */
export const postForm = (url, fields, headers = {}) => request(url, { method: 'POST', headers, form: fields });

/** HTTP Basic credentials per RFC 6749 §2.3.1 (form-urlencoded, then base64). */
export const basic = (id, secret) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

/** GET /oauth/userinfo with a bearer token; resolves with { status, body }. */
export async function userinfo(metadata, accessToken) {
  const res = await fetch(metadata.userinfo_endpoint, {
    headers: { authorization: `Bearer ${accessToken}` },
    signal: AbortSignal.timeout(STEP),
  });
  return { status: res.status, body: await res.json().catch(() => null), headers: res.headers };
}

/**
 * Runs `body` with a fresh provider (`op`, `keygate serve` with the flags `args`), a
 * relying party (`rp`) and, unless `browser` is false, Chromium (`browser`); closes
 * them all afterwards, whatever happened.
 */
export async function withWorld({ browser = true, args = [] } = {}, body) {
  const done = cleanup();
  try {
    const op = await startProvider({ args });
    done.add(() => op.dispose());
    const rp = await startRelyingParty();
    done.add(() => rp.close());
    const chromium = browser ? await launchBrowser() : null;
    if (chromium) done.add(() => chromium.close());
    return await body({ op, rp, browser: chromium, done });
  } finally {
    await done.run();
  }
}

/** Every resource a test made, closed in reverse order whatever happened. */
export function cleanup() {
  const stack = [];
  return {
    add(fn) { stack.push(fn); },
    async run() {
      while (stack.length) await within(STEP, Promise.resolve().then(stack.pop()), 'cleanup').catch(() => {});
    },
  };
}
