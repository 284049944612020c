//! Durable state: API keys, server secrets, sessions, refresh tokens, used nonces,
//! and the OpenID Provider's clients, codes, consents and device grants.
//!
//! [`Store`] is the interface the Hub needs; `sql` implements it once, generic over
//! the database, with `sqlite` (an embedded database) and `postgres` (a PostgreSQL
//! server that several Hub nodes share) adding what differs between them. The
//! sign-in hot path ([`Store::redeem`]) is group-committed: every redemption
//! waiting at a moment shares one transaction and one fsync, and each caller
//! learns its own outcome only after that commit is durable.

use futures_util::future::BoxFuture;

use crate::apikey::ApiSecret;
use crate::session::SessionPolicy;
use crate::time::UnixTime;

pub use keygate_proto::RevocationEvent;

pub mod accounts;
pub mod audit;
pub mod oauth;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rows;
pub mod seal;
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use accounts::AccountStore;
pub use audit::{AuditEvent, AuditKind, AuditQuery, AuditRecord, AuditStore};
pub use oauth::{CodeRecord, DevicePoll, DeviceRecord, OAuthClientRecord, OAuthStore, TakeCode};
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded: a 503, never a token.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
    #[error("already exists")]
    Conflict,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(ref d) if d.is_unique_violation() => StoreError::Conflict,
            // PostgreSQL: connection lost, server shutting down or out of resources,
            // or a transaction to retry (serialization failure, deadlock).
            #[cfg(feature = "postgres")]
            sqlx::Error::Database(ref d)
                if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|p| p.code().get(..2))
                    .is_some_and(|class| ["08", "53", "57", "40"].contains(&class)) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(ref d)
                if d.message().contains("locked") || d.message().contains("busy") =>
            {
                StoreError::Unavailable(e.to_string())
            }
            e => StoreError::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for crate::Error {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        crate::metrics::metrics().store_error(match e {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Internal(_) => "internal",
            StoreError::Conflict => "conflict",
        });
        match e {
            StoreError::Unavailable(_) => crate::Error::Unavailable,
            StoreError::Internal(_) | StoreError::Conflict => crate::Error::Internal,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the store a database URL names: `postgres://user@host:port/db` (or
/// `postgresql://`), else `sqlite://path` (or a bare path).
/// A database whose feature this build left out cannot be opened.
pub async fn open(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        #[cfg(feature = "postgres")]
        return Ok(std::sync::Arc::new(PostgresStore::open(url).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Internal(
            "this build has no PostgreSQL support (feature postgres)".into(),
        ));
    }
    #[cfg(feature = "sqlite")]
    return Ok(std::sync::Arc::new(SqliteStore::open(url).await?));
    #[cfg(not(feature = "sqlite"))]
    Err(StoreError::Internal(
        "this build has no SQLite support (feature sqlite)".into(),
    ))
}

/// An app's API key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub secret: ApiSecret,
    /// Scopes tokens made through this key may carry.
    pub scopes: Vec<String>,
    /// May create brokered token ids.
    pub can_broker: bool,
    pub policy: SessionPolicy,
    /// Audiences (origins) this key may name in a challenge besides its own id.
    pub origins: Vec<String>,
    /// May introspect tokens issued to other apps (`keys create --introspect-any`).
    pub introspect_any: bool,
    /// Live sessions one identity may hold with this app: a sign-in past it ends
    /// the oldest (docs/lifecycle.md).
    pub max_sessions: u32,
    /// A development key (docs/dev-mode.md): mints tokens for any identity
    /// without a signature; refused unless the Hub runs with `--dev`.
    pub dev: bool,
    /// Whether its sign-ins may, or must, bind tokens to the user's key.
    pub dpop: DpopPolicy,
    pub created_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

/// An app's DPoP policy (docs/dpop.md): `off` ignores proofs, `optional` binds
/// the tokens of sign-ins that bring a proof, `required` refuses the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpopPolicy {
    Off,
    #[default]
    Optional,
    Required,
}

impl DpopPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DpopPolicy::Off => "off",
            DpopPolicy::Optional => "optional",
            DpopPolicy::Required => "required",
        }
    }
}

