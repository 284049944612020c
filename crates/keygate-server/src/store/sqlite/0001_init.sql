-- keygate schema v1 (SQLite). Times are unix seconds. Bearer secrets (refresh
-- tokens, brokered token ids) are stored only as SHA-256 hashes.

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    secret       BLOB NOT NULL,
    scopes       TEXT NOT NULL DEFAULT '',
    can_broker   INTEGER NOT NULL DEFAULT 0,
    access_ttl   INTEGER NOT NULL,
    session_ttl  INTEGER NOT NULL,
    idle_timeout INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

-- Redeemed challenge nonces, kept until their challenge has expired.
CREATE TABLE used_nonces (
    nonce      BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX used_nonces_expiry ON used_nonces (expires_at);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    subject      TEXT NOT NULL,
    api_key      TEXT NOT NULL,
    client_id    TEXT,
    scope        TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    idle_timeout INTEGER NOT NULL,
    revoked_at   INTEGER,
    user_agent   TEXT,
    address      TEXT
);
CREATE INDEX sessions_subject ON sessions (subject);
CREATE INDEX sessions_api_key ON sessions (api_key);

CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY,
    session_id TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    spent_at   INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- The revocation feed: offline verifiers poll or subscribe from a cursor.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE broker_tokens (
    hash        BLOB PRIMARY KEY,
    api_key     TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    role        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) WITHOUT ROWID;
