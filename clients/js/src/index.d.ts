// Types of keygate-client (browser entry). Hand-written; checked against the examples
// by `tsc --noEmit -p examples` in the package's tests.

export type ErrorCode =
  | 'bad_request' | 'invalid_identity' | 'invalid_challenge' | 'challenge_expired' | 'challenge_used'
  | 'invalid_signature' | 'invalid_api_key' | 'invalid_token' | 'token_expired' | 'session_revoked'
  | 'session_expired' | 'invalid_refresh_token' | 'refresh_token_reused' | 'invalid_grant' | 'invalid_scope'
  | 'forbidden_origin' | 'forbidden_audience' | 'forbidden' | 'mfa_required' | 'key_in_other_account'
  | 'last_account_key' | 'invalid_otp' | 'otp_reused' | 'not_found' | 'payload_too_large' | 'message_too_large'
  | 'handshake_timeout' | 'rate_limited' | 'unavailable' | 'bad_gateway' | 'internal_error'
  | 'invalid_dpop_proof' | 'use_dpop_nonce' | 'dpop_required';
/** Failures the client sees itself: no answer, a dropped socket, an unreadable reply; recovery words that are no recovery key. */
export type ClientCode = 'network' | 'connection_lost' | 'timeout' | 'bad_response' | 'closed' | 'invalid_recovery_words';

export const ERROR_CODES: readonly ErrorCode[];
export const CLIENT_CODES: readonly ClientCode[];
/** Codes after which the sign-in is over and only signing in again helps. */
export const SESSION_OVER: ReadonlySet<string>;

export class KeygateError extends Error {
  constructor(code: string, message?: string, options?: { status?: number | null; retryAfter?: string | null });
  /** An ErrorCode, a ClientCode, or `http_<status>` for a non-keygate answer. */
  readonly code: ErrorCode | ClientCode | (string & {});
  readonly status: number | null;
  /** The Retry-After header of a 429, as sent. */
  readonly retryAfter: string | null;
}

export interface ChallengeCheck { ok: boolean; label: string; value?: string; problem: string }
export interface InspectedChallenge {
  text: string;
  fields: Record<'audience' | 'identity' | 'nonce' | 'issued-at' | 'expires-at', string> | null;
  /** Local time (ms) at which the challenge expires, measured on its own lifetime. */
  deadline: number;
  checks: ChallengeCheck[];
}
export class ChallengeRefused extends Error { readonly challenge: InspectedChallenge }
export class SignInCancelled extends Error {}

// ---- identity ----
export function base32Lower(bytes: Uint8Array): string;
export function fromBase32Lower(text: string): Uint8Array | null;
export function base58btc(bytes: Uint8Array): string;
export function base64url(bytes: Uint8Array): string;
export function fromBase64url(text: string): Uint8Array;
export function identityFromRawKey(raw: ArrayBuffer | Uint8Array): string;
export function rawKeyFromIdentity(identity: string): Uint8Array | null;
/** The canonical identity (`bbaarei…`) of an Ed25519 public CryptoKey. */
export function identityOf(publicKey: CryptoKey): Promise<string>;
/** libp2p PeerId (`12D3KooW…`). */
export function peerIdOf(identity: string): string;
/** `did:key:z6Mk…`. */
export function didKeyOf(identity: string): string;

