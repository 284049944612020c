//! The Hub: the token authority. This module is the service itself (no HTTP);
//! `routes` puts it on the wire.
//!
//! It owns the nonce key and the signing keys (both created on first start and kept
//! in the store, so tokens stay valid across restarts), authenticates apps by their
//! API-key signatures, issues challenges, and turns a signed challenge into a
//! durable session and an access token.

use std::sync::{Arc, RwLock};

use crate::apikey::{self, ApiKeyError, ApiSecret};
use crate::challenge::{self, Flow, IssuedChallenge, NonceKey};
use crate::error::Error;
use crate::identity::Identity;
use crate::session;
use crate::store::{
    ApiKeyRecord, BrokerGrant, NewSession, RedeemOutcome, Redemption, RefreshOutcome,
    RevocationEvent, Revoke, SessionRecord, SigningKeyRecord, Store,
};
use crate::time::{Clock, UnixTime, format_rfc3339};
use crate::token::{AccessClaims, AccessClaimsRef, Jwks, TokenSigner, TokenVerifier};

pub use keygate_proto::{
    BrokerToken, IssuedToken, RevocationFeed, SessionView, TokenOptions, WhoAmI,
};

mod accounts;
pub mod routes;

pub use accounts::{AccountKeyView, AccountView, Linked, TotpEnrolment};

const NONCE_KEY_NAME: &str = "challenge_nonce_key";
/// Longest client id and scope string accepted in a token request.
const MAX_CLIENT_ID_LEN: usize = 128;
const MAX_SCOPE_LEN: usize = 1024;

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The `iss` of every token: the Hub's public URL.
    pub issuer: String,
    /// Lifetime of a challenge, in seconds.
    pub challenge_ttl: i64,
    pub limits: crate::limits::Limits,
    /// Accept development keys and their tokens (docs/dev-mode.md).
    pub dev: bool,
}

const DEV_KEY_REFUSED: &str =
    "this is a development key: it works only on a Hub started with --dev (docs/dev-mode.md)";

/// What the user's side of a sign-in brings back: identity, challenge, signature.
#[derive(Debug, Clone)]
pub struct SignedChallenge<'a> {
    pub pubkey: &'a str,
    pub challenge: &'a str,
    pub sig: &'a str,
}

/// Where a request came from, recorded on the session when known.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub user_agent: Option<String>,
    pub address: Option<String>,
}

/// Default and longest lifetime of a brokered token id.
pub const BROKER_DEFAULT_TTL: i64 = 300;
pub const BROKER_MAX_TTL: i64 = 3600;

/// The signing keys in use: the current key signs; it and the retired keys whose
/// tokens may still be live are published and verify.
struct KeyRing {
    signer: Arc<TokenSigner>,
    verifier: TokenVerifier,
    jwks: Jwks,
}

pub struct Hub {
    guard: Arc<crate::limits::Guard>,
    /// Live revocations for push subscribers, fed by [`Hub::follow_revocations`].
    revocations: tokio::sync::broadcast::Sender<RevocationEvent>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: HubConfig,
    nonce_key: NonceKey,
    keys: RwLock<Arc<KeyRing>>,
    /// A random secret that requests naming an unknown API key are checked
    /// against (see [`Hub::authenticate_app`]).
    dummy_secret: ApiSecret,
}

