// The package in Debian's headless Chromium (playwright-core) against a real keygate
// serve: a non-extractable key in IndexedDB, sign-in over WebSocket and HTTP, a
// session that survives a reload, two tabs refreshing at once: exactly one refresh
// request, both tabs end with the new token; and tokens bound to that key (DPoP),
// with a proof by it on every request.
//   KEYGATE_BIN=… node --test test/browser.test.js

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startKeygate, packageDir, within, eventually, NO_RATE_LIMITS } from './support.js';
import { BUNDLE, bip39Bundle } from '../scripts/vendor.js';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP = 15_000;

// src/*.js as they are; the one bare import (@scure/bip39) maps to the bundle the
// web demo gets (scripts/vendor.js), as an app without a bundler would map it.
const PAGE = `<!doctype html><meta charset=utf-8><title>keygate-client test</title>
<script type="importmap">{"imports": {"@scure/bip39": "./${BUNDLE}", "@scure/bip39/wordlists/english.js": "./${BUNDLE}"}}</script>
<script type="module">
  import * as kg from './index.js';
  const store = kg.keyStore({ name: 'pkg-test' });
  window.kg = kg;
  window.store = store;
  window.tokens = new kg.TokenStore({ store, clientId: 'browser-test' });
  window.ready = true;
</script>`;

