-- keygate schema v4 (SQLite): what an app's API key may do (docs/tenancy.md,
-- docs/lifecycle.md), and indexes for the purge of expired rows.
--
-- origins: the audiences (origins) the key may name in a challenge besides its
--   own id, space separated. Existing keys get none: only their id, as before
--   the Hub checked audiences at all. `keygate serve` adds its origins to the
--   key its Provider uses at every start.
-- introspect_any: 1 lets the key introspect tokens issued to other apps.
-- max_sessions: live sessions one identity may hold with this app; a sign-in
--   past it ends the oldest.
-- dev: 1 marks a development key (docs/dev-mode.md): it mints tokens without a
--   signature, and only a Hub started with --dev accepts it.
ALTER TABLE api_keys ADD COLUMN origins TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN introspect_any INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN max_sessions INTEGER NOT NULL DEFAULT 100;
ALTER TABLE api_keys ADD COLUMN dev INTEGER NOT NULL DEFAULT 0;

-- The purge deletes by expiry in bounded batches, from the oldest.
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX revocations_expiry ON revocations (expires_at);
CREATE INDEX broker_tokens_expiry ON broker_tokens (expires_at);
