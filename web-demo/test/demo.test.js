// Browser test of the web demo: a real keygate server (KEYGATE_BIN, default
// <repo>/target/debug/keygate) on 127.0.0.1:0 and Debian's headless Chromium on a fresh
// profile. The page signs in for a token bound to its key (DPoP), shows its claims and
// binding, refreshes, lists and revokes sessions, logs out, falls back to HTTP,
// refuses foreign challenges and reports a dead server; the token it shows is refused
// by keygate's gateway to another process (no proof, as Bearer, a proof by another
// key) and accepted from the page with its key; meanwhile every frame, request body
// and credential it sends is held against an allowlist.
//   cd web-demo/test && npm ci --no-audit --no-fund && node --test

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createHash, createPublicKey, verify } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
// The server, within() and totp(): shared with the keygate-client package's tests.
import { startKeygate, within, totp } from '../../clients/js/test/support.js';
// A proof by a key that is not the page's, made the way any client would (dpop.js
// alone: the package's entry also imports its dependency, which this test does not install).
import { dpopProof } from '../../clients/js/src/dpop.js';

const demoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.join(demoDir, 'screenshot.png');
const STEP = 15_000; // ceiling for any single wait in the page

const IDENTITY = /^bbaarei[a-z2-7]{52}$/;
const SIGNATURE = /^[A-Za-z0-9_-]{86}$/; // 64 bytes, base64url, unpadded

// ---- what the page sends -----------------------------------------------------------

/** Everything the page sent and received, for the allowlist check at the end. */
const traffic = {
  sent: [], // { where, json | raw }
  requests: [], // { url, method, authorization, dpop }
  challenges: new Set(),
  tokens: new Set(),
  refreshTokens: new Set(),
  identities: new Set(),
  pending: [], // response bodies still being read
  problems: [], // uncaught exceptions and console errors in the page
};

function noteReceived(body) {
  if (!body || typeof body !== 'object') return;
  if (body.type === 'challenge' && typeof body.value === 'string') traffic.challenges.add(body.value);
  if (typeof body.challenge === 'string') traffic.challenges.add(body.challenge);
  if (body.type === 'token' && typeof body.value === 'string') traffic.tokens.add(body.value);
  if (typeof body.token === 'string') traffic.tokens.add(body.token);
  if (typeof body.refresh_token === 'string') traffic.refreshTokens.add(body.refresh_token);
}

function parseOrRaw(text) {
  try {
    return { json: JSON.parse(text) };
  } catch {
    return { raw: text };
  }
}

function watch(page) {
  page.on('pageerror', (err) => traffic.problems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') traffic.problems.push(`console: ${msg.text()} (${msg.location().url})`);
  });
  page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => traffic.sent.push({ where: `ws ${ws.url()}`, ...parseOrRaw(String(payload)) }));
    ws.on('framereceived', ({ payload }) => noteReceived(parseOrRaw(String(payload)).json));
  });
  page.on('request', (req) => {
    const h = req.headers();
    traffic.requests.push({ url: req.url(), method: req.method(), authorization: h.authorization ?? null, dpop: h.dpop ?? null });
    const body = req.postData();
    if (body !== null && body !== '') traffic.sent.push({ where: `${req.method()} ${req.url()}`, ...parseOrRaw(body) });
  });
  page.on('response', (res) => {
    if (!/json/.test(res.headers()['content-type'] ?? '')) return;
    traffic.pending.push(res.json().then(noteReceived, () => {}));
  });
}

const b64u = (bytes) => Buffer.from(bytes).toString('base64url');
const PUBLIC_KEYS = new Map(); // identity -> raw public key, filled as identities are seen

/** The raw Ed25519 key of a canonical identity (base32 decoded here, not by the package). */
function rawKeyOf(identity) {
  const bits = [...identity.slice(1)].map((c) => 'abcdefghijklmnopqrstuvwxyz234567'.indexOf(c).toString(2).padStart(5, '0')).join('');
  return Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2))).subarray(4, 36);
}

/** RFC 7638 thumbprint of an Ed25519 key, computed here. */
const thumbprintOf = (raw) => createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${b64u(raw)}"}`).digest('base64url');

/**
 * Checks a DPoP proof the page sent: header, a valid signature by one of the page's
 * identities, htm and htu as given, ath exactly when a token goes with it. Returns true
 * (for the allowlist) or throws with what is wrong.
 */
