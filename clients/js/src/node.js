// keygate-client for app backends (Node ≥ 20): the Hub's API-key endpoints with
// HMAC-signed requests, and a token verifier (JWKS with a bounded kid refetch, the
// revocation feed over WebSocket). Uses node:crypto for the HMAC and WebCrypto for
// Ed25519; no other dependency. Node 20 has no global WebSocket: run it with
// --experimental-websocket, or pass `WebSocket` (e.g. from the `ws` package); Node ≥ 22
// has it.

import { createHmac } from 'node:crypto';
import { KeygateError } from './errors.js';
import { base32Lower, fromBase32Lower, fromBase64url } from './identity.js';
import { call, inspectChallenge, signText, tokenOptions } from './protocol.js';

export * from './index.js';

const rfc3339 = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The 32 secret bytes of an API secret as `keygate keys create` prints it (multibase `b…`). */
export function apiSecretBytes(secret) {
  const bytes = typeof secret === 'string' && secret.startsWith('b') ? fromBase32Lower(secret.trim().slice(1)) : null;
  if (!bytes || bytes.length !== 32) throw new TypeError('the API secret must be the multibase base32 string keygate printed');
  return bytes;
}

/**
 * The three headers that authenticate an app backend to the Hub: the key id, an
 * RFC 3339 expiry (`msg`), and `b` + base32-lower of HMAC-SHA256(secret bytes, msg).
 * `ttlSeconds` is how long the signature is valid (the Hub takes at most an hour).
 */
export function apiKeyHeaders({ keyId, secret, ttlSeconds = 60, now = Date.now() }) {
  const msg = rfc3339(now + ttlSeconds * 1000);
  const mac = createHmac('sha256', apiSecretBytes(secret)).update(msg, 'utf8').digest();
  return {
    'x-keygate-api-key': keyId,
    'x-keygate-api-sig-msg': msg,
    'x-keygate-api-sig': 'b' + base32Lower(mac),
  };
}

/** The Hub as an app backend calls it, every request signed with the app's API key. */
export class HubClient {
  #keyId;
  #secret;

  constructor({ url, keyId, secret }) {
    this.url = new URL(url).origin;
    this.#keyId = keyId;
    this.#secret = secret;
    apiSecretBytes(secret); // fail now, not at the first request
  }

