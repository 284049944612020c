// A single-page app: a public client whose own script, in Chromium on the relying
// party's origin, exchanges the code, calls userinfo and revokes, with the browser's
// fetch across origins (CORS: a preflight for userinfo's Authorization header, and
// the answers readable by the page, WWW-Authenticate included).
//   cd tests/oidc && npm ci --no-audit --no-fund && node --test

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { withWorld, freshUser, authorize, within, STEP } from './support.js';

test('a single-page app on another origin exchanges its code, calls userinfo and revokes from the browser', { timeout: 300_000 }, async () => {
  await withWorld({}, async ({ op, rp, browser }) => {
    const client = await op.createClient({ name: 'spa', isPublic: true, redirectUris: [rp.cb] });
    const verifier = randomBytes(32).toString('base64url');
    const url = new URL(op.metadata.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: 'code', client_id: client.client_id, redirect_uri: rp.cb, scope: 'openid offline_access',
      state: 'spa-state', code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
    });
    const user = await freshUser(browser);
    const back = await authorize(user, rp, url);
    assert.equal(back.params.get('state'), 'spa-state');
    assert.notEqual(new URL(user.page.url()).origin, new URL(op.issuer).origin, 'the page is on another origin than the provider');

    // Everything below runs in the page, as the app's own script would.
    const seen = await within(STEP, user.page.evaluate(async ({ metadata, clientId, code, verifier, cb }) => {
      const form = (fields) => ({ method: 'POST', body: new URLSearchParams(fields) });
      const tokenRes = await fetch(metadata.token_endpoint, form({
        grant_type: 'authorization_code', client_id: clientId, code, code_verifier: verifier, redirect_uri: cb,
      }));
      const tokens = await tokenRes.json();
      const info = await fetch(metadata.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
      const bad = await fetch(metadata.userinfo_endpoint, { headers: { authorization: 'Bearer not-a-token' } });
      const revoked = await fetch(metadata.revocation_endpoint, form({
        client_id: clientId, token: tokens.refresh_token, token_type_hint: 'refresh_token',
      }));
      const after = await fetch(metadata.token_endpoint, form({
        grant_type: 'refresh_token', client_id: clientId, refresh_token: tokens.refresh_token,
      }));
      return {
        token: { status: tokenRes.status, type: tokens.token_type, hasRefresh: typeof tokens.refresh_token === 'string', hasId: typeof tokens.id_token === 'string' },
        userinfo: { status: info.status, body: await info.json() },
        bad: { status: bad.status, challenge: bad.headers.get('www-authenticate') },
        revoked: revoked.status,
        after: { status: after.status, body: await after.json() },
      };
    }, { metadata: op.metadata, clientId: client.client_id, code: back.params.get('code'), verifier, cb: rp.cb }), 'the page\'s calls');

    assert.deepEqual(seen.token, { status: 200, type: 'Bearer', hasRefresh: true, hasId: true });
    assert.equal(seen.userinfo.status, 200);
    assert.match(seen.userinfo.body.did, /^did:key:z6Mk/);
    assert.equal(seen.bad.status, 401);
    assert.match(seen.bad.challenge ?? '', /^Bearer .*error="invalid_token"/, 'the page can read WWW-Authenticate');
    assert.equal(seen.revoked, 200);
    assert.equal(seen.after.status, 400);
    assert.equal(seen.after.body.error, 'invalid_grant', 'the revoked refresh token is refused');
    assert.deepEqual(user.problems, []);
  });
});
