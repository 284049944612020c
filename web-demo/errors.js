// A sentence a person can act on for every error code of the protocol, plus the few
// the page itself produces (network, connection_lost, timeout, bad_response,
// invalid_recovery_words), and the meaning some codes take when recovering an account.

const MESSAGES = {
  network: 'Can’t reach the server — it looks down or is restarting. Try again in a moment.',
  connection_lost: 'The connection to the server dropped in the middle of signing in. Try again.',
  timeout: 'The server took too long to answer. Try again.',
  bad_response: 'The server answered with something this page doesn’t understand. Is it a keygate server?',
  bad_request: 'The server couldn’t make sense of the request. That’s a bug in this demo — please report it.',
  invalid_identity: 'The server didn’t accept this identity. Making a new identity should fix it.',
  invalid_challenge: 'The server doesn’t recognise that challenge. Sign in again to get a fresh one.',
  challenge_expired: 'The challenge expired before it was signed (they last about a minute). Sign in again.',
  challenge_used: 'That challenge was already used — each one works only once. Sign in again.',
  invalid_signature: 'The server couldn’t verify the signature for this identity. Sign in again; if it keeps failing, make a new identity.',
  invalid_api_key: 'This server’s own app key was refused by the token authority. Nothing you can fix from here — tell whoever runs the server.',
  invalid_token: 'The server didn’t accept your access token. Sign in again.',
  token_expired: 'Your access token has expired. Refresh it, or sign in again.',
  session_revoked: 'This session has been logged out (revoked). Sign in again to start a new one.',
  session_expired: 'This session has ended: it was idle too long or reached its maximum age. Sign in again.',
  invalid_refresh_token: 'The refresh token wasn’t accepted. Sign in again.',
  refresh_token_reused: 'That refresh token had been used before, so the server ended the whole session to be safe. Sign in again.',
  invalid_scope: 'The server doesn’t allow the access this page asked for.',
  forbidden_origin: 'The server doesn’t accept sign-ins from this address. Open the demo at the address the server was set up for.',
  forbidden: 'You’re not allowed to do that.',
  mfa_required: 'This needs a second factor first: enter a code from your authenticator app (step 5) to raise this session, then try again.',
  key_in_other_account: 'That key already belongs to another account.',
  last_account_key: 'That is the account’s last key: removing it would lock everyone out.',
  invalid_recovery_words: 'Those aren’t the words of a recovery key. Check them against what you wrote down: 24 words, in order.',
  not_found: 'Not found — it may already be gone.',
  payload_too_large: 'The request was too large for the server.',
  message_too_large: 'A message was too large for the server.',
  handshake_timeout: 'Signing in took longer than 30 seconds, so the server closed the connection. Sign in again.',
  rate_limited: 'Too many attempts. Wait a little and try again.',
  unavailable: 'The server is temporarily unavailable. Try again in a moment.',
  internal_error: 'Something went wrong on the server. Try again; if it keeps happening, the server’s log will say why.',
  invalid_dpop_proof: 'The server didn’t accept the proof signed by this browser’s key for your key-bound token. Check this computer’s clock, or sign in again.',
  use_dpop_nonce: 'The server wanted a fresh nonce in the key proof, twice in a row. Try again.',
  dpop_required: 'This app only issues tokens bound to your key, and the sign-in carried no proof of it. Sign in again.',
};

/** What a code means when the words of a recovery key were just used. */
const RECOVERY_MESSAGES = {
  forbidden: 'These words are not the recovery key of any account: it may have been used already (each works once) or replaced by a newer one.',
  key_in_other_account: 'This browser’s key already belongs to an account with other keys, so it can’t join another one. Make a new identity (step 1), sign in, and recover again.',
};

/** { text, code, detail } for an error of any kind. */
export function describe(err) {
  const code = err?.code ?? 'unexpected';
  let text = MESSAGES[code];
  if (code === 'rate_limited' && err.retryAfter && /^\d+$/.test(err.retryAfter)) {
    const s = Number(err.retryAfter);
    text = `Too many attempts. Try again in ${s} second${s === 1 ? '' : 's'}.`;
  }
  if (!text) text = err?.code ? `The server said: ${err.message}` : `Something went wrong: ${err?.message ?? err}`;
  // The server's own words help whoever debugs; the network's don't.
  const detail = err?.code && code !== 'network' && err.message && !text.includes(err.message) ? err.message : '';
  return { text, code: err?.code ?? null, detail };
}

/** describe(), with what the codes mean during a recovery. */
export function describeRecovery(err) {
  const d = describe(err);
  // The package says which word or what is wrong (never echoing the words): lead with that.
  if (err?.code === 'invalid_recovery_words') return { ...d, text: `${err.message} Check them against what you wrote down.`, detail: '' };
  const text = RECOVERY_MESSAGES[err?.code];
  return text ? { ...d, text } : d;
}

// Codes after which the local sign-in is gone for good: the package's list.
export { SESSION_OVER } from './keygate-client.js';
