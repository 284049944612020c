// The OpenID Provider's refusals, with plain fetch (RFC 6749 §4.1.2.1, §5.2; OpenID
// Connect Core §3.1.2.6; RP-Initiated Logout §2): an unknown client or a redirect URI
// not registered — every near miss of a registered one included — gets a 400 page and
// never a redirect; the other authorization errors go back to the registered redirect
// URI with `error`, `state` and `iss`; the token endpoint refuses bad client
// credentials, replayed or misdirected codes and wrong PKCE verifiers.
//   cd tests/oidc && npm ci --no-audit --no-fund && node --test

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  withWorld, freshUser, authorize, postForm, basic, userinfo,
  SCOPE, STEP,
} from './support.js';

const verifier = () => randomBytes(32).toString('base64url');
const challenge = (v) => createHash('sha256').update(v).digest('base64url');

/** GET `url` without following redirects; resolves with { status, location, type, body }. */
async function get(url) {
  const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(STEP) });
  return { status: res.status, location: res.headers.get('location'), type: res.headers.get('content-type') ?? '', body: await res.text() };
}

const withParams = (endpoint, params) => {
  const url = new URL(endpoint);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v);
  return url;
};

/**
 * An authorization request of `clientId` for `redirectUri`: code flow, PKCE S256 with
 * `codeVerifier` (a fresh one unless given), state and nonce; `extra` overrides or
 * (set to undefined) removes parameters.
 */
const authRequest = (op, clientId, redirectUri, { codeVerifier = verifier(), ...extra } = {}) => withParams(op.metadata.authorization_endpoint, {
  response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope: 'openid', state: 'st4te',
  nonce: 'n0nce', code_challenge: challenge(codeVerifier), code_challenge_method: 'S256', ...extra,
});

/** The near misses of the registered `uri` (http://127.0.0.1:PORT/PATH), each a name and a URI. */
function nearMisses(uri) {
  const u = new URL(uri);
  const { port, pathname } = u;
  const other = String(Number(port) === 65535 ? 65534 : Number(port) + 1);
  return [
    ['a trailing slash', `${uri}/`],
    ['another case in the path', `http://127.0.0.1:${port}${pathname.toUpperCase()}`],
    ['another name for the same host', `http://localhost:${port}${pathname}`],
    ['an extra query', `${uri}?next=http://evil.example/`],
    ['a fragment', `${uri}#frag`],
    ['userinfo', `http://user@127.0.0.1:${port}${pathname}`],
    ['the registered authority as userinfo', `http://127.0.0.1:${port}@evil.example${pathname}`],
    ['another port', `http://127.0.0.1:${other}${pathname}`],
    ['no port', `http://127.0.0.1${pathname}`],
    ['another scheme', `https://127.0.0.1:${port}${pathname}`],
    ['a longer path', `${uri}x`],
    ['a dot segment', `http://127.0.0.1:${port}${pathname}/../${pathname.slice(1)}`],
    ['a percent-encoded path', `http://127.0.0.1:${port}/%${pathname.charCodeAt(1).toString(16)}${pathname.slice(2)}`],
  ];
}

/** A refusal that is a page of the provider: 400, HTML, no Location, the bad value not echoed. */
function assertPage(res, what, notEchoed = []) {
  assert.equal(res.status, 400, `${what}: status (Location: ${res.location})`);
  assert.equal(res.location, null, `${what}: no redirect`);
  assert.match(res.type, /text\/html/, `${what}: an HTML page`);
  for (const value of notEchoed) assert.ok(!res.body.includes(value), `${what}: the page echoes ${value}`);
}

