//! The shared store: PostgreSQL, for several Hub nodes on one database.
//!
//! Semantics are those of the SQLite store, held across nodes by the database:
//! a nonce is spent by `INSERT … ON CONFLICT DO NOTHING` on its primary key (a
//! second node inserting the same nonce waits for the first to commit, then
//! inserts nothing), refresh rotation locks the token's row (`FOR UPDATE`), and
//! appends to the revocation feed are serialized so that its cursor never skips.
//!
//! Sign-ins are group-committed as on SQLite: a dispatcher drains whatever is
//! waiting (up to [`MAX_BATCH`]) into one transaction of a few array-bound
//! statements (`UNNEST`), one commit for the whole batch; up to [`COMMITTERS`]
//! batches are in flight at once, so a node keeps the database busy while a
//! commit waits for its WAL flush.
//!
//! The master key that seals secrets comes from `KEYGATE_MASTER_KEY` or the file
//! `KEYGATE_MASTER_KEY_FILE` names: there is no file beside the database to keep
//! it in, and every node needs the same key.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::migrate::{MigrateDatabase, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::rows::{
    SESSION_COLUMNS, api_key_from_row, brokered_session, revocation_from_row, session_from_row,
    signing_key_from_row,
};
use super::*;

/// Most sign-ins committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Batches committing at once on one node.
pub const COMMITTERS: usize = 4;
/// Connections per node: the committers, and as many again for everything else.
const CONNECTIONS: u32 = 16;
/// How long a request waits for a connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

struct Job {
    redemption: Redemption,
    reply: oneshot::Sender<StoreResult<RedeemOutcome>>,
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    jobs: mpsc::Sender<Job>,
    seal: Arc<super::seal::MasterKey>,
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
        step(1, "init", include_str!("postgres/0001_init.sql")),
        step(2, "accounts", include_str!("postgres/0002_accounts.sql")),
        step(
            3,
            "app_rights",
            include_str!("postgres/0003_app_rights.sql"),
        ),
    ])
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// creating the database if it does not exist and the role may, and applies
    /// migrations (under PostgreSQL's advisory lock, so nodes starting together
    /// migrate once).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let seal = super::seal::MasterKey::for_database(None)?;
        let opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Internal(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(opts);
        if let Err(e) = pool.acquire().await {
            if !is_missing_database(&e) {
                return Err(e.into());
            }
            match Postgres::create_database(url).await {
                Ok(()) => tracing::info!("created the PostgreSQL database"),
                // Another node created it meanwhile.
                Err(e) if is_duplicate_database(&e) => {}
                Err(e) => {
                    return Err(StoreError::Internal(format!(
                        "the database does not exist and cannot be created: {e}"
                    )));
                }
            }
        }
        migrator().run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => StoreError::from(e),
            e => StoreError::Internal(e.to_string()),
        })?;
        let (jobs, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(group_committer(pool.clone(), rx));
        Ok(PostgresStore {
            pool,
            jobs,
            seal: Arc::new(seal),
        })
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("3D000")
}

fn is_duplicate_database(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("42P04" | "23505"))
}

