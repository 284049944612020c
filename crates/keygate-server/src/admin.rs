//! Administration on the store directly: apps' API keys (create, list, revoke,
//! origins, MFA policy) and users' sessions (list, revoke), as the `keygate keys`
//! and `keygate sessions` commands do them.
//!
//! Every operation takes the store and a [`Clock`]; none reads the wall clock or
//! prints. Refusals are typed ([`AdminError`]) and checked before anything is
//! written. Signing-key rotation is [`crate::hub::rotate_signing_key`].

use crate::apikey::{self, ApiSecret};
use crate::identity::Identity;
use crate::session::{MIN_ACCESS_TTL, SessionPolicy};
use crate::store::{ApiKeyRecord, DEFAULT_MAX_SESSIONS, Revoke, SessionRecord, Store, StoreError};
use crate::time::Clock;

/// Why an administrative operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// One of the origins given is not an origin (`scheme://host[:port]`).
    #[error("an API key's origins must be origins such as https://app.example")]
    InvalidOrigin,
    /// The session policy is out of range (see [`check_policy`]).
    #[error("need 60 <= access_ttl <= 86400, session_ttl >= access_ttl and idle_timeout > 0")]
    InvalidPolicy,
    /// `max_sessions` is not in `1..=MAX_SESSIONS_LIMIT`.
    #[error("max_sessions must be between 1 and 100000")]
    InvalidMaxSessions,
    /// No API key (live or revoked) has this id.
    #[error("no API key with this id")]
    NoSuchKey,
    /// No live API key has this id.
    #[error("no live API key with this id")]
    NoLiveKey,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The most sessions one identity may hold with one app that a key may allow.
pub const MAX_SESSIONS_LIMIT: u32 = 100_000;

/// An app's MFA policy: whether every sign-in through its key waits for a second
/// factor (`mfa_pending`) before its tokens are accepted (docs/accounts.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MfaPolicy {
    #[default]
    Off,
    Required,
}

impl MfaPolicy {
    /// The policy's name: `off` or `required`.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaPolicy::Off => "off",
            MfaPolicy::Required => "required",
        }
    }

    /// The policy a name (`off`, `required`) names, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "off" => Some(MfaPolicy::Off),
            "required" => Some(MfaPolicy::Required),
            _ => None,
        }
    }
}

/// What a new API key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    /// Scopes tokens made through this key may carry.
    pub scopes: Vec<String>,
    /// May create brokered token ids.
    pub can_broker: bool,
    pub policy: SessionPolicy,
    pub mfa: MfaPolicy,
    /// Audiences its challenges may name besides the key id.
    pub origins: Vec<String>,
    /// May introspect tokens issued to other apps.
    pub introspect_any: bool,
    /// Live sessions one identity may hold with this app.
    pub max_sessions: u32,
    /// A development key (docs/dev-mode.md).
    pub dev: bool,
}

impl KeySpec {
    /// A key named `name` with no scopes, origins or extra rights, the default
    /// session policy, no MFA and [`DEFAULT_MAX_SESSIONS`].
    pub fn new(name: impl Into<String>) -> Self {
        KeySpec {
            name: name.into(),
            scopes: Vec::new(),
            can_broker: false,
            policy: SessionPolicy::default(),
            mfa: MfaPolicy::Off,
            origins: Vec::new(),
            introspect_any: false,
            max_sessions: DEFAULT_MAX_SESSIONS,
            dev: false,
        }
    }

    /// Every check a new key must pass: its origins, its session policy and its
    /// session cap.
    pub fn check(&self) -> Result<(), AdminError> {
        check_origins(&self.origins)?;
        check_policy(&self.policy)?;
        if !(1..=MAX_SESSIONS_LIMIT).contains(&self.max_sessions) {
            return Err(AdminError::InvalidMaxSessions);
        }
        Ok(())
    }
}

