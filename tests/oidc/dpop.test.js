// keygate's DPoP (RFC 9449) proved with proof makers keygate did not write: panva's
// `dpop` for a user's own Ed25519 key at the Provider's key sign-in (`POST
// /api/token`), refresh and `/v1/whoami`, and oauth4webapi's and openid-client's
// DPoP handles for a public OpenID client (its own ES256 or Ed25519 key) through the
// browser sign-in. Refusals are checked on status, the JSON `error` and the DPoP
// challenge in `WWW-Authenticate` (RFC 9449 §7.1). A few proofs are signed by hand
// here, for what `dpop` will not make (a chosen `iat`, a private key in the header).
//   cd tests/oidc && npm ci --no-audit --no-fund && node --test dpop.test.js

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import * as dpop from 'dpop';
import * as oauth from 'oauth4webapi';
import * as client from 'openid-client';
import { identityOf, inspectChallenge, signText } from '../../clients/js/src/index.js';
import { HubClient, apiKeyHeaders } from '../../clients/js/src/node.js';
import {
  withWorld, freshUser, authorize, payloadOf, request, userinfo, within, SCOPE, STEP, KEYGATE_BIN,
} from './support.js';

const CLIENT = 'dpop-test';
/** Plain HTTP to the loopback server; every other check at the libraries' defaults. */
const options = { [oauth.allowInsecureRequests]: true, signal: () => AbortSignal.timeout(STEP) };
const now = () => Math.floor(Date.now() / 1000);
const b64u = (bytes) => Buffer.from(bytes).toString('base64url');
const sha256 = (text) => createHash('sha256').update(text, 'utf8').digest();

/** Whether this keygate has the opt-in server nonces of RFC 9449 §8 (`serve --dpop-nonce`). */
const HAS_NONCE_FLAG = (() => {
  try {
    return execFileSync(KEYGATE_BIN, ['serve', '--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).includes('--dpop-nonce');
  } catch {
    return false;
  }
})();

/** A user: an Ed25519 key pair (both halves extractable, for the hand-made proofs) and its keygate identity. */
async function newUser() {
  const keys = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  return { keys, identity: await identityOf(keys.publicKey), jkt: await dpop.calculateThumbprint(keys.publicKey) };
}

/**
 * The challenges of a WWW-Authenticate value (RFC 9110 §11.6.1, auth-params only):
 * [{ scheme (lower case), params }].
 */
function challenges(value) {
  const out = [];
  const re = /\s*,?\s*(?:([A-Za-z][\w.-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)|([A-Za-z][\w.-]*))/y;
  let current = null;
  while (re.lastIndex < value.length) {
    const m = re.exec(value);
    if (!m) break;
    if (m[3]) {
      current = { scheme: m[3].toLowerCase(), params: {} };
      out.push(current);
    } else if (current) {
      current.params[m[1].toLowerCase()] = m[2].startsWith('"') ? m[2].slice(1, -1).replace(/\\(.)/g, '$1') : m[2];
    }
  }
  return out;
}

/**
 * A refusal at a protected resource (RFC 9449 §7.1): `status`, the JSON `error`, and a
 * `DPoP` challenge in WWW-Authenticate with that same error (and, for a bad proof,
 * the algorithms the server takes in `algs`).
 */
function assertRefused(res, status, code, what) {
  assert.equal(res.status, status, `${what}: status (${JSON.stringify(res.body)})`);
  assert.equal(res.body?.error, code, `${what}: error (${JSON.stringify(res.body)})`);
  const header = res.headers.get('www-authenticate') ?? '';
  const challenge = challenges(header).find((c) => c.scheme === 'dpop');
  assert.ok(challenge, `${what}: no DPoP challenge in WWW-Authenticate: ${JSON.stringify(header)}`);
  assert.equal(challenge.params.error, code, `${what}: the DPoP challenge's error (${header})`);
  if (code === 'invalid_dpop_proof') {
    const algs = (challenge.params.algs ?? '').split(' ');
    for (const alg of ['EdDSA', 'ES256']) assert.ok(algs.includes(alg), `${what}: ${alg} in algs (${header})`);
  }
}

/** A refusal at a token endpoint (RFC 9449 §5, RFC 6749 §5.2): 400 and the JSON `error`. */
function assertTokenRefused(res, code, what) {
  assert.equal(res.status, 400, `${what}: status (${JSON.stringify(res.body)})`);
  assert.equal(res.body?.error, code, `${what}: error (${JSON.stringify(res.body)})`);
}

/**
 * A DPoP proof signed here rather than by `dpop` (which always sets `iat` to now, `typ`
 * to dpop+jwt, `alg` to the key's and the header's `jwk` to the public half): `alg`
 * EdDSA (RFC 8037), the claims of RFC 9449 §4.2 with the given `iat`, `ath` of `token`
 * when given, `typ`, `alg` and `jwk` as given.
 */
async function handProof(keys, { htm, htu, token, iat = now(), jwk, alg = 'EdDSA', typ = 'dpop+jwt' }) {
  const { kty, crv, x } = await crypto.subtle.exportKey('jwk', keys.publicKey);
  const header = { typ, alg, jwk: jwk ?? { kty, crv, x } };
  const claims = { jti: crypto.randomUUID(), htm, htu, iat, ...(token !== undefined && { ath: b64u(sha256(token)) }) };
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}`;
  const sig = await crypto.subtle.sign('Ed25519', keys.privateKey, new TextEncoder().encode(input));
  return `${input}.${b64u(new Uint8Array(sig))}`;
}

/**
 * The key sign-in at the Provider over HTTP: `GET /api/token?id=`, the challenge
 * checked and signed with the user's key, then `POST /api/token` with `headers` (the
 * DPoP proof) and the token request `fields`. Resolves with the POST's answer.
 */
async function signIn(origin, user, { headers = {}, fields = {} } = {}) {
  const offer = await request(`${origin}/api/token?id=${encodeURIComponent(user.identity)}`);
  assert.equal(offer.status, 200, `GET /api/token: ${JSON.stringify(offer.body)}`);
  const checked = inspectChallenge(offer.body.challenge, { origin, identity: user.identity });
  assert.ok(checked.checks.every((c) => c.ok), `the challenge: ${JSON.stringify(checked.checks)}`);
  const sig = await signText(user.keys.privateKey, offer.body.challenge);
  return request(`${origin}/api/token`, {
    method: 'POST', headers, json: { id: user.identity, challenge: offer.body.challenge, sig, ...fields },
  });
}

/**
 * GET `url` with the header `dpop` sent once per proof, as separate header lines (fetch
 * would join them into one); resolves like request().
 */
function getWithProofs(url, authorization, proofs) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { authorization, dpop: proofs }, timeout: STEP }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { text += chunk; });
      res.on('end', () => {
        let body = text;
        try { body = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: new Headers(Object.entries(res.headers).map(([k, v]) => [k, String(v)])), body });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${STEP} ms`)));
    req.on('error', reject);
  });
}