test('authorize: an unknown client or an unregistered redirect_uri gets a 400 page, never a redirect', { timeout: 120_000 }, async (t) => {
  await withWorld({ browser: false }, async ({ op, rp }) => {
    const registered = await op.createClient({ name: 'errors', redirectUris: [rp.cb] });
    const request = (extra) => authRequest(op, registered.client_id, rp.cb, extra);

    // The control: the registered URI gets the sign-in page.
    const page = await get(request());
    assert.equal(page.status, 200, 'the registered redirect_uri gets the sign-in page');
    assert.match(page.type, /text\/html/);

    await t.test('an unknown client_id', async () => {
      assertPage(await get(request({ client_id: `kgc_${randomBytes(16).toString('base64url')}` })), 'unknown client_id');
    });
    await t.test('no client_id', async () => {
      assertPage(await get(request({ client_id: undefined })), 'no client_id');
    });
    await t.test('a redirect_uri on another host', async () => {
      assertPage(await get(request({ redirect_uri: 'http://evil.example/cb' })), 'another host', ['evil.example']);
    });
    await t.test('no redirect_uri', async () => {
      // OpenID Connect makes redirect_uri required; the provider must not guess one.
      assertPage(await get(request({ redirect_uri: undefined })), 'no redirect_uri');
    });
    for (const [name, uri] of nearMisses(rp.cb)) {
      await t.test(`redirect_uri with ${name}`, async () => {
        assertPage(await get(request({ redirect_uri: uri })), `redirect_uri with ${name} (${uri})`, ['evil.example']);
      });
    }
    // An unknown client with every other parameter bad too still gets the page.
    await t.test('an unknown client_id with an error that would otherwise redirect', async () => {
      assertPage(await get(request({ client_id: 'kgc_AAAAAAAAAAAAAAAAAAAAAA', response_type: 'token' })), 'unknown client, bad response_type');
    });
    assert.equal(rp.hits.length, 0, 'nothing reached the relying party');
  });
});

test('authorize: request errors go back to the registered redirect_uri with error, state and iss', { timeout: 120_000 }, async (t) => {
  await withWorld({ browser: false }, async ({ op, rp }) => {
    const registered = await op.createClient({ name: 'errors', redirectUris: [rp.cb] });
    const cases = [
      ['no code_challenge', { code_challenge: undefined, code_challenge_method: undefined }, ['invalid_request']],
      ['code_challenge without a method (plain by default)', { code_challenge_method: undefined }, ['invalid_request']],
      ['code_challenge_method=plain', { code_challenge_method: 'plain', code_challenge: verifier() }, ['invalid_request']],
      ['response_type=token', { response_type: 'token' }, ['unsupported_response_type']],
      ['response_type=id_token', { response_type: 'id_token' }, ['unsupported_response_type']],
      ['no openid scope', { scope: 'profile' }, ['invalid_scope', 'invalid_request']],
    ];
    for (const [name, change, codes] of cases) {
      await t.test(name, async () => {
        const res = await get(authRequest(op, registered.client_id, rp.cb, change));
        assert.ok([302, 303].includes(res.status), `${name}: a redirect, got ${res.status}: ${res.body.slice(0, 200)}`);
        const to = new URL(res.location);
        assert.equal(`${to.origin}${to.pathname}`, rp.cb, `${name}: back to the registered redirect_uri`);
        assert.ok(codes.includes(to.searchParams.get('error')), `${name}: error=${to.searchParams.get('error')}, expected ${codes}`);
        assert.equal(to.searchParams.get('state'), 'st4te', `${name}: state`);
        assert.equal(to.searchParams.get('iss'), op.issuer, `${name}: iss (RFC 9207)`);
        assert.equal(to.searchParams.get('code'), null, `${name}: no code`);
        assert.equal(to.hash, '', `${name}: query response mode`);
      });
    }
  });
});

test('authorize: prompt=none in a fresh browser profile redirects with login_required', { timeout: 180_000 }, async () => {
  await withWorld({}, async ({ op, rp, browser }) => {
    const registered = await op.createClient({ name: 'silent', redirectUris: [rp.cb] });
    const user = await freshUser(browser);
    const since = rp.hits.length;
    await user.page.goto(String(authRequest(op, registered.client_id, rp.cb, { prompt: 'none', state: 'quiet' })), { timeout: STEP });
    const back = await rp.next('/cb', since);
    assert.equal(back.searchParams.get('error'), 'login_required');
    assert.equal(back.searchParams.get('state'), 'quiet');
    assert.equal(back.searchParams.get('code'), null);
  });
});

