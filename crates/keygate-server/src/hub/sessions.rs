//! Sessions: the caller's own view (whoami, list, revoke, logout) and refresh.

use super::{Grant, Hub, IssuedToken, MAX_CLIENT_ID_LEN, SessionView, WhoAmI, accounts};
use crate::error::Error;
use crate::http::Credential;
use crate::session;
use crate::store::{AuditEvent, AuditKind, DpopPolicy, RefreshOutcome, Revoke, SessionRecord};
use crate::time::format_rfc3339;
use crate::token::AccessClaims;
use keygate_core::dpop::{DpopError, Keys};

impl Hub {
    /// Verifies an access token and checks its session live in the store; a
    /// session still waiting for its second factor is `403 mfa_required`.
    pub async fn authenticate_user(
        &self,
        token: impl Into<Credential<'_>>,
    ) -> Result<(AccessClaims, SessionRecord), Error> {
        let (claims, auth) = self.authenticate(token.into(), false).await?;
        Ok((claims, auth.session))
    }

    pub async fn whoami(&self, token: impl Into<Credential<'_>>) -> Result<WhoAmI, Error> {
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
    ///
    /// `cred` carries the request's DPoP proof: a session bound to a key needs
    /// one by that key (the new token stays bound); an unbound session's new token
    /// is bound to the proof's key when one comes, which must be the identity's own
    /// unless `any_key` (an OpenID client's key, docs/dpop.md).
    ///
    /// `scope`, when given, narrows the new access token's scope (RFC 6749 §6):
    /// naming a scope the session was not granted is `invalid_scope`, and spends
    /// nothing. The session and its refresh token keep the scope granted.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_id: &str,
        cred: Credential<'_>,
        any_key: bool,
        scope: Option<&str>,
    ) -> Result<IssuedToken, Error> {
        // `token_refreshed`, with the error's code when refused (a reuse is
        // `refresh_reuse_detected` instead), and what is known of the session.
        let mut event = self.event(AuditKind::TokenRefreshed).from(&cred);
        let result = self
            .refresh_recorded(refresh_token, client_id, cred, any_key, scope, &mut event)
            .await;
        match &result {
            Err(Error::RefreshTokenReused) => {}
            Err(e) => self.record(event.outcome(e.code())),
            Ok(_) => self.record(event),
        }
        result
    }

