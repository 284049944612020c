// keygate against clients it did not write, run against the real `keygate serve`
// (KEYGATE_BIN, default <repo>/target/debug/keygate) on 127.0.0.1:0:
//
// - the Textile example browser app's sign-in (textileio/js-examples,
//   hub-browser-auth-app, `loginWithChallenge`), its frame logic rewritten here
//   step for step, with its key made by the real `@textile/crypto` package;
// - a stock RFC 9068 validator (`oauth4webapi`'s validateJwtAccessToken) checking
//   keygate's access tokens against the JWKS the server publishes.
//
//   cd tests/interop && npm ci --no-audit --no-fund && node --test

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrivateKey } from '@textile/crypto';
import * as oauth from 'oauth4webapi';
import WebSocket from 'ws';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const KEYGATE_BIN = process.env.KEYGATE_BIN || path.join(repoDir, 'target', 'debug', 'keygate');
const ISSUER = 'http://keygate.interop.test';
const WAIT = 15_000; // ceiling for any single answer

/** Resolves as `promise` does, or rejects after `ms`. */
function within(ms, promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** `keygate serve` on a fresh SQLite file; resolves with the child and its base URL. */
async function serve(dir) {
  assert.ok(fs.existsSync(KEYGATE_BIN), `no keygate binary at ${KEYGATE_BIN}: build it (cargo build) or set KEYGATE_BIN`);
  const child = spawn(
    KEYGATE_BIN,
    ['serve', '--listen', '127.0.0.1:0', '--database', `sqlite://${dir}/kg.db`, '--issuer', ISSUER],
    { env: { ...process.env, RUST_LOG: 'warn,keygate=info', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const [base, providerKey] = await within(WAIT * 2, new Promise((resolve, reject) => {
    const scan = (chunk) => {
      output = (output + chunk).slice(-20_000);
      // The start-up line names the address and the built-in Provider's API key id.
      const m = /listening on (http:\/\/[0-9.:]+)[^\n]*?(kgk_[a-z0-9]+)/.exec(output);
      if (m) resolve([m[1], m[2]]);
    };
    child.stdout.on('data', scan);
    child.stderr.on('data', scan);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`keygate exited (${code}) before listening:\n${output}`)));
  }), 'keygate serve').catch((err) => { child.kill('SIGKILL'); throw err; });
  return { child, base, providerKey };
}

function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 5_000);
    child.once('exit', () => { clearTimeout(force); resolve(); });
    child.kill('SIGTERM');
  });
}

// ---- the Textile example client -----------------------------------------------------

/**
 * The frame logic of the Textile example's `loginWithChallenge`, as that client
 * behaves: open the socket, send {type: 'token', pubkey}, sign the challenge text's
 * bytes and send the signature as a Node Buffer's JSON, resolve with the token,
 * reject with the error frame's `value`. Three additions of the test harness, not
 * of the client: the Origin header a browser page would send, a rejection when the
 * socket closes without an answer (the original would wait forever), and `seen`,
 * which collects the frames received for failure messages.
 */
function loginWithChallenge(socketUrl, origin, identity, seen = []) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(socketUrl, { origin });
    socket.onclose = (ev) => reject(new Error(`closed (${ev.code}) without a token or an error frame`));
    socket.onerror = (ev) => reject(ev.error ?? new Error('socket error'));
    socket.onopen = () => {
      const publicKey = identity.public.toString();
      socket.send(JSON.stringify({ pubkey: publicKey, type: 'token' }));
      socket.onmessage = async (event) => {
        const data = JSON.parse(event.data);
        seen.push(data);
        switch (data.type) {
          case 'error': {
            reject(data.value);
            break;
          }
          case 'challenge': {
            const buf = Buffer.from(data.value);
            const signed = await identity.sign(buf);
            socket.send(JSON.stringify({ type: 'challenge', sig: Buffer.from(signed).toJSON() }));
            break;
          }
          case 'token': {
            resolve(data.value);
            break;
          }
        }
      };
    };
  });
}

/** Sign-in in keygate's documented form (base64url signature); resolves with the token frame. */
function documentedLogin(socketUrl, origin, identity, first = {}) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(socketUrl, { origin });
    socket.on('close', (code) => reject(new Error(`closed (${code}) without a token`)));
    socket.on('error', reject);
    socket.on('open', () => socket.send(JSON.stringify({ type: 'token', pubkey: identity.public.toString(), ...first })));
    socket.on('message', async (raw) => {
      const data = JSON.parse(String(raw));
      if (data.type === 'challenge') {
        const sig = Buffer.from(await identity.sign(Buffer.from(data.value))).toString('base64url');
        socket.send(JSON.stringify({ type: 'challenge', sig }));
      } else if (data.type === 'token') {
        resolve(data);
      } else {
        reject(new Error(`error frame: ${JSON.stringify(data)}`));
      }
    });
  });
}