impl std::str::FromStr for DpopPolicy {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "off" => Ok(DpopPolicy::Off),
            "optional" => Ok(DpopPolicy::Optional),
            "required" => Ok(DpopPolicy::Required),
            _ => Err(()),
        }
    }
}

/// Sessions one identity may hold with one app unless its key says otherwise.
pub const DEFAULT_MAX_SESSIONS: u32 = 100;

impl ApiKeyRecord {
    /// A live key with no scopes, origins or extra rights, the default session
    /// policy and [`DEFAULT_MAX_SESSIONS`].
    pub fn new(id: String, name: String, secret: ApiSecret, created_at: UnixTime) -> Self {
        ApiKeyRecord {
            id,
            name,
            secret,
            scopes: Vec::new(),
            can_broker: false,
            policy: SessionPolicy::default(),
            origins: Vec::new(),
            introspect_any: false,
            max_sessions: DEFAULT_MAX_SESSIONS,
            dev: false,
            dpop: DpopPolicy::Optional,
            created_at,
            revoked_at: None,
        }
    }

    /// Whether this key may name `audience` in a challenge: its own id or one of
    /// its origins.
    pub fn may_use_audience(&self, audience: &str) -> bool {
        audience == self.id || self.origins.iter().any(|o| o == audience)
    }
}

/// A signing key as stored (the 32-byte Ed25519 seed).
#[derive(Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub secret: [u8; 32],
    pub created_at: UnixTime,
    pub retired_at: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub subject: String,
    pub api_key: String,
    pub client_id: Option<String>,
    pub scope: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub idle_timeout: i64,
    pub user_agent: Option<String>,
    pub address: Option<String>,
    /// Thumbprint of the key the session's tokens are bound to (docs/dpop.md).
    pub jkt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub subject: String,
    pub api_key: String,
    pub client_id: Option<String>,
    pub scope: String,
    pub created_at: UnixTime,
    pub last_used_at: UnixTime,
    pub expires_at: UnixTime,
    pub idle_timeout: i64,
    pub revoked_at: Option<UnixTime>,
    pub user_agent: Option<String>,
    pub address: Option<String>,
    /// Thumbprint of the key the session's tokens are bound to (docs/dpop.md).
    pub jkt: Option<String>,
}

impl SessionRecord {
    /// Whether the session may still be used at `now`.
    pub fn check(&self, now: UnixTime) -> Result<(), crate::Error> {
        if self.revoked_at.is_some() {
            Err(crate::Error::SessionRevoked)
        } else if now >= self.expires_at || now >= self.last_used_at + self.idle_timeout {
            Err(crate::Error::SessionExpired)
        } else {
            Ok(())
        }
    }
}

/// Everything a successful sign-in writes, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    /// The challenge's nonce id: recorded so that it can be redeemed once.
    pub nonce_id: [u8; 16],
    pub nonce_expires_at: UnixTime,
    pub session: NewSession,
    /// Hash of a new refresh token and the client it is bound to.
    pub refresh: Option<([u8; 32], String)>,
    /// Renew this existing session (same subject and app) instead of creating
    /// `session`: only its last use moves.
    pub renew: Option<String>,
    /// The account made for the signing key, in the same transaction, if this
    /// is its first sign-in (it belongs to no account yet).
    pub new_account: String,
    /// Keep at most this many live sessions of the subject with the app: a new
    /// session beyond it ends the oldest (with feed entries), in the same
    /// transaction.
    pub keep: Option<u32>,
    /// The sign-in's audit event, written in the same transaction if the
    /// sign-in succeeds (its account filled in there), with a `session_revoked`
    /// `cap` event ([`AuditEvent::cap`]) when the cap ends sessions. A refused
    /// sign-in's event is the caller's to record.
    pub event: Option<AuditEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeemOutcome {
    Created(SignedIn),
    /// The session named in `renew`, after renewal, and the key's account.
    Renewed {
        session: Box<SessionRecord>,
        account: String,
    },
    ChallengeUsed,
    ApiKeyRevoked,
    /// The session to renew is not this identity's, or no longer live.
    SessionGone,
    /// The key is its account's recovery key, which never signs in (the
    /// challenge is spent all the same).
    RecoveryKey,
}

