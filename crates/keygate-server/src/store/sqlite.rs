//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a
//! committed sign-in survives a power cut.
//!
//! One connection writes and several read. Sign-ins reach the writer through a
//! channel and are committed in groups: the writer drains whatever is waiting (up to
//! [`MAX_BATCH`]) into one transaction, so N concurrent sign-ins cost one fsync,
//! not N. Other writes take the same single write connection in turn.
//!
//! The statements are those of the SQL store (`sql.rs`, the group commit in
//! `sql/batch.rs`); this file holds what is SQLite's own: opening the file, its
//! pools and pragmas, the background checkpoint of the WAL, and the bulk
//! statements of a group commit and of the purge.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteQueryResult, SqliteRow, SqliteSynchronous,
};

use super::sql::{self, Backend, SqlStore, chunks, values_sql};
use super::*;

pub use super::sql::MAX_BATCH;
const READERS: u32 = 4;

/// The SQLite store. Cheap to clone.
pub type SqliteStore = SqlStore<Sqlite>;

fn migrator() -> Migrator {
    sql::migrator(&[
        (1, "init", include_str!("sqlite/0001_init.sql")),
        (2, "accounts", include_str!("sqlite/0002_accounts.sql")),
        (
            3,
            "nonce_order",
            include_str!("sqlite/0003_nonce_order.sql"),
        ),
        (4, "app_rights", include_str!("sqlite/0004_app_rights.sql")),
        (5, "oauth", include_str!("sqlite/0005_oauth.sql")),
        (6, "dpop", include_str!("sqlite/0006_dpop.sql")),
        (7, "audit", include_str!("sqlite/0007_audit.sql")),
        (
            8,
            "session_cap",
            include_str!("sqlite/0008_session_cap.sql"),
        ),
        (
            9,
            "session_cap_order",
            include_str!("sqlite/0009_session_cap_order.sql"),
        ),
    ])
}

/// How often a reader connection copies the WAL into the database file.
///
/// SQLite's automatic checkpoint runs inside a writer's commit: every sign-in
/// waiting for the writer waited for it too. At half the peak (1,550 sign-ins/s)
/// the commits that ran one took 6–25 ms against about 1 ms for the others, and
/// made the p99 11–38 ms; with no checkpoint at all it was 6–8 ms. So the
/// writer never checkpoints by itself (`wal_autocheckpoint=0`): every
/// CHECKPOINT_EVERY a background pass (`PASSIVE`: it waits for no one) copies the
/// WAL's new frames while the writer goes on committing. Once the WAL holds
/// [`WAL_RESTART_FRAMES`], the writer, between two batches, copies the few frames
/// committed during the pass (the same [`PASSIVE_CHECKPOINT`]), which lets its
/// next commit start the WAL again from its beginning.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The WAL's frames past which the writer finishes a checkpoint so that the
/// log starts over: it grows to about this (32 MiB of 4 KiB pages) and a
/// pass's worth more (docs/operations.md). At the peak that is about four
/// times a second, at half the peak about twice.
const WAL_RESTART_FRAMES: i64 = 8192;

/// A checkpoint that waits for no one: the background pass and the writer's.
const PASSIVE_CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";

impl SqlStore<Sqlite> {
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
        // Checkpoints run beside it (CHECKPOINT_EVERY), not in its commits.
        // A bulk statement inside the batch's transaction keeps a statement
        // journal (the pages it changed, to undo it alone); past 64 KiB SQLite
        // spills that to a temporary file, written page by page and never
        // synced. In memory it costs no syscall; a batch holds at most MAX_BATCH
        // sign-ins, purges delete by LIMIT, and a revocation of every session of
        // an app key adds only its returned ids (docs/operations.md).
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(
                opts.clone()
                    .pragma("cache_size", "-65536")
                    .pragma("wal_autocheckpoint", "0")
                    .pragma("temp_store", "memory"),
            )
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
        let store = Self::start(write, read, seal);
        tokio::spawn(checkpointer(
            store.read.clone(),
            Arc::downgrade(&store.wal_due),
        ));
        Ok(store)
    }

    /// `PRAGMA integrity_check`: "ok" on a healthy file.
    pub async fn integrity_check(&self) -> StoreResult<String> {
        Ok(sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.read)
            .await?)
    }
}

/// Every [`CHECKPOINT_EVERY`], copies the WAL into the database file on a reader
/// connection, and asks the writer to finish (`due`) when the WAL is long; ends
/// with the store (when `due` has no other holder) or its readers. (The readers
/// close before the writer, whose close then removes the WAL.)
async fn checkpointer(read: sqlx::SqlitePool, due: Weak<AtomicBool>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(due) = due.upgrade().filter(|_| !read.is_closed()) else {
            return;
        };
        if let Err(e) = background_pass(&read, &due, WAL_RESTART_FRAMES).await {
            tracing::debug!(error = %e, "checkpoint failed");
        }
    }
}

