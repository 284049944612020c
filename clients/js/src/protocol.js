// keygate's wire protocol as a browser (or Node ≥ 20) speaks it to a Provider: the
// sign-in handshake over WebSocket with an HTTP fallback, and the user endpoints
// (refresh, whoami, sessions, logout). What goes out is only the identity, the
// challenge, the signature, the request options, tokens and DPoP proofs; the private
// key never leaves WebCrypto.
//
// Every function takes `baseUrl` (default: the page's own origin, by relative URLs)
// and, for key-bound (DPoP) tokens, `dpop`: the key pair the token is bound to.

import { base64url, fromBase64url } from './identity.js';
import { KeygateError, ChallengeRefused, SignInCancelled } from './errors.js';
import { dpopProof, boundThumbprint, dpopNonceFor, rememberDpopNonce, wantsDpopNonce } from './dpop.js';

const CHALLENGE_HEADER = 'keygate sign-in challenge v1';
const CHALLENGE_FIELDS = ['audience', 'identity', 'nonce', 'issued-at', 'expires-at'];
const WS_OPEN_TIMEOUT_MS = 5000;
const WS_REPLY_TIMEOUT_MS = 20000;

/** The WebSocket could not be opened at all (blocked, refused, no support). */
class SocketUnavailable extends Error {}

/** Splits a v1 challenge into its fields, or returns null when it is not one. */
export function parseChallenge(text) {
  if (typeof text !== 'string') return null;
  const lines = text.split('\n');
  if (lines.length !== CHALLENGE_FIELDS.length + 1 || lines[0] !== CHALLENGE_HEADER) return null;
  const fields = {};
  for (const [i, name] of CHALLENGE_FIELDS.entries()) {
    const prefix = `${name}: `;
    if (!lines[i + 1].startsWith(prefix)) return null;
    fields[name] = lines[i + 1].slice(prefix.length);
  }
  return fields;
}

/**
 * What the client checks before it signs: the audience must be exactly the expected
 * origin and the identity exactly ours, which is what stops a phishing site from
 * relaying another site's challenge. The deadline runs on the challenge's own
 * lifetime (expires-at minus issued-at) from the moment it arrived, so a wrong clock
 * on this computer does not matter.
 */
export function inspectChallenge(text, { origin, identity, receivedAt = Date.now() }) {
  const fields = parseChallenge(text);
  if (!fields) {
    return {
      text, fields: null, deadline: receivedAt,
      checks: [{ ok: false, label: 'Format', problem: 'This is not a keygate v1 sign-in challenge.' }],
    };
  }
  const lifetime = Date.parse(fields['expires-at']) - Date.parse(fields['issued-at']);
  const deadline = receivedAt + (Number.isFinite(lifetime) && lifetime > 0 ? lifetime : 0);
  const checks = [
    {
      ok: fields.audience === origin, label: 'Audience', value: fields.audience,
      problem: `It is meant for ${JSON.stringify(fields.audience)}, but this page is ${origin}. ` +
        'Signing it could sign you in somewhere else, so the page refused.',
    },
    {
      ok: fields.identity === identity, label: 'Identity', value: fields.identity,
      problem: 'It names an identity that is not yours, so the page refused to sign it.',
    },
  ];
  return { text, fields, deadline, checks };
}

/** base64url Ed25519 signature of the UTF-8 text. */
export async function signText(privateKey, text) {
  const sig = await crypto.subtle.sign('Ed25519', privateKey, new TextEncoder().encode(text));
  return base64url(new Uint8Array(sig));
}

const defaultOrigin = (baseUrl) => (baseUrl ? new URL(baseUrl).origin : globalThis.location?.origin);

/** The token request options as the wire spells them; absent ones are left out. */
export function tokenOptions({ clientId, offline, scope, sessionId, expiration }) {
  const o = {};
  if (clientId !== undefined) o.client_id = clientId;
  if (offline) o.access_type = 'offline';
  if (scope !== undefined) o.scope = Array.isArray(scope) ? scope.join(' ') : scope;
  if (expiration !== undefined) o.expiration = expiration;
  if (sessionId !== undefined) o.session_id = sessionId;
  return o;
}

