//! The authorization-code flow's browser side (OIDC Core §3.1.2): the request is
//! checked and sealed, the sign-in page signs a challenge with the user's key,
//! consent is asked or remembered, and the code goes back to the client.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{
    AuthRequest, AuthorizeError, CodeGrant, Finish, MAX_PARAM, has_scope, sha256, single,
    with_query,
};
use crate::challenge::{self, Flow};
use crate::error::Error;
use crate::http::Credential;
use crate::hub::signin::ValidRequest;
use crate::hub::{ClientMeta, Hub, SignedChallenge, TokenOptions};
use crate::store::{ApiKeyRecord, CodeRecord, OAuthClientRecord, Revoke};
use keygate_core::oauth;

/// How long an authorization request may take from the RP's redirect to the
/// code (the sign-in page, MFA, consent).
const REQUEST_TTL: i64 = 600;
/// Lifetime of an authorization code (RFC 6749 §4.1.2 recommends ≤ 10 min).
const CODE_TTL: i64 = 60;

impl Hub {
    /// Checks an authorization request (query or form parameters).
    pub async fn authorize(
        &self,
        params: &[(String, String)],
    ) -> Result<AuthRequest, AuthorizeError> {
        use AuthorizeError::Page;
        let client_id = single(params, "client_id")
            .map_err(|_| Page("client_id is repeated"))?
            .ok_or(Page("client_id is missing"))?;
        let client = self
            .live_client(client_id)
            .await
            .map_err(|_| Page("the service is unavailable; try again"))?
            .ok_or(Page("unknown client"))?;
        let redirect_uri = single(params, "redirect_uri")
            .map_err(|_| Page("redirect_uri is repeated"))?
            .ok_or(Page("redirect_uri is missing"))?;
        // Compared exactly, as registered: no normalisation at all.
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
            return Err(Page("redirect_uri is not registered for this client"));
        }
        // From here on the client hears of errors at its redirect URI.
        let raw_state = single(params, "state").ok().flatten();
        let state = raw_state.filter(|s| s.len() <= MAX_PARAM);
        let fail = |error: &str, description: &str| {
            let mut p = vec![("error", error), ("error_description", description)];
            if let Some(s) = state {
                p.push(("state", s));
            }
            let iss = self.config.issuer.as_str();
            p.push(("iss", iss));
            AuthorizeError::Redirect(with_query(redirect_uri, &p))
        };
        let get = |name: &str| {
            single(params, name).map_err(|_| fail("invalid_request", "a parameter is repeated"))
        };
        if raw_state.is_some() && state.is_none() {
            return Err(fail("invalid_request", "state is too long"));
        }
        // A repeated state is echoed as neither of its values.
        get("state")?;
        if get("request")?.is_some() {
            return Err(fail(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if get("request_uri")?.is_some() {
            return Err(fail(
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        if get("registration")?.is_some() {
            return Err(fail(
                "registration_not_supported",
                "the registration parameter is not supported",
            ));
        }
        match get("response_type")? {
            Some("code") => {}
            None => return Err(fail("invalid_request", "response_type is missing")),
            Some(_) => {
                return Err(fail(
                    "unsupported_response_type",
                    "only response_type code is supported",
                ));
            }
        }
        if let Some(m) = get("response_mode")?
            && m != "query"
        {
            return Err(fail(
                "invalid_request",
                "only response_mode query is supported",
            ));
        }
        let scope = get("scope")?.unwrap_or("");
        let mut granted: Vec<&str> = Vec::new();
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            let allowed = s == "openid" || client.scopes.iter().any(|c| c == s);
            if !allowed {
                return Err(fail(
                    "invalid_scope",
                    "scope: this client may not ask for one of the requested scopes",
                ));
            }
            if !granted.contains(&s) {
                granted.push(s);
            }
        }
        if !granted.contains(&"openid") {
            return Err(fail("invalid_scope", "scope must include openid"));
        }
        let challenge = get("code_challenge")?;
        let method = get("code_challenge_method")?;
        let code_challenge = match (challenge, method) {
            (Some(c), Some("S256")) if oauth::valid_challenge(c) => c,
            (Some(_), Some("S256")) => {
                return Err(fail("invalid_request", "code_challenge is malformed"));
            }
            (None, _) => {
                return Err(fail(
                    "invalid_request",
                    "code_challenge is required (PKCE, S256)",
                ));
            }
            (Some(_), _) => {
                return Err(fail(
                    "invalid_request",
                    "code_challenge_method must be S256",
                ));
            }
        };
        let prompt: Vec<&str> = get("prompt")?
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        if prompt
            .iter()
            .any(|p| !["none", "login", "consent", "select_account"].contains(p))
        {
            return Err(fail("invalid_request", "prompt has an unknown value"));
        }
        let prompt_none = prompt.contains(&"none");
        if prompt_none && prompt.len() > 1 {
            return Err(fail("invalid_request", "prompt none cannot be combined"));
        }
        if let Some(m) = get("max_age")?
            && m.parse::<u32>().is_err()
        {
            return Err(fail(
                "invalid_request",
                "max_age must be a number of seconds",
            ));
        }
        let nonce = get("nonce")?;
        let login_hint = get("login_hint")?;
        if nonce.is_some_and(|n| n.len() > MAX_PARAM)
            || login_hint.is_some_and(|n| n.len() > MAX_PARAM)
        {
            return Err(fail("invalid_request", "nonce or login_hint is too long"));
        }
        // A thumbprint is 43 base64url characters (SHA-256).
        let dpop_jkt = get("dpop_jkt")?;
        if dpop_jkt.is_some_and(|j| {
            j.len() != 43
                || !j
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return Err(fail(
                "invalid_request",
                "dpop_jkt must be a JWK SHA-256 thumbprint",
            ));
        }
        Ok(AuthRequest {
            client_id: client.id,
            redirect_uri: redirect_uri.to_owned(),
            scope: granted.join(" "),
            state: state.map(str::to_owned),
            nonce: nonce.map(str::to_owned),
            code_challenge: code_challenge.to_owned(),
            prompt_none,
            prompt_consent: prompt.contains(&"consent"),
            login_hint: login_hint.map(str::to_owned),
            dpop_jkt: dpop_jkt.map(str::to_owned),
            exp: self.now() + REQUEST_TTL,
        })
    }

    /// The request sealed for the page: `base64url(json).base64url(mac)`.
    pub async fn seal_request(&self, r: &AuthRequest) -> Result<String, Error> {
        let key = self.oidc().await?.request_key;
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(r).map_err(|_| Error::Internal)?);
        let mac = request_mac(&key, &body);
        Ok(format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac)))
    }

    async fn open_request(&self, sealed: &str) -> Result<AuthRequest, Error> {
        let bad =
            || Error::bad_request("request: this sign-in has expired; start again from the app");
        let key = self.oidc().await?.request_key;
        let (body, mac) = sealed.split_once('.').ok_or_else(bad)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| bad())?;
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(|_| Error::Internal)?;
        m.update(body.as_bytes());
        m.verify_slice(&mac).map_err(|_| bad())?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let r: AuthRequest = serde_json::from_slice(&json).map_err(|_| bad())?;
        if r.exp <= self.now() {
            return Err(bad());
        }
        Ok(r)
    }

    fn redirect_error(&self, r: &AuthRequest, error: &str, description: &str) -> String {
        let mut p = vec![("error", error), ("error_description", description)];
        if let Some(s) = &r.state {
            p.push(("state", s));
        }
        p.push(("iss", &self.config.issuer));
        with_query(&r.redirect_uri, &p)
    }

    async fn request_context(
        &self,
        sealed: &str,
    ) -> Result<(AuthRequest, OAuthClientRecord, ApiKeyRecord), Error> {
        let r = self.open_request(sealed).await?;
        let client = self
            .live_client(&r.client_id)
            .await?
            .ok_or_else(|| Error::bad_request("client: this client has been revoked"))?;
        let app = self
            .client_app(&client)
            .await
            .map_err(|_| Error::Forbidden("this client's app is revoked".into()))?;
        Ok((r, client, app))
    }

    /// The sign-in page asks for a challenge for the key in the browser.
    pub async fn oidc_challenge(&self, sealed: &str, pubkey: &str) -> Result<String, Error> {
        let (_, _, app) = self.request_context(sealed).await?;
        self.oidc_issue(&app, pubkey)
    }

    pub(super) fn oidc_issue(&self, app: &ApiKeyRecord, pubkey: &str) -> Result<String, Error> {
        let identity = crate::signin::parse_identity(pubkey)?;
        self.guard.check_identity(&identity.to_string())?;
        Ok(challenge::issue(
            &self.nonce_key,
            &app.id,
            Flow::Oidc,
            &self.issuer_origin(),
            &identity,
            self.now(),
            self.config.challenge_ttl,
            self.entropy.bytes::<16>(),
        )?
        .text)
    }

    /// Verifies a signed challenge of the OIDC flow and opens a session of the
    /// client's app (MFA pending when the app requires it).
    /// Checks a challenge of the provider's own flow, bound to its origin,
    /// signed by `identity`.
    pub(super) fn oidc_verify(
        &self,
        app: &ApiKeyRecord,
        signed: &SignedChallenge<'_>,
        identity: &crate::identity::Identity,
        now: crate::time::UnixTime,
    ) -> Result<challenge::VerifiedChallenge, Error> {
        Ok(challenge::verify(
            &self.nonce_key,
            &app.id,
            Flow::Oidc,
            signed.challenge,
            identity,
            Some(&self.issuer_origin()),
            signed.sig,
            now,
        )
        .inspect_err(|e| tracing::debug!(reason = ?e, "oidc signed challenge refused"))?)
    }

    pub(super) async fn oidc_sign_in(
        &self,
        app: &ApiKeyRecord,
        client: &OAuthClientRecord,
        scope: &str,
        signed: SignedChallenge<'_>,
        meta: ClientMeta,
    ) -> Result<crate::hub::IssuedToken, Error> {
        let identity = crate::signin::parse_identity(signed.pubkey)?;
        let subject = identity.to_string();
        self.guard.check_identity(&subject)?;
        let now = self.now();
        let verified = self.oidc_verify(app, &signed, &identity, now)?;
        let options = TokenOptions {
            client_id: Some(client.id.clone()),
            ..TokenOptions::default()
        };
        let request = ValidRequest {
            offline: false,
            scope: scope.to_owned(),
            expiration: None,
            // The page's session is bound at the token endpoint, to the client's
            // key (docs/dpop.md).
            jkt: None,
        };
        self.open_session(
            app,
            subject,
            &options,
            request,
            (verified.nonce_id, verified.expires_at),
            meta,
            now,
            crate::store::AuditKind::SigninSucceeded,
        )
        .await
    }

    /// The sign-in page's signed challenge: a session of the client's app.
    pub async fn oidc_page_sign_in(
        &self,
        sealed: &str,
        signed: SignedChallenge<'_>,
        meta: ClientMeta,
    ) -> Result<crate::hub::IssuedToken, Error> {
        let (r, client, app) = self.request_context(sealed).await?;
        self.oidc_sign_in(&app, &client, &r.scope, signed, meta)
            .await
    }

    /// The page's last step: consent, then the code. `token` is the page's access
    /// token from [`Hub::oidc_page_sign_in`] (after MFA when required); `allow` is
    /// the user's answer on the consent screen, if it was shown; `error` is the
    /// page telling the client why it stops (`login_required` under `prompt=none`
    /// when the browser holds no key, `access_denied` when the user cancels).
    pub async fn oidc_finish(
        &self,
        sealed: &str,
        token: impl Into<Credential<'_>>,
        allow: Option<bool>,
        error: Option<&str>,
    ) -> Result<Finish, Error> {
        let (r, client, _app) = self.request_context(sealed).await?;
        match error {
            Some("login_required") if r.prompt_none => {
                return Ok(Finish::Redirect(self.redirect_error(
                    &r,
                    "login_required",
                    "no key in this browser",
                )));
            }
            Some("access_denied") => {
                return Ok(Finish::Redirect(self.redirect_error(
                    &r,
                    "access_denied",
                    "the user cancelled",
                )));
            }
            Some(_) => return Err(Error::bad_request("error: unknown value")),
            None => {}
        }
        let (claims, auth) = self.authenticate(token.into(), false).await?;
        if claims.aud != client.app || auth.session.client_id.as_deref() != Some(&client.id) {
            return Err(crate::token::TokenError::WrongAudience.into());
        }
        let account = auth.account.clone().ok_or(Error::Internal)?;
        let end_session = || async {
            let which = Revoke::One {
                subject: &claims.sub,
                id: &claims.sid,
            };
            if let Err(e) = self.store.revoke_sessions(which, self.now()).await {
                tracing::warn!(error = %e, "session of a refused authorization not ended");
            }
        };
        if !client.first_party {
            let remembered = self.store.consent(&account, &client.id).await?;
            let covered = remembered
                .as_deref()
                .is_some_and(|g| r.scope.split(' ').all(|s| has_scope(g, s)));
            let ask = r.prompt_consent || !covered;
            match allow {
                None if ask && r.prompt_none => {
                    end_session().await;
                    return Ok(Finish::Redirect(self.redirect_error(
                        &r,
                        "consent_required",
                        "the user has not consented to this client",
                    )));
                }
                None if ask => {
                    return Ok(Finish::Consent {
                        client: client.name.clone(),
                        scopes: r.scope.split(' ').map(str::to_owned).collect(),
                    });
                }
                Some(false) => {
                    end_session().await;
                    return Ok(Finish::Redirect(self.redirect_error(
                        &r,
                        "access_denied",
                        "the user denied the request",
                    )));
                }
                Some(true) => {
                    self.store
                        .save_consent(&account, &client.id, &r.scope, self.now())
                        .await?;
                }
                None => {}
            }
        }
        let grant = CodeGrant {
            sid: claims.sid.clone(),
            key: claims.sub.clone(),
            acct: account,
            auth_time: auth.session.created_at,
            acr: claims.acr.clone().unwrap_or_else(|| "aal1".into()),
            amr: claims.amr.clone().unwrap_or_default(),
            scope: r.scope.clone(),
            nonce: r.nonce.clone(),
            redirect_uri: Some(r.redirect_uri.clone()),
            code_challenge: Some(r.code_challenge.clone()),
            dpop_jkt: r.dpop_jkt.clone(),
        };
        let code = URL_SAFE_NO_PAD.encode(self.entropy.bytes::<32>());
        self.store
            .insert_code(CodeRecord {
                hash: sha256(&code),
                client_id: client.id.clone(),
                grant: serde_json::to_string(&grant).map_err(|_| Error::Internal)?,
                expires_at: self.now() + CODE_TTL,
            })
            .await?;
        let mut p = vec![("code", code.as_str())];
        if let Some(s) = &r.state {
            p.push(("state", s));
        }
        p.push(("iss", &self.config.issuer));
        Ok(Finish::Redirect(with_query(&r.redirect_uri, &p)))
    }
}

fn request_mac(key: &[u8; 32], body: &str) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(body.as_bytes());
    m.finalize().into_bytes().into()
}
