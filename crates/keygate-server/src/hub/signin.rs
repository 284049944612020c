//! Sign-in: challenges, redeeming a signed challenge into a session, and
//! development tokens.

use super::{
    ClientMeta, Grant, Hub, IssuedToken, MAX_CLIENT_ID_LEN, MAX_SCOPE_LEN, SignedChallenge,
    TokenOptions, accounts, truncate,
};
use crate::apikey::ApiKeyError;
use crate::challenge::{self, Flow, IssuedChallenge};
use crate::error::Error;
use crate::identity::Identity;
use crate::session;
use crate::store::{ApiKeyRecord, AuditKind, DpopPolicy, RedeemOutcome, Redemption};
use crate::time::UnixTime;

impl Hub {
    /// Issues a challenge for `pubkey` on behalf of `app`, to be redeemed on
    /// `flow` only. The audience defaults to the app's key id (a backend-only app).
    /// A refusal is recorded as a failed sign-in.
    pub fn challenge(
        &self,
        app: &ApiKeyRecord,
        flow: Flow,
        pubkey: &str,
        audience: Option<&str>,
    ) -> Result<IssuedChallenge, Error> {
        let meta = ClientMeta::default();
        let identity = crate::signin::parse_identity(pubkey)
            .map_err(|e| self.challenge_refused(app, None, e.into(), &meta))?;
        self.challenge_from(app, flow, &identity, audience, &meta)
    }

    /// [`Hub::challenge`] for an identity already parsed (and so already checked:
    /// parsing is most of the cost of a challenge).
    pub fn challenge_for(
        &self,
        app: &ApiKeyRecord,
        flow: Flow,
        identity: &Identity,
        audience: Option<&str>,
    ) -> Result<IssuedChallenge, Error> {
        self.challenge_from(app, flow, identity, audience, &ClientMeta::default())
    }

    /// [`Hub::challenge_for`] for a client whose address and user agent are known
    /// (recorded if it is refused).
    pub fn challenge_from(
        &self,
        app: &ApiKeyRecord,
        flow: Flow,
        identity: &Identity,
        audience: Option<&str>,
        meta: &ClientMeta,
    ) -> Result<IssuedChallenge, Error> {
        self.issue_challenge(app, flow, identity, audience)
            .map_err(|e| self.challenge_refused(app, Some(identity), e, meta))
    }

    fn issue_challenge(
        &self,
        app: &ApiKeyRecord,
        flow: Flow,
        identity: &Identity,
        audience: Option<&str>,
    ) -> Result<IssuedChallenge, Error> {
        self.guard.check_identity(&identity.to_string())?;
        if audience.is_some_and(|a| !app.may_use_audience(a)) {
            return Err(Error::ForbiddenAudience);
        }
        let random = self.entropy.bytes::<16>();
        Ok(challenge::issue(
            &self.nonce_key,
            &app.id,
            flow,
            audience.unwrap_or(&app.id),
            identity,
            self.now(),
            self.config.challenge_ttl,
            random,
        )?)
    }

    /// Records a challenge refused (a sign-in failed before its signature) and
    /// gives the error back.
    pub(crate) fn challenge_refused(
        &self,
        app: &ApiKeyRecord,
        identity: Option<&Identity>,
        e: Error,
        meta: &ClientMeta,
    ) -> Error {
        self.sign_in_failed(app, identity, &e, meta, Some("challenge"));
        e
    }

    /// Redeems a signed challenge issued on `flow`: verifies it, records the
    /// session durably, and only then mints the token.
    pub async fn redeem(
        &self,
        app: &ApiKeyRecord,
        flow: Flow,
        signed: SignedChallenge<'_>,
        options: &TokenOptions,
        expected_audience: Option<&str>,
        meta: ClientMeta,
    ) -> Result<IssuedToken, Error> {
        let identity = match crate::signin::parse_identity(signed.pubkey) {
            Ok(i) => i,
            Err(e) => {
                let e = Error::from(e);
                self.sign_in_failed(app, None, &e, &meta, None);
                return Err(e);
            }
        };
        self.redeem_for(
            app,
            flow,
            &identity,
            signed,
            options,
            expected_audience,
            meta,
        )
        .await
    }