test('authorize: prompt=none with a key and remembered consent gives a code; a client not consented to gets consent_required', { timeout: 180_000 }, async () => {
  await withWorld({}, async ({ op, rp, browser }) => {
    const known = await op.createClient({ name: 'known', redirectUris: [rp.cb] });
    const unknown = await op.createClient({ name: 'not-yet', redirectUris: [rp.cb] });
    const user = await freshUser(browser);
    const request = (client, extra = {}) => authRequest(op, client.client_id, rp.cb, { state: 'quiet', ...extra });
    // Sign up and consent once, interactively.
    const first = await authorize(user, rp, request(known));
    assert.ok(first.params.get('code'));
    assert.ok(first.consent, 'consent asked the first time');
    // Silently: the page signs with the stored key, no click at all.
    let since = rp.hits.length;
    await user.page.goto(String(request(known, { prompt: 'none' })), { timeout: STEP });
    const silent = await rp.next('/cb', since);
    assert.equal(silent.searchParams.get('error'), null, `prompt=none: ${silent}`);
    assert.ok(silent.searchParams.get('code'), 'a code without any UI');
    assert.equal(silent.searchParams.get('state'), 'quiet');
    await user.page.waitForURL((u) => u.pathname === '/cb', { timeout: STEP });
    // Another client the user never consented to: consent_required, no code.
    since = rp.hits.length;
    await user.page.goto(String(request(unknown, { prompt: 'none' })), { timeout: STEP });
    const refused = await rp.next('/cb', since);
    assert.equal(refused.searchParams.get('error'), 'consent_required');
    assert.equal(refused.searchParams.get('code'), null);
    assert.equal(refused.searchParams.get('state'), 'quiet');
  });
});

