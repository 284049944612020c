//! Accounts of several keys and second factors, on the Hub (docs/accounts.md).
//!
//! A key's first sign-in makes it an account of its own; a signed-in key links
//! another when both sign one link challenge. An app whose API key requires MFA
//! gets `mfa_pending` sessions from a one-key sign-in: their tokens are refused
//! everywhere but here until a second factor (another key of the account, or a
//! TOTP code) raises the session to `aal2`. The same step raises an `aal1`
//! session of any app for [`STEP_UP_TTL`] (step-up).
//!
//! Here: authentication of account calls, the account's keys and events, linking.
//! Second factors and step-up are in `accounts/mfa.rs`, the recovery key's use in
//! `accounts/recovery.rs`.

use super::{Error, Grant, Hub, IssuedToken};
use crate::account::{self, Assurance, Factor, Kind, RECOVERY_LABEL, STEP_UP_TTL};
use crate::challenge::IssuedChallenge;
use crate::http::Credential;
use crate::identity::Identity;
use crate::store::accounts::{
    AccountKey, LinkKey, LinkOutcome, MfaCompletion, MfaOutcome, MfaProof, RecoveryOutcome,
    RemoveKeyOutcome, SessionAuth, UseRecovery,
};
use crate::store::{AuditKind, AuditQuery};
use crate::time::{UnixTime, format_rfc3339};
use crate::token::AccessClaims;

use keygate_proto::{
    AccountEvent, AccountEvents, AccountKeyView, AccountView, Linked, TotpEnrolment,
};

mod mfa;
mod recovery;

/// Lifetime of link, step-up and recovery challenges: they travel between two
/// devices.
pub const STATEMENT_TTL: i64 = 300;

/// Why a key is refused where only a recovery key will do (or the reverse).
const NOT_A_RECOVERY_KEY: &str = "this key is not the recovery key of an account";
/// Why a recovery key is refused at sign-in.
pub(super) const RECOVERY_KEY_SIGN_IN: &str =
    "a recovery key cannot sign in: it only authorizes linking a new device";

/// Events one page of `GET /v1/account/events` holds unless `limit` says fewer.
pub const DEFAULT_EVENTS_PAGE: u32 = 50;
/// Most events one page holds.
pub const MAX_EVENTS_PAGE: u32 = 200;

/// The assurance a session's token asserts at `now`.
pub fn assurance(auth: &SessionAuth, now: UnixTime) -> Assurance {
    match &auth.raised {
        Some((factor, until)) if *until > now => Assurance::Aal2 {
            factor: Factor::parse(factor).unwrap_or(Factor::Key),
            until: *until,
        },
        _ if auth.mfa_required => Assurance::Pending,
        _ => Assurance::Aal1,
    }
}

impl Hub {
    /// Verifies an access token and checks its session live in the store. A token
    /// of a session waiting for its second factor passes only with `allow_pending`
    /// (the MFA step and the first enrolment); anywhere else it is `403
    /// mfa_required`, saying which factors the account has.
    pub(crate) async fn authenticate(
        &self,
        cred: Credential<'_>,
        allow_pending: bool,
    ) -> Result<(AccessClaims, SessionAuth), Error> {
        let dpop_scheme = cred.dpop_scheme;
        self.authenticate_as(cred, allow_pending)
            .await
            .map_err(|e| e.under_scheme(dpop_scheme))
    }

    async fn authenticate_as(
        &self,
        cred: Credential<'_>,
        allow_pending: bool,
    ) -> Result<(AccessClaims, SessionAuth), Error> {
        let token = cred.token.ok_or(Error::MissingToken)?;
        let now = self.now();
        let (claims, pending_token) = self.ring().verifier.verify_any(token, now)?;
        if !cred.holder_unknown {
            self.check_binding(&cred, token, &claims, now).await?;
        }
        let auth = self
            .store
            .session_auth(&claims.sid)
            .await?
            .ok_or(Error::SessionRevoked)?;
        if auth.session.subject != claims.sub {
            return Err(Error::SessionRevoked);
        }
        // A token names its app in `aud`; its session must be of that app.
        if auth.session.api_key != claims.aud {
            return Err(crate::token::TokenError::WrongAudience.into());
        }
        auth.session.check(now)?;
        if !self.dev_mode() && account::is_dev_token(&claims) {
            return Err(Error::Forbidden(account::DEV_TOKEN_REFUSED.into()));
        }
        if !allow_pending && (pending_token || assurance(&auth, now) == Assurance::Pending) {
            return Err(self.mfa_required(auth.account.as_deref()).await);
        }
        Ok((claims, auth))
    }

