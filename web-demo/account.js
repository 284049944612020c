// The account card (docs/accounts.md): this account's keys with removal, adding
// another device by a link URL, accepting such a URL in this browser, and TOTP
// enrolment. Talks to this origin only, like the rest of the page.

import { call, signText } from './client.js';

export const accountKeys = (token) => call('GET', '/v1/account/keys', { token });
export const removeKey = (token, identity) =>
  call('DELETE', `/v1/account/keys/${encodeURIComponent(identity)}`, { token });
export const linkChallenge = (token, identity) =>
  call('POST', '/v1/account/link/challenge', { token, body: { identity } });
export const completeLink = (body) => call('POST', '/v1/account/link', { body });
export const enrolTotp = (token) => call('POST', '/v1/mfa/totp', { token });
export const verifyTotp = (token, code) => call('POST', '/v1/mfa/totp/verify', { token, body: { code } });

const b64url = (s) => btoa(String.fromCharCode(...new TextEncoder().encode(s)))
  .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const unb64url = (s) => {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
};

/** The fields of a link challenge text, or null if it is not one. */
export function parseLinkChallenge(text) {
  const lines = String(text).split('\n');
  if (lines[0] !== 'keygate link challenge v1' || lines.length !== 8) return null;
  const f = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(': ');
    if (i < 0) return null;
    f[line.slice(0, i)] = line.slice(i + 2);
  }
  return f;
}

/**
 * On the signed-in device: asks for a link challenge naming `newIdentity`, checks it
 * names this key, signs it, and returns the URL the new device opens (the code rides
 * in the fragment, which browsers never send to a server).
 */
export async function inviteUrl({ token, identity, privateKey, newIdentity }) {
  const { challenge } = await linkChallenge(token, newIdentity.trim());
  const f = parseLinkChallenge(challenge);
  if (!f || f.identity !== identity || f['new-identity'] !== newIdentity.trim()) {
    throw new Error('The server sent a link challenge for other keys; nothing was signed.');
  }
  const sig = await signText(privateKey, challenge);
  const code = b64url(JSON.stringify({ challenge, sig }));
  return new URL(`/#link=${code}`, location.href).href;
}

/** Reads a link code from this page's URL fragment (`#link=…`), or null. */
export function linkCodeFromUrl(hash = location.hash) {
  const m = /^#link=([A-Za-z0-9_-]+)$/.exec(hash);
  if (!m) return null;
  try {
    const code = JSON.parse(unb64url(m[1]));
    const fields = parseLinkChallenge(code.challenge);
    return fields && typeof code.sig === 'string' ? { ...code, fields } : null;
  } catch {
    return null;
  }
}

/** On the new device: signs the link challenge with this browser's key and links. */
export async function acceptLink({ code, identity, privateKey, label }) {
  if (code.fields['new-identity'] !== identity) {
    throw new Error('This link is for another key, not this browser’s.');
  }
  const newSig = await signText(privateKey, code.challenge);
  return completeLink({ challenge: code.challenge, sig: code.sig, new_sig: newSig, label });
}

/** A QR code of `text`, drawn by the server as SVG, as a data: URL for an <img>. */
export async function qrDataUrl(token, text) {
  const res = await fetch('/v1/qr', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify({ text }),
    cache: 'no-store', credentials: 'omit', redirect: 'error',
  });
  if (!res.ok) return null;
  const svg = await res.text();
  return `data:image/svg+xml;base64,${btoa(svg)}`;
}
