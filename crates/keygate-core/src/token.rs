//! Access tokens: EdDSA JWTs (RFC 8037) with `typ` `at+jwt` (RFC 9068).
//!
//! Minting is done here by hand because it sits on the sign-in hot path: the header
//! is encoded once per key and the signing key keeps its expanded form, so a mint is
//! one serde_json call, one base64 pass and one Ed25519 signature. Verification goes
//! through the stock `jsonwebtoken` crate with the algorithm pinned to EdDSA, and a
//! test checks that what we mint verifies there from the JWKS alone.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::UnixTime;

/// The most clock leeway a verifier may allow for `exp`, `nbf` and `iat`.
pub const MAX_LEEWAY: i64 = 60;
/// The longest lifetime (`exp` − `iat`) of any token keygate mints: no app may
/// grant more, so a verifier refuses a token that claims more.
pub const MAX_LIFETIME: i64 = 24 * 3600;
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
pub const TOKEN_TYPE: &str = "at+jwt";
/// The `typ` of a token whose session still waits for its second factor: not an
/// access token, so every RFC 9068 verifier (which must require `at+jwt`) refuses
/// it, stock libraries in other languages included. Only the Hub's MFA step takes it.
pub const PENDING_TOKEN_TYPE: &str = "mfa-pending+jwt";

/// The claims of a keygate access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// Canonical identity (or, for brokered tokens, a namespaced endpoint id).
    pub sub: String,
    /// The app: its API key id.
    pub aud: String,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: String,
    pub sid: String,
    /// Space-separated scopes; left out of the token when empty (RFC 9068 §2.2.3).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// RFC 9068 §2.2 requires it: keygate always sets it (the client name given
    /// at sign-in, else the app's API key id). Optional here to read old tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Brokered tokens: the role the app vouched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The account the key (`sub`) belongs to (docs/accounts.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acct: Option<String>,
    /// Authentication assurance level: `aal1` (one key) or `aal2` (a second factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// Authentication methods (RFC 8176): `swk`, then `otp` or a second `swk`, `mfa`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// Key binding (RFC 9449 §6, RFC 7800): the token is good only with DPoP
    /// proofs by the key whose thumbprint is `cnf.jkt` (docs/dpop.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// `cnf` of a key-bound token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the key (base64url SHA-256).
    pub jkt: String,
}

/// [`Confirmation`] borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConfirmationRef<'a> {
    pub jkt: &'a str,
}

/// [`AccessClaims`] borrowed, for minting without copying every string: the same
/// fields in the same order, so the same JSON (a test holds them together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AccessClaimsRef<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub aud: &'a str,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: &'a str,
    pub sid: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acct: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amr: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<ConfirmationRef<'a>>,
}

impl<'a> From<&'a AccessClaims> for AccessClaimsRef<'a> {
    fn from(c: &'a AccessClaims) -> Self {
        AccessClaimsRef {
            iss: &c.iss,
            sub: &c.sub,
            aud: &c.aud,
            iat: c.iat,
            nbf: c.nbf,
            exp: c.exp,
            jti: &c.jti,
            sid: &c.sid,
            scope: &c.scope,
            client_id: c.client_id.as_deref(),
            role: c.role.as_deref(),
            acct: c.acct.as_deref(),
            acr: c.acr.as_deref(),
            amr: c.amr.as_deref(),
            cnf: c.cnf.as_ref().map(|c| ConfirmationRef { jkt: &c.jkt }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm must be EdDSA")]
    UnsupportedAlgorithm,
    #[error("token type must be at+jwt")]
    WrongType,
    #[error("token was signed by an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lifetime is longer than any keygate token's")]
    TooLong,
    /// A well-signed token of a session that still waits for its second factor.
    #[error("this sign-in needs a second factor before its token can be used")]
    MfaPending,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::MfaPending => "mfa_required",
            _ => "invalid_token",
        }
    }
}

/// One public key in a JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    pub fn ed25519(public: &[u8; 32]) -> Self {
        let x = URL_SAFE_NO_PAD.encode(public);
        Jwk {
            kid: thumbprint(&x),
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x,
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }
}

/// `GET /.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// RFC 7638 JWK thumbprint of an Ed25519 key: the key id.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A key id is looked up in memory only, but is still held to a tight alphabet.
fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A signing key with its precomputed JWS header.
pub struct TokenSigner {
    key: SigningKey,
    jwk: Jwk,
    header_b64: String,
    pending_header_b64: String,
}

impl TokenSigner {
    pub fn new(key: SigningKey) -> Self {
        let jwk = Jwk::ed25519(key.verifying_key().as_bytes());
        let header = |typ: &str| {
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"EdDSA","typ":"{typ}","kid":"{}"}}"#,
                jwk.kid
            ))
        };
        TokenSigner {
            key,
            header_b64: header(TOKEN_TYPE),
            pending_header_b64: header(PENDING_TOKEN_TYPE),
            jwk,
        }
    }

    pub fn kid(&self) -> &str {
        &self.jwk.kid
    }

    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Mints a compact JWS of `claims` ([`AccessClaims`] or [`AccessClaimsRef`]).
    pub fn mint<C: Serialize>(&self, claims: &C) -> String {
        sign_compact(&self.key, &self.header_b64, claims)
    }

    /// Mints a token of a session waiting for its second factor (`typ`
    /// [`PENDING_TOKEN_TYPE`]): refused by every verifier but the Hub's MFA step.
    pub fn mint_pending<C: Serialize>(&self, claims: &C) -> String {
        sign_compact(&self.key, &self.pending_header_b64, claims)
    }
}

