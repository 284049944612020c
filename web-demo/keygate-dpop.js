// Generated from clients/js/src/dpop.js (package keygate-client) by
// clients/js/scripts/vendor.js: edit the package and run that script, not this file.

// DPoP (RFC 9449): proofs of possession made with the user's own Ed25519 key, the
// same non-extractable WebCrypto key that signs sign-in challenges. Only its public
// half is exported (as a JWK, into the proof's header). A token issued against a proof
// names that key's RFC 7638 thumbprint in `cnf.jkt` and is refused without a fresh
// proof by the same key on every request.
//
// Proof: header {"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x"}},
// payload {"jti","htm","htu","iat"} plus "ath" (b64url SHA-256 of the access token)
// when a token goes with it, and "nonce" when the server handed one out.

import { base64url, fromBase64url } from './keygate-identity.js';

const JTI_BYTES = 16;
const utf8 = (s) => new TextEncoder().encode(s);
const b64urlJson = (value) => base64url(utf8(JSON.stringify(value)));
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));

/** Public JWKs of the key pairs used so far: exported once per CryptoKey. */
const jwks = new WeakMap();

/** The public JWK `{ kty: 'OKP', crv: 'Ed25519', x }` of an Ed25519 public CryptoKey. */
export async function publicJwk(publicKey) {
  let jwk = jwks.get(publicKey);
  if (!jwk) {
    const raw = new Uint8Array(await crypto.subtle.exportKey('raw', publicKey));
    if (raw.length !== 32) throw new TypeError('DPoP proofs need an Ed25519 key');
    jwk = Object.freeze({ kty: 'OKP', crv: 'Ed25519', x: base64url(raw) });
    jwks.set(publicKey, jwk);
  }
  return jwk;
}

/** The members RFC 7638 hashes, per key type, in the order it wants them (lexicographic). */
const THUMBPRINT_MEMBERS = { OKP: ['crv', 'kty', 'x'], EC: ['crv', 'kty', 'x', 'y'], RSA: ['e', 'kty', 'n'] };

/** RFC 7638 JWK thumbprint (SHA-256, base64url): what a bound token names in `cnf.jkt`. */
export async function jwkThumbprint(jwk) {
  const members = THUMBPRINT_MEMBERS[jwk?.kty];
  if (!members) throw new TypeError(`jwkThumbprint: unsupported kty ${JSON.stringify(jwk?.kty)}`);
  const parts = members.map((m) => {
    if (typeof jwk[m] !== 'string') throw new TypeError(`jwkThumbprint: the JWK has no ${m}`);
    return `${JSON.stringify(m)}:${JSON.stringify(jwk[m])}`;
  });
  return base64url(await sha256(utf8(`{${parts.join(',')}}`)));
}

/** `ath`: base64url SHA-256 of the access token's ASCII. */
export async function accessTokenHash(token) {
  return base64url(await sha256(utf8(token)));
}

/** The `htu` of a request URL: absolute, without query and fragment. */
export function htuOf(url) {
  const u = new URL(url, globalThis.location?.href);
  u.search = '';
  u.hash = '';
  return u.href;
}

/**
 * A DPoP proof (JWS compact) for one request, signed by `keyPair.privateKey` (which
 * may be non-extractable): `htm` the method, `htu` the URL it goes to (query and
 * fragment are dropped), `token` the access token it accompanies (adds `ath`),
 * `nonce` the server's last `DPoP-Nonce`. `jti` and `iat` (seconds) are for tests.
 */
export async function dpopProof(keyPair, { htm, htu, token, nonce, jti, iat } = {}) {
  if (!keyPair?.privateKey || !keyPair?.publicKey) throw new TypeError('dpopProof needs a key pair { publicKey, privateKey }');
  if (typeof htm !== 'string' || !htm) throw new TypeError('dpopProof needs htm (the request method)');
  if (typeof htu !== 'string' || !htu) throw new TypeError('dpopProof needs htu (the request URL)');
  const header = { typ: 'dpop+jwt', alg: 'EdDSA', jwk: await publicJwk(keyPair.publicKey) };
  const payload = {
    jti: jti ?? base64url(crypto.getRandomValues(new Uint8Array(JTI_BYTES))),
    htm,
    htu: htuOf(htu),
    iat: iat ?? Math.floor(Date.now() / 1000),
  };
  if (token !== undefined && token !== null) payload.ath = await accessTokenHash(token);
  if (nonce !== undefined && nonce !== null) payload.nonce = nonce;
  const input = `${b64urlJson(header)}.${b64urlJson(payload)}`;
  const sig = await crypto.subtle.sign('Ed25519', keyPair.privateKey, utf8(input));
  return `${input}.${base64url(new Uint8Array(sig))}`;
}

/** The `cnf.jkt` of an access token (read, not verified), or null when it is not key-bound. */
export function boundThumbprint(token) {
  try {
    const payload = JSON.parse(new TextDecoder().decode(fromBase64url(String(token).split('.')[1])));
    const jkt = payload?.cnf?.jkt;
    return typeof jkt === 'string' && jkt ? jkt : null;
  } catch {
    return null;
  }
}

// ---- server nonces ---------------------------------------------------------------------

const MAX_ORIGINS = 64;
/** The last `DPoP-Nonce` each origin sent (ws: and wss: URLs count as http: and https:). */
const nonces = new Map();

const originOf = (url) => {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  return u.origin;
};

/** The nonce to put into the next proof for `url`, if its origin handed one out. */
export function dpopNonceFor(url) {
  return nonces.get(originOf(url));
}

/** Remembers the `DPoP-Nonce` of a response from `url` (the latest one wins). */
export function rememberDpopNonce(url, headers) {
  const nonce = headers?.get?.('DPoP-Nonce');
  if (!nonce) return;
  const origin = originOf(url);
  nonces.delete(origin);
  nonces.set(origin, nonce);
  if (nonces.size > MAX_ORIGINS) nonces.delete(nonces.keys().next().value);
}

/**
 * Whether a response asks for a proof with a (new) nonce: 400 or 401 with a
 * `DPoP-Nonce` header and the error `use_dpop_nonce`, in the JSON body (`data`) or in
 * `WWW-Authenticate`.
 */
export function wantsDpopNonce(res, data) {
  if ((res.status !== 400 && res.status !== 401) || !res.headers.get('DPoP-Nonce')) return false;
  if (data?.error === 'use_dpop_nonce') return true;
  return /\berror="use_dpop_nonce"/.test(res.headers.get('WWW-Authenticate') ?? '');
}
