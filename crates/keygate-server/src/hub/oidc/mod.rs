//! keygate as an OpenID Provider (docs/oidc.md): the authorization code flow
//! with PKCE whose login is a key signature, the token endpoint, ID tokens,
//! userinfo, revocation, introspection, RP-initiated logout and the device grant
//! (RFC 8628). It sits on the Hub's own machinery: a sign-in here is a session of
//! the client's app like any other (listed, capped, revocable, in the feed), its
//! access tokens are the Hub's RFC 9068 tokens, its refresh tokens rotate with
//! reuse detection.
//!
//! Nothing here keeps state in memory between requests: the validated
//! authorization request travels through the sign-in page sealed with a MAC, and
//! codes, consents and device grants are in the store, so several Hub nodes
//! serve one provider.
//!
//! Here: the token endpoint and its grants, ID tokens, userinfo, revocation,
//! introspection and logout. `authorize` holds the browser side of the code flow,
//! `device` the device grant, `routes` the HTTP surface.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Grant, Hub};
use crate::error::Error;
use crate::http::Credential;
use crate::identity::Identity;
use crate::session;
use crate::store::{ApiKeyRecord, OAuthClientRecord, Revoke, TakeCode};
use crate::time::UnixTime;
use keygate_core::oauth;

mod authorize;
mod device;
mod error;
mod hint;
pub(crate) mod keys;
pub mod routes;

pub use error::OAuthError;
use keys::{IdTokenAlg, OidcKeys};

/// Longest `state`, `nonce` and `login_hint` accepted (they are echoed or signed).
const MAX_PARAM: usize = 512;
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The provider's keys, loaded on first use (RSA key generation costs a moment,
/// and a Hub that never serves OIDC should not pay it).
pub(super) struct OidcState {
    keys: OidcKeys,
    request_key: [u8; 32],
}

/// A validated authorization request, sealed into the sign-in page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub code_challenge: String,
    #[serde(default)]
    pub prompt_none: bool,
    #[serde(default)]
    pub prompt_consent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    /// RFC 9449 §10: the code is good only with a DPoP proof by this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    pub exp: UnixTime,
}

/// Why an authorization request failed: before the redirect URI is known to be
/// the client's, only a page (never a redirect); after, a redirect with `error`.
#[derive(Debug)]
pub enum AuthorizeError {
    Page(&'static str),
    Redirect(String),
}

/// What a code or an approved device grant stands for: the session the sign-in
/// opened and what the ID token will say.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CodeGrant {
    sid: String,
    /// The key that signed in (canonical form).
    key: String,
    acct: String,
    auth_time: UnixTime,
    acr: String,
    amr: Vec<String>,
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_challenge: Option<String>,
    /// The `dpop_jkt` of the authorization request (RFC 9449 §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dpop_jkt: Option<String>,
}

/// The credentials a client presented at the token, revocation, introspection
/// or device endpoint.
#[derive(Debug, Default)]
pub struct ClientCredentials {
    /// From `Authorization: Basic` (client_secret_basic).
    pub basic: Option<(String, String)>,
    /// From the form (client_secret_post, or a public client's client_id).
    pub form_id: Option<String>,
    pub form_secret: Option<String>,
    /// The `DPoP` header (RFC 9449 §5); more than one is refused.
    pub dpop: Option<String>,
    pub dpop_repeated: bool,
}

/// The token endpoint's answer (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OAuthTokenResponse)]
pub struct TokenResponse {
    pub access_token: String,
    /// `Bearer`, or `DPoP` for a token bound to the client's key.
    pub token_type: String,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
}

/// What the sign-in page's last step answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PageFinish)]
pub enum Finish {
    /// Ask the user: the client's name and the scopes it wants.
    Consent { client: String, scopes: Vec<String> },
    /// Go here (the code, or an error, for the client).
    Redirect(String),
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    exp: UnixTime,
    iat: UnixTime,
    auth_time: UnixTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    acr: &'a str,
    amr: &'a [String],
    sid: &'a str,
    /// The key that signed in, as a did:key and in canonical form.
    did: String,
    key: &'a str,
    at_hash: String,
}