    /// [`Hub::redeem`] for an identity already parsed (the WebSocket flow parsed
    /// it when the challenge was asked for); `signed.pubkey` is not looked at.
    #[allow(clippy::too_many_arguments)]
    pub async fn redeem_for(
        &self,
        app: &ApiKeyRecord,
        flow: Flow,
        identity: &Identity,
        signed: SignedChallenge<'_>,
        options: &TokenOptions,
        expected_audience: Option<&str>,
        meta: ClientMeta,
    ) -> Result<IssuedToken, Error> {
        // Timed as a whole for the sign-in metrics, whatever the outcome.
        let started = std::time::Instant::now();
        let result = async {
            let failed = |e: Error| {
                self.sign_in_failed(app, Some(identity), &e, &meta, None);
                e
            };
            let subject = identity.to_string();
            if let Err(e) = self.guard.check_identity(&subject) {
                return Err(failed(e));
            }
            let request = validate_options(app, options, identity).map_err(failed)?;
            let now = self.now();
            let verified = match challenge::verify(
                &self.nonce_key,
                &app.id,
                flow,
                signed.challenge,
                identity,
                expected_audience,
                signed.sig,
                now,
            )
            .inspect_err(|e| {
                // The client hears only the code; the precise reason (a forged nonce
                // and a bad signature look alike outside) is for the operator. The
                // variant name carries no input.
                tracing::debug!(reason = ?e, ?flow, "signed challenge refused");
            }) {
                Ok(v) => v,
                Err(e) => return Err(failed(e.into())),
            };
            let nonce = (verified.nonce_id, verified.expires_at);
            let kind = AuditKind::SigninSucceeded;
            self.open_session(app, subject, options, request, nonce, meta, now, kind)
                .await
        }
        .await;
        crate::metrics::metrics().signin(flow, result.as_ref().map(|_| ()), started.elapsed());
        result
    }

    /// Records a refused sign-in: the error's code, never the input; `detail`
    /// `challenge` when the challenge itself was refused.
    fn sign_in_failed(
        &self,
        app: &ApiKeyRecord,
        identity: Option<&Identity>,
        e: &Error,
        meta: &ClientMeta,
        detail: Option<&str>,
    ) {
        let mut event = self
            .event(AuditKind::SigninFailed)
            .outcome(e.code())
            .app(&app.id)
            .client(meta.address.as_deref(), meta.user_agent.as_deref());
        event.identity = identity.map(Identity::to_string);
        event.detail = detail.map(str::to_owned);
        self.record(event);
    }

