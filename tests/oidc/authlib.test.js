// keygate as an OpenID Provider for Authlib (Python): authlib_rp.py makes the
// authorization URL with OAuth2Session (PKCE S256), the user signs in in Chromium, the
// script gets the URL the browser came back to on stdin and does the rest with Authlib
// (code exchange, ID token with CodeIDToken, userinfo, refresh, RFC 9068 validation of
// the access token, revocation); the test asserts on the JSON line it prints.
// Needs the virtualenv: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
//   cd tests/oidc && npm ci --no-audit --no-fund && node --test

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  withWorld, freshUser, authorize, within, FLOW, SCOPE,
} from './support.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env.OIDC_PYTHON || path.join(here, '.venv', 'bin', 'python');

/** Runs authlib_rp.py; `lines()` yields its stdout's JSON lines, `send()` writes a line. */
function relyingParty(args) {
  assert.ok(fs.existsSync(PYTHON), `no Python at ${PYTHON}: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt`);
  const child = spawn(PYTHON, [path.join(here, 'authlib_rp.py'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => { if (stderr.length < 20_000) stderr += c; });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const queue = [];
  const waiting = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    const w = waiting.shift();
    if (w) w(line); else queue.push(line);
  });
  const next = (what) => within(FLOW, new Promise((resolve, reject) => {
    if (queue.length) return resolve(queue.shift());
    waiting.push(resolve);
    exited.then((code) => reject(new Error(`authlib_rp.py exited (${code}) before ${what}:\n${stderr}`)));
  }), `authlib_rp.py: ${what}`).then((line) => JSON.parse(line));
  return {
    next,
    send: (line) => child.stdin.write(`${line}\n`),
    stderr: () => stderr,
    exited,
    kill: () => { if (child.exitCode === null) child.kill('SIGKILL'); },
  };
}

for (const alg of ['RS256', 'ES256']) test(`authlib: OAuth2Session with PKCE signs in (${alg} client), validates the ID token, refreshes, revokes; RFC 9068 claims`, { timeout: 300_000 }, async (t) => {
  await withWorld({}, async ({ op, rp, browser, done }) => {
    const registered = await op.createClient({ name: 'authlib', redirectUris: [rp.cb], ...(alg === 'RS256' ? {} : { alg }) });

    const script = relyingParty([op.issuer, registered.client_id, registered.client_secret, rp.cb, registered.app]);
    done.add(() => script.kill());
    const { authorize: url, failed } = await script.next('the authorization URL');
    assert.equal(failed, undefined, `${failed}\n${script.stderr()}`);
    const asked = new URL(url);
    assert.equal(asked.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(asked.searchParams.get('scope'), SCOPE);

    const back = await authorize(await freshUser(browser), rp, url);
    script.send(back.url.href);
    const result = await script.next('the results');
    assert.equal(result.failed, undefined, `${result.failed}\n${script.stderr()}`);
    assert.equal(await within(FLOW, script.exited, 'authlib_rp.py exit'), 0, script.stderr());

    assert.equal(result.issuer_matches, true);
    assert.equal(result.token_type?.toLowerCase(), 'bearer');
    assert.equal(result.id_token.alg, alg, 'RS256 is a client\'s default');
    assert.equal(result.id_token.aud, registered.client_id);
    assert.equal(result.id_token.nonce, true);
    assert.match(result.id_token.did ?? '', /^did:key:z6Mk/);
    assert.equal(result.userinfo.status, 200);
    assert.equal(result.userinfo.sub, result.id_token.sub);
    assert.deepEqual(result.refreshed, { access_token: true, rotated: true });
    assert.equal(result.revoke_status, 200);
    assert.equal(result.refresh_after_revoke, 'invalid_grant');

    await t.test('Authlib\'s RFC 9068 claim checks pass on the access token (EdDSA allowed)', () => {
      assert.deepEqual(result.rfc9068_eddsa_allowed, {
        ok: true, alg: 'EdDSA', typ: 'at+jwt', client_id: registered.client_id, acct: result.id_token.sub,
      }, JSON.stringify(result.rfc9068_eddsa_allowed));
    });

    // Authlib 1.9.6's stock JWTBearerTokenValidator decodes with joserfc's default
    // registry, which allows only HS256, RS256 and ES256: it refuses keygate's EdDSA
    // access tokens whatever their claims (docs/oidc.md, "Resource servers"). The
    // stock validator that takes them with its defaults is oauth4webapi's
    // validateJwtAccessToken (oauth4webapi.test.js).
  });
});