/** A DPoP-bound key sign-in with offline access, asserted; resolves with the token body. */
async function boundSignIn(origin, user) {
  const res = await signIn(origin, user, {
    headers: { dpop: await dpop.generateProof(user.keys, `${origin}/api/token`, 'POST') },
    fields: { client_id: CLIENT, access_type: 'offline' },
  });
  assert.equal(res.status, 200, `POST /api/token with a DPoP proof: ${JSON.stringify(res.body)}`);
  assert.equal(res.body.token_type, 'DPoP', 'RFC 9449 §5: token_type DPoP');
  assert.equal(res.headers.get('cache-control'), 'no-store');
  const claims = payloadOf(res.body.token);
  assert.equal(claims.sub, user.identity);
  assert.deepEqual(claims.cnf, { jkt: user.jkt }, 'RFC 9449 §6.1: cnf.jkt is the thumbprint of the identity\'s key');
  assert.equal(typeof res.body.refresh_token, 'string', 'offline access gives a refresh token');
  return res.body;
}

test('dpop: a key sign-in with a proof by the identity\'s key gets a DPoP-bound token that /v1/whoami takes only with a fresh proof by that key', { timeout: 120_000 }, async () => {
  await withWorld({ browser: false }, async ({ op }) => {
    const user = await newUser();
    const other = await newUser();
    const body = await boundSignIn(op.origin, user);
    const token = body.token;
    const url = `${op.origin}/v1/whoami`;
    const whoami = (headers) => request(url, { headers });
    const bound = (proof) => whoami({ authorization: `DPoP ${token}`, ...(proof !== undefined && { dpop: proof }) });

    // Accepted: dpop's proof (alg Ed25519, RFC 9864) and one signed here (alg EdDSA),
    // which also shows the hand-made proofs below are refused for what they change; an
    // htu that differs only by RFC 3986 §6.2.2 normalisation (RFC 9449 §4.3 item 9).
    const loud = url.replace(/^http:\/\/127\.0\.0\.1/, 'HTTP://127.0.0.1');
    for (const [what, proof] of [
      ['dpop\'s proof', await dpop.generateProof(user.keys, url, 'GET', undefined, token)],
      ['a proof signed here', await handProof(user.keys, { htm: 'GET', htu: url, token })],
      ['an htu with the scheme in capitals', await dpop.generateProof(user.keys, loud, 'GET', undefined, token)],
    ]) {
      const ok = await bound(proof);
      assert.equal(ok.status, 200, `${what}: ${JSON.stringify(ok.body)}`);
      assert.equal(ok.body.identity, user.identity);
      assert.equal(ok.body.session_id, body.session_id);
    }
    // The query is not part of htu (RFC 9449 §4.2, §4.3 item 9).
    const withQuery = await request(`${url}?probe=1`, { headers: { authorization: `DPoP ${token}`, dpop: await dpop.generateProof(user.keys, url, 'GET', undefined, token) } });
    assert.equal(withQuery.status, 200, `a request with a query, the proof's htu without: ${JSON.stringify(withQuery.body)}`);

    // Refused, each with 401 invalid_dpop_proof and its DPoP challenge.
    const refusals = [
      ['no DPoP header', undefined],
      ['a proof by another key', await dpop.generateProof(other.keys, url, 'GET', undefined, token)],
      ['htm POST for a GET', await dpop.generateProof(user.keys, url, 'POST', undefined, token)],
      ['htu of another path', await dpop.generateProof(user.keys, `${op.origin}/v1/sessions`, 'GET', undefined, token)],
      ['htu of another port', await dpop.generateProof(user.keys, `http://127.0.0.1:1/v1/whoami`, 'GET', undefined, token)],
      ['ath of another token', await dpop.generateProof(user.keys, url, 'GET', undefined, `${token}x`)],
      ['no ath', await dpop.generateProof(user.keys, url, 'GET')],
      ['iat 10 minutes old', await handProof(user.keys, { htm: 'GET', htu: url, token, iat: now() - 600 })],
      ['iat 10 minutes ahead', await handProof(user.keys, { htm: 'GET', htu: url, token, iat: now() + 600 })],
      ['a jwk with the private key (d)', await handProof(user.keys, {
        htm: 'GET', htu: url, token, jwk: await crypto.subtle.exportKey('jwk', user.keys.privateKey).then(({ kty, crv, x, d }) => ({ kty, crv, x, d })),
      })],
      ['typ JWT', await handProof(user.keys, { htm: 'GET', htu: url, token, typ: 'JWT' })],
      ['alg ES256 on an Ed25519 key', await handProof(user.keys, { htm: 'GET', htu: url, token, alg: 'ES256' })],
      ['a proof over 4096 bytes', await dpop.generateProof(user.keys, url, 'GET', undefined, token, { pad: 'x'.repeat(4096) })],
      ['a proof that is not a JWS', 'not.a.jws'],
    ];
    for (const [what, proof] of refusals) assertRefused(await bound(proof), 401, 'invalid_dpop_proof', what);

    // Replay (RFC 9449 §11.1): the same proof string twice; the second is refused.
    const once = await dpop.generateProof(user.keys, url, 'GET', undefined, token);
    assert.equal((await bound(once)).status, 200, 'the proof\'s first use');
    assertRefused(await bound(once), 401, 'invalid_dpop_proof', 'the same proof again (same jti)');

    // The bound token as a bearer token (RFC 9449 §7.2), with and without a proof.
    assertRefused(await whoami({ authorization: `Bearer ${token}` }), 401, 'invalid_token', 'the bound token as Bearer');
    assertRefused(await whoami({ authorization: `Bearer ${token}`, dpop: await dpop.generateProof(user.keys, url, 'GET', undefined, token) }),
      401, 'invalid_token', 'the bound token as Bearer with a good proof');

    // Two DPoP header lines, each a good proof (RFC 9449 §4.3 item 1: not more than one).
    assertRefused(await getWithProofs(url, `DPoP ${token}`, [
      await dpop.generateProof(user.keys, url, 'GET', undefined, token), await dpop.generateProof(user.keys, url, 'GET', undefined, token),
    ]), 401, 'invalid_dpop_proof', 'two DPoP headers');

    // None of that ended the session: a fresh proof still works, at the other user
    // endpoints too (GET /v1/sessions, then POST /v1/logout, which ends it).
    const still = await bound(await dpop.generateProof(user.keys, url, 'GET', undefined, token));
    assert.equal(still.status, 200, `after the refusals: ${JSON.stringify(still.body)}`);
    const sessionsUrl = `${op.origin}/v1/sessions`;
    const sessions = await request(sessionsUrl, { headers: { authorization: `DPoP ${token}`, dpop: await dpop.generateProof(user.keys, sessionsUrl, 'GET', undefined, token) } });
    assert.equal(sessions.status, 200, JSON.stringify(sessions.body));
    assert.ok(sessions.body.sessions.some((s) => s.session_id === body.session_id && s.current), JSON.stringify(sessions.body));
    const logoutUrl = `${op.origin}/v1/logout`;
    assertRefused(await request(logoutUrl, { method: 'POST', json: { scope: 'local' }, headers: { authorization: `DPoP ${token}`, dpop: await dpop.generateProof(user.keys, logoutUrl, 'GET', undefined, token) } }),
      401, 'invalid_dpop_proof', 'logout with a proof for GET');
    const loggedOut = await request(logoutUrl, { method: 'POST', json: { scope: 'local' }, headers: { authorization: `DPoP ${token}`, dpop: await dpop.generateProof(user.keys, logoutUrl, 'POST', undefined, token) } });
    assert.equal(loggedOut.status, 200, JSON.stringify(loggedOut.body));
    assert.equal(loggedOut.body.revoked, 1);
    const after = await bound(await dpop.generateProof(user.keys, url, 'GET', undefined, token));
    assert.equal(after.status, 401, JSON.stringify(after.body));
    assert.equal(after.body.error, 'session_revoked');
  });
});

