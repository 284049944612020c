//! Administration on the store directly: apps' API keys (create, list, revoke,
//! origins, MFA policy), OIDC clients (create, list, revoke) and users' sessions
//! (list, revoke), as the `keygate keys`, `keygate clients` and `keygate
//! sessions` commands do them.
//!
//! Every operation takes the store and a [`Clock`]; none reads the wall clock or
//! prints. Refusals are typed ([`AdminError`]) and checked before anything is
//! written. Signing-key rotation is [`crate::hub::rotate_signing_key`].

use crate::apikey::{self, ApiSecret};
use crate::audit::record_now;
use crate::identity::Identity;
use crate::session::{MIN_ACCESS_TTL, SessionPolicy};
use crate::store::{
    ApiKeyRecord, AuditEvent, AuditKind, DEFAULT_MAX_SESSIONS, OAuthClientRecord, Revoke,
    SessionRecord, Store, StoreError,
};
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
    /// No account has this id (it has no key).
    #[error("no account with this id")]
    NoSuchAccount,
    /// The key belongs to another account that has other keys: remove it there
    /// first.
    #[error("the key belongs to another account with other keys; remove it there first")]
    KeyInOtherAccount,
    /// A client's name is not 1 to 64 visible characters.
    #[error("a client's name must be 1 to 64 visible characters")]
    InvalidClientName,
    /// A client needs at least one redirect URI.
    #[error("a client needs at least one redirect URI")]
    NoRedirectUri,
    /// A redirect URI is not one a client may register (see [`check_client_uri`]).
    #[error(
        "each redirect URI must be an absolute https URL (http only for 127.0.0.1, [::1] or \
         localhost) without fragment or credentials, at most 2048 characters"
    )]
    InvalidRedirectUri,
    /// A post-logout redirect URI is not one a client may register.
    #[error(
        "each post-logout redirect URI must be an absolute https URL (http only for 127.0.0.1, \
         [::1] or localhost) without fragment or credentials, at most 2048 characters"
    )]
    InvalidPostLogoutRedirectUri,
    /// The ID-token signing algorithm is not one of [`CLIENT_ALGS`].
    #[error("the signing algorithm must be RS256, ES256, EdDSA or Ed25519")]
    InvalidAlg,
    /// A scope is empty, too long, or holds a character RFC 6749 excludes.
    #[error("each scope must be 1 to 128 visible ASCII characters (no quote or backslash)")]
    InvalidScope,
    /// A client's scopes leave out `openid`, which every authorization request names.
    #[error("a client's scopes must include openid")]
    NoOpenidScope,
    /// No live OIDC client has this id.
    #[error("no live client with this id")]
    NoLiveClient,
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
    /// Whether its sign-ins may, or must, bind tokens to the user's key
    /// (docs/dpop.md).
    pub dpop: crate::store::DpopPolicy,
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
            dpop: crate::store::DpopPolicy::Optional,
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
    let detail = if spec.dev { "dev" } else { "app" };
    store
        .insert_api_key(ApiKeyRecord {
            scopes: spec.scopes,
            can_broker: spec.can_broker,
            policy: spec.policy,
            origins: spec.origins,
            introspect_any: spec.introspect_any,
            max_sessions: spec.max_sessions,
            dev: spec.dev,
            dpop: spec.dpop,
            ..ApiKeyRecord::new(key.id.clone(), spec.name, key.secret.clone(), clock.now())
        })
        .await?;
    if spec.mfa == MfaPolicy::Required {
        store.set_mfa_required(&key.id, true).await?;
    }
    let event = AuditEvent::new(AuditKind::ApiKeyCreated, clock.now())
        .app(&key.id)
        .detail(detail);
    record_now(store, event).await;
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
    clock: &dyn Clock,
    id: &str,
    origins: &[String],
) -> Result<(), AdminError> {
    check_origins(origins)?;
    if !store.set_api_key_origins(id, origins).await? {
        return Err(AdminError::NoSuchKey);
    }
    policy_changed(store, clock, id, "origins").await;
    Ok(())
}

async fn policy_changed(store: &dyn Store, clock: &dyn Clock, id: &str, what: &str) {
    let event = AuditEvent::new(AuditKind::ApiKeyPolicyChanged, clock.now())
        .app(id)
        .detail(what);
    record_now(store, event).await;
}

/// Sets an API key's MFA policy, live sessions included. The store would record
/// a policy for any id; a key that does not exist is refused here instead.
pub async fn set_mfa_policy(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
    policy: MfaPolicy,
) -> Result<(), AdminError> {
    if store.api_key(id).await?.is_none() {
        return Err(AdminError::NoSuchKey);
    }
    store
        .set_mfa_required(id, policy == MfaPolicy::Required)
        .await?;
    policy_changed(store, clock, id, &format!("mfa={}", policy.as_str())).await;
    Ok(())
}

