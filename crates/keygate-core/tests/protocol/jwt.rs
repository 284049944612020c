//! Tokens keygate mints, checked by the stock `jsonwebtoken` crate from the JWKS JSON
//! alone, as a service in another language would: the good token verifies, and
//! every tampered or algorithm-confused variant is refused by the stock library and
//! by keygate's own `TokenVerifier` alike.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keygate_core::identity::Identity;
use keygate_core::token::{AccessClaims, Jwks, TokenError, TokenSigner, TokenVerifier};

use crate::{APP, NOW, user_key};

const ISSUER: &str = "http://127.0.0.1:8080";

struct Fixture {
    signer: TokenSigner,
    /// The JWKS document as served at `/.well-known/jwks.json`.
    jwks_json: String,
    token: String,
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        sub: Identity::from(&user_key()).to_string(),
        aud: APP.into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 3600,
        jti: "jti-1".into(),
        sid: "sid-1".into(),
        scope: "read write".into(),
        client_id: Some("cli".into()),
        role: None,
        acct: None,
        acr: None,
        amr: None,
        cnf: None,
    }
}

fn fixture() -> Fixture {
    let signer = TokenSigner::new(SigningKey::from_bytes(&[3; 32]));
    let jwks_json = serde_json::to_string(&Jwks {
        keys: vec![signer.jwk().clone()],
    })
    .expect("JWKS serializes");
    let token = signer.mint(&claims());
    Fixture {
        signer,
        jwks_json,
        token,
    }
}

impl Fixture {
    /// The key a stock verifier builds from the JWKS JSON and the token's `kid`.
    fn stock_key(&self) -> DecodingKey {
        let set: JwkSet = serde_json::from_str(&self.jwks_json).expect("a JwkSet");
        let header = jsonwebtoken::decode_header(&self.token).expect("header");
        let jwk = set
            .find(header.kid.as_deref().expect("kid"))
            .expect("kid in set");
        DecodingKey::from_jwk(jwk).expect("an Ed25519 JWK")
    }

    fn keygate_verifier(&self) -> TokenVerifier {
        let jwks: Jwks = serde_json::from_str(&self.jwks_json).expect("Jwks");
        TokenVerifier::new(&jwks, ISSUER).with_audiences(vec![APP.into()])
    }
}

/// What a careful service configures: EdDSA only, issuer and audience pinned. The
/// clock checks are done by hand against the fixed time.
fn stock_validation() -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[APP]);
    v.validate_exp = false;
    v.validate_nbf = false;
    v
}

fn stock_decode(token: &str, key: &DecodingKey, v: &Validation) -> Result<AccessClaims, ErrorKind> {
    jsonwebtoken::decode::<AccessClaims>(token, key, v)
        .map(|d| d.claims)
        .map_err(|e| e.into_kind())
}