test('dpop: the key sign-in refuses a proof that is not the identity\'s key\'s or not for /api/token; without a proof the token is a bearer token the DPoP scheme refuses', { timeout: 120_000 }, async () => {
  await withWorld({ browser: false }, async ({ op }) => {
    const user = await newUser();
    const other = await newUser();
    const htu = `${op.origin}/api/token`;

    // A valid proof, but by a key other than the one that signs the challenge.
    assertTokenRefused(await signIn(op.origin, user, { headers: { dpop: await dpop.generateProof(other.keys, htu, 'POST') } }),
      'invalid_dpop_proof', 'sign-in with a proof by another key');
    // The identity's key, but for another URL or method.
    assertTokenRefused(await signIn(op.origin, user, { headers: { dpop: await dpop.generateProof(user.keys, `${op.origin}/v1/token`, 'POST') } }),
      'invalid_dpop_proof', 'sign-in with a proof for another htu');
    assertTokenRefused(await signIn(op.origin, user, { headers: { dpop: await dpop.generateProof(user.keys, htu, 'GET') } }),
      'invalid_dpop_proof', 'sign-in with a proof for GET');
    assertTokenRefused(await signIn(op.origin, user, { headers: { dpop: await handProof(user.keys, { htm: 'POST', htu, iat: now() - 600 }) } }),
      'invalid_dpop_proof', 'sign-in with a stale proof');
    // The same proof spent twice on two sign-ins.
    const proof = await dpop.generateProof(user.keys, htu, 'POST');
    assert.equal((await signIn(op.origin, user, { headers: { dpop: proof } })).status, 200, 'the proof\'s first use');
    assertTokenRefused(await signIn(op.origin, user, { headers: { dpop: proof } }), 'invalid_dpop_proof', 'sign-in with a replayed proof');

    // No proof at an app whose policy is optional (the default): a bearer token.
    const plain = await signIn(op.origin, user);
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    assert.equal(plain.body.token_type, 'Bearer');
    assert.equal(payloadOf(plain.body.token).cnf, undefined, 'no cnf without a proof');
    const url = `${op.origin}/v1/whoami`;
    assertRefused(await request(url, { headers: { authorization: `DPoP ${plain.body.token}`, dpop: await dpop.generateProof(user.keys, url, 'GET', undefined, plain.body.token) } }),
      401, 'invalid_token', 'an unbound token under the DPoP scheme');
    assert.equal((await request(url, { headers: { authorization: `Bearer ${plain.body.token}` } })).status, 200, 'the bearer token as Bearer');
  });
});

