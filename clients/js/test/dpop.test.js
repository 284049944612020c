// DPoP proofs (RFC 9449) without a keygate server: the thumbprints of RFC 7638 and
// RFC 8037, a proof with fixed jti and iat rebuilt independently with node:crypto
// (Ed25519 signatures are deterministic, so the whole JWS must match), and the
// client's nonce handling (retry once on use_dpop_nonce, the latest nonce per origin)
// against a stand-in server on 127.0.0.1 that answers as DPOP nonces are specified.
//   node --test test/dpop.test.js

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { dpopProof, jwkThumbprint, publicJwk, boundThumbprint, authorizedFetch, whoami, KeygateError } from '../src/index.js';

// RFC 8032 section 7.1, test 1.
const SEED = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex');
const PUBLIC = Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex');
const PKCS8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), SEED]);
const b64u = (b) => Buffer.from(b).toString('base64url');

/** The RFC 8032 key as a WebCrypto pair whose private half is not extractable. */
async function fixedKeyPair() {
  const privateKey = await crypto.subtle.importKey('pkcs8', PKCS8, { name: 'Ed25519' }, false, ['sign']);
  const publicKey = await crypto.subtle.importKey('raw', PUBLIC, { name: 'Ed25519' }, true, ['verify']);
  return { privateKey, publicKey };
}

const parts = (jws) => {
  const [h, p, s] = jws.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), payload: JSON.parse(Buffer.from(p, 'base64url')), input: `${h}.${p}`, sig: Buffer.from(s, 'base64url') };
};

/** An unsigned JWT whose payload is `claims`: enough for the client to see cnf.jkt. */
const fakeToken = (claims) => `${b64u('{"alg":"EdDSA","typ":"at+jwt"}')}.${b64u(JSON.stringify(claims))}.${b64u(Buffer.alloc(64))}`;