    /// A key-bound token only with the DPoP scheme and a proof by its key for this
    /// request; a bearer token only as a bearer token (RFC 9449 §7). The proof may
    /// name the issuer's origin, a Provider's in this process, or one of the
    /// token's app's origins (a Provider elsewhere forwards its users' calls).
    pub(crate) async fn check_binding(
        &self,
        cred: &Credential<'_>,
        token: &str,
        claims: &AccessClaims,
        now: crate::time::UnixTime,
    ) -> Result<(), Error> {
        let Some(jkt) = keygate_core::dpop::bound_key(claims.cnf.as_ref(), cred.dpop_scheme)?
        else {
            return Ok(());
        };
        let mut urls = crate::dpop::urls(&self.dpop_origins, cred.path);
        let named = |u: &Vec<String>| {
            cred.proof.is_some_and(|p| {
                keygate_core::dpop::claimed_htu(p).is_some_and(|h| {
                    u.iter()
                        .any(|c| keygate_core::dpop::normalize_htu(c).as_deref() == Some(&h))
                })
            })
        };
        if !named(&urls)
            && let Some(app) = self.store.api_key(&claims.aud).await?
        {
            urls.extend(crate::dpop::urls(&app.origins, cred.path));
        }
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        self.dpop.check_use(cred, token, jkt, &urls, now)
    }

    /// The keys of an account that can sign in and serve as a second factor
    /// (all but its recovery key).
    async fn device_keys(&self, account: &str) -> Result<Vec<AccountKey>, Error> {
        let mut keys = self.store.account_keys(account).await?;
        keys.retain(|k| k.label.as_deref() != Some(RECOVERY_LABEL));
        Ok(keys)
    }

    /// `403 mfa_required` with the second factors the account can show.
    async fn mfa_required(&self, account: Option<&str>) -> Error {
        let mut methods = Vec::new();
        if let Some(a) = account {
            if self.device_keys(a).await.is_ok_and(|k| k.len() > 1) {
                methods.push("key");
            }
            if self
                .store
                .totp(a)
                .await
                .is_ok_and(|t| t.is_some_and(|t| t.confirmed))
            {
                methods.push("totp");
            }
        }
        Error::MfaRequired { methods }
    }

    /// Whether the account has a second factor (another key, a confirmed TOTP;
    /// its recovery key is none: it cannot raise a session).
    async fn has_second_factor(&self, account: &str) -> Result<bool, Error> {
        Ok(self.device_keys(account).await?.len() > 1
            || self.store.totp(account).await?.is_some_and(|t| t.confirmed))
    }

    /// Adding a factor or removing another key needs `aal2` once the account has a
    /// second factor; before that, any signed-in session of it may (so that an
    /// app requiring MFA can have its users enrol one from a pending sign-in).
    async fn may_change_account(&self, auth: &SessionAuth, account: &str) -> Result<(), Error> {
        let raised = matches!(assurance(auth, self.now()), Assurance::Aal2 { .. });
        if raised || !self.has_second_factor(account).await? {
            Ok(())
        } else {
            Err(self.mfa_required(Some(account)).await)
        }
    }

    /// The caller's account (every key signed in since accounts exist has one).
    fn account_of(auth: &SessionAuth) -> Result<&str, Error> {
        auth.account
            .as_deref()
            .ok_or_else(|| Error::Forbidden("this session belongs to no account".into()))
    }