/// What a new session's sign-in learnt in its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The signing key's account (made just now on its first sign-in).
    pub account: String,
    /// The app asks for a second factor before the session is complete.
    pub mfa_required: bool,
    /// How many of the identity's oldest sessions with the app ended, to keep
    /// it under its cap (counted on one sign-in of the batch).
    pub capped: u64,
}

/// A one-time token id an app minted for one of its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerGrant {
    pub hash: [u8; 32],
    pub api_key: String,
    pub endpoint_id: String,
    pub role: String,
    pub expires_at: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The old token is spent, the new one stored; here is the session.
    Rotated(Box<SessionRecord>),
    /// Unknown token, or bound to another client.
    Invalid,
    /// A spent token was presented again: the session is now revoked.
    Reused,
    Revoked,
    Expired,
}

/// Which sessions a revocation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoke<'a> {
    One {
        subject: &'a str,
        id: &'a str,
    },
    AllOf {
        subject: &'a str,
    },
    AllOfExcept {
        subject: &'a str,
        keep: &'a str,
    },
    ApiKey {
        id: &'a str,
    },
    /// The sessions an OIDC client made: its app's sessions naming it as their
    /// `client_id`.
    OAuthClient {
        id: &'a str,
        app: &'a str,
    },
    /// The live sessions of one identity with one app beyond the newest `keep`
    /// (the per-identity cap, docs/lifecycle.md).
    Beyond {
        subject: &'a str,
        api_key: &'a str,
        keep: u32,
    },
}

/// What one round of [`Store::purge_expired`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub nonces: u64,
    /// Sessions, each with its refresh tokens and second-factor state.
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub revocations: u64,
    pub broker_tokens: u64,
    /// Expired authorization codes, spent or not.
    pub oauth_codes: u64,
    /// Expired device grants, whatever their state.
    pub oauth_devices: u64,
}

impl Purged {
    /// Whether any kind of row filled its batch: another round has work.
    pub fn full(&self, limit: u32) -> bool {
        let limit = u64::from(limit);
        [
            self.nonces,
            self.sessions,
            self.revocations,
            self.broker_tokens,
            self.oauth_codes,
            self.oauth_devices,
        ]
        .iter()
        .any(|&n| n >= limit)
    }

    pub fn total(&self) -> u64 {
        self.nonces
            + self.sessions
            + self.refresh_tokens
            + self.revocations
            + self.broker_tokens
            + self.oauth_codes
            + self.oauth_devices
    }
}

/// How far behind the present the purge stays: a row expired longer ago than
/// this concerns no challenge that can still be redeemed and no token that any
/// verifier (with its clock leeway) can still accept.
pub const PURGE_GRACE: i64 = crate::challenge::MAX_TTL + crate::token::MAX_LEEWAY;
/// Rows of each kind one purge round deletes (one short transaction).
pub const PURGE_BATCH: u32 = 1000;

/// Purges in rounds of at most `limit` rows per kind, pausing `pause` between
/// rounds so that sign-ins get the writer, until a round finds less than a full
/// batch or `max_rounds` have run. Returns what was deleted in all.
pub async fn purge(
    store: &dyn Store,
    before: UnixTime,
    limit: u32,
    max_rounds: u32,
    pause: std::time::Duration,
) -> StoreResult<Purged> {
    let mut all = Purged::default();
    for round in 0..max_rounds {
        if round > 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let p = store.purge_expired(before, limit).await?;
        all.nonces += p.nonces;
        all.sessions += p.sessions;
        all.refresh_tokens += p.refresh_tokens;
        all.revocations += p.revocations;
        all.broker_tokens += p.broker_tokens;
        all.oauth_codes += p.oauth_codes;
        all.oauth_devices += p.oauth_devices;
        if !p.full(limit) {
            break;
        }
    }
    Ok(all)
}

