//! Access tokens: `TokenVerifier::verify` with a fixed JWKS on arbitrary text, the
//! same text re-signed with the JWKS's key (so the fuzzer gets past the signature
//! and reaches the header, claims and time checks), `decode_unverified`, the
//! `Authorization` header parser `http::bearer`, and `TokenVerifier::new` on an
//! arbitrary JWKS document.
//!
//! Asserts: no panic; a token that verifies with a signature the fuzzer supplied
//! has its three segments in canonical base64url (no second spelling of a minted
//! token verifies); a token that verifies has the claims that
//! `decode_unverified` shows, and whose issuer and times pass the checks; a token
//! that verifies under a pinned audience also verifies without one.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use http::{HeaderMap, HeaderValue, header};
use keygate::token::{AccessClaims, Jwks, MAX_LEEWAY, TokenVerifier};
use keygate_fuzz::{APP, ISSUER, NOW, token_signer, token_verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    check(input, true);

    // The same header and payload, signed by the key the verifier trusts.
    if let Some((signing_input, _)) = input.rsplit_once('.') {
        let sig = token_signer().signing_key().sign(signing_input.as_bytes());
        let resigned = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        check(&resigned, false);
    }

    for scheme in ["Bearer ", "token ", ""] {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("{scheme}{input}")) {
            headers.insert(header::AUTHORIZATION, v);
        }
        if let Some(t) = keygate::http::bearer(&headers) {
            assert!(!t.is_empty() && t.trim() == t, "{t:?}");
            check(t, true);
        }
    }

    if let Ok(jwks) = serde_json::from_str::<Jwks>(input) {
        let v = TokenVerifier::new(&jwks, ISSUER);
        let _ = v.verify(&token_signer().mint(&sample_claims()), NOW);
    }
});

/// `raw`: the token's signature is the fuzzer's, not one made here, so only a token
/// keygate minted (the seeds) can verify, and any other spelling of it must not.
fn check(token: &str, raw: bool) {
    let verifier = token_verifier();
    let shown = keygate::token::decode_unverified(token);
    let pinned = verifier
        .clone()
        .with_audiences(vec![APP.to_owned()])
        .verify(token, NOW);
    match verifier.verify(token, NOW) {
        Ok(claims) => {
            assert_eq!(claims.iss, ISSUER);
            assert!(NOW < claims.exp.saturating_add(MAX_LEEWAY));
            assert!(NOW.saturating_add(MAX_LEEWAY) >= claims.nbf);
            let segments: Vec<&str> = token.split('.').collect();
            assert_eq!(segments.len(), 3);
            let payload_is_text = URL_SAFE_NO_PAD
                .decode(segments[1])
                .is_ok_and(|b| std::str::from_utf8(&b).is_ok());
            // Found by this target once (tests/protocol/regressions.rs).
            assert!(payload_is_text, "verified a token whose payload is not UTF-8");
            for seg in segments.iter().filter(|_| raw) {
                let bytes = URL_SAFE_NO_PAD
                    .decode(seg)
                    .expect("a verified token is base64url without padding");
                assert_eq!(
                    &URL_SAFE_NO_PAD.encode(bytes),
                    seg,
                    "a verified token has one spelling"
                );
            }
            let shown = shown.expect("decode_unverified shows a verified token");
            let back: AccessClaims =
                serde_json::from_value(shown).expect("shown claims are the claims");
            assert_eq!(back, claims);
            match pinned {
                Ok(p) => assert_eq!(p, claims),
                Err(e) => assert_ne!(claims.aud, APP, "{e:?}"),
            }
        }
        Err(e) => {
            assert!(pinned.is_err(), "pinning the audience may only refuse more");
            assert!(!e.code().is_empty());
        }
    }
}

fn sample_claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        sub: keygate_fuzz::user_identity().to_string(),
        aud: APP.into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 3600,
        jti: "jti-1".into(),
        sid: "sid-1".into(),
        scope: "read".into(),
        client_id: None,
        role: None,
        acct: None,
        acr: None,
        amr: None,
        cnf: None,
    }
}
