-- keygate schema v8 (PostgreSQL): the session cap walks an identity's live
-- sessions with an app newest first and ends those beyond the cap. With the
-- creation time and id in the key and the liveness columns included, that walk
-- is an index-only scan in order (no sort). The old index is a prefix of this
-- one, so every query that used it still can.
DROP INDEX sessions_subject_app;
CREATE INDEX sessions_subject_app ON sessions (subject, api_key, revoked_at, created_at, id)
    INCLUDE (expires_at, last_used_at, idle_timeout);
