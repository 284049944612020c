//! A user's side of accounts and second factors (docs/accounts.md): what
//! `keygate account …` and `keygate mfa …` do with a key file and a Provider.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::{ClientError, read_json};
use keygate_core::identity::Identity;
use keygate_proto::{AccountView, ChallengeBody, IssuedToken, Linked, TotpEnrolment};

/// What the signed-in device hands the new one to finish a link: the link
/// challenge and its own signature (not a secret: it names the new key, and only
/// that key's holder can complete it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCode {
    pub challenge: String,
    pub sig: String,
}

impl LinkCode {
    /// `base64url(JSON)`, the form carried in a URL fragment (`#link=…`).
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a code, bare or as a URL with a `#link=` fragment.
    pub fn decode(s: &str) -> Result<Self, ClientError> {
        let code = s.rsplit_once("#link=").map_or(s, |(_, c)| c).trim();
        let bytes = URL_SAFE_NO_PAD
            .decode(code)
            .map_err(|_| ClientError::Protocol("not a link code".into()))?;
        serde_json::from_slice(&bytes).map_err(|_| ClientError::Protocol("not a link code".into()))
    }

    /// What the new key checks before signing: a link challenge naming it.
    pub fn check_names(&self, new_key: &Identity) -> Result<(), ClientError> {
        let line = format!("\nnew-identity: {new_key}\n");
        if self.challenge.starts_with("keygate link challenge v1\n")
            && self.challenge.contains(&line)
        {
            Ok(())
        } else {
            Err(ClientError::Protocol(
                "this link code is not a link challenge for this key".into(),
            ))
        }
    }
}

/// The account endpoints of a Provider (or Hub), as one signed-in session.
pub struct AccountClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AccountClient {
    pub fn new(base_url: &str, token: &str) -> Self {
        AccountClient {
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Uses `token` from now on (after a raise).
    pub fn set_token(&mut self, token: &str) {
        self.token = token.to_owned();
    }

    /// The base URL the calls go to.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .map_err(|_| ClientError::Connect(self.base.clone()))?;
        read_json(res).await
    }

    pub async fn keys(&self) -> Result<AccountView, ClientError> {
        self.call(reqwest::Method::GET, "/v1/account/keys", None)
            .await
    }

    pub async fn remove(&self, identity: &str) -> Result<serde_json::Value, ClientError> {
        let path = format!("/v1/account/keys/{identity}");
        self.call(reqwest::Method::DELETE, &path, None).await
    }

    /// Asks for a link challenge for `new_key` and signs it with `key` (the
    /// signed-in key): the code to hand the new device.
    pub async fn invite(&self, key: &SigningKey, new_key: &str) -> Result<LinkCode, ClientError> {
        let body = serde_json::json!({ "identity": new_key });
        let c: ChallengeBody = self
            .call(
                reqwest::Method::POST,
                "/v1/account/link/challenge",
                Some(body),
            )
            .await?;
        let me = format!("\nidentity: {}\n", Identity::from(key));
        if !c.challenge.contains(&me) {
            return Err(ClientError::Protocol(
                "the link challenge does not name this key".into(),
            ));
        }
        Ok(LinkCode {
            sig: keygate_core::challenge::sign(key, &c.challenge),
            challenge: c.challenge,
        })
    }

    /// Raises the session with a TOTP code; keeps and returns the raised token.
    pub async fn totp_verify(&mut self, code: &str) -> Result<IssuedToken, ClientError> {
        let body = serde_json::json!({ "code": code });
        let t: IssuedToken = self
            .call(reqwest::Method::POST, "/v1/mfa/totp/verify", Some(body))
            .await?;
        self.token.clone_from(&t.token);
        Ok(t)
    }

    pub async fn totp_enrol(&self) -> Result<TotpEnrolment, ClientError> {
        self.call(reqwest::Method::POST, "/v1/mfa/totp", None).await
    }
}

/// The new device's side: signs the link code's challenge with `new_key` and
/// completes the link (no session needed: the two signatures are the credential).
pub async fn accept_link(
    base_url: &str,
    code: &LinkCode,
    new_key: &SigningKey,
    label: Option<&str>,
) -> Result<Linked, ClientError> {
    code.check_names(&Identity::from(new_key))?;
    let body = serde_json::json!({
        "challenge": code.challenge,
        "sig": code.sig,
        "new_sig": keygate_core::challenge::sign(new_key, &code.challenge),
        "label": label,
    });
    let res = reqwest::Client::new()
        .post(format!(
            "{}/v1/account/link",
            base_url.trim_end_matches('/')
        ))
        .json(&body)
        .send()
        .await
        .map_err(|_| ClientError::Connect(base_url.to_owned()))?;
    read_json(res).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_codes_round_trip_bare_or_in_a_url() {
        let c = LinkCode {
            challenge: "keygate link challenge v1\nx".into(),
            sig: "s".into(),
        };
        assert_eq!(LinkCode::decode(&c.encode()).unwrap(), c);
        let url = format!("http://localhost:8080/#link={}", c.encode());
        assert_eq!(LinkCode::decode(&url).unwrap(), c);
        assert!(LinkCode::decode("nope").is_err());
    }
}
