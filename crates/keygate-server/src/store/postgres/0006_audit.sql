-- keygate schema v6 (PostgreSQL): the audit trail (docs/audit.md), an append-only
-- table of security events; the SQLite schema (sqlite/0007_audit.sql) with
-- PostgreSQL types. Never a token, signature, secret, challenge or code.
--
-- id: an identity column; ids of events committed by concurrent writers may become
--   visible out of order, which pagination (id < before) tolerates.
CREATE TABLE audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
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