impl Hub {
    /// Opens the Hub on `store`, creating the nonce key and the first signing key
    /// on first start.
    pub async fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: HubConfig,
    ) -> Result<Self, Error> {
        let now = clock.now();
        let mut fresh = [0u8; 32];
        rand::fill(&mut fresh);
        let nonce_key = store
            .secret_or_insert(NONCE_KEY_NAME, fresh.to_vec(), now)
            .await?;
        let nonce_key: [u8; 32] = nonce_key.try_into().map_err(|_| Error::Internal)?;
        let mut records = store.signing_keys().await?;
        if records.is_empty() {
            let record = new_signing_key(now);
            store.insert_signing_key(record.clone()).await?;
            records.push(record);
        }
        let retention = retention(store.as_ref(), &records).await?;
        let ring = KeyRing::new(&records, &config.issuer, now, retention).ok_or(Error::Internal)?;
        Ok(Hub {
            guard: crate::limits::Guard::new(config.limits.clone()),
            revocations: tokio::sync::broadcast::channel(1024).0,
            store,
            clock,
            config,
            nonce_key: NonceKey::from_bytes(nonce_key),
            keys: RwLock::new(Arc::new(ring)),
            dummy_secret: {
                let mut d = [0u8; 32];
                rand::fill(&mut d);
                ApiSecret::from_bytes(d)
            },
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The abuse limits this Hub (and a Provider in the same process) enforce.
    pub fn guard(&self) -> &Arc<crate::limits::Guard> {
        &self.guard
    }

    fn ring(&self) -> Arc<KeyRing> {
        // A poisoned lock only means a panic elsewhere; the ring itself is immutable.
        match self.keys.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn jwks(&self) -> Jwks {
        self.ring().jwks.clone()
    }

    /// The key id new tokens are signed with.
    pub fn signing_kid(&self) -> String {
        self.ring().signer.kid().to_owned()
    }

    /// Re-reads the signing keys from the store: picks up a rotation made by the
    /// CLI or another node, and stops publishing retired keys whose tokens have
    /// all expired. Returns whether the published set or the signer changed.
    pub async fn reload_signing_keys(&self) -> Result<bool, Error> {
        let records = self.store.signing_keys().await?;
        let retention = retention(self.store.as_ref(), &records).await?;
        let now = self.now();
        let current = self.ring();
        let published = published(&records, now, retention);
        let unchanged = published.len() == current.jwks.keys.len()
            && published
                .iter()
                .zip(&current.jwks.keys)
                .all(|(r, k)| r.kid == k.kid)
            && current_key(&records).is_some_and(|r| r.kid == current.signer.kid());
        if unchanged {
            return Ok(false);
        }
        let ring =
            KeyRing::new(&records, &self.config.issuer, now, retention).ok_or(Error::Internal)?;
        tracing::info!(kid = %ring.signer.kid(), published = ring.jwks.keys.len(), "signing keys reloaded");
        match self.keys.write() {
            Ok(mut g) => *g = Arc::new(ring),
            Err(p) => *p.into_inner() = Arc::new(ring),
        }
        Ok(true)
    }

    /// Reloads the signing keys every `every`, so that every node follows a
    /// rotation without a restart.
    pub async fn follow_signing_keys(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.reload_signing_keys().await {
                tracing::warn!(error = %e, "signing key reload failed");
            }
        }
    }

    /// Checks an app's API-key signature headers; every failure is the same 401.
    pub async fn authenticate_app(
        &self,
        key_id: Option<&str>,
        msg: Option<&str>,
        sig: Option<&str>,
    ) -> Result<ApiKeyRecord, Error> {
        let (Some(key_id), Some(msg), Some(sig)) = (key_id, msg, sig) else {
            return Err(ApiKeyError.into());
        };
        if !apikey::valid_key_id(key_id) {
            return Err(ApiKeyError.into());
        }
        // The same work whether the key exists or not: one lookup (whose store
        // unseals a dummy secret when it finds none) and one MAC, here against a
        // dummy secret, so that timing does not tell known key ids from unknown.
        let found = self.store.api_key(key_id).await?;
        apikey::work::note(apikey::work::Step::Lookup);
        let live = found.filter(|k| k.revoked_at.is_none());
        let secret = live.as_ref().map_or(&self.dummy_secret, |k| &k.secret);
        let checked = secret.verify(msg, sig, self.now());
        match (live, checked) {
            (Some(key), Ok(())) => self.usable(key),
            _ => Err(ApiKeyError.into()),
        }
    }

    /// Refuses a development key unless this Hub runs with `--dev`; only after
    /// the key has been authenticated, so no one else learns that it is one.
    fn usable(&self, key: ApiKeyRecord) -> Result<ApiKeyRecord, Error> {
        if key.dev && !self.config.dev {
            return Err(Error::Forbidden(DEV_KEY_REFUSED.into()));
        }
        Ok(key)
    }

    /// Whether this Hub accepts development keys and tokens (`--dev`).
    pub fn dev_mode(&self) -> bool {
        self.config.dev
    }

    /// A key that exists and is not revoked.
    pub async fn live_api_key(&self, key_id: &str) -> Result<ApiKeyRecord, Error> {
        match self.store.api_key(key_id).await? {
            Some(k) if k.revoked_at.is_none() => Ok(k),
            _ => Err(ApiKeyError.into()),
        }
    }

    /// Checks that `secret` is the secret of the live key `key_id` (for a Provider
    /// configured from `.env` in the same process).
    pub async fn api_key_with_secret(
        &self,
        key_id: &str,
        secret: &ApiSecret,
    ) -> Result<ApiKeyRecord, Error> {
        let key = self.live_api_key(key_id).await?;
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            &key.secret.as_bytes()[..],
            &secret.as_bytes()[..],
        )) {
            self.usable(key)
        } else {
            Err(ApiKeyError.into())
        }
    }

    /// Issues a challenge for `pubkey` on behalf of `app`, to be redeemed on
    /// `flow` only. The audience defaults to the app's key id (a backend-only app).
    pub fn challenge(
        &self,
        app: &ApiKeyRecord,
        flow: Flow,
        pubkey: &str,
        audience: Option<&str>,
    ) -> Result<IssuedChallenge, Error> {
        self.challenge_for(app, flow, &Identity::parse(pubkey)?, audience)
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
        self.guard.check_identity(&identity.to_string())?;
        if audience.is_some_and(|a| !app.may_use_audience(a)) {
            return Err(Error::ForbiddenAudience);
        }
        let mut random = [0u8; 16];
        rand::fill(&mut random);
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
        let identity = Identity::parse(signed.pubkey)?;
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
        let subject = identity.to_string();
        self.guard.check_identity(&subject)?;
        let request = validate_options(app, options)?;
        let now = self.now();
        let verified = challenge::verify(
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
        })?;
        let nonce = (verified.nonce_id, verified.expires_at);
        self.open_session(app, subject, options, request, nonce, meta, now)
            .await
    }

    /// The rest of a sign-in once the identity is proven (by its signature over a
    /// challenge, or by a development key): spends `nonce` (id, expiry), records
    /// the session durably, and only then mints the token.
    #[allow(clippy::too_many_arguments)]
    async fn open_session(
        &self,
        app: &ApiKeyRecord,
        subject: String,
        options: &TokenOptions,
        request: ValidRequest,
        nonce: ([u8; 16], UnixTime),
        meta: ClientMeta,
        now: UnixTime,
    ) -> Result<IssuedToken, Error> {
        let (account, mfa_required) = self.sign_in_account(&subject, &app.id).await?;
        let (session_id, refresh_token) = {
            let mut rng = rand::rng();
            let sid = session::session_id(now, &mut rng);
            (
                sid,
                request
                    .offline
                    .then(|| session::new_secret_token(&mut rng, session::REFRESH_PREFIX)),
            )
        };
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
        };
        // Only what the token needs is kept back, not a copy of the whole redemption.
        let created = (
            redemption.session.subject.clone(),
            session_id,
            redemption.session.scope.clone(),
            redemption.session.client_id.clone(),
            redemption.session.expires_at,
        );
        let mut assurance = if mfa_required {
            crate::account::Assurance::Pending
        } else {
            crate::account::Assurance::Aal1
        };
        let s = match self.store.redeem(redemption).await? {
            RedeemOutcome::Created => {
                self.cap_sessions(app, &created.0, now).await;
                created
            }
            RedeemOutcome::Renewed(s) => {
                let s = *s;
                if let Some(auth) = self.store.session_auth(&s.id).await? {
                    assurance = accounts::assurance(&auth, now);
                }
                (s.subject, s.id, s.scope, s.client_id, s.expires_at)
            }
            RedeemOutcome::ChallengeUsed => return Err(Error::ChallengeUsed),
            RedeemOutcome::ApiKeyRevoked => return Err(ApiKeyError.into()),
            RedeemOutcome::SessionGone => {
                let sid = options.session_id.as_deref().unwrap_or_default();
                return Err(self.why_not_renewed(&created.0, &app.id, sid, now).await);
            }
        };
        let (subject, sid, scope, client_id, session_expires_at) = s;
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

    /// Ends the oldest live sessions of `subject` with `app` beyond the key's
    /// `max_sessions` (each gets a revocation-feed entry). The new session is
    /// already committed: a failure here is logged, and the next sign-in tries
    /// again.
    async fn cap_sessions(&self, app: &ApiKeyRecord, subject: &str, now: UnixTime) {
        let keep = app.max_sessions.max(1);
        let result = async {
            if self.store.live_session_count(subject, &app.id, now).await? <= u64::from(keep) {
                return Ok(0);
            }
            let which = Revoke::Beyond {
                subject,
                api_key: &app.id,
                keep,
            };
            self.store.revoke_sessions(which, now).await
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(key = %app.id, ended = n, "session cap: oldest sessions ended")
            }
            Err(e) => tracing::warn!(error = %e, "session cap not applied"),
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
        let identity = Identity::parse(pubkey)?;
        let subject = identity.to_string();
        self.guard.check_identity(&subject)?;
        let request = validate_options(app, options)?;
        let now = self.now();
        // No challenge was issued: a fresh nonce id keeps the group commit's shape.
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        tracing::info!(key = %app.id, "development token minted without a signature");
        self.open_session(app, subject, options, request, (nonce, now + 60), meta, now)
            .await
    }

    fn mint(
        &self,
        grant: Grant<'_>,
        key: &ApiKeyRecord,
        expiration: Option<i64>,
        now: UnixTime,
        session_expires_at: UnixTime,
        refresh_token: Option<String>,
    ) -> IssuedToken {
        let policy = &key.policy;
        // Every token a development key's app gets says so, whatever the way in.
        let grant = if key.dev {
            Grant {
                assurance: Some(crate::account::Assurance::Dev),
                ..grant
            }
        } else {
            grant
        };
        let mut exp = policy.access_expiry(expiration, now, session_expires_at);
        // A step-up's token ends with the step-up: after it, the session's tokens
        // say aal1 again.
        if let Some(crate::account::Assurance::Aal2 { until, .. }) = grant.assurance {
            exp = exp.min(until);
        }
        let amr = grant.assurance.map(|a| a.amr());
        let jti = session::random_id(&mut rand::rng());
        let claims = AccessClaimsRef {
            iss: &self.config.issuer,
            sub: grant.subject,
            aud: grant.app,
            iat: now,
            nbf: now,
            exp,
            jti: &jti,
            sid: grant.session_id,
            scope: grant.scope,
            // RFC 9068 §2.2: always present; the app's key id when the sign-in
            // named no client.
            client_id: Some(grant.client_id.as_deref().unwrap_or(grant.app)),
            role: grant.role.as_deref(),
            acct: grant.account.as_deref(),
            acr: grant.assurance.map(|a| a.acr()),
            amr: amr.as_deref(),
        };
        let pending = grant.assurance == Some(crate::account::Assurance::Pending);
        IssuedToken {
            token: if pending {
                self.ring().signer.mint_pending(&claims)
            } else {
                self.ring().signer.mint(&claims)
            },
            mfa_required: pending,
            token_type: "Bearer".into(),
            expires_at: format_rfc3339(exp),
            expires_in: exp - now,
            session_id: grant.session_id.to_owned(),
            refresh_token,
        }
    }

    /// Verifies an access token and checks its session live in the store; a
    /// session still waiting for its second factor is `403 mfa_required`.
    pub async fn authenticate_user(
        &self,
        token: Option<&str>,
    ) -> Result<(AccessClaims, SessionRecord), Error> {
        let (claims, auth) = self.authenticate(token, false).await?;
        Ok((claims, auth.session))
    }

    pub async fn whoami(&self, token: Option<&str>) -> Result<WhoAmI, Error> {
        let (c, _) = self.authenticate_user(token).await?;
        Ok(WhoAmI {
            identity: c.sub,
            session_id: c.sid,
            aud: c.aud,
            scope: c.scope,
            client_id: c.client_id,
            expires_at: format_rfc3339(c.exp),
        })
    }

    /// Rotates a refresh token: a new access token and a new refresh token.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_id: &str,
    ) -> Result<IssuedToken, Error> {
        if refresh_token.len() > 128 || client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN
        {
            return Err(Error::InvalidRefreshToken);
        }
        let now = self.now();
        let auth = self
            .refresh_gate(session::hash_secret(refresh_token))
            .await?;
        let next = session::new_secret_token(&mut rand::rng(), session::REFRESH_PREFIX);
        let outcome = self
            .store
            .rotate_refresh_token(
                session::hash_secret(refresh_token),
                client_id,
                session::hash_secret(&next),
                now,
            )
            .await?;
        let s = match outcome {
            RefreshOutcome::Rotated(s) => s,
            RefreshOutcome::Invalid => return Err(Error::InvalidRefreshToken),
            RefreshOutcome::Reused => return Err(Error::RefreshTokenReused),
            RefreshOutcome::Revoked => return Err(Error::SessionRevoked),
            RefreshOutcome::Expired => return Err(Error::SessionExpired),
        };
        let key = match self.store.api_key(&s.api_key).await? {
            Some(k) if k.revoked_at.is_none() => self.usable(k)?,
            _ => return Err(Error::SessionRevoked),
        };
        Ok(self.mint(
            Grant {
                subject: &s.subject,
                app: &s.api_key,
                session_id: &s.id,
                scope: &s.scope,
                client_id: s.client_id.clone(),
                role: None,
                account: auth.as_ref().and_then(|a| a.account.clone()),
                assurance: Some(auth.as_ref().map_or(crate::account::Assurance::Aal1, |a| {
                    accounts::assurance(a, now)
                })),
            },
            &key,
            None,
            now,
            s.expires_at,
            Some(next),
        ))
    }

    /// The caller's own sessions, newest first, live ones only.
    pub async fn sessions(&self, token: Option<&str>) -> Result<Vec<SessionView>, Error> {
        let (claims, _) = self.authenticate_user(token).await?;
        let now = self.now();
        let rows = self.store.sessions_of(&claims.sub).await?;
        Ok(rows
            .into_iter()
            .filter(|s| s.check(now).is_ok())
            .map(|s| SessionView {
                current: s.id == claims.sid,
                session_id: s.id,
                identity: s.subject,
                app: s.api_key,
                client_id: s.client_id,
                scope: s.scope,
                created_at: format_rfc3339(s.created_at),
                last_used_at: format_rfc3339(s.last_used_at),
                expires_at: format_rfc3339(s.expires_at),
                user_agent: s.user_agent,
                address: s.address,
            })
            .collect())
    }

    /// Revokes one of the caller's own sessions.
    pub async fn revoke_session(&self, token: Option<&str>, sid: &str) -> Result<(), Error> {
        let (claims, _) = self.authenticate_user(token).await?;
        let which = Revoke::One {
            subject: &claims.sub,
            id: sid,
        };
        match self.store.revoke_sessions(which, self.now()).await? {
            0 => Err(Error::NotFound),
            _ => Ok(()),
        }
    }

    /// `POST /v1/logout`: `local` ends this session, `others` every other session of
    /// this identity, `global` all of them.
    pub async fn logout(&self, token: Option<&str>, scope: &str) -> Result<u64, Error> {
        let (claims, _) = self.authenticate_user(token).await?;
        let which = match scope {
            "local" => Revoke::One {
                subject: &claims.sub,
                id: &claims.sid,
            },
            "others" => Revoke::AllOfExcept {
                subject: &claims.sub,
                keep: &claims.sid,
            },
            "global" => Revoke::AllOf {
                subject: &claims.sub,
            },
            _ => return Err(Error::bad_request("scope must be local, others or global")),
        };
        Ok(self.store.revoke_sessions(which, self.now()).await?)
    }

    /// RFC 7662 introspection for the app `caller`, answered from live state: a
    /// revoked session is inactive at once. A token issued to another app is
    /// inactive too, unless `caller` may introspect any app's tokens
    /// (docs/tenancy.md). Store failures are errors, never "inactive".
    pub async fn introspect(
        &self,
        caller: &ApiKeyRecord,
        token: &str,
    ) -> Result<serde_json::Value, Error> {
        match self.authenticate_user(Some(token)).await {
            Ok((c, _)) if c.aud != caller.id && !caller.introspect_any => {
                Ok(serde_json::json!({ "active": false }))
            }
            Ok((c, _)) => {
                if c.aud != caller.id {
                    tracing::info!(key = %caller.id, aud = %c.aud, "introspection of another app's token (introspect_any)");
                }
                let mut v = serde_json::to_value(&c).map_err(|_| Error::Internal)?;
                v["active"] = true.into();
                v["token_type"] = "access_token".into();
                Ok(v)
            }
            Err(e @ (Error::Unavailable | Error::Internal)) => Err(e),
            Err(_) => Ok(serde_json::json!({ "active": false })),
        }
    }

    /// The revocation feed after `since`: events and the cursor to ask from next.
    pub async fn revocation_feed(&self, since: i64) -> Result<RevocationFeed, Error> {
        let revocations = self.store.revocations_since(since.max(0), 1000).await?;
        let cursor = revocations.last().map_or(since.max(0), |r| r.seq);
        Ok(RevocationFeed {
            revocations,
            cursor,
        })
    }

    /// Subscribes to revocations as they happen (any node, any process writing the
    /// store), for the push feed.
    pub fn subscribe_revocations(&self) -> tokio::sync::broadcast::Receiver<RevocationEvent> {
        self.revocations.subscribe()
    }

    /// Polls the store's revocation feed and broadcasts new entries, so push
    /// subscribers learn of a revocation made anywhere within about `every`.
    pub async fn follow_revocations(self: Arc<Self>, every: std::time::Duration) {
        let mut cursor = loop {
            match self.store.revocation_cursor().await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(every).await,
            }
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.store.revocations_since(cursor, 1000).await {
                Ok(events) => {
                    for e in events {
                        cursor = e.seq;
                        let _ = self.revocations.send(e);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "revocation feed poll failed"),
            }
        }
    }

    /// `POST /v1/broker/tokens`: a one-time token id the app hands to its user.
    pub async fn create_broker_token(
        &self,
        app: &ApiKeyRecord,
        endpoint_id: &str,
        role: &str,
        ttl: Option<i64>,
    ) -> Result<BrokerToken, Error> {
        if !app.can_broker {
            return Err(Error::Forbidden(
                "this API key may not broker tokens".into(),
            ));
        }
        if endpoint_id.is_empty()
            || endpoint_id.len() > 128
            || !endpoint_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::bad_request(
                "endpoint_id must be 1 to 128 visible ASCII characters",
            ));
        }
        if role.is_empty()
            || role.len() > 64
            || !role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(Error::bad_request("role must be 1 to 64 of [A-Za-z0-9_.-]"));
        }
        let ttl = ttl.unwrap_or(BROKER_DEFAULT_TTL);
        if !(1..=BROKER_MAX_TTL).contains(&ttl) {
            return Err(Error::bad_request("ttl must be between 1 and 3600 seconds"));
        }
        let token_id = session::new_secret_token(&mut rand::rng(), session::BROKER_PREFIX);
        let expires_at = self.now() + ttl;
        self.store
            .insert_broker_token(BrokerGrant {
                hash: session::hash_secret(&token_id),
                api_key: app.id.clone(),
                endpoint_id: endpoint_id.to_owned(),
                role: role.to_owned(),
                expires_at,
            })
            .await?;
        Ok(BrokerToken {
            token_id,
            expires_at: format_rfc3339(expires_at),
        })
    }

    /// `POST /v1/session-tokens`: exchanges a brokered token id, once, for an access
    /// token whose subject is `<key id>:<endpoint id>`.
    pub async fn exchange_broker_token(
        &self,
        token_id: &str,
        meta: ClientMeta,
    ) -> Result<IssuedToken, Error> {
        if !token_id.starts_with(session::BROKER_PREFIX) || token_id.len() > 128 {
            return Err(Error::InvalidGrant);
        }
        let now = self.now();
        let draft = NewSession {
            id: session::random_id(&mut rand::rng()),
            subject: String::new(),
            api_key: String::new(),
            client_id: None,
            scope: String::new(),
            created_at: now,
            expires_at: now,
            idle_timeout: 0,
            user_agent: meta.user_agent.map(|s| truncate(s, 256)),
            address: meta.address,
        };
        let (s, role) = self
            .store
            .exchange_broker_token(session::hash_secret(token_id), draft, now)
            .await?
            .ok_or(Error::InvalidGrant)?;
        let key = self
            .live_api_key(&s.api_key)
            .await
            .map_err(|_| Error::InvalidGrant)?;
        let key = self.usable(key)?;
        Ok(self.mint(
            Grant {
                subject: &s.subject,
                app: &s.api_key,
                session_id: &s.id,
                scope: &s.scope,
                client_id: None,
                role: Some(role),
                account: None,
                assurance: None,
            },
            &key,
            None,
            now,
            s.expires_at,
            None,
        ))
    }
}