    /// [`Hub::refresh`], filling in `event`'s app, key, session and account.
    async fn refresh_recorded(
        &self,
        refresh_token: &str,
        client_id: &str,
        cred: Credential<'_>,
        any_key: bool,
        scope: Option<&str>,
        event: &mut crate::store::AuditEvent,
    ) -> Result<IssuedToken, Error> {
        if refresh_token.len() > 128 || client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN
        {
            return Err(Error::InvalidRefreshToken);
        }
        let now = self.now();
        let auth = self
            .refresh_gate(session::hash_secret(refresh_token))
            .await?;
        if let Some(a) = &auth {
            event.app = Some(a.session.api_key.clone());
            event.identity = Some(a.session.subject.clone());
            event.session = Some(a.session.id.clone());
            event.account = a.account.clone();
        }
        let narrowed = match (scope, &auth) {
            (Some(want), Some(a)) => {
                Some(session::narrow_scope(&a.session.scope, want).ok_or(Error::InvalidScope)?)
            }
            _ => None,
        };
        // The app once, before the rotation: its DPoP policy decides, and a
        // refused proof must not spend the refresh token.
        let app = match &auth {
            Some(a) => self.store.api_key(&a.session.api_key).await?,
            None => None,
        };
        let jkt = match &auth {
            Some(a) => self.refresh_binding(&a.session, app.as_ref(), &cred, any_key, now)?,
            None => None,
        };
        let next = session::new_secret_token(&mut self.entropy.rng(), session::REFRESH_PREFIX);
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
            RefreshOutcome::Reused => {
                // The session the spent token belonged to is now revoked.
                let mut event = self
                    .event(AuditKind::RefreshReuseDetected)
                    .outcome(Error::RefreshTokenReused.code())
                    .from(&cred);
                if let Some(a) = &auth {
                    event = event
                        .app(&a.session.api_key)
                        .identity(&a.session.subject)
                        .session(&a.session.id)
                        .account(a.account.as_deref());
                }
                self.record(event);
                return Err(Error::RefreshTokenReused);
            }
            RefreshOutcome::Revoked => return Err(Error::SessionRevoked),
            RefreshOutcome::Expired => return Err(Error::SessionExpired),
        };
        let app = match app.filter(|k| k.id == s.api_key) {
            Some(k) => Some(k),
            None => self.store.api_key(&s.api_key).await?,
        };
        let key = match app {
            Some(k) if k.revoked_at.is_none() => self.usable(k)?,
            _ => return Err(Error::SessionRevoked),
        };
        event.app = Some(s.api_key.clone());
        event.identity = Some(s.subject.clone());
        event.session = Some(s.id.clone());
        Ok(self.mint(
            Grant {
                subject: &s.subject,
                app: &s.api_key,
                session_id: &s.id,
                scope: narrowed.as_deref().unwrap_or(&s.scope),
                client_id: s.client_id.clone(),
                role: None,
                account: auth.as_ref().and_then(|a| a.account.clone()),
                assurance: Some(auth.as_ref().map_or(crate::account::Assurance::Aal1, |a| {
                    accounts::assurance(a, now)
                })),
                jkt: jkt.as_deref(),
            },
            &key,
            None,
            now,
            s.expires_at,
            Some(next),
        ))
    }

    /// The key a refreshed token is bound to (see [`Hub::refresh`]).
    fn refresh_binding(
        &self,
        s: &SessionRecord,
        app: Option<&crate::store::ApiKeyRecord>,
        cred: &Credential<'_>,
        any_key: bool,
        now: crate::time::UnixTime,
    ) -> Result<Option<String>, Error> {
        let refuse = |error| Error::Dpop {
            error,
            at_issue: true,
        };
        if cred.proofs_repeated {
            return Err(refuse(DpopError::Malformed));
        }
        let policy = app.map_or(DpopPolicy::Optional, |a| a.dpop);
        if cred.proof.is_none() || (policy == DpopPolicy::Off && s.jkt.is_none()) {
            return match (&s.jkt, policy) {
                (Some(_), _) => Err(refuse(DpopError::Missing)),
                (None, DpopPolicy::Required) => Err(Error::DpopRequired),
                (None, _) => Ok(None),
            };
        }
        let mut urls = crate::dpop::urls(&self.dpop_origins, cred.path);
        if let Some(app) = app {
            urls.extend(crate::dpop::urls(&app.origins, cred.path));
        }
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let keys = if any_key || s.jkt.is_some() {
            Keys::Any
        } else {
            Keys::Ed25519
        };
        let proof = self
            .dpop
            .check(cred.proof, cred.method, &urls, None, keys, now, true)?;
        let expected = match &s.jkt {
            Some(j) => j.clone(),
            None if any_key => proof.jkt.clone(),
            None => {
                keygate_core::dpop::identity_jkt(&crate::identity::Identity::parse(&s.subject)?)
            }
        };
        if proof.jkt != expected {
            return Err(refuse(DpopError::WrongKey));
        }
        Ok(Some(expected))
    }

    /// The caller's own sessions, newest first, live ones only.
    pub async fn sessions(
        &self,
        token: impl Into<Credential<'_>>,
    ) -> Result<Vec<SessionView>, Error> {
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
    pub async fn revoke_session(
        &self,
        token: impl Into<Credential<'_>>,
        sid: &str,
    ) -> Result<(), Error> {
        let cred = token.into();
        let (claims, session) = self.authenticate_user(cred).await?;
        let which = Revoke::One {
            subject: &claims.sub,
            id: sid,
        };
        match self.store.revoke_sessions(which, self.now()).await? {
            0 => Err(Error::NotFound),
            _ => {
                let event =
                    self.user_event(AuditKind::SessionRevoked, &claims, &session.api_key, &cred);
                self.record(event.session(sid).detail("user"));
                Ok(())
            }
        }
    }

    /// `POST /v1/logout`: `local` ends this session, `others` every other session of
    /// this identity, `global` all of them.
    pub async fn logout(
        &self,
        token: impl Into<Credential<'_>>,
        scope: &str,
    ) -> Result<u64, Error> {
        let cred = token.into();
        let (claims, session) = self.authenticate_user(cred).await?;
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
        let n = self.store.revoke_sessions(which, self.now()).await?;
        let event = self.user_event(AuditKind::Logout, &claims, &session.api_key, &cred);
        self.record(event.session(&claims.sid).detail(scope));
        Ok(n)
    }

    /// An event of the signed-in user of `claims` (identity, account) through
    /// the app `app`, from the caller of `cred` (address, user agent).
    pub(crate) fn user_event(
        &self,
        kind: AuditKind,
        claims: &AccessClaims,
        app: &str,
        cred: &Credential<'_>,
    ) -> AuditEvent {
        self.event(kind)
            .app(app)
            .identity(&claims.sub)
            .account(claims.acct.as_deref())
            .from(cred)
    }
}
