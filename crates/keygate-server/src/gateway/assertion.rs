//! The gateway's assertion: a short-lived EdDSA JWT naming the caller, minted for
//! one route, by which a service proves that the identity headers it received were
//! set by the gateway (a client cannot set them: the gateway strips them) and not
//! by someone who reached the service another way.
//!
//! Like the assertions of other identity-aware proxies it is bound to the caller
//! and the route, not to one request: the gateway reuses one for the requests of a
//! token on a route for up to half its lifetime, so that a request costs no
//! signature (see `state::AssertionCache`).
//!
//! It is not an access token: its `typ` is [`ASSERTION_TYPE`], its issuer is the
//! gateway, its audience the route, and it is signed by the gateway's own key
//! (published at `/.well-known/gateway-jwks.json`), so it can never be mistaken for
//! one. Pure functions: time and randomness come in as arguments.

use std::collections::BTreeMap;
use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::time::UnixTime;
use crate::token::{Jwk, Jwks, MAX_LEEWAY, MAX_TOKEN_LEN, TokenError};

/// The JWS `typ` of an assertion.
pub const ASSERTION_TYPE: &str = "keygate-assertion+jwt";

/// What the gateway asserts about one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The gateway (`assertion_issuer` in its config).
    pub iss: String,
    /// The route's name.
    pub aud: String,
    pub iat: UnixTime,
    pub exp: UnixTime,
    pub jti: String,
    /// The token's `sub`: the canonical identity. Absent on public routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The token's session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The app the token was issued for (the token's `aud`: an API key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The token's key binding: the call came with a DPoP proof by this key
    /// (docs/dpop.md). Absent for bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<crate::token::Confirmation>,
    /// The session values injected as `x-keygate-session-<name>` headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub session_values: BTreeMap<String, String>,
}

/// The gateway's signing key with its precomputed JWS header.
pub struct AssertionSigner {
    key: SigningKey,
    jwk: Jwk,
    header_b64: String,
}

impl AssertionSigner {
    pub fn new(key: SigningKey) -> Self {
        let jwk = Jwk::ed25519(key.verifying_key().as_bytes());
        let header = format!(
            r#"{{"alg":"EdDSA","typ":"{ASSERTION_TYPE}","kid":"{}"}}"#,
            jwk.kid
        );
        AssertionSigner {
            key,
            header_b64: URL_SAFE_NO_PAD.encode(header),
            jwk,
        }
    }

    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.jwk.clone()],
        }
    }

    pub fn mint(&self, claims: &AssertionClaims) -> String {
        crate::token::sign_compact(&self.key, &self.header_b64, claims)
    }
}

/// What a service behind the gateway uses to check assertions: the gateway's JWKS,
/// its issuer name, and the service's route name.
#[derive(Clone)]
pub struct AssertionVerifier {
    keys: HashMap<String, DecodingKey>,
    issuer: String,
    audience: String,
}

impl AssertionVerifier {
    pub fn new(jwks: &Jwks, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA")
            .filter_map(|k| Some((k.kid.clone(), DecodingKey::from_ed_components(&k.x).ok()?)))
            .collect();
        AssertionVerifier {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    /// Checks signature, `typ`, `iss`, `aud`, `exp` and `iat` (with at most
    /// [`MAX_LEEWAY`] seconds of leeway) and returns the claims.
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<AssertionClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if header.typ.as_deref() != Some(ASSERTION_TYPE) {
            return Err(TokenError::WrongType);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let c = jsonwebtoken::decode::<AssertionClaims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            })?
            .claims;
        if c.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if c.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        if now >= c.exp + MAX_LEEWAY {
            return Err(TokenError::Expired);
        }
        if now + MAX_LEEWAY < c.iat {
            return Err(TokenError::NotYetValid);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_795_430_809;

    fn claims() -> AssertionClaims {
        AssertionClaims {
            iss: "keygate-gateway".into(),
            aud: "api".into(),
            iat: NOW,
            exp: NOW + 30,
            jti: "j".into(),
            sub: Some("bbaareitest".into()),
            sid: Some("s1".into()),
            scope: Some("read".into()),
            app: Some("kgk_app".into()),
            client_id: None,
            cnf: None,
            session_values: [("auth-userId".to_owned(), "42".to_owned())].into(),
        }
    }

    #[test]
    fn mint_then_verify() {
        let s = AssertionSigner::new(SigningKey::from_bytes(&[3; 32]));
        let v = AssertionVerifier::new(&s.jwks(), "keygate-gateway", "api");
        let t = s.mint(&claims());
        assert_eq!(v.verify(&t, NOW + 1).unwrap(), claims());
        assert_eq!(v.verify(&t, NOW + 90), Err(TokenError::Expired));
        let other_route = AssertionVerifier::new(&s.jwks(), "keygate-gateway", "billing");
        assert_eq!(other_route.verify(&t, NOW), Err(TokenError::WrongAudience));
        let other_key = AssertionSigner::new(SigningKey::from_bytes(&[4; 32]));
        let v2 = AssertionVerifier::new(&other_key.jwks(), "keygate-gateway", "api");
        assert_eq!(v2.verify(&t, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn access_tokens_are_not_assertions() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let s = AssertionSigner::new(key.clone());
        let v = AssertionVerifier::new(&s.jwks(), "keygate-gateway", "api");
        let access = crate::token::TokenSigner::new(key).mint(&crate::token::AccessClaims {
            iss: "keygate-gateway".into(),
            sub: "s".into(),
            aud: "api".into(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 30,
            jti: "j".into(),
            sid: "s".into(),
            scope: String::new(),
            client_id: None,
            role: None,
            acct: None,
            acr: None,
            amr: None,
            cnf: None,
        });
        assert_eq!(v.verify(&access, NOW), Err(TokenError::WrongType));
    }
}
