//! The device authorization grant (RFC 8628): a device that cannot show a browser
//! gets a code, the user approves it by signing with their key, the device polls
//! `/oauth/token` for its tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{ClientCredentials, CodeGrant, OAuthError, TokenResponse, sha256, single, with_query};
use crate::error::Error;
use crate::hub::{ClientMeta, Hub, SignedChallenge};
use crate::store::{ApiKeyRecord, DevicePoll, DeviceRecord, OAuthClientRecord};
use keygate_core::oauth;

/// Lifetime of a device code and the polling interval (RFC 8628 §3.2).
const DEVICE_TTL: i64 = 600;
const DEVICE_INTERVAL: i64 = 5;

impl Hub {
    /// RFC 8628 §3.1–3.2: a device code for a client that cannot show a browser.
    pub async fn device_authorization(
        &self,
        creds: &ClientCredentials,
        params: &[(String, String)],
    ) -> Result<serde_json::Value, OAuthError> {
        let client = self.authenticate_client(creds).await?;
        let scope = single(params, "scope")
            .map_err(|_| OAuthError::invalid_request("scope is repeated"))?
            .unwrap_or("openid");
        let mut granted: Vec<&str> = Vec::new();
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            if s != "openid" && !client.scopes.iter().any(|c| c == s) {
                return Err(OAuthError::invalid_scope());
            }
            if !granted.contains(&s) {
                granted.push(s);
            }
        }
        let device_code = URL_SAFE_NO_PAD.encode(self.entropy.bytes::<32>());
        let user_code = oauth::new_user_code(&mut self.entropy.rng());
        let normalized = oauth::normalize_user_code(&user_code).ok_or(Error::Internal)?;
        self.store
            .insert_device(DeviceRecord {
                device_hash: sha256(&device_code),
                user_code: normalized,
                client_id: client.id.clone(),
                scope: granted.join(" "),
                expires_at: self.now() + DEVICE_TTL,
                interval: DEVICE_INTERVAL,
            })
            .await
            .map_err(Error::from)?;
        let verification_uri = self.endpoint("/oauth/device");
        Ok(serde_json::json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": with_query(&verification_uri, &[("user_code", &user_code)]),
            "expires_in": DEVICE_TTL,
            "interval": DEVICE_INTERVAL,
        }))
    }

    async fn device_context(
        &self,
        user_code: &str,
    ) -> Result<(DeviceRecord, OAuthClientRecord, ApiKeyRecord), Error> {
        let unknown =
            || Error::bad_request("user_code: unknown or expired; ask the device for a new one");
        let code = oauth::normalize_user_code(user_code).ok_or_else(unknown)?;
        let device = self
            .store
            .device_by_user_code(&code, self.now())
            .await?
            .ok_or_else(unknown)?;
        let client = self
            .live_client(&device.client_id)
            .await?
            .ok_or_else(unknown)?;
        let app = self.client_app(&client).await.map_err(|_| unknown())?;
        Ok((device, client, app))
    }

    /// The approving key asks for a challenge for a device code; the answer
    /// says which client asks for what.
    pub async fn device_challenge(
        &self,
        user_code: &str,
        pubkey: &str,
    ) -> Result<serde_json::Value, Error> {
        let (device, client, app) = self.device_context(user_code).await?;
        let challenge = self.oidc_issue(&app, pubkey)?;
        Ok(serde_json::json!({
            "challenge": challenge,
            "client": client.name,
            "scope": device.scope,
        }))
    }

    /// The user approves (or denies) a device code by signing the challenge
    /// with their key: approval opens the session the device's tokens belong to.
    pub async fn device_decide(
        &self,
        user_code: &str,
        signed: SignedChallenge<'_>,
        approve: bool,
        meta: ClientMeta,
    ) -> Result<serde_json::Value, Error> {
        let (device, client, app) = self.device_context(user_code).await?;
        let code = device.user_code.clone();
        if !approve {
            // The signature still has to be right: only the key holder says no.
            let identity = crate::signin::parse_identity(signed.pubkey)?;
            self.oidc_verify(&app, &signed, &identity, self.now())?;
            self.store.decide_device(&code, None, self.now()).await?;
            return Ok(serde_json::json!({ "approved": false }));
        }
        let issued = self
            .oidc_sign_in(&app, &client, &device.scope, signed, meta)
            .await?;
        let auth = self
            .store
            .session_auth(&issued.session_id)
            .await?
            .ok_or(Error::SessionRevoked)?;
        if issued.mfa_required {
            self.end_session_by_id(&issued.session_id).await;
            return Err(Error::Forbidden(
                "this app requires a second factor, which a device approval cannot show yet".into(),
            ));
        }
        let assurance = crate::hub::accounts::assurance(&auth, self.now());
        let grant = CodeGrant {
            sid: issued.session_id.clone(),
            key: auth.session.subject.clone(),
            acct: auth.account.clone().unwrap_or_default(),
            auth_time: auth.session.created_at,
            acr: assurance.acr().to_owned(),
            amr: assurance.amr(),
            scope: device.scope.clone(),
            nonce: None,
            redirect_uri: None,
            code_challenge: None,
            dpop_jkt: None,
        };
        let json = serde_json::to_string(&grant).map_err(|_| Error::Internal)?;
        if !self
            .store
            .decide_device(&code, Some(json), self.now())
            .await?
        {
            self.end_session_by_id(&issued.session_id).await;
            return Err(Error::bad_request("user_code: unknown or expired"));
        }
        Ok(serde_json::json!({
            "approved": true,
            "client": client.name,
            "scope": device.scope,
        }))
    }

    pub(super) async fn device_grant(
        &self,
        client: &OAuthClientRecord,
        device_code: &str,
        jkt: Option<String>,
    ) -> Result<TokenResponse, OAuthError> {
        if device_code.len() > 64 {
            return Err(OAuthError::invalid_grant());
        }
        let now = self.now();
        match self
            .store
            .poll_device(sha256(device_code), &client.id, now)
            .await
            .map_err(Error::from)?
        {
            DevicePoll::Unknown => Err(OAuthError::invalid_grant()),
            DevicePoll::Expired => Err(OAuthError::new(
                400,
                "expired_token",
                "the device code has expired",
            )),
            DevicePoll::Pending { slow_down: true } => {
                Err(OAuthError::new(400, "slow_down", "poll less often"))
            }
            DevicePoll::Pending { slow_down: false } => Err(OAuthError::new(
                400,
                "authorization_pending",
                "the user has not approved yet",
            )),
            DevicePoll::Denied => Err(OAuthError::new(
                400,
                "access_denied",
                "the user denied the request",
            )),
            DevicePoll::Approved { grant } => {
                let grant: CodeGrant =
                    serde_json::from_str(&grant).map_err(|_| OAuthError::invalid_grant())?;
                self.issue_for_grant(client, &grant, now, jkt).await
            }
            DevicePoll::OtherClient { grant } => {
                // Spent, as a code presented by the wrong client is: the thief
                // learns nothing and the device starts over.
                let approved = grant.and_then(|g| serde_json::from_str::<CodeGrant>(&g).ok());
                if let Some(grant) = approved {
                    self.end_session_by_id(&grant.sid).await;
                }
                Err(OAuthError::invalid_grant())
            }
        }
    }
}