/// What an in-process [`crate::client::OfflineVerifier`] needs of the Hub.
impl crate::client::TokenAuthority for Hub {
    fn issuer(&self) -> &str {
        Hub::issuer(self)
    }

    fn jwks(&self) -> Jwks {
        Hub::jwks(self)
    }

    fn subscribe_revocations(&self) -> tokio::sync::broadcast::Receiver<RevocationEvent> {
        Hub::subscribe_revocations(self)
    }

    fn revocation_feed(
        &self,
        since: i64,
    ) -> futures_util::future::BoxFuture<'_, Result<RevocationFeed, Error>> {
        Box::pin(Hub::revocation_feed(self, since))
    }
}

/// A fresh Ed25519 signing key, created at `now`.
pub fn new_signing_key(now: UnixTime) -> SigningKeyRecord {
    let sk = ed25519_dalek::SigningKey::generate(&mut rand::rng());
    SigningKeyRecord {
        kid: TokenSigner::new(sk.clone()).kid().to_owned(),
        secret: sk.to_bytes(),
        created_at: now,
        retired_at: None,
    }
}

/// `keygate keys rotate-signing`: adds a new current signing key and retires the
/// old one. Running nodes pick it up within a second ([`Hub::follow_signing_keys`]);
/// the retired key stays published while tokens it signed may be live, unless
/// `drop_old` (a leaked key): then it leaves every JWKS at the next reload and its
/// tokens stop verifying. Returns the new key id and the retired ones.
pub async fn rotate_signing_key(
    store: &dyn Store,
    now: UnixTime,
    drop_old: bool,
) -> Result<(String, Vec<String>), Error> {
    let record = new_signing_key(now);
    let kid = record.kid.clone();
    // Retired at the epoch: long past any token lifetime, so never published.
    let retired_at = if drop_old { 0 } else { now };
    let retired = store.rotate_signing_key(record, retired_at).await?;
    Ok((kid, retired))
}