  #call(method, path, body) {
    const headers = apiKeyHeaders({ keyId: this.#keyId, secret: this.#secret });
    return call(method, path, { baseUrl: this.url, body, headers });
  }

  /** A sign-in challenge for a user's identity; `audience` is your app's origin (default: the key id). */
  challenge(identity, { audience } = {}) {
    return this.#call('POST', '/v1/challenge', { pubkey: identity, ...(audience !== undefined && { audience }) });
  }

  /**
   * Redeems a challenge the user signed: the token body for that user. `dpop: true`
   * asks the Hub for a token bound to the user's key (`cnf.jkt`, token_type DPoP);
   * ask for it only after checking, at your own endpoint, the user's DPoP proof by
   * that key.
   */
  token({ identity, challenge, sig, dpop, ...options }) {
    return this.#call('POST', '/v1/token', { pubkey: identity, challenge, sig, ...tokenOptions(options), ...(dpop && { dpop: true }) });
  }

  /**
   * Challenge, sign and redeem for a key this process holds (a service account, a
   * test): the challenge must name this identity and `audience` before it is signed.
   */
  async signInUser({ identity, privateKey, audience, ...options }) {
    const { challenge } = await this.challenge(identity, { audience });
    const checked = inspectChallenge(challenge, { origin: audience ?? this.#keyId, identity });
    if (!checked.checks.every((c) => c.ok)) throw new KeygateError('invalid_challenge', 'the Hub sent a challenge for another audience or identity');
    return this.token({ identity, challenge, sig: await signText(privateKey, challenge), ...options });
  }

  /** A one-time token id that a user's client exchanges at POST /v1/session-tokens. */
  brokerToken({ endpointId, role, ttl }) {
    return this.#call('POST', '/v1/broker/tokens', { endpoint_id: endpointId, role, ...(ttl !== undefined && { ttl }) });
  }

  /** RFC 7662 introspection: `{ active: true, …claims }` or `{ active: false }`. */
  introspect(token) {
    return this.#call('POST', '/v1/introspect', { token });
  }

  /** Revocations after `since` (a cursor): `{ revocations: [{ seq, session_id, revoked_at, expires_at }], cursor }`. */
  revocations(since = 0) {
    return call('GET', `/v1/revocations?since=${encodeURIComponent(since)}`, { baseUrl: this.url });
  }

  jwks() {
    return call('GET', '/.well-known/jwks.json', { baseUrl: this.url });
  }
}

const fail = (code, message, status = 401) => { throw new KeygateError(code, message, { status }); };

/**
 * Verifies the Hub's access tokens offline: EdDSA signature against the JWKS (read
 * again when a token names an unknown kid, at most once per `refetchIntervalMs`, so
 * made-up kids cannot make it hammer the Hub), `typ` at+jwt, `exp`/`nbf` with
 * `leewaySeconds`, optionally `iss` and `aud`, and, once followRevocations() runs,
 * that the session is not revoked. The JWKS is also read again when the copy is older
 * than `keysMaxAgeMs` (5 min), so keys the Hub retired stop being accepted.
 */
export class TokenVerifier {
  #hub;
  #keys = new Map();
  #lastFetch = -Infinity;
  #fetching = null;
  #revoked = new Map(); // sid -> expires_at (s)
  #cursor = 0;
  #feed = null;

  constructor({
    hubUrl, issuer, audience, leewaySeconds = 60, refetchIntervalMs = 5000, keysMaxAgeMs = 300_000, now = () => Date.now(),
  }) {
    this.#hub = new URL(hubUrl).origin;
    this.issuer = issuer;
    this.audience = audience === undefined ? undefined : [audience].flat();
    this.leeway = Math.min(leewaySeconds, 60);
    this.refetchIntervalMs = refetchIntervalMs;
    this.keysMaxAgeMs = keysMaxAgeMs;
    this.now = now;
    this.jwksFetches = 0; // how many times the JWKS was read (for monitoring and tests)
  }

  async #fetchKeys() {
    this.#fetching ??= (async () => {
      this.#lastFetch = this.now();
      this.jwksFetches += 1;
      const { keys } = await call('GET', '/.well-known/jwks.json', { baseUrl: this.#hub });
      const next = new Map();
      for (const k of keys ?? []) {
        if (k.kty !== 'OKP' || k.crv !== 'Ed25519' || typeof k.kid !== 'string') continue;
        next.set(k.kid, await crypto.subtle.importKey('jwk', { kty: 'OKP', crv: 'Ed25519', x: k.x }, { name: 'Ed25519' }, false, ['verify']));
      }
      this.#keys = next;
    })().finally(() => { this.#fetching = null; });
    return this.#fetching;
  }

  async #key(kid) {
    const age = this.now() - this.#lastFetch;
    const unknown = !this.#keys.has(kid) && (this.#fetching || age >= this.refetchIntervalMs);
    if (unknown || age >= this.keysMaxAgeMs) await this.#fetchKeys();
    return this.#keys.get(kid) ?? fail('invalid_token', 'the token names a signing key the Hub does not publish');
  }

  /** The claims of a valid access token; otherwise a KeygateError with the protocol's code. */
  async verify(token) {
    if (typeof token !== 'string' || token.length > 8192) fail('invalid_token', 'malformed token');
    const parts = token.split('.');
    if (parts.length !== 3) fail('invalid_token', 'malformed token');
    let header;
    let claims;
    let sig;
    try {
      header = JSON.parse(new TextDecoder().decode(fromBase64url(parts[0])));
      claims = JSON.parse(new TextDecoder().decode(fromBase64url(parts[1])));
      sig = fromBase64url(parts[2]);
    } catch {
      fail('invalid_token', 'malformed token');
    }
    if (header?.alg !== 'EdDSA' || typeof header.kid !== 'string') fail('invalid_token', 'not an EdDSA token of this Hub');
    const key = await this.#key(header.kid);
    const signed = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
    if (!(await crypto.subtle.verify('Ed25519', key, sig, signed))) fail('invalid_token', 'bad signature');
    if (header.typ === 'mfa-pending+jwt') fail('mfa_required', 'this sign-in still needs its second factor', 403);
    if (header.typ !== 'at+jwt') fail('invalid_token', 'not an access token');
    const now = Math.floor(this.now() / 1000);
    if (typeof claims?.exp !== 'number' || claims.exp + this.leeway <= now) fail('token_expired', 'token expired');
    if (typeof claims.nbf === 'number' && claims.nbf - this.leeway > now) fail('invalid_token', 'token not yet valid');
    if (this.issuer !== undefined && claims.iss !== this.issuer) fail('invalid_token', 'token of another issuer');
    if (this.audience !== undefined && !this.audience.includes(claims.aud)) fail('invalid_token', 'token for another audience');
    if (this.isRevoked(claims.sid)) fail('session_revoked', 'session revoked');
    return claims;
  }

  /** Whether the feed has reported this session revoked. */
  isRevoked(sid) {
    return this.#revoked.has(sid);
  }

  #noteRevocation(e) {
    if (typeof e?.session_id !== 'string') return;
    this.#revoked.set(e.session_id, e.expires_at);
    if (typeof e.seq === 'number') this.#cursor = Math.max(this.#cursor, e.seq);
    if (this.#revoked.size > 10_000) { // bounded: forget sessions whose tokens have expired anyway
      const now = Math.floor(this.now() / 1000);
      for (const [sid, exp] of this.#revoked) if (exp + this.leeway <= now) this.#revoked.delete(sid);
    }
  }

  /**
   * Follows GET /v1/revocations/ws from the last cursor, reconnecting (1 s, doubling
   * to 30 s) when the socket drops. Resolves once the first connection is open.
   */
  followRevocations({ WebSocket: WS = globalThis.WebSocket, onError = () => {} } = {}) {
    if (typeof WS !== 'function') throw new TypeError('no WebSocket: use Node ≥ 22, --experimental-websocket, or pass WebSocket');
    if (this.#feed) return this.#feed.opened;
    const feed = { stopped: false, socket: null, timer: null, delay: 1000 };
    this.#feed = feed;
    feed.opened = new Promise((resolve) => {
      const connect = () => {
        if (feed.stopped) return;
        const url = new URL(`/v1/revocations/ws?since=${this.#cursor}`, this.#hub);
        url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
        const ws = new WS(url.href);
        feed.socket = ws;
        ws.onopen = () => { feed.delay = 1000; resolve(); };
        ws.onmessage = (ev) => {
          try {
            const msg = JSON.parse(String(ev.data));
            if (msg.type === 'revocation') this.#noteRevocation(msg);
          } catch (err) {
            onError(err);
          }
        };
        ws.onerror = (ev) => onError(ev?.error ?? new Error('revocation feed socket error'));
        ws.onclose = () => {
          if (feed.stopped) return;
          feed.timer = setTimeout(connect, feed.delay);
          feed.delay = Math.min(feed.delay * 2, 30_000);
        };
      };
      connect();
    });
    return feed.opened;
  }

  /** Stops following the feed. */
  close() {
    if (!this.#feed) return;
    this.#feed.stopped = true;
    clearTimeout(this.#feed.timer);
    this.#feed.socket?.close();
    this.#feed = null;
  }
}

/** The token of an `Authorization: Bearer …` header value, or null. */
export function bearerToken(header) {
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(header ?? '');
  return m ? m[1] : null;
}
