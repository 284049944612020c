// Generated from clients/js/src/errors.js (package keygate-client) by
// clients/js/scripts/vendor.js: edit the package and run that script, not this file.

// Errors typed with the protocol's codes. Every failure a keygate server reports
// becomes a KeygateError whose `code` is the server's `error` field (or, for the few
// failures the client itself sees, one of the CLIENT_CODES below).

/** The codes a keygate server answers with (docs/protocol.md, "Errors"). */
export const ERROR_CODES = Object.freeze([
  'bad_request', 'invalid_identity', 'invalid_challenge', 'challenge_expired', 'challenge_used',
  'invalid_signature', 'invalid_api_key', 'invalid_token', 'token_expired', 'session_revoked',
  'session_expired', 'invalid_refresh_token', 'refresh_token_reused', 'invalid_grant', 'invalid_scope',
  'forbidden_origin', 'forbidden_audience', 'forbidden', 'mfa_required', 'key_in_other_account',
  'last_account_key', 'invalid_otp', 'otp_reused', 'not_found', 'payload_too_large', 'message_too_large',
  'handshake_timeout', 'rate_limited', 'unavailable', 'bad_gateway', 'internal_error',
  'invalid_dpop_proof', 'use_dpop_nonce', 'dpop_required',
]);

/**
 * Codes this package produces itself: no answer, a dropped socket, a reply it cannot
 * read; recovery words that are not a recovery key (checked before anything is sent).
 */
export const CLIENT_CODES = Object.freeze([
  'network', 'connection_lost', 'timeout', 'bad_response', 'closed', 'invalid_recovery_words',
]);

/** Codes after which the sign-in is gone for good and only signing in again helps. */
export const SESSION_OVER = new Set([
  'session_revoked', 'session_expired', 'invalid_refresh_token', 'refresh_token_reused', 'invalid_token',
]);

/** An error the server answered with (or one of CLIENT_CODES when it could not be read). */
export class KeygateError extends Error {
  constructor(code, message, { status = null, retryAfter = null } = {}) {
    super(message || code);
    this.name = 'KeygateError';
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** The client would not sign: the challenge is for another site or another identity. */
export class ChallengeRefused extends Error {
  constructor(challenge) {
    super(challenge.checks.filter((c) => !c.ok).map((c) => c.problem).join(' '));
    this.name = 'ChallengeRefused';
    this.challenge = challenge;
  }
}

/** The person chose not to sign. */
export class SignInCancelled extends Error {
  constructor(message = 'Sign-in cancelled.') {
    super(message);
    this.name = 'SignInCancelled';
  }
}
