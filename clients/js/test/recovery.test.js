// The recovery key (docs/accounts.md): the fixed vector both the Rust and the JS side
// assert (seed = 32 zero bytes), the words checked and refused before anything is
// sent, the challenge checked before anything is signed (against a stand-in server),
// and against a real `keygate serve`: a device makes a recovery key, loses itself, and
// a new device's key recovers the account with the words; the old sessions end, the
// recovery key cannot sign in and is spent.
//   KEYGATE_BIN=… node --test test/recovery.test.js

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createPrivateKey, createPublicKey, verify } from 'node:crypto';
import { startKeygate, NO_RATE_LIMITS } from './support.js';
import {
  identityOf, signIn, whoami, decodeJwt, accountKeys, accountEvents, KeygateError, CLIENT_CODES,
  RECOVERY_LABEL, newRecoveryKey, recoveryKeyFromSeed, recoveryKeyFromWords, normaliseRecoveryWords,
  parseRecoveryChallenge, createRecoveryKey, recoverAccount,
} from '../src/index.js';

/** seed = 32 zero bytes: BIP-39's own first 256-bit vector, and the key the Rust test derives too. */
const ZERO_WORDS = `${'abandon '.repeat(23)}art`;
const ZERO_IDENTITY = 'bbaareib3nit3ztvwuqwwfi5i2avg6dltmuzbk5y54jb2mowajcqywwo2fe';
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

const newKey = () => crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
const CLIENT = 'recovery-test';

/** The error a promise rejects with (fails when it resolves). */
const refusal = (promise) => promise.then((v) => assert.fail(`expected a refusal, got ${JSON.stringify(v)}`), (e) => e);

describe('recovery words', () => {
  test('the fixed vector: 32 zero bytes are "abandon" x23 + "art" and this identity', async () => {
    const key = await recoveryKeyFromSeed(new Uint8Array(32));
    assert.equal(key.words, ZERO_WORDS);
    assert.equal(key.identity, ZERO_IDENTITY);
    assert.equal(key.privateKey.extractable, false, 'the signing key stays inside WebCrypto');
    // The identity is the public key of that seed, derived here by node:crypto.
    const pub = createPublicKey(createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, Buffer.alloc(32)]), format: 'der', type: 'pkcs8' }));
    const raw = Buffer.from(pub.export({ format: 'jwk' }).x, 'base64url');
    assert.equal(raw.toString('hex'), '3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29');
    const sig = await crypto.subtle.sign('Ed25519', key.privateKey, Buffer.from('hello'));
    assert.ok(verify(null, Buffer.from('hello'), pub, Buffer.from(sig)), 'the key signs as that public key');
    // And back from the words.
    assert.equal((await recoveryKeyFromWords(ZERO_WORDS)).identity, ZERO_IDENTITY);
  });

  test('new keys are 24 words that give back the same identity; two are never alike', async () => {
    const a = await newRecoveryKey();
    const b = await newRecoveryKey();
    assert.equal(a.words.split(' ').length, 24);
    assert.notEqual(a.words, b.words);
    assert.notEqual(a.identity, b.identity);
    assert.match(a.identity, /^bbaarei[a-z2-7]{52}$/);
    assert.equal((await recoveryKeyFromWords(a.words)).identity, a.identity);
  });

  test('words are read as written down: case, line breaks, list numbers', async () => {
    const written = ZERO_WORDS.toUpperCase().split(' ').map((w, i) => `${i + 1}. ${w}`).join('\n  ');
    assert.equal(normaliseRecoveryWords(written), ZERO_WORDS);
    assert.equal((await recoveryKeyFromWords(`\n ${written} \t`)).identity, ZERO_IDENTITY);
  });

  test('wrong words are refused with what is wrong, never echoed', async () => {
    const cases = [
      [`${'abandon '.repeat(23)}abandon`, /checksum/], // every word in the list, checksum wrong
      [`${'abandon '.repeat(22)}art abandon`, /checksum/], // order matters
      [`${'abandon '.repeat(22)}art`, /24 words; this is 23/],
      ['', /24 words; this is 0/],
      [`${'abandon '.repeat(5)}zzqx ${'abandon '.repeat(17)}art`, /Word 6 is not in the BIP-39 English word list/],
    ];
    for (const [words, why] of cases) {
      const err = await refusal(recoveryKeyFromWords(words));
      assert.ok(err instanceof KeygateError, String(err));
      assert.equal(err.code, 'invalid_recovery_words');
      assert.match(err.message, why);
      assert.doesNotMatch(err.message, /abandon|zzqx|art\b/, 'the words are not echoed');
    }
    assert.ok(CLIENT_CODES.includes('invalid_recovery_words'));
  });

  test('recoverAccount checks the words before it sends anything', async () => {
    const err = await refusal(recoverAccount({
      token: 'x', words: `${'abandon '.repeat(23)}abandon`, identity: ZERO_IDENTITY, privateKey: (await newKey()).privateKey,
      baseUrl: 'http://127.0.0.1:9', // nothing listens: a request would fail as `network`
    }));
    assert.equal(err.code, 'invalid_recovery_words');
  });
});

