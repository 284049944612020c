-- keygate schema v7 (PostgreSQL): the session cap, checked in the sign-in's own
-- transaction (the group commit), counts an identity's sessions with an app that
-- are not revoked from the index alone; revoked sessions, which pile up until
-- they expire, are skipped. The index on subject alone was a prefix of this one.
DROP INDEX sessions_subject_app;
DROP INDEX sessions_subject;
CREATE INDEX sessions_subject_app ON sessions (subject, api_key, revoked_at);