    /// `GET /v1/account/keys`.
    pub async fn account_keys(
        &self,
        token: impl Into<Credential<'_>>,
    ) -> Result<AccountView, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, false).await?;
        let account = Self::account_of(&auth)?;
        let keys = self.store.account_keys(account).await?;
        let totp = self.store.totp(account).await?.is_some_and(|t| t.confirmed);
        Ok(AccountView {
            account: account.to_owned(),
            totp,
            keys: keys
                .into_iter()
                .map(|k| AccountKeyView {
                    current: k.identity == claims.sub,
                    identity: k.identity,
                    label: k.label,
                    added_at: format_rfc3339(k.added_at),
                    last_used_at: k.last_used_at.map(format_rfc3339),
                })
                .collect(),
        })
    }

    /// `GET /v1/account/events`: the security events of the caller's account
    /// (or of its key, when the session has no account), newest first, at most
    /// `limit` (1 to [`MAX_EVENTS_PAGE`]) with an id below `before`, including
    /// every event recorded before the request arrived.
    pub async fn account_events(
        &self,
        token: impl Into<Credential<'_>>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<AccountEvents, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, false).await?;
        let limit = limit.clamp(1, MAX_EVENTS_PAGE);
        let mut q = AuditQuery {
            before,
            limit,
            ..AuditQuery::default()
        };
        match &auth.account {
            Some(account) => q.visible_to = Some(account.clone()),
            None => q.identity = Some(claims.sub.clone()),
        }
        // Read your own writes: events queued before this request (the
        // recovery just made, a logout) are in the table before it is read.
        self.audit.flush().await;
        let rows = self.store.audit_events(&q).await?;
        let next_before = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.id))
            .flatten();
        let events = rows
            .into_iter()
            .map(|r| AccountEvent {
                id: r.id,
                at: format_rfc3339(r.event.at),
                kind: r.event.kind.as_str().to_owned(),
                outcome: r.event.outcome,
                app: r.event.app,
                identity: r.event.identity,
                session_id: r.event.session,
                address: r.event.address,
                user_agent: r.event.user_agent,
                detail: r.event.detail,
            })
            .collect();
        Ok(AccountEvents {
            events,
            next_before,
        })
    }

    /// `POST /v1/account/link/challenge`: a link challenge for adding `new_key`
    /// to the caller's account, to be signed by the caller's key and by `new_key`.
    pub async fn link_challenge(
        &self,
        token: impl Into<Credential<'_>>,
        new_key: &str,
    ) -> Result<IssuedChallenge, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?;
        let new_key = Identity::parse(new_key)?.to_string();
        if new_key == claims.sub {
            return Err(Error::bad_request("a key cannot link itself"));
        }
        self.may_change_account(&auth, account).await?;
        self.statement(Kind::Link, &[&claims.aud, account, &claims.sub, &new_key])
    }

    fn statement(&self, kind: Kind, values: &[&str]) -> Result<IssuedChallenge, Error> {
        let random = self.entropy.bytes::<16>();
        Ok(account::issue(
            &self.nonce_key,
            kind,
            values,
            self.now(),
            STATEMENT_TTL,
            random,
        )?)
    }

    /// `POST /v1/account/link`: both keys' signatures over one link challenge.
    pub async fn link_key(
        &self,
        challenge: &str,
        sig: &str,
        new_sig: &str,
        label: Option<&str>,
        address: Option<std::net::IpAddr>,
    ) -> Result<Linked, Error> {
        if label.is_some_and(|l| !account::valid_label(l)) {
            return Err(Error::bad_request(
                "label must be 1 to 64 characters without control characters",
            ));
        }
        let now = self.now();
        let s = account::verify(&self.nonce_key, Kind::Link, challenge, now)?;
        let inviter = Identity::parse(s.value(2))?;
        let new_key = Identity::parse(s.value(3))?;
        self.guard.check_identity(&new_key.to_string())?;
        account::verify_signature(&inviter, challenge, sig)?;
        account::verify_signature(&new_key, challenge, new_sig)?;
        let link = LinkKey {
            nonce_id: s.nonce_id,
            nonce_expires_at: s.expires_at,
            account: s.value(1).to_owned(),
            inviter: inviter.to_string(),
            identity: new_key.to_string(),
            label: label.map(str::to_owned),
            now,
        };
        match self.store.link_key(link).await? {
            LinkOutcome::Linked => {
                let kind = if label == Some(RECOVERY_LABEL) {
                    AuditKind::RecoveryKeyCreated
                } else {
                    AuditKind::AccountKeyLinked
                };
                let address = address.map(|a| a.to_string());
                let mut event = self
                    .event(kind)
                    .app(s.value(0))
                    .account(Some(s.value(1)))
                    .identity(new_key.to_string())
                    .client(address.as_deref(), None);
                event.detail = label.map(str::to_owned);
                self.record(event);
                Ok(Linked {
                    account: s.value(1).to_owned(),
                    identity: new_key.to_string(),
                })
            }
            LinkOutcome::AlreadyLinked => Ok(Linked {
                account: s.value(1).to_owned(),
                identity: new_key.to_string(),
            }),
            LinkOutcome::ChallengeUsed => Err(Error::ChallengeUsed),
            LinkOutcome::InviterGone => Err(Error::Forbidden(
                "the key that asked for this link is no longer in the account".into(),
            )),
            LinkOutcome::InOtherAccount => Err(Error::KeyInOtherAccount),
        }
    }

    /// `DELETE /v1/account/keys/{identity}`: removes a key of the caller's account
    /// and ends every session it made. A key may always remove itself; removing
    /// another needs `aal2`.
    pub async fn remove_account_key(
        &self,
        token: impl Into<Credential<'_>>,
        identity: &str,
    ) -> Result<u64, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, false).await?;
        let account = Self::account_of(&auth)?;
        let identity = Identity::parse(identity)?.to_string();
        if identity != claims.sub {
            self.may_change_account(&auth, account).await?;
        }
        match self
            .store
            .remove_account_key(account, &identity, self.now())
            .await?
        {
            RemoveKeyOutcome::Removed(n) => {
                let app = &auth.session.api_key;
                let event = self.user_event(AuditKind::AccountKeyRemoved, &claims, app, &cred);
                self.record(event.identity(&identity).account(Some(account)));
                if n > 0 {
                    let event = self.user_event(AuditKind::SessionRevoked, &claims, app, &cred);
                    let event = event.identity(&identity).account(Some(account));
                    self.record(event.detail("key_removed"));
                }
                Ok(n)
            }
            RemoveKeyOutcome::NotFound => Err(Error::NotFound),
            RemoveKeyOutcome::LastKey => Err(Error::LastAccountKey),
        }
    }

    /// `POST /v1/qr`: an SVG QR code of `text` (a link URL, an `otpauth://` URI),
    /// drawn here because the web demo loads nothing from elsewhere. For signed-in
    /// callers (pending ones too: they enrol TOTP); at most 1024 bytes.
    pub async fn qr_svg(
        &self,
        token: impl Into<Credential<'_>>,
        text: &str,
    ) -> Result<String, Error> {
        self.authenticate(token.into(), true).await?;
        if text.is_empty() || text.len() > 1024 {
            return Err(Error::bad_request("text must be 1 to 1024 bytes"));
        }
        let code = qrcode::QrCode::new(text.as_bytes())
            .map_err(|_| Error::bad_request("text does not fit in a QR code"))?;
        Ok(code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(240, 240)
            .build())
    }

    /// Refusal of a refresh token whose session still waits for its second factor,
    /// before anything is spent; otherwise the session's state, for the new token.
    pub(crate) async fn refresh_gate(&self, hash: [u8; 32]) -> Result<Option<SessionAuth>, Error> {
        let Some(sid) = self.store.refresh_session_id(hash).await? else {
            return Ok(None);
        };
        let auth = self.store.session_auth(&sid).await?;
        if let Some(a) = &auth
            && a.session.revoked_at.is_none()
            && assurance(a, self.now()) == Assurance::Pending
        {
            return Err(self.mfa_required(a.account.as_deref()).await);
        }
        Ok(auth)
    }
}