/// The key that signs: the newest one not retired.
fn current_key(records: &[SigningKeyRecord]) -> Option<&SigningKeyRecord> {
    records
        .iter()
        .filter(|r| r.retired_at.is_none())
        .max_by_key(|r| r.created_at)
}

/// The keys to publish at `now`: every key not retired, and every retired key
/// whose last tokens may still be live (retired less than `retention` ago).
fn published(
    records: &[SigningKeyRecord],
    now: UnixTime,
    retention: i64,
) -> Vec<&SigningKeyRecord> {
    records
        .iter()
        .filter(|r| r.retired_at.is_none_or(|t| now < t + retention))
        .collect()
}

/// How long a retired key stays published: the longest access-token lifetime any
/// app may get, plus the leeway verifiers allow (which also covers nodes that
/// sign with the old key for a moment before they reload).
async fn retention(store: &dyn Store, records: &[SigningKeyRecord]) -> Result<i64, Error> {
    if records.iter().all(|r| r.retired_at.is_none()) {
        return Ok(0);
    }
    let longest = store
        .longest_access_ttl()
        .await?
        .unwrap_or(crate::session::DEFAULT_ACCESS_TTL);
    Ok(longest + crate::token::MAX_LEEWAY)
}

impl KeyRing {
    fn new(
        records: &[SigningKeyRecord],
        issuer: &str,
        now: UnixTime,
        retention: i64,
    ) -> Option<Self> {
        let current = current_key(records)?.kid.clone();
        let signers: Vec<TokenSigner> = published(records, now, retention)
            .into_iter()
            .map(|r| TokenSigner::new(ed25519_dalek::SigningKey::from_bytes(&r.secret)))
            .collect();
        let jwks = Jwks {
            keys: signers.iter().map(|s| s.jwk().clone()).collect(),
        };
        // The Hub is the issuer: its tokens end at `exp`, without the leeway
        // offline verifiers allow.
        let verifier = TokenVerifier::new(&jwks, issuer).at_issuer();
        let signer = signers.into_iter().find(|s| s.kid() == current)?;
        Some(KeyRing {
            signer: Arc::new(signer),
            verifier,
            jwks,
        })
    }
}