/// The state behind a Hub (accounts and second factors: [`AccountStore`]; the
/// OpenID Provider's: [`OAuthStore`]; the audit trail: [`AuditStore`]).
pub trait Store: AccountStore + OAuthStore + AuditStore + Send + Sync + 'static {
    /// A server secret by name, created from `fresh` if absent (first writer wins).
    fn secret_or_insert(
        &self,
        name: &str,
        fresh: Vec<u8>,
        now: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Vec<u8>>>;

    fn signing_keys(&self) -> BoxFuture<'_, StoreResult<Vec<SigningKeyRecord>>>;
    fn insert_signing_key(&self, key: SigningKeyRecord) -> BoxFuture<'_, StoreResult<()>>;
    /// Retires every current signing key (stamped `retired_at`) and adds `key` as
    /// the current one, in one transaction. Returns the kids retired.
    fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        retired_at: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Vec<String>>>;

    fn insert_api_key(&self, key: ApiKeyRecord) -> BoxFuture<'_, StoreResult<()>>;
    fn api_key(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<ApiKeyRecord>>>;
    fn api_keys(&self) -> BoxFuture<'_, StoreResult<Vec<ApiKeyRecord>>>;
    /// Replaces a key's origins; false when there is no such key.
    fn set_api_key_origins<'a>(
        &'a self,
        id: &'a str,
        origins: &'a [String],
    ) -> BoxFuture<'a, StoreResult<bool>>;
    /// The longest access-token lifetime any API key grants (None without keys):
    /// how long a retired signing key stays published.
    fn longest_access_ttl(&self) -> BoxFuture<'_, StoreResult<Option<i64>>>;
    /// Revokes a key and every session made through it. False if no live key.
    fn revoke_api_key(&self, id: &str, now: UnixTime) -> BoxFuture<'_, StoreResult<bool>>;

    /// Records a sign-in: spends the nonce and stores the session (and refresh
    /// token) in one durable transaction, unless the nonce was already spent or the
    /// API key has been revoked.
    fn redeem(&self, r: Redemption) -> BoxFuture<'_, StoreResult<RedeemOutcome>>;

    fn session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>>;
    fn sessions_of(&self, subject: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>>;
    /// Marks a session used now (sign-in renewal).
    fn touch_session(&self, id: &str, now: UnixTime) -> BoxFuture<'_, StoreResult<()>>;
    /// Revokes sessions; returns how many were live.
    fn revoke_sessions<'a>(
        &'a self,
        which: Revoke<'a>,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// Spends refresh token `old` (if bound to `client_id`) and stores `new` in its
    /// place, atomically; a spent token presented again revokes the session.
    fn rotate_refresh_token<'a>(
        &'a self,
        old: [u8; 32],
        client_id: &'a str,
        new: [u8; 32],
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<RefreshOutcome>>;

    fn insert_broker_token(&self, grant: BrokerGrant) -> BoxFuture<'_, StoreResult<()>>;

    /// Spends a brokered token id (once, before it expires, while its key is live)
    /// and creates the session `session` for it in the same transaction; `session`'s
    /// subject and app are filled from the grant. Returns the session and role.
    fn exchange_broker_token(
        &self,
        hash: [u8; 32],
        session: NewSession,
        now: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Option<(SessionRecord, String)>>>;

    /// The newest revocation feed cursor (0 when empty).
    fn revocation_cursor(&self) -> BoxFuture<'_, StoreResult<i64>>;

    /// The revocation feed after cursor `since`, oldest first, at most `limit`.
    fn revocations_since(
        &self,
        since: i64,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<RevocationEvent>>>;

    /// Live sessions (not revoked, not past their end or idle timeout) of
    /// `subject` with the app `api_key` at `now`.
    fn live_session_count<'a>(
        &'a self,
        subject: &'a str,
        api_key: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// One bounded round of the purge, in one transaction: deletes at most
    /// `limit` rows of each kind whose expiry lies before `before` (spent
    /// nonces, sessions past their absolute end with their refresh tokens and
    /// second-factor state, feed entries of sessions past their end, brokered
    /// token ids, authorization codes, device grants), oldest first. `before`
    /// must lie far enough in the past that no token such a row concerns can
    /// still be valid anywhere (the callers subtract the longest challenge
    /// lifetime and the verifiers' leeway).
    fn purge_expired(&self, before: UnixTime, limit: u32) -> BoxFuture<'_, StoreResult<Purged>>;

    /// Closes connections (after the server has stopped).
    fn close(&self) -> BoxFuture<'_, ()>;
}
