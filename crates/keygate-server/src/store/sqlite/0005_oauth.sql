-- keygate schema v5 (SQLite): keygate as an OpenID Provider (docs/oidc.md).
-- Tables of their own, so earlier rows need no change. Bearer secrets (client
-- secrets, authorization codes, device codes) are stored only as SHA-256 hashes.

-- Registered clients. secret_hash NULL: a public client. redirect_uris and
-- post_logout_redirect_uris: JSON arrays of strings, compared exactly. scopes:
-- space separated. app: the API key whose sessions and policy the client uses.
CREATE TABLE oauth_clients (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    secret_hash               BLOB,
    redirect_uris             TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]',
    alg                       TEXT NOT NULL,
    scopes                    TEXT NOT NULL DEFAULT '',
    first_party               INTEGER NOT NULL DEFAULT 0,
    app                       TEXT NOT NULL,
    created_at                INTEGER NOT NULL,
    revoked_at                INTEGER
);

-- Authorization codes: spent once (used_at); session_id is the session the
-- first use produced, which a replay ends. grant_json is the OIDC service's.
CREATE TABLE oauth_codes (
    hash       BLOB PRIMARY KEY,
    client_id  TEXT NOT NULL,
    grant_json TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    session_id TEXT
) WITHOUT ROWID;
CREATE INDEX oauth_codes_expiry ON oauth_codes (expires_at);

-- The scopes an account granted a client, remembered so it is asked once.
CREATE TABLE oauth_consents (
    account_id TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, client_id)
) WITHOUT ROWID;

-- Device authorization grants (RFC 8628). state: pending, approved or denied;
-- an approved grant's row is deleted when its approval is collected.
CREATE TABLE oauth_devices (
    device_hash    BLOB PRIMARY KEY,
    user_code      TEXT NOT NULL UNIQUE,
    client_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    expires_at     INTEGER NOT NULL,
    poll_interval  INTEGER NOT NULL,
    last_polled_at INTEGER,
    state          TEXT NOT NULL DEFAULT 'pending',
    grant_json     TEXT
) WITHOUT ROWID;
CREATE INDEX oauth_devices_expiry ON oauth_devices (expires_at);