/// Takes up to [`MAX_BATCH`] waiting sign-ins at a time and commits each batch on
/// its own task, at most [`COMMITTERS`] at once: while all are busy, arrivals
/// wait and form the next, larger batch.
async fn group_committer(pool: PgPool, mut rx: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(COMMITTERS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let result = commit_batch(&pool, &batch).await;
            drop(slot);
            match result {
                Ok(outcomes) => {
                    for (job, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    for job in batch {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Commits a batch of redemptions in one transaction with one statement per
/// table, rows bound as arrays. Outcomes are those of running the jobs one by one
/// in order (the first of two jobs with one nonce wins).
async fn commit_batch(pool: &PgPool, batch: &[Job]) -> StoreResult<Vec<RedeemOutcome>> {
    let mut tx = pool.begin().await?;
    // 1. Spend the nonces, in sorted order so that two batches sharing nonces
    //    take their row locks in the same order (no deadlock). RETURNING names
    //    the nonces that were not spent before.
    let mut seen = HashSet::with_capacity(batch.len());
    let mut fresh: Vec<&Redemption> = batch
        .iter()
        .map(|j| &j.redemption)
        .filter(|r| seen.insert(r.nonce_id))
        .collect();
    fresh.sort_by_key(|r| r.nonce_id);
    let nonces: Vec<&[u8]> = fresh.iter().map(|r| &r.nonce_id[..]).collect();
    let expiries: Vec<i64> = fresh.iter().map(|r| r.nonce_expires_at).collect();
    let rows = sqlx::query(
        "INSERT INTO used_nonces (nonce, expires_at) \
         SELECT * FROM UNNEST($1::bytea[], $2::int8[]) ON CONFLICT DO NOTHING RETURNING nonce",
    )
    .bind(&nonces)
    .bind(&expiries)
    .fetch_all(&mut *tx)
    .await?;
    let mut spent_now: HashSet<[u8; 16]> = HashSet::with_capacity(rows.len());
    for row in rows {
        let nonce: Vec<u8> = row.try_get(0)?;
        if let Ok(n) = <[u8; 16]>::try_from(nonce.as_slice()) {
            spent_now.insert(n);
        }
    }
    // 2. Which app keys involved are live. FOR SHARE holds a revocation of the
    //    key (an UPDATE of its row) until this batch has committed, so that the
    //    revocation then sees, and revokes, the sessions made here.
    let mut keys: Vec<&str> = batch
        .iter()
        .filter(|j| j.redemption.renew.is_none())
        .map(|j| j.redemption.session.api_key.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let live: HashSet<String> = if keys.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE id = ANY($1) AND revoked_at IS NULL \
             ORDER BY id FOR SHARE",
        )
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect()
    };
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
                "UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND subject = $3 \
                 AND api_key = $4 AND revoked_at IS NULL AND expires_at > $1 \
                 AND last_used_at + idle_timeout > $1 RETURNING {SESSION_COLUMNS}"
            )))
            .bind(s.created_at)
            .bind(sid)
            .bind(&s.subject)
            .bind(&s.api_key)
            .fetch_optional(&mut *tx)
            .await?;
            outcomes.push(match row {
                Some(row) => RedeemOutcome::Renewed(Box::new(session_from_row(&row)?)),
                None => RedeemOutcome::SessionGone,
            });
            continue;
        }
        if !live.contains(&s.api_key) {
            outcomes.push(RedeemOutcome::ApiKeyRevoked);
            continue;
        }
        created.push(r);
        outcomes.push(RedeemOutcome::Created);
    }
    // 4. The new sessions, then their refresh tokens: one statement each.
    if !created.is_empty() {
        let col = |f: fn(&NewSession) -> &str| -> Vec<&str> {
            created.iter().map(|r| f(&r.session)).collect()
        };
        let opt = |f: fn(&NewSession) -> Option<&str>| -> Vec<Option<&str>> {
            created.iter().map(|r| f(&r.session)).collect()
        };
        let int = |f: fn(&NewSession) -> i64| -> Vec<i64> {
            created.iter().map(|r| f(&r.session)).collect()
        };
        sqlx::query(
            "INSERT INTO sessions (id, subject, api_key, client_id, scope, created_at, \
             last_used_at, expires_at, idle_timeout, user_agent, address) \
             SELECT id, subject, api_key, client_id, scope, created_at, created_at, expires_at, \
             idle_timeout, user_agent, address FROM UNNEST($1::text[], $2::text[], $3::text[], \
             $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::text[], $10::text[]) \
             AS t(id, subject, api_key, client_id, scope, created_at, expires_at, idle_timeout, \
             user_agent, address)",
        )
        .bind(col(|s| &s.id))
        .bind(col(|s| &s.subject))
        .bind(col(|s| &s.api_key))
        .bind(opt(|s| s.client_id.as_deref()))
        .bind(col(|s| &s.scope))
        .bind(int(|s| s.created_at))
        .bind(int(|s| s.expires_at))
        .bind(int(|s| s.idle_timeout))
        .bind(opt(|s| s.user_agent.as_deref()))
        .bind(opt(|s| s.address.as_deref()))
        .execute(&mut *tx)
        .await?;
    }
    let refresh: Vec<(&[u8; 32], &str, &NewSession)> = created
        .iter()
        .filter_map(|r| {
            let (hash, client) = r.refresh.as_ref()?;
            Some((hash, client.as_str(), &r.session))
        })
        .collect();
    if !refresh.is_empty() {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, client_id, created_at) \
             SELECT * FROM UNNEST($1::bytea[], $2::text[], $3::text[], $4::int8[])",
        )
        .bind(refresh.iter().map(|(h, _, _)| &h[..]).collect::<Vec<_>>())
        .bind(
            refresh
                .iter()
                .map(|(_, _, s)| &s.id[..])
                .collect::<Vec<_>>(),
        )
        .bind(refresh.iter().map(|(_, c, _)| *c).collect::<Vec<_>>())
        .bind(
            refresh
                .iter()
                .map(|(_, _, s)| s.created_at)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn insert_refresh(
    tx: &mut Transaction<'_, Postgres>,
    hash: &[u8; 32],
    session_id: &str,
    client_id: &str,
    now: UnixTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, client_id, created_at) \
         VALUES ($1, $2, $3, $4)",
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
///
/// The feed is locked (EXCLUSIVE: plain reads go on) before its sequence numbers
/// are drawn and until commit, so entries become visible in sequence order: a
/// reader that has seen entry n has seen every entry before it, and its cursor
/// skips none. The lock is taken last, after the session rows, so a transaction
/// holding it never waits for anything else.
async fn revoke_in(
    tx: &mut Transaction<'_, Postgres>,
    which: &Revoke<'_>,
    now: UnixTime,
) -> StoreResult<u64> {
    const SET: &str = "UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL";
    const RET: &str = "RETURNING id, expires_at";
    let query = match which {
        Revoke::One { subject, id } => sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SET} AND subject = $2 AND id = $3 {RET}"
        )))
        .bind(now)
        .bind(*subject)
        .bind(*id),
        Revoke::AllOf { subject } => {
            sqlx::query(sqlx::AssertSqlSafe(format!("{SET} AND subject = $2 {RET}")))
                .bind(now)
                .bind(*subject)
        }
        Revoke::AllOfExcept { subject, keep } => sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SET} AND subject = $2 AND id != $3 {RET}"
        )))
        .bind(now)
        .bind(*subject)
        .bind(*keep),
        Revoke::ApiKey { id } => {
            sqlx::query(sqlx::AssertSqlSafe(format!("{SET} AND api_key = $2 {RET}")))
                .bind(now)
                .bind(*id)
        }
        Revoke::Beyond {
            subject,
            api_key,
            keep,
        } => sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SET} AND id IN (SELECT id FROM sessions WHERE subject = $2 AND api_key = $3 \
             AND revoked_at IS NULL AND expires_at > $1 AND last_used_at + idle_timeout > $1 \
             ORDER BY created_at DESC, id DESC OFFSET $4) {RET}"
        )))
        .bind(now)
        .bind(*subject)
        .bind(*api_key)
        .bind(i64::from(*keep)),
    };
    let rows = query.fetch_all(&mut **tx).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut expiries = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.try_get::<String, _>("id")?);
        expiries.push(row.try_get::<i64, _>("expires_at")?);
    }
    sqlx::query("LOCK TABLE revocations IN EXCLUSIVE MODE")
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO revocations (session_id, revoked_at, expires_at) \
         SELECT id, $3, exp FROM UNNEST($1::text[], $2::int8[]) AS t(id, exp)",
    )
    .bind(&ids)
    .bind(&expiries)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(rows.len() as u64)
}