/// The first value of a parameter that may appear once; a repeated one is an
/// error (RFC 6749 §3.1).
pub(crate) fn single<'a>(
    params: &'a [(String, String)],
    name: &str,
) -> Result<Option<&'a str>, ()> {
    let mut found = None;
    for (k, v) in params {
        if k == name {
            if found.is_some() {
                return Err(());
            }
            found = Some(v.as_str());
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

/// `uri` with `params` added to its query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    out.push(if uri.contains('?') { '&' } else { '?' });
    out.push_str(&q.finish());
    out
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn has_scope(scope: &str, want: &str) -> bool {
    scope.split(' ').any(|s| s == want)
}

impl Hub {
    /// The provider's keys and request MAC key, created on first use.
    pub(super) async fn oidc(&self) -> Result<&OidcState, Error> {
        self.oidc
            .get_or_try_init(|| async {
                let keys = OidcKeys::open(self.store.as_ref(), self.now()).await?;
                let request_key = self
                    .store
                    .secret_or_insert(
                        "oidc_request_key",
                        self.entropy.bytes::<32>().to_vec(),
                        self.now(),
                    )
                    .await?
                    .try_into()
                    .map_err(|_| Error::Internal)?;
                Ok(OidcState { keys, request_key })
            })
            .await
    }

    /// The scheme, host and port of the issuer: the audience of the challenges
    /// the sign-in page signs (the page runs on this origin).
    pub fn issuer_origin(&self) -> String {
        url::Url::parse(&self.config.issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| self.config.issuer.clone())
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.config.issuer.trim_end_matches('/'))
    }

    /// OIDC Discovery 1.0 and RFC 8414 metadata (one document serves both).
    pub fn oidc_metadata(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.config.issuer,
            "authorization_endpoint": self.endpoint("/oauth/authorize"),
            "token_endpoint": self.endpoint("/oauth/token"),
            "userinfo_endpoint": self.endpoint("/oauth/userinfo"),
            "jwks_uri": self.endpoint("/oauth/jwks"),
            "revocation_endpoint": self.endpoint("/oauth/revoke"),
            "introspection_endpoint": self.endpoint("/oauth/introspect"),
            "end_session_endpoint": self.endpoint("/oauth/logout"),
            "device_authorization_endpoint": self.endpoint("/oauth/device_authorization"),
            "scopes_supported": ["openid", "profile", "offline_access"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_GRANT],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": IdTokenAlg::ALL.map(IdTokenAlg::as_str),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "dpop_signing_alg_values_supported": ["EdDSA", "Ed25519", "ES256"],
            "prompt_values_supported": ["none", "login", "consent"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid", "did", "key", "at_hash"],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "authorization_response_iss_parameter_supported": true,
            "access_token_issuer": self.config.issuer,
        })
    }

    /// The provider's JWKS: the Hub's Ed25519 keys (without `alg`, so that both
    /// `EdDSA` and `Ed25519` tokens find them), the RSA key and the P-256 key.
    pub async fn oidc_jwks(&self) -> Result<serde_json::Value, Error> {
        let state = self.oidc().await?;
        let mut keys: Vec<serde_json::Value> = Vec::new();
        for k in &self.ring().jwks.keys {
            let mut v = serde_json::to_value(k).map_err(|_| Error::Internal)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("alg");
            }
            keys.push(v);
        }
        keys.extend(state.keys.public_jwks());
        Ok(serde_json::json!({ "keys": keys }))
    }

    async fn live_client(&self, id: &str) -> Result<Option<OAuthClientRecord>, Error> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        Ok(self
            .store
            .oauth_client(id)
            .await?
            .filter(|c| c.revoked_at.is_none()))
    }

    /// The client's app: a live API key this Hub accepts.
    async fn client_app(&self, client: &OAuthClientRecord) -> Result<ApiKeyRecord, OAuthError> {
        match self.store.api_key(&client.app).await.map_err(Error::from)? {
            Some(k) if k.revoked_at.is_none() && (!k.dev || self.config.dev) => Ok(k),
            _ => Err(OAuthError::unauthorized_client(
                "this client's app is revoked",
            )),
        }
    }

    /// Authenticates the client at the token, revocation, introspection and
    /// device endpoints (RFC 6749 §2.3): exactly one method; a confidential
    /// client by its secret, a public one by its id alone.
    pub async fn authenticate_client(
        &self,
        creds: &ClientCredentials,
    ) -> Result<OAuthClientRecord, OAuthError> {
        let (id, secret) = match (&creds.basic, &creds.form_id, &creds.form_secret) {
            (Some(_), _, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method",
                ));
            }
            (Some((id, secret)), form_id, None) => {
                if form_id.as_ref().is_some_and(|f| f != id) {
                    return Err(OAuthError::invalid_request("client_id does not match"));
                }
                (id.as_str(), Some(secret.as_str()))
            }
            (None, Some(id), secret) => (id.as_str(), secret.as_deref()),
            (None, None, _) => return Err(OAuthError::invalid_client()),
        };
        let client = self.live_client(id).await.map_err(OAuthError::from)?;
        let Some(client) = client else {
            // The same work as a wrong secret: the id is not secret, the timing of
            // the comparison is.
            let _ = oauth::client_secret_matches(secret.unwrap_or(""), &[0u8; 32]);
            return Err(OAuthError::invalid_client());
        };
        match (&client.secret_hash, secret) {
            (Some(hash), Some(s)) if oauth::client_secret_matches(s, hash) => Ok(client),
            (None, None) => Ok(client),
            _ => Err(OAuthError::invalid_client()),
        }
    }

    /// `POST /oauth/token`.
    pub async fn oauth_token(
        &self,
        creds: &ClientCredentials,
        params: &[(String, String)],
    ) -> Result<TokenResponse, OAuthError> {
        let client = self.authenticate_client(creds).await?;
        let get = |name: &str| {
            single(params, name).map_err(|_| OAuthError::invalid_request("a parameter is repeated"))
        };
        match get("grant_type")? {
            Some("authorization_code") => {
                let code = get("code")?.ok_or(OAuthError::invalid_request("code is missing"))?;
                let redirect_uri = get("redirect_uri")?;
                let verifier = get("code_verifier")?
                    .ok_or(OAuthError::invalid_request("code_verifier is missing"))?;
                let jkt = self.token_proof(creds)?;
                self.exchange_code(&client, code, redirect_uri, verifier, jkt)
                    .await
            }
            Some("refresh_token") => {
                let token = get("refresh_token")?
                    .ok_or(OAuthError::invalid_request("refresh_token is missing"))?;
                let scope = get("scope")?;
                if let Some(s) = scope
                    && s.split(' ').any(|s| {
                        !s.is_empty() && s != "openid" && !client.scopes.iter().any(|c| c == s)
                    })
                {
                    return Err(OAuthError::invalid_scope());
                }
                self.refresh_grant(&client, token, scope, creds).await
            }
            Some(DEVICE_GRANT) => {
                let code = get("device_code")?
                    .ok_or(OAuthError::invalid_request("device_code is missing"))?;
                let jkt = self.token_proof(creds)?;
                self.device_grant(&client, code, jkt).await
            }
            Some(_) => Err(OAuthError::unsupported_grant_type()),
            None => Err(OAuthError::invalid_request("grant_type is missing")),
        }
    }

    /// The thumbprint of the key of the token request's DPoP proof, checked
    /// (RFC 9449 §4.3, §5): the tokens are bound to it. The client's own key:
    /// EdDSA, Ed25519 or ES256.
    fn token_proof(&self, creds: &ClientCredentials) -> Result<Option<String>, OAuthError> {
        if creds.dpop.is_none() && !creds.dpop_repeated {
            return Ok(None);
        }
        if creds.dpop_repeated {
            return Err(Error::Dpop {
                error: keygate_core::dpop::DpopError::Malformed,
                at_issue: true,
            }
            .into());
        }
        let url = self.endpoint("/oauth/token");
        let proof = self.dpop.check(
            creds.dpop.as_deref(),
            "POST",
            &[&url],
            None,
            keygate_core::dpop::Keys::Any,
            self.now(),
            true,
        )?;
        Ok(Some(proof.jkt))
    }

    async fn exchange_code(
        &self,
        client: &OAuthClientRecord,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
        jkt: Option<String>,
    ) -> Result<TokenResponse, OAuthError> {
        if code.len() > 64 {
            return Err(OAuthError::invalid_grant());
        }
        let now = self.now();
        let hash = sha256(code);
        let record = match self.store.take_code(hash, now).await.map_err(Error::from)? {
            TakeCode::Fresh(r) => r,
            TakeCode::Replayed { session_id } => {
                // RFC 6749 §4.1.2: a code used twice revokes what it issued.
                if let Some(sid) = session_id {
                    self.end_session_by_id(&sid).await;
                    tracing::info!("authorization code replayed: its session ended");
                }
                return Err(OAuthError::invalid_grant());
            }
            TakeCode::Unknown => return Err(OAuthError::invalid_grant()),
        };
        let grant: CodeGrant =
            serde_json::from_str(&record.grant).map_err(|_| OAuthError::invalid_grant())?;
        let challenge = grant.code_challenge.as_deref().unwrap_or("");
        // RFC 9449 §10: a code asked for with dpop_jkt needs a proof by that key.
        let key_matches = match (&grant.dpop_jkt, &jkt) {
            (Some(want), Some(got)) => want == got,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let bound = record.client_id == client.id
            && key_matches
            && grant.redirect_uri.as_deref() == redirect_uri
            && oauth::valid_verifier(verifier)
            && oauth::s256_matches(verifier, challenge);
        if !bound {
            // The code is spent: the thief learns nothing and the owner signs in again.
            self.end_session_by_id(&grant.sid).await;
            return Err(OAuthError::invalid_grant());
        }
        self.store
            .set_code_session(hash, &grant.sid)
            .await
            .map_err(Error::from)?;
        self.issue_for_grant(client, &grant, now, jkt).await
    }

    /// Access token (+ refresh token when `offline_access` was granted, + ID token
    /// when `openid` was) for a code or an approved device grant.
    async fn issue_for_grant(
        &self,
        client: &OAuthClientRecord,
        grant: &CodeGrant,
        now: UnixTime,
        jkt: Option<String>,
    ) -> Result<TokenResponse, OAuthError> {
        let app = self.client_app(client).await?;
        let auth = self
            .store
            .session_auth(&grant.sid)
            .await
            .map_err(Error::from)?
            .ok_or_else(OAuthError::invalid_grant)?;
        if auth.session.check(now).is_err() || auth.session.client_id.as_deref() != Some(&client.id)
        {
            return Err(OAuthError::invalid_grant());
        }
        let jkt = match (app.dpop, jkt) {
            (crate::store::DpopPolicy::Off, _) => None,
            (crate::store::DpopPolicy::Required, None) => {
                return Err(OAuthError::invalid_request(
                    "this client must send a DPoP proof to the token endpoint",
                ));
            }
            (_, jkt) => jkt,
        };
        // The session (and so its refresh token) is bound to the key from now on.
        if let Some(j) = &jkt
            && !self
                .store
                .bind_session_key(&grant.sid, j)
                .await
                .map_err(Error::from)?
        {
            return Err(OAuthError::invalid_grant());
        }
        let refresh_token = if has_scope(&grant.scope, "offline_access") {
            let t = session::new_secret_token(&mut self.entropy.rng(), session::REFRESH_PREFIX);
            self.store
                .add_refresh_token(&grant.sid, session::hash_secret(&t), &client.id, now)
                .await
                .map_err(Error::from)?;
            Some(t)
        } else {
            None
        };
        let assurance = super::accounts::assurance(&auth, now);
        let issued = self.mint(
            Grant {
                subject: &grant.key,
                app: &app.id,
                session_id: &grant.sid,
                scope: &auth.session.scope,
                client_id: Some(client.id.clone()),
                role: None,
                account: Some(grant.acct.clone()),
                assurance: Some(assurance),
                jkt: jkt.as_deref(),
            },
            &app,
            None,
            now,
            auth.session.expires_at,
            refresh_token,
        );
        self.token_response(client, grant, issued, now).await
    }

    async fn token_response(
        &self,
        client: &OAuthClientRecord,
        grant: &CodeGrant,
        issued: super::IssuedToken,
        now: UnixTime,
    ) -> Result<TokenResponse, OAuthError> {
        let id_token = if has_scope(&grant.scope, "openid") {
            Some(
                self.id_token(client, grant, &issued.token, now + issued.expires_in, now)
                    .await?,
            )
        } else {
            None
        };
        Ok(TokenResponse {
            access_token: issued.token,
            token_type: issued.token_type,
            expires_in: issued.expires_in,
            refresh_token: issued.refresh_token,
            id_token,
            scope: grant.scope.clone(),
        })
    }

    async fn id_token(
        &self,
        client: &OAuthClientRecord,
        grant: &CodeGrant,
        access_token: &str,
        exp: UnixTime,
        now: UnixTime,
    ) -> Result<String, OAuthError> {
        let alg = IdTokenAlg::parse(&client.alg).unwrap_or(IdTokenAlg::Rs256);
        let state = self.oidc().await?;
        let did = Identity::parse(&grant.key)
            .map(|i| i.did_key())
            .map_err(|_| OAuthError::invalid_grant())?;
        let claims = IdClaims {
            iss: &self.config.issuer,
            sub: &grant.acct,
            aud: &client.id,
            azp: &client.id,
            exp,
            iat: now,
            auth_time: grant.auth_time,
            nonce: grant.nonce.as_deref(),
            acr: &grant.acr,
            amr: &grant.amr,
            sid: &grant.sid,
            did,
            key: &grant.key,
            at_hash: keys::half_hash(alg, access_token),
        };
        Ok(state.keys.sign(alg, &self.ring().signer, &claims)?)
    }

    async fn refresh_grant(
        &self,
        client: &OAuthClientRecord,
        token: &str,
        scope: Option<&str>,
        creds: &ClientCredentials,
    ) -> Result<TokenResponse, OAuthError> {
        let cred = Credential {
            proof: creds.dpop.as_deref(),
            proofs_repeated: creds.dpop_repeated,
            method: "POST",
            path: "/oauth/token",
            ..Credential::default()
        };
        let issued = self
            .refresh(token, &client.id, cred, true, scope)
            .await
            .map_err(|e| match e {
                Error::InvalidScope => OAuthError::invalid_scope(),
                Error::Unavailable
                | Error::Internal
                | Error::Dpop { .. }
                | Error::UseDpopNonce { .. }
                | Error::RateLimited { .. } => OAuthError::from(e),
                _ => OAuthError::invalid_grant(),
            })?;
        let now = self.now();
        let auth = self
            .store
            .session_auth(&issued.session_id)
            .await
            .map_err(Error::from)?
            .ok_or_else(OAuthError::invalid_grant)?;
        let assurance = super::accounts::assurance(&auth, now);
        let grant = CodeGrant {
            sid: auth.session.id.clone(),
            key: auth.session.subject.clone(),
            acct: auth.account.clone().unwrap_or_default(),
            auth_time: auth.session.created_at,
            acr: assurance.acr().to_owned(),
            amr: assurance.amr(),
            // Already checked by the refresh: the narrowed scope it minted.
            scope: scope
                .and_then(|s| session::narrow_scope(&auth.session.scope, s))
                .unwrap_or_else(|| auth.session.scope.clone()),
            nonce: None,
            redirect_uri: None,
            code_challenge: None,
            dpop_jkt: None,
        };
        self.token_response(client, &grant, issued, now).await
    }

    async fn end_session_by_id(&self, sid: &str) {
        let result = async {
            let Some(s) = self.store.session(sid).await? else {
                return Ok(0);
            };
            let which = Revoke::One {
                subject: &s.subject,
                id: sid,
            };
            self.store.revoke_sessions(which, self.now()).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "session not ended");
        }
    }

    /// `GET|POST /oauth/userinfo`: the account behind an access token whose
    /// scope includes `openid`.
    pub async fn userinfo(
        &self,
        token: impl Into<Credential<'_>>,
    ) -> Result<serde_json::Value, OAuthError> {
        let cred = token.into();
        let dpop_scheme = cred.dpop_scheme;
        let (claims, _) = self
            .authenticate_user(cred)
            .await
            .map_err(OAuthError::bearer)?;
        if !has_scope(&claims.scope, "openid") {
            return Err(OAuthError::insufficient_scope(dpop_scheme));
        }
        let did = Identity::parse(&claims.sub)
            .map(|i| i.did_key())
            .map_err(|_| OAuthError::bearer(Error::SessionRevoked))?;
        Ok(serde_json::json!({
            "sub": claims.acct,
            "did": did,
            "key": claims.sub,
        }))
    }

    /// The session a token of `client` belongs to: an access token's, or a
    /// refresh token's. `None` for anything else (unknown, another client's).
    async fn client_session(
        &self,
        client: &OAuthClientRecord,
        token: &str,
    ) -> Result<Option<crate::store::SessionRecord>, Error> {
        let sid = if token.starts_with(session::REFRESH_PREFIX) {
            if token.len() > 128 {
                return Ok(None);
            }
            self.store
                .refresh_session_id(session::hash_secret(token))
                .await?
        } else {
            // An expired access token still names its session.
            self.ring()
                .verifier
                .verify_any(token, self.now())
                .ok()
                .map(|(c, _)| c.sid)
        };
        let Some(sid) = sid else { return Ok(None) };
        Ok(self
            .store
            .session(&sid)
            .await?
            .filter(|s| s.client_id.as_deref() == Some(&client.id) && s.api_key == client.app))
    }

    /// RFC 7009: revoking an access or refresh token ends its session (and so
    /// every token of it). Unknown tokens and other clients' tokens: 200, nothing done.
    pub async fn oauth_revoke(
        &self,
        creds: &ClientCredentials,
        params: &[(String, String)],
    ) -> Result<(), OAuthError> {
        let client = self.authenticate_client(creds).await?;
        let token = single(params, "token")
            .map_err(|_| OAuthError::invalid_request("token is repeated"))?
            .ok_or(OAuthError::invalid_request("token is missing"))?;
        if let Some(s) = self.client_session(&client, token).await? {
            let which = Revoke::One {
                subject: &s.subject,
                id: &s.id,
            };
            self.store
                .revoke_sessions(which, self.now())
                .await
                .map_err(Error::from)?;
        }
        Ok(())
    }

    /// RFC 7662 for clients: their own access tokens, answered from live state.
    pub async fn oauth_introspect(
        &self,
        creds: &ClientCredentials,
        params: &[(String, String)],
    ) -> Result<serde_json::Value, OAuthError> {
        let client = self.authenticate_client(creds).await?;
        let token = single(params, "token")
            .map_err(|_| OAuthError::invalid_request("token is repeated"))?
            .ok_or(OAuthError::invalid_request("token is missing"))?;
        let inactive = serde_json::json!({ "active": false });
        if token.starts_with(session::REFRESH_PREFIX) {
            let now = self.now();
            return Ok(match self.client_session(&client, token).await? {
                Some(s) if s.check(now).is_ok() => serde_json::json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "client_id": client.id,
                    "sub": s.subject,
                    "sid": s.id,
                    "scope": s.scope,
                    "exp": s.expires_at,
                    "iss": self.config.issuer,
                }),
                _ => inactive,
            });
        }
        match self
            .authenticate_user(Credential::for_introspection(token))
            .await
        {
            Ok((c, s)) if s.client_id.as_deref() == Some(&client.id) && c.aud == client.app => {
                let mut v = serde_json::to_value(&c).map_err(|_| Error::Internal)?;
                v["active"] = true.into();
                v["token_type"] = if c.cnf.is_some() { "DPoP" } else { "Bearer" }.into();
                Ok(v)
            }
            Err(e @ (Error::Unavailable | Error::Internal)) => Err(e.into()),
            _ => Ok(inactive),
        }
    }

    /// RP-initiated logout: ends the session an ID token (from this provider, to
    /// this client) names. Returns where to send the browser, if anywhere.
    pub async fn oidc_logout(
        &self,
        params: &[(String, String)],
    ) -> Result<Option<String>, AuthorizeError> {
        use AuthorizeError::Page;
        let get = |name: &str| single(params, name).map_err(|_| Page("a parameter is repeated"));
        let hint = get("id_token_hint")?;
        let mut client_id = get("client_id")?.map(str::to_owned);
        let mut session = None;
        if let Some(hint) = hint {
            let state = self
                .oidc()
                .await
                .map_err(|_| Page("the service is unavailable; try again"))?;
            let claims = hint::verify_id_token(&state.keys, &self.ring().jwks, hint)
                .filter(|c| c.iss == self.config.issuer)
                .ok_or(Page("id_token_hint is not an ID token of this provider"))?;
            if client_id.as_ref().is_some_and(|c| *c != claims.aud) {
                return Err(Page("client_id does not match id_token_hint"));
            }
            session = Some(claims.sid);
            client_id = Some(claims.aud);
        }
        // Everything is checked before anything ends: a refused request ends nothing.
        let target = match get("post_logout_redirect_uri")? {
            None => None,
            Some(target) => {
                let client = match &client_id {
                    Some(id) => self.live_client(id).await.ok().flatten(),
                    None => None,
                };
                let client = client.ok_or(Page(
                    "post_logout_redirect_uri needs id_token_hint or client_id",
                ))?;
                if !client.post_logout_redirect_uris.iter().any(|u| u == target) {
                    return Err(Page(
                        "post_logout_redirect_uri is not registered for this client",
                    ));
                }
                let mut p = Vec::new();
                if let Some(s) = get("state")?.filter(|s| s.len() <= MAX_PARAM) {
                    p.push(("state", s));
                }
                Some(if p.is_empty() {
                    target.to_owned()
                } else {
                    with_query(target, &p)
                })
            }
        };
        if let (Some(sid), Some(client)) = (session, &client_id)
            && let Ok(Some(s)) = self.store.session(&sid).await
            && s.client_id.as_deref() == Some(client.as_str())
        {
            let which = Revoke::One {
                subject: &s.subject,
                id: &s.id,
            };
            if self.store.revoke_sessions(which, self.now()).await.is_err() {
                return Err(Page("the service is unavailable; try again"));
            }
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_are_absent() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(single(&p(&[("a", "1")]), "a"), Ok(Some("1")));
        assert_eq!(single(&p(&[("a", "")]), "a"), Ok(None));
        assert_eq!(single(&p(&[("a", "1"), ("a", "1")]), "a"), Err(()));
        assert_eq!(single(&p(&[("b", "1")]), "a"), Ok(None));
    }

    #[test]
    fn redirect_parameters_are_encoded_and_appended() {
        assert_eq!(
            with_query(
                "https://rp.example/cb",
                &[("code", "a b"), ("state", "x&y=z")]
            ),
            "https://rp.example/cb?code=a+b&state=x%26y%3Dz"
        );
        assert_eq!(
            with_query("https://rp.example/cb?tenant=1", &[("code", "c")]),
            "https://rp.example/cb?tenant=1&code=c"
        );
    }
}
