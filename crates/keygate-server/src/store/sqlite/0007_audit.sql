-- keygate schema v7 (SQLite): the audit trail (docs/audit.md), an append-only table
-- of security events. Never a token, signature, secret, challenge or code: only who
-- (app, account, key identity, session), where from (address, user agent, cleaned
-- and cut to 256 bytes), what (kind, outcome = the protocol's error code of a
-- refusal, detail = the kind's own short field) and when (unix seconds).
--
-- id: AUTOINCREMENT, so an id is never reused after a purge and a later event
--   always has a larger id (the pages of GET /v1/account/events go by it).
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    outcome     TEXT,
    app         TEXT,
    account_id  TEXT,
    identity    TEXT,
    session_id  TEXT,
    address     TEXT,
    user_agent  TEXT,
    detail      TEXT
);

CREATE INDEX audit_events_account ON audit_events (account_id, id);
CREATE INDEX audit_events_identity ON audit_events (identity, id);
CREATE INDEX audit_events_at ON audit_events (at);
