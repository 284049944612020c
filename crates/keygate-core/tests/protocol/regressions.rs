//! Inputs the coverage-guided fuzzers (`fuzz/`, docs/fuzzing.md) found, each kept as
//! a test of the behaviour that is right.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use keygate_core::identity::Identity;
use keygate_core::token::{self, TokenError, TokenSigner, TokenVerifier};

use crate::{APP, NOW, user_key};

const ISSUER: &str = "http://127.0.0.1:8080";

/// A compact JWS of `header` and `payload` (raw bytes), signed with `key`: what
/// only the holder of the signing key can make.
fn signed(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

fn fixture() -> (SigningKey, TokenVerifier, Vec<u8>, String) {
    let key = SigningKey::from_bytes(&[3; 32]);
    let signer = TokenSigner::new(key.clone());
    let jwks = keygate_core::token::Jwks {
        keys: vec![signer.jwk().clone()],
    };
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
        signer.kid()
    );
    let claims = format!(
        r#"{{"iss":"{ISSUER}","sub":"{}","aud":"{APP}","iat":{NOW},"nbf":{NOW},"exp":{},"jti":"j","sid":"s","scope":"read""#,
        Identity::from(&user_key()),
        NOW + 3600
    );
    (
        key,
        TokenVerifier::new(&jwks, ISSUER),
        header.into_bytes(),
        claims,
    )
}

/// Found by `fuzz token` (re-signed mode): a payload that is not UTF-8, hence not
/// JSON (RFC 7519 §7.2 step 10, RFC 8259 §8.1), verifies when the bad bytes sit in
/// a string of an unknown claim. `jsonwebtoken` reads the claims with
/// `serde_json::from_slice`, which does not check UTF-8 in values it skips. Only
/// the key holder can make such a token, so this is strictness, not forgery: but
/// keygate verifies what other JWT libraries refuse, and `decode_unverified` (what
/// `keygate token verify` shows) returns `None` for a token that verified.
#[test]
fn token_with_non_utf8_payload_is_refused() {
    let (key, verifier, header, claims) = fixture();
    let mut payload = claims.into_bytes();
    payload.extend_from_slice(b",\"client])d\":\"cl\xd7]u\xd7]\"}");
    let token = signed(&key, &header, &payload);
    assert_eq!(token::decode_unverified(&token), None);
    assert_eq!(verifier.verify(&token, NOW), Err(TokenError::Malformed));
}

/// The same bytes in the JWS header are refused already (the header is read as
/// text); this keeps it so.
#[test]
fn token_with_non_utf8_header_is_refused() {
    let (key, verifier, header, claims) = fixture();
    let mut header = header;
    header.pop(); // the closing brace
    header.extend_from_slice(b",\"x\":\"\xff\"}");
    let token = signed(&key, &header, format!("{claims}}}").as_bytes());
    assert_eq!(verifier.verify(&token, NOW), Err(TokenError::Malformed));
}

/// The control: the same token with UTF-8 in place of the bad bytes verifies, so
/// the tests above turn on the encoding alone.
#[test]
fn token_with_an_unknown_utf8_claim_verifies() {
    let (key, verifier, header, claims) = fixture();
    let payload = format!("{claims},\"client])d\":\"cl\u{d7}]u\"}}");
    let token = signed(&key, &header, payload.as_bytes());
    let c = verifier.verify(&token, NOW).expect("verifies");
    assert_eq!(c.aud, APP);
    assert!(token::decode_unverified(&token).is_some());
}
