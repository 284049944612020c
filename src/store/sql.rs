//! The one SQL store: every statement and every piece of row handling of the
//! [`Store`] and [`AccountStore`](super::AccountStore) written once, generic over
//! the database. `sqlite.rs` and `postgres.rs` add only what must differ: how a
//! database is opened (pools, pragmas, migrations), the group-commit batch's bulk
//! statements, the purge of expired sessions, and which locks a statement takes.
//!
//! Statements use numbered parameters (`$1`, `$2`, …): PostgreSQL's syntax, which
//! sqlx's SQLite driver binds as the same positions (SQLite reads `$1` as a
//! parameter named "$1", the same parameter wherever it appears). Columns are
//! text, 64-bit integers and bytes in both schemas, so one set of binds serves.
//!
//! Sign-ins are group-committed: a dispatcher drains whatever is waiting (up to
//! [`MAX_BATCH`]) into one transaction, so N concurrent sign-ins cost one commit,
//! not N; up to [`Backend::COMMITTERS`] batches are in flight at once (one on
//! SQLite's single writer connection). Each caller learns its own outcome only
//! after the commit is durable.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::rows::{
    Columns, SESSION_COLUMNS, api_key_from_row, brokered_session, revocation_from_row,
    session_from_row, signing_key_from_row,
};
use super::seal::MasterKey;
use super::*;

mod accounts;

/// Most sign-ins committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// A sign-in waiting for the group commit.
pub struct Job {
    pub redemption: Redemption,
    pub reply: oneshot::Sender<StoreResult<RedeemOutcome>>,
}

/// What the SQL store needs of a database beyond the statements it shares.
pub trait Backend: Database<Row: Columns, Arguments: IntoArguments<Self>> {
    /// Group-commit batches in flight at once.
    const COMMITTERS: usize;
    /// Appended to a read whose rows must not be updated by others until commit
    /// (PostgreSQL `FOR SHARE`); empty where one connection does all the writing.
    const FOR_SHARE: &'static str;
    /// Appended to a read whose rows this transaction will update and others must
    /// wait for (PostgreSQL `FOR UPDATE`); empty where writes are serialized.
    const FOR_UPDATE: &'static str;

    /// The statement that makes concurrent writers of `table` take turns until
    /// commit, where they would not anyway.
    fn lock_exclusive(table: &str) -> Option<String>;

    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Inserts the nonces of a batch (distinct, sorted) as spent; returns a row
    /// (column `nonce`) for each that was not spent before.
    fn spend_nonces<'a>(
        conn: &'a mut Self::Connection,
        fresh: &'a [&'a Redemption],
    ) -> BoxFuture<'a, StoreResult<Vec<Self::Row>>>;

    /// Inserts the new sessions of a batch, then their refresh tokens.
    fn insert_sessions<'a>(
        conn: &'a mut Self::Connection,
        created: &'a [&'a Redemption],
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Deletes at most `limit` sessions ended before `before`, oldest first,
    /// with their refresh tokens and second-factor state; returns how many
    /// sessions and refresh tokens went.
    fn purge_sessions(
        conn: &mut Self::Connection,
        before: UnixTime,
        limit: i64,
    ) -> BoxFuture<'_, StoreResult<(u64, u64)>>;
}

/// The store on database `B`. Cheap to clone.
pub struct SqlStore<B: Backend> {
    /// Where writes go (SQLite: its one writer connection).
    pub(super) write: Pool<B>,
    /// Where plain reads go (PostgreSQL: the same pool).
    pub(super) read: Pool<B>,
    jobs: mpsc::Sender<Job>,
    seal: Arc<MasterKey>,
}

impl<B: Backend> Clone for SqlStore<B> {
    fn clone(&self) -> Self {
        SqlStore {
            write: self.write.clone(),
            read: self.read.clone(),
            jobs: self.jobs.clone(),
            seal: self.seal.clone(),
        }
    }
}