    /// The rest of a sign-in once the identity is proven (by its signature over a
    /// challenge, or by a development key): spends `nonce` (id, expiry), records
    /// the session durably, and only then mints the token. The audit event
    /// (`kind`) of a sign-in that succeeds is written in the same transaction;
    /// a refused one is recorded here, as a failed sign-in with the error's code.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open_session(
        &self,
        app: &ApiKeyRecord,
        subject: String,
        options: &TokenOptions,
        request: ValidRequest,
        nonce: ([u8; 16], UnixTime),
        meta: ClientMeta,
        now: UnixTime,
        kind: AuditKind,
    ) -> Result<IssuedToken, Error> {
        let event = self
            .event(kind)
            .app(&app.id)
            .identity(&subject)
            .client(meta.address.as_deref(), meta.user_agent.as_deref());
        let result = self
            .open_session_recorded(
                app,
                subject,
                options,
                request,
                nonce,
                meta,
                now,
                event.clone(),
            )
            .await;
        if let Err(e) = &result {
            let mut event = event;
            event.kind = AuditKind::SigninFailed;
            event.outcome = Some(e.code().to_owned());
            self.record(event);
        }
        result
    }

    /// [`Hub::open_session`], with `event` to write if it succeeds.
    #[allow(clippy::too_many_arguments)]
    async fn open_session_recorded(
        &self,
        app: &ApiKeyRecord,
        subject: String,
        options: &TokenOptions,
        request: ValidRequest,
        nonce: ([u8; 16], UnixTime),
        meta: ClientMeta,
        now: UnixTime,
        mut event: crate::store::AuditEvent,
    ) -> Result<IssuedToken, Error> {
        let (session_id, refresh_token, new_account) = {
            let mut rng = self.entropy.rng();
            let sid = session::session_id(now, &mut rng);
            let refresh = request
                .offline
                .then(|| session::new_secret_token(&mut rng, session::REFRESH_PREFIX));
            (sid, refresh, crate::account::new_account_id(&mut rng))
        };
        // A renewal keeps its session (the store renews exactly that id).
        event.session = Some(options.session_id.as_ref().unwrap_or(&session_id).clone());
        event.detail = Some(
            if options.session_id.is_some() {
                "renewed"
            } else {
                "new"
            }
            .into(),
        );
        let event = event.cleaned();
        // A copy only for `--audit-stdout`, printed once the account is known.
        let mut printed = self.audit.prints().then(|| event.clone());
        let session = crate::store::NewSession {
            id: session_id.clone(),
            subject,
            api_key: app.id.clone(),
            client_id: options.client_id.clone(),
            scope: request.scope,
            created_at: now,
            expires_at: now + app.policy.session_ttl,
            idle_timeout: app.policy.idle_timeout,
            user_agent: meta.user_agent.map(|s| truncate(s, 256)),
            address: meta.address,
            jkt: request.jkt.clone(),
        };
        let redemption = Redemption {
            nonce_id: nonce.0,
            nonce_expires_at: nonce.1,
            refresh: refresh_token
                .as_deref()
                .zip(options.client_id.clone())
                .map(|(t, c)| (session::hash_secret(t), c)),
            renew: options.session_id.clone(),
            session,
            new_account,
            keep: Some(app.max_sessions),
            event: Some(event),
        };
        // Only what the token needs is kept back, not a copy of the whole redemption.
        let created = (
            redemption.session.subject.clone(),
            session_id,
            redemption.session.scope.clone(),
            redemption.session.client_id.clone(),
            redemption.session.expires_at,
            request.jkt,
        );
        let mut assurance = crate::account::Assurance::Aal1;
        let (s, account) = match self.store.redeem(redemption).await? {
            RedeemOutcome::Created(signed) => {
                if signed.mfa_required {
                    assurance = crate::account::Assurance::Pending;
                }
                if signed.capped > 0 {
                    tracing::debug!(key = %app.id, ended = signed.capped, "session cap: oldest sessions ended");
                    if printed.is_some() {
                        self.audit
                            .print(crate::store::AuditEvent::cap(now, &app.id, &created.0));
                    }
                }
                (created, signed.account)
            }
            RedeemOutcome::Renewed { session, account } => {
                let s = *session;
                if let Some(auth) = self.store.session_auth(&s.id).await? {
                    assurance = accounts::assurance(&auth, now);
                }
                let jkt = created.5.or(s.jkt);
                (
                    (s.subject, s.id, s.scope, s.client_id, s.expires_at, jkt),
                    account,
                )
            }
            RedeemOutcome::ChallengeUsed => return Err(Error::ChallengeUsed),
            RedeemOutcome::ApiKeyRevoked => return Err(ApiKeyError.into()),
            RedeemOutcome::RecoveryKey => {
                return Err(Error::Forbidden(accounts::RECOVERY_KEY_SIGN_IN.into()));
            }
            RedeemOutcome::SessionGone => {
                let sid = options.session_id.as_deref().unwrap_or_default();
                return Err(self.why_not_renewed(&created.0, &app.id, sid, now).await);
            }
        };
        if let Some(mut event) = printed.take() {
            event.account = Some(account.clone());
            self.audit.print(event);
        }
        let (subject, sid, scope, client_id, session_expires_at, jkt) = s;
        Ok(self.mint(
            Grant {
                subject: &subject,
                app: &app.id,
                session_id: &sid,
                scope: &scope,
                client_id,
                role: None,
                account: Some(account),
                assurance: Some(assurance),
                jkt: jkt.as_deref(),
            },
            app,
            request.expiration,
            now,
            session_expires_at,
            refresh_token,
        ))
    }

    /// Why a renewal found no session to renew: the caller's own session of this
    /// app that has ended says so (`session_revoked`, `session_expired`); a
    /// session id that is unknown, another identity's or another app's is
    /// `403 invalid_session`, which tells nothing about that session.
    async fn why_not_renewed(&self, subject: &str, app: &str, sid: &str, now: UnixTime) -> Error {
        match self.store.session_auth(sid).await {
            Ok(Some(a)) if a.session.subject == subject && a.session.api_key == app => {
                // Ours and of this app, so it has ended (or ended just now).
                a.session.check(now).err().unwrap_or(Error::SessionRevoked)
            }
            Ok(_) => Error::InvalidSession,
            Err(e) => e.into(),
        }
    }

    /// `POST /v1/dev/token`: a development key mints a token for any identity
    /// without a signature (docs/dev-mode.md), on a Hub started with `--dev`.
    /// The session is real (listed, revocable, capped); the token says `acr`
    /// `dev` and `amr` `["dev"]`.
    pub async fn dev_token(
        &self,
        app: &ApiKeyRecord,
        pubkey: &str,
        options: &TokenOptions,
        meta: ClientMeta,
    ) -> Result<IssuedToken, Error> {
        if !app.dev || !self.config.dev {
            return Err(Error::Forbidden(
                "only a development key (keygate keys create --dev) on a Hub started with \
                 --dev may mint tokens without a signature"
                    .into(),
            ));
        }
        if options.session_id.is_some() {
            return Err(Error::bad_request(
                "session_id: a development token always starts a new session",
            ));
        }
        let identity = crate::signin::parse_identity(pubkey)?;
        let subject = identity.to_string();
        self.guard.check_identity(&subject)?;
        let request = validate_options(app, options, &identity)?;
        let now = self.now();
        // No challenge was issued: a fresh nonce id keeps the group commit's shape.
        let nonce = self.entropy.bytes::<16>();
        tracing::info!(key = %app.id, "development token minted without a signature");
        let kind = AuditKind::DevTokenMinted;
        let issued = self
            .open_session(
                app,
                subject,
                options,
                request,
                (nonce, now + 60),
                meta,
                now,
                kind,
            )
            .await?;
        crate::metrics::metrics().dev_signin();
        Ok(issued)
    }
}

