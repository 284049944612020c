// Accounts and second factors (docs/accounts.md): the account's keys with removal,
// linking another device by a link code, and raising a session with TOTP or another
// key of the account. Every function takes `{ baseUrl, dpop }` like protocol.js
// (`dpop`: the key pair a key-bound token is bound to).

import { call, signText, authorizedFetch } from './protocol.js';
import { base64url, fromBase64url } from './identity.js';

export const accountKeys = (token, { baseUrl, dpop } = {}) => call('GET', '/v1/account/keys', { token, baseUrl, dpop });
export const removeKey = (token, identity, { baseUrl, dpop } = {}) =>
  call('DELETE', `/v1/account/keys/${encodeURIComponent(identity)}`, { token, baseUrl, dpop });
export const linkChallenge = (token, identity, { baseUrl, dpop } = {}) =>
  call('POST', '/v1/account/link/challenge', { token, baseUrl, dpop, body: { identity } });
export const completeLink = (body, { baseUrl } = {}) => call('POST', '/v1/account/link', { body, baseUrl });
export const enrolTotp = (token, { baseUrl, dpop } = {}) => call('POST', '/v1/mfa/totp', { token, baseUrl, dpop });
export const verifyTotp = (token, code, { baseUrl, dpop } = {}) =>
  call('POST', '/v1/mfa/totp/verify', { token, baseUrl, dpop, body: { code } });
export const mfaChallenge = (token, identity, { baseUrl, dpop } = {}) =>
  call('POST', '/v1/mfa/challenge', { token, baseUrl, dpop, body: { identity } });
export const mfaKey = (token, { challenge, sig }, { baseUrl, dpop } = {}) =>
  call('POST', '/v1/mfa/key', { token, baseUrl, dpop, body: { challenge, sig } });
/** The account's security events, newest first (docs/audit.md): `{ events, next_before }`. */
export function accountEvents(token, { before, limit, baseUrl, dpop } = {}) {
  const query = new URLSearchParams();
  if (before !== undefined) query.set('before', String(before));
  if (limit !== undefined) query.set('limit', String(limit));
  const q = query.toString();
  return call('GET', `/v1/account/events${q ? `?${q}` : ''}`, { token, baseUrl, dpop });
}

const b64urlText = (s) => base64url(new TextEncoder().encode(s));
const unb64urlText = (s) => new TextDecoder().decode(fromBase64url(s));

/** The fields of a `keygate <kind> challenge v1` text, or null if it is not one. */
export function parseFields(text, header, lineCount) {
  const lines = String(text).split('\n');
  if (lines[0] !== header || lines.length !== lineCount) return null;
  const f = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(': ');
    if (i < 0) return null;
    f[line.slice(0, i)] = line.slice(i + 2);
  }
  return f;
}

/** The fields of a link challenge text, or null if it is not one. */
export const parseLinkChallenge = (text) => parseFields(text, 'keygate link challenge v1', 8);

/**
 * On the signed-in device: asks for a link challenge naming `newIdentity`, checks it
 * names this key (`identity`) and that one, and signs it: `{ challenge, sig }`.
 */
export async function signedLinkChallenge({ token, identity, privateKey, newIdentity, baseUrl, dpop }) {
  const { challenge } = await linkChallenge(token, newIdentity, { baseUrl, dpop });
  const f = parseLinkChallenge(challenge);
  if (!f || f.identity !== identity || f['new-identity'] !== newIdentity) {
    throw new Error('The server sent a link challenge for other keys; nothing was signed.');
  }
  return { challenge, sig: await signText(privateKey, challenge) };
}

/**
 * On the signed-in device: a signed link challenge for `newIdentity` (see above) as
 * the URL the new device opens (the code rides in the fragment, which browsers never
 * send to a server).
 */
export async function inviteUrl({ token, identity, privateKey, newIdentity, baseUrl, dpop, pageUrl = globalThis.location?.href }) {
  const { challenge, sig } = await signedLinkChallenge({ token, identity, privateKey, newIdentity: newIdentity.trim(), baseUrl, dpop });
  const code = b64urlText(JSON.stringify({ challenge, sig }));
  return new URL(`/#link=${code}`, pageUrl).href;
}

/** Reads a link code from a URL fragment (`#link=…`, default this page's), or null. */
export function linkCodeFromUrl(hash = globalThis.location?.hash) {
  const m = /^#link=([A-Za-z0-9_-]+)$/.exec(hash ?? '');
  if (!m) return null;
  try {
    const code = JSON.parse(unb64urlText(m[1]));
    const fields = parseLinkChallenge(code.challenge);
    return fields && typeof code.sig === 'string' ? { ...code, fields } : null;
  } catch {
    return null;
  }
}

/** On the new device: signs the link challenge with this device's key and links. */
export async function acceptLink({ code, identity, privateKey, label, baseUrl }) {
  if (code.fields['new-identity'] !== identity) {
    throw new Error('This link is for another key, not this browser’s.');
  }
  const newSig = await signText(privateKey, code.challenge);
  return completeLink({ challenge: code.challenge, sig: code.sig, new_sig: newSig, label }, { baseUrl });
}

/**
 * Raises the session of `token` with another key of the account (`identity`,
 * `privateKey`): asks for a step-up challenge, checks it names that key, signs it.
 * Resolves to the new token body. `dpop` is the key pair `token` is bound to (the
 * session's key, not the one that steps up).
 */
export async function stepUpWithKey({ token, identity, privateKey, baseUrl, dpop }) {
  const { challenge } = await mfaChallenge(token, identity, { baseUrl, dpop });
  const f = parseFields(challenge, 'keygate step-up challenge v1', 8);
  if (!f || f.identity !== identity) {
    throw new Error('The server sent a step-up challenge for another key; nothing was signed.');
  }
  return mfaKey(token, { challenge, sig: await signText(privateKey, challenge) }, { baseUrl, dpop });
}

/** A QR code of `text`, drawn by the server as SVG, as a data: URL for an <img>. */
export async function qrDataUrl(token, text, { baseUrl, dpop } = {}) {
  const res = await authorizedFetch(token, baseUrl ? new URL('/v1/qr', baseUrl).href : '/v1/qr', {
    method: 'POST', dpop,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ text }),
    cache: 'no-store', credentials: 'omit', redirect: 'error',
  });
  if (!res.ok) return null;
  const svg = await res.text();
  return `data:image/svg+xml;base64,${btoa(svg)}`;
}