function checkProof(proof, { htm, htu, token }) {
  const [h, p, s] = String(proof).split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const payload = JSON.parse(Buffer.from(p, 'base64url'));
  assert.deepEqual(Object.keys(header), ['typ', 'alg', 'jwk']);
  assert.equal(header.typ, 'dpop+jwt');
  assert.equal(header.alg, 'EdDSA');
  assert.deepEqual(Object.keys(header.jwk), ['kty', 'crv', 'x'], 'the public JWK only');
  assert.ok([...PUBLIC_KEYS.values()].some((raw) => b64u(raw) === header.jwk.x), 'signed by a key of this page');
  const key = createPublicKey({ key: header.jwk, format: 'jwk' });
  assert.ok(verify(null, Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url')), 'a valid signature');
  assert.equal(payload.htm, htm);
  assert.equal(payload.htu, htu);
  assert.match(payload.jti, /^[A-Za-z0-9_-]{22,}$/);
  assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 600, 'iat is about now');
  if (token) assert.equal(payload.ath, createHash('sha256').update(token).digest('base64url'));
  else assert.equal(payload.ath, undefined);
  return true;
}

/** The only keys the page may send, each with the only values it may carry. */
const ALLOWED = {
  type: (v) => v === 'token' || v === 'challenge',
  pubkey: (v) => traffic.identities.has(v),
  id: (v) => traffic.identities.has(v),
  client_id: (v) => v === 'web-demo',
  access_type: (v) => v === 'offline',
  challenge: (v) => traffic.challenges.has(v),
  sig: (v) => SIGNATURE.test(v),
  refresh_token: (v) => traffic.refreshTokens.has(v),
  scope: (v) => ['local', 'others', 'global'].includes(v),
  // The account card: an otpauth URI sent back to be drawn as a QR code, a TOTP code.
  text: (v) => /^otpauth:\/\/totp\/keygate:acct_[A-Za-z0-9_-]{22}\?secret=[A-Z2-7]+&issuer=keygate$/.test(v),
  code: (v) => /^\d{6}$/.test(v),
  // The WebSocket sign-in: "dpop": true in the token frame, the proof in the challenge frame.
  dpop: (v, where) => v === true || checkProof(v, { htm: 'GET', htu: where.replace(/^ws /, '') }),
};

// ---- page helpers ------------------------------------------------------------------

/**
 * Waits until the status line `id` shows a message of `kind` (ok, bad, info) with
 * text in it (matching `re` if given): the class alone could be left from an
 * earlier message.
 */
const shows = (page, id, kind, re = /\S/) => page.waitForFunction(([id, kind, source]) => {
  const box = document.getElementById(id);
  return box.classList.contains(kind) && new RegExp(source).test(box.textContent);
}, [id, kind, re.source], { timeout: STEP });
const text = async (page, sel) => ((await page.textContent(sel, { timeout: STEP })) ?? '').trim();

async function identityOf(page) {
  await page.waitForFunction(() => /^bbaarei/.test(document.getElementById('identity').textContent), null, { timeout: STEP });
  const id = await text(page, '#identity');
  traffic.identities.add(id);
  PUBLIC_KEYS.set(id, rawKeyOf(id));
  return id;
}

/** Reads the demo's IndexedDB record (key pair or session) inside the page. */
const readStore = (page, key) => page.evaluate((k) => new Promise((resolve, reject) => {
  const open = indexedDB.open('keygate-demo');
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const get = open.result.transaction('kv').objectStore('kv').get(k);
    get.onsuccess = () => resolve(get.result ? JSON.parse(JSON.stringify(get.result, (_, v) => (v instanceof CryptoKey ? '[CryptoKey]' : v))) : null);
    get.onerror = () => reject(get.error);
  };
}), key);

async function claimsOf(page) {
  return JSON.parse(await text(page, '#claims')).claims;
}

/** Clicks "Sign in", checks the challenge shown, signs it and waits for the token. */
async function signIn(page, { origin, identity, via = 'WebSocket' }) {
  const before = await page.evaluate(() => document.getElementById('claims').textContent);
  await page.click('#sign-in', { timeout: STEP });
  await page.waitForSelector('#challenge-actions:not([hidden]) #approve', { timeout: STEP });
  const challenge = await text(page, '#challenge-text');
  const lines = challenge.split('\n');
  assert.equal(lines[0], 'keygate sign-in challenge v1');
  assert.equal(lines[1], `audience: ${origin}`);
  assert.equal(lines[2], `identity: ${identity}`);
  assert.match(await text(page, '#checks'), /Expires in \d+:\d\d/);
  await page.click('#approve', { timeout: STEP });
  await page.waitForFunction((old) => {
    const card = document.getElementById('token-card');
    return !card.hidden && document.getElementById('claims').textContent !== old;
  }, before, { timeout: STEP });
  assert.match(await text(page, '#signin-msg'), new RegExp(`Signed in over ${via}`));
  assert.equal(await text(page, '#via'), via);
  return claimsOf(page);
}

async function sessionItems(page) {
  return page.$$eval('#sessions > li', (items) => items.map((li) => ({ sid: li.dataset.sid, current: li.classList.contains('current') })));
}

/** Clicks "Reload list" and waits until the list shows `count` sessions. */
async function reloadSessions(page, count) {
  await page.click('#load-sessions', { timeout: STEP });
  await page.waitForFunction((n) => document.querySelectorAll('#sessions > li').length === n, count, { timeout: STEP });
  return sessionItems(page);
}

/** A GET from this (Node) process, which holds no key: { status, body }. */
const plainGet = (url, headers) =>
  fetch(url, { headers, signal: AbortSignal.timeout(STEP) })
    .then(async (res) => ({ status: res.status, body: await res.json().catch(() => null) }));

/**
 * GET /v1/whoami with `token` and a proof the page signs with its key (from
 * IndexedDB), sent from this process (so a refusal is no error in the page's console).
 */
async function whoamiWithPageProof(page, origin, token) {
  const url = `${origin}/v1/whoami`;
  const proof = await page.evaluate(async ([u, t]) => {
    const kg = await import('/keygate-client.js');
    const { keyPair } = await kg.keyStore({ name: 'keygate-demo' }).load('keypair');
    return kg.dpopProof(keyPair, { htm: 'GET', htu: u, token: t });
  }, [url, token]);
  return plainGet(url, { Authorization: `DPoP ${token}`, DPoP: proof });
}