fn with_signature(token: &str, sig: &[u8]) -> String {
    let (signed, _) = token.rsplit_once('.').expect("three parts");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[test]
fn stock_library_accepts_the_untampered_token() {
    let f = fixture();
    let got = stock_decode(&f.token, &f.stock_key(), &stock_validation()).expect("verifies");
    assert_eq!(got, claims());
    assert!(got.nbf <= NOW && NOW < got.exp);
    assert_eq!(f.keygate_verifier().verify(&f.token, NOW), Ok(claims()));
}

/// Every byte of the 64-byte signature, replaced by each of its 255 other values.
#[test]
fn stock_library_rejects_any_changed_signature_byte() {
    let f = fixture();
    let key = f.stock_key();
    let validation = stock_validation();
    let verifier = f.keygate_verifier();
    let sig = URL_SAFE_NO_PAD
        .decode(f.token.rsplit('.').next().expect("signature part"))
        .expect("base64url");
    assert_eq!(sig.len(), 64);
    let mut refused = 0;
    for i in 0..64 {
        for v in 0..=255u8 {
            if v == sig[i] {
                continue;
            }
            let mut bad = sig.clone();
            bad[i] = v;
            let token = with_signature(&f.token, &bad);
            assert_eq!(
                stock_decode(&token, &key, &validation),
                Err(ErrorKind::InvalidSignature),
                "byte {i} = {v:#04x}"
            );
            // keygate's verifier shares the backend; spot-check it on a subset.
            if v % 17 == 0 {
                assert_eq!(verifier.verify(&token, NOW), Err(TokenError::BadSignature));
            }
            refused += 1;
        }
    }
    assert_eq!(refused, 64 * 255);
}

/// Every character of the signature's base64url text, replaced by each of the other
/// 63 characters of the alphabet. Those in the last character that differ only in
/// its four zero padding bits would decode to the same 64 bytes under a lenient
/// decoder; the stock library refuses them as bad base64.
#[test]
fn stock_library_rejects_any_changed_signature_character() {
    let f = fixture();
    let key = f.stock_key();
    let validation = stock_validation();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (signed, sig) = f.token.rsplit_once('.').expect("three parts");
    assert_eq!(sig.len(), 86);
    let (mut bad_signature, mut bad_base64) = (0, 0);
    for i in 0..sig.len() {
        for &c in alphabet {
            if c == sig.as_bytes()[i] {
                continue;
            }
            let mut edited = sig.as_bytes().to_vec();
            edited[i] = c;
            let token = format!("{signed}.{}", String::from_utf8(edited).expect("ASCII"));
            match stock_decode(&token, &key, &validation) {
                Err(ErrorKind::InvalidSignature) => bad_signature += 1,
                Err(ErrorKind::Base64(_)) => bad_base64 += 1,
                other => panic!("char {i} = {}: {other:?}", c as char),
            }
        }
    }
    // 85 full characters x 63, plus the 3 other values of the last character's two
    // data bits; the remaining 60 spellings of the last character are not canonical.
    assert_eq!((bad_signature, bad_base64), (85 * 63 + 3, 60));
}

#[test]
fn stock_library_rejects_the_token_under_hs256_validation() {
    let f = fixture();
    // The JWK-built key is an EdDSA key: asking for HS256 is refused outright.
    let mut hs = Validation::new(Algorithm::HS256);
    hs.set_issuer(&[ISSUER]);
    hs.set_audience(&[APP]);
    hs.validate_exp = false;
    assert_eq!(
        stock_decode(&f.token, &f.stock_key(), &hs),
        Err(ErrorKind::InvalidAlgorithm)
    );
    // A verifier that (wrongly) treats the public key as an HMAC secret still refuses
    // the EdDSA token, since the header's alg is not in its list.
    let x = &f.signer.jwk().x;
    for secret in [
        x.as_bytes(),
        f.signer.signing_key().verifying_key().as_bytes(),
    ] {
        assert_eq!(
            stock_decode(&f.token, &DecodingKey::from_secret(secret), &hs),
            Err(ErrorKind::InvalidAlgorithm)
        );
    }
}

/// The classic algorithm confusion: an attacker HMACs forged claims with the public
/// key as the secret and labels the token HS256.
#[test]
fn hs256_forgery_with_the_public_key_is_refused() {
    let f = fixture();
    let mut forged_claims = claims();
    forged_claims.sub = "bbaareiattacker".into();
    forged_claims.scope = "admin".into();
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(f.signer.kid().to_owned());
    let x = f.signer.jwk().x.clone();
    let raw = *f.signer.signing_key().verifying_key().as_bytes();
    for secret in [x.as_bytes(), &raw[..]] {
        let forged =
            jsonwebtoken::encode(&header, &forged_claims, &EncodingKey::from_secret(secret))
                .expect("HS256 encodes");
        assert_eq!(
            stock_decode(&forged, &f.stock_key(), &stock_validation()),
            Err(ErrorKind::InvalidAlgorithm)
        );
        assert_eq!(
            f.keygate_verifier().verify(&forged, NOW),
            Err(TokenError::UnsupportedAlgorithm)
        );
    }
}

/// `alg: none` in its usual spellings, with the signature stripped or kept.
#[test]
fn alg_none_is_refused() {
    let f = fixture();
    let mut parts = f.token.split('.');
    let (_, payload, sig) = (
        parts.next(),
        parts.next().expect("payload"),
        parts.next().expect("sig"),
    );
    let mut checked = 0;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#,
            f.signer.kid()
        ));
        for tail in ["", sig] {
            let token = format!("{header}.{payload}.{tail}");
            let stock = stock_decode(&token, &f.stock_key(), &stock_validation());
            assert!(stock.is_err(), "{alg}: {stock:?}");
            assert!(
                jsonwebtoken::decode_header(&token).is_err(),
                "{alg}: not an algorithm"
            );
            assert_eq!(
                f.keygate_verifier().verify(&token, NOW),
                Err(TokenError::Malformed)
            );
            checked += 1;
        }
    }
    // The real header with the signature stripped is no better.
    let (signed, _) = f.token.rsplit_once('.').expect("three parts");
    let stripped = format!("{signed}.");
    assert!(stock_decode(&stripped, &f.stock_key(), &stock_validation()).is_err());
    assert!(f.keygate_verifier().verify(&stripped, NOW).is_err());
    assert_eq!(checked, 8);
}
