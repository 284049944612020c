//! Durable state of accounts and second factors: which keys make up an account,
//! its TOTP secret, each app's MFA policy, and which sessions were raised to `aal2`.
//!
//! Kept in tables of their own (migration 0002) beside the session tables, so the
//! sign-in hot path is unchanged: a sign-in reads its [`SignInContext`] once, and
//! a key's first sign-in writes one account row.

use futures_util::future::BoxFuture;

use super::{SessionRecord, StoreResult};
use crate::time::UnixTime;

/// One key of an account, as `GET /v1/account/keys` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountKey {
    pub identity: String,
    pub label: Option<String>,
    pub added_at: UnixTime,
    /// The last sign-in, renewal or refresh of any session this key made.
    pub last_used_at: Option<UnixTime>,
}

/// What a sign-in needs to know beside the challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInContext {
    /// The key's account, if it has one yet.
    pub account: Option<String>,
    /// The app's MFA policy.
    pub mfa_required: bool,
    /// The key is an account's recovery key (it may not sign in).
    pub recovery: bool,
}

/// A session with what decides its assurance level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAuth {
    pub session: SessionRecord,
    pub account: Option<String>,
    /// The app (API key) requires a second factor.
    pub mfa_required: bool,
    /// The second factor shown (`key` or `totp`) and until when it counts.
    pub raised: Option<(String, UnixTime)>,
}

/// Adds `identity` to `account`, which `inviter` must still belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkKey {
    pub nonce_id: [u8; 16],
    pub nonce_expires_at: UnixTime,
    pub account: String,
    pub inviter: String,
    pub identity: String,
    pub label: Option<String>,
    pub now: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    Linked,
    ChallengeUsed,
    /// The inviting key has left the account since the challenge was issued.
    InviterGone,
    /// The key already belongs to another account that has more in it than this
    /// key (another key, or a TOTP secret).
    InOtherAccount,
    AlreadyLinked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverOutcome {
    /// Linked (or already in the account); this many live sessions were revoked.
    Recovered(u64),
    NoSuchAccount,
    /// The key belongs to another account that has other keys too.
    InOtherAccount,
}

/// A recovery key's one use: `identity`, signed in with session `session_id`,
/// joins `account`, whose recovery key `recovery` authorized it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseRecovery {
    pub nonce_id: [u8; 16],
    pub nonce_expires_at: UnixTime,
    pub account: String,
    pub recovery: String,
    pub identity: String,
    pub session_id: String,
    pub label: Option<String>,
    /// The session is raised to `aal2` until then.
    pub aal2_until: UnixTime,
    pub now: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// Joined; this many other sessions of the account were revoked.
    Recovered(u64),
    ChallengeUsed,
    /// The key is no longer the account's recovery key (used or replaced).
    RecoveryGone,
    /// The signed-in key's own account has more in it than this key.
    InOtherAccount,
    /// The caller's session ended meanwhile.
    SessionGone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveKeyOutcome {
    /// Removed; this many of its live sessions were revoked.
    Removed(u64),
    NotFound,
    LastKey,
}

/// An account's TOTP secret (opened from its sealed form).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    pub secret: Vec<u8>,
    /// A code has been accepted since enrolment.
    pub confirmed: bool,
    /// The newest step whose code was accepted: no code of it or before is again.
    pub last_step: i64,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("confirmed", &self.confirmed)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// What proves a second factor, spent in the same transaction that raises the
/// session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaProof {
    /// A step-up challenge's nonce (single use).
    Nonce { id: [u8; 16], expires_at: UnixTime },
    /// A TOTP step of the account: accepted only past its `last_step`.
    TotpStep { account: String, step: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaCompletion {
    pub session_id: String,
    pub factor: String,
    pub aal2_until: UnixTime,
    pub proof: MfaProof,
    pub now: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaOutcome {
    Raised,
    ChallengeUsed,
    CodeUsed,
    SessionGone,
}

/// The account side of a [`super::Store`].
pub trait AccountStore: Send + Sync + 'static {
    /// The key's account and the app's MFA policy, in one read.
    fn sign_in_context<'a>(
        &'a self,
        identity: &'a str,
        api_key: &'a str,
    ) -> BoxFuture<'a, StoreResult<SignInContext>>;

    fn session_auth<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<SessionAuth>>>;

    /// The session a refresh token (by hash) belongs to, spent or not.
    fn refresh_session_id(&self, hash: [u8; 32]) -> BoxFuture<'_, StoreResult<Option<String>>>;

    /// The keys of an account, oldest first.
    fn account_keys<'a>(&'a self, account: &'a str) -> BoxFuture<'a, StoreResult<Vec<AccountKey>>>;

    /// Spends the link challenge's nonce and adds the key, in one transaction. A
    /// key alone in an account of its own (no other key, no TOTP) moves, and its
    /// sessions (which name the old account) are revoked. A key linked with the
    /// label `recovery` replaces the account's previous recovery key.
    fn link_key(&self, link: LinkKey) -> BoxFuture<'_, StoreResult<LinkOutcome>>;

    /// Removes a key from its account and revokes every session it made (feed
    /// entries included), in one transaction.
    fn remove_account_key<'a>(
        &'a self,
        account: &'a str,
        identity: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<RemoveKeyOutcome>>;

    /// The operator's last resort (`keygate account recover`): adds `identity`
    /// to `account` (moving it out of an account it is alone in) and revokes
    /// every session of every key of the account, in one transaction.
    fn recover_account<'a>(
        &'a self,
        account: &'a str,
        identity: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<RecoverOutcome>>;

    /// In one transaction: spends the recovery challenge's nonce and the
    /// recovery key (removed from the account), moves the signed-in key into the
    /// account (from an account it is alone in), revokes every other session of
    /// every key of the account, and raises the caller's session to `aal2`.
    fn use_recovery_key(&self, r: UseRecovery) -> BoxFuture<'_, StoreResult<RecoveryOutcome>>;

    fn set_mfa_required<'a>(
        &'a self,
        api_key: &'a str,
        required: bool,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Stores a new (unconfirmed) TOTP secret for the account, sealed, replacing
    /// any other.
    fn enrol_totp<'a>(
        &'a self,
        account: &'a str,
        secret: Vec<u8>,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<()>>;

    fn totp<'a>(&'a self, account: &'a str) -> BoxFuture<'a, StoreResult<Option<TotpRecord>>>;

    /// Spends the proof and raises the (live) session to `aal2` until
    /// `aal2_until`, in one transaction. A TOTP proof also confirms the secret.
    fn complete_mfa(&self, done: MfaCompletion) -> BoxFuture<'_, StoreResult<MfaOutcome>>;
}