describe('the recovery challenge is checked before it is signed', () => {
  let srv;
  let baseUrl;
  let challengeText = '';
  const seen = [];

  before(async () => {
    srv = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(req.url === '/v1/account/recover/challenge' ? { challenge: challengeText, expires_at: '2026-01-01T00:05:00Z' } : {}));
    });
    await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
    baseUrl = `http://127.0.0.1:${srv.address().port}`;
  });
  after(() => new Promise((resolve) => { srv.closeAllConnections(); srv.close(resolve); }));

  const text = (lines) => ['keygate recovery challenge v1', ...lines].join('\n');
  const fields = (recovery, device) => [
    'audience: http://127.0.0.1', 'account: acct_AAAAAAAAAAAAAAAAAAAAAA', `identity: ${recovery}`, `new-identity: ${device}`,
    'session: sess_x', 'nonce: AAAAAAAAAAAAAAAAAAAAAA', 'issued-at: 2026-01-01T00:00:00Z', 'expires-at: 2026-01-01T00:05:00Z',
  ];

  test('parseRecoveryChallenge reads the 9 lines and nothing else', () => {
    const f = parseRecoveryChallenge(text(fields(ZERO_IDENTITY, 'bdev')));
    assert.equal(f.identity, ZERO_IDENTITY);
    assert.equal(f['new-identity'], 'bdev');
    assert.equal(f.account, 'acct_AAAAAAAAAAAAAAAAAAAAAA');
    assert.equal(parseRecoveryChallenge(text(fields(ZERO_IDENTITY, 'bdev').slice(1))), null, '8 lines');
    assert.equal(parseRecoveryChallenge(text(fields(ZERO_IDENTITY, 'bdev')).replace('recovery', 'link')), null, 'another kind');
  });

  test('a challenge for another recovery key or another device key is not signed', async () => {
    const device = await newKey();
    const me = await identityOf(device.publicKey);
    const other = (await newRecoveryKey()).identity;
    for (const lines of [fields(other, me), fields(ZERO_IDENTITY, other), fields(ZERO_IDENTITY, me).slice(1)]) {
      challengeText = text(lines);
      seen.length = 0;
      const err = await refusal(recoverAccount({ token: 'x', words: ZERO_WORDS, identity: me, privateKey: device.privateKey, baseUrl }));
      assert.match(err.message, /recovery challenge for other keys; nothing was signed/);
      assert.deepEqual(seen, ['POST /v1/account/recover/challenge'], 'nothing signed went out');
    }
    // The control: the right names are signed and sent.
    challengeText = text(fields(ZERO_IDENTITY, me));
    seen.length = 0;
    await recoverAccount({ token: 'x', words: ZERO_WORDS, identity: me, privateKey: device.privateKey, baseUrl });
    assert.deepEqual(seen, ['POST /v1/account/recover/challenge', 'POST /v1/account/recover']);
  });
});

