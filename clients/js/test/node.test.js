// The package against a real `keygate serve`, from Node: identity forms, the Provider
// sign-in (WebSocket and HTTP) with its checks, refresh, renewal by signature,
// sessions and logout, accounts and MFA, the token store's one-refresh rule, and the
// backend side: API-key HMAC requests to the Hub, brokered tokens, introspection and
// the offline verifier with its JWKS refetch limit and revocation feed.
//   KEYGATE_BIN=… node --experimental-websocket --test

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startKeygate, eventually, totp, NO_RATE_LIMITS } from './support.js';
import {
  identityOf, identityFromRawKey, rawKeyFromIdentity, peerIdOf, didKeyOf, signIn, renew, refresh, whoami,
  listSessions, revokeSession, logout, exchangeBrokerToken, decodeJwt, ChallengeRefused, KeygateError,
  accountKeys, enrolTotp, verifyTotp, inviteUrl, linkCodeFromUrl, acceptLink, stepUpWithKey, TokenStore,
  memoryStore, apiKeyHeaders, apiSecretBytes, HubClient, TokenVerifier, bearerToken,
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
