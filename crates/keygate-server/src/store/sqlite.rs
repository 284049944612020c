//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a
//! committed sign-in survives a power cut.
//!
//! One connection writes and several read. Sign-ins reach the writer through a
//! channel and are committed in groups: the writer drains whatever is waiting (up to
//! [`MAX_BATCH`]) into one transaction, so N concurrent sign-ins cost one fsync,
//! not N. Other writes take the same single write connection in turn.

use std::str::FromStr;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::rows::{
    SESSION_COLUMNS, api_key_from_row, brokered_session, revocation_from_row, session_from_row,
    signing_key_from_row,
};
use super::*;

/// Most sign-ins committed in one transaction.
pub const MAX_BATCH: usize = 512;
const READERS: u32 = 4;

struct Job {
    redemption: Redemption,
    reply: oneshot::Sender<StoreResult<RedeemOutcome>>,
}

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    jobs: mpsc::Sender<Job>,
    seal: std::sync::Arc<super::seal::MasterKey>,
}

mod accounts;

fn migrator() -> Migrator {
    let step = |version, name: &str, sql: &'static str| {
        Migration::new(
            version,
            name.to_owned().into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(sql),
            false,
        )
    };
    Migrator::with_migrations(vec![
        step(1, "init", include_str!("sqlite/0001_init.sql")),
        step(2, "accounts", include_str!("sqlite/0002_accounts.sql")),
        step(
            3,
            "nonce_order",
            include_str!("sqlite/0003_nonce_order.sql"),
        ),
        step(4, "app_rights", include_str!("sqlite/0004_app_rights.sql")),
    ])
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or a plain
    /// path) and applies migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let seal = super::seal::MasterKey::for_database(Some(opts.get_filename()))?;
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // The writer commits batches of up to MAX_BATCH sign-ins, each dirtying a
        // few random index pages: with SQLite's default 2 MB cache a batch spills
        // dirty pages to the WAL mid-transaction and reads them back (measured:
        // a third of the writer's time). 64 MiB holds a batch and the hot pages.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone().pragma("cache_size", "-65536"))
            .await?;
        migrator()
            .run(&write)
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        let (jobs, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(group_committer(write.clone(), rx));
        Ok(SqliteStore {
            write,
            read,
            jobs,
            seal: std::sync::Arc::new(seal),
        })
    }

    /// `PRAGMA integrity_check`: "ok" on a healthy file.
    pub async fn integrity_check(&self) -> StoreResult<String> {
        Ok(sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.read)
            .await?)
    }
}

async fn group_committer(pool: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match commit_batch(&pool, &batch).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Row counts of the multi-row statements a batch is cut into: a few fixed
/// shapes, so that each is prepared once and then found in sqlx's statement cache.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Cuts `n` rows into chunks of the sizes in [`CHUNKS`], largest first.
fn chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let size = CHUNKS.into_iter().find(|&c| c <= n)?;
        n -= size;
        Some(size)
    })
}

/// `INSERT … VALUES (?, …), (?, …) …`: `rows` groups of `columns` placeholders.
fn values_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let group = format!("({})", vec!["?"; columns].join(", "));
    format!("{head} VALUES {}{tail}", vec![group; rows].join(", "))
}

