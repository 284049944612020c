// keygate-client for browsers (and any runtime with WebCrypto Ed25519, fetch and
// WebSocket). Backends: import 'keygate-client/node'.

export {
  ERROR_CODES, CLIENT_CODES, SESSION_OVER, KeygateError, ChallengeRefused, SignInCancelled,
} from './errors.js';
export {
  base32Lower, fromBase32Lower, base58btc, base64url, fromBase64url, identityFromRawKey, rawKeyFromIdentity,
  identityOf, peerIdOf, didKeyOf,
} from './identity.js';
export {
  parseChallenge, inspectChallenge, signText, signIn, renew, call, authorizedFetch, refresh, whoami, listSessions,
  revokeSession, logout, exchangeBrokerToken, decodeJwt,
} from './protocol.js';
export { dpopProof, jwkThumbprint, publicJwk, boundThumbprint } from './dpop.js';
export {
  accountKeys, removeKey, linkChallenge, completeLink, enrolTotp, verifyTotp, mfaChallenge, mfaKey, accountEvents,
  parseLinkChallenge, inviteUrl, linkCodeFromUrl, acceptLink, stepUpWithKey, qrDataUrl,
} from './account.js';
export {
  RECOVERY_LABEL, RECOVERY_WORDS, newRecoveryKey, recoveryKeyFromSeed, recoveryKeyFromWords, normaliseRecoveryWords,
  parseRecoveryChallenge, recoveryChallenge, completeRecovery, createRecoveryKey, recoverAccount,
} from './recovery.js';
export { KEYPAIR, SESSION, keyStore, memoryStore } from './keystore.js';
export { TokenStore } from './tokens.js';
