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
mod tests {
    use super::*;

    const NOW: UnixTime = 1_795_430_809;
    const ISS: &str = "http://127.0.0.1:8080";

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "bbaareitest".into(),
            aud: "kgk_app".into(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 3600,
            jti: "j1".into(),
            sid: "s1".into(),
            scope: "read write".into(),
            client_id: Some("cli".into()),
            role: None,
            acct: Some("acct_x".into()),
            acr: Some("aal1".into()),
            amr: Some(vec!["swk".into()]),
        }
    }

    fn signer(seed: u8) -> TokenSigner {
        TokenSigner::new(SigningKey::from_bytes(&[seed; 32]))
    }

    fn verifier(signers: &[&TokenSigner]) -> TokenVerifier {
        let jwks = Jwks {
            keys: signers.iter().map(|s| s.jwk().clone()).collect(),
        };
        TokenVerifier::new(&jwks, ISS)
    }

    #[test]
    fn header_is_pinned() {
        let s = signer(1);
        let t = s.mint(&claims());
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(h.alg, Algorithm::EdDSA);
        assert_eq!(h.typ.as_deref(), Some("at+jwt"));
        assert_eq!(h.kid.as_deref(), Some(s.kid()));
        assert_eq!(s.kid().len(), 43);
    }

    #[test]
    fn borrowed_claims_serialize_alike() {
        let mut c = claims();
        for _ in 0..2 {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                serde_json::to_string(&AccessClaimsRef::from(&c)).unwrap()
            );
            let s = signer(1);
            assert_eq!(s.mint(&c), s.mint(&AccessClaimsRef::from(&c)));
            c.client_id = None;
            c.role = Some("reader".into());
        }
    }

    #[test]
    fn mint_then_verify() {
        let s = signer(1);
        let v = verifier(&[&s]);
        let t = s.mint(&claims());
        assert_eq!(v.verify(&t, NOW).unwrap(), claims());
        let v2 = v.clone().with_audiences(vec!["kgk_app".into()]);
        assert!(v2.verify(&t, NOW).is_ok());
    }

    #[test]
    fn pending_tokens_are_refused_but_by_the_mfa_step() {
        let s = signer(1);
        let v = verifier(&[&s]);
        let t = s.mint_pending(&claims());
        assert_eq!(v.verify(&t, NOW), Err(TokenError::MfaPending));
        assert_eq!(v.verify_any(&t, NOW), Ok((claims(), true)));
        assert_eq!(v.verify_any(&s.mint(&claims()), NOW), Ok((claims(), false)));
        // A stock RFC 9068 verifier that requires `typ` at+jwt refuses it too.
        let h = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(h.typ.as_deref(), Some(PENDING_TOKEN_TYPE));
    }

    #[test]
    fn time_and_audience_checks() {
        let s = signer(1);
        let v = verifier(&[&s]);
        let t = s.mint(&claims());
        assert!(v.verify(&t, NOW + 3600 + 59).is_ok());
        assert_eq!(v.verify(&t, NOW + 3600 + 60), Err(TokenError::Expired));
        assert!(v.verify(&t, NOW - 60).is_ok());
        assert_eq!(v.verify(&t, NOW - 61), Err(TokenError::NotYetValid));
        let strict = v.clone().with_leeway(0);
        assert_eq!(strict.verify(&t, NOW + 3600), Err(TokenError::Expired));
        assert_eq!(
            v.clone().with_leeway(3600).verify(&t, NOW + 3600 + 60),
            Err(TokenError::Expired)
        );
        let other = v.clone().with_audiences(vec!["kgk_other".into()]);
        assert_eq!(other.verify(&t, NOW), Err(TokenError::WrongAudience));
        let wrong_iss = TokenVerifier::new(
            &Jwks {
                keys: vec![s.jwk().clone()],
            },
            "http://evil",
        );
        assert_eq!(wrong_iss.verify(&t, NOW), Err(TokenError::WrongIssuer));
    }

    #[test]
    fn future_iat_and_overlong_lifetimes_are_refused() {
        let s = signer(1);
        let v = verifier(&[&s]);
        let with = |f: &dyn Fn(&mut AccessClaims)| {
            let mut c = claims();
            f(&mut c);
            s.mint(&c)
        };
        // iat an hour ahead with nbf now: refused, like a future nbf.
        let ahead = with(&|c| c.iat = NOW + 3600);
        assert_eq!(v.verify(&ahead, NOW), Err(TokenError::NotYetValid));
        // Within the leeway it passes (clocks differ a little).
        assert!(v.verify(&with(&|c| c.iat = NOW + 60), NOW).is_ok());
        assert_eq!(
            v.verify(&with(&|c| c.iat = NOW + 61), NOW),
            Err(TokenError::NotYetValid)
        );
        // exp = 2^63 - 1, and one second past the longest lifetime.
        assert_eq!(
            v.verify(&with(&|c| c.exp = i64::MAX), NOW),
            Err(TokenError::TooLong)
        );
        assert_eq!(
            v.verify(&with(&|c| c.exp = NOW + MAX_LIFETIME + 1), NOW),
            Err(TokenError::TooLong)
        );
        assert!(
            v.verify(&with(&|c| c.exp = NOW + MAX_LIFETIME), NOW)
                .is_ok()
        );
        // A very old iat with a far exp is no way round it.
        assert_eq!(
            v.verify(&with(&|c| c.iat = i64::MIN), NOW),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn the_issuer_allows_no_leeway_at_exp() {
        let s = signer(1);
        let t = s.mint(&claims());
        let issuer = verifier(&[&s]).at_issuer();
        assert!(issuer.verify(&t, NOW + 3599).is_ok());
        assert_eq!(issuer.verify(&t, NOW + 3600), Err(TokenError::Expired));
        // nbf keeps its leeway (nodes of one Hub).
        assert!(issuer.verify(&t, NOW - 60).is_ok());
        // An offline verifier keeps the leeway.
        assert!(verifier(&[&s]).verify(&t, NOW + 3600).is_ok());
    }

    #[test]
    fn empty_scope_is_left_out_and_client_id_kept() {
        let mut c = claims();
        c.scope = String::new();
        let json = serde_json::to_value(AccessClaimsRef::from(&c)).unwrap();
        assert!(json.get("scope").is_none(), "{json}");
        assert_eq!(json["client_id"], "cli");
        // And it reads back as an empty scope.
        let s = signer(1);
        assert_eq!(verifier(&[&s]).verify(&s.mint(&c), NOW).unwrap(), c);
    }

    #[test]
    fn key_rotation_and_unknown_keys() {
        let old = signer(1);
        let new = signer(2);
        let both = verifier(&[&old, &new]);
        assert!(both.verify(&old.mint(&claims()), NOW).is_ok());
        assert!(both.verify(&new.mint(&claims()), NOW).is_ok());
        let only_new = verifier(&[&new]);
        assert_eq!(
            only_new.verify(&old.mint(&claims()), NOW),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn forgeries_are_refused() {
        let s = signer(1);
        let v = verifier(&[&s]);
        let t = s.mint(&claims());
        let parts: Vec<&str> = t.split('.').collect();
        let b64 = |j: &str| URL_SAFE_NO_PAD.encode(j);
        // Payload swapped under the original signature.
        let mut c = claims();
        c.sub = "bbaareiattacker".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_string(&c).unwrap()),
            parts[2]
        );
        assert_eq!(v.verify(&forged, NOW), Err(TokenError::BadSignature));
        // alg none / HS256 confusion, wrong typ, missing kid.
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"at+jwt"}"#), parts[1]);
        assert!(v.verify(&none, NOW).is_err());
        let hs = format!(
            "{}.{}.{}",
            b64(&format!(
                r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}"}}"#,
                s.kid()
            )),
            parts[1],
            parts[2]
        );
        assert_eq!(v.verify(&hs, NOW), Err(TokenError::UnsupportedAlgorithm));
        let jwt = format!(
            "{}.{}.{}",
            b64(&format!(
                r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#,
                s.kid()
            )),
            parts[1],
            parts[2]
        );
        assert_eq!(v.verify(&jwt, NOW), Err(TokenError::WrongType));
        let nokid = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"EdDSA","typ":"at+jwt"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(v.verify(&nokid, NOW), Err(TokenError::UnknownKey));
        let pathkid = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"../../etc/passwd"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(v.verify(&pathkid, NOW), Err(TokenError::UnknownKey));
        for junk in ["", "a.b", "a.b.c.d", "....", &"a".repeat(10_000)] {
            assert!(v.verify(junk, NOW).is_err(), "{junk}");
        }
    }

    #[test]
    fn stock_library_verifies_from_jwks_alone() {
        // What a service in another language does: fetch the JWKS JSON, build a key
        // from it, verify with a stock library.
        let s = signer(3);
        let t = s.mint(&claims());
        let jwks_json = serde_json::to_string(&Jwks {
            keys: vec![s.jwk().clone()],
        })
        .unwrap();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks_json).unwrap();
        let jwk = set.find(s.kid()).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISS]);
        validation.set_audience(&["kgk_app"]);
        validation.validate_exp = false; // fixed clock in this test
        let data = jsonwebtoken::decode::<serde_json::Value>(&t, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "bbaareitest");
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    }
}
