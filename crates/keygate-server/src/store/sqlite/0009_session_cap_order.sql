-- keygate schema v9 (SQLite): the session cap walks an identity's live sessions
-- with an app newest first and ends those beyond the cap. With the creation time,
-- id and the liveness columns in the index, that walk reads neither the table
-- rows nor a sort: it skips `cap` index entries and returns the rest. The old
-- index is a prefix of this one, so every query that used it still can.
DROP INDEX sessions_subject_app;
CREATE INDEX sessions_subject_app ON sessions
    (subject, api_key, revoked_at, created_at, id, expires_at, last_used_at, idle_timeout);