/**
 * The app behind the gateway: records what reaches it and answers 200 with the
 * identity the gateway vouched for.
 */
async function startUpstream() {
  const seen = [];
  const srv = http.createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ hello: req.headers['x-keygate-identity'] ?? null }));
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return { seen, port: srv.address().port, close: () => new Promise((resolve) => { srv.closeAllConnections(); srv.close(resolve); }) };
}

/**
 * Stands in for the reverse proxy of a real deployment that puts the gateway under
 * the page's own origin: the page's requests to /app/… go to the gateway as they
 * are, with the page's Host (the proof names the URL the page used).
 */
function forwardToGateway(gateway, host) {
  const gw = new URL(gateway);
  return async (route) => {
    const req = route.request();
    const u = new URL(req.url());
    const headers = { ...(await req.allHeaders()), host };
    const answer = await new Promise((resolve, reject) => {
      const out = http.request({ host: gw.hostname, port: gw.port, method: req.method(), path: u.pathname + u.search, headers }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      out.setTimeout(STEP, () => out.destroy(new Error('the gateway did not answer')));
      out.on('error', reject);
      out.end(req.postDataBuffer() ?? undefined);
    });
    const headersOut = {};
    for (const [k, v] of Object.entries(answer.headers)) {
      if (!['connection', 'transfer-encoding', 'keep-alive'].includes(k)) headersOut[k] = [v].flat().join(', ');
    }
    await route.fulfill({ status: answer.status, headers: headersOut, body: answer.body });
  };
}

/** Headless Chromium on a fresh profile (its own user-data-dir): nothing shared with another. */
async function launchProfile(dir) {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM`);
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    timeout: 60_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  context.setDefaultTimeout(STEP);
  return context;
}

// ---- the test ----------------------------------------------------------------------

describe('keygate web demo in Chromium', { timeout: 240_000 }, () => {
  let server;
  let origin;
  let context;
  let page;
  let identity;
  let upstream;

  before(async () => {
    // The gateway of `keygate serve` in front of a stand-in app on /app.
    upstream = await startUpstream();
    const config = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'keygate-demo-gw-')), 'gateway.toml');
    fs.writeFileSync(config, `listen = "127.0.0.1:0"\n\n[[route]]\nname = "app"\nprefix = "/app"\nupstream = "http://127.0.0.1:${upstream.port}"\n`);
    // --web-root: this tree's page, whatever source tree KEYGATE_BIN was built from.
    // One identity signs in seven times in a few seconds here, two requests each:
    // the default per-identity limit (60 a minute, bursts of 10) would refuse the
    // last ones when the suite runs fast. The limiter has its own tests in Rust.
    server = await startKeygate({
      webRoot: demoDir,
      args: ['--gateway-config', config, '--rate-per-identity', '600'],
    });
    fs.rmSync(path.dirname(config), { recursive: true, force: true }); // read at start
    origin = server.origin;
    assert.ok(server.gateway, 'keygate serve started its gateway');
    assert.match(origin, /^http:\/\/127\.0\.0\.1:\d+$/);
    context = await launchProfile(path.join(server.dir, 'profile'));
    context.on('page', watch);
    page = context.pages()[0] ?? (await context.newPage());
    watch(page);
  });

  after(async () => {
    await within(STEP, context?.close() ?? Promise.resolve(), 'closing Chromium').catch(() => {});
    await server?.dispose();
    await upstream?.close();
  });

  test('a fresh profile gets an Ed25519 identity whose private key cannot be exported', async () => {
    await page.goto(`${origin}/`, { timeout: STEP });
    identity = await identityOf(page);
    assert.match(identity, IDENTITY);

    const key = await page.evaluate(() => new Promise((resolve, reject) => {
      const open = indexedDB.open('keygate-demo');
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const get = open.result.transaction('kv').objectStore('kv').get('keypair');
        get.onerror = () => reject(get.error);
        get.onsuccess = async () => {
          const { privateKey, publicKey } = get.result.keyPair;
          const refused = async (format) => crypto.subtle.exportKey(format, privateKey).then(() => false, () => true);
          resolve({
            extractable: privateKey.extractable,
            type: privateKey.type,
            algorithm: privateKey.algorithm.name,
            usages: privateKey.usages,
            pkcs8Refused: await refused('pkcs8'),
            jwkRefused: await refused('jwk'),
            raw: Array.from(new Uint8Array(await crypto.subtle.exportKey('raw', publicKey))),
          });
        };
      };
    }));
    assert.equal(key.extractable, false);
    assert.equal(key.type, 'private');
    assert.equal(key.algorithm, 'Ed25519');
    assert.deepEqual(key.usages, ['sign']);
    assert.equal(key.pkcs8Refused, true, 'exportKey("pkcs8") must reject');
    assert.equal(key.jwkRefused, true, 'exportKey("jwk") must reject');

    // The identity shown is the canonical form of that public key, computed here independently.
    const bytes = Buffer.from([0x08, 0x01, 0x12, 0x20, ...key.raw]);
    let bits = '';
    for (const b of bytes) bits += b.toString(2).padStart(8, '0');
    const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
    const expected = 'b' + (bits.padEnd(Math.ceil(bits.length / 5) * 5, '0').match(/.{5}/g) ?? [])
      .map((five) => alphabet[parseInt(five, 2)]).join('');
    assert.equal(identity, expected);

    await page.reload({ timeout: STEP });
    assert.equal(await identityOf(page), identity, 'the key survives a reload');
  });

  test('signs in over WebSocket and shows the claims with a live countdown', async () => {
    const claims = await signIn(page, { origin, identity });
    assert.equal(claims.sub, identity);
    assert.equal(await text(page, '#claim-sub'), identity);
    assert.ok(claims.sid && claims.exp > claims.iat, 'sid, iat, exp present');
    const header = JSON.parse(await text(page, '#claims')).header;
    assert.equal(header.alg, 'EdDSA');
    assert.equal(header.typ, 'at+jwt');
    assert.equal(await text(page, '#token-state'), 'valid');
    assert.match(await text(page, '#refresh-state'), /refresh token held/);

    const first = await text(page, '#countdown');
    assert.match(first, /^\d+:\d\d(:\d\d)?$/);
    await page.waitForFunction((t) => document.getElementById('countdown').textContent !== t, first, { timeout: 5_000 });

    const items = await sessionItems(page); // loaded right after signing in
    assert.equal(items.filter((s) => s.current).length, 1);
    assert.equal(items.find((s) => s.current).sid, claims.sid);

    await page.click('#whoami');
    await page.waitForSelector('#whoami-out:not([hidden])');
    assert.equal(JSON.parse(await text(page, '#whoami-out')).identity, identity);
  });

  test('the token is bound to the page\'s key: the gateway refuses it to another process and lets the page through', async () => {
    const jkt = thumbprintOf(rawKeyOf(identity));
    assert.match(await text(page, '#binding'), /key-bound/);
    assert.equal(await text(page, '#jkt'), jkt, 'the thumbprint shown is the key\'s (RFC 7638, computed here)');
    assert.deepEqual((await claimsOf(page)).cnf, { jkt });
    const token = await text(page, '#token-raw');
    assert.equal(JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).cnf.jkt, jkt, 'the token shown is the one decoded');
    assert.equal((await readStore(page, 'session')).token_type, 'DPoP');

    // This process has the token but not the key.
    const url = `${server.gateway}/app/hello`;
    const other = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    const refusals = [
      ['DPoP without a proof', { Authorization: `DPoP ${token}` }, 'invalid_dpop_proof'],
      ['as Bearer', { Authorization: `Bearer ${token}` }, 'invalid_token'],
      ['with a proof by another key', { Authorization: `DPoP ${token}`, DPoP: await dpopProof(other, { htm: 'GET', htu: url, token }) }, 'invalid_dpop_proof'],
    ];
    for (const [what, headers, code] of refusals) {
      const r = await plainGet(url, headers);
      assert.equal(r.status, 401, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body?.error, code, `${what}: ${JSON.stringify(r.body)}`);
    }
    assert.equal(upstream.seen.length, 0, 'nothing reached the app');

    // The page, with its key, through the same gateway (under its own origin).
    const hostOfPage = new URL(origin).host;
    const toGateway = (u) => u.origin === origin && u.pathname.startsWith('/app/');
    await context.route(toGateway, forwardToGateway(server.gateway, hostOfPage));
    try {
      const r = await page.evaluate(async () => {
        const kg = await import('/keygate-client.js');
        const store = kg.keyStore({ name: 'keygate-demo' });
        const { keyPair } = await store.load('keypair');
        const { token } = await store.load('session');
        const res = await kg.authorizedFetch(token, '/app/hello?from=page', { dpop: keyPair });
        return { status: res.status, body: await res.json().catch(() => null) };
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body, { hello: identity });
    } finally {
      await context.unroute(toGateway);
    }
    assert.equal(upstream.seen.length, 1);
    const { headers, url: upstreamUrl } = upstream.seen[0];
    assert.equal(upstreamUrl, '/app/hello?from=page');
    assert.equal(headers['x-keygate-identity'], identity);
    assert.equal(headers.dpop, undefined, 'the gateway strips the proof');
    assert.equal(headers.authorization, undefined, 'and the token');
    const assertion = JSON.parse(Buffer.from(headers['x-keygate-assertion'].split('.')[1], 'base64url'));
    assert.deepEqual(assertion.cnf, { jkt }, 'the assertion says the caller proved the key');
  });

  test('the account card lists this key, enrols TOTP with a server-drawn QR code, and a code raises the session', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#account-keys > li').length === 1, null, { timeout: STEP });
    const keys = await text(page, '#account-keys');
    assert.ok(keys.includes(identity) && keys.includes('this browser'), keys);
    await page.click('#enrol-totp');
    await page.waitForSelector('#totp-box:not([hidden])', { timeout: STEP });
    const shown = await text(page, '#totp-uri');
    assert.match(shown, /^otpauth:\/\/totp\//);
    await page.waitForFunction(() => document.getElementById('totp-qr').src.startsWith('data:image/svg+xml'), null, { timeout: STEP });
    const secret = /secret: ([A-Z2-7]+)/.exec(shown)[1];
    await page.fill('#totp-code', totp(secret));
    await page.click('#verify-totp');
    await shows(page, 'account-msg', 'ok');
    const claims = JSON.parse(await text(page, '#claims')).claims;
    assert.equal(claims.acr, 'aal2');
    assert.deepEqual(claims.amr, ['swk', 'otp', 'mfa']);
  });

  test('refresh replaces the token and spends the refresh token', async () => {
    const before = await readStore(page, 'session');
    const oldClaims = await claimsOf(page);
    await page.click('#refresh');
    await shows(page, 'token-msg', 'ok');
    const after = await readStore(page, 'session');
    const claims = await claimsOf(page);
    assert.notEqual(after.token, before.token);
    assert.ok(after.refresh_token, 'a new refresh token came back');
    assert.notEqual(after.refresh_token, before.refresh_token);
    assert.notEqual(claims.jti, oldClaims.jti);
    assert.equal(claims.sub, identity);
    assert.equal(claims.sid, oldClaims.sid, 'a refresh stays in the same session');
  });

  test('lists sessions, revokes one and the current one, then signs in again', async () => {
    const oldSession = await readStore(page, 'session');
    const second = await signIn(page, { origin, identity }); // a second session for this identity
    assert.notEqual(second.sid, oldSession.session_id);
    let items = await reloadSessions(page, 2);
    assert.deepEqual(items.filter((s) => s.current).map((s) => s.sid), [second.sid]);

    // Revoke the older session: it disappears and its token stops working at once.
    await page.click(`#sessions > li[data-sid="${oldSession.session_id}"] button`);
    await shows(page, 'sessions-msg', 'ok', /Session revoked/);
    items = await reloadSessions(page, 1);
    assert.equal(items[0].sid, second.sid);
    const dead = await whoamiWithPageProof(page, origin, oldSession.token);
    assert.equal(dead.status, 401, `a revoked session's token is refused, even with the key's proof (got ${dead.status})`);
    assert.equal(dead.body?.error, 'session_revoked');

    // Revoke this browser's own session: the page signs out.
    await page.click(`#sessions > li[data-sid="${second.sid}"] button`);
    await page.waitForSelector('#signed-out-card:not([hidden])', { timeout: STEP });
    assert.match(await text(page, '#signin-msg'), /signed out/i);
    assert.equal(await readStore(page, 'session'), null);

    const again = await signIn(page, { origin, identity });
    assert.equal(again.sub, identity);
    assert.notEqual(again.sid, second.sid);
  });

  test('logs out other sessions, this one, and everywhere; the screenshot shows a signed-in page', async () => {
    const older = (await readStore(page, 'session')).session_id;
    const claims = await signIn(page, { origin, identity });
    const items = await reloadSessions(page, 2);
    assert.deepEqual(items.map((s) => s.sid).sort(), [older, claims.sid].sort());
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: STEP });

    await page.click('#logout [data-scope="others"]');
    await shows(page, 'sessions-msg', 'ok', /Logged out everywhere else/);
    assert.match(await text(page, '#sessions-msg'), /\b1 session\b/);
    assert.deepEqual((await reloadSessions(page, 1)).map((s) => s.sid), [claims.sid]);

    await page.click('#logout [data-scope="local"]');
    await page.waitForSelector('#signed-out-card:not([hidden])', { timeout: STEP });
    assert.match(await text(page, '#signin-msg'), /Logged out/);

    await signIn(page, { origin, identity });
    await signIn(page, { origin, identity });
    await page.click('#logout [data-scope="global"]');
    await page.waitForSelector('#signed-out-card:not([hidden])', { timeout: STEP });
    assert.match(await text(page, '#signin-msg'), /Logged out everywhere: 2 sessions ended/);
  });

  test('falls back to HTTP when WebSockets cannot open', async () => {
    const httpPage = await context.newPage();
    try {
      await httpPage.addInitScript(() => {
        window.WebSocket = class { constructor() { throw new DOMException('blocked by the test', 'SecurityError'); } };
      });
      await httpPage.goto(`${origin}/`, { timeout: STEP });
      assert.equal(await identityOf(httpPage), identity, 'the same profile keeps the same identity');
      const claims = await signIn(httpPage, { origin, identity, via: 'HTTP' });
      assert.equal(claims.sub, identity);
      assert.ok(traffic.requests.some((r) => r.method === 'POST' && new URL(r.url).pathname === '/api/token'));
      await httpPage.click('#logout [data-scope="local"]');
      await httpPage.waitForSelector('#signed-out-card:not([hidden])', { timeout: STEP });
    } finally {
      await httpPage.close();
    }
  });

  test('refuses to sign a challenge for another site or another identity', async () => {
    const cases = [
      { audience: 'https://evil.example', who: identity, expect: /meant for "https:\/\/evil\.example"/ },
      { audience: origin, who: `bbaarei${'a'.repeat(52)}`, expect: /identity that is not yours/ },
    ];
    for (const c of cases) {
      const fake = await context.newPage();
      let signed = false;
      try {
        await fake.routeWebSocket(/\/ws\/userauth$/, (ws) => {
          ws.onMessage((message) => {
            const msg = JSON.parse(String(message));
            if (msg.type !== 'token') { signed = true; return; }
            const now = new Date();
            const at = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
            const value = ['keygate sign-in challenge v1', `audience: ${c.audience}`, `identity: ${c.who}`,
              'nonce: AAAAAAAAAAAAAAAAAAAAAA', `issued-at: ${at(now)}`, `expires-at: ${at(new Date(+now + 60_000))}`].join('\n');
            traffic.challenges.add(value);
            ws.send(JSON.stringify({ type: 'challenge', value, expires_at: at(new Date(+now + 60_000)) }));
          });
        });
        await fake.goto(`${origin}/`, { timeout: STEP });
        await identityOf(fake);
        await fake.click('#sign-in');
        await shows(fake, 'signin-msg', 'bad');
        assert.match(await text(fake, '#signin-msg'), /Not signed/);
        assert.match(await text(fake, '#checks'), c.expect);
        assert.equal(await fake.isVisible('#approve'), false, 'no way to sign it anyway');
        assert.equal(signed, false, 'no signature was sent');
      } finally {
        await fake.close();
      }
    }
  });

  test('"New identity" asks first, then replaces the key', async () => {
    await page.click('#new-identity');
    await page.waitForSelector('#confirm-new[open]');
    await page.click('#keep-identity');
    await page.waitForSelector('#confirm-new:not([open])', { state: 'attached' });
    assert.equal(await text(page, '#identity'), identity);

    await page.click('#new-identity');
    await page.click('#replace-identity');
    await page.waitForFunction((old) => {
      const shown = document.getElementById('identity').textContent;
      return shown !== old && /^bbaarei/.test(shown);
    }, identity, { timeout: STEP });
    const fresh = await identityOf(page);
    assert.match(fresh, IDENTITY);
    const claims = await signIn(page, { origin, identity: fresh });
    assert.equal(claims.sub, fresh);
  });

  test('sends nothing but the identity, challenges, signatures and tokens, and only to its own origin', async () => {
    await within(STEP, Promise.all(traffic.pending), 'reading response bodies');
    assert.deepEqual(traffic.problems, [], 'no script errors, CSP violations or failed loads');
    assert.ok(traffic.sent.length >= 10, `saw ${traffic.sent.length} messages`);
    assert.ok(traffic.sent.some((m) => m.where.startsWith('ws ') && m.json?.sig), 'WebSocket frames were seen');
    for (const m of traffic.sent) {
      assert.ok(m.json && typeof m.json === 'object' && !Array.isArray(m.json), `${m.where} sent non-JSON: ${m.raw}`);
      for (const [k, v] of Object.entries(m.json)) {
        assert.ok(Object.hasOwn(ALLOWED, k), `${m.where} sent a key outside the allowlist: ${k}`);
        assert.ok(ALLOWED[k](v, m.where), `${m.where} sent an unexpected ${k}: ${JSON.stringify(v).slice(0, 80)}`);
      }
    }
    const secrets = [...traffic.tokens, ...traffic.refreshTokens];
    for (const r of traffic.requests) {
      assert.equal(new URL(r.url).origin, origin, `request to another origin: ${r.url}`);
      for (const s of secrets) assert.ok(!r.url.includes(s), `a token travelled in a URL: ${r.method} ${r.url}`);
      // Every token goes as DPoP with a proof of its own for this method and URL;
      // the HTTP sign-in and refreshes carry a proof alone.
      const u = new URL(r.url);
      const htu = `${u.origin}${u.pathname}`;
      if (r.authorization) {
        const [scheme, token] = r.authorization.split(' ');
        assert.equal(scheme, 'DPoP', `${r.method} ${r.url}`);
        assert.ok(traffic.tokens.has(token), `${r.url} carried an unknown token`);
        assert.ok(r.dpop, `${r.method} ${r.url} carried no proof`);
        checkProof(r.dpop, { htm: r.method, htu, token });
      } else if (r.method === 'POST' && ['/api/token', '/v1/token/refresh'].includes(u.pathname)) {
        assert.ok(r.dpop, `${r.method} ${r.url} carried no proof`);
        checkProof(r.dpop, { htm: 'POST', htu });
      } else {
        assert.equal(r.dpop, null, `${r.method} ${r.url} carried a proof without a token`);
      }
    }
  });

  test('says plainly when the server is down', async () => {
    await server.stop();
    await page.click('#sign-in');
    await shows(page, 'signin-msg', 'bad');
    const message = await text(page, '#signin-msg');
    assert.match(message, /Can’t reach the server/);
    assert.match(message, /network/);
  });
});