/// Revokes a live API key and every session made through it, now.
pub async fn revoke_api_key(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
) -> Result<(), AdminError> {
    if !store.revoke_api_key(id, clock.now()).await? {
        return Err(AdminError::NoLiveKey);
    }
    record_now(
        store,
        AuditEvent::new(AuditKind::ApiKeyRevoked, clock.now()).app(id),
    )
    .await;
    Ok(())
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
    let n = store.revoke_sessions(which, clock.now()).await?;
    if n > 0 {
        let mut event = AuditEvent::new(AuditKind::SessionRevoked, clock.now())
            .identity(&subject)
            .detail("admin");
        event.session = session.map(str::to_owned);
        record_now(store, event).await;
    }
    Ok(n)
}

/// `keygate account recover`: the last resort for an account whose every key
/// (and second factor) is lost. Adds `new_identity` to `account` (moving it out
/// of an account it is alone in) and ends every session of every key of the
/// account, in one transaction; recorded as `account_recovered`. Returns how
/// many live sessions ended.
pub async fn recover_account(
    store: &dyn Store,
    clock: &dyn Clock,
    account: &str,
    new_identity: &Identity,
) -> Result<u64, AdminError> {
    use crate::store::accounts::RecoverOutcome;
    let identity = new_identity.to_string();
    let now = clock.now();
    match store.recover_account(account, &identity, now).await? {
        RecoverOutcome::Recovered(n) => {
            let event = AuditEvent::new(AuditKind::AccountRecovered, now)
                .account(Some(account))
                .identity(identity)
                .detail(format!("sessions_ended={n}"));
            record_now(store, event).await;
            Ok(n)
        }
        RecoverOutcome::NoSuchAccount => Err(AdminError::NoSuchAccount),
        RecoverOutcome::InOtherAccount => Err(AdminError::KeyInOtherAccount),
    }
}

/// The ID-token signing algorithms a client may choose, the default first.
pub const CLIENT_ALGS: [&str; 4] = ["RS256", "ES256", "EdDSA", "Ed25519"];
/// The scopes a client may ask for unless it is registered with others.
pub const DEFAULT_CLIENT_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];
/// The longest redirect URI a client may register.
pub const MAX_CLIENT_URI_LEN: usize = 2048;
const MAX_CLIENT_NAME_CHARS: usize = 64;
const MAX_SCOPE_LEN: usize = 128;
const MAX_CLIENT_SCOPES: usize = 64;
const MAX_CLIENT_URIS: usize = 64;
const CLIENT_ID_PREFIX: &str = "kgc_";
const CLIENT_SECRET_PREFIX: &str = "kgcs_";

/// A new OIDC client as an administrator describes it (docs/oidc.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClient {
    /// Shown to users on the consent screen.
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// A public client (a browser or native app) has no secret.
    pub public: bool,
    /// One of [`CLIENT_ALGS`].
    pub alg: String,
    /// Scopes it may ask for, `openid` among them; none means
    /// [`DEFAULT_CLIENT_SCOPES`].
    pub scopes: Vec<String>,
    /// Skips the consent screen.
    pub first_party: bool,
    /// The live API key whose sessions and policy it uses; `None` creates one
    /// named `oidc:<name>` (its HMAC secret is never shown).
    pub app: Option<String>,
}

impl NewClient {
    /// A confidential `RS256` client with the default scopes and an app of its own.
    pub fn new(name: impl Into<String>, redirect_uri: impl Into<String>) -> Self {
        NewClient {
            name: name.into(),
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
            public: false,
            alg: CLIENT_ALGS[0].to_owned(),
            scopes: Vec::new(),
            first_party: false,
            app: None,
        }
    }