/// A database's migrations from (version, name, SQL) steps, in order.
pub(super) fn migrator(steps: &[(i64, &str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        steps
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    name.to_owned().into(),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// `INSERT … VALUES ($1, $2), ($3, $4) …`: `rows` groups of `columns` numbered
/// placeholders.
pub(super) fn values_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let groups: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!("{head} VALUES {}{tail}", groups.join(", "))
}

/// Row counts of the multi-row statements rows are cut into: a few fixed
/// shapes, so that each is prepared once and then found in sqlx's statement cache.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Cuts `rows` into chunks of the sizes in [`CHUNKS`], largest first.
pub(super) fn chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNKS.into_iter().find(|&c| c <= rows.len())?;
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

// The impl blocks of `SqlStore` (here and in `accounts.rs`) repeat these bounds:
// Rust does not carry bounds on types other than `Self` (and its associated
// types) from a trait's declaration to its users, so `Backend` cannot state them
// once. They say: statements run on a connection, and the values the schemas
// hold (64-bit integers, text, bytes, and NULL for the first two) bind. Rows are
// read through `Columns`, which `Backend` does require.
impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut B::Connection: Executor<'c, Database = B>,
    for<'q> i64: Encode<'q, B> + Type<B>,
    for<'q> Option<i64>: Encode<'q, B> + Type<B>,
    for<'q> &'q str: Encode<'q, B> + Type<B>,
    for<'q> Option<&'q str>: Encode<'q, B> + Type<B>,
    for<'q> &'q [u8]: Encode<'q, B> + Type<B>,
{
    /// A store on open pools (migrated), with its group committer running.
    pub(super) fn start(write: Pool<B>, read: Pool<B>, seal: MasterKey) -> Self {
        let (jobs, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(Self::group_committer(write.clone(), rx));
        SqlStore {
            write,
            read,
            jobs,
            seal: Arc::new(seal),
        }
    }

    /// Takes up to [`MAX_BATCH`] waiting sign-ins at a time and commits each
    /// batch on its own task, at most [`Backend::COMMITTERS`] at once: while all
    /// are busy, arrivals wait and form the next, larger batch.
    async fn group_committer(pool: Pool<B>, mut rx: mpsc::Receiver<Job>) {
        let slots = Arc::new(Semaphore::new(B::COMMITTERS));
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
                let result = Self::commit_batch(&pool, &batch).await;
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

    /// Commits a batch of redemptions in one transaction, with a few bulk
    /// statements rather than two statements per sign-in. Outcomes are those of
    /// running the jobs one by one in order (the first of two jobs with one nonce
    /// wins).
    pub(super) async fn commit_batch(
        pool: &Pool<B>,
        batch: &[Job],
    ) -> StoreResult<Vec<RedeemOutcome>> {
        let mut tx = pool.begin().await?;
        // 1. Spend the nonces, in sorted order so that two batches sharing nonces
        //    take their row locks in the same order (no deadlock). A nonce
        //    repeated inside the batch is used from its second job on.
        let mut seen = HashSet::with_capacity(batch.len());
        let mut fresh: Vec<&Redemption> = batch
            .iter()
            .map(|j| &j.redemption)
            .filter(|r| seen.insert(r.nonce_id))
            .collect();
        fresh.sort_by_key(|r| r.nonce_id);
        let mut spent_now: HashSet<[u8; 16]> = HashSet::with_capacity(fresh.len());
        for row in B::spend_nonces(&mut tx, &fresh).await? {
            if let Ok(n) = <[u8; 16]>::try_from(row.bytes("nonce")?.as_slice()) {
                spent_now.insert(n);
            }
        }
        // 2. Which app keys involved are live, in sorted order. FOR SHARE holds a
        //    revocation of the key (an UPDATE of its row) until this batch has
        //    committed, so that the revocation then sees, and revokes, the
        //    sessions made here (on SQLite the write lock taken above does).
        let mut keys: Vec<&str> = batch
            .iter()
            .filter(|j| j.redemption.renew.is_none())
            .map(|j| j.redemption.session.api_key.as_str())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut live: HashSet<&str> = HashSet::with_capacity(keys.len());
        let sql = format!(
            "SELECT 1 AS live FROM api_keys WHERE id = $1 AND revoked_at IS NULL{}",
            B::FOR_SHARE
        );
        for key in keys {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_some() {
                live.insert(key);
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
                    "UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND subject = $3 \
                     AND api_key = $4 AND revoked_at IS NULL AND expires_at > $1 \
                     AND last_used_at + idle_timeout > $1 RETURNING {SESSION_COLUMNS}"
                )))
                .bind(s.created_at)
                .bind(sid.as_str())
                .bind(s.subject.as_str())
                .bind(s.api_key.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                outcomes.push(match row {
                    Some(row) => RedeemOutcome::Renewed(Box::new(session_from_row(&row)?)),
                    None => RedeemOutcome::SessionGone,
                });
                continue;
            }
            if !live.contains(s.api_key.as_str()) {
                outcomes.push(RedeemOutcome::ApiKeyRevoked);
                continue;
            }
            created.push(r);
            outcomes.push(RedeemOutcome::Created);
        }
        // 4. The new sessions, then their refresh tokens.
        if !created.is_empty() {
            B::insert_sessions(&mut tx, &created).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn insert_signing_key_in(
        tx: &mut Transaction<'_, B>,
        seal: &MasterKey,
        key: &SigningKeyRecord,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, secret, created_at, retired_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(key.kid.as_str())
        .bind(&seal.seal(&format!("signing_keys:{}", key.kid), &key.secret[..])[..])
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub(super) async fn insert_refresh(
        conn: &mut B::Connection,
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
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Records a nonce as spent; false if it already was.
    async fn spend_nonce(
        conn: &mut B::Connection,
        id: &[u8; 16],
        expires_at: UnixTime,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO used_nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&id[..])
        .bind(expires_at)
        .execute(conn)
        .await?;
        Ok(B::rows_affected(&done) == 1)
    }

    /// The account of a key, inside a transaction.
    async fn account_in(conn: &mut B::Connection, identity: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT account_id FROM account_keys WHERE identity = $1")
            .bind(identity)
            .fetch_optional(conn)
            .await?;
        Ok(row.map(|r| r.text("account_id")).transpose()?)
    }

    /// Revokes the sessions `UPDATE … WHERE` picks and appends them to the feed.
    ///
    /// Where writers are concurrent (PostgreSQL) the feed is locked (EXCLUSIVE:
    /// plain reads go on) before its sequence numbers are drawn and until commit,
    /// so entries become visible in sequence order: a reader that has seen entry
    /// n has seen every entry before it, and its cursor skips none. The lock is
    /// taken last, after the session rows, so a transaction holding it never
    /// waits for anything else.
    async fn revoke_in(
        tx: &mut Transaction<'_, B>,
        which: &Revoke<'_>,
        now: UnixTime,
    ) -> StoreResult<u64> {
        // The sessions picked, by $2, $3 … (text) then any integers after them.
        let (pick, texts, ints): (&str, Vec<&str>, Vec<i64>) = match *which {
            Revoke::One { subject, id } => ("subject = $2 AND id = $3", vec![subject, id], vec![]),
            Revoke::AllOf { subject } => ("subject = $2", vec![subject], vec![]),
            Revoke::AllOfExcept { subject, keep } => {
                ("subject = $2 AND id != $3", vec![subject, keep], vec![])
            }
            Revoke::ApiKey { id } => ("api_key = $2", vec![id], vec![]),
            // SQLite needs a LIMIT before an OFFSET: one no table reaches.
            Revoke::Beyond {
                subject,
                api_key,
                keep,
            } => (
                "id IN (SELECT id FROM sessions WHERE subject = $2 AND api_key = $3 \
                 AND revoked_at IS NULL AND expires_at > $1 AND last_used_at + idle_timeout > $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $4)",
                vec![subject, api_key],
                vec![i64::from(keep), i64::MAX],
            ),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL AND {pick} \
             RETURNING id, expires_at"
        )))
        .bind(now);
        for text in texts {
            query = query.bind(text);
        }
        for int in ints {
            query = query.bind(int);
        }
        let rows = query.fetch_all(&mut **tx).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        if let Some(lock) = B::lock_exclusive("revocations") {
            sqlx::query(sqlx::AssertSqlSafe(lock))
                .execute(&mut **tx)
                .await?;
        }
        for chunk in chunks(&rows) {
            let sql = values_sql(
                "INSERT INTO revocations (session_id, revoked_at, expires_at)",
                3,
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                q = q
                    .bind(row.text("id")?.as_str())
                    .bind(now)
                    .bind(row.int("expires_at")?);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(rows.len() as u64)
    }
}

impl<B: Backend> Store for SqlStore<B>
where
    for<'c> &'c mut B::Connection: Executor<'c, Database = B>,
    for<'q> i64: Encode<'q, B> + Type<B>,
    for<'q> Option<i64>: Encode<'q, B> + Type<B>,
    for<'q> &'q str: Encode<'q, B> + Type<B>,
    for<'q> Option<&'q str>: Encode<'q, B> + Type<B>,
    for<'q> &'q [u8]: Encode<'q, B> + Type<B>,
{
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
            .bind(name.as_str())
            .bind(&self.seal.seal(&context, &fresh)[..])
            .bind(now)
            .execute(&self.write)
            .await?;
            let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name.as_str())
                .fetch_one(&self.write)
                .await?;
            self.seal.open(&context, &row.bytes("value")?)
        }
        .boxed()
    }

    fn signing_keys(&self) -> BoxFuture<'_, StoreResult<Vec<SigningKeyRecord>>> {
        async move {
            let rows = sqlx::query(
                "SELECT kid, secret, created_at, retired_at FROM signing_keys \
                 ORDER BY created_at, kid",
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
            Self::insert_signing_key_in(&mut tx, &self.seal, &key).await?;
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
            // Concurrent rotations take turns: each retires the key the last added.
            if let Some(lock) = B::lock_exclusive("signing_keys") {
                sqlx::query(sqlx::AssertSqlSafe(lock))
                    .execute(&mut *tx)
                    .await?;
            }
            let rows = sqlx::query(
                "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL RETURNING kid",
            )
            .bind(retired_at)
            .fetch_all(&mut *tx)
            .await?;
            let retired = rows
                .iter()
                .map(|r| r.text("kid"))
                .collect::<Result<Vec<_>, _>>()?;
            Self::insert_signing_key_in(&mut tx, &self.seal, &key).await?;
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
                 max_sessions, dev) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(key.id.as_str())
            .bind(key.name.as_str())
            .bind(
                &self
                    .seal
                    .seal(&format!("api_keys:{}", key.id), &key.secret.as_bytes()[..])[..],
            )
            .bind(key.scopes.join(" ").as_str())
            .bind(i64::from(key.can_broker))
            .bind(key.policy.access_ttl)
            .bind(key.policy.session_ttl)
            .bind(key.policy.idle_timeout)
            .bind(key.created_at)
            .bind(key.revoked_at)
            .bind(key.origins.join(" ").as_str())
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
            let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
                .bind(id.as_str())
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
            let done = sqlx::query("UPDATE api_keys SET origins = $1 WHERE id = $2")
                .bind(origins.join(" ").as_str())
                .bind(id)
                .execute(&self.write)
                .await?;
            Ok(B::rows_affected(&done) == 1)
        }
        .boxed()
    }

    fn longest_access_ttl(&self) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        async move {
            let row = sqlx::query("SELECT MAX(access_ttl) AS ttl FROM api_keys")
                .fetch_one(&self.read)
                .await?;
            Ok(row.opt_int("ttl")?)
        }
        .boxed()
    }

    fn revoke_api_key(&self, id: &str, now: UnixTime) -> BoxFuture<'_, StoreResult<bool>> {
        let id = id.to_owned();
        async move {
            let mut tx = self.write.begin().await?;
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
            Self::revoke_in(&mut tx, &Revoke::ApiKey { id: &id }, now).await?;
            tx.commit().await?;
            Ok(B::rows_affected(&done) == 1)
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
            .bind(id.as_str())
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
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE subject = $1 \
                 ORDER BY created_at DESC, id"
            )))
            .bind(subject.as_str())
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
            sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id.as_str())
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
            let n = Self::revoke_in(&mut tx, &which, now).await?;
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
            // The row lock makes concurrent rotations of one token, on any node,
            // take turns: the second sees it spent.
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT session_id, client_id, spent_at FROM refresh_tokens WHERE hash = $1{}",
                B::FOR_UPDATE
            )))
            .bind(&old[..])
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(RefreshOutcome::Invalid);
            };
            let session_id = row.text("session_id")?;
            let bound_to = row.text("client_id")?;
            let spent_at = row.opt_int("spent_at")?;
            if bound_to != client_id {
                return Ok(RefreshOutcome::Invalid);
            }
            let session = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1{}",
                B::FOR_UPDATE
            )))
            .bind(session_id.as_str())
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
                Self::revoke_in(&mut tx, &which, now).await?;
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
            Self::insert_refresh(&mut tx, &new, &session.id, client_id, now).await?;
            sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(session.id.as_str())
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
            .bind(g.api_key.as_str())
            .bind(g.endpoint_id.as_str())
            .bind(g.role.as_str())
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
            let api_key = grant.text("api_key")?;
            let endpoint_id = grant.text("endpoint_id")?;
            let role = grant.text("role")?;
            // FOR SHARE: a revocation of the key waits for this session to exist.
            let policy = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT session_ttl, idle_timeout FROM api_keys WHERE id = $1 \
                 AND revoked_at IS NULL{}",
                B::FOR_SHARE
            )))
            .bind(api_key.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(policy) = policy else {
                return Ok(None);
            };
            let record = brokered_session(
                session,
                api_key,
                &endpoint_id,
                policy.int("session_ttl")?,
                policy.int("idle_timeout")?,
                now,
            );
            sqlx::query(
                "INSERT INTO sessions (id, subject, api_key, client_id, scope, created_at, \
                 last_used_at, expires_at, idle_timeout, user_agent, address) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10)",
            )
            .bind(record.id.as_str())
            .bind(record.subject.as_str())
            .bind(record.api_key.as_str())
            .bind(record.client_id.as_deref())
            .bind(record.scope.as_str())
            .bind(now)
            .bind(record.expires_at)
            .bind(record.idle_timeout)
            .bind(record.user_agent.as_deref())
            .bind(record.address.as_deref())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some((record, role)))
        }
        .boxed()
    }

    fn revocation_cursor(&self) -> BoxFuture<'_, StoreResult<i64>> {
        async move {
            let row =
                sqlx::query("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS seq FROM revocations")
                    .fetch_one(&self.read)
                    .await?;
            Ok(row.int("seq")?)
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
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM sessions WHERE subject = $1 AND api_key = $2 \
                 AND revoked_at IS NULL AND expires_at > $3 AND last_used_at + idle_timeout > $3",
            )
            .bind(subject)
            .bind(api_key)
            .bind(now)
            .fetch_one(&self.read)
            .await?;
            Ok(row.int("n")?.max(0) as u64)
        }
        .boxed()
    }

    fn purge_expired(&self, before: UnixTime, limit: u32) -> BoxFuture<'_, StoreResult<Purged>> {
        async move {
            let limit = i64::from(limit);
            let mut tx = self.write.begin().await?;
            // Nonces, feed entries and brokered token ids: by their own expiry.
            // Spent nonces by their whole key, which on SQLite is (expires_at,
            // nonce): a range delete at the start of its index.
            let mut expired = [0u64; 3];
            for (n, (table, key)) in expired.iter_mut().zip([
                ("used_nonces", "expires_at, nonce"),
                ("revocations", "seq"),
                ("broker_tokens", "hash"),
            ]) {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} \
                     WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)"
                )))
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                *n = B::rows_affected(&done);
            }
            let [nonces, revocations, broker_tokens] = expired;
            let (sessions, refresh_tokens) = B::purge_sessions(&mut tx, before, limit).await?;
            tx.commit().await?;
            Ok(Purged {
                nonces,
                sessions,
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
    use crate::store::{PostgresStore, SqliteStore};

    #[test]
    fn batches_are_cut_into_few_fixed_shapes() {
        let sizes = |n: usize| -> Vec<usize> { chunks(&vec![0; n]).map(<[_]>::len).collect() };
        assert!(sizes(0).is_empty());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(87), [64, 16, 4, 1, 1, 1]);
        assert_eq!(sizes(MAX_BATCH).iter().sum::<usize>(), MAX_BATCH);
        let rows: Vec<usize> = (0..87).collect();
        assert_eq!(chunks(&rows).flatten().copied().collect::<Vec<_>>(), rows);
        assert_eq!(
            values_sql("INSERT INTO t (a, b)", 2, 2, " RETURNING a"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) RETURNING a"
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
    /// one by one; then the session cap revokes the oldest into the feed.
    /// `commit` runs a batch on `store`'s database.
    async fn batch_then_cap(
        store: &dyn Store,
        commit: impl AsyncFnOnce(&[Job]) -> StoreResult<Vec<RedeemOutcome>>,
    ) {
        for (id, revoked_at) in [("kgk_live", None), ("kgk_gone", Some(5))] {
            let key = crate::apikey::generate(&mut rand::rng());
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
        use RedeemOutcome::*;
        assert_eq!(
            commit(&jobs).await.unwrap(),
            [
                Created,
                ChallengeUsed,
                ChallengeUsed,
                ApiKeyRevoked,
                Created
            ]
        );
        let sessions = store.sessions_of("bbaareisubject").await.unwrap();
        let mut ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["s0", "s1", "s5"]);
        for (nonce, session) in [(9, Some("s0")), (1, Some("s1")), (2, None), (3, Some("s5"))] {
            let found = store.refresh_session_id([nonce; 32]).await.unwrap();
            assert_eq!(found.as_deref(), session, "refresh token {nonce}");
        }
        // The revoked key's nonce is spent all the same.
        let again = store.redeem(redemption(2, "s6", "kgk_live")).await;
        assert_eq!(again, Ok(ChallengeUsed));

        // A cap of one keeps the newest (created together: the greatest id).
        assert_eq!(store.revocation_cursor().await.unwrap(), 0);
        let cap = Revoke::Beyond {
            subject: "bbaareisubject",
            api_key: "kgk_live",
            keep: 1,
        };
        assert_eq!(store.revoke_sessions(cap, 1_500).await.unwrap(), 2);
        let n = store
            .live_session_count("bbaareisubject", "kgk_live", 1_500)
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert!(
            store
                .session("s5")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        let feed = store.revocations_since(0, 10).await.unwrap();
        let mut revoked: Vec<&str> = feed.iter().map(|e| e.session_id.as_str()).collect();
        revoked.sort_unstable();
        assert_eq!(revoked, ["s0", "s1"]);
        assert_eq!(store.revocation_cursor().await.unwrap(), feed[1].seq);
    }

    #[tokio::test]
    async fn a_batch_has_the_outcomes_of_its_jobs_in_order_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db").display().to_string())
            .await
            .unwrap();
        batch_then_cap(&store, async |jobs| {
            SqliteStore::commit_batch(&store.write, jobs).await
        })
        .await;
    }

    /// The same on PostgreSQL, in a database of its own, when
    /// `KEYGATE_TEST_POSTGRES` (with `KEYGATE_MASTER_KEY`) names a server.
    #[tokio::test]
    async fn a_batch_has_the_outcomes_of_its_jobs_in_order_on_postgres() {
        let Some(base) = std::env::var("KEYGATE_TEST_POSTGRES")
            .ok()
            .filter(|s| !s.is_empty())
        else {
            eprintln!("skipped: set KEYGATE_TEST_POSTGRES to run this on PostgreSQL");
            return;
        };
        // postgres://user@host:port[/db][?params], with a database of our own.
        let (base, params) = base
            .split_once('?')
            .map_or((&base[..], String::new()), |(b, p)| (b, format!("?{p}")));
        let host_end = base.find("://").map_or(0, |i| i + 3);
        let server = base[host_end..]
            .find('/')
            .map_or(base, |i| &base[..host_end + i]);
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let url = format!(
            "{server}/keygate_batch_{}_{run}{params}",
            std::process::id()
        );
        let store = PostgresStore::open(&url).await.unwrap();
        batch_then_cap(&store, async |jobs| {
            PostgresStore::commit_batch(&store.write, jobs).await
        })
        .await;
        store.close().await;
    }
}
