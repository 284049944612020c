//! Accounts of several keys and second factors, on the Hub (docs/accounts.md).
//!
//! A key's first sign-in makes it an account of its own; a signed-in key links
//! another when both sign one link challenge. An app whose API key requires MFA
//! gets `mfa_pending` sessions from a one-key sign-in: their tokens are refused
//! everywhere but here until a second factor (another key of the account, or a
//! TOTP code) raises the session to `aal2`. The same step raises an `aal1`
//! session of any app for [`STEP_UP_TTL`] (step-up).

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

    /// `POST /v1/mfa/challenge`: a step-up challenge for `second_key` (another key
    /// of the caller's account) to sign for the caller's session.
    pub async fn mfa_challenge(
        &self,
        token: impl Into<Credential<'_>>,
        second_key: &str,
    ) -> Result<IssuedChallenge, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?;
        let second = self.second_key(account, &claims, second_key).await?;
        self.statement(
            Kind::StepUp,
            &[&claims.aud, account, &second.to_string(), &claims.sid],
        )
    }

    /// A key of `account` other than the session's own and its recovery key.
    async fn second_key(
        &self,
        account: &str,
        claims: &AccessClaims,
        key: &str,
    ) -> Result<Identity, Error> {
        let key = Identity::parse(key)?;
        let id = key.to_string();
        let keys = self.device_keys(account).await?;
        if id == claims.sub || !keys.iter().any(|k| k.identity == id) {
            return Err(Error::Forbidden(
                "the second factor must be another key of this account".into(),
            ));
        }
        Ok(key)
    }

    /// `POST /v1/mfa/key`: the second key's signature over the step-up challenge.
    pub async fn mfa_by_key(
        &self,
        token: impl Into<Credential<'_>>,
        challenge: &str,
        sig: &str,
    ) -> Result<IssuedToken, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?;
        let s = account::verify(&self.nonce_key, Kind::StepUp, challenge, self.now())?;
        if s.value(0) != claims.aud || s.value(1) != account || s.value(3) != claims.sid {
            return Err(crate::challenge::ChallengeError::WrongAudience.into());
        }
        let second = self.second_key(account, &claims, s.value(2)).await?;
        let result = match account::verify_signature(&second, challenge, sig) {
            Ok(()) => {
                let proof = MfaProof::Nonce {
                    id: s.nonce_id,
                    expires_at: s.expires_at,
                };
                self.raise(&auth, Factor::Key, proof).await
            }
            Err(e) => Err(e.into()),
        };
        self.record_mfa(&cred, &claims, &auth, Factor::Key, &result);
        result
    }

    /// Records a second factor's check: `mfa_verified`, or `mfa_failed` with the
    /// error's code.
    fn record_mfa(
        &self,
        cred: &Credential<'_>,
        claims: &AccessClaims,
        auth: &SessionAuth,
        factor: Factor,
        result: &Result<IssuedToken, Error>,
    ) {
        let kind = match result {
            Ok(_) => AuditKind::MfaVerified,
            Err(_) => AuditKind::MfaFailed,
        };
        let mut event = self
            .user_event(kind, claims, &auth.session.api_key, cred)
            .session(&auth.session.id)
            .detail(factor.as_str());
        if let Err(e) = result {
            event = event.outcome(e.code());
        }
        self.record(event);
    }

    /// `POST /v1/mfa/totp`: a new TOTP secret for the caller's account, shown once;
    /// it counts as a factor once a code of it has been accepted.
    pub async fn totp_enrol(
        &self,
        token: impl Into<Credential<'_>>,
    ) -> Result<TotpEnrolment, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?.to_owned();
        self.may_change_account(&auth, &account).await?;
        let mut secret = [0u8; account::TOTP_SECRET_LEN];
        self.entropy.fill(&mut secret);
        let totp = account::totp(&secret, "keygate", &account);
        let otpauth_uri = totp.to_url().map_err(|_| Error::Internal)?;
        self.store
            .enrol_totp(&account, secret.to_vec(), self.now())
            .await?;
        let event = self.user_event(
            AuditKind::MfaEnrolled,
            &claims,
            &auth.session.api_key,
            &cred,
        );
        self.record(
            event
                .session(&auth.session.id)
                .detail(Factor::Totp.as_str()),
        );
        Ok(TotpEnrolment {
            secret: totp.secret().to_base32(),
            otpauth_uri,
        })
    }

    /// `POST /v1/mfa/totp/verify`: a TOTP code raises the session (and confirms a
    /// fresh enrolment). Attempts are rate-limited per account; a code is accepted
    /// once (a later step's code is needed after it).
    pub async fn totp_verify(
        &self,
        token: impl Into<Credential<'_>>,
        code: &str,
    ) -> Result<IssuedToken, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?.to_owned();
        let result = async {
            self.guard.check_totp(&account)?;
            let record = self.store.totp(&account).await?.ok_or_else(|| {
                Error::Forbidden("no TOTP secret is enrolled for this account".into())
            })?;
            let step = account::check_totp(&record.secret, code.trim(), self.now())
                .ok_or(Error::InvalidOtp)?;
            if step <= record.last_step {
                return Err(Error::OtpReused);
            }
            let proof = MfaProof::TotpStep { account, step };
            self.raise(&auth, Factor::Totp, proof).await
        }
        .await;
        self.record_mfa(&cred, &claims, &auth, Factor::Totp, &result);
        result
    }

    /// Until when a session raised now counts as `aal2`: as long as the session
    /// when its app requires MFA, else for [`STEP_UP_TTL`], and never less than an
    /// earlier raise.
    fn raised_until(auth: &SessionAuth, now: UnixTime) -> UnixTime {
        let s = &auth.session;
        let mut until = if auth.mfa_required {
            s.expires_at
        } else {
            (now + STEP_UP_TTL).min(s.expires_at)
        };
        if let Some((_, earlier)) = &auth.raised {
            until = until.max(*earlier);
        }
        until
    }

    /// Spends `proof`, raises the session to `aal2` (see [`Hub::raised_until`])
    /// and mints its raised token.
    async fn raise(
        &self,
        auth: &SessionAuth,
        factor: Factor,
        proof: MfaProof,
    ) -> Result<IssuedToken, Error> {
        let now = self.now();
        let until = Self::raised_until(auth, now);
        let done = MfaCompletion {
            session_id: auth.session.id.clone(),
            factor: factor.as_str().to_owned(),
            aal2_until: until,
            proof,
            now,
        };
        match self.store.complete_mfa(done).await? {
            MfaOutcome::Raised => {}
            MfaOutcome::ChallengeUsed => return Err(Error::ChallengeUsed),
            MfaOutcome::CodeUsed => return Err(Error::OtpReused),
            MfaOutcome::SessionGone => return Err(Error::SessionRevoked),
        }
        self.mint_raised(auth, auth.account.clone(), factor, until, now)
            .await
    }

    /// The token of a session just raised to `aal2` until `until`, in `account`.
    async fn mint_raised(
        &self,
        auth: &SessionAuth,
        account: Option<String>,
        factor: Factor,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<IssuedToken, Error> {
        let s = &auth.session;
        let key = self
            .live_api_key(&s.api_key)
            .await
            .map_err(|_| Error::SessionRevoked)?;
        Ok(self.mint(
            Grant {
                subject: &s.subject,
                app: &s.api_key,
                session_id: &s.id,
                scope: &s.scope,
                client_id: s.client_id.clone(),
                role: None,
                account,
                assurance: Some(Assurance::Aal2 { factor, until }),
                jkt: s.jkt.as_deref(),
            },
            &key,
            None,
            now,
            s.expires_at,
            None,
        ))
    }

    /// `POST /v1/account/recover/challenge`: a recovery challenge for the
    /// caller's key to join the account whose recovery key is `recovery_key`,
    /// to be signed by both keys (docs/accounts.md, "Recovery key").
    pub async fn recovery_challenge(
        &self,
        token: impl Into<Credential<'_>>,
        recovery_key: &str,
    ) -> Result<IssuedChallenge, Error> {
        let cred = token.into();
        let (claims, _) = self.authenticate(cred, true).await?;
        let recovery = Identity::parse(recovery_key)?.to_string();
        let ctx = self.store.sign_in_context(&recovery, &claims.aud).await?;
        let Some(account) = ctx.account.filter(|_| ctx.recovery) else {
            return Err(Error::Forbidden(NOT_A_RECOVERY_KEY.into()));
        };
        self.statement(
            Kind::Recovery,
            &[&claims.aud, &account, &recovery, &claims.sub, &claims.sid],
        )
    }

    /// `POST /v1/account/recover`: the recovery key's and the caller's signatures
    /// over one recovery challenge. The caller's key joins the account, every
    /// other session of the account ends, the recovery key is spent, and the
    /// caller's session is raised to `aal2` in the account.
    pub async fn recover_with_key(
        &self,
        token: impl Into<Credential<'_>>,
        challenge: &str,
        sig: &str,
        new_sig: &str,
        label: Option<&str>,
    ) -> Result<IssuedToken, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let result = self
            .use_recovery(&claims, &auth, challenge, sig, new_sig, label)
            .await;
        let mut event = self
            .user_event(
                AuditKind::RecoveryUsed,
                &claims,
                &auth.session.api_key,
                &cred,
            )
            .session(&auth.session.id);
        match &result {
            Ok((account, revoked, _)) => {
                event = event
                    .account(Some(account))
                    .detail(format!("revoked {revoked}"));
                if *revoked > 0 {
                    let ended = self
                        .user_event(
                            AuditKind::SessionRevoked,
                            &claims,
                            &auth.session.api_key,
                            &cred,
                        )
                        .account(Some(account));
                    self.record(ended.detail("recovery"));
                }
            }
            Err(e) => event = event.outcome(e.code()),
        }
        self.record(event);
        result.map(|(_, _, token)| token)
    }

    /// [`Hub::recover_with_key`] after authentication: the recovered account, how
    /// many sessions ended, and the raised token.
    async fn use_recovery(
        &self,
        claims: &AccessClaims,
        auth: &SessionAuth,
        challenge: &str,
        sig: &str,
        new_sig: &str,
        label: Option<&str>,
    ) -> Result<(String, u64, IssuedToken), Error> {
        if label.is_some_and(|l| !account::valid_label(l) || l == RECOVERY_LABEL) {
            return Err(Error::bad_request(
                "label must be 1 to 64 characters without control characters, not \"recovery\"",
            ));
        }
        let now = self.now();
        let s = account::verify(&self.nonce_key, Kind::Recovery, challenge, now)?;
        if s.value(0) != claims.aud || s.value(3) != claims.sub || s.value(4) != claims.sid {
            return Err(crate::challenge::ChallengeError::WrongAudience.into());
        }
        let recovery = Identity::parse(s.value(2))?;
        account::verify_signature(&recovery, challenge, sig)?;
        account::verify_signature(&Identity::parse(&claims.sub)?, challenge, new_sig)?;
        let until = Self::raised_until(auth, now);
        let account = s.value(1).to_owned();
        let used = UseRecovery {
            nonce_id: s.nonce_id,
            nonce_expires_at: s.expires_at,
            account: account.clone(),
            recovery: recovery.to_string(),
            identity: claims.sub.clone(),
            session_id: claims.sid.clone(),
            label: label.map(str::to_owned),
            aal2_until: until,
            now,
        };
        let revoked = match self.store.use_recovery_key(used).await? {
            RecoveryOutcome::Recovered(n) => n,
            RecoveryOutcome::ChallengeUsed => return Err(Error::ChallengeUsed),
            RecoveryOutcome::RecoveryGone => {
                return Err(Error::Forbidden(NOT_A_RECOVERY_KEY.into()));
            }
            RecoveryOutcome::InOtherAccount => return Err(Error::KeyInOtherAccount),
            RecoveryOutcome::SessionGone => return Err(Error::SessionRevoked),
        };
        let token = self
            .mint_raised(auth, Some(account.clone()), Factor::Recovery, until, now)
            .await?;
        Ok((account, revoked, token))
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
