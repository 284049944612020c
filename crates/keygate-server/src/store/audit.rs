//! The audit trail's durable side: an append-only table of security events
//! (migration `0007_audit` on SQLite, `0006_audit` on PostgreSQL). Rows are
//! written in batches by [`crate::audit::AuditSink`]'s writer (or directly by
//! administrative commands), read back newest first, and purged past their
//! retention. No row ever holds a token, signature, secret or code: only the
//! fields of [`AuditEvent`].

use futures_util::future::BoxFuture;

use super::StoreResult;
use crate::time::UnixTime;

/// What happened. Stored as its [`AuditKind::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    SigninSucceeded,
    SigninFailed,
    TokenRefreshed,
    RefreshReuseDetected,
    SessionRevoked,
    Logout,
    AccountKeyLinked,
    AccountKeyRemoved,
    MfaEnrolled,
    MfaVerified,
    MfaFailed,
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeyPolicyChanged,
    SigningKeyRotated,
    DevTokenMinted,
    RecoveryKeyCreated,
    RecoveryUsed,
    AccountRecovered,
}

impl AuditKind {
    /// Every kind, in the order docs/audit.md lists them.
    pub const ALL: [AuditKind; 19] = [
        AuditKind::SigninSucceeded,
        AuditKind::SigninFailed,
        AuditKind::TokenRefreshed,
        AuditKind::RefreshReuseDetected,
        AuditKind::SessionRevoked,
        AuditKind::Logout,
        AuditKind::AccountKeyLinked,
        AuditKind::AccountKeyRemoved,
        AuditKind::MfaEnrolled,
        AuditKind::MfaVerified,
        AuditKind::MfaFailed,
        AuditKind::ApiKeyCreated,
        AuditKind::ApiKeyRevoked,
        AuditKind::ApiKeyPolicyChanged,
        AuditKind::SigningKeyRotated,
        AuditKind::DevTokenMinted,
        AuditKind::RecoveryKeyCreated,
        AuditKind::RecoveryUsed,
        AuditKind::AccountRecovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::SigninSucceeded => "signin_succeeded",
            AuditKind::SigninFailed => "signin_failed",
            AuditKind::TokenRefreshed => "token_refreshed",
            AuditKind::RefreshReuseDetected => "refresh_reuse_detected",
            AuditKind::SessionRevoked => "session_revoked",
            AuditKind::Logout => "logout",
            AuditKind::AccountKeyLinked => "account_key_linked",
            AuditKind::AccountKeyRemoved => "account_key_removed",
            AuditKind::MfaEnrolled => "mfa_enrolled",
            AuditKind::MfaVerified => "mfa_verified",
            AuditKind::MfaFailed => "mfa_failed",
            AuditKind::ApiKeyCreated => "api_key_created",
            AuditKind::ApiKeyRevoked => "api_key_revoked",
            AuditKind::ApiKeyPolicyChanged => "api_key_policy_changed",
            AuditKind::SigningKeyRotated => "signing_key_rotated",
            AuditKind::DevTokenMinted => "dev_token_minted",
            AuditKind::RecoveryKeyCreated => "recovery_key_created",
            AuditKind::RecoveryUsed => "recovery_used",
            AuditKind::AccountRecovered => "account_recovered",
        }
    }
}

impl std::str::FromStr for AuditKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        AuditKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest user agent kept (in bytes, cut at a character boundary).
pub const MAX_USER_AGENT: usize = 256;
/// Longest `detail` kept.
pub const MAX_DETAIL: usize = 128;