test('dpop: refreshing a bound session needs a proof by the same key and stays bound; an unbound session refreshed with the identity\'s proof becomes bound', { timeout: 120_000 }, async () => {
  await withWorld({ browser: false }, async ({ op }) => {
    const user = await newUser();
    const other = await newUser();
    const htu = `${op.origin}/v1/token/refresh`;
    const refresh = (refreshToken, headers = {}) => request(htu, { method: 'POST', headers, json: { refresh_token: refreshToken, client_id: CLIENT } });

    const first = await boundSignIn(op.origin, user);
    assertTokenRefused(await refresh(first.refresh_token), 'invalid_dpop_proof', 'refresh of a bound session without a proof');
    assertTokenRefused(await refresh(first.refresh_token, { dpop: await dpop.generateProof(other.keys, htu, 'POST') }),
      'invalid_dpop_proof', 'refresh of a bound session with a proof by another key');
    assertTokenRefused(await refresh(first.refresh_token, { dpop: await dpop.generateProof(user.keys, `${op.origin}/api/token`, 'POST') }),
      'invalid_dpop_proof', 'refresh with a proof for another htu');

    // The refusals spent nothing: the same refresh token with a good proof works.
    const renewed = await refresh(first.refresh_token, { dpop: await dpop.generateProof(user.keys, htu, 'POST') });
    assert.equal(renewed.status, 200, `refresh with the key's proof: ${JSON.stringify(renewed.body)}`);
    assert.equal(renewed.body.token_type, 'DPoP');
    assert.deepEqual(payloadOf(renewed.body.token).cnf, { jkt: user.jkt }, 'the refreshed token stays bound');
    assert.equal(renewed.body.session_id, first.session_id);
    assert.notEqual(renewed.body.refresh_token, first.refresh_token);
    const url = `${op.origin}/v1/whoami`;
    const ok = await request(url, { headers: { authorization: `DPoP ${renewed.body.token}`, dpop: await dpop.generateProof(user.keys, url, 'GET', undefined, renewed.body.token) } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assertRefused(await request(url, { headers: { authorization: `Bearer ${renewed.body.token}` } }), 401, 'invalid_token', 'the refreshed token as Bearer');

    // An unbound session: refreshed with a proof by the identity's key, the access token is bound.
    const plain = await signIn(op.origin, user, { fields: { client_id: CLIENT, access_type: 'offline' } });
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    assert.equal(plain.body.token_type, 'Bearer');
    const upgraded = await refresh(plain.body.refresh_token, { dpop: await dpop.generateProof(user.keys, htu, 'POST') });
    assert.equal(upgraded.status, 200, JSON.stringify(upgraded.body));
    assert.equal(upgraded.body.token_type, 'DPoP');
    assert.deepEqual(payloadOf(upgraded.body.token).cnf, { jkt: user.jkt });
  });
});

test('dpop: an app created with --dpop required refuses a bearer sign-in (400 dpop_required) and binds one the backend asks to bind', { timeout: 120_000 }, async () => {
  await withWorld({ browser: false }, async ({ op }) => {
    const app = op.createKey('dpop-required-app', ['--dpop', 'required']);
    const hub = new HubClient({ url: op.origin, ...app });
    const user = await newUser();

    // The app backend's sign-in at the Hub without "dpop": true.
    const refused = await hub.signInUser({ identity: user.identity, privateKey: user.keys.privateKey }).then(
      (body) => assert.fail(`a bearer sign-in at a dpop-required app was accepted: ${JSON.stringify(body)}`), (e) => e);
    assert.equal(refused.status, 400, refused.message);
    assert.equal(refused.code, 'dpop_required', refused.message);

    // With "dpop": true (the backend checked the user's proof): bound to the identity's key.
    const { challenge } = await hub.challenge(user.identity);
    const sig = await signText(user.keys.privateKey, challenge);
    const res = await request(`${op.origin}/v1/token`, {
      method: 'POST', headers: apiKeyHeaders(app), json: { pubkey: user.identity, challenge, sig, dpop: true },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.token_type, 'DPoP');
    assert.deepEqual(payloadOf(res.body.token).cnf, { jkt: user.jkt });
    const url = `${op.origin}/v1/whoami`;
    const ok = await request(url, { headers: { authorization: `DPoP ${res.body.token}`, dpop: await dpop.generateProof(user.keys, url, 'GET', undefined, res.body.token) } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.aud, app.keyId);
  });
});

test('dpop: introspection (RFC 7662) names a bound token\'s cnf.jkt and token_type DPoP (RFC 9449 §6.2)', { timeout: 120_000 }, async () => {
  await withWorld({ browser: false }, async ({ op }) => {
    const user = await newUser();
    const body = await boundSignIn(op.origin, user);
    const hub = new HubClient({ url: op.origin, ...op.createKey('resource-server', ['--introspect-any']) });
    const seen = await hub.introspect(body.token);
    assert.equal(seen.active, true, JSON.stringify(seen));
    assert.deepEqual(seen.cnf, { jkt: user.jkt });
    // §6.2: "If the token_type member is included in the introspection response, it MUST contain the value DPoP."
    if ('token_type' in seen) assert.equal(seen.token_type, 'DPoP');
  });
});

/** Rejects unless `promise` rejects; resolves with the error. */
const rejection = (promise, what) => promise.then((v) => assert.fail(`${what}: accepted (${JSON.stringify(v)?.slice(0, 200)})`), (e) => e);

/**
 * A public OIDC client of `op` for oauth4webapi, discovered (with DPoP algorithms in the
 * metadata), and a fresh browser user: { as, cl, auth, user, codeFlow({ nonce, dpopJkt,
 * handle }) }, where codeFlow runs one authorization code flow in the browser (with
 * `dpop_jkt` when given, RFC 9449 §10) and resolves with the token endpoint's Response
 * to the code sent with the DPoP handle `handle`'s proof.
 */
async function oauthClient({ op, rp, browser }) {
  const registered = await op.createClient({ name: 'oauth4webapi-dpop', isPublic: true, redirectUris: [rp.cb], alg: 'ES256' });
  const issuer = new URL(op.issuer);
  const as = await within(STEP, oauth.discoveryRequest(issuer, { ...options, algorithm: 'oidc' })
    .then((res) => oauth.processDiscoveryResponse(issuer, res)), 'discovery');
  for (const alg of ['EdDSA', 'ES256']) {
    assert.ok(as.dpop_signing_alg_values_supported?.includes(alg), `${alg} in dpop_signing_alg_values_supported`);
  }
  const cl = { client_id: registered.client_id, token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'ES256' };
  const auth = oauth.None();
  const user = await freshUser(browser);
  const codeFlow = async ({ nonce, dpopJkt, handle }) => {
    const codeVerifier = oauth.generateRandomCodeVerifier();
    const state = oauth.generateRandomState();
    const url = new URL(as.authorization_endpoint);
    url.search = new URLSearchParams({
      client_id: cl.client_id, redirect_uri: rp.cb, response_type: 'code', scope: SCOPE, state,
      code_challenge: await oauth.calculatePKCECodeChallenge(codeVerifier), code_challenge_method: 'S256',
      ...(nonce && { nonce }), ...(dpopJkt && { dpop_jkt: dpopJkt }),
    });
    const back = await authorize(user, rp, url);
    const params = oauth.validateAuthResponse(as, cl, back.url, state);
    return within(STEP, oauth.authorizationCodeGrantRequest(as, cl, auth, params, rp.cb, codeVerifier, { ...options, DPoP: handle }), 'token request');
  };
  return { as, cl, auth, user, codeFlow };
}

for (const keyAlg of ['ES256', 'Ed25519']) test(`dpop: oauth4webapi, a public client with its own ${keyAlg} DPoP key: bound code grant, userinfo, refresh by the same key only`, { timeout: 300_000 }, async () => {
  await withWorld({}, async ({ op, rp, browser }) => {
    const { as, cl, auth, user, codeFlow } = await oauthClient({ op, rp, browser });
    const DPoP = oauth.DPoP(cl, await oauth.generateKeyPair(keyAlg));
    const jkt = await DPoP.calculateThumbprint();
    const otherDPoP = oauth.DPoP(cl, await oauth.generateKeyPair(keyAlg));
    const nonce = oauth.generateRandomNonce();
    const tokens = await oauth.processAuthorizationCodeResponse(as, cl, await codeFlow({ nonce, handle: DPoP }),
      { expectedNonce: nonce, requireIdToken: true });
    assert.equal(tokens.token_type, 'dpop', 'RFC 9449 §5: token_type DPoP');
    assert.deepEqual(payloadOf(tokens.access_token).cnf, { jkt }, 'cnf.jkt is the thumbprint of the client\'s DPoP key');
    const sub = oauth.getValidatedIdTokenClaims(tokens).sub;

    // userinfo: with the handle's proof; refused as Bearer and with another key's proof.
    const info = await oauth.processUserInfoResponse(as, cl, sub,
      await within(STEP, oauth.userInfoRequest(as, cl, tokens.access_token, { ...options, DPoP }), 'userinfo'));
    assert.equal(info.sub, sub);
    assertRefused(await userinfo(op.metadata, tokens.access_token), 401, 'invalid_token', 'userinfo with the bound token as Bearer');
    const wrongKey = await rejection(oauth.userInfoRequest(as, cl, tokens.access_token, { ...options, DPoP: otherDPoP })
      .then((res) => oauth.processUserInfoResponse(as, cl, sub, res)), 'userinfo with another key\'s proof');
    assert.ok(wrongKey instanceof oauth.WWWAuthenticateChallengeError, `${wrongKey}`);
    assert.equal(wrongKey.response.status, 401);
    assert.ok(wrongKey.cause.some((c) => c.scheme === 'dpop' && c.parameters.error === 'invalid_dpop_proof'), JSON.stringify(wrongKey.cause));
    // A keygate user endpoint takes the same token with a proof for its own URL.
    const whoami = await within(STEP, oauth.protectedResourceRequest(tokens.access_token, 'GET', new URL('/v1/whoami', op.issuer),
      undefined, undefined, { ...options, DPoP }), 'GET /v1/whoami');
    assert.equal(whoami.status, 200);
    assert.equal((await whoami.json()).identity, info.key);

    // Refresh: refused without a proof and with another key's (RFC 9449 §5: the refresh
    // token of a public client is bound to its key), then the same key's works.
    const refresh = (handle) => within(STEP, oauth.refreshTokenGrantRequest(as, cl, auth, tokens.refresh_token, { ...options, ...(handle && { DPoP: handle }) })
      .then((res) => oauth.processRefreshTokenResponse(as, cl, res)), 'refresh');
    for (const [what, handle] of [['no proof', undefined], ['another key\'s proof', otherDPoP]]) {
      const err = await rejection(refresh(handle), `refresh with ${what}`);
      assert.ok(err instanceof oauth.ResponseBodyError, `refresh with ${what}: ${err}`);
      assert.equal(err.status, 400, `refresh with ${what}: ${err.error} ${err.error_description ?? ''}`);
      // RFC 9449 names no code for a refresh token bound to another key; either fits.
      assert.ok(['invalid_dpop_proof', 'invalid_grant'].includes(err.error), `refresh with ${what}: ${err.error}`);
    }
    const refreshed = await refresh(DPoP);
    assert.equal(refreshed.token_type, 'dpop');
    assert.deepEqual(payloadOf(refreshed.access_token).cnf, { jkt }, 'the refreshed access token stays bound');
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
    const again = await oauth.processUserInfoResponse(as, cl, sub,
      await within(STEP, oauth.userInfoRequest(as, cl, refreshed.access_token, { ...options, DPoP }), 'userinfo after refresh'));
    assert.equal(again.sub, sub);
    assert.deepEqual(user.problems, []);
  });
});

test('dpop: oauth4webapi, dpop_jkt binds the code to the client\'s key (RFC 9449 §10): that key\'s proof redeems it, another key\'s is refused', { timeout: 300_000 }, async () => {
  await withWorld({}, async ({ op, rp, browser }) => {
    const { as, cl, user, codeFlow } = await oauthClient({ op, rp, browser });
    const DPoP = oauth.DPoP(cl, await oauth.generateKeyPair('Ed25519'));
    const jkt = await DPoP.calculateThumbprint();
    const tokens = await oauth.processAuthorizationCodeResponse(as, cl, await codeFlow({ handle: DPoP, dpopJkt: jkt }));
    assert.equal(tokens.token_type, 'dpop');
    assert.deepEqual(payloadOf(tokens.access_token).cnf, { jkt });
    // "If they do not match, it MUST reject the request."
    const otherDPoP = oauth.DPoP(cl, await oauth.generateKeyPair('Ed25519'));
    const mismatch = await rejection(codeFlow({ handle: DPoP, dpopJkt: await otherDPoP.calculateThumbprint() })
      .then((res) => oauth.processAuthorizationCodeResponse(as, cl, res)), 'a code bound by dpop_jkt to another key');
    assert.ok(mismatch instanceof oauth.ResponseBodyError, `${mismatch}`);
    assert.equal(mismatch.status, 400, `${mismatch.error} ${mismatch.error_description ?? ''}`);
    // RFC 9449 §10 names no code for it; either fits.
    assert.ok(['invalid_dpop_proof', 'invalid_grant'].includes(mismatch.error), mismatch.error);
    assert.deepEqual(user.problems, []);
  });
});

test('dpop: with --dpop-nonce, server nonces (RFC 9449 §8, §9): openid-client retries by itself, oauth4webapi on isDPoPNonceError, and a key sign-in with the nonce', {
  timeout: 300_000, skip: !HAS_NONCE_FLAG && 'this keygate serve has no --dpop-nonce',
}, async () => {
  await withWorld({ args: ['--dpop-nonce'] }, async ({ op, rp, browser }) => {
    const registered = await op.createClient({ name: 'dpop-nonce', isPublic: true, redirectUris: [rp.cb], alg: 'ES256' });
    const user = await freshUser(browser);

    // openid-client: every exchange recorded, to show the nonce round trip happened.
    const traffic = [];
    const config = await within(STEP, client.discovery(new URL(op.issuer), registered.client_id,
      { token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'ES256' }, client.None(),
      { execute: [client.allowInsecureRequests] }), 'discovery');
    config[client.customFetch] = async (url, init) => {
      const res = await fetch(url, init);
      const proof = new Headers(init.headers).get('dpop');
      traffic.push({ url: new URL(url), status: res.status, proof: proof && payloadOf(proof), nonce: res.headers.get('dpop-nonce'), error: res.status >= 400 ? await res.clone().json().catch(() => null) : null });
      return res;
    };
    const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: rp.cb, scope: SCOPE, state,
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier), code_challenge_method: 'S256',
    });
    const back = await authorize(user, rp, url);
    const tokens = await within(STEP, client.authorizationCodeGrant(config, back.url, { pkceCodeVerifier: codeVerifier, expectedState: state },
      undefined, { DPoP }), 'authorizationCodeGrant');
    assert.equal(tokens.token_type, 'dpop');
    const tokenCalls = traffic.filter((t) => t.url.pathname === new URL(config.serverMetadata().token_endpoint).pathname);
    assert.equal(tokenCalls.length, 2, `one refusal then one success at the token endpoint: ${JSON.stringify(tokenCalls)}`);
    assert.equal(tokenCalls[0].status, 400);
    assert.equal(tokenCalls[0].error?.error, 'use_dpop_nonce');
    assert.ok(tokenCalls[0].nonce, 'the refusal carries DPoP-Nonce');
    assert.equal(tokenCalls[0].proof.nonce, undefined, 'the first proof had no nonce');
    assert.equal(tokenCalls[1].proof.nonce, tokenCalls[0].nonce, 'the retry\'s proof carries the server\'s nonce');
    assert.equal(tokenCalls[1].status, 200);
    const info = await within(STEP, client.fetchUserInfo(config, tokens.access_token, tokens.claims().sub, { DPoP }), 'fetchUserInfo');
    assert.equal(info.sub, tokens.claims().sub);
    const refreshed = await within(STEP, client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP }), 'refreshTokenGrant');
    assert.equal(refreshed.token_type, 'dpop');

    // A made-up nonce at userinfo: 401 use_dpop_nonce with a fresh DPoP-Nonce (RFC 9449 §9).
    const keys = await dpop.generateKeyPair('ES256');
    const bogus = await request(op.metadata.userinfo_endpoint, { headers: {
      authorization: `DPoP ${tokens.access_token}`,
      dpop: await dpop.generateProof(keys, op.metadata.userinfo_endpoint, 'GET', 'not-a-nonce-of-this-server', tokens.access_token),
    } });
    assertRefused(bogus, 401, 'use_dpop_nonce', 'userinfo with a made-up nonce');
    assert.ok(bogus.headers.get('dpop-nonce'), 'DPoP-Nonce on the use_dpop_nonce refusal');

    // oauth4webapi: the first token request is refused with use_dpop_nonce, the handle
    // keeps the nonce, and the same call again succeeds (the code was not spent).
    const issuer = new URL(op.issuer);
    const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...options, algorithm: 'oidc' }));
    const cl = { client_id: registered.client_id, token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'ES256' };
    const handle = oauth.DPoP(cl, await oauth.generateKeyPair('Ed25519'));
    const verifier = oauth.generateRandomCodeVerifier();
    const state2 = oauth.generateRandomState();
    const url2 = new URL(as.authorization_endpoint);
    url2.search = new URLSearchParams({
      client_id: cl.client_id, redirect_uri: rp.cb, response_type: 'code', scope: SCOPE, state: state2,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const back2 = await authorize(user, rp, url2);
    const params = oauth.validateAuthResponse(as, cl, back2.url, state2);
    const exchange = () => within(STEP, oauth.authorizationCodeGrantRequest(as, cl, oauth.None(), params, rp.cb, verifier, { ...options, DPoP: handle }), 'token request')
      .then((res) => oauth.processAuthorizationCodeResponse(as, cl, res));
    const first = await rejection(exchange(), 'a token request without a nonce');
    assert.ok(oauth.isDPoPNonceError(first), `isDPoPNonceError: ${first}`);
    const tokens2 = await exchange();
    assert.equal(tokens2.token_type, 'dpop');
    assert.deepEqual(payloadOf(tokens2.access_token).cnf, { jkt: await handle.calculateThumbprint() });
    const userinfoCall = () => within(STEP, oauth.userInfoRequest(as, cl, tokens2.access_token, { ...options, DPoP: handle }), 'userinfo')
      .then((res) => oauth.processUserInfoResponse(as, cl, oauth.skipSubjectCheck, res));
    const info2 = await userinfoCall().catch((err) => (oauth.isDPoPNonceError(err) ? userinfoCall() : Promise.reject(err)));
    assert.equal(typeof info2.sub, 'string');

    // The key sign-in: a proof without a nonce gets 400 use_dpop_nonce and a nonce; with it, 200.
    const signer = await newUser();
    const htu = `${op.origin}/api/token`;
    const without = await signIn(op.origin, signer, { headers: { dpop: await dpop.generateProof(signer.keys, htu, 'POST') } });
    assertTokenRefused(without, 'use_dpop_nonce', 'a key sign-in proof without a nonce');
    const serverNonce = without.headers.get('dpop-nonce');
    assert.ok(serverNonce, 'DPoP-Nonce on the use_dpop_nonce refusal');
    const withNonce = await signIn(op.origin, signer, { headers: { dpop: await dpop.generateProof(signer.keys, htu, 'POST', serverNonce) } });
    assert.equal(withNonce.status, 200, JSON.stringify(withNonce.body));
    assert.equal(withNonce.body.token_type, 'DPoP');
    assert.deepEqual(user.problems, []);
  });
});

