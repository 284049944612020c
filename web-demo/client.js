// keygate's wire protocol (docs/protocol.md) as the browser speaks it, always to the page's
// own origin: the sign-in handshake over WebSocket with an HTTP fallback, and the
// session endpoints. What goes out is only the identity, the challenge, the signature
// and tokens; the private key never leaves WebCrypto.

import { base64url } from './identity.js';

export const CLIENT_ID = 'web-demo';
const CHALLENGE_HEADER = 'keygate sign-in challenge v1';
const CHALLENGE_FIELDS = ['audience', 'identity', 'nonce', 'issued-at', 'expires-at'];
const WS_OPEN_TIMEOUT_MS = 5000;
const WS_REPLY_TIMEOUT_MS = 20000;

/** An error the server answered with (or "network" when it could not be reached). */
export class KeygateError extends Error {
  constructor(code, message, { status = null, retryAfter = null } = {}) {
    super(message || code);
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** The page would not sign: the challenge is for another site or another identity. */
export class ChallengeRefused extends Error {
  constructor(challenge) {
    super(challenge.checks.filter((c) => !c.ok).map((c) => c.problem).join(' '));
    this.challenge = challenge;
  }
}

/** The person chose not to sign. */
export class SignInCancelled extends Error {}

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
 * What the page checks before it signs: the audience must be exactly this page's
 * origin and the identity exactly ours, which is what stops a phishing site from
 * relaying another site's challenge. The countdown runs on the challenge's own
 * lifetime (expires-at minus issued-at) from the moment it arrived, so a wrong
 * clock in this computer does not matter.
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

const isAcceptable = (challenge) => challenge.checks.every((c) => c.ok);

export async function signText(privateKey, text) {
  const sig = await crypto.subtle.sign('Ed25519', privateKey, new TextEncoder().encode(text));
  return base64url(new Uint8Array(sig));
}

/**
 * Signs in with the key pair: over WebSocket, or over HTTP when a socket cannot be
 * opened. `approve(challenge)` shows the checked challenge to the person and resolves
 * to true (sign) or false (cancel).
 */
export async function signIn({ identity, privateKey, approve, origin = location.origin }) {
  const ctx = { identity, privateKey, approve, origin };
  try {
    return { ...(await signInOverSocket(ctx)), via: 'WebSocket' };
  } catch (err) {
    if (!(err instanceof SocketUnavailable)) throw err;
  }
  return { ...(await signInOverHttp(ctx)), via: 'HTTP' };
}

async function decide(ctx, challenge, aborted = new Promise(() => {})) {
  if (!isAcceptable(challenge)) throw new ChallengeRefused(challenge);
  const yes = await Promise.race([ctx.approve(challenge), aborted]);
  if (!yes) throw new SignInCancelled('Sign-in cancelled.');
  return signText(ctx.privateKey, challenge.text);
}

async function signInOverSocket(ctx) {
  const url = new URL('/ws/userauth', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = await Socket.open(url.href);
  try {
    socket.send({ type: 'token', pubkey: ctx.identity, client_id: CLIENT_ID, access_type: 'offline' });
    const offer = await socket.expect('challenge');
    const challenge = inspectChallenge(offer.value, { origin: ctx.origin, identity: ctx.identity });
    const sig = await decide(ctx, challenge, socket.failed);
    socket.send({ type: 'challenge', sig });
    const token = await socket.expect('token');
    return {
      token: token.value, token_type: token.token_type, expires_at: token.expires_at,
      expires_in: token.expires_in, session_id: token.session_id, refresh_token: token.refresh_token ?? null,
    };
  } finally {
    socket.close();
  }
}

async function signInOverHttp(ctx) {
  const offer = await call('GET', `/api/token?id=${encodeURIComponent(ctx.identity)}`);
  const challenge = inspectChallenge(offer.challenge, { origin: ctx.origin, identity: ctx.identity });
  const sig = await decide(ctx, challenge);
  const token = await call('POST', '/api/token', {
    body: { id: ctx.identity, challenge: challenge.text, sig, client_id: CLIENT_ID, access_type: 'offline' },
  });
  return { ...token, refresh_token: token.refresh_token ?? null };
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
      if (msg.type === 'error') this.stop(new KeygateError(msg.code, msg.message));
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
    if (msg.type !== type) throw new KeygateError('bad_response', `expected a ${type} message, got ${msg.type}`);
    return msg;
  }

  close() {
    this.ws.onclose = null;
    this.stop(new KeygateError('closed', 'closed by the page'));
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}

/** One JSON request to the page's own origin; failures become KeygateErrors. */
export async function call(method, path, { body, token } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, {
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

export const refresh = (refreshToken) =>
  call('POST', '/v1/token/refresh', { body: { refresh_token: refreshToken, client_id: CLIENT_ID } });
export const whoami = (token) => call('GET', '/v1/whoami', { token });
export const listSessions = (token) => call('GET', '/v1/sessions', { token });
export const revokeSession = (token, sid) => call('DELETE', `/v1/sessions/${encodeURIComponent(sid)}`, { token });
export const logout = (token, scope) => call('POST', '/v1/logout', { token, body: { scope } });

/** Header and claims of a JWS compact token, unverified (for display only). */
export function decodeJwt(token) {
  const part = (s) => {
    const b64 = s.replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  };
  const [header, payload] = token.split('.');
  return { header: part(header), payload: part(payload) };
}
