// keygate as an OpenID Provider for openid-client v6 (panva), at its default settings:
// discovery, authorization code with PKCE S256 + state + nonce, the user signing in
// in Chromium, the ID token validated by the library, userinfo, refresh, revocation,
// RP-initiated logout. Once for a client of each ID-token algorithm (RS256, ES256,
// EdDSA, Ed25519).
//   cd tests/oidc && npm ci --no-audit --no-fund && node --test

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import {
  withWorld, freshUser, authorize,
  headerOf, payloadOf, within, SCOPE, STEP,
} from './support.js';

/** Rejects unless `promise` rejects with an OAuth error `code` from the server. */
async function refusedWith(promise, code, what) {
  const err = await promise.then(
    (value) => assert.fail(`${what}: accepted (${JSON.stringify(value)?.slice(0, 200)})`),
    (e) => e,
  );
  assert.equal(err.error, code, `${what}: ${err.code ?? ''} ${err.error ?? ''} ${err.message}`);
}

for (const alg of ['RS256', 'ES256', 'EdDSA', 'Ed25519']) {
  test(`openid-client: sign-in, userinfo, refresh, revocation and logout with an ${alg} client`, { timeout: 300_000 }, async () => {
    await withWorld({}, async ({ op, rp, browser }) => {
      const registered = await op.createClient({ name: `openid-client-${alg}`, alg, redirectUris: [rp.cb], postLogout: [rp.logout] });
      assert.equal(registered.alg, alg);

      // Discovery, as openid-client does it (plain HTTP allowed: loopback only).
      const config = await within(STEP, client.discovery(new URL(op.issuer), registered.client_id, registered.client_secret,
        undefined, { execute: [client.allowInsecureRequests] }), 'discovery');
      const server = config.serverMetadata();
      assert.equal(server.issuer, op.issuer);
      assert.ok(server.supportsPKCE('S256'), 'S256 in code_challenge_methods_supported');
      assert.ok(server.id_token_signing_alg_values_supported.includes(alg));

      const user = await freshUser(browser);

      /** One authorization code flow in the browser; resolves with openid-client's token response. */
      const signIn = async () => {
        const codeVerifier = client.randomPKCECodeVerifier();
        const state = client.randomState();
        const nonce = client.randomNonce();
        const url = client.buildAuthorizationUrl(config, {
          redirect_uri: rp.cb,
          scope: SCOPE,
          code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
          code_challenge_method: 'S256',
          state,
          nonce,
        });
        const back = await authorize(user, rp, url);
        assert.equal(back.params.get('state'), state);
        assert.equal(back.params.get('iss'), op.issuer, 'RFC 9207 iss in the authorization response');
        const tokens = await within(STEP, client.authorizationCodeGrant(config, back.url, {
          pkceCodeVerifier: codeVerifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true,
        }), 'authorizationCodeGrant');
        return { tokens, back };
      };

      // Sign-up and sign-in: the consent screen of a client that is not first-party.
      const { tokens, back } = await signIn();
      assert.ok(back.consent, 'a client that is not first-party gets the consent screen');
      assert.ok(back.consent.length >= 2, `the consent screen lists the scopes: ${JSON.stringify(back.consent)}`);
      assert.match(back.identity ?? '', /did:key:z6Mk/, '#identity shows the did:key');
      assert.equal(tokens.token_type.toLowerCase(), 'bearer');
      assert.equal(typeof tokens.refresh_token, 'string', 'offline_access gives a refresh token');
      assert.equal(headerOf(tokens.id_token).alg, alg, 'the ID token is signed with the client\'s alg');
      const idClaims = tokens.claims();
      assert.equal(idClaims.iss, op.issuer);
      assert.equal(idClaims.aud, registered.client_id);
      assert.match(idClaims.sub, /\S/);
      assert.match(idClaims.did ?? '', /^did:key:z6Mk/, 'did claim');
      assert.ok(back.identity.includes(idClaims.did), `the ID token names the key the page showed (${back.identity})`);
      // The access token: RFC 9068, EdDSA, audience the app, client_id the OIDC client.
      assert.equal(headerOf(tokens.access_token).typ, 'at+jwt');
      const at = payloadOf(tokens.access_token);
      assert.equal(at.aud, registered.app);
      assert.equal(at.client_id, registered.client_id);

      // Userinfo: the same subject (openid-client checks it).
      const info = await within(STEP, client.fetchUserInfo(config, tokens.access_token, idClaims.sub), 'fetchUserInfo');
      assert.equal(info.sub, idClaims.sub);
      assert.equal(info.did, idClaims.did);

      // Refresh: a new access token, a rotated refresh token; the spent one is refused.
      const refreshed = await within(STEP, client.refreshTokenGrant(config, tokens.refresh_token), 'refreshTokenGrant');
      assert.equal(typeof refreshed.access_token, 'string');
      assert.equal(typeof refreshed.refresh_token, 'string', 'rotation gives a new refresh token');
      assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
      if (refreshed.id_token) assert.equal(refreshed.claims().sub, idClaims.sub);
      assert.equal((await client.fetchUserInfo(config, refreshed.access_token, idClaims.sub)).sub, idClaims.sub);

      // Revocation (RFC 7009) of the current refresh token: it is refused afterwards.
      await within(STEP, client.tokenRevocation(config, refreshed.refresh_token, { token_type_hint: 'refresh_token' }), 'tokenRevocation');
      await refusedWith(client.refreshTokenGrant(config, refreshed.refresh_token), 'invalid_grant', 'refresh with a revoked refresh token');

      // A second sign-in (key known, consent remembered), then RP-initiated logout in
      // the browser: the session ends, its refresh token is refused.
      const second = await signIn();
      assert.equal(second.back.consent, null, 'consent is remembered per account and client');
      assert.equal(second.tokens.claims().sub, idClaims.sub, 'the same account');
      const logoutState = client.randomState();
      const endSession = client.buildEndSessionUrl(config, {
        id_token_hint: second.tokens.id_token,
        post_logout_redirect_uri: rp.logout,
        state: logoutState,
      });
      const since = rp.hits.length;
      await user.page.goto(String(endSession), { timeout: STEP });
      const loggedOut = await rp.next('/logout', since);
      assert.equal(loggedOut.searchParams.get('state'), logoutState);
      await refusedWith(client.refreshTokenGrant(config, second.tokens.refresh_token), 'invalid_grant', 'refresh after logout');
      assert.deepEqual(user.problems, [], 'no uncaught errors in keygate\'s pages');
    });
  });
}
