-- keygate schema v1 (PostgreSQL): the SQLite schema (src/store/sqlite/0001_init.sql)
-- with PostgreSQL types. Times are unix seconds (BIGINT); flags are 0/1 BIGINTs so
-- that both backends decode rows with the same code. Bearer secrets (refresh
-- tokens, brokered token ids) are stored only as SHA-256 hashes.

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    secret       BYTEA NOT NULL,
    scopes       TEXT NOT NULL DEFAULT '',
    can_broker   BIGINT NOT NULL DEFAULT 0,
    access_ttl   BIGINT NOT NULL,
    session_ttl  BIGINT NOT NULL,
    idle_timeout BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);

-- Redeemed challenge nonces, kept until their challenge has expired.
CREATE TABLE used_nonces (
    nonce      BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_nonces_expiry ON used_nonces (expires_at);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    subject      TEXT NOT NULL,
    api_key      TEXT NOT NULL,
    client_id    TEXT,
    scope        TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    idle_timeout BIGINT NOT NULL,
    revoked_at   BIGINT,
    user_agent   TEXT,
    address      TEXT
);
CREATE INDEX sessions_subject ON sessions (subject);
CREATE INDEX sessions_api_key ON sessions (api_key);

CREATE TABLE refresh_tokens (
    hash       BYTEA PRIMARY KEY,
    session_id TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    spent_at   BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- The revocation feed: offline verifiers poll or subscribe from a cursor. Writers
-- lock this table before appending (see revoke_in in postgres.rs), so sequence
-- numbers become visible in order and a reader's cursor never skips one.
CREATE TABLE revocations (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE broker_tokens (
    hash        BYTEA PRIMARY KEY,
    api_key     TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    role        TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