/// Who and what a token is for.
struct Grant<'a> {
    subject: &'a str,
    app: &'a str,
    session_id: &'a str,
    scope: &'a str,
    client_id: Option<String>,
    role: Option<String>,
    /// The key's account (none for brokered tokens).
    account: Option<String>,
    /// What the token asserts (`acr`, `amr`); none for brokered tokens.
    assurance: Option<crate::account::Assurance>,
}

struct ValidRequest {
    offline: bool,
    scope: String,
    expiration: Option<i64>,
}

fn validate_options(app: &ApiKeyRecord, o: &TokenOptions) -> Result<ValidRequest, Error> {
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
    Ok(ValidRequest {
        offline,
        scope: granted.join(" "),
        expiration: o.expiration,
    })
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::work::{self, Step};
    use crate::time::ManualClock;

    const NOW: UnixTime = 1_795_430_809;

    async fn hub(dir: &std::path::Path) -> Hub {
        let store =
            crate::store::sqlite::SqliteStore::open(&dir.join("t.db").display().to_string())
                .await
                .unwrap();
        let config = HubConfig {
            issuer: "http://127.0.0.1:1".into(),
            challenge_ttl: 60,
            limits: Default::default(),
            dev: false,
        };
        Hub::open(Arc::new(store), Arc::new(ManualClock::new(NOW)), config)
            .await
            .unwrap()
    }

    /// Timing must not tell a known API key id from an unknown one: both paths do
    /// the same steps (a lookup that unseals a secret, found or dummy, and one
    /// MAC), counted through the `apikey::work` seam rather than timed.
    #[tokio::test]
    async fn known_and_unknown_key_ids_cost_the_same_work() {
        let dir = tempfile::tempdir().unwrap();
        let hub = hub(dir.path()).await;
        let mut ids = Vec::new();
        for revoked_at in [None, Some(NOW - 5)] {
            let key = apikey::generate(&mut rand::rng());
            hub.store()
                .insert_api_key(ApiKeyRecord {
                    revoked_at,
                    ..ApiKeyRecord::new(key.id.clone(), "app".into(), key.secret.clone(), NOW - 10)
                })
                .await
                .unwrap();
            ids.push((key.id, key.secret));
        }
        let (live, revoked) = (ids[0].0.clone(), ids[1].0.clone());
        let unknown = apikey::generate(&mut rand::rng()).id;
        // A well-formed signature by a secret that is not the key's.
        let stranger = apikey::generate(&mut rand::rng()).secret;
        let (msg, sig) = stranger.sign(NOW + 60);
        work::take();
        let mut traces = Vec::new();
        for id in [&live, &unknown, &revoked] {
            let got = hub.authenticate_app(Some(id), Some(&msg), Some(&sig)).await;
            assert_eq!(got.unwrap_err(), Error::from(ApiKeyError));
            traces.push(work::take());
        }
        assert_eq!(traces[0], [Step::Unseal, Step::Lookup, Step::Mac]);
        assert_eq!(traces[1], traces[0], "unknown key id");
        assert_eq!(traces[2], traces[0], "revoked key id");
        // And a malformed signature is refused alike by all three, before the MAC.
        for id in [&live, &unknown] {
            let got = hub
                .authenticate_app(Some(id), Some(&msg), Some("xyz"))
                .await;
            assert!(got.is_err());
            assert_eq!(work::take(), [Step::Unseal, Step::Lookup]);
        }
        // The right secret still gets in, with the same steps.
        let (msg, sig) = ids[0].1.sign(NOW + 60);
        work::take(); // signing is a MAC too
        let got = hub
            .authenticate_app(Some(&live), Some(&msg), Some(&sig))
            .await;
        assert_eq!(got.unwrap().id, live);
        assert_eq!(work::take(), [Step::Unseal, Step::Lookup, Step::Mac]);
    }
}
