//! Row decoding shared by the SQLite and PostgreSQL stores: both schemas use the
//! same column names and types (text, 64-bit integers, bytes), so one decoder per
//! record serves both.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::seal::MasterKey;
use super::{ApiKeyRecord, RevocationEvent, SessionRecord, SigningKeyRecord, StoreError};
use super::{StoreResult, UnixTime};
use crate::apikey::ApiSecret;
use crate::session::SessionPolicy;

/// Typed column access on a row of either database.
pub trait Columns {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error>;
}

impl<R> Columns for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(col)
    }
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(col)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
        self.try_get(col)
    }
}

/// The columns [`session_from_row`] reads.
pub(crate) const SESSION_COLUMNS: &str = "id, subject, api_key, client_id, scope, created_at, \
     last_used_at, expires_at, idle_timeout, revoked_at, user_agent, address, jkt";

pub(crate) fn session_from_row(row: &impl Columns) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        id: row.text("id")?,
        subject: row.text("subject")?,
        api_key: row.text("api_key")?,
        client_id: row.opt_text("client_id")?,
        scope: row.text("scope")?,
        created_at: row.int("created_at")?,
        last_used_at: row.int("last_used_at")?,
        expires_at: row.int("expires_at")?,
        idle_timeout: row.int("idle_timeout")?,
        revoked_at: row.opt_int("revoked_at")?,
        user_agent: row.opt_text("user_agent")?,
        address: row.opt_text("address")?,
        jkt: row.opt_text("jkt")?,
    })
}

pub(crate) fn api_key_from_row(row: &impl Columns, seal: &MasterKey) -> StoreResult<ApiKeyRecord> {
    let id = row.text("id")?;
    let secret = seal.open(&format!("api_keys:{id}"), &row.bytes("secret")?)?;
    let secret: [u8; 32] = secret
        .try_into()
        .map_err(|_| StoreError::Internal("api key secret is not 32 bytes".into()))?;
    Ok(ApiKeyRecord {
        name: row.text("name")?,
        secret: ApiSecret::from_bytes(secret),
        scopes: row
            .text("scopes")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        can_broker: row.int("can_broker")? != 0,
        policy: SessionPolicy {
            access_ttl: row.int("access_ttl")?,
            session_ttl: row.int("session_ttl")?,
            idle_timeout: row.int("idle_timeout")?,
        },
        origins: row
            .text("origins")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        introspect_any: row.int("introspect_any")? != 0,
        max_sessions: u32::try_from(row.int("max_sessions")?)
            .map_err(|_| StoreError::Internal("max_sessions out of range".into()))?,
        dev: row.int("dev")? != 0,
        dpop: row
            .text("dpop")?
            .parse()
            .map_err(|_| StoreError::Internal("dpop policy unknown".into()))?,
        created_at: row.int("created_at")?,
        revoked_at: row.opt_int("revoked_at")?,
        id,
    })
}

pub(crate) fn signing_key_from_row(
    row: &impl Columns,
    seal: &MasterKey,
) -> StoreResult<SigningKeyRecord> {
    let kid = row.text("kid")?;
    let secret = seal.open(&format!("signing_keys:{kid}"), &row.bytes("secret")?)?;
    Ok(SigningKeyRecord {
        secret: secret
            .try_into()
            .map_err(|_| StoreError::Internal("signing key is not 32 bytes".into()))?,
        created_at: row.int("created_at")?,
        retired_at: row.opt_int("retired_at")?,
        kid,
    })
}

pub(crate) fn revocation_from_row(row: &impl Columns) -> StoreResult<RevocationEvent> {
    Ok(RevocationEvent {
        seq: row.int("seq")?,
        session_id: row.text("session_id")?,
        revoked_at: row.int("revoked_at")?,
        expires_at: row.int("expires_at")?,
    })
}

/// The session a broker exchange creates from its grant and the app's policy.
pub(crate) fn brokered_session(
    draft: super::NewSession,
    api_key: String,
    endpoint_id: &str,
    session_ttl: i64,
    idle_timeout: i64,
    now: UnixTime,
) -> SessionRecord {
    SessionRecord {
        id: draft.id,
        subject: format!("{api_key}:{endpoint_id}"),
        api_key,
        client_id: draft.client_id,
        scope: draft.scope,
        created_at: now,
        last_used_at: now,
        expires_at: now + session_ttl,
        idle_timeout,
        revoked_at: None,
        user_agent: draft.user_agent,
        address: draft.address,
        jkt: None,
    }
}
