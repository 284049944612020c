-- keygate schema v2 (PostgreSQL; the SQLite schema with PostgreSQL types): accounts of several keys and second factors
-- (docs/accounts.md). Tables of their own, so v1 rows need no change.

-- A key belongs to one account at most: the identity is the primary key.
CREATE TABLE account_keys (
    identity   TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    label      TEXT,
    added_at   BIGINT NOT NULL
);
CREATE INDEX account_keys_account ON account_keys (account_id);

-- An account's TOTP secret, sealed with the master key (store/seal.rs).
-- last_step: the newest 30 s step whose code was accepted; a code of that step
-- or an older one is refused (RFC 6238 §5.2).
CREATE TABLE account_totp (
    account_id   TEXT PRIMARY KEY,
    secret       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    confirmed_at BIGINT,
    last_step    BIGINT NOT NULL DEFAULT 0
);

-- Each app's (API key's) MFA policy; no row means off.
CREATE TABLE api_key_mfa (
    key_id   TEXT PRIMARY KEY,
    required BIGINT NOT NULL
);

-- Sessions raised to aal2 by a second factor, and until when.
CREATE TABLE session_mfa (
    session_id TEXT PRIMARY KEY,
    factor     TEXT NOT NULL,
    aal2_until BIGINT NOT NULL,
    raised_at  BIGINT NOT NULL
);
