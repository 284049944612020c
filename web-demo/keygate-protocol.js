// Generated from clients/js/src/protocol.js (package keygate-client) by
// clients/js/scripts/vendor.js: edit the package and run that script, not this file.

// keygate's wire protocol as a browser (or Node ≥ 20) speaks it to a Provider: the
// sign-in handshake over WebSocket with an HTTP fallback, and the user endpoints
// (refresh, whoami, sessions, logout). What goes out is only the identity, the
// challenge, the signature, the request options and tokens; the private key never
// leaves WebCrypto.
//
// Every function takes `baseUrl` (default: the page's own origin, by relative URLs).

import { base64url, fromBase64url } from './keygate-identity.js';
import { KeygateError, ChallengeRefused, SignInCancelled } from './keygate-errors.js';

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
 */
export async function signIn({
  identity, privateKey, approve = () => true, baseUrl, origin = defaultOrigin(baseUrl),
  transport = 'auto', clientId, offline = false, scope, sessionId, expiration,
}) {
  if (!['ws', 'http', 'auto'].includes(transport)) throw new TypeError(`transport: ${transport}`);
  if (offline && clientId === undefined) throw new TypeError('offline sign-in needs a clientId');
  const ctx = { identity, privateKey, approve, origin, baseUrl, options: tokenOptions({ clientId, offline, scope, sessionId, expiration }) };
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
    socket.send({ type: 'token', pubkey: ctx.identity, ...ctx.options });
    const offer = await socket.expect('challenge');
    const challenge = inspectChallenge(offer.value, { origin: ctx.origin, identity: ctx.identity });
    const sig = await decide(ctx, challenge, socket.failed);
    socket.send({ type: 'challenge', sig });
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
  return tokenBody(await call('POST', '/api/token', { ...opts, body }));
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
 * The headers that authorize a request with an access token. This is the one place
 * a request gets its credentials: when keygate adopts DPoP (RFC 9449), the proof for
 * each request, signed with the same non-extractable key, belongs here (it needs the
 * method and URL, which is why both are passed), and nowhere else.
 */
function authorization(token, _method, _url) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** One JSON request; failures become KeygateErrors with the server's code. */
export async function call(method, path, { body, token, baseUrl, headers: extra } = {}) {
  const url = baseUrl ? new URL(path, baseUrl).href : path;
  const headers = { Accept: 'application/json', ...authorization(token, method, url), ...extra };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store', credentials: 'omit', redirect: 'error',
    });
  } catch (err) {
    throw new KeygateError('network', String(err));
  }
  const text = await res.text().catch(() => '');
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: a proxy's error page, say; judged by the status below
  }
  if (!res.ok) {
    const code = data?.error ?? (res.status === 429 ? 'rate_limited' : res.status >= 500 ? 'unavailable' : `http_${res.status}`);
    throw new KeygateError(code, data?.message ?? `${res.status} ${res.statusText}`, {
      status: res.status, retryAfter: res.headers.get('Retry-After'),
    });
  }
  return data;
}

/** Spends the refresh token for a new token body (and, usually, a new refresh token). */
export const refresh = (refreshToken, { clientId, baseUrl } = {}) =>
  call('POST', '/v1/token/refresh', { baseUrl, body: { refresh_token: refreshToken, client_id: clientId } })
    .then(tokenBody);
export const whoami = (token, { baseUrl } = {}) => call('GET', '/v1/whoami', { token, baseUrl });
export const listSessions = (token, { baseUrl } = {}) => call('GET', '/v1/sessions', { token, baseUrl });
export const revokeSession = (token, sid, { baseUrl } = {}) =>
  call('DELETE', `/v1/sessions/${encodeURIComponent(sid)}`, { token, baseUrl });
/** `scope`: 'local' (this session), 'others' (every other one), 'global' (all). */
export const logout = (token, scope = 'local', { baseUrl } = {}) =>
  call('POST', '/v1/logout', { token, baseUrl, body: { scope } });
/** Turns a brokered token id (from the app backend) into a token body. */
export const exchangeBrokerToken = (tokenId, { baseUrl } = {}) =>
  call('POST', '/v1/session-tokens', { baseUrl, body: { token_id: tokenId } }).then(tokenBody);

/** Header and claims of a JWS compact token, unverified (for display only). */
export function decodeJwt(token) {
  const part = (s) => JSON.parse(new TextDecoder().decode(fromBase64url(s)));
  const [header, payload] = token.split('.');
  return { header: part(header), payload: part(payload) };
}