/// Commits a batch of redemptions in one transaction, with a handful of
/// multi-row statements rather than two statements per sign-in: each statement
/// is a round trip to sqlx's connection thread. Outcomes are those of running
/// the jobs one by one in order (the first of two jobs with one nonce wins).
async fn commit_batch(pool: &SqlitePool, batch: &[Job]) -> StoreResult<Vec<RedeemOutcome>> {
    use std::collections::{HashMap, HashSet};
    let mut tx = pool.begin().await?;
    // 1. Spend the nonces. A nonce repeated inside the batch is used from its
    //    second job on; RETURNING names the nonces that were not spent before.
    let mut seen = HashSet::with_capacity(batch.len());
    let fresh: Vec<&Redemption> = batch
        .iter()
        .map(|j| &j.redemption)
        .filter(|r| seen.insert(r.nonce_id))
        .collect();
    let mut spent_now: HashSet<[u8; 16]> = HashSet::with_capacity(fresh.len());
    let mut rest = &fresh[..];
    for size in chunks(fresh.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = values_sql(
            "INSERT INTO used_nonces (nonce, expires_at)",
            2,
            size,
            " ON CONFLICT DO NOTHING RETURNING nonce",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q.bind(&r.nonce_id[..]).bind(r.nonce_expires_at);
        }
        for row in q.fetch_all(&mut *tx).await? {
            let nonce: Vec<u8> = row.try_get(0)?;
            if let Ok(n) = <[u8; 16]>::try_from(nonce.as_slice()) {
                spent_now.insert(n);
            }
        }
    }
    // 2. Whether each app key involved is live (under the write lock taken above).
    let mut live: HashMap<&str, bool> = HashMap::new();
    for job in batch {
        let key = job.redemption.session.api_key.as_str();
        if job.redemption.renew.is_none() && !live.contains_key(key) {
            let ok = sqlx::query("SELECT 1 FROM api_keys WHERE id = ? AND revoked_at IS NULL")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            live.insert(key, ok);
        }
    }
    // 3. Each job's outcome; renewals run here, new sessions are collected.
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut created: Vec<&Redemption> = Vec::with_capacity(batch.len());
    for job in batch {
        let r = &job.redemption;
        if !spent_now.remove(&r.nonce_id) {
            outcomes.push(RedeemOutcome::ChallengeUsed);
            continue;
        }
        let s = &r.session;
        if let Some(sid) = &r.renew {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sessions SET last_used_at = ? WHERE id = ? AND subject = ? AND api_key = ? \
                 AND revoked_at IS NULL AND expires_at > ? AND last_used_at + idle_timeout > ? \
                 RETURNING {SESSION_COLUMNS}"
            )))
            .bind(s.created_at)
            .bind(sid)
            .bind(&s.subject)
            .bind(&s.api_key)
            .bind(s.created_at)
            .bind(s.created_at)
            .fetch_optional(&mut *tx)
            .await?;
            outcomes.push(match row {
                Some(row) => RedeemOutcome::Renewed(Box::new(session_from_row(&row)?)),
                None => RedeemOutcome::SessionGone,
            });
            continue;
        }
        if live.get(s.api_key.as_str()) != Some(&true) {
            outcomes.push(RedeemOutcome::ApiKeyRevoked);
            continue;
        }
        created.push(r);
        outcomes.push(RedeemOutcome::Created);
    }
    // 4. The new sessions, then their refresh tokens.
    let mut rest = &created[..];
    for size in chunks(created.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = values_sql(
            "INSERT INTO sessions (id, subject, api_key, client_id, scope, created_at, \
             last_used_at, expires_at, idle_timeout, user_agent, address)",
            11,
            size,
            "",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            let s = &r.session;
            q = q
                .bind(&s.id)
                .bind(&s.subject)
                .bind(&s.api_key)
                .bind(&s.client_id)
                .bind(&s.scope)
                .bind(s.created_at)
                .bind(s.created_at)
                .bind(s.expires_at)
                .bind(s.idle_timeout)
                .bind(&s.user_agent)
                .bind(&s.address);
        }
        q.execute(&mut *tx).await?;
    }
    for r in &created {
        if let Some((hash, client_id)) = &r.refresh {
            let s = &r.session;
            insert_refresh(&mut tx, hash, &s.id, client_id, s.created_at).await?;
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn insert_signing_key_in(
    tx: &mut Transaction<'_, Sqlite>,
    seal: &super::seal::MasterKey,
    key: &SigningKeyRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, secret, created_at, retired_at) VALUES (?, ?, ?, ?)",
    )
    .bind(&key.kid)
    .bind(seal.seal(&format!("signing_keys:{}", key.kid), &key.secret[..]))
    .bind(key.created_at)
    .bind(key.retired_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_refresh(
    tx: &mut Transaction<'_, Sqlite>,
    hash: &[u8; 32],
    session_id: &str,
    client_id: &str,
    now: UnixTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, client_id, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(&hash[..])
    .bind(session_id)
    .bind(client_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes the sessions `UPDATE … WHERE` picks and appends them to the feed.
async fn revoke_in(
    tx: &mut Transaction<'_, Sqlite>,
    which: &Revoke<'_>,
    now: UnixTime,
) -> StoreResult<u64> {
    let query = match which {
        Revoke::One { subject, id } => sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE revoked_at IS NULL AND subject = ? AND id = ? \
             RETURNING id, expires_at",
        )
        .bind(now)
        .bind(*subject)
        .bind(*id),
        Revoke::AllOf { subject } => sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE revoked_at IS NULL AND subject = ? \
             RETURNING id, expires_at",
        )
        .bind(now)
        .bind(*subject),
        Revoke::AllOfExcept { subject, keep } => sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE revoked_at IS NULL AND subject = ? AND id != ? \
             RETURNING id, expires_at",
        )
        .bind(now)
        .bind(*subject)
        .bind(*keep),
        Revoke::ApiKey { id } => sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE revoked_at IS NULL AND api_key = ? \
             RETURNING id, expires_at",
        )
        .bind(now)
        .bind(*id),
        Revoke::Beyond {
            subject,
            api_key,
            keep,
        } => sqlx::query(
            "UPDATE sessions SET revoked_at = ?1 WHERE id IN (SELECT id FROM sessions \
             WHERE subject = ?2 AND api_key = ?3 AND revoked_at IS NULL AND expires_at > ?1 \
             AND last_used_at + idle_timeout > ?1 \
             ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?4) \
             RETURNING id, expires_at",
        )
        .bind(now)
        .bind(*subject)
        .bind(*api_key)
        .bind(i64::from(*keep)),
    };
    let rows = query.fetch_all(&mut **tx).await?;
    for row in &rows {
        let id: String = row.try_get("id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        sqlx::query(
            "INSERT INTO revocations (session_id, revoked_at, expires_at) VALUES (?, ?, ?)",
        )
        .bind(id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(rows.len() as u64)
}

impl Store for SqliteStore {
    fn secret_or_insert(
        &self,
        name: &str,
        fresh: Vec<u8>,
        now: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Vec<u8>>> {
        let name = name.to_owned();
        async move {
            sqlx::query(
                "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&name)
            .bind(self.seal.seal(&format!("server_secrets:{name}"), &fresh))
            .bind(now)
            .execute(&self.write)
            .await?;
            let sealed: Vec<u8> =
                sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = ?")
                    .bind(&name)
                    .fetch_one(&self.write)
                    .await?;
            self.seal.open(&format!("server_secrets:{name}"), &sealed)
        }
        .boxed()
    }

    fn signing_keys(&self) -> BoxFuture<'_, StoreResult<Vec<SigningKeyRecord>>> {
        async move {
            let rows = sqlx::query(
                "SELECT kid, secret, created_at, retired_at FROM signing_keys ORDER BY created_at",
            )
            .fetch_all(&self.read)
            .await?;
            rows.iter()
                .map(|row| signing_key_from_row(row, &self.seal))
                .collect()
        }
        .boxed()
    }

    fn insert_signing_key(&self, key: SigningKeyRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut tx = self.write.begin().await?;
            insert_signing_key_in(&mut tx, &self.seal, &key).await?;
            tx.commit().await?;
            Ok(())
        }
        .boxed()
    }

    fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        retired_at: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        async move {
            let mut tx = self.write.begin().await?;
            let retired: Vec<String> = sqlx::query_scalar(
                "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL RETURNING kid",
            )
            .bind(retired_at)
            .fetch_all(&mut *tx)
            .await?;
            insert_signing_key_in(&mut tx, &self.seal, &key).await?;
            tx.commit().await?;
            Ok(retired)
        }
        .boxed()
    }

    fn insert_api_key(&self, key: ApiKeyRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO api_keys (id, name, secret, scopes, can_broker, access_ttl, \
                 session_ttl, idle_timeout, created_at, revoked_at, origins, introspect_any, \
                 max_sessions, dev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&key.id)
            .bind(&key.name)
            .bind(
                self.seal
                    .seal(&format!("api_keys:{}", key.id), &key.secret.as_bytes()[..]),
            )
            .bind(key.scopes.join(" "))
            .bind(i64::from(key.can_broker))
            .bind(key.policy.access_ttl)
            .bind(key.policy.session_ttl)
            .bind(key.policy.idle_timeout)
            .bind(key.created_at)
            .bind(key.revoked_at)
            .bind(key.origins.join(" "))
            .bind(i64::from(key.introspect_any))
            .bind(i64::from(key.max_sessions))
            .bind(i64::from(key.dev))
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn api_key(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<ApiKeyRecord>>> {
        let id = id.to_owned();
        async move {
            let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
            match row {
                Some(r) => api_key_from_row(&r, &self.seal).map(Some),
                // As much work as a key found: its secret would have been unsealed.
                None => {
                    self.seal.open_dummy();
                    Ok(None)
                }
            }
        }
        .boxed()
    }

    fn api_keys(&self) -> BoxFuture<'_, StoreResult<Vec<ApiKeyRecord>>> {
        async move {
            let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
                .fetch_all(&self.read)
                .await?;
            rows.iter()
                .map(|r| api_key_from_row(r, &self.seal))
                .collect()
        }
        .boxed()
    }

    fn set_api_key_origins<'a>(
        &'a self,
        id: &'a str,
        origins: &'a [String],
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let done = sqlx::query("UPDATE api_keys SET origins = ? WHERE id = ?")
                .bind(origins.join(" "))
                .bind(id)
                .execute(&self.write)
                .await?;
            Ok(done.rows_affected() == 1)
        }
        .boxed()
    }

    fn longest_access_ttl(&self) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        async move {
            Ok(
                sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(access_ttl) FROM api_keys")
                    .fetch_one(&self.read)
                    .await?,
            )
        }
        .boxed()
    }

    fn revoke_api_key(&self, id: &str, now: UnixTime) -> BoxFuture<'_, StoreResult<bool>> {
        let id = id.to_owned();
        async move {
            let mut tx = self.write.begin().await?;
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            revoke_in(&mut tx, &Revoke::ApiKey { id: &id }, now).await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        }
        .boxed()
    }

    fn redeem(&self, redemption: Redemption) -> BoxFuture<'_, StoreResult<RedeemOutcome>> {
        async move {
            let (reply, rx) = oneshot::channel();
            self.jobs
                .send(Job { redemption, reply })
                .await
                .map_err(|_| StoreError::Unavailable("store is shutting down".into()))?;
            rx.await
                .map_err(|_| StoreError::Unavailable("store is shutting down".into()))?
        }
        .boxed()
    }

    fn session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?"
            )))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
            Ok(row.as_ref().map(session_from_row).transpose()?)
        }
        .boxed()
    }

    fn sessions_of(&self, subject: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        let subject = subject.to_owned();
        async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE subject = ? ORDER BY created_at DESC, id"
            )))
            .bind(subject)
            .fetch_all(&self.read)
            .await?;
            Ok(rows
                .iter()
                .map(session_from_row)
                .collect::<Result<_, _>>()?)
        }
        .boxed()
    }

    fn touch_session(&self, id: &str, now: UnixTime) -> BoxFuture<'_, StoreResult<()>> {
        let id = id.to_owned();
        async move {
            sqlx::query("UPDATE sessions SET last_used_at = ? WHERE id = ?")
                .bind(now)
                .bind(id)
                .execute(&self.write)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn revoke_sessions<'a>(
        &'a self,
        which: Revoke<'a>,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let mut tx = self.write.begin().await?;
            let n = revoke_in(&mut tx, &which, now).await?;
            tx.commit().await?;
            Ok(n)
        }
        .boxed()
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        old: [u8; 32],
        client_id: &'a str,
        new: [u8; 32],
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<RefreshOutcome>> {
        async move {
            let mut tx = self.write.begin().await?;
            let Some(row) = sqlx::query(
                "SELECT session_id, client_id, spent_at FROM refresh_tokens WHERE hash = ?",
            )
            .bind(&old[..])
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(RefreshOutcome::Invalid);
            };
            let session_id: String = row.try_get("session_id")?;
            let bound_to: String = row.try_get("client_id")?;
            let spent_at: Option<i64> = row.try_get("spent_at")?;
            if bound_to != client_id {
                return Ok(RefreshOutcome::Invalid);
            }
            let session = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?"
            )))
            .bind(&session_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(session) = session.as_ref().map(session_from_row).transpose()? else {
                return Ok(RefreshOutcome::Invalid);
            };
            if spent_at.is_some() {
                let which = Revoke::One {
                    subject: &session.subject,
                    id: &session.id,
                };
                revoke_in(&mut tx, &which, now).await?;
                tx.commit().await?;
                return Ok(RefreshOutcome::Reused);
            }
            match session.check(now) {
                Err(crate::Error::SessionRevoked) => return Ok(RefreshOutcome::Revoked),
                Err(_) => return Ok(RefreshOutcome::Expired),
                Ok(()) => {}
            }
            sqlx::query("UPDATE refresh_tokens SET spent_at = ? WHERE hash = ?")
                .bind(now)
                .bind(&old[..])
                .execute(&mut *tx)
                .await?;
            insert_refresh(&mut tx, &new, &session.id, client_id, now).await?;
            sqlx::query("UPDATE sessions SET last_used_at = ? WHERE id = ?")
                .bind(now)
                .bind(&session.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(RefreshOutcome::Rotated(Box::new(SessionRecord {
                last_used_at: now,
                ..session
            })))
        }
        .boxed()
    }

    fn insert_broker_token(&self, g: BrokerGrant) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO broker_tokens (hash, api_key, endpoint_id, role, expires_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&g.hash[..])
            .bind(&g.api_key)
            .bind(&g.endpoint_id)
            .bind(&g.role)
            .bind(g.expires_at)
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn exchange_broker_token(
        &self,
        hash: [u8; 32],
        session: NewSession,
        now: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Option<(SessionRecord, String)>>> {
        async move {
            let mut tx = self.write.begin().await?;
            let Some(grant) = sqlx::query(
                "UPDATE broker_tokens SET used_at = ? \
                 WHERE hash = ? AND used_at IS NULL AND expires_at > ? \
                 AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = broker_tokens.api_key \
                             AND k.revoked_at IS NULL AND k.can_broker != 0) \
                 RETURNING api_key, endpoint_id, role",
            )
            .bind(now)
            .bind(&hash[..])
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(None);
            };
            let api_key: String = grant.try_get("api_key")?;
            let endpoint_id: String = grant.try_get("endpoint_id")?;
            let role: String = grant.try_get("role")?;
            let policy = sqlx::query("SELECT session_ttl, idle_timeout FROM api_keys WHERE id = ?")
                .bind(&api_key)
                .fetch_one(&mut *tx)
                .await?;
            let record = brokered_session(
                session,
                api_key,
                &endpoint_id,
                policy.try_get("session_ttl")?,
                policy.try_get("idle_timeout")?,
                now,
            );
            sqlx::query(
                "INSERT INTO sessions (id, subject, api_key, client_id, scope, created_at, \
                 last_used_at, expires_at, idle_timeout, user_agent, address) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&record.id)
            .bind(&record.subject)
            .bind(&record.api_key)
            .bind(&record.client_id)
            .bind(&record.scope)
            .bind(now)
            .bind(now)
            .bind(record.expires_at)
            .bind(record.idle_timeout)
            .bind(&record.user_agent)
            .bind(&record.address)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some((record, role)))
        }
        .boxed()
    }

    fn revocation_cursor(&self) -> BoxFuture<'_, StoreResult<i64>> {
        async move {
            Ok(
                sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM revocations")
                    .fetch_one(&self.read)
                    .await?,
            )
        }
        .boxed()
    }

    fn revocations_since(
        &self,
        since: i64,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<RevocationEvent>>> {
        async move {
            let rows = sqlx::query(
                "SELECT seq, session_id, revoked_at, expires_at FROM revocations \
                 WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
            rows.iter().map(revocation_from_row).collect()
        }
        .boxed()
    }

    fn live_session_count<'a>(
        &'a self,
        subject: &'a str,
        api_key: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sessions WHERE subject = ?1 AND api_key = ?2 \
                 AND revoked_at IS NULL AND expires_at > ?3 AND last_used_at + idle_timeout > ?3",
            )
            .bind(subject)
            .bind(api_key)
            .bind(now)
            .fetch_one(&self.read)
            .await?;
            Ok(n.max(0) as u64)
        }
        .boxed()
    }

    fn purge_expired(&self, before: UnixTime, limit: u32) -> BoxFuture<'_, StoreResult<Purged>> {
        async move {
            let limit = i64::from(limit);
            let mut tx = self.write.begin().await?;
            let nonces = sqlx::query(
                "DELETE FROM used_nonces WHERE (expires_at, nonce) IN (SELECT expires_at, nonce \
                 FROM used_nonces WHERE expires_at < ? ORDER BY expires_at LIMIT ?)",
            )
            .bind(before)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let gone: Vec<String> = sqlx::query_scalar(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE expires_at < ? ORDER BY expires_at LIMIT ?) RETURNING id",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut refresh_tokens = 0;
            if !gone.is_empty() {
                let ids = serde_json::to_string(&gone)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                refresh_tokens = sqlx::query(
                    "DELETE FROM refresh_tokens WHERE session_id IN (SELECT value FROM json_each(?))",
                )
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "DELETE FROM session_mfa WHERE session_id IN (SELECT value FROM json_each(?))",
                )
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            }
            // Feed entries and brokered token ids: by their own expiry.
            let mut expired = [0u64; 2];
            for (n, (table, key)) in expired
                .iter_mut()
                .zip([("revocations", "seq"), ("broker_tokens", "hash")])
            {
                *n = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} \
                     WHERE expires_at < ? ORDER BY expires_at LIMIT ?)"
                )))
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            let [revocations, broker_tokens] = expired;
            tx.commit().await?;
            Ok(Purged {
                nonces,
                sessions: gone.len() as u64,
                refresh_tokens,
                revocations,
                broker_tokens,
            })
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            self.read.close().await;
            self.write.close().await;
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_few_fixed_shapes() {
        assert_eq!(chunks(0).count(), 0);
        assert_eq!(chunks(1).collect::<Vec<_>>(), [1]);
        assert_eq!(chunks(87).collect::<Vec<_>>(), [64, 16, 4, 1, 1, 1]);
        assert_eq!(chunks(MAX_BATCH).sum::<usize>(), MAX_BATCH);
        assert_eq!(
            values_sql("INSERT INTO t (a, b)", 2, 2, " RETURNING a"),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) RETURNING a"
        );
    }

    fn redemption(nonce: u8, sid: &str, api_key: &str) -> Redemption {
        Redemption {
            nonce_id: [nonce; 16],
            nonce_expires_at: 2_000_000_000,
            session: NewSession {
                id: sid.into(),
                subject: "bbaareisubject".into(),
                api_key: api_key.into(),
                client_id: Some("cli".into()),
                scope: String::new(),
                created_at: 1_000,
                expires_at: 50_000,
                idle_timeout: 10_000,
                user_agent: None,
                address: None,
            },
            refresh: Some(([nonce; 32], "cli".into())),
            renew: None,
        }
    }

    /// One batch holding every case at once has the outcomes of running its jobs
    /// one by one.
    #[tokio::test]
    async fn a_batch_has_the_outcomes_of_its_jobs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db").display().to_string())
            .await
            .unwrap();
        for (id, revoked_at) in [("kgk_live", None), ("kgk_gone", Some(5))] {
            let key = crate::apikey::generate(&mut keygate_core::entropy::os_rng());
            store
                .insert_api_key(ApiKeyRecord {
                    revoked_at,
                    ..ApiKeyRecord::new(id.into(), id.into(), key.secret, 1)
                })
                .await
                .unwrap();
        }
        // A nonce spent by an earlier batch.
        let first = store.redeem(redemption(9, "s0", "kgk_live")).await;
        assert_eq!(first, Ok(RedeemOutcome::Created));
        let jobs: Vec<Job> = [
            redemption(1, "s1", "kgk_live"),
            redemption(1, "s2", "kgk_live"),
            redemption(9, "s3", "kgk_live"),
            redemption(2, "s4", "kgk_gone"),
            redemption(3, "s5", "kgk_live"),
        ]
        .into_iter()
        .map(|redemption| Job {
            redemption,
            reply: oneshot::channel().0,
        })
        .collect();
        let outcomes = commit_batch(&store.write, &jobs).await.unwrap();
        use RedeemOutcome::*;
        assert_eq!(
            outcomes,
            [
                Created,
                ChallengeUsed,
                ChallengeUsed,
                ApiKeyRevoked,
                Created
            ]
        );
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM sessions ORDER BY id")
            .fetch_all(&store.read)
            .await
            .unwrap();
        assert_eq!(ids, ["s0", "s1", "s5"]);
        let refresh: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens")
            .fetch_one(&store.read)
            .await
            .unwrap();
        assert_eq!(refresh, 3);
        // The revoked key's nonce is spent all the same.
        let again = store.redeem(redemption(2, "s6", "kgk_live")).await;
        assert_eq!(again, Ok(ChallengeUsed));
    }

    /// A key written before schema v4 keeps its meaning: no origins besides its
    /// id, no right to introspect other apps' tokens, the default session cap.
    #[tokio::test]
    async fn keys_from_before_v4_get_no_extra_rights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        let mut old = migrator();
        old.migrations = old.migrations[..3].to_vec().into();
        old.run(&pool).await.unwrap();
        let seal = super::super::seal::MasterKey::for_database(Some(&path)).unwrap();
        let secret = crate::apikey::generate(&mut keygate_core::entropy::os_rng()).secret;
        sqlx::query(
            "INSERT INTO api_keys (id, name, secret, scopes, can_broker, access_ttl, \
             session_ttl, idle_timeout, created_at) VALUES ('kgk_old', 'old', ?, 'read', 1, \
             600, 3600, 600, 5)",
        )
        .bind(seal.seal("api_keys:kgk_old", &secret.as_bytes()[..]))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let store = SqliteStore::open(&path.display().to_string())
            .await
            .unwrap();
        let k = store.api_key("kgk_old").await.unwrap().unwrap();
        assert_eq!(k.secret, secret);
        assert_eq!(
            (&k.scopes[..], k.can_broker),
            (&["read".to_owned()][..], true)
        );
        assert!(k.origins.is_empty());
        assert!(!k.introspect_any);
        assert_eq!(k.max_sessions, DEFAULT_MAX_SESSIONS);
        assert!(k.may_use_audience("kgk_old"));
        assert!(!k.may_use_audience("https://app.example"));
    }
}