/** The token body, with the fields every surface may leave out made explicit. */
const tokenBody = (t) => ({
  token: t.token ?? t.value, token_type: t.token_type, expires_at: t.expires_at, expires_in: t.expires_in,
  session_id: t.session_id, refresh_token: t.refresh_token ?? null, mfa_required: t.mfa_required === true,
});

/**
 * Signs in with the key pair over WebSocket (`transport: 'ws'`), HTTP (`'http'`), or
 * WebSocket falling back to HTTP when a socket cannot be opened (`'auto'`, the
 * default). `approve(challenge)` may show the checked challenge to the person and
 * resolves to true (sign) or false (cancel); by default it signs. A challenge whose
 * audience is not `origin` or whose identity is not ours is never signed.
 * `sessionId` renews that session by signature instead of starting a new one.
 * `dpop: true` asks for a token bound to this key (RFC 9449): the sign-in carries a
 * DPoP proof made with it (so it needs `keyPair`, or `publicKey` with `privateKey`),
 * and the server answers `token_type: 'DPoP'` when it bound the token.
 */
export async function signIn({
  identity, keyPair, privateKey = keyPair?.privateKey, publicKey = keyPair?.publicKey, dpop = false,
  approve = () => true, baseUrl, origin = defaultOrigin(baseUrl),
  transport = 'auto', clientId, offline = false, scope, sessionId, expiration,
}) {
  if (!['ws', 'http', 'auto'].includes(transport)) throw new TypeError(`transport: ${transport}`);
  if (offline && clientId === undefined) throw new TypeError('offline sign-in needs a clientId');
  if (!privateKey) throw new TypeError('signIn needs privateKey (or keyPair)');
  if (dpop && !publicKey) throw new TypeError('a DPoP sign-in needs the public key too: pass keyPair');
  const ctx = {
    identity, privateKey, approve, origin, baseUrl, options: tokenOptions({ clientId, offline, scope, sessionId, expiration }),
    dpop: dpop ? { privateKey, publicKey } : null,
  };
  if (transport !== 'http') {
    try {
      return { ...(await signInOverSocket(ctx)), via: 'WebSocket' };
    } catch (err) {
      if (!(err instanceof SocketUnavailable)) throw err;
      if (transport === 'ws') throw new KeygateError('network', err.message);
    }
  }
  return { ...(await signInOverHttp(ctx)), via: 'HTTP' };
}

/** Renews a session by signing a fresh challenge (no refresh token needed). */
export const renew = (options) => {
  if (!options.sessionId) throw new TypeError('renew needs the sessionId to renew');
  return signIn(options);
};

async function decide(ctx, challenge, aborted = new Promise(() => {})) {
  if (!challenge.checks.every((c) => c.ok)) throw new ChallengeRefused(challenge);
  const yes = await Promise.race([ctx.approve(challenge), aborted]);
  if (!yes) throw new SignInCancelled();
  return signText(ctx.privateKey, challenge.text);
}

