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
//! after the commit is durable. The committer and the batch's statements are in
//! `sql/batch.rs`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};
use tokio::sync::{mpsc, oneshot};

use super::rows::{
    Columns, SESSION_COLUMNS, api_key_from_row, brokered_session, revocation_from_row,
    session_from_row, signing_key_from_row,
};
use super::seal::MasterKey;
use super::*;

mod accounts;
mod audit;
mod batch;
mod oauth;

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
    /// Ends an ordered query with every row after the first N, when followed
    /// by N (SQLite wants a `LIMIT` before an `OFFSET`).
    const ALL_AFTER: &'static str;
    /// Whether [`values_sql`] writes anonymous placeholders: SQLite looks a
    /// named one up by a linear search, and sqlx looks up every parameter's
    /// name, so a statement of n numbered placeholders binds in O(n²).
    const ANONYMOUS_VALUES: bool;
    /// Run by the writer between batches once [`SqlStore::wal_due`] is set
    /// (SQLite: the checkpoint's last frames, see `sqlite.rs`); `None` where
    /// the database checkpoints by itself.
    const FINISH_CHECKPOINT: Option<&'static str>;

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
    /// Set when the writer should run [`Backend::FINISH_CHECKPOINT`] after its
    /// next batch.
    pub(super) wal_due: Arc<AtomicBool>,
}

impl<B: Backend> Clone for SqlStore<B> {
    fn clone(&self) -> Self {
        SqlStore {
            write: self.write.clone(),
            read: self.read.clone(),
            jobs: self.jobs.clone(),
            seal: self.seal.clone(),
            wal_due: self.wal_due.clone(),
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

/// `INSERT … VALUES ($1, $2), ($3, $4) …`: `rows` groups of `columns`
/// placeholders, numbered on PostgreSQL and anonymous (`?`, in the same order)
/// on SQLite; numbers in `head` and `tail` count on from `rows * columns`.
pub(super) fn values_sql<B: Backend>(
    head: &str,
    columns: usize,
    rows: usize,
    tail: &str,
) -> String {
    let groups: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=columns)
                .map(|c| {
                    if B::ANONYMOUS_VALUES {
                        "?".to_owned()
                    } else {
                        format!("${}", r * columns + c)
                    }
                })
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
        let wal_due = Arc::new(AtomicBool::new(false));
        tokio::spawn(Self::group_committer(write.clone(), rx, wal_due.clone()));
        SqlStore {
            write,
            read,
            jobs,
            seal: Arc::new(seal),
            wal_due,
        }
    }

    /// Appends `events` in the caller's transaction: the audit writer's batches,
    /// and a sign-in's own events in its group commit.
    pub(super) async fn insert_audit(
        tx: &mut Transaction<'_, B>,
        events: &[AuditEvent],
    ) -> StoreResult<()> {
        for chunk in chunks(events) {
            let sql = values_sql::<B>(
                "INSERT INTO audit_events (at, kind, outcome, app, account_id, identity, \
                 session_id, address, user_agent, detail)",
                10,
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(e.at)
                    .bind(e.kind.as_str())
                    .bind(e.outcome.as_deref())
                    .bind(e.app.as_deref())
                    .bind(e.account.as_deref())
                    .bind(e.identity.as_deref())
                    .bind(e.session.as_deref())
                    .bind(e.address.as_deref())
                    .bind(e.user_agent.as_deref())
                    .bind(e.detail.as_deref());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
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
    async fn revoke_in(
        tx: &mut Transaction<'_, B>,
        which: &Revoke<'_>,
        now: UnixTime,
    ) -> StoreResult<u64> {
        let rows = Self::revoke_rows(tx, which, now).await?;
        Self::append_feed(tx, &rows, now).await?;
        Ok(rows.len() as u64)
    }

    /// Revokes the sessions `UPDATE … WHERE` picks; returns their ids and
    /// expiries, for [`Self::append_feed`].
    async fn revoke_rows(
        tx: &mut Transaction<'_, B>,
        which: &Revoke<'_>,
        now: UnixTime,
    ) -> StoreResult<Vec<(String, i64)>> {
        // The sessions picked, by $2, $3 … (text).
        let (pick, texts): (std::borrow::Cow<'static, str>, Vec<&str>) = match *which {
            Revoke::One { subject, id } => ("subject = $2 AND id = $3".into(), vec![subject, id]),
            Revoke::AllOf { subject } => ("subject = $2".into(), vec![subject]),
            Revoke::AllOfExcept { subject, keep } => {
                ("subject = $2 AND id != $3".into(), vec![subject, keep])
            }
            Revoke::ApiKey { id } => ("api_key = $2".into(), vec![id]),
            Revoke::OAuthClient { id, app } => {
                ("client_id = $2 AND api_key = $3".into(), vec![id, app])
            }
            // The OFFSET is written in (an integer, one statement per cap value):
            // SQLite plans LIMIT and OFFSET from their bound values, so binding
            // them would re-prepare the statement on every run. SQLite needs a
            // LIMIT before an OFFSET: one no table reaches.
            Revoke::Beyond {
                subject,
                api_key,
                keep,
            } => (
                format!(
                    "id IN (SELECT id FROM sessions WHERE subject = $2 AND api_key = $3 \
                     AND revoked_at IS NULL AND expires_at > $1 \
                     AND last_used_at + idle_timeout > $1 \
                     ORDER BY created_at DESC, id DESC LIMIT {} OFFSET {keep})",
                    i64::MAX
                )
                .into(),
                vec![subject, api_key],
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
        query
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| Ok((row.text("id")?, row.int("expires_at")?)))
            .collect()
    }

    /// Appends revoked sessions (id, expiry) to the revocation feed.
    ///
    /// Where writers are concurrent (PostgreSQL) the feed is locked (EXCLUSIVE:
    /// plain reads go on) before its sequence numbers are drawn and until commit,
    /// so entries become visible in sequence order: a reader that has seen entry
    /// n has seen every entry before it, and its cursor skips none. Call it after
    /// every session row the transaction updates, so that a transaction holding
    /// the lock never waits for anything else.
    async fn append_feed(
        tx: &mut Transaction<'_, B>,
        rows: &[(String, i64)],
        now: UnixTime,
    ) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if let Some(lock) = B::lock_exclusive("revocations") {
            sqlx::query(sqlx::AssertSqlSafe(lock))
                .execute(&mut **tx)
                .await?;
        }
        for chunk in chunks(rows) {
            let sql = values_sql::<B>(
                "INSERT INTO revocations (session_id, revoked_at, expires_at)",
                3,
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, expires_at) in chunk {
                q = q.bind(id.as_str()).bind(now).bind(*expires_at);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

mod store;

#[cfg(test)]
mod tests;
