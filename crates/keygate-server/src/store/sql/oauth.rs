//! [`OAuthStore`] on the SQL store (tables of SQLite migration 0005, PostgreSQL
//! 0004), for either database.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::{Encode, Executor, Type};

use super::{Backend, SqlStore};
use crate::store::oauth::*;
use crate::store::rows::Columns;
use crate::store::{Revoke, StoreError, StoreResult};
use crate::time::UnixTime;

/// The columns [`client_from_row`] reads; `$1` must be bound to empty bytes (a
/// public client's NULL secret hash reads as them).
const CLIENT_COLUMNS: &str = "id, name, COALESCE(secret_hash, $1) AS secret_hash, redirect_uris, \
     post_logout_redirect_uris, alg, scopes, first_party, app, created_at, revoked_at";

const NO_BYTES: &[u8] = &[];

const PENDING: &str = "pending";
const APPROVED: &str = "approved";
const DENIED: &str = "denied";

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn uris_from(json: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(json).map_err(internal)
}

fn uris_to(uris: &[String]) -> StoreResult<String> {
    serde_json::to_string(uris).map_err(internal)
}

fn hash_from(bytes: Vec<u8>) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Internal("a stored hash is not 32 bytes".into()))
}

fn client_from_row(row: &impl Columns) -> StoreResult<OAuthClientRecord> {
    let secret = row.bytes("secret_hash")?;
    Ok(OAuthClientRecord {
        id: row.text("id")?,
        name: row.text("name")?,
        secret_hash: match secret.is_empty() {
            true => None,
            false => Some(hash_from(secret)?),
        },
        redirect_uris: uris_from(&row.text("redirect_uris")?)?,
        post_logout_redirect_uris: uris_from(&row.text("post_logout_redirect_uris")?)?,
        alg: row.text("alg")?,
        scopes: row
            .text("scopes")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        first_party: row.int("first_party")? != 0,
        app: row.text("app")?,
        created_at: row.int("created_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

// The bounds of `SqlStore`'s impl blocks in `sql.rs`; see there.
impl<B: Backend> OAuthStore for SqlStore<B>
where
    for<'c> &'c mut B::Connection: Executor<'c, Database = B>,
    for<'q> i64: Encode<'q, B> + Type<B>,
    for<'q> Option<i64>: Encode<'q, B> + Type<B>,
    for<'q> &'q str: Encode<'q, B> + Type<B>,
    for<'q> Option<&'q str>: Encode<'q, B> + Type<B>,
    for<'q> &'q [u8]: Encode<'q, B> + Type<B>,
{
    fn insert_client(&self, c: OAuthClientRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            // NULLIF: a public client's empty hash is stored as NULL.
            sqlx::query(
                "INSERT INTO oauth_clients (id, name, secret_hash, redirect_uris, \
                 post_logout_redirect_uris, alg, scopes, first_party, app, created_at, revoked_at) \
                 VALUES ($1, $2, NULLIF($3, $12), $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(c.id.as_str())
            .bind(c.name.as_str())
            .bind(c.secret_hash.as_ref().map_or(NO_BYTES, |h| &h[..]))
            .bind(uris_to(&c.redirect_uris)?.as_str())
            .bind(uris_to(&c.post_logout_redirect_uris)?.as_str())
            .bind(c.alg.as_str())
            .bind(c.scopes.join(" ").as_str())
            .bind(i64::from(c.first_party))
            .bind(c.app.as_str())
            .bind(c.created_at)
            .bind(c.revoked_at)
            .bind(NO_BYTES)
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn oauth_client<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<OAuthClientRecord>>> {
        async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE id = $2"
            )))
            .bind(NO_BYTES)
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
            row.as_ref().map(client_from_row).transpose()
        }
        .boxed()
    }

    fn oauth_clients(&self) -> BoxFuture<'_, StoreResult<Vec<OAuthClientRecord>>> {
        async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY created_at, id"
            )))
            .bind(NO_BYTES)
            .fetch_all(&self.read)
            .await?;
            rows.iter().map(client_from_row).collect()
        }
        .boxed()
    }

    fn revoke_oauth_client<'a>(
        &'a self,
        id: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut tx = self.write.begin().await?;
            let Some(row) = sqlx::query(
                "UPDATE oauth_clients SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                 RETURNING app",
            )
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(false);
            };
            let app = row.text("app")?;
            Self::revoke_in(&mut tx, &Revoke::OAuthClient { id, app: &app }, now).await?;
            tx.commit().await?;
            Ok(true)
        }
        .boxed()
    }

    fn insert_code(&self, c: CodeRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO oauth_codes (hash, client_id, grant_json, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&c.hash[..])
            .bind(c.client_id.as_str())
            .bind(c.grant.as_str())
            .bind(c.expires_at)
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn take_code(&self, hash: [u8; 32], now: UnixTime) -> BoxFuture<'_, StoreResult<TakeCode>> {
        async move {
            // One statement spends it: of two concurrent takes, one updates the row.
            let fresh = sqlx::query(
                "UPDATE oauth_codes SET used_at = $1 \
                 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 \
                 RETURNING client_id, grant_json, expires_at",
            )
            .bind(now)
            .bind(&hash[..])
            .fetch_optional(&self.write)
            .await?;
            if let Some(row) = fresh {
                return Ok(TakeCode::Fresh(CodeRecord {
                    hash,
                    client_id: row.text("client_id")?,
                    grant: row.text("grant_json")?,
                    expires_at: row.int("expires_at")?,
                }));
            }
            // The writer: it has seen the other take's update.
            let row = sqlx::query("SELECT used_at, session_id FROM oauth_codes WHERE hash = $1")
                .bind(&hash[..])
                .fetch_optional(&self.write)
                .await?;
            match row {
                Some(row) if row.opt_int("used_at")?.is_some() => Ok(TakeCode::Replayed {
                    session_id: row.opt_text("session_id")?,
                }),
                _ => Ok(TakeCode::Unknown),
            }
        }
        .boxed()
    }

    fn set_code_session<'a>(
        &'a self,
        hash: [u8; 32],
        session_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            sqlx::query("UPDATE oauth_codes SET session_id = $1 WHERE hash = $2")
                .bind(session_id)
                .bind(&hash[..])
                .execute(&self.write)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn bind_session_key<'a>(
        &'a self,
        session_id: &'a str,
        jkt: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let done = sqlx::query(
                "UPDATE sessions SET jkt = $2 WHERE id = $1 AND (jkt IS NULL OR jkt = $2)",
            )
            .bind(session_id)
            .bind(jkt)
            .execute(&self.write)
            .await?;
            Ok(B::rows_affected(&done) > 0)
        }
        .boxed()
    }

    fn add_refresh_token<'a>(
        &'a self,
        session_id: &'a str,
        hash: [u8; 32],
        client_id: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut tx = self.write.begin().await?;
            // FOR SHARE: a revocation of the session waits until the token exists.
            let live = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT 1 AS live FROM sessions WHERE id = $1 AND revoked_at IS NULL \
                 AND expires_at > $2 AND last_used_at + idle_timeout > $2{}",
                B::FOR_SHARE
            )))
            .bind(session_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                return Err(StoreError::Conflict);
            }
            Self::insert_refresh(&mut tx, &hash, session_id, client_id, now).await?;
            tx.commit().await?;
            Ok(())
        }
        .boxed()
    }

    fn consent<'a>(
        &'a self,
        account: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<String>>> {
        async move {
            let row = sqlx::query(
                "SELECT scope FROM oauth_consents WHERE account_id = $1 AND client_id = $2",
            )
            .bind(account)
            .bind(client_id)
            .fetch_optional(&self.read)
            .await?;
            Ok(row.map(|r| r.text("scope")).transpose()?)
        }
        .boxed()
    }

    fn save_consent<'a>(
        &'a self,
        account: &'a str,
        client_id: &'a str,
        scope: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO oauth_consents (account_id, client_id, scope, granted_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, client_id) DO UPDATE SET \
                 scope = excluded.scope, granted_at = excluded.granted_at",
            )
            .bind(account)
            .bind(client_id)
            .bind(scope)
            .bind(now)
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn insert_device(&self, d: DeviceRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO oauth_devices (device_hash, user_code, client_id, scope, expires_at, \
                 poll_interval, state) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&d.device_hash[..])
            .bind(d.user_code.as_str())
            .bind(d.client_id.as_str())
            .bind(d.scope.as_str())
            .bind(d.expires_at)
            .bind(d.interval)
            .bind(PENDING)
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn device_by_user_code<'a>(
        &'a self,
        user_code: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<Option<DeviceRecord>>> {
        async move {
            let row = sqlx::query(
                "SELECT device_hash, user_code, client_id, scope, expires_at, poll_interval \
                 FROM oauth_devices WHERE user_code = $1 AND state = $2 AND expires_at > $3",
            )
            .bind(user_code)
            .bind(PENDING)
            .bind(now)
            .fetch_optional(&self.read)
            .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(DeviceRecord {
                device_hash: hash_from(row.bytes("device_hash")?)?,
                user_code: row.text("user_code")?,
                client_id: row.text("client_id")?,
                scope: row.text("scope")?,
                expires_at: row.int("expires_at")?,
                interval: row.int("poll_interval")?,
            }))
        }
        .boxed()
    }

    fn decide_device<'a>(
        &'a self,
        user_code: &'a str,
        grant: Option<String>,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let state = if grant.is_some() { APPROVED } else { DENIED };
            let done = sqlx::query(
                "UPDATE oauth_devices SET state = $1, grant_json = $2 \
                 WHERE user_code = $3 AND state = $4 AND expires_at > $5",
            )
            .bind(state)
            .bind(grant.as_deref())
            .bind(user_code)
            .bind(PENDING)
            .bind(now)
            .execute(&self.write)
            .await?;
            Ok(B::rows_affected(&done) == 1)
        }
        .boxed()
    }

    fn poll_device<'a>(
        &'a self,
        device_hash: [u8; 32],
        client_id: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<DevicePoll>> {
        async move {
            let mut tx = self.write.begin().await?;
            // FOR UPDATE: concurrent polls of one grant take turns, so an
            // approval is collected once and each poll sees the one before.
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT client_id, expires_at, poll_interval, last_polled_at, state, grant_json \
                 FROM oauth_devices WHERE device_hash = $1{}",
                B::FOR_UPDATE
            )))
            .bind(&device_hash[..])
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(DevicePoll::Unknown);
            };
            let state = row.text("state")?;
            // Checked first: another client learns nothing of the grant's state,
            // and its poll moves no clock of the rightful client's.
            let other = row.text("client_id")? != client_id;
            if !other && now >= row.int("expires_at")? {
                return Ok(DevicePoll::Expired);
            }
            if other || state == APPROVED {
                sqlx::query("DELETE FROM oauth_devices WHERE device_hash = $1")
                    .bind(&device_hash[..])
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                // Only an approval stores a grant.
                let grant = row.opt_text("grant_json")?;
                if other {
                    return Ok(DevicePoll::OtherClient { grant });
                }
                let grant =
                    grant.ok_or_else(|| internal("an approved device grant has no grant"))?;
                return Ok(DevicePoll::Approved { grant });
            }
            let interval = row.int("poll_interval")?;
            let slow_down = row
                .opt_int("last_polled_at")?
                .is_some_and(|last| now < last.saturating_add(interval));
            sqlx::query("UPDATE oauth_devices SET last_polled_at = $1 WHERE device_hash = $2")
                .bind(now)
                .bind(&device_hash[..])
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(match state.as_str() {
                DENIED => DevicePoll::Denied,
                _ => DevicePoll::Pending { slow_down },
            })
        }
        .boxed()
    }
}