// ---- protocol ----
export interface RequestOptions {
  /** The Provider's (or Hub's) URL; default: the page's own origin. */
  baseUrl?: string;
  /**
   * The key pair a key-bound (DPoP) token is bound to: requests with such a token send
   * `Authorization: DPoP` and a fresh proof by it. Not needed (and not used) for bearer tokens.
   */
  dpop?: CryptoKeyPair;
}
export interface TokenBody {
  token: string;
  /** 'Bearer', or 'DPoP' for a token bound to the key that signed in (`cnf.jkt`). */
  token_type: string;
  expires_at: string;
  expires_in: number;
  session_id: string;
  refresh_token: string | null;
  /** The app requires a second factor: this token only works for the MFA step. */
  mfa_required: boolean;
}
export interface SignInResult extends TokenBody { via: 'WebSocket' | 'HTTP' }
export interface SignInOptions extends Omit<RequestOptions, 'dpop'> {
  identity: string;
  /** The signing key pair (or privateKey, and publicKey for dpop). */
  keyPair?: CryptoKeyPair;
  privateKey?: CryptoKey;
  publicKey?: CryptoKey;
  /** Ask for a token bound to this key (RFC 9449): the sign-in carries a DPoP proof by it. */
  dpop?: boolean;
  /** Show the checked challenge; resolve true to sign. Default: sign. */
  approve?: (challenge: InspectedChallenge) => boolean | Promise<boolean>;
  /** The audience the challenge must name; default: the page's origin (or baseUrl's). */
  origin?: string;
  /** Default 'auto': WebSocket, HTTP when a socket cannot be opened. */
  transport?: 'ws' | 'http' | 'auto';
  clientId?: string;
  /** Ask for a refresh token (needs clientId). */
  offline?: boolean;
  scope?: string | string[];
  /** Requested token lifetime in seconds. */
  expiration?: number;
  /** Renew this session by signature instead of starting a new one. */
  sessionId?: string;
}
export function parseChallenge(text: string): InspectedChallenge['fields'];
export function inspectChallenge(text: string, options: { origin: string; identity: string; receivedAt?: number }): InspectedChallenge;
export function signText(privateKey: CryptoKey, text: string): Promise<string>;
export function signIn(options: SignInOptions): Promise<SignInResult>;
export function renew(options: SignInOptions & { sessionId: string }): Promise<SignInResult>;
export function call<T = any>(method: string, path: string, options?: RequestOptions & {
  body?: unknown; token?: string; headers?: Record<string, string>;
}): Promise<T>;
/** fetch() with the token: Bearer, or DPoP with a fresh proof by `dpop` for a key-bound token. */
export function authorizedFetch(token: string, url: string | URL, init?: RequestInit & { dpop?: CryptoKeyPair }): Promise<Response>;
export function refresh(refreshToken: string, options?: RequestOptions & { clientId?: string }): Promise<TokenBody>;
export interface WhoAmI { identity: string; session_id: string; aud: string; scope?: string; client_id?: string; expires_at: string; [k: string]: unknown }
export function whoami(token: string, options?: RequestOptions): Promise<WhoAmI>;
export interface SessionInfo { session_id: string; current?: boolean; [k: string]: unknown }
export function listSessions(token: string, options?: RequestOptions): Promise<{ sessions: SessionInfo[] }>;
export function revokeSession(token: string, sessionId: string, options?: RequestOptions): Promise<unknown>;
export function logout(token: string, scope?: 'local' | 'others' | 'global', options?: RequestOptions): Promise<{ revoked: number }>;
export function exchangeBrokerToken(tokenId: string, options?: RequestOptions): Promise<TokenBody>;
export interface AccessClaims {
  iss: string; sub: string; aud: string; iat: number; nbf: number; exp: number; jti: string; sid: string;
  scope?: string; client_id?: string; role?: string; acct?: string; acr?: string; amr?: string[];
  /** Key-bound (DPoP) tokens: the RFC 7638 thumbprint of the key. */
  cnf?: { jkt: string };
}
export function decodeJwt(token: string): { header: { alg: string; typ: string; kid: string }; payload: AccessClaims };

// ---- accounts and MFA ----
export function accountKeys(token: string, options?: RequestOptions): Promise<{ account: string; keys: Array<{ identity: string; label?: string; [k: string]: unknown }>; totp?: unknown }>;
export function removeKey(token: string, identity: string, options?: RequestOptions): Promise<{ removed: boolean; revoked: number }>;
export function linkChallenge(token: string, identity: string, options?: RequestOptions): Promise<{ challenge: string; expires_at: string }>;
export function completeLink(body: { challenge: string; sig: string; new_sig: string; label?: string }, options?: RequestOptions): Promise<{ account: string; identity: string }>;
export function enrolTotp(token: string, options?: RequestOptions): Promise<{ secret: string; otpauth_uri: string }>;
export function verifyTotp(token: string, code: string, options?: RequestOptions): Promise<TokenBody>;
export function mfaChallenge(token: string, identity: string, options?: RequestOptions): Promise<{ challenge: string; expires_at: string }>;
export function mfaKey(token: string, signed: { challenge: string; sig: string }, options?: RequestOptions): Promise<TokenBody>;
export function parseLinkChallenge(text: string): Record<string, string> | null;
export interface LinkCode { challenge: string; sig: string; fields: Record<string, string> }
export function inviteUrl(options: RequestOptions & { token: string; identity: string; privateKey: CryptoKey; newIdentity: string; pageUrl?: string }): Promise<string>;
export function linkCodeFromUrl(hash?: string): LinkCode | null;
export function acceptLink(options: RequestOptions & { code: LinkCode; identity: string; privateKey: CryptoKey; label?: string }): Promise<{ account: string; identity: string }>;
export function stepUpWithKey(options: RequestOptions & { token: string; identity: string; privateKey: CryptoKey }): Promise<TokenBody>;
export function qrDataUrl(token: string, text: string, options?: RequestOptions): Promise<string | null>;
export interface AccountEvent {
  id: number; at: string; kind: string; outcome: string | null; app: string | null; identity: string | null;
  session_id: string | null; address: string | null; user_agent: string | null; detail: unknown; [k: string]: unknown;
}
/** The account's security events, newest first; `before` pages back (`next_before`), `limit` 1–200. */
export function accountEvents(token: string, options?: RequestOptions & { before?: number; limit?: number }): Promise<{ events: AccountEvent[]; next_before: number | null }>;

