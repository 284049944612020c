// The device authorization grant (RFC 8628) with oauth4webapi: the device asks for a
// code, the user approves it with `keygate login --device` and a key file made by
// `keygate id new`, the device polls (honouring `interval` and slow_down) and gets
// tokens for that key's account.
//   cd tests/oidc && npm ci --no-audit --no-fund && node --test

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as oauth from 'oauth4webapi';
import { withWorld, keygate, within, freshUser, STEP } from './support.js';

const options = { [oauth.allowInsecureRequests]: true, signal: () => AbortSignal.timeout(STEP) };
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

test('device grant: oauth4webapi polls, `keygate login --device` approves (the device gets tokens) or denies (access_denied)', { timeout: 300_000 }, async () => {
  await withWorld({ browser: false }, async ({ op }) => {
    // A device has no redirect URI of its own; the client still registers one.
    const registered = await op.createClient({ name: 'device', isPublic: true, redirectUris: ['http://127.0.0.1:9/unused'] });
    const issuer = new URL(op.issuer);
    const as = await oauth.processDiscoveryResponse(issuer, await within(STEP, oauth.discoveryRequest(issuer, options), 'discovery'));
    assert.ok(as.grant_types_supported.includes(DEVICE_GRANT));
    assert.equal(as.device_authorization_endpoint, `${op.issuer}/oauth/device_authorization`);
    const cl = { client_id: registered.client_id, token_endpoint_auth_method: 'none' };
    const auth = oauth.None();

    const started = await oauth.processDeviceAuthorizationResponse(as, cl,
      await within(STEP, oauth.deviceAuthorizationRequest(as, cl, auth, { scope: 'openid profile offline_access' }, options), 'device authorization'));
    assert.match(started.user_code, /^[A-Z0-9]{4}-[A-Z0-9]{4}$/);
    assert.equal(started.verification_uri, `${op.issuer}/oauth/device`);
    assert.ok(started.verification_uri_complete.includes(encodeURIComponent(started.user_code)) || started.verification_uri_complete.includes(started.user_code));
    assert.ok(started.expires_in > 0);
    let interval = started.interval ?? 5;

    const poll = async () => {
      const res = await within(STEP, oauth.deviceCodeGrantRequest(as, cl, auth, started.device_code, options), 'device token request');
      return oauth.processDeviceCodeResponse(as, cl, res).then((tokens) => ({ tokens }), (error) => ({ error }));
    };

    // Before approval: authorization_pending.
    const pending = await poll();
    assert.equal(pending.error?.error, 'authorization_pending', pending.error?.message ?? 'tokens before approval');

    // The user approves with the CLI and their own key.
    const key = path.join(op.dir, 'user.pem');
    await keygate(['id', 'new', '--key', key]);
    const identity = await keygate(['id', 'show', '--key', key]);
    await keygate(['login', '--device', started.user_code, '--url', op.issuer, '--key', key]);

    // The device polls, no faster than the server asks; bounded by expires_in and a count.
    const deadline = Date.now() + Math.min(started.expires_in, 120) * 1000;
    let tokens = null;
    for (let i = 0; i < 30 && !tokens; i++) {
      await sleep(interval);
      const r = await poll();
      if (r.tokens) { tokens = r.tokens; break; }
      if (r.error?.error === 'slow_down') interval += 5;
      else assert.equal(r.error?.error, 'authorization_pending', r.error?.message);
      assert.ok(Date.now() < deadline, 'no tokens before the device code expired');
    }
    assert.ok(tokens, 'the device got tokens');
    const claims = oauth.getValidatedIdTokenClaims(tokens);
    assert.equal(claims.aud, cl.client_id);
    assert.ok(identity.includes(claims.did), `the ID token names the approving key (${claims.did} in ${identity})`);
    assert.equal(typeof tokens.refresh_token, 'string');
    const info = await oauth.processUserInfoResponse(as, cl, claims.sub,
      await within(STEP, oauth.userInfoRequest(as, cl, tokens.access_token, options), 'userinfo'));
    assert.equal(info.did, claims.did);

    // The device code is spent: a second poll gets no second set of tokens.
    const replay = await poll();
    assert.ok(replay.error, 'a device code gives tokens once');
    assert.ok(['invalid_grant', 'expired_token'].includes(replay.error.error), replay.error.message);

    // Another device, refused by the user: access_denied, and no tokens.
    const other = await oauth.processDeviceAuthorizationResponse(as, cl,
      await within(STEP, oauth.deviceAuthorizationRequest(as, cl, auth, { scope: 'openid' }, options), 'device authorization'));
    assert.notEqual(other.user_code, started.user_code);
    await keygate(['login', '--device', other.user_code, '--deny', '--url', op.issuer, '--key', key]);
    await sleep(other.interval ?? 5);
    const denied = await oauth.processDeviceCodeResponse(as, cl,
      await within(STEP, oauth.deviceCodeGrantRequest(as, cl, auth, other.device_code, options), 'device token request'))
      .then(() => assert.fail('a denied device got tokens'), (e) => e);
    assert.equal(denied.error, 'access_denied', denied.message);

    // A user code that was never issued: the CLI refuses it.
    await assert.rejects(keygate(['login', '--device', 'BCDF-GHJK', '--url', op.issuer, '--key', key]));
  });
});

test('device grant: the user approves in the browser at verification_uri_complete with the browser\'s key', { timeout: 300_000 }, async () => {
  await withWorld({ browser: true }, async ({ op, browser }) => {
    const registered = await op.createClient({ name: 'tv app', isPublic: true, redirectUris: ['http://127.0.0.1:9/unused'] });
    const issuer = new URL(op.issuer);
    const as = await oauth.processDiscoveryResponse(issuer, await within(STEP, oauth.discoveryRequest(issuer, options), 'discovery'));
    const cl = { client_id: registered.client_id, token_endpoint_auth_method: 'none' };
    const auth = oauth.None();
    const started = await oauth.processDeviceAuthorizationResponse(as, cl,
      await within(STEP, oauth.deviceAuthorizationRequest(as, cl, auth, { scope: 'openid offline_access' }, options), 'device authorization'));

    const { page, problems } = await freshUser(browser);
    await page.goto(started.verification_uri_complete, { timeout: STEP });
    assert.equal(await page.inputValue('#user-code'), started.user_code, 'the code comes from the URL');
    await page.waitForSelector('#lookup:enabled', { timeout: STEP });
    await page.click('#lookup');
    await page.waitForSelector('#decide:not([hidden])', { timeout: STEP });
    assert.equal((await page.textContent('#client')).trim(), 'tv app');
    assert.equal((await page.textContent('#scope')).trim(), 'openid offline_access');
    const did = (await page.textContent('#identity')).trim();
    assert.match(did, /^did:key:z6Mk/);
    await page.click('#approve');
    await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Approved'), null, { timeout: STEP });
    assert.deepEqual(problems, []);

    let interval = started.interval ?? 5;
    let tokens = null;
    for (let i = 0; i < 10 && !tokens; i++) {
      await sleep(interval);
      const res = await within(STEP, oauth.deviceCodeGrantRequest(as, cl, auth, started.device_code, options), 'device token request');
      const r = await oauth.processDeviceCodeResponse(as, cl, res).then((t) => ({ t }), (error) => ({ error }));
      if (r.t) tokens = r.t;
      else if (r.error?.error === 'slow_down') interval += 5;
      else assert.equal(r.error?.error, 'authorization_pending', r.error?.message);
    }
    assert.ok(tokens, 'the device got tokens');
    assert.equal(oauth.getValidatedIdTokenClaims(tokens).did, did, 'the ID token names the browser\'s key');
  });
});