// ---- recovery: lose the only device, recover with the words in a fresh profile ----------

/**
 * Records what a page sends (request bodies and URLs, WebSocket frames) and its
 * script errors; `expected401` lists URL paths whose refusal the page is made to see.
 */
function record(page, log) {
  page.on('pageerror', (err) => log.problems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    // Chromium logs every 4xx fetch; the one the test provokes on purpose is allowed.
    if (log.expected401 && /status of 401/.test(msg.text())) return;
    log.problems.push(`console: ${msg.text()}`);
  });
  page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => log.sent.push({ where: `ws ${ws.url()}`, text: String(payload) })));
  page.on('request', (req) => log.sent.push({
    where: `${req.method()} ${new URL(req.url()).pathname}`, url: req.url(), text: req.postData() ?? '',
  }));
}

/** Every value the page keeps: its IndexedDB records (CryptoKeys as a marker), localStorage, sessionStorage. */
const storedText = (page) => page.evaluate(() => new Promise((resolve, reject) => {
  const open = indexedDB.open('keygate-demo');
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const all = open.result.transaction('kv').objectStore('kv').getAll();
    all.onerror = () => reject(all.error);
    all.onsuccess = () => resolve(JSON.stringify({
      idb: all.result, local: { ...localStorage }, session: { ...sessionStorage },
    }, (_, v) => (v instanceof CryptoKey ? `[CryptoKey ${v.type} extractable=${v.extractable}]` : v)));
  };
}));