/// Scopes as an administrator writes them: separated by spaces or commas.
pub fn parse_scopes(list: &str) -> Vec<String> {
    list.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An API key's origins must be origins (`scheme://host[:port]`), as the
/// Provider's are.
pub fn check_origins(origins: &[String]) -> Result<(), AdminError> {
    match origins.iter().all(|o| crate::server::valid_origin(o)) {
        true => Ok(()),
        false => Err(AdminError::InvalidOrigin),
    }
}

/// A key's session policy: an access-token lifetime a request may ask for (from
/// [`MIN_ACCESS_TTL`] to [`crate::token::MAX_LIFETIME`]), a session that outlives
/// its first token, and an idle timeout. (The Hub clamps a requested lifetime to
/// the same bounds: [`SessionPolicy::access_expiry`].)
pub fn check_policy(policy: &SessionPolicy) -> Result<(), AdminError> {
    if (MIN_ACCESS_TTL..=crate::token::MAX_LIFETIME).contains(&policy.access_ttl)
        && policy.session_ttl >= policy.access_ttl
        && policy.idle_timeout > 0
    {
        Ok(())
    } else {
        Err(AdminError::InvalidPolicy)
    }
}

/// A new API key: its id and its secret, which exists nowhere else in clear (the
/// store keeps it sealed).
#[derive(Debug)]
pub struct CreatedKey {
    pub id: String,
    pub secret: ApiSecret,
}

/// Creates an API key as `spec` says, created now, with a key id and secret from
/// `rng`. Nothing is written unless `spec` passes [`KeySpec::check`].
pub async fn create_api_key<R: rand::CryptoRng + ?Sized>(
    store: &dyn Store,
    clock: &dyn Clock,
    rng: &mut R,
    spec: KeySpec,
) -> Result<CreatedKey, AdminError> {
    spec.check()?;
    let key = apikey::generate(rng);
    store
        .insert_api_key(ApiKeyRecord {
            scopes: spec.scopes,
            can_broker: spec.can_broker,
            policy: spec.policy,
            origins: spec.origins,
            introspect_any: spec.introspect_any,
            max_sessions: spec.max_sessions,
            dev: spec.dev,
            ..ApiKeyRecord::new(key.id.clone(), spec.name, key.secret.clone(), clock.now())
        })
        .await?;
    if spec.mfa == MfaPolicy::Required {
        store.set_mfa_required(&key.id, true).await?;
    }
    Ok(CreatedKey {
        id: key.id,
        secret: key.secret,
    })
}

/// Every API key, live and revoked (their secrets are in the records: never show
/// them).
pub async fn list_api_keys(store: &dyn Store) -> Result<Vec<ApiKeyRecord>, AdminError> {
    Ok(store.api_keys().await?)
}

/// Replaces an API key's origins; none leaves only the key id as an audience.
pub async fn set_origins(
    store: &dyn Store,
    id: &str,
    origins: &[String],
) -> Result<(), AdminError> {
    check_origins(origins)?;
    match store.set_api_key_origins(id, origins).await? {
        true => Ok(()),
        false => Err(AdminError::NoSuchKey),
    }
}

/// Sets an API key's MFA policy, live sessions included. The store would record
/// a policy for any id; a key that does not exist is refused here instead.
pub async fn set_mfa_policy(
    store: &dyn Store,
    id: &str,
    policy: MfaPolicy,
) -> Result<(), AdminError> {
    if store.api_key(id).await?.is_none() {
        return Err(AdminError::NoSuchKey);
    }
    store
        .set_mfa_required(id, policy == MfaPolicy::Required)
        .await?;
    Ok(())
}

/// Revokes a live API key and every session made through it, now.
pub async fn revoke_api_key(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
) -> Result<(), AdminError> {
    match store.revoke_api_key(id, clock.now()).await? {
        true => Ok(()),
        false => Err(AdminError::NoLiveKey),
    }
}

/// A session as an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub session: SessionRecord,
    /// `None` while the session is live, else why it is not
    /// ([`crate::Error::SessionExpired`] or [`crate::Error::SessionRevoked`]).
    pub ended: Option<crate::Error>,
}

/// An identity's sessions, each with its state now.
pub async fn sessions_of(
    store: &dyn Store,
    clock: &dyn Clock,
    identity: &Identity,
) -> Result<Vec<SessionView>, AdminError> {
    let now = clock.now();
    Ok(store
        .sessions_of(&identity.to_string())
        .await?
        .into_iter()
        .map(|session| SessionView {
            ended: session.check(now).err(),
            session,
        })
        .collect())
}

/// Revokes one session of an identity (`session`), or all of them; returns how
/// many were live and are now revoked.
pub async fn revoke_sessions(
    store: &dyn Store,
    clock: &dyn Clock,
    identity: &Identity,
    session: Option<&str>,
) -> Result<u64, AdminError> {
    let subject = identity.to_string();
    let which = match session {
        Some(id) => Revoke::One {
            subject: &subject,
            id,
        },
        None => Revoke::AllOf { subject: &subject },
    };
    Ok(store.revoke_sessions(which, clock.now()).await?)
}

#[cfg(all(test, feature = "sqlite"))]
mod tests;