    /// Every check a new client must pass, except that its app is live; returns
    /// its scopes (the defaults when none were given, duplicates dropped).
    pub fn check(&self) -> Result<Vec<String>, AdminError> {
        let chars = self.name.chars().count();
        if !(1..=MAX_CLIENT_NAME_CHARS).contains(&chars)
            || self.name.trim() != self.name
            || self.name.chars().any(invisible)
        {
            return Err(AdminError::InvalidClientName);
        }
        if self.redirect_uris.is_empty() {
            return Err(AdminError::NoRedirectUri);
        }
        if self.redirect_uris.len() > MAX_CLIENT_URIS
            || !self.redirect_uris.iter().all(|u| check_client_uri(u))
        {
            return Err(AdminError::InvalidRedirectUri);
        }
        if self.post_logout_redirect_uris.len() > MAX_CLIENT_URIS
            || !self
                .post_logout_redirect_uris
                .iter()
                .all(|u| check_client_uri(u))
        {
            return Err(AdminError::InvalidPostLogoutRedirectUri);
        }
        if !CLIENT_ALGS.contains(&self.alg.as_str()) {
            return Err(AdminError::InvalidAlg);
        }
        if self.scopes.len() > MAX_CLIENT_SCOPES || !self.scopes.iter().all(|s| valid_scope(s)) {
            return Err(AdminError::InvalidScope);
        }
        let mut scopes: Vec<String> = Vec::new();
        let given = match self.scopes.is_empty() {
            true => DEFAULT_CLIENT_SCOPES.map(str::to_owned).to_vec(),
            false => self.scopes.clone(),
        };
        for s in given {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        if !scopes.iter().any(|s| s == "openid") {
            return Err(AdminError::NoOpenidScope);
        }
        Ok(scopes)
    }
}

/// A character a client's name may not hold: controls, and the format
/// characters that reorder or hide text (bidi overrides, zero-width).
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// A scope token (RFC 6749 §3.3): visible ASCII except `"` and `\`.
fn valid_scope(s: &str) -> bool {
    (1..=MAX_SCOPE_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// Whether a client may register `uri` as a redirect (or post-logout redirect)
/// URI: an absolute `https` URL, or `http` to a loopback host (`127.0.0.1`,
/// `[::1]`, `localhost`), of visible ASCII (it is compared as written), with a
/// host and no fragment or credentials, at most [`MAX_CLIENT_URI_LEN`]
/// characters.
pub fn check_client_uri(uri: &str) -> bool {
    if uri.len() > MAX_CLIENT_URI_LEN
        || !uri.bytes().all(|b| b.is_ascii_graphic())
        || uri.contains('#')
    {
        return false;
    }
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return false;
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => return false,
    };
    match url.scheme() {
        "https" => true,
        "http" => loopback,
        _ => false,
    }
}

/// A new client and, for a confidential one, its secret, which exists nowhere
/// else in clear (the store keeps its SHA-256).
pub struct CreatedClient {
    pub record: OAuthClientRecord,
    pub secret: Option<String>,
}

impl std::fmt::Debug for CreatedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedClient")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Registers an OIDC client as `spec` says, created now, with its id and secret
/// (confidential clients) from `rng`. Its app is `spec.app`, which must be a live
/// API key, else a new API key named `oidc:<name>` that may carry the client's
/// scopes. Nothing is written unless `spec` passes [`NewClient::check`] (and
/// its app is live).
pub async fn create_client<R: rand::CryptoRng + ?Sized>(
    store: &dyn Store,
    clock: &dyn Clock,
    rng: &mut R,
    spec: NewClient,
) -> Result<CreatedClient, AdminError> {
    let scopes = spec.check()?;
    let app = match spec.app {
        Some(id) => match store.api_key(&id).await? {
            Some(key) if key.revoked_at.is_none() => id,
            _ => return Err(AdminError::NoLiveKey),
        },
        None => {
            let key = KeySpec {
                scopes: scopes.clone(),
                ..KeySpec::new(format!("oidc:{}", spec.name))
            };
            create_api_key(store, clock, rng, key).await?.id
        }
    };
    let id = format!("{CLIENT_ID_PREFIX}{}", crate::session::random_id(rng));
    let secret =
        (!spec.public).then(|| crate::session::new_secret_token(rng, CLIENT_SECRET_PREFIX));
    let record = OAuthClientRecord {
        id,
        name: spec.name,
        secret_hash: secret.as_deref().map(crate::session::hash_secret),
        redirect_uris: spec.redirect_uris,
        post_logout_redirect_uris: spec.post_logout_redirect_uris,
        alg: spec.alg,
        scopes,
        first_party: spec.first_party,
        app,
        created_at: clock.now(),
        revoked_at: None,
    };
    store.insert_client(record.clone()).await?;
    Ok(CreatedClient { record, secret })
}

/// Every OIDC client, live and revoked, oldest first.
pub async fn list_clients(store: &dyn Store) -> Result<Vec<OAuthClientRecord>, AdminError> {
    Ok(store.oauth_clients().await?)
}

/// Revokes a live OIDC client and every session it made, now (each with a
/// revocation-feed entry). Its app stays.
pub async fn revoke_client(
    store: &dyn Store,
    clock: &dyn Clock,
    id: &str,
) -> Result<(), AdminError> {
    match store.revoke_oauth_client(id, clock.now()).await? {
        true => Ok(()),
        false => Err(AdminError::NoLiveClient),
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests;