test('token endpoint: client authentication, code replay, PKCE, redirect_uri and client binding, grant types', { timeout: 420_000 }, async (t) => {
  await withWorld({}, async ({ op, rp, browser }) => {
    const a = await op.createClient({ name: 'client-a', redirectUris: [rp.cb, rp.cb2] });
    const b = await op.createClient({ name: 'client-b', redirectUris: [rp.cb] });
    const token = op.metadata.token_endpoint;
    const user = await freshUser(browser);

    /** A fresh authorization code for client A at redirect_uri `cb`: { code, codeVerifier }. */
    const codeFor = async () => {
      const codeVerifier = verifier();
      const back = await authorize(user, rp, authRequest(op, a.client_id, rp.cb, { codeVerifier, scope: SCOPE }));
      const code = back.params.get('code');
      assert.ok(code, `a code: ${back.url}`);
      return { code, codeVerifier };
    };
    const exchange = ({ code, codeVerifier }, { client = a, redirectUri = rp.cb, auth } = {}) => postForm(token, {
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: codeVerifier,
    }, { authorization: auth ?? basic(client.client_id, client.client_secret) });
    const assertError = (res, status, error, what) => {
      assert.equal(res.status, status, `${what}: status; body ${JSON.stringify(res.body)}`);
      assert.equal(res.body?.error, error, `${what}: error; body ${JSON.stringify(res.body)}`);
      assert.equal(res.headers.get('cache-control'), 'no-store', `${what}: Cache-Control`);
      assert.match(res.headers.get('content-type') ?? '', /application\/json/, `${what}: JSON`);
    };

    await t.test('a code replayed: invalid_grant, and the first exchange\'s tokens are refused after', async () => {
      const code = await codeFor();
      const first = await exchange(code);
      assert.equal(first.status, 200, `the first exchange: ${JSON.stringify(first.body)}`);
      assert.equal((await userinfo(op.metadata, first.body.access_token)).status, 200, 'userinfo before the replay');
      assertError(await exchange(code), 400, 'invalid_grant', 'the replay');
      const after = await userinfo(op.metadata, first.body.access_token);
      assert.equal(after.status, 401, 'userinfo with the first exchange\'s access token after the replay');
      assert.ok(after.headers.get('www-authenticate')?.startsWith('Bearer'), 'WWW-Authenticate: Bearer');
      if (first.body.refresh_token) {
        const refresh = await postForm(token, { grant_type: 'refresh_token', refresh_token: first.body.refresh_token },
          { authorization: basic(a.client_id, a.client_secret) });
        assertError(refresh, 400, 'invalid_grant', 'the first exchange\'s refresh token after the replay');
      }
    });

    await t.test('a wrong client secret: 401 invalid_client with WWW-Authenticate', async () => {
      const code = await codeFor();
      const wrongSecret = `kgcs_${randomBytes(32).toString('base64url')}`;
      const viaBasic = await exchange(code, { auth: basic(a.client_id, wrongSecret) });
      assertError(viaBasic, 401, 'invalid_client', 'client_secret_basic with a wrong secret');
      assert.match(viaBasic.headers.get('www-authenticate') ?? '', /^Basic realm="keygate"/, 'WWW-Authenticate');
      assert.ok(!JSON.stringify(viaBasic.body).includes(wrongSecret), 'the secret is not echoed');
      const viaPost = await postForm(token, {
        grant_type: 'authorization_code', code: code.code, redirect_uri: rp.cb, code_verifier: code.codeVerifier,
        client_id: a.client_id, client_secret: wrongSecret,
      });
      assertError(viaPost, 401, 'invalid_client', 'client_secret_post with a wrong secret');
      const unknown = await exchange(code, { auth: basic('kgc_AAAAAAAAAAAAAAAAAAAAAA', wrongSecret) });
      assertError(unknown, 401, 'invalid_client', 'an unknown client');
      const none = await postForm(token, {
        grant_type: 'authorization_code', code: code.code, redirect_uri: rp.cb, code_verifier: code.codeVerifier, client_id: a.client_id,
      });
      assertError(none, 401, 'invalid_client', 'a confidential client without its secret');
    });

    await t.test('a wrong code_verifier: invalid_grant', async () => {
      const code = await codeFor();
      assertError(await exchange({ ...code, codeVerifier: verifier() }), 400, 'invalid_grant', 'wrong code_verifier');
    });

    await t.test('no code_verifier: invalid_grant or invalid_request', async () => {
      const code = await codeFor();
      const res = await exchange({ ...code, codeVerifier: undefined });
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.ok(['invalid_grant', 'invalid_request'].includes(res.body?.error), JSON.stringify(res.body));
    });

    await t.test('a code with another (registered) redirect_uri: invalid_grant', async () => {
      const code = await codeFor();
      assertError(await exchange(code, { redirectUri: rp.cb2 }), 400, 'invalid_grant', 'another redirect_uri');
    });

    await t.test('a code redeemed by another client: invalid_grant', async () => {
      const code = await codeFor();
      assertError(await exchange(code, { client: b }), 400, 'invalid_grant', 'another client');
    });

    await t.test('an unsupported grant_type: unsupported_grant_type', async () => {
      for (const grant of ['password', 'client_credentials', 'implicit']) {
        const res = await postForm(token, { grant_type: grant, username: 'u', password: 'p', scope: 'openid' },
          { authorization: basic(a.client_id, a.client_secret) });
        assertError(res, 400, 'unsupported_grant_type', `grant_type=${grant}`);
      }
    });

    assert.deepEqual(user.problems, []);
  });
});