test('dpop: with --dpop-nonce, successful answers to DPoP requests carry a fresh DPoP-Nonce (RFC 9449 §8, as DPOP.md promises)', {
  timeout: 120_000, skip: !HAS_NONCE_FLAG && 'this keygate serve has no --dpop-nonce',
}, async () => {
  await withWorld({ browser: false, args: ['--dpop-nonce'] }, async ({ op }) => {
    const user = await newUser();
    /** A DPoP request to `path`, first without a nonce (refused, which hands one out), then with it. */
    const withNonce = async (method, path, send) => {
      const url = `${op.origin}${path}`;
      const first = await send(await dpop.generateProof(user.keys, url, method, undefined, user.token));
      const nonce = first.headers.get('dpop-nonce');
      assert.ok(nonce, `${method} ${path}: DPoP-Nonce on the refusal (${first.status} ${JSON.stringify(first.body)})`);
      const res = await send(await dpop.generateProof(user.keys, url, method, nonce, user.token));
      assert.equal(res.status, 200, `${method} ${path}: ${JSON.stringify(res.body)}`);
      return res;
    };
    const missing = [];
    const signedIn = await withNonce('POST', '/api/token', (proof) => signIn(op.origin, user, { headers: { dpop: proof }, fields: { client_id: CLIENT, access_type: 'offline' } }));
    if (!signedIn.headers.get('dpop-nonce')) missing.push('POST /api/token');
    user.token = signedIn.body.token;
    const whoami = await withNonce('GET', '/v1/whoami', (proof) => request(`${op.origin}/v1/whoami`, { headers: { authorization: `DPoP ${user.token}`, dpop: proof } }));
    if (!whoami.headers.get('dpop-nonce')) missing.push('GET /v1/whoami');
    user.token = undefined;
    const refreshed = await withNonce('POST', '/v1/token/refresh', (proof) => request(`${op.origin}/v1/token/refresh`, {
      method: 'POST', headers: { dpop: proof }, json: { refresh_token: signedIn.body.refresh_token, client_id: CLIENT },
    }));
    if (!refreshed.headers.get('dpop-nonce')) missing.push('POST /v1/token/refresh');
    assert.deepEqual(missing, [], 'answers 200 without a fresh DPoP-Nonce');
  });
});
