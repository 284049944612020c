// The package against a real `keygate serve`, from Node: identity forms, the Provider
// sign-in (WebSocket and HTTP) with its checks, refresh, renewal by signature,
// sessions and logout, accounts and MFA, the token store's one-refresh rule, and the
// backend side: API-key HMAC requests to the Hub, brokered tokens, introspection and
// the offline verifier with its JWKS refetch limit and revocation feed; DPoP:
// tokens bound to the user's key, usable only with its proofs.
//   KEYGATE_BIN=… node --experimental-websocket --test

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startKeygate, eventually, totp, NO_RATE_LIMITS } from './support.js';
import {
  identityOf, identityFromRawKey, rawKeyFromIdentity, peerIdOf, didKeyOf, signIn, renew, refresh, whoami,
  listSessions, revokeSession, logout, exchangeBrokerToken, decodeJwt, ChallengeRefused, KeygateError,
  accountKeys, enrolTotp, verifyTotp, inviteUrl, linkCodeFromUrl, acceptLink, stepUpWithKey, TokenStore,
  memoryStore, apiKeyHeaders, apiSecretBytes, HubClient, TokenVerifier, bearerToken,
  dpopProof, jwkThumbprint, publicJwk, authorizedFetch, qrDataUrl,
} from '../src/node.js';

const newKey = () => crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
const CLIENT = 'node-test';

/** base58btc by BigInt arithmetic: an implementation independent of the package's. */
function base58Reference(bytes) {
  const alphabet = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  let n = BigInt('0x' + (Buffer.from(bytes).toString('hex') || '0'));
  let out = '';
  while (n > 0n) { out = alphabet[Number(n % 58n)] + out; n /= 58n; }
  for (const b of bytes) { if (b !== 0) break; out = '1' + out; }
  return out;
}

describe('identity forms', () => {
  test('canonical identity, PeerId and did:key of a fixed key', () => {
    // RFC 8032, test 1 public key.
    const raw = Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex');
    const id = identityFromRawKey(raw);
    assert.match(id, /^bbaarei[a-z2-7]{52}$/);
    assert.deepEqual(Buffer.from(rawKeyFromIdentity(id)), raw);
    const peer = peerIdOf(id);
    assert.match(peer, /^12D3KooW/);
    assert.equal(peer, base58Reference([0x00, 0x24, 0x08, 0x01, 0x12, 0x20, ...raw]));
    const did = didKeyOf(id);
    assert.match(did, /^did:key:z6Mk/);
    assert.equal(did, 'did:key:z' + base58Reference([0xed, 0x01, ...raw]));
    for (const bad of ['', 'b', id.toUpperCase(), id.slice(0, -1), `${id.slice(0, -1)}1`, `z${id.slice(1)}`]) {
      assert.equal(rawKeyFromIdentity(bad), null, bad);
    }
  });

  test('the API secret decodes to 32 bytes and the signature headers have the documented shape', () => {
    const secret = 'b' + 'a'.repeat(52);
    assert.equal(apiSecretBytes(secret).length, 32);
    assert.throws(() => apiSecretBytes('B' + 'A'.repeat(52)), TypeError);
    const h = apiKeyHeaders({ keyId: 'kgk_x', secret, now: Date.parse('2026-01-01T00:00:00Z') });
    assert.equal(h['x-keygate-api-sig-msg'], '2026-01-01T00:01:00Z');
    assert.match(h['x-keygate-api-sig'], /^b[a-z2-7]{52}$/);
    assert.equal(bearerToken('Bearer a.b.c'), 'a.b.c');
    assert.equal(bearerToken('Basic a'), null);
  });
});