// ---- recovery key ----
export const RECOVERY_LABEL: 'recovery';
export const RECOVERY_WORDS: 24;
/** A recovery key: the 24 BIP-39 words of its seed, its identity and a non-extractable signing key. */
export interface RecoveryKey { words: string; identity: string; privateKey: CryptoKey }
/** A new recovery key from 32 random bytes. */
export function newRecoveryKey(): Promise<RecoveryKey>;
/** The recovery key of a 32-byte seed (the BIP-39 entropy is the Ed25519 seed). */
export function recoveryKeyFromSeed(seed: Uint8Array): Promise<RecoveryKey>;
/** The recovery key of the words; throws KeygateError `invalid_recovery_words` (count, unknown word, checksum). */
export function recoveryKeyFromWords(words: string): Promise<RecoveryKey>;
/** Lower case, single spaces, list numbers dropped. */
export function normaliseRecoveryWords(text: string): string;
/** The fields of a `keygate recovery challenge v1` text (9 lines), or null. */
export function parseRecoveryChallenge(text: string): Record<string, string> | null;
export function recoveryChallenge(token: string, identity: string, options?: RequestOptions): Promise<{ challenge: string; expires_at: string }>;
export function completeRecovery(token: string, body: { challenge: string; sig: string; new_sig: string; label?: string }, options?: RequestOptions): Promise<TokenBody>;
/** Makes a recovery key and links it to the account (label `recovery`); show the words once. */
export function createRecoveryKey(options: RequestOptions & { token: string; identity: string; privateKey: CryptoKey }): Promise<{ words: string; identity: string; account: string }>;
/** On a new, signed-in device: brings its key into the account the words recover; the same session, now acct = that account, acr aal2. */
export function recoverAccount(options: RequestOptions & { token: string; words: string; identity: string; privateKey: CryptoKey; label?: string }): Promise<TokenBody>;

// ---- DPoP (RFC 9449) ----
export interface PublicJwk { kty: 'OKP'; crv: 'Ed25519'; x: string }
export interface DpopProofOptions {
  /** The request method. */
  htm: string;
  /** The request URL (query and fragment are dropped). */
  htu: string;
  /** The access token the proof goes with (adds ath). */
  token?: string;
  /** The server's DPoP-Nonce. */
  nonce?: string;
  /** For tests: a fixed jti and iat (seconds). */
  jti?: string;
  iat?: number;
}
/** A DPoP proof (JWS compact, EdDSA) signed by keyPair.privateKey, which may be non-extractable. */
export function dpopProof(keyPair: CryptoKeyPair, options: DpopProofOptions): Promise<string>;
/** RFC 7638 thumbprint (SHA-256, base64url) of an OKP, EC or RSA public JWK. */
export function jwkThumbprint(jwk: { kty: string; [member: string]: unknown }): Promise<string>;
/** The public JWK of an Ed25519 public key, as proofs carry it. */
export function publicJwk(publicKey: CryptoKey): Promise<PublicJwk>;
/** The cnf.jkt of a token (unverified), or null when it is not key-bound. */
export function boundThumbprint(token: string): string | null;

// ---- storage ----
export const KEYPAIR: 'keypair';
export const SESSION: 'session';
export interface KeyRecord { keyPair: CryptoKeyPair; createdAt: string }
export interface Store {
  readonly name: string;
  readonly KEYPAIR: 'keypair';
  readonly SESSION: 'session';
  load(key: string): Promise<any>;
  save(key: string, value: unknown): Promise<void>;
  remove(key: string): Promise<void>;
  createKeyPair(): Promise<KeyRecord>;
  loadOrCreateKeyPair(): Promise<KeyRecord>;
}
/** IndexedDB database `name` (default 'keygate'). */
export function keyStore(options?: { name?: string }): Store;
export function memoryStore(): Store;

export interface StoredSession extends TokenBody { receivedAt: number; [k: string]: unknown }
export class TokenStore {
  constructor(options: {
    store: Pick<Store, 'load' | 'save' | 'remove'> & { name?: string }; clientId?: string; baseUrl?: string; key?: string;
    refreshMarginMs?: number;
    /** The key pair of key-bound sessions: refreshes and fetch() send proofs by it. */
    dpop?: CryptoKeyPair;
  });
  readonly session: StoredSession | null;
  load(): Promise<StoredSession | null>;
  set(tokenBody: TokenBody & { receivedAt?: number }): Promise<StoredSession>;
  clear(): Promise<void>;
  /** One refresh across all tabs; a tab that lost the race adopts the winner's token. */
  refresh(): Promise<StoredSession>;
  /** The held token, refreshed first when it expires within refreshMarginMs. */
  accessToken(): Promise<string>;
  /** fetch() with the held token (see authorizedFetch), refreshed first when due. */
  fetch(url: string | URL, init?: RequestInit): Promise<Response>;
  onChange(listener: (session: StoredSession | null) => void): () => void;
  close(): void;
}
