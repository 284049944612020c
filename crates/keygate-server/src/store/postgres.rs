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
//! The statements are those of the SQL store (`sql.rs`); this file holds what is
//! PostgreSQL's own: connecting (and creating the database), the pool, the
//! array-bound statements of a group commit and of the purge, and row locks.
//!
//! The master key that seals secrets comes from `KEYGATE_MASTER_KEY` or the file
//! `KEYGATE_MASTER_KEY_FILE` names: there is no file beside the database to keep
//! it in, and every node needs the same key.

use std::str::FromStr;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::Postgres;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgQueryResult, PgRow};

use super::sql::{self, Backend, SqlStore};
use super::*;

pub use super::sql::MAX_BATCH;
/// Batches committing at once on one node.
pub const COMMITTERS: usize = 4;
/// Connections per node: the committers, and as many again for everything else.
const CONNECTIONS: u32 = 16;
/// How long a request waits for a connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL store. Cheap to clone.
pub type PostgresStore = SqlStore<Postgres>;

fn migrator() -> Migrator {
    sql::migrator(&[
        (1, "init", include_str!("postgres/0001_init.sql")),
        (2, "accounts", include_str!("postgres/0002_accounts.sql")),
        (
            3,
            "app_rights",
            include_str!("postgres/0003_app_rights.sql"),
        ),
        (4, "oauth", include_str!("postgres/0004_oauth.sql")),
        (5, "dpop", include_str!("postgres/0005_dpop.sql")),
        (6, "audit", include_str!("postgres/0006_audit.sql")),
        (
            7,
            "session_cap",
            include_str!("postgres/0007_session_cap.sql"),
        ),
        (
            8,
            "session_cap_order",
            include_str!("postgres/0008_session_cap_order.sql"),
        ),
    ])
}

impl SqlStore<Postgres> {
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
        Ok(Self::start(pool.clone(), pool, seal))
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

impl Backend for Postgres {
    /// While all are busy, arrivals wait and form the next, larger batch; a node
    /// keeps the database busy while a commit waits for its WAL flush.
    const COMMITTERS: usize = COMMITTERS;
    const FOR_SHARE: &'static str = " FOR SHARE";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const ALL_AFTER: &'static str = "OFFSET";
    const ANONYMOUS_VALUES: bool = false;
    const FINISH_CHECKPOINT: Option<&'static str> = None;

    fn lock_exclusive(table: &str) -> Option<String> {
        Some(format!("LOCK TABLE {table} IN EXCLUSIVE MODE"))
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// One statement, the rows bound as arrays.
    fn spend_nonces<'a>(
        conn: &'a mut PgConnection,
        fresh: &'a [&'a Redemption],
    ) -> BoxFuture<'a, StoreResult<Vec<PgRow>>> {
        async move {
            let nonces: Vec<&[u8]> = fresh.iter().map(|r| &r.nonce_id[..]).collect();
            let expiries: Vec<i64> = fresh.iter().map(|r| r.nonce_expires_at).collect();
            Ok(sqlx::query(
                "INSERT INTO used_nonces (nonce, expires_at) \
                 SELECT * FROM UNNEST($1::bytea[], $2::int8[]) ON CONFLICT DO NOTHING RETURNING nonce",
            )
            .bind(&nonces)
            .bind(&expiries)
            .fetch_all(&mut *conn)
            .await?)
        }
        .boxed()
    }

    /// One statement each, the rows bound as arrays.
    fn insert_sessions<'a>(
        conn: &'a mut PgConnection,
        created: &'a [&'a Redemption],
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
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
                     last_used_at, expires_at, idle_timeout, user_agent, address, jkt) \
                     SELECT id, subject, api_key, client_id, scope, created_at, created_at, expires_at, \
                     idle_timeout, user_agent, address, jkt FROM UNNEST($1::text[], $2::text[], $3::text[], \
                     $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::text[], $10::text[], \
                     $11::text[]) \
                     AS t(id, subject, api_key, client_id, scope, created_at, expires_at, idle_timeout, \
                     user_agent, address, jkt)",
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
                .bind(opt(|s| s.jkt.as_deref()))
                .execute(&mut *conn)
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
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn purge_sessions(
        conn: &mut PgConnection,
        before: UnixTime,
        limit: i64,
    ) -> BoxFuture<'_, StoreResult<(u64, u64)>> {
        async move {
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
            .fetch_one(&mut *conn)
            .await?;
            Ok((sessions.max(0) as u64, refresh_tokens.max(0) as u64))
        }
        .boxed()
    }
}