/// A compact JWS: `header_b64` (already encoded) `.` claims `.` Ed25519 signature.
pub fn sign_compact<C: Serialize>(key: &SigningKey, header_b64: &str, claims: &C) -> String {
    // Serializing a struct of strings and integers cannot fail.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut out = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 92);
    out.push_str(header_b64);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
    let sig = key.sign(out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut out);
    out
}

/// Verifies access tokens offline against a set of public keys.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    issuer: String,
    audiences: Option<Vec<String>>,
    leeway: i64,
    /// Leeway for `exp` alone: the issuer itself allows none.
    exp_leeway: i64,
}

impl TokenVerifier {
    /// A verifier for tokens of `issuer` signed by any key in `jwks`. Keys that are
    /// not Ed25519/EdDSA signing keys are ignored.
    pub fn new(jwks: &Jwks, issuer: impl Into<String>) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter(|k| {
                k.kty == "OKP"
                    && k.crv == "Ed25519"
                    && k.alg == "EdDSA"
                    && k.use_ == "sig"
                    && valid_kid(&k.kid)
            })
            .filter_map(|k| Some((k.kid.clone(), DecodingKey::from_ed_components(&k.x).ok()?)))
            .collect();
        TokenVerifier {
            keys,
            issuer: issuer.into(),
            audiences: None,
            leeway: MAX_LEEWAY,
            exp_leeway: MAX_LEEWAY,
        }
    }

    /// Accept only tokens whose `aud` is one of these (by default any audience).
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = Some(audiences);
        self
    }

    /// Clock leeway for `exp`/`nbf`, capped at [`MAX_LEEWAY`].
    pub fn with_leeway(mut self, leeway: i64) -> Self {
        self.leeway = leeway.clamp(0, MAX_LEEWAY);
        self.exp_leeway = self.leeway;
        self
    }

    /// The issuer's own verifier: a token is dead at its `exp`, no leeway (the
    /// leeway is for offline verifiers whose clocks may differ from the Hub's).
    /// `nbf` and `iat` keep theirs, for nodes of one Hub whose clocks differ.
    pub fn at_issuer(mut self) -> Self {
        self.exp_leeway = 0;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies an access token. A token of a session still waiting for its second
    /// factor is refused with [`TokenError::MfaPending`].
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<AccessClaims, TokenError> {
        match self.verify_any(token, now)? {
            (c, false) => Ok(c),
            (_, true) => Err(TokenError::MfaPending),
        }
    }

    /// Verifies an access token or an MFA-pending one; says which (true: pending).
    /// Only the Hub's MFA step may accept a pending token.
    pub fn verify_any(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<(AccessClaims, bool), TokenError> {
        if token.len() > MAX_TOKEN_LEN || token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let pending = match header.typ.as_deref() {
            Some(t) if t.eq_ignore_ascii_case(TOKEN_TYPE) => false,
            Some(t) if t.eq_ignore_ascii_case("application/at+jwt") => false,
            Some(t) if t == PENDING_TOKEN_TYPE => true,
            _ => return Err(TokenError::WrongType),
        };
        if header.crit.is_some() || header.jku.is_some() || header.jwk.is_some() {
            return Err(TokenError::Malformed);
        }
        let key = header
            .kid
            .as_deref()
            .filter(|k| valid_kid(k))
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        // A JWT's claims are JSON, and JSON is UTF-8 (RFC 7519 §7.2, RFC 8259 §8.1).
        // `jsonwebtoken` reads them with `serde_json::from_slice`, which does not
        // check UTF-8 inside values it skips (an unknown claim): found by fuzzing.
        let payload = token.split('.').nth(1).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        if std::str::from_utf8(&payload).is_err() {
            return Err(TokenError::Malformed);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            }
        })?;
        let c = data.claims;
        if c.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if let Some(auds) = &self.audiences
            && !auds.contains(&c.aud)
        {
            return Err(TokenError::WrongAudience);
        }
        if now >= c.exp.saturating_add(self.exp_leeway) {
            return Err(TokenError::Expired);
        }
        if now.saturating_add(self.leeway) < c.nbf || now.saturating_add(self.leeway) < c.iat {
            return Err(TokenError::NotYetValid);
        }
        if c.exp.saturating_sub(c.iat) > MAX_LIFETIME {
            return Err(TokenError::TooLong);
        }
        Ok((c, pending))
    }
}

/// Reads the claims of a token without verifying it: for display only.
pub fn decode_unverified(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests;