describe('recovery against keygate serve', { timeout: 120_000 }, () => {
  let kg;
  let baseUrl;

  before(async () => {
    kg = await startKeygate({ args: NO_RATE_LIMITS });
    baseUrl = kg.origin;
  });
  after(() => kg?.dispose());

  /** A device: a new key signed in (bearer, or key-bound with dpop) with a token. */
  async function device({ dpop = false } = {}) {
    const keyPair = await newKey();
    const identity = await identityOf(keyPair.publicKey);
    const t = await signIn({ identity, keyPair, dpop, baseUrl, transport: 'http', clientId: CLIENT });
    return { keyPair, identity, token: t.token, sid: t.session_id, opts: { baseUrl, ...(dpop && { dpop: keyPair }) } };
  }

  test('lose the only device, recover with the words on a new one: old sessions end, the recovery key is spent', async () => {
    const a = await device();
    const a2 = await signIn({ identity: a.identity, privateKey: a.keyPair.privateKey, baseUrl, clientId: CLIENT }); // a second session
    const made = await createRecoveryKey({ token: a.token, identity: a.identity, privateKey: a.keyPair.privateKey, baseUrl });
    assert.equal(made.words.split(' ').length, 24);
    assert.equal((await recoveryKeyFromWords(made.words)).identity, made.identity, 'the words are that key');
    const before = await accountKeys(a.token, { baseUrl });
    assert.equal(made.account, before.account);
    const listed = before.keys.find((k) => k.identity === made.identity);
    assert.equal(listed?.label, RECOVERY_LABEL, JSON.stringify(before.keys));

    // The recovery key cannot sign in.
    const { privateKey: recoveryPrivate } = await recoveryKeyFromWords(made.words);
    for (const transport of ['http', 'ws']) {
      const err = await refusal(signIn({ identity: made.identity, privateKey: recoveryPrivate, baseUrl, transport }));
      assert.equal(err.code, 'forbidden', `${transport}: ${err.message}`);
      if (transport === 'http') assert.equal(err.status, 403);
    }

    // A new device (its token bound to its key) recovers with the words.
    const b = await device({ dpop: true });
    assert.notEqual(decodeJwt(b.token).payload.acct ?? null, made.account, 'a new key starts in an account of its own');
    const raised = await recoverAccount({
      token: b.token, words: made.words.toUpperCase(), identity: b.identity, privateKey: b.keyPair.privateKey, label: 'new laptop', ...b.opts,
    });
    const claims = decodeJwt(raised.token).payload;
    assert.equal(claims.acct, made.account);
    assert.equal(claims.acr, 'aal2');
    assert.equal(claims.sub, b.identity);
    assert.equal(claims.sid, b.sid, 'the same session, moved into the account');
    assert.equal((await whoami(raised.token, b.opts)).identity, b.identity);

    // Every other session of the account ended.
    for (const old of [a.token, a2.token]) {
      const err = await refusal(whoami(old, { baseUrl }));
      assert.equal(err.code, 'session_revoked', err.message);
      assert.equal(err.status, 401);
    }

    // The account now holds the old key and the new one; the recovery key is gone.
    const after = await accountKeys(raised.token, b.opts);
    assert.equal(after.account, made.account);
    assert.deepEqual(after.keys.map((k) => k.identity).sort(), [a.identity, b.identity].sort());
    assert.equal(after.keys.find((k) => k.identity === b.identity).label, 'new laptop');
    const { events } = await accountEvents(raised.token, b.opts);
    assert.ok(events.some((e) => e.kind === 'recovery_used' && e.outcome == null), JSON.stringify(events.map((e) => [e.kind, e.outcome])));

    // Spent: the same words recover nothing again, not even from yet another device.
    const c = await device();
    const again = await refusal(recoverAccount({ token: c.token, words: made.words, identity: c.identity, privateKey: c.keyPair.privateKey, baseUrl }));
    assert.equal(again.code, 'forbidden', again.message);
    assert.equal(again.status, 403);
    assert.equal(decodeJwt(c.token).payload.acct === made.account, false);
    assert.ok((await whoami(c.token, { baseUrl })).identity, 'the refused device keeps its own session');

    // And a new recovery key can be made from the recovered device.
    const next = await createRecoveryKey({ token: raised.token, identity: b.identity, privateKey: b.keyPair.privateKey, ...b.opts });
    assert.equal(next.account, made.account);
    assert.notEqual(next.identity, made.identity);
  });

  test('words that are no recovery key of any account are refused (403)', async () => {
    const d = await device();
    const stranger = await newRecoveryKey();
    const err = await refusal(recoverAccount({ token: d.token, words: stranger.words, identity: d.identity, privateKey: d.keyPair.privateKey, baseUrl }));
    assert.equal(err.code, 'forbidden', err.message);
    assert.equal(err.status, 403);
  });

  test('a second recovery key replaces the first', async () => {
    const a = await device();
    const first = await createRecoveryKey({ token: a.token, identity: a.identity, privateKey: a.keyPair.privateKey, baseUrl });
    const second = await createRecoveryKey({ token: a.token, identity: a.identity, privateKey: a.keyPair.privateKey, baseUrl });
    const { keys } = await accountKeys(a.token, { baseUrl });
    assert.deepEqual(keys.filter((k) => k.label === RECOVERY_LABEL).map((k) => k.identity), [second.identity]);
    const d = await device();
    const err = await refusal(recoverAccount({ token: d.token, words: first.words, identity: d.identity, privateKey: d.keyPair.privateKey, baseUrl }));
    assert.equal(err.code, 'forbidden', err.message);
  });
});