async function signInOverSocket(ctx) {
  const url = new URL('/ws/userauth', ctx.baseUrl ?? globalThis.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = await Socket.open(url.href);
  try {
    socket.send({ type: 'token', pubkey: ctx.identity, ...ctx.options, ...(ctx.dpop && { dpop: true }) });
    const offer = await socket.expect('challenge');
    const challenge = inspectChallenge(offer.value, { origin: ctx.origin, identity: ctx.identity });
    const sig = await decide(ctx, challenge, socket.failed);
    const frame = { type: 'challenge', sig };
    // The proof of a socket sign-in: GET on the socket's own URL (ws: or wss:).
    if (ctx.dpop) frame.dpop = await dpopProof(ctx.dpop, { htm: 'GET', htu: url.href, nonce: dpopNonceFor(url.href) });
    socket.send(frame);
    return tokenBody(await socket.expect('token'));
  } finally {
    socket.close();
  }
}

async function signInOverHttp(ctx) {
  const opts = { baseUrl: ctx.baseUrl };
  const offer = await call('GET', `/api/token?id=${encodeURIComponent(ctx.identity)}`, opts);
  const challenge = inspectChallenge(offer?.challenge, { origin: ctx.origin, identity: ctx.identity });
  const sig = await decide(ctx, challenge);
  const body = { id: ctx.identity, challenge: challenge.text, sig, ...ctx.options };
  return tokenBody(await call('POST', '/api/token', { ...opts, body, dpop: ctx.dpop ?? undefined }));
}

/** A WebSocket read as a queue of JSON messages; an error frame or a close fails it. */
class Socket {
  static open(url) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (err) {
        reject(new SocketUnavailable(String(err)));
        return;
      }
      const timer = setTimeout(() => { ws.close(); reject(new SocketUnavailable('timed out')); }, WS_OPEN_TIMEOUT_MS);
      ws.onopen = () => { clearTimeout(timer); resolve(new Socket(ws)); };
      ws.onerror = ws.onclose = () => { clearTimeout(timer); reject(new SocketUnavailable('could not connect')); };
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.inbox = [];
    this.waiting = null;
    this.error = null;
    this.failed = new Promise((_, reject) => { this.fail = reject; });
    this.failed.catch(() => {});
    ws.onerror = null;
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        msg = { type: 'error', code: 'bad_response', message: 'The server sent something that is not JSON.' };
      }
      if (msg?.type === 'error') this.stop(new KeygateError(msg.code, msg.message));
      else this.deliver(msg);
    };
    ws.onclose = (ev) => {
      const code = ev.code === 1009 ? 'message_too_large' : 'connection_lost';
      this.stop(new KeygateError(code, ev.reason || `socket closed (${ev.code})`));
    };
  }

  deliver(msg) {
    if (this.waiting) this.waiting.resolve(msg);
    else this.inbox.push(msg);
  }

  stop(err) {
    if (this.error) return; // the first reason (usually the error frame) wins over the close
    this.error = err;
    this.fail(err);
    if (this.waiting) this.waiting.reject(err);
  }

  send(msg) {
    if (this.error) throw this.error;
    this.ws.send(JSON.stringify(msg));
  }

  /** The next message, which must be of `type`. */
  async expect(type) {
    let msg = this.inbox.shift();
    if (!msg) {
      if (this.error) throw this.error;
      msg = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new KeygateError('timeout', `no ${type} from the server`)), WS_REPLY_TIMEOUT_MS);
        this.waiting = {
          resolve: (m) => { clearTimeout(timer); resolve(m); },
          reject: (e) => { clearTimeout(timer); reject(e); },
        };
      }).finally(() => { this.waiting = null; });
    }
    if (msg?.type !== type) throw new KeygateError('bad_response', `expected a ${type} message, got ${msg?.type}`);
    return msg;
  }

  close() {
    this.ws.onclose = null;
    this.stop(new KeygateError('closed', 'closed by the client'));
    if (this.ws.readyState <= 1) this.ws.close(1000);
  }
}

/**
 * The headers that authorize a request. This is the one place a request gets its
 * credentials: `Authorization: Bearer <token>` for a token that is not key-bound;
 * for a key-bound token (`cnf.jkt`) `Authorization: DPoP <token>` and a fresh `DPoP`
 * proof by `dpop` (htm the method, htu the URL, ath the token's hash, the origin's
 * last nonce); with `dpop` and no token (sign-in, refresh) the proof alone.
 */
async function authorization({ token, dpop, method, url }) {
  const bound = Boolean(token) && boundThumbprint(token) !== null;
  if (token && !bound) return { Authorization: `Bearer ${token}` };
  if (token && !dpop) throw new TypeError('this access token is key-bound (DPoP): pass { dpop: keyPair } to use it');
  if (!dpop) return {};
  const proof = await dpopProof(dpop, { htm: method, htu: url, token: token || undefined, nonce: dpopNonceFor(url) });
  return token ? { Authorization: `DPoP ${token}`, DPoP: proof } : { DPoP: proof };
}

