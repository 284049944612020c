// Types of keygate-client/node (app backends). Everything of the browser entry, plus:
import type { AccessClaims, TokenBody } from './index.js';
export * from './index.js';

export function apiSecretBytes(secret: string): Uint8Array;
export function apiKeyHeaders(options: { keyId: string; secret: string; ttlSeconds?: number; now?: number }): {
  'x-keygate-api-key': string; 'x-keygate-api-sig-msg': string; 'x-keygate-api-sig': string;
};

export interface HubTokenOptions {
  clientId?: string; offline?: boolean; scope?: string | string[]; expiration?: number; sessionId?: string;
  /** A token bound to the user's key (DPoP): only after checking the user's proof yourself. */
  dpop?: boolean;
}
export interface RevocationEvent { seq: number; session_id: string; revoked_at: number; expires_at: number }

export class HubClient {
  constructor(options: { url: string; keyId: string; secret: string });
  readonly url: string;
  challenge(identity: string, options?: { audience?: string }): Promise<{ challenge: string; expires_at: string }>;
  token(request: { identity: string; challenge: string; sig: string } & HubTokenOptions): Promise<TokenBody>;
  signInUser(request: { identity: string; privateKey: CryptoKey; audience?: string } & HubTokenOptions): Promise<TokenBody>;
  brokerToken(request: { endpointId: string; role: string; ttl?: number }): Promise<{ token_id: string; expires_at: string }>;
  introspect(token: string): Promise<({ active: true; token_type: string } & AccessClaims) | { active: false }>;
  revocations(since?: number): Promise<{ revocations: RevocationEvent[]; cursor: number }>;
  jwks(): Promise<{ keys: Array<{ kty: string; crv: string; x: string; kid: string; alg: string; use: string }> }>;
}

export class TokenVerifier {
  constructor(options: {
    hubUrl: string; issuer?: string; audience?: string | string[]; leewaySeconds?: number;
    refetchIntervalMs?: number; keysMaxAgeMs?: number; now?: () => number;
  });
  /** How many times the JWKS was read. */
  readonly jwksFetches: number;
  /** Claims of a valid access token, or a KeygateError (invalid_token, token_expired, session_revoked, mfa_required). */
  verify(token: string): Promise<AccessClaims>;
  isRevoked(sessionId: string): boolean;
  followRevocations(options?: { WebSocket?: typeof WebSocket; onError?: (err: unknown) => void }): Promise<void>;
  close(): void;
}

export function bearerToken(header: string | undefined | null): string | null;
