//! Durable state of keygate as an OpenID Provider (docs/oidc.md): registered
//! clients, authorization codes, remembered consents and device grants.
//!
//! Kept in tables of their own (SQLite migration 0005, PostgreSQL 0004). Bearer
//! secrets (client secrets, codes, device codes) are stored only as SHA-256
//! hashes; a grant's details are JSON the OIDC service writes and reads, opaque
//! here.

use futures_util::future::BoxFuture;

use super::StoreResult;
use crate::time::UnixTime;

/// A registered OIDC client. Its sessions are those of its app (`app`, an API
/// key id), so the app's policy applies.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClientRecord {
    /// `kgc_` + 22 base64url characters.
    pub id: String,
    pub name: String,
    /// SHA-256 of the client secret; `None` for a public client.
    pub secret_hash: Option<[u8; 32]>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// `RS256`, `ES256`, `EdDSA` or `Ed25519`: how its ID tokens are signed.
    pub alg: String,
    /// Scopes the client may ask for.
    pub scopes: Vec<String>,
    /// Skips the consent screen.
    pub first_party: bool,
    /// The API key id whose sessions and policy the client uses.
    pub app: String,
    pub created_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

impl std::fmt::Debug for OAuthClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClientRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("public", &self.secret_hash.is_none())
            .field("redirect_uris", &self.redirect_uris)
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .field("alg", &self.alg)
            .field("scopes", &self.scopes)
            .field("first_party", &self.first_party)
            .field("app", &self.app)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// An authorization code (by hash) and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    pub hash: [u8; 32],
    pub client_id: String,
    /// JSON, written and read by the OIDC service.
    pub grant: String,
    pub expires_at: UnixTime,
}

/// What spending a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeCode {
    /// Unused and unexpired: now spent.
    Fresh(CodeRecord),
    /// Spent before: the session the first use produced (if recorded yet) should
    /// end.
    Replayed { session_id: Option<String> },
    /// Never issued, purged, or expired unused.
    Unknown,
}

/// A device authorization grant (RFC 8628) as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// SHA-256 of the device code.
    pub device_hash: [u8; 32],
    /// What the user types (`XXXX-XXXX`); unique among stored grants.
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub expires_at: UnixTime,
    /// Seconds a client must wait between polls.
    pub interval: i64,
}

/// The answer to one poll of a device grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// Never issued, purged, or its approval already collected.
    Unknown,
    Expired,
    /// Not decided yet; `slow_down` when polled sooner than its interval after
    /// the previous poll.
    Pending {
        slow_down: bool,
    },
    Denied,
    /// Approved: answered once, then the grant is gone.
    Approved {
        grant: String,
    },
    /// Polled by a client it was not issued to: the grant is gone (spent, as a
    /// code presented by the wrong client is), with the grant of an approval so
    /// that the caller can end the session it opened.
    OtherClient {
        grant: Option<String>,
    },
}

/// The OpenID Provider side of a [`super::Store`].
pub trait OAuthStore: Send + Sync + 'static {
    /// Adds a client; [`super::StoreError::Conflict`] if its id exists.
    fn insert_client(&self, c: OAuthClientRecord) -> BoxFuture<'_, StoreResult<()>>;

    /// A client by id, revoked ones too (the caller checks `revoked_at`).
    fn oauth_client<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<OAuthClientRecord>>>;

    /// Every client, live and revoked, oldest first.
    fn oauth_clients(&self) -> BoxFuture<'_, StoreResult<Vec<OAuthClientRecord>>>;

    /// Marks the client revoked and revokes every live session it made (its app's
    /// sessions whose `client_id` is this client), each with a revocation-feed
    /// entry, in one transaction. False if there is no live client `id`.
    fn revoke_oauth_client<'a>(
        &'a self,
        id: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Stores a new code; [`super::StoreError::Conflict`] if its hash exists.
    fn insert_code(&self, c: CodeRecord) -> BoxFuture<'_, StoreResult<()>>;

    /// Spends a code atomically: [`TakeCode::Fresh`] once (unused, unexpired);
    /// a code used before is [`TakeCode::Replayed`] with the session recorded by
    /// [`OAuthStore::set_code_session`] (None if none recorded yet); an unknown
    /// code, or one that expired unused, is [`TakeCode::Unknown`].
    fn take_code(&self, hash: [u8; 32], now: UnixTime) -> BoxFuture<'_, StoreResult<TakeCode>>;

    /// Records which session a spent code produced (so a replay can revoke it).
    fn set_code_session<'a>(
        &'a self,
        hash: [u8; 32],
        session_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Binds a session's tokens to the key with thumbprint `jkt` (docs/dpop.md):
    /// false when the session is bound to another key already.
    fn bind_session_key<'a>(
        &'a self,
        session_id: &'a str,
        jkt: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Adds a refresh token (by hash) bound to `client_id` to a live session.
    /// [`super::StoreError::Conflict`] when the session is not live (revoked,
    /// expired, idle or unknown) or the hash exists; nothing is stored then.
    fn add_refresh_token<'a>(
        &'a self,
        session_id: &'a str,
        hash: [u8; 32],
        client_id: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// The scope string `account` granted the client (None if never).
    fn consent<'a>(
        &'a self,
        account: &'a str,
        client_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<String>>>;

    /// Remembers (replacing any earlier) the scope `account` granted the client.
    fn save_consent<'a>(
        &'a self,
        account: &'a str,
        client_id: &'a str,
        scope: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Stores a new, pending device grant; [`super::StoreError::Conflict`] if its
    /// device code hash or user code is taken (draw new ones and retry).
    fn insert_device(&self, d: DeviceRecord) -> BoxFuture<'_, StoreResult<()>>;

    /// A pending, unexpired device grant by user code.
    fn device_by_user_code<'a>(
        &'a self,
        user_code: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<Option<DeviceRecord>>>;

    /// Approves (`Some(grant JSON)`) or denies (`None`) a pending, unexpired
    /// grant; false if there is none.
    fn decide_device<'a>(
        &'a self,
        user_code: &'a str,
        grant: Option<String>,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// One poll by `client_id`, which is recorded: [`DevicePoll::OtherClient`]
    /// (whatever the grant's state) when the grant is another client's;
    /// [`DevicePoll::Expired`] at or after `expires_at`; [`DevicePoll::Pending`]
    /// with `slow_down` when polled sooner than `interval` after the previous
    /// poll; [`DevicePoll::Approved`] once (the grant is then gone and later
    /// polls say [`DevicePoll::Unknown`]).
    fn poll_device<'a>(
        &'a self,
        device_hash: [u8; 32],
        client_id: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<DevicePoll>>;
}