/// One security event. Every field but `at` and `kind` is optional; none may
/// hold a token, signature, secret, challenge or code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: UnixTime,
    pub kind: AuditKind,
    /// The protocol's error code of a refusal (`invalid_signature` …); None
    /// when the action succeeded.
    pub outcome: Option<String>,
    /// The app's API key id.
    pub app: Option<String>,
    pub account: Option<String>,
    /// The key identity (`did:key:…` or multibase) the event concerns.
    pub identity: Option<String>,
    pub session: Option<String>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
    /// The kind's own field: who revoked (`user`, `admin`, `key_removed`,
    /// `cap`), a logout's scope, a second factor's method, a key's label …
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, at: UnixTime) -> Self {
        AuditEvent {
            at,
            kind,
            outcome: None,
            app: None,
            account: None,
            identity: None,
            session: None,
            address: None,
            user_agent: None,
            detail: None,
        }
    }

    /// The per-identity session cap ended `identity`'s oldest sessions with
    /// `app` (detail `cap`).
    pub fn cap(at: UnixTime, app: &str, identity: &str) -> Self {
        AuditEvent::new(AuditKind::SessionRevoked, at)
            .app(app)
            .identity(identity)
            .detail("cap")
    }

    pub fn outcome(mut self, code: impl Into<String>) -> Self {
        self.outcome = Some(code.into());
        self
    }
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }
    pub fn account(mut self, account: Option<impl Into<String>>) -> Self {
        self.account = account.map(Into::into);
        self
    }
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    /// Where the request came from; the user agent is cleaned (see [`clean`]).
    pub fn client(mut self, address: Option<&str>, user_agent: Option<&str>) -> Self {
        self.address = address.map(|a| clean(a, 64));
        self.user_agent = user_agent.map(|u| clean(u, MAX_USER_AGENT));
        self
    }

    /// The client of a request: its address and user agent.
    pub fn from(self, cred: &crate::http::Credential<'_>) -> Self {
        let address = cred.address.map(|a| a.to_string());
        self.client(address.as_deref(), cred.user_agent)
    }

    /// The event with every free-text field cleaned (what is stored).
    pub fn cleaned(mut self) -> Self {
        for (field, max) in [
            (&mut self.user_agent, MAX_USER_AGENT),
            (&mut self.detail, MAX_DETAIL),
            (&mut self.address, 64),
            (&mut self.outcome, 64),
        ] {
            if let Some(v) = field.as_mut()
                && (v.len() > max || v.chars().any(char::is_control))
            {
                *v = clean(v, max);
            }
        }
        self
    }
}

/// `s` without control characters, cut to at most `max` bytes at a character
/// boundary.
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// A stored event with its id (monotonic: a later insert has a larger id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub event: AuditEvent,
}

/// Which events to read: every filter given must hold; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Events at or after this time.
    pub since: Option<UnixTime>,
    /// Events recorded with this account.
    pub account: Option<String>,
    /// Events of this key identity.
    pub identity: Option<String>,
    /// What a member of this account may see: events recorded with the account,
    /// and events recorded without any account about a key now in it (a failed
    /// sign-in names only the key).
    pub visible_to: Option<String>,
    pub kind: Option<AuditKind>,
    /// Events with an id below this (the next page).
    pub before: Option<i64>,
    pub limit: u32,
}

/// The audit trail's table.
pub trait AuditStore: Send + Sync {
    /// Appends events in one transaction, in order.
    fn append_audit<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, StoreResult<()>>;

    /// Events `q` selects, newest (highest id) first, at most `q.limit`.
    fn audit_events<'a>(
        &'a self,
        q: &'a AuditQuery,
    ) -> BoxFuture<'a, StoreResult<Vec<AuditRecord>>>;

    /// Deletes at most `limit` events recorded before `before`, oldest first;
    /// returns how many went.
    fn purge_audit(&self, before: UnixTime, limit: u32) -> BoxFuture<'_, StoreResult<u64>>;
}

/// Deletes every event recorded before `before` in rounds of `batch` rows (one
/// short transaction each), pausing `pause` between rounds, at most
/// `max_rounds`. Returns how many went.
pub async fn purge_audit(
    store: &dyn AuditStore,
    before: UnixTime,
    batch: u32,
    max_rounds: u32,
    pause: std::time::Duration,
) -> StoreResult<u64> {
    let mut all = 0;
    for round in 0..max_rounds {
        if round > 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let n = store.purge_audit(before, batch).await?;
        all += n;
        if n < u64::from(batch) {
            break;
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in AuditKind::ALL {
            assert_eq!(k.as_str().parse::<AuditKind>(), Ok(k));
        }
        assert!("signin".parse::<AuditKind>().is_err());
    }

    #[test]
    fn clean_drops_control_characters_and_cuts_at_a_boundary() {
        assert_eq!(clean("a\u{0}b\nc\u{1b}[31m", 64), "abc[31m");
        let long = "é".repeat(200);
        let cut = clean(&long, MAX_USER_AGENT);
        assert_eq!(cut.len(), MAX_USER_AGENT);
        assert!(cut.chars().all(|c| c == 'é'));
        let e = AuditEvent::new(AuditKind::Logout, 1)
            .detail("x\r\ny".repeat(100))
            .cleaned();
        assert_eq!(e.detail.as_deref().map(str::len), Some(MAX_DETAIL));
        assert!(!e.detail.unwrap().contains('\n'));
    }
}
