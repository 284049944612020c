// keygate as an OpenID Provider for oauth4webapi's low-level API (panva), a public
// client (token_endpoint_auth_method none, PKCE only): discovery, authorization code,
// ID token, userinfo, refresh, revocation, and the access token through its stock
// RFC 9068 validator (validateJwtAccessToken) at its defaults.
//   cd tests/oidc && npm ci --no-audit --no-fund && node --test

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as oauth from 'oauth4webapi';
import {
  withWorld, freshUser, authorize, within, SCOPE, STEP,
} from './support.js';

// Plain HTTP to the loopback server; every other check at the library's default.
const options = { [oauth.allowInsecureRequests]: true, signal: () => AbortSignal.timeout(STEP) };

for (const alg of ['RS256', 'ES256']) test(`oauth4webapi: a public ${alg} client signs in with PKCE, refreshes, revokes; RFC 9068 validator accepts its access token`, { timeout: 300_000 }, async () => {
  await withWorld({}, async ({ op, rp, browser }) => {
    const registered = await op.createClient({ name: 'oauth4webapi', isPublic: true, redirectUris: [rp.cb], alg });

    const issuer = new URL(op.issuer);
    const as = await within(STEP, oauth.discoveryRequest(issuer, { ...options, algorithm: 'oidc' })
      .then((res) => oauth.processDiscoveryResponse(issuer, res)), 'discovery');
    assert.ok(as.token_endpoint_auth_methods_supported.includes('none'));
    assert.deepEqual(as.code_challenge_methods_supported, ['S256']);
    const cl = { client_id: registered.client_id, token_endpoint_auth_method: 'none', id_token_signed_response_alg: alg };
    const auth = oauth.None();

    const codeVerifier = oauth.generateRandomCodeVerifier();
    const state = oauth.generateRandomState();
    const nonce = oauth.generateRandomNonce();
    const url = new URL(as.authorization_endpoint);
    url.search = new URLSearchParams({
      client_id: cl.client_id,
      redirect_uri: rp.cb,
      response_type: 'code',
      scope: SCOPE,
      state,
      nonce,
      code_challenge: await oauth.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
    });
    const user = await freshUser(browser);
    const back = await authorize(user, rp, url);
    assert.ok(back.consent, 'consent asked of a client that is not first-party');

    const params = oauth.validateAuthResponse(as, cl, back.url, state);
    const codeResponse = await within(STEP, oauth.authorizationCodeGrantRequest(as, cl, auth, params, rp.cb, codeVerifier, options), 'token request');
    assert.equal(codeResponse.headers.get('cache-control'), 'no-store');
    const tokens = await oauth.processAuthorizationCodeResponse(as, cl, codeResponse, { expectedNonce: nonce, requireIdToken: true });
    const idClaims = oauth.getValidatedIdTokenClaims(tokens);
    assert.equal(idClaims.aud, cl.client_id);
    assert.equal(idClaims.nonce, nonce);
    assert.equal(typeof tokens.refresh_token, 'string');
    assert.deepEqual(tokens.scope.split(' ').sort(), SCOPE.split(' ').sort());

    const info = await oauth.processUserInfoResponse(as, cl, idClaims.sub,
      await within(STEP, oauth.userInfoRequest(as, cl, tokens.access_token, options), 'userinfo'));
    assert.equal(info.sub, idClaims.sub);
    assert.match(info.did, /^did:key:z6Mk/);
    assert.equal(typeof info.key, 'string');

    // The stock RFC 9068 validator, its defaults, the audience being the app.
    const validate = (token) => oauth.validateJwtAccessToken(as,
      new Request('http://127.0.0.1/resource', { headers: { authorization: `Bearer ${token}` } }), registered.app, options);
    const atClaims = await validate(tokens.access_token);
    // keygate's access tokens name the key that signed in (`sub`, as every keygate
    // access token does) and its account (`acct`); the ID token's `sub` is the account.
    assert.equal(atClaims.sub, info.key, 'the access token\'s sub is the key userinfo names');
    assert.equal(atClaims.acct, idClaims.sub, 'the access token\'s acct is the ID token\'s sub');
    assert.equal(atClaims.client_id, cl.client_id);
    await assert.rejects(oauth.validateJwtAccessToken(as,
      new Request('http://127.0.0.1/resource', { headers: { authorization: `Bearer ${tokens.access_token}` } }), cl.client_id, options),
    'the client_id is not the access token\'s audience');

    // Refresh with the public client: rotation, the new access token validates too.
    const refreshed = await oauth.processRefreshTokenResponse(as, cl,
      await within(STEP, oauth.refreshTokenGrantRequest(as, cl, auth, tokens.refresh_token, options), 'refresh'));
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
    assert.equal((await validate(refreshed.access_token)).acct, idClaims.sub);

    // A refresh that narrows the scope (RFC 6749 §6): the access token holds only
    // what was asked; asking for more than was granted is invalid_scope.
    const wider = await within(STEP, oauth.refreshTokenGrantRequest(as, cl, auth, refreshed.refresh_token,
      { ...options, additionalParameters: { scope: `${SCOPE} email` } }), 'wider refresh');
    const widerErr = await oauth.processRefreshTokenResponse(as, cl, wider).then(() => assert.fail('a wider scope was granted'), (e) => e);
    assert.equal(widerErr.error, 'invalid_scope', widerErr.message);
    const narrowed = await oauth.processRefreshTokenResponse(as, cl,
      await within(STEP, oauth.refreshTokenGrantRequest(as, cl, auth, refreshed.refresh_token,
        { ...options, additionalParameters: { scope: 'openid' } }), 'narrowed refresh'));
    assert.equal(narrowed.scope, 'openid');
    assert.equal((await validate(narrowed.access_token)).scope, 'openid');

    // Revocation of the rotated refresh token: 200, and the token is refused after.
    const revoked = await within(STEP, oauth.revocationRequest(as, cl, auth, narrowed.refresh_token,
      { ...options, additionalParameters: { token_type_hint: 'refresh_token' } }), 'revocation');
    assert.equal(revoked.status, 200);
    await oauth.processRevocationResponse(revoked);
    const again = await within(STEP, oauth.refreshTokenGrantRequest(as, cl, auth, narrowed.refresh_token, options), 'refresh after revocation');
    const err = await oauth.processRefreshTokenResponse(as, cl, again).then(() => assert.fail('a revoked refresh token was accepted'), (e) => e);
    assert.equal(err.error, 'invalid_grant', err.message);
    assert.deepEqual(user.problems, []);
  });
});