test('logout: post_logout_redirect_uri must be registered exactly; a refused logout ends nothing; the registered one redirects with state', { timeout: 240_000 }, async (t) => {
  await withWorld({}, async ({ op, rp, browser }) => {
    const registered = await op.createClient({ name: 'logout', redirectUris: [rp.cb], postLogout: [rp.logout] });
    const user = await freshUser(browser);
    /** A new session of the user with this client: the token response. */
    const signIn = async () => {
      const codeVerifier = verifier();
      const back = await authorize(user, rp, authRequest(op, registered.client_id, rp.cb, { codeVerifier, scope: SCOPE }));
      const res = await postForm(op.metadata.token_endpoint, {
        grant_type: 'authorization_code', code: back.params.get('code'), redirect_uri: rp.cb, code_verifier: codeVerifier,
      }, { authorization: basic(registered.client_id, registered.client_secret) });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body;
    };
    /** Refreshes the session of `tokens` (keeping the rotated token); resolves with the answer. */
    const refresh = async (tokens) => {
      const res = await postForm(op.metadata.token_endpoint, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token },
        { authorization: basic(registered.client_id, registered.client_secret) });
      if (res.status === 200) tokens.refresh_token = res.body.refresh_token;
      return res;
    };
    const endSession = (params) => get(withParams(op.metadata.end_session_endpoint, { state: 'bye', ...params }));

    const first = await signIn();
    const logout = (uri) => endSession({ id_token_hint: first.id_token, client_id: registered.client_id, post_logout_redirect_uri: uri });
    await t.test('an unregistered post_logout_redirect_uri on another host', async () => {
      assertPage(await logout('http://evil.example/logout'), 'another host', ['evil.example']);
    });
    await t.test('the client\'s redirect_uri is not a post_logout_redirect_uri', async () => {
      assertPage(await logout(rp.cb), 'the redirect_uri');
    });
    for (const [name, uri] of nearMisses(rp.logout)) {
      await t.test(`post_logout_redirect_uri with ${name}`, async () => {
        assertPage(await logout(uri), `post_logout_redirect_uri with ${name} (${uri})`, ['evil.example']);
      });
    }
    await t.test('a post_logout_redirect_uri with neither id_token_hint nor client_id', async () => {
      // Nothing names the client, so nothing can vouch for the URI.
      assertPage(await endSession({ post_logout_redirect_uri: rp.logout }), 'no client named');
    });
    await t.test('an id_token_hint of another client than client_id', async () => {
      const other = await op.createClient({ name: 'other', redirectUris: [rp.cb], postLogout: [rp.logout] });
      assertPage(await endSession({ id_token_hint: first.id_token, client_id: other.client_id, post_logout_redirect_uri: rp.logout }),
        'client_id and id_token_hint disagree');
    });
    await t.test('a forged id_token_hint', async () => {
      const [h, p, sig] = first.id_token.split('.');
      const bad = Buffer.from(sig, 'base64url');
      bad[0] ^= 1;
      assertPage(await endSession({ id_token_hint: `${h}.${p}.${bad.toString('base64url')}`, post_logout_redirect_uri: rp.logout }),
        'a forged id_token_hint');
    });
    await t.test('the refused logout requests ended no session', async () => {
      // Each one above carried the session's valid id_token_hint and was answered
      // "Sign-out refused": the session must still be there.
      const res = await refresh(first);
      assert.equal(res.status, 200, `refresh after refused logouts: ${JSON.stringify(res.body)}`);
    });

    await t.test('client_id alone with the registered post_logout_redirect_uri: a redirect with state, no session ended', async () => {
      const second = await signIn();
      const res = await endSession({ client_id: registered.client_id, post_logout_redirect_uri: rp.logout });
      assert.ok([302, 303].includes(res.status), `status ${res.status}: ${res.body.slice(0, 200)}`);
      assert.equal(res.location, `${rp.logout}?state=bye`);
      // Without id_token_hint no session is named: the session goes on.
      const again = await refresh(second);
      assert.equal(again.status, 200, JSON.stringify(again.body));
    });

    await t.test('id_token_hint and the registered post_logout_redirect_uri: a redirect with state, the session ended', async () => {
      const third = await signIn();
      const res = await endSession({ id_token_hint: third.id_token, post_logout_redirect_uri: rp.logout });
      assert.ok([302, 303].includes(res.status), `status ${res.status}: ${res.body.slice(0, 200)}`);
      const to = new URL(res.location);
      assert.equal(`${to.origin}${to.pathname}`, rp.logout);
      assert.equal(to.searchParams.get('state'), 'bye');
      const after = await refresh(third);
      assert.equal(after.status, 400, JSON.stringify(after.body));
      assert.equal(after.body?.error, 'invalid_grant');
    });
    assert.equal(rp.hits.filter((u) => u.pathname === '/logout').length, 0, 'the browser was never sent anywhere by these requests');
  });
});