/** A JWT's payload, decoded without checking anything. */
const payloadOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

describe('clients keygate did not write', () => {
  let dir;
  let server;
  let socketUrl;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keygate-interop-'));
    server = await serve(dir);
    socketUrl = `${server.base.replace(/^http/, 'ws')}/ws/userauth`;
  });

  after(async () => {
    if (server) await stop(server.child);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('@textile/crypto keys are keygate identities', () => {
    const identity = PrivateKey.fromRandom();
    assert.match(identity.public.toString(), /^bbaarei[a-z2-7]{52}$/);
  });

  test('the Textile example client signs in over /ws/userauth with a Buffer-JSON signature', async () => {
    const identity = PrivateKey.fromRandom();
    const seen = [];
    const token = await within(WAIT, loginWithChallenge(socketUrl, server.base, identity, seen), 'Textile sign-in')
      .catch((value) => assert.fail(`refused with ${JSON.stringify(value)}; frames: ${JSON.stringify(seen)}`));
    assert.equal(typeof token, 'string');
    const claims = payloadOf(token);
    assert.equal(claims.sub, identity.public.toString());
    assert.equal(claims.iss, ISSUER);
    assert.equal(claims.aud, server.providerKey, 'aud is the app: its API key id');
  });

  test('the Textile example client gets the error message in `value` of an error frame', async () => {
    // The identity names one key and the signature comes from another.
    const named = PrivateKey.fromRandom();
    const other = PrivateKey.fromRandom();
    const impostor = { public: named.public, sign: (buf) => other.sign(buf) };
    const seen = [];
    const refused = await within(WAIT, loginWithChallenge(socketUrl, server.base, impostor, seen).then(
      (token) => assert.fail(`signed in with another key's signature: ${token}`),
      (value) => value,
    ), 'Textile sign-in with a wrong signature');
    const error = seen.find((f) => f.type === 'error');
    assert.equal(error?.code, 'invalid_signature', `frames: ${JSON.stringify(seen)}`);
    assert.equal(typeof refused, 'string', `the rejection is the frame's value, a message; frames: ${JSON.stringify(seen)}`);
    assert.equal(refused, error.message);
  });

  test('an error before the challenge reaches the Textile client as `value` too', async () => {
    const nobody = { public: { toString: () => 'not-an-identity' }, sign: () => assert.fail('nothing to sign') };
    const seen = [];
    const refused = await within(WAIT, loginWithChallenge(socketUrl, server.base, nobody, seen).then(
      (token) => assert.fail(`signed in without an identity: ${token}`),
      (value) => value,
    ), 'Textile sign-in without an identity');
    const error = seen.find((f) => f.type === 'error');
    assert.equal(error?.code, 'invalid_identity', `frames: ${JSON.stringify(seen)}`);
    assert.equal(refused, error.message, `the rejection is the frame's value; frames: ${JSON.stringify(seen)}`);
    assert.ok(!refused.includes('not-an-identity'), 'the message does not echo the input');
  });

  test('a stock RFC 9068 validator accepts keygate access tokens', async () => {
    // The authorization server as oauth4webapi knows it: issuer and JWKS URI (keygate
    // publishes no discovery document). allowInsecureRequests only lets it fetch the
    // JWKS over plain HTTP on loopback; every check of the token stays at its default.
    const as = { issuer: ISSUER, jwks_uri: `${server.base}/.well-known/jwks.json` };
    const options = { [oauth.allowInsecureRequests]: true };
    const validate = (token) => oauth.validateJwtAccessToken(
      as,
      new Request(`${server.base}/resource`, { headers: { authorization: `Bearer ${token}` } }),
      server.providerKey,
      options,
    );

    // Signed in as the Textile client does, with no client name of its own.
    const plain = await within(WAIT, documentedLogin(socketUrl, server.base, PrivateKey.fromRandom()), 'sign-in');
    const claims = await validate(plain.value);
    assert.equal(typeof claims.client_id, 'string');
    assert.ok(claims.client_id.length > 0, 'client_id names the app');
    assert.ok(!('scope' in claims) || claims.scope !== '', 'an empty scope is left out');

    // With a client name: it is the token's client_id.
    const named = await within(WAIT, documentedLogin(socketUrl, server.base, PrivateKey.fromRandom(), { client_id: 'interop' }), 'sign-in');
    assert.equal((await validate(named.value)).client_id, 'interop');

    // And the validator is no rubber stamp: another audience, or one flipped bit of the signature, is refused.
    await assert.rejects(oauth.validateJwtAccessToken(
      as,
      new Request(`${server.base}/resource`, { headers: { authorization: `Bearer ${named.value}` } }),
      'http://another.audience',
      options,
    ));
    const [h, p, s] = named.value.split('.');
    const sig = Buffer.from(s, 'base64url');
    sig[0] ^= 1;
    await assert.rejects(validate(`${h}.${p}.${sig.toString('base64url')}`));
  });
});