describe('thumbprints and proofs', () => {
  test('jwkThumbprint gives the thumbprints of RFC 7638 (RSA) and RFC 8037 (Ed25519)', async () => {
    const rsa = {
      kty: 'RSA', e: 'AQAB', alg: 'RS256', kid: '2011-04-29',
      n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
    };
    assert.equal(await jwkThumbprint(rsa), 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
    const okp = { kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo' };
    assert.equal(await jwkThumbprint(okp), 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k');
    assert.equal(await jwkThumbprint({ ...okp, d: 'private', use: 'sig' }), 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k', 'only the required members count');
    await assert.rejects(jwkThumbprint({ kty: 'oct', k: 'x' }), TypeError);
    await assert.rejects(jwkThumbprint({ kty: 'OKP', crv: 'Ed25519' }), TypeError);
  });

  test('a proof with fixed jti and iat is exactly the JWS node:crypto makes with the same key', async () => {
    const keyPair = await fixedKeyPair();
    assert.deepEqual(await publicJwk(keyPair.publicKey), { kty: 'OKP', crv: 'Ed25519', x: b64u(PUBLIC) });
    const token = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln';
    const proof = await dpopProof(keyPair, {
      htm: 'POST', htu: 'HTTP://Example.COM:80/v1/logout?scope=x#frag', token, nonce: 'n-1', jti: 'fixed-jti', iat: 1_800_000_000,
    });
    const header = `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"${b64u(PUBLIC)}"}}`;
    const ath = createHash('sha256').update(token, 'ascii').digest('base64url');
    const payload = `{"jti":"fixed-jti","htm":"POST","htu":"http://example.com/v1/logout","iat":1800000000,"ath":"${ath}","nonce":"n-1"}`;
    const input = `${b64u(header)}.${b64u(payload)}`;
    const key = createPrivateKey({ key: PKCS8, format: 'der', type: 'pkcs8' });
    assert.equal(proof, `${input}.${b64u(sign(null, Buffer.from(input), key))}`);
  });

  test('fresh proofs: a random 16-byte jti each, iat now, no ath or nonce unless given, valid signature', async () => {
    const keyPair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    const before = Math.floor(Date.now() / 1000);
    const [a, b] = await Promise.all([1, 2].map(() => dpopProof(keyPair, { htm: 'GET', htu: 'ws://127.0.0.1:1/ws/userauth' })));
    const pa = parts(a);
    const pb = parts(b);
    assert.deepEqual(Object.keys(pa.payload), ['jti', 'htm', 'htu', 'iat']);
    assert.equal(pa.payload.htu, 'ws://127.0.0.1:1/ws/userauth');
    assert.equal(Buffer.from(pa.payload.jti, 'base64url').length, 16);
    assert.match(pa.payload.jti, /^[A-Za-z0-9_-]{22}$/);
    assert.notEqual(pa.payload.jti, pb.payload.jti);
    assert.ok(pa.payload.iat >= before && pa.payload.iat <= Math.floor(Date.now() / 1000));
    const pub = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: pa.header.jwk.x }, format: 'jwk' });
    assert.ok(verify(null, Buffer.from(pa.input), pub, pa.sig));
    assert.equal(pa.header.jwk.d, undefined, 'never the private part');
    await assert.rejects(dpopProof(keyPair, { htu: 'http://x/' }), TypeError);
    await assert.rejects(dpopProof({ privateKey: keyPair.privateKey }, { htm: 'GET', htu: 'http://x/' }), TypeError);
  });

  test('boundThumbprint reads cnf.jkt, and null for bearer tokens and junk', () => {
    assert.equal(boundThumbprint(fakeToken({ sub: 'x', cnf: { jkt: 'abc' } })), 'abc');
    assert.equal(boundThumbprint(fakeToken({ sub: 'x' })), null);
    for (const junk of ['', 'x', 'a.b.c', null]) assert.equal(boundThumbprint(junk), null);
  });
});

describe('requests with a key-bound token (stand-in server)', () => {
  let server;
  let base;
  const seen = [];
  let nonceMode = 'once'; // once: wants a nonce, then accepts it; always: wants a new one every time
  let issued = 0;

  before(async () => {
    server = http.createServer((req, res) => {
      const proof = req.headers.dpop ? parts(req.headers.dpop) : null;
      seen.push({ method: req.method, url: req.url, authorization: req.headers.authorization ?? null, proof });
      const nonce = `nonce-${++issued}`;
      const json = (status, body, headers = {}) => {
        res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
        res.end(JSON.stringify(body));
      };
      if (req.url.startsWith('/bearer')) return json(200, { ok: true });
      const expected = `nonce-${issued - 1}`;
      if (nonceMode === 'always' || proof?.payload.nonce !== expected) {
        const status = req.url.startsWith('/token') ? 400 : 401;
        return json(status, { error: 'use_dpop_nonce', message: 'Authorization server requires nonce in DPoP proof' }, {
          'DPoP-Nonce': nonce, 'WWW-Authenticate': 'DPoP error="use_dpop_nonce"',
        });
      }
      return json(200, { ok: true, nonce: proof.payload.nonce }, { 'DPoP-Nonce': nonce });
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${server.address().port}`;
  });
  after(() => new Promise((resolve) => server.close(resolve)));

  test('a server asking for a nonce gets one retry with it, and later proofs carry its latest nonce', async () => {
    const keyPair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    const token = fakeToken({ sub: 'x', cnf: { jkt: await jwkThumbprint(await publicJwk(keyPair.publicKey)) } });
    seen.length = 0;
    nonceMode = 'once';
    const me = await whoami(token, { baseUrl: base, dpop: keyPair });
    assert.equal(me.ok, true);
    assert.equal(seen.length, 2, 'one refusal, one retry');
    assert.equal(seen[0].proof.payload.nonce, undefined);
    assert.equal(seen[1].proof.payload.nonce, 'nonce-1');
    assert.notEqual(seen[1].proof.payload.jti, seen[0].proof.payload.jti, 'the retry is a new proof');
    for (const s of seen) {
      assert.equal(s.authorization, `DPoP ${token}`);
      assert.equal(s.proof.payload.htm, 'GET');
      assert.equal(s.proof.payload.htu, `${base}/v1/whoami`);
      assert.equal(s.proof.payload.ath, createHash('sha256').update(token).digest('base64url'));
    }

    // The nonce of the last answer (nonce-2) goes into the next proof: no refusal now.
    seen.length = 0;
    const res = await authorizedFetch(token, `${base}/app/things?page=2`, { method: 'post', dpop: keyPair, body: '{}' });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true, nonce: 'nonce-2' });
    assert.equal(seen.length, 1);
    assert.equal(seen[0].method, 'POST');
    assert.equal(seen[0].proof.payload.htm, 'POST');
    assert.equal(seen[0].proof.payload.htu, `${base}/app/things`, 'no query in htu');
  });

  test('only one retry: a server that keeps asking gets the error, typed', async () => {
    const keyPair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    const token = fakeToken({ sub: 'x', cnf: { jkt: 'j' } });
    seen.length = 0;
    nonceMode = 'always';
    const err = await whoami(token, { baseUrl: base, dpop: keyPair }).catch((e) => e);
    assert.ok(err instanceof KeygateError);
    assert.equal(err.code, 'use_dpop_nonce');
    assert.equal(err.status, 401);
    assert.equal(seen.length, 2);
    seen.length = 0;
    const res = await authorizedFetch(token, `${base}/app`, { dpop: keyPair });
    assert.equal(res.status, 401);
    assert.equal(seen.length, 2);
  });

  test('bearer tokens are sent as before, with no proof; a bound token without its key is a TypeError', async () => {
    const keyPair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    const bearer = fakeToken({ sub: 'x' });
    seen.length = 0;
    const res = await authorizedFetch(bearer, `${base}/bearer`, { dpop: keyPair });
    assert.equal(res.status, 200);
    assert.deepEqual(seen.map((s) => [s.authorization, s.proof]), [[`Bearer ${bearer}`, null]]);
    await assert.rejects(whoami(fakeToken({ cnf: { jkt: 'j' } }), { baseUrl: base }), TypeError);
    assert.equal(seen.length, 1, 'nothing sent');
  });
});