/** The response's JSON body, or null (a proxy's error page, say: judged by the status). */
async function jsonOf(res) {
  const text = await res.text().catch(() => '');
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/**
 * One JSON request; failures become KeygateErrors with the server's code. With
 * `dpop`, a server that asks for a nonce (`use_dpop_nonce`) gets one retry with it.
 */
export async function call(method, path, { body, token, baseUrl, headers: extra, dpop } = {}) {
  const url = baseUrl ? new URL(path, baseUrl).href : path;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const send = async () => {
    const headers = { Accept: 'application/json', ...(await authorization({ token, dpop, method, url })), ...extra };
    if (payload !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(url, { method, headers, body: payload, cache: 'no-store', credentials: 'omit', redirect: 'error' });
    } catch (err) {
      throw new KeygateError('network', String(err));
    }
    rememberDpopNonce(url, res.headers);
    return [res, await jsonOf(res)];
  };
  let [res, data] = await send();
  if (dpop && wantsDpopNonce(res, data)) [res, data] = await send();
  if (!res.ok) {
    const code = data?.error ?? (res.status === 429 ? 'rate_limited' : res.status >= 500 ? 'unavailable' : `http_${res.status}`);
    throw new KeygateError(code, data?.message ?? `${res.status} ${res.statusText}`, {
      status: res.status, retryAfter: res.headers.get('Retry-After'),
    });
  }
  return data;
}

/**
 * `fetch` for the app's own API with the access token: `Authorization: Bearer`, or
 * for a key-bound token `Authorization: DPoP` with a fresh proof by `dpop` (the
 * method and the absolute URL, without query). Answers as fetch does (a Response);
 * when the server asks for a DPoP nonce it is retried once with it, so a `body` must
 * be one fetch can send twice (not a stream).
 */
export async function authorizedFetch(token, url, { dpop, headers, ...init } = {}) {
  const target = new URL(url, globalThis.location?.href).href;
  const method = (init.method ?? 'GET').toUpperCase();
  const send = async () => {
    const h = new Headers(headers);
    for (const [name, value] of Object.entries(await authorization({ token, dpop, method, url: target }))) h.set(name, value);
    const res = await fetch(target, { ...init, method, headers: h });
    rememberDpopNonce(target, res.headers);
    return res;
  };
  const res = await send();
  if (!dpop || !token || boundThumbprint(token) === null) return res;
  if ((res.status !== 400 && res.status !== 401) || !res.headers.get('DPoP-Nonce')) return res;
  const data = await res.clone().json().catch(() => null);
  return wantsDpopNonce(res, data) ? send() : res;
}

/** Spends the refresh token for a new token body (and, usually, a new refresh token). */
/** With `dpop` (the key pair of a key-bound session) the refresh carries a proof by it. */
export const refresh = (refreshToken, { clientId, baseUrl, dpop } = {}) =>
  call('POST', '/v1/token/refresh', { baseUrl, dpop, body: { refresh_token: refreshToken, client_id: clientId } })
    .then(tokenBody);
export const whoami = (token, { baseUrl, dpop } = {}) => call('GET', '/v1/whoami', { token, baseUrl, dpop });
export const listSessions = (token, { baseUrl, dpop } = {}) => call('GET', '/v1/sessions', { token, baseUrl, dpop });
export const revokeSession = (token, sid, { baseUrl, dpop } = {}) =>
  call('DELETE', `/v1/sessions/${encodeURIComponent(sid)}`, { token, baseUrl, dpop });
/** `scope`: 'local' (this session), 'others' (every other one), 'global' (all). */
export const logout = (token, scope = 'local', { baseUrl, dpop } = {}) =>
  call('POST', '/v1/logout', { token, baseUrl, dpop, body: { scope } });
/** Turns a brokered token id (from the app backend) into a token body. */
export const exchangeBrokerToken = (tokenId, { baseUrl } = {}) =>
  call('POST', '/v1/session-tokens', { baseUrl, body: { token_id: tokenId } }).then(tokenBody);

/** Header and claims of a JWS compact token, unverified (for display only). */
export function decodeJwt(token) {
  const part = (s) => JSON.parse(new TextDecoder().decode(fromBase64url(s)));
  const [header, payload] = token.split('.');
  return { header: part(header), payload: part(payload) };
}