describe('keygate-client against keygate serve', { timeout: 120_000 }, () => {
  let kg;
  let baseUrl;
  let keys;
  let identity;

  before(async () => {
    kg = await startKeygate({ args: NO_RATE_LIMITS }); // many sign-ins a second from one identity
    baseUrl = kg.origin;
    keys = await newKey();
    identity = await identityOf(keys.publicKey);
  });
  after(() => kg?.dispose());

  test('signs in over WebSocket and over HTTP, and refreshes', async () => {
    for (const transport of ['ws', 'http']) {
      const t = await signIn({ identity, privateKey: keys.privateKey, baseUrl, transport, clientId: CLIENT, offline: true });
      assert.equal(t.via, transport === 'ws' ? 'WebSocket' : 'HTTP');
      assert.ok(t.refresh_token, 'offline sign-in returns a refresh token');
      const { header, payload } = decodeJwt(t.token);
      assert.equal(header.typ, 'at+jwt');
      assert.equal(payload.sub, identity);
      assert.equal(payload.client_id, CLIENT);
      assert.equal((await whoami(t.token, { baseUrl })).identity, identity);
      const fresh = await refresh(t.refresh_token, { clientId: CLIENT, baseUrl });
      assert.equal(fresh.session_id, t.session_id);
      assert.notEqual(fresh.refresh_token, t.refresh_token);
      const reused = await refresh(t.refresh_token, { clientId: CLIENT, baseUrl }).catch((e) => e);
      assert.ok(reused instanceof KeygateError);
      assert.equal(reused.code, 'refresh_token_reused');
      assert.equal(reused.status, 401);
    }
  });

  test('refuses to sign a challenge for another audience, and types server errors', async () => {
    const refused = await signIn({ identity, privateKey: keys.privateKey, baseUrl, origin: 'https://evil.example' }).catch((e) => e);
    assert.ok(refused instanceof ChallengeRefused, String(refused));
    assert.match(refused.message, /evil\.example/);
    const bad = await whoami('not-a-token', { baseUrl }).catch((e) => e);
    assert.equal(bad.code, 'invalid_token');
    assert.equal(bad.status, 401);
    const down = await whoami('x', { baseUrl: 'http://127.0.0.1:9' }).catch((e) => e);
    assert.equal(down.code, 'network');
  });

  test('renews a session by signing, lists, revokes and logs out', async () => {
    const a = await signIn({ identity, privateKey: keys.privateKey, baseUrl, clientId: CLIENT });
    const renewed = await renew({ identity, privateKey: keys.privateKey, baseUrl, clientId: CLIENT, sessionId: a.session_id });
    assert.equal(renewed.session_id, a.session_id);
    assert.notEqual(renewed.token, a.token);
    const b = await signIn({ identity, privateKey: keys.privateKey, baseUrl, transport: 'http', clientId: CLIENT });
    const { sessions } = await listSessions(b.token, { baseUrl });
    assert.ok(sessions.some((s) => s.session_id === a.session_id || s.id === a.session_id), JSON.stringify(sessions));
    await revokeSession(b.token, a.session_id, { baseUrl });
    assert.equal((await whoami(renewed.token, { baseUrl }).catch((e) => e)).code, 'session_revoked');
    const out = await logout(b.token, 'global', { baseUrl });
    assert.ok(out.revoked >= 1, JSON.stringify(out));
    assert.equal((await whoami(b.token, { baseUrl }).catch((e) => e)).code, 'session_revoked');
  });

  test('the token store spends a refresh token once when refreshes race', async () => {
    const store = memoryStore();
    const t = await signIn({ identity, privateKey: keys.privateKey, baseUrl, clientId: CLIENT, offline: true });
    const one = new TokenStore({ store, clientId: CLIENT, baseUrl });
    const two = new TokenStore({ store, clientId: CLIENT, baseUrl });
    await one.set(t);
    await two.load();
    const [x, y] = await Promise.all([one.refresh(), two.refresh()]);
    assert.equal(x.token, y.token, 'both ended with the same token');
    assert.notEqual(x.token, t.token);
    assert.equal((await whoami(x.token, { baseUrl })).identity, identity, 'and the session is alive (no reuse detected)');
    assert.equal(await two.accessToken(), x.token);
    await logout(x.token, 'local', { baseUrl });
    assert.equal((await one.refresh().catch((e) => e)).code, 'session_revoked');
    assert.equal(one.session, null, 'a session that is over is forgotten');
    one.close();
    two.close();
  });

  test('links a second key, enrols TOTP, and raises sessions with either factor', async () => {
    const t = await signIn({ identity, privateKey: keys.privateKey, baseUrl, clientId: CLIENT });
    const other = await newKey();
    const otherId = await identityOf(other.publicKey);
    const url = await inviteUrl({ token: t.token, identity, privateKey: keys.privateKey, newIdentity: otherId, baseUrl, pageUrl: baseUrl });
    const code = linkCodeFromUrl(new URL(url).hash);
    assert.ok(code, url);
    await acceptLink({ code, identity: otherId, privateKey: other.privateKey, label: 'second', baseUrl });
    const view = await accountKeys(t.token, { baseUrl });
    assert.deepEqual(view.keys.map((k) => k.identity).sort(), [identity, otherId].sort());

    const raised = await stepUpWithKey({ token: t.token, identity: otherId, privateKey: other.privateKey, baseUrl });
    assert.equal(decodeJwt(raised.token).payload.acr, 'aal2');

    // Changing an account with two keys takes a raised session.
    const u = await signIn({ identity, privateKey: keys.privateKey, baseUrl, clientId: CLIENT });
    assert.equal((await enrolTotp(u.token, { baseUrl }).catch((e) => e)).code, 'mfa_required');
    const { secret } = await enrolTotp(raised.token, { baseUrl });
    const viaOtp = await verifyTotp(u.token, totp(secret), { baseUrl });
    assert.deepEqual(decodeJwt(viaOtp.token).payload.amr, ['swk', 'otp', 'mfa']);
  });

  test('an app backend signs Hub requests with its API key: challenge, token, broker, introspection', async () => {
    const app = kg.createKey('js-backend', ['--broker', '--origin', 'https://shop.example']);
    const hub = new HubClient({ url: baseUrl, keyId: app.keyId, secret: app.secret });
    const user = await newKey();
    const userId = await identityOf(user.publicKey);

    // The user's side signs; the backend only relays challenge and signature.
    const t = await hub.signInUser({ identity: userId, privateKey: user.privateKey, clientId: 'shop', offline: true });
    const claims = decodeJwt(t.token).payload;
    assert.equal(claims.aud, app.keyId);
    assert.equal(claims.client_id, 'shop');
    assert.ok(t.refresh_token);

    // A challenge for an audience the app names itself.
    const { challenge } = await hub.challenge(userId, { audience: 'https://shop.example' });
    assert.match(challenge, /^audience: https:\/\/shop\.example$/m);

    const active = await hub.introspect(t.token);
    assert.equal(active.active, true);
    assert.equal(active.sub, userId);

    const { token_id: tokenId } = await hub.brokerToken({ endpointId: 'device-7', role: 'reader' });
    const brokered = await exchangeBrokerToken(tokenId, { baseUrl });
    assert.equal(decodeJwt(brokered.token).payload.role, 'reader');

    const wrong = new HubClient({ url: baseUrl, keyId: app.keyId, secret: 'b' + 'a'.repeat(52) });
    const refused = await wrong.challenge(userId).catch((e) => e);
    assert.equal(refused.code, 'invalid_api_key');
    assert.equal(refused.status, 401);
  });

  test('the verifier checks tokens offline, bounds JWKS refetches, and follows revocations', async () => {
    const app = kg.createKey('js-verifier');
    const hub = new HubClient({ url: baseUrl, keyId: app.keyId, secret: app.secret });
    const user = await newKey();
    const userId = await identityOf(user.publicKey);
    const t = await hub.signInUser({ identity: userId, privateKey: user.privateKey });

    let now = Date.now();
    const verifier = new TokenVerifier({ hubUrl: baseUrl, audience: app.keyId, refetchIntervalMs: 5000, now: () => now });
    try {
      const claims = await verifier.verify(t.token);
      assert.equal(claims.sub, userId);
      assert.equal(verifier.jwksFetches, 1);

      // Tokens naming made-up kids: one refetch per interval, however many arrive.
      const [h, p, s] = t.token.split('.');
      const header = JSON.parse(Buffer.from(h, 'base64url'));
      const forged = (kid) => `${Buffer.from(JSON.stringify({ ...header, kid })).toString('base64url')}.${p}.${s}`;
      now += 6000;
      for (let i = 0; i < 5; i++) assert.equal((await verifier.verify(forged(`nope-${i}`)).catch((e) => e)).code, 'invalid_token');
      assert.equal(verifier.jwksFetches, 2);
      now += 6000;
      await verifier.verify(forged('again')).catch(() => {});
      assert.equal(verifier.jwksFetches, 3);

      assert.equal((await verifier.verify(`${h}.${p}.${s.slice(0, -4)}AAAA`).catch((e) => e)).code, 'invalid_token');
      const other = new TokenVerifier({ hubUrl: baseUrl, audience: 'someone-else' });
      assert.equal((await other.verify(t.token).catch((e) => e)).code, 'invalid_token');
      // A known kid is read again only once the copy is older than keysMaxAgeMs.
      assert.equal((await verifier.verify(t.token)).sub, userId);
      assert.equal(verifier.jwksFetches, 3);
      now += 300_000;
      assert.equal((await verifier.verify(t.token)).sub, userId);
      assert.equal(verifier.jwksFetches, 4);
      now += 10 * 24 * 3600 * 1000;
      assert.equal((await verifier.verify(t.token).catch((e) => e)).code, 'token_expired');
      now = Date.now();

      await verifier.followRevocations();
      await logout(t.token, 'local', { baseUrl });
      await eventually(10_000, () => verifier.verify(t.token).then(() => false, (e) => e.code === 'session_revoked'), 'revocation pushed');
      assert.equal((await hub.introspect(t.token)).active, false);
    } finally {
      verifier.close();
    }
  });
});