describe('keygate-client in Chromium', { timeout: 180_000 }, () => {
  let kg;
  let webRoot;
  let context;
  let tabA;
  let tabB;
  const refreshRequests = [];

  const open = async () => {
    const page = await context.newPage();
    page.on('pageerror', (err) => assert.fail(`uncaught in page: ${err.message}`));
    await page.goto(`${kg.origin}/`, { timeout: STEP });
    await page.waitForFunction(() => window.ready === true, null, { timeout: STEP });
    return page;
  };

  before(async () => {
    // The server serves the top-level files of --web-root: the package's modules and a page.
    webRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'keygate-js-web-'));
    for (const f of fs.readdirSync(path.join(packageDir, 'src')).filter((n) => n.endsWith('.js'))) {
      fs.copyFileSync(path.join(packageDir, 'src', f), path.join(webRoot, f));
    }
    fs.writeFileSync(path.join(webRoot, BUNDLE), bip39Bundle());
    fs.writeFileSync(path.join(webRoot, 'index.html'), PAGE);
    kg = await startKeygate({ webRoot, args: NO_RATE_LIMITS });
    assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM`);
    context = await chromium.launchPersistentContext(path.join(kg.dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60_000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    context.setDefaultTimeout(STEP);
    context.on('request', (req) => {
      if (req.method() === 'POST' && new URL(req.url()).pathname === '/v1/token/refresh') refreshRequests.push(req.url());
    });
    for (const p of context.pages()) await p.close();
    tabA = await open();
  });

  after(async () => {
    await within(STEP, context?.close() ?? Promise.resolve(), 'closing Chromium').catch(() => {});
    await kg?.dispose();
    if (webRoot) fs.rmSync(webRoot, { recursive: true, force: true });
  });

  test('the key pair is made non-extractable, kept in IndexedDB, and named in all three forms', async () => {
    const first = await tabA.evaluate(async () => {
      const { keyPair } = await store.loadOrCreateKeyPair();
      const { privateKey } = keyPair;
      const refused = (format) => crypto.subtle.exportKey(format, privateKey).then(() => false, () => true);
      const identity = await kg.identityOf(keyPair.publicKey);
      return {
        identity, peerId: kg.peerIdOf(identity), didKey: kg.didKeyOf(identity),
        extractable: privateKey.extractable, usages: privateKey.usages, algorithm: privateKey.algorithm.name,
        pkcs8Refused: await refused('pkcs8'), jwkRefused: await refused('jwk'), rawRefused: await refused('raw'),
      };
    });
    assert.match(first.identity, /^bbaarei[a-z2-7]{52}$/);
    assert.match(first.peerId, /^12D3KooW[1-9A-HJ-NP-Za-km-z]+$/);
    assert.match(first.didKey, /^did:key:z6Mk[1-9A-HJ-NP-Za-km-z]+$/);
    assert.equal(first.extractable, false);
    assert.equal(first.algorithm, 'Ed25519');
    assert.deepEqual(first.usages, ['sign']);
    assert.deepEqual([first.pkcs8Refused, first.jwkRefused, first.rawRefused], [true, true, true]);

    await tabA.reload();
    await tabA.waitForFunction(() => window.ready === true);
    const again = await tabA.evaluate(async () => kg.identityOf((await store.loadOrCreateKeyPair()).keyPair.publicKey));
    assert.equal(again, first.identity, 'the same key after a reload');
  });

  test('signs in over WebSocket and over HTTP with the stored key', async () => {
    for (const transport of ['ws', 'http']) {
      const r = await tabA.evaluate(async (t) => {
        const { keyPair } = await store.loadOrCreateKeyPair();
        const identity = await kg.identityOf(keyPair.publicKey);
        const seen = [];
        const body = await kg.signIn({
          identity, privateKey: keyPair.privateKey, transport: t, clientId: 'browser-test', offline: true,
          approve: (challenge) => { seen.push(challenge.checks.map((c) => c.ok)); return true; },
        });
        const me = await kg.whoami(body.token);
        return { via: body.via, refresh: typeof body.refresh_token, seen, me: me.identity, identity };
      }, transport);
      assert.equal(r.via, transport === 'ws' ? 'WebSocket' : 'HTTP');
      assert.equal(r.refresh, 'string');
      assert.deepEqual(r.seen, [[true, true]], 'the audience and identity checks ran and passed');
      assert.equal(r.me, r.identity);
    }
  });

  test('two tabs refreshing at once send one refresh request and both end with the new token', async () => {
    const signedIn = await tabA.evaluate(async () => {
      const { keyPair } = await store.loadOrCreateKeyPair();
      const identity = await kg.identityOf(keyPair.publicKey);
      const body = await kg.signIn({ identity, privateKey: keyPair.privateKey, clientId: 'browser-test', offline: true });
      return (await tokens.set(body)).token;
    });
    tabB = await open();
    assert.equal(await tabB.evaluate(async () => (await tokens.load())?.token), signedIn, 'tab B reads the stored session');
    refreshRequests.length = 0;

    // Hold tab A's refresh request at the network until tab B is queued on the lock, so
    // both tabs certainly start from the same refresh token.
    let release;
    const gate = new Promise((resolve) => { release = resolve; });
    await context.route('**/v1/token/refresh', async (route) => { await gate; await route.continue(); });
    try {
      await tabA.evaluate(() => { window.result = tokens.refresh().then((s) => s.token, (e) => `error ${e.code}`); });
      await eventually(STEP, () => refreshRequests.length === 1, 'tab A sent its refresh');
      await tabB.evaluate(() => { window.result = tokens.refresh().then((s) => s.token, (e) => `error ${e.code}`); });
      await eventually(STEP, () => tabB.evaluate(async () => (await navigator.locks.query()).pending
        .some((l) => l.name.startsWith('keygate-refresh:'))), 'tab B waits for the refresh lock');
      release();
      const [a, b] = await Promise.all([tabA.evaluate(() => window.result), tabB.evaluate(() => window.result)]);
      assert.doesNotMatch(a, /^error/);
      assert.equal(b, a, 'both tabs got the same new token');
      assert.notEqual(a, signedIn);
    } finally {
      release();
      await context.unroute('**/v1/token/refresh');
    }
    assert.equal(refreshRequests.length, 1, 'exactly one refresh request');
    const held = await Promise.all([tabA, tabB].map((p) => p.evaluate(() => tokens.session.token)));
    assert.deepEqual(held, [held[0], held[0]]);
    const alive = await tabB.evaluate(async () => (await kg.whoami(tokens.session.token)).identity);
    assert.match(alive, /^bbaarei/, 'the session survived: no refresh token was spent twice');
  });

  test('a refresh in one tab reaches the other tab without a request of its own', async () => {
    refreshRequests.length = 0;
    const fresh = await tabA.evaluate(async () => (await tokens.refresh()).token);
    await eventually(STEP, async () => (await tabB.evaluate(() => tokens.session?.token)) === fresh, 'tab B heard of it');
    assert.equal(refreshRequests.length, 1);
  });

  test('with dpop: true the stored non-extractable key binds the token and signs a proof for every request', async () => {
    const sent = [];
    const note = (req) => {
      const u = new URL(req.url());
      if (u.origin === kg.origin && (u.pathname.startsWith('/v1/') || u.pathname === '/api/token')) {
        sent.push({ method: req.method(), path: u.pathname, authorization: req.headers().authorization ?? null, dpop: req.headers().dpop ?? null });
      }
    };
    context.on('request', note);
    try {
      for (const transport of ['ws', 'http']) {
        sent.length = 0;
        const r = await tabA.evaluate(async (t) => {
          const { keyPair } = await store.loadOrCreateKeyPair();
          const identity = await kg.identityOf(keyPair.publicKey);
          const body = await kg.signIn({ identity, keyPair, transport: t, dpop: true, clientId: 'browser-test', offline: true });
          const me = await kg.whoami(body.token, { dpop: keyPair });
          const sessions = await kg.listSessions(body.token, { dpop: keyPair });
          const asBearer = await fetch('/v1/whoami', { headers: { Authorization: `Bearer ${body.token}` } });
          const bound = new kg.TokenStore({ store: kg.memoryStore(), clientId: 'browser-test', dpop: keyPair });
          await bound.set(body);
          const refreshed = await bound.refresh();
          const viaStore = await bound.fetch('/v1/whoami');
          await kg.logout(refreshed.token, 'local', { dpop: keyPair });
          return {
            via: body.via, tokenType: body.token_type, cnf: kg.decodeJwt(body.token).payload.cnf ?? null,
            jkt: await kg.jwkThumbprint(await kg.publicJwk(keyPair.publicKey)), x: (await kg.publicJwk(keyPair.publicKey)).x,
            me: me.identity, identity, listed: sessions.sessions.some((s) => s.session_id === body.session_id),
            bearerStatus: asBearer.status, bearerError: (await asBearer.json()).error,
            refreshedType: refreshed.token_type, refreshedCnf: kg.decodeJwt(refreshed.token).payload.cnf ?? null,
            storeStatus: viaStore.status, extractable: keyPair.privateKey.extractable,
          };
        }, transport);
        assert.equal(r.via, transport === 'ws' ? 'WebSocket' : 'HTTP');
        assert.equal(r.tokenType, 'DPoP');
        assert.deepEqual(r.cnf, { jkt: r.jkt });
        assert.equal(r.me, r.identity);
        assert.equal(r.listed, true);
        assert.equal(r.bearerStatus, 401);
        assert.equal(r.bearerError, 'invalid_token');
        assert.equal(r.refreshedType, 'DPoP');
        assert.deepEqual(r.refreshedCnf, { jkt: r.jkt });
        assert.equal(r.storeStatus, 200);
        assert.equal(r.extractable, false, 'the key that signs proofs is still not extractable');

        // On the wire: every authorized request is DPoP with a proof by this key for its
        // own method and URL; the HTTP sign-in and the refresh carry a proof and no token.
        const authorized = sent.filter((q) => q.authorization && !q.authorization.startsWith('Bearer '));
        assert.ok(authorized.length >= 4, JSON.stringify(sent));
        for (const q of [...authorized, ...sent.filter((q) => q.path === '/v1/token/refresh' || (q.path === '/api/token' && q.method === 'POST'))]) {
          assert.ok(q.dpop, `${q.method} ${q.path} carried a proof`);
          const [h, p] = q.dpop.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url')));
          assert.deepEqual(h, { typ: 'dpop+jwt', alg: 'EdDSA', jwk: { kty: 'OKP', crv: 'Ed25519', x: r.x } });
          assert.equal(p.htm, q.method);
          assert.equal(p.htu, `${kg.origin}${q.path}`);
          assert.equal('ath' in p, Boolean(q.authorization), `${q.path}: ath exactly when a token goes with it`);
          if (q.authorization) assert.match(q.authorization, /^DPoP [\w-]+\.[\w-]+\.[\w-]+$/);
        }
      }
    } finally {
      context.off('request', note);
    }
  });

  test('a reload keeps the session', async () => {
    const before = await tabB.evaluate(() => tokens.session.token);
    refreshRequests.length = 0;
    await tabB.reload();
    await tabB.waitForFunction(() => window.ready === true);
    const after = await tabB.evaluate(async () => {
      await tokens.load();
      const token = await tokens.accessToken();
      return { token, me: (await kg.whoami(token)).session_id, sid: tokens.session.session_id };
    });
    assert.equal(after.token, before);
    assert.equal(after.me, after.sid);
    assert.equal(refreshRequests.length, 0, 'a fresh token is not refreshed');
  });
});