impl Store for PostgresStore {
    fn secret_or_insert(
        &self,
        name: &str,
        fresh: Vec<u8>,
        now: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Vec<u8>>> {
        let name = name.to_owned();
        async move {
            let context = format!("server_secrets:{name}");
            sqlx::query(
                "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&name)
            .bind(self.seal.seal(&context, &fresh))
            .bind(now)
            .execute(&self.pool)
            .await?;
            let sealed: Vec<u8> =
                sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                    .bind(&name)
                    .fetch_one(&self.pool)
                    .await?;
            self.seal.open(&context, &sealed)
        }
        .boxed()
    }

    fn signing_keys(&self) -> BoxFuture<'_, StoreResult<Vec<SigningKeyRecord>>> {
        async move {
            let rows = sqlx::query(
                "SELECT kid, secret, created_at, retired_at FROM signing_keys \
                 ORDER BY created_at, kid",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| signing_key_from_row(row, &self.seal))
                .collect()
        }
        .boxed()
    }

    fn insert_signing_key(&self, key: SigningKeyRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut tx = self.pool.begin().await?;
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
            let mut tx = self.pool.begin().await?;
            // Concurrent rotations take turns: each retires the key the last added.
            sqlx::query("LOCK TABLE signing_keys IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
            let retired: Vec<String> = sqlx::query_scalar(
                "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL RETURNING kid",
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
                 max_sessions, dev) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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
            .execute(&self.pool)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn api_key(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<ApiKeyRecord>>> {
        let id = id.to_owned();
        async move {
            let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
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
                .fetch_all(&self.pool)
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
            let done = sqlx::query("UPDATE api_keys SET origins = $1 WHERE id = $2")
                .bind(origins.join(" "))
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }
        .boxed()
    }

    fn longest_access_ttl(&self) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        async move {
            Ok(
                sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(access_ttl) FROM api_keys")
                    .fetch_one(&self.pool)
                    .await?,
            )
        }
        .boxed()
    }

    fn revoke_api_key(&self, id: &str, now: UnixTime) -> BoxFuture<'_, StoreResult<bool>> {
        let id = id.to_owned();
        async move {
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
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
            let gone = || StoreError::Unavailable("store is shutting down".into());
            self.jobs
                .send(Job { redemption, reply })
                .await
                .map_err(|_| gone())?;
            rx.await.map_err(|_| gone())?
        }
        .boxed()
    }

    fn session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.as_ref().map(session_from_row).transpose()?)
        }
        .boxed()
    }

    fn sessions_of(&self, subject: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        let subject = subject.to_owned();
        async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE subject = $1 \
                 ORDER BY created_at DESC, id"
            )))
            .bind(subject)
            .fetch_all(&self.pool)
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
            sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
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
            let mut tx = self.pool.begin().await?;
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
            let mut tx = self.pool.begin().await?;
            // The row lock makes concurrent rotations of one token, on any node,
            // take turns: the second sees it spent.
            let Some(row) = sqlx::query(
                "SELECT session_id, client_id, spent_at FROM refresh_tokens WHERE hash = $1 \
                 FOR UPDATE",
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
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 FOR UPDATE"
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
            sqlx::query("UPDATE refresh_tokens SET spent_at = $1 WHERE hash = $2")
                .bind(now)
                .bind(&old[..])
                .execute(&mut *tx)
                .await?;
            insert_refresh(&mut tx, &new, &session.id, client_id, now).await?;
            sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
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
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&g.hash[..])
            .bind(&g.api_key)
            .bind(&g.endpoint_id)
            .bind(&g.role)
            .bind(g.expires_at)
            .execute(&self.pool)
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
            let mut tx = self.pool.begin().await?;
            let Some(grant) = sqlx::query(
                "UPDATE broker_tokens SET used_at = $1 \
                 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 \
                 AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = broker_tokens.api_key \
                             AND k.revoked_at IS NULL AND k.can_broker != 0) \
                 RETURNING api_key, endpoint_id, role",
            )
            .bind(now)
            .bind(&hash[..])
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(None);
            };
            let api_key: String = grant.try_get("api_key")?;
            let endpoint_id: String = grant.try_get("endpoint_id")?;
            let role: String = grant.try_get("role")?;
            // FOR SHARE: a revocation of the key waits for this session to exist.
            let policy = sqlx::query(
                "SELECT session_ttl, idle_timeout FROM api_keys WHERE id = $1 \
                 AND revoked_at IS NULL FOR SHARE",
            )
            .bind(&api_key)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(policy) = policy else {
                return Ok(None);
            };
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
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10)",
            )
            .bind(&record.id)
            .bind(&record.subject)
            .bind(&record.api_key)
            .bind(&record.client_id)
            .bind(&record.scope)
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
                sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0)::int8 FROM revocations")
                    .fetch_one(&self.pool)
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
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
                "SELECT COUNT(*) FROM sessions WHERE subject = $1 AND api_key = $2 \
                 AND revoked_at IS NULL AND expires_at > $3 AND last_used_at + idle_timeout > $3",
            )
            .bind(subject)
            .bind(api_key)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
            Ok(n.max(0) as u64)
        }
        .boxed()
    }

    fn purge_expired(&self, before: UnixTime, limit: u32) -> BoxFuture<'_, StoreResult<Purged>> {
        async move {
            let limit = i64::from(limit);
            let mut tx = self.pool.begin().await?;
            // Nonces, feed entries and brokered token ids: by their own expiry.
            let mut expired = [0u64; 3];
            for (n, (table, key)) in expired.iter_mut().zip([
                ("used_nonces", "nonce"),
                ("revocations", "seq"),
                ("broker_tokens", "hash"),
            ]) {
                *n = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} \
                     WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)"
                )))
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            let [nonces, revocations, broker_tokens] = expired;
            // One statement: the sessions, then what hangs off the ones it deleted.
            let (sessions, refresh_tokens): (i64, i64) = sqlx::query_as(
                "WITH gone AS (DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE expires_at < $1 ORDER BY expires_at LIMIT $2) RETURNING id), \
                 r AS (DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM gone) \
                 RETURNING 1), \
                 m AS (DELETE FROM session_mfa WHERE session_id IN (SELECT id FROM gone) \
                 RETURNING 1) \
                 SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM r)",
            )
            .bind(before)
            .bind(limit)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Purged {
                nonces,
                sessions: sessions.max(0) as u64,
                refresh_tokens: refresh_tokens.max(0) as u64,
                revocations,
                broker_tokens,
            })
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move { self.pool.close().await }.boxed()
    }
}

async fn insert_signing_key_in(
    tx: &mut Transaction<'_, Postgres>,
    seal: &super::seal::MasterKey,
    key: &SigningKeyRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, secret, created_at, retired_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.kid)
    .bind(seal.seal(&format!("signing_keys:{}", key.kid), &key.secret[..]))
    .bind(key.created_at)
    .bind(key.retired_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