describe('DPoP: tokens bound to the user\'s key, against keygate serve', { timeout: 120_000 }, () => {
  let kg;
  let baseUrl;
  let keys;
  let identity;
  let jkt;

  /** A request made by hand (no package), answering { status, body, wwwAuthenticate, nonce }. */
  const raw = async (method, path, headers = {}) => {
    const res = await fetch(`${baseUrl}${path}`, { method, headers, signal: AbortSignal.timeout(15_000) });
    return {
      status: res.status, body: await res.json().catch(() => null),
      wwwAuthenticate: res.headers.get('www-authenticate') ?? '', nonce: res.headers.get('dpop-nonce'),
    };
  };
  const bound = (opts = {}) => signIn({ identity, keyPair: keys, baseUrl, dpop: true, clientId: CLIENT, offline: true, ...opts });

  before(async () => {
    kg = await startKeygate({ args: NO_RATE_LIMITS });
    baseUrl = kg.origin;
    keys = await newKey();
    identity = await identityOf(keys.publicKey);
    jkt = await jwkThumbprint(await publicJwk(keys.publicKey));
  });
  after(() => kg?.dispose());

  test('signs in over HTTP and WebSocket for a DPoP token naming the key\'s thumbprint', async () => {
    for (const transport of ['http', 'ws']) {
      const t = await bound({ transport });
      assert.equal(t.via, transport === 'ws' ? 'WebSocket' : 'HTTP');
      assert.equal(t.token_type, 'DPoP');
      assert.deepEqual(decodeJwt(t.token).payload.cnf, { jkt });
      assert.equal((await whoami(t.token, { baseUrl, dpop: keys })).identity, identity);
    }
    // Without `dpop`, a bearer token as before.
    const plain = await signIn({ identity, keyPair: keys, baseUrl, clientId: CLIENT });
    assert.equal(plain.token_type, 'Bearer');
    assert.equal(decodeJwt(plain.token).payload.cnf, undefined);
    assert.equal((await whoami(plain.token, { baseUrl, dpop: keys })).identity, identity, 'sent as Bearer, the key unused');
  });

  test('a bound token is refused as Bearer, without a proof, and with a proof by another key, URL or method, or replayed', async () => {
    const t = await bound({ transport: 'http' });
    const url = `${baseUrl}/v1/whoami`;
    const other = await newKey();
    const refusals = {
      bearer: { Authorization: `Bearer ${t.token}` },
      'no proof': { Authorization: `DPoP ${t.token}` },
      'another key': { Authorization: `DPoP ${t.token}`, DPoP: await dpopProof(other, { htm: 'GET', htu: url, token: t.token }) },
      'another URL': { Authorization: `DPoP ${t.token}`, DPoP: await dpopProof(keys, { htm: 'GET', htu: `${baseUrl}/v1/sessions`, token: t.token }) },
      'another method': { Authorization: `DPoP ${t.token}`, DPoP: await dpopProof(keys, { htm: 'POST', htu: url, token: t.token }) },
      'no ath': { Authorization: `DPoP ${t.token}`, DPoP: await dpopProof(keys, { htm: 'GET', htu: url }) },
      'an old iat': { Authorization: `DPoP ${t.token}`, DPoP: await dpopProof(keys, { htm: 'GET', htu: url, token: t.token, iat: Math.floor(Date.now() / 1000) - 600 }) },
    };
    for (const [what, headers] of Object.entries(refusals)) {
      const r = await raw('GET', '/v1/whoami', headers);
      assert.equal(r.status, 401, `${what}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body?.error, what === 'bearer' ? 'invalid_token' : 'invalid_dpop_proof', `${what}: ${JSON.stringify(r.body)}`);
      assert.match(r.wwwAuthenticate, /^DPoP /, `${what}: WWW-Authenticate ${r.wwwAuthenticate}`);
    }
    // The right proof once; the same proof again is a replay.
    const proof = await dpopProof(keys, { htm: 'GET', htu: `${url}?ignored=1`, token: t.token });
    const ok = await raw('GET', '/v1/whoami?ignored=1', { Authorization: `DPoP ${t.token}`, DPoP: proof });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.identity, identity);
    const again = await raw('GET', '/v1/whoami?ignored=1', { Authorization: `DPoP ${t.token}`, DPoP: proof });
    assert.equal(again.status, 401, JSON.stringify(again.body));
    assert.equal(again.body?.error, 'invalid_dpop_proof');
    // A bearer token under the DPoP scheme is refused too.
    const plain = await signIn({ identity, keyPair: keys, baseUrl, clientId: CLIENT });
    const mixed = await raw('GET', '/v1/whoami', { Authorization: `DPoP ${plain.token}`, DPoP: await dpopProof(keys, { htm: 'GET', htu: url, token: plain.token }) });
    assert.equal(mixed.status, 401);
    assert.equal(mixed.body?.error, 'invalid_token');
  });

  test('refreshing a bound session takes a proof by the same key, and the new token stays bound', async () => {
    const t = await bound();
    const other = await newKey();
    for (const [what, dpop] of [['no proof', undefined], ['another key', other]]) {
      const err = await refresh(t.refresh_token, { clientId: CLIENT, baseUrl, dpop }).catch((e) => e);
      assert.ok(err instanceof KeygateError, `${what}: ${err}`);
      assert.ok(err.status === 400 || err.status === 401, `${what}: ${err.status} ${err.code}`);
    }
    const fresh = await refresh(t.refresh_token, { clientId: CLIENT, baseUrl, dpop: keys });
    assert.equal(fresh.token_type, 'DPoP');
    assert.equal(fresh.session_id, t.session_id);
    assert.deepEqual(decodeJwt(fresh.token).payload.cnf, { jkt });
    assert.equal((await whoami(fresh.token, { baseUrl, dpop: keys })).identity, identity);

    // An unbound session refreshed with a proof by the identity's key gets a bound token.
    const plain = await signIn({ identity, keyPair: keys, baseUrl, clientId: CLIENT, offline: true });
    const upgraded = await refresh(plain.refresh_token, { clientId: CLIENT, baseUrl, dpop: keys });
    assert.equal(upgraded.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(upgraded.token).payload.cnf, { jkt });
  });

  test('sessions, accounts, TOTP, QR codes, the token store and logout, all with proofs', async () => {
    const own = await newKey(); // an account of its own: it gets a second factor here
    const ownId = await identityOf(own.publicKey);
    const ownJkt = await jwkThumbprint(await publicJwk(own.publicKey));
    const t = await signIn({ identity: ownId, keyPair: own, baseUrl, dpop: true, clientId: CLIENT, offline: true });
    const opts = { baseUrl, dpop: own };
    const { sessions } = await listSessions(t.token, opts);
    assert.ok(sessions.some((s) => s.session_id === t.session_id), JSON.stringify(sessions));
    assert.deepEqual((await accountKeys(t.token, opts)).keys.map((k) => k.identity), [ownId]);
    assert.match(await qrDataUrl(t.token, 'hello', opts) ?? '', /^data:image\/svg\+xml;base64,/);
    const { secret } = await enrolTotp(t.token, opts);
    const raised = await verifyTotp(t.token, totp(secret), opts);
    assert.equal(decodeJwt(raised.token).payload.acr, 'aal2');
    assert.deepEqual(decodeJwt(raised.token).payload.cnf, { jkt: ownJkt }, 'the raised token stays bound');

    // The token store refreshes a bound session with proofs, once across racing stores.
    const store = memoryStore();
    const one = new TokenStore({ store, clientId: CLIENT, baseUrl, dpop: own });
    const two = new TokenStore({ store, clientId: CLIENT, baseUrl, dpop: own });
    await one.set({ ...raised, refresh_token: raised.refresh_token ?? t.refresh_token });
    await two.load();
    const [x, y] = await Promise.all([one.refresh(), two.refresh()]);
    assert.equal(x.token, y.token);
    assert.deepEqual(decodeJwt(x.token).payload.cnf, { jkt: ownJkt });
    const res = await two.fetch('/v1/whoami');
    assert.equal(res.status, 200);
    assert.equal((await res.json()).identity, ownId);
    const keyless = new TokenStore({ store, clientId: CLIENT, baseUrl });
    await assert.rejects(keyless.refresh(), TypeError, 'a bound session cannot be refreshed without its key');

    const out = await logout(x.token, 'local', opts);
    assert.equal(out.revoked, 1);
    assert.equal((await whoami(x.token, opts).catch((e) => e)).code, 'session_revoked');
    for (const s of [one, two, keyless]) s.close();
  });

  test('authorizedFetch: DPoP for a bound token, Bearer for others', async () => {
    const t = await bound({ transport: 'ws' });
    const res = await authorizedFetch(t.token, `${baseUrl}/v1/whoami?x=1#y`, { dpop: keys });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).identity, identity);
    const plain = await signIn({ identity, keyPair: keys, baseUrl, clientId: CLIENT });
    assert.equal((await authorizedFetch(plain.token, `${baseUrl}/v1/whoami`)).status, 200);
  });

  test('an app backend asks the Hub for a bound token with dpop: true', async () => {
    const app = kg.createKey('js-dpop-backend');
    const hub = new HubClient({ url: baseUrl, keyId: app.keyId, secret: app.secret });
    const t = await hub.signInUser({ identity, privateKey: keys.privateKey, dpop: true });
    assert.equal(t.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(t.token).payload.cnf, { jkt });
    const plain = await hub.signInUser({ identity, privateKey: keys.privateKey });
    assert.equal(plain.token_type, 'Bearer');
    const active = await hub.introspect(t.token);
    assert.equal(active.active, true);
    assert.deepEqual(active.cnf, { jkt });
  });

  test('an app whose policy is dpop required refuses a sign-in without a proof', async () => {
    const app = kg.createKey('js-dpop-required', ['--dpop', 'required']);
    const hub = new HubClient({ url: baseUrl, keyId: app.keyId, secret: app.secret });
    const err = await hub.signInUser({ identity, privateKey: keys.privateKey }).catch((e) => e);
    assert.ok(err instanceof KeygateError, String(err));
    assert.equal(err.code, 'dpop_required');
    assert.equal(err.status, 400);
    assert.equal((await hub.signInUser({ identity, privateKey: keys.privateKey, dpop: true })).token_type, 'DPoP');
  });
});

describe('DPoP nonces: keygate serve --dpop-nonce', { timeout: 120_000 }, () => {
  let kg;
  let baseUrl;
  before(async () => {
    kg = await startKeygate({ args: [...NO_RATE_LIMITS, '--dpop-nonce'] });
    baseUrl = kg.origin;
  });
  after(() => kg?.dispose());

  test('a proof without the server\'s nonce is answered use_dpop_nonce with one; the package retries with it', async () => {
    const keys = await newKey();
    const identity = await identityOf(keys.publicKey);
    // HTTP first (the answers hand out nonces), then the socket with the latest one.
    const t = await signIn({ identity, keyPair: keys, baseUrl, transport: 'http', dpop: true, clientId: CLIENT, offline: true });
    assert.equal(t.token_type, 'DPoP');
    assert.equal((await whoami(t.token, { baseUrl, dpop: keys })).identity, identity);
    const w = await signIn({ identity, keyPair: keys, baseUrl, transport: 'ws', dpop: true, clientId: CLIENT });
    assert.equal(w.token_type, 'DPoP');
    const fresh = await refresh(t.refresh_token, { clientId: CLIENT, baseUrl, dpop: keys });
    assert.equal(fresh.token_type, 'DPoP');

    // By hand: no nonce → 401 use_dpop_nonce and a nonce; with it → 200.
    const url = `${baseUrl}/v1/whoami`;
    const ask = (proof) => fetch(url, { headers: { Authorization: `DPoP ${fresh.token}`, DPoP: proof } });
    const first = await ask(await dpopProof(keys, { htm: 'GET', htu: url, token: fresh.token }));
    assert.equal(first.status, 401);
    assert.equal((await first.json()).error, 'use_dpop_nonce');
    assert.match(first.headers.get('www-authenticate') ?? '', /^DPoP .*error="use_dpop_nonce"/);
    const nonce = first.headers.get('dpop-nonce');
    assert.ok(nonce, 'a DPoP-Nonce header');
    const second = await ask(await dpopProof(keys, { htm: 'GET', htu: url, token: fresh.token, nonce }));
    assert.equal(second.status, 200);
  });

  test('successful answers carry a fresh DPoP-Nonce', async () => {
    const keys = await newKey();
    const identity = await identityOf(keys.publicKey);
    const t = await signIn({ identity, keyPair: keys, baseUrl, transport: 'http', dpop: true, clientId: CLIENT });
    const url = `${baseUrl}/v1/whoami`;
    const first = await fetch(url, { headers: { Authorization: `DPoP ${t.token}`, DPoP: await dpopProof(keys, { htm: 'GET', htu: url, token: t.token }) } });
    assert.equal(first.status, 401);
    const nonce = first.headers.get('dpop-nonce');
    const ok = await fetch(url, { headers: { Authorization: `DPoP ${t.token}`, DPoP: await dpopProof(keys, { htm: 'GET', htu: url, token: t.token, nonce }) } });
    assert.equal(ok.status, 200);
    assert.ok(ok.headers.get('dpop-nonce'), 'GET /v1/whoami answered 200 without a DPoP-Nonce header');
  });
});
