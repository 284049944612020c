-- keygate schema v5 (PostgreSQL): key-bound tokens (DPoP, docs/dpop.md), and the index
-- a sign-in's session cap counts through.
--
-- api_keys.dpop: the app's DPoP policy: 'off' (proofs ignored, bearer tokens),
--   'optional' (a sign-in with a proof gets a key-bound token; the default) or
--   'required' (a sign-in without a proof is refused).
-- sessions.jkt: RFC 7638 thumbprint of the key the session's tokens are bound to;
--   NULL for a bearer session. A refresh of a bound session needs a proof by it.
ALTER TABLE api_keys ADD COLUMN dpop TEXT NOT NULL DEFAULT 'optional';
ALTER TABLE sessions ADD COLUMN jkt TEXT;

-- The session cap counts one identity's live sessions with one app at every
-- sign-in: without this index that count walked all of the app's sessions.
CREATE INDEX sessions_subject_app ON sessions (subject, api_key);