describe('recovery in Chromium: lose the only device, recover with the words in a fresh profile', { timeout: 240_000 }, () => {
  let server;
  let origin;
  let contextA;
  let contextB;
  let pageA;
  let pageB;
  let identityA;
  let identityB;
  let claimsA;
  let sessionA;
  let words; // the 24 words as profile A showed them
  const logA = { sent: [], problems: [] };
  const logB = { sent: [], problems: [] };

  before(async () => {
    server = await startKeygate({ webRoot: demoDir });
    origin = server.origin;
    contextA = await launchProfile(path.join(server.dir, 'profile-a'));
    pageA = contextA.pages()[0] ?? (await contextA.newPage());
    record(pageA, logA);
  });

  after(async () => {
    for (const c of [contextA, contextB]) await within(STEP, c?.close() ?? Promise.resolve(), 'closing Chromium').catch(() => {});
    await server?.dispose();
  });

  test('profile A signs in, creates a recovery key and is shown its 24 words once', async () => {
    await pageA.goto(`${origin}/`, { timeout: STEP });
    identityA = await identityOf(pageA);
    claimsA = await signIn(pageA, { origin, identity: identityA });
    assert.match(claimsA.acct ?? '', /^acct_/, 'a signed-in key has an account');
    assert.equal(await pageA.isVisible('#recover-box'), true, 'recovery is offered once signed in');
    await pageA.waitForFunction(() => document.querySelectorAll('#account-keys > li').length === 1, null, { timeout: STEP });

    await pageA.click('#create-recovery');
    await shows(pageA, 'account-msg', 'ok', /Recovery key created/);
    await pageA.waitForSelector('#recovery-box:not([hidden])', { timeout: STEP });
    assert.match(await text(pageA, '#recovery-box .warning'), /Write these 24 words down now/);
    assert.equal(await pageA.$eval('#recovery-words', (ol) => ol.tagName), 'OL', 'numbered');
    words = await pageA.$$eval('#recovery-words > li', (items) => items.map((li) => li.textContent));
    assert.equal(words.length, 24);
    for (const w of words) assert.match(w, /^[a-z]{3,8}$/);

    // The key list shows the recovery key by its label.
    await pageA.waitForFunction(() => document.querySelectorAll('#account-keys > li').length === 2, null, { timeout: STEP });
    const labels = await pageA.$$eval('#account-keys > li', (items) => items.map((li) => li.dataset.label));
    assert.ok(labels.includes('recovery'), JSON.stringify(labels));
    assert.match(await text(pageA, '#account-keys > li[data-label="recovery"] .title'), /^recovery/);

    // Shown once: "I wrote them down" takes them off the page.
    await pageA.click('#recovery-done');
    await pageA.waitForSelector('#recovery-box', { state: 'hidden', timeout: STEP });
    assert.equal(await pageA.$$eval('#recovery-words > li', (items) => items.length), 0);
    sessionA = await readStore(pageA, 'session');
    assert.equal(sessionA.session_id, claimsA.sid);
  });

  test('a fresh profile signs in with its own key, and wrong words are refused before anything is sent', async () => {
    contextB = await launchProfile(path.join(server.dir, 'profile-b'));
    pageB = contextB.pages()[0] ?? (await contextB.newPage());
    record(pageB, logB);
    await pageB.goto(`${origin}/`, { timeout: STEP });
    identityB = await identityOf(pageB);
    assert.notEqual(identityB, identityA, 'a new profile makes its own key');
    assert.equal(await pageB.isVisible('#recover-box'), false, 'signed out: no recovery yet');
    assert.match(await text(pageB, '#recover-hint'), /Sign in here first/);
    const claimsB = await signIn(pageB, { origin, identity: identityB });
    assert.notEqual(claimsB.acct, claimsA.acct);
    await pageB.waitForSelector('#recover-box:not([hidden])', { timeout: STEP });

    // The same words with the last one changed so that the checksum no longer holds
    // (the page's own package finds which replacement breaks it), and one word short.
    const broken = await pageB.evaluate(async (ws) => {
      const kg = await import('/keygate-client.js');
      for (const w of ['abandon', 'zoo', 'legal', 'about']) {
        const tried = [...ws.slice(0, 23), w].join(' ');
        if (await kg.recoveryKeyFromWords(tried).then(() => false, () => true)) return tried;
      }
      return null;
    }, words);
    assert.ok(broken, 'a wrong last word');
    const cases = [[broken, /checksum/], [words.slice(0, 23).join(' '), /24 words; this is 23/]];
    const sentBefore = logB.sent.length;
    for (const [typed, why] of cases) {
      await pageB.fill('#recover-words', typed);
      await pageB.click('#recover');
      await shows(pageB, 'recover-msg', 'bad', why);
    }
    // (GETs of the account view that signing in started may still be on their way: they carry no body.)
    const calls = logB.sent.slice(sentBefore).filter((m) => !m.where.startsWith('GET '));
    assert.deepEqual(calls.map((m) => m.where), [], 'nothing went out for wrong words');
  });

  test('the words recover A\'s account in profile B: acct is A\'s, acr aal2, the key list and a notice say so', async () => {
    // Typed as written down on paper: numbered, one per line, some in capitals.
    await pageB.fill('#recover-words', words.map((w, i) => `${i + 1}. ${i % 5 === 0 ? w.toUpperCase() : w}`).join('\n'));
    const before = await text(pageB, '#claims');
    await pageB.click('#recover');
    await shows(pageB, 'recover-msg', 'ok', /recovered/);
    await pageB.waitForFunction((old) => document.getElementById('claims').textContent !== old, before, { timeout: STEP });
    const claims = await claimsOf(pageB);
    assert.equal(claims.acct, claimsA.acct, 'the token names A\'s account');
    assert.equal(claims.acr, 'aal2');
    assert.equal(claims.sub, identityB);
    assert.match(await text(pageB, '#recover-msg'), new RegExp(claimsA.acct));
    assert.equal(await pageB.inputValue('#recover-words'), '', 'the words are cleared from the field');
    assert.equal((await readStore(pageB, 'session')).token.split('.')[1], (await text(pageB, '#token-raw')).split('.')[1]);

    // The account now lists A's key and this one; the recovery key is spent.
    await pageB.waitForFunction((a) => {
      const items = [...document.querySelectorAll('#account-keys > li')];
      return items.length === 2 && items.some((li) => li.textContent.includes(a));
    }, identityA, { timeout: STEP });
    const keys = await pageB.$$eval('#account-keys > li', (items) => items.map((li) => ({ label: li.dataset.label, text: li.textContent })));
    assert.ok(keys.some((k) => k.text.includes(identityB) && k.text.includes('this browser')), JSON.stringify(keys));
    assert.ok(!keys.some((k) => k.label === 'recovery'), 'the recovery key is gone from the account');
    assert.match(await text(pageB, '#account-id'), new RegExp(`^${claimsA.acct}`));
    await pageB.waitForSelector('#recovery-notice:not([hidden])', { timeout: STEP });
    assert.match(await text(pageB, '#recovery-notice'), /recovered with its recovery key/);
  });

  test('profile A\'s session has ended: refused with its key\'s proof, and the page signs out', async () => {
    const dead = await whoamiWithPageProof(pageA, origin, sessionA.token);
    assert.equal(dead.status, 401, JSON.stringify(dead.body));
    assert.equal(dead.body?.error, 'session_revoked');
    logA.expected401 = true;
    await pageA.click('#whoami');
    await pageA.waitForSelector('#signed-out-card:not([hidden])', { timeout: STEP });
    assert.match(await text(pageA, '#signin-msg'), /logged out \(revoked\)/);
    assert.equal(await readStore(pageA, 'session'), null);
  });

  test('the words never left the pages and are stored nowhere; only the expected fields were sent', async () => {
    const phrase = words.join(' ');
    const pairs = words.slice(1).map((w, i) => `${words[i]} ${w}`);
    for (const [who, log] of [['A', logA], ['B', logB]]) {
      assert.deepEqual(log.problems, [], `profile ${who}: no script errors or failed loads`);
      for (const m of log.sent) {
        const hay = `${m.url ?? ''}\n${m.text}`.toLowerCase();
        assert.ok(!pairs.some((p) => hay.includes(p)), `profile ${who} sent recovery words: ${m.where}`);
      }
    }
    for (const page of [pageA, pageB]) {
      const kept = (await storedText(page)).toLowerCase();
      assert.ok(!kept.includes(phrase) && !pairs.some((p) => kept.includes(p)), 'no words in storage');
    }
    // What the recovery calls carried: names and signatures only.
    const bodies = (log, where) => log.sent.filter((m) => m.where === where).map((m) => JSON.parse(m.text));
    const linkChallenges = bodies(logA, 'POST /v1/account/link/challenge');
    assert.equal(linkChallenges.length, 1);
    assert.deepEqual(Object.keys(linkChallenges[0]), ['identity']);
    const links = bodies(logA, 'POST /v1/account/link');
    assert.equal(links.length, 1);
    assert.deepEqual(Object.keys(links[0]).sort(), ['challenge', 'label', 'new_sig', 'sig']);
    assert.equal(links[0].label, 'recovery');
    assert.match(links[0].sig, SIGNATURE);
    assert.match(links[0].new_sig, SIGNATURE);
    const recoverChallenges = bodies(logB, 'POST /v1/account/recover/challenge');
    assert.equal(recoverChallenges.length, 1);
    assert.deepEqual(Object.keys(recoverChallenges[0]), ['identity']);
    assert.match(recoverChallenges[0].identity, IDENTITY);
    assert.equal(recoverChallenges[0].identity, links[0].challenge.split('\n').find((l) => l.startsWith('new-identity: ')).slice(14),
      'B asked about the key A linked');
    const recovers = bodies(logB, 'POST /v1/account/recover');
    assert.equal(recovers.length, 1);
    assert.deepEqual(Object.keys(recovers[0]).sort(), ['challenge', 'label', 'new_sig', 'sig']);
    const lines = recovers[0].challenge.split('\n');
    assert.equal(lines.length, 9);
    assert.equal(lines[0], 'keygate recovery challenge v1');
    assert.ok(lines.includes(`account: ${claimsA.acct}`) && lines.includes(`new-identity: ${identityB}`), recovers[0].challenge);
  });
});