/// One `PASSIVE` checkpoint on a reader connection. When the WAL holds
/// `restart_at` frames or more, the writer is asked to finish (`due`): frames
/// may have come after the pass began. Returns the frames the WAL held.
pub(super) async fn background_pass(
    read: &sqlx::SqlitePool,
    due: &AtomicBool,
    restart_at: i64,
) -> StoreResult<i64> {
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as(PASSIVE_CHECKPOINT).fetch_one(read).await?;
    if frames >= restart_at {
        due.store(true, Ordering::Release);
    }
    Ok(frames)
}

impl Backend for Sqlite {
    /// One writer connection: one batch at a time.
    const COMMITTERS: usize = 1;
    // Every write runs on the one writer connection, in turn.
    const FOR_SHARE: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const ALL_AFTER: &'static str = "LIMIT -1 OFFSET";
    const ANONYMOUS_VALUES: bool = true;
    const FINISH_CHECKPOINT: Option<&'static str> = Some(PASSIVE_CHECKPOINT);

    fn lock_exclusive(_table: &str) -> Option<String> {
        None
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Multi-row inserts in a few fixed shapes: each statement is a round trip
    /// to sqlx's connection thread.
    fn spend_nonces<'a>(
        conn: &'a mut SqliteConnection,
        fresh: &'a [&'a Redemption],
    ) -> BoxFuture<'a, StoreResult<Vec<SqliteRow>>> {
        async move {
            let mut spent = Vec::with_capacity(fresh.len());
            for chunk in chunks(fresh) {
                let sql = values_sql::<Sqlite>(
                    "INSERT INTO used_nonces (nonce, expires_at)",
                    2,
                    chunk.len(),
                    " ON CONFLICT DO NOTHING RETURNING nonce",
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for r in chunk {
                    q = q.bind(&r.nonce_id[..]).bind(r.nonce_expires_at);
                }
                spent.extend(q.fetch_all(&mut *conn).await?);
            }
            Ok(spent)
        }
        .boxed()
    }

    fn insert_sessions<'a>(
        conn: &'a mut SqliteConnection,
        created: &'a [&'a Redemption],
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            for chunk in chunks(created) {
                let sql = values_sql::<Sqlite>(
                    "INSERT INTO sessions (id, subject, api_key, client_id, scope, created_at, \
                     last_used_at, expires_at, idle_timeout, user_agent, address, jkt)",
                    12,
                    chunk.len(),
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
                        .bind(&s.address)
                        .bind(&s.jkt);
                }
                q.execute(&mut *conn).await?;
            }
            for r in created {
                if let Some((hash, client_id)) = &r.refresh {
                    let s = &r.session;
                    SqliteStore::insert_refresh(conn, hash, &s.id, client_id, s.created_at).await?;
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn purge_sessions(
        conn: &mut SqliteConnection,
        before: UnixTime,
        limit: i64,
    ) -> BoxFuture<'_, StoreResult<(u64, u64)>> {
        async move {
            let gone: Vec<String> = sqlx::query_scalar(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE expires_at < $1 ORDER BY expires_at LIMIT $2) RETURNING id",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
            if gone.is_empty() {
                return Ok((0, 0));
            }
            let ids =
                serde_json::to_string(&gone).map_err(|e| StoreError::Internal(e.to_string()))?;
            let refresh_tokens = sqlx::query(
                "DELETE FROM refresh_tokens WHERE session_id IN (SELECT value FROM json_each($1))",
            )
            .bind(&ids)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            sqlx::query(
                "DELETE FROM session_mfa WHERE session_id IN (SELECT value FROM json_each($1))",
            )
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
            Ok((gone.len() as u64, refresh_tokens))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The writer connection runs with the settings the sign-in path was
    /// measured with: WAL, a full sync per commit, the large page cache, no
    /// checkpoint of its own making (CHECKPOINT_EVERY) and statement journals
    /// in memory.
    #[tokio::test]
    async fn the_writer_runs_with_its_measured_settings() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db").display().to_string())
            .await
            .unwrap();
        let mut conn = store.write.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        for (pragma, want) in [
            ("synchronous", 2),
            ("cache_size", -65536),
            ("wal_autocheckpoint", 0),
            ("temp_store", 2),
        ] {
            let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {pragma}")))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(got, want, "PRAGMA {pragma}");
        }
    }
}