pub(super) struct ValidRequest {
    pub(super) offline: bool,
    pub(super) scope: String,
    pub(super) expiration: Option<i64>,
    /// The key the tokens are bound to (DPoP, docs/dpop.md): the signing
    /// identity's own, when the app's policy allows it and the sign-in asked.
    pub(super) jkt: Option<String>,
}

fn validate_options(
    app: &ApiKeyRecord,
    o: &TokenOptions,
    identity: &Identity,
) -> Result<ValidRequest, Error> {
    if let Some(c) = &o.client_id
        && (c.is_empty() || c.len() > MAX_CLIENT_ID_LEN || !c.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(Error::bad_request(
            "client_id must be 1 to 128 visible ASCII characters",
        ));
    }
    let offline = match o.access_type.as_deref() {
        None | Some("online") => false,
        Some("offline") if o.client_id.is_some() => true,
        Some("offline") => {
            return Err(Error::bad_request(
                "access_type offline requires a client_id",
            ));
        }
        Some(_) => return Err(Error::bad_request("access_type must be online or offline")),
    };
    let scope = o.scope.as_deref().unwrap_or("");
    if scope.len() > MAX_SCOPE_LEN {
        return Err(Error::bad_request("scope is too long"));
    }
    let mut granted: Vec<&str> = Vec::new();
    for s in scope.split_whitespace() {
        if !app.scopes.iter().any(|allowed| allowed == s) {
            // Named, never quoted: the value is the caller's (NUL, bidi overrides).
            return Err(Error::InvalidScope);
        }
        if !granted.contains(&s) {
            granted.push(s);
        }
    }
    if o.session_id.is_some() && offline {
        return Err(Error::bad_request(
            "renewing a session keeps its refresh token: do not ask for access_type offline",
        ));
    }
    if let Some(e) = o.expiration
        && e <= 0
    {
        return Err(Error::bad_request(
            "expiration must be a positive number of seconds",
        ));
    }
    let dpop = match app.dpop {
        DpopPolicy::Off => false,
        DpopPolicy::Optional => o.dpop,
        DpopPolicy::Required if o.dpop => true,
        DpopPolicy::Required => return Err(Error::DpopRequired),
    };
    Ok(ValidRequest {
        offline,
        scope: granted.join(" "),
        expiration: o.expiration,
        // A key sign-in binds to the signing identity's own key: its proof was
        // checked where the user's request arrived.
        jkt: dpop.then(|| keygate_core::dpop::identity_jkt(identity)),
    })
}
