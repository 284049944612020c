//! Every parser on random input: no panic, and only the typed, documented errors.
//!
//! Random strings alone rarely get past the first check, so each parser is also fed
//! inputs shaped like what it expects (the right alphabet, the right prefix) and
//! single-character edits of real values, which reach the deeper branches.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use curve25519_dalek::constants::EIGHT_TORSION;
use ed25519_dalek::SigningKey;
use keygate_core::apikey::{self, ApiSecret};
use keygate_core::challenge::{self, ChallengeError};
use keygate_core::identity::{Identity, IdentityError};
use keygate_core::time::{format_rfc3339, parse_rfc3339};
use keygate_core::token::{self, AccessClaims, Jwks, TokenSigner, TokenVerifier};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::{APP, AUDIENCE, NOW, nonce_key, proptest_config, signed_challenge, user_key};

/// The `reason()` names of `IdentityError`: a stable, documented set.
const IDENTITY_REASONS: [&str; 18] = [
    "empty",
    "too_long",
    "private_key",
    "unsupported_key_type",
    "wrong_length",
    "trailing_bytes",
    "unknown_field",
    "duplicate_field",
    "missing_field",
    "malformed",
    "non_canonical_encoding",
    "unsupported_base",
    "bad_characters",
    "peer_id_without_key",
    "invalid_point",
    "non_canonical_point",
    "small_order",
    "mixed_order",
];

const ISSUER: &str = "http://127.0.0.1:8080";

/// Key material an attacker might wrap: random 32 or 64 bytes, a small-order point,
/// an honest key, or a few stray bytes.
fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 32),
        vec(any::<u8>(), 64),
        (0..8usize).prop_map(|i| EIGHT_TORSION[i].compress().to_bytes().to_vec()),
        any::<[u8; 32]>().prop_map(|seed| SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes()
            .to_vec()),
        vec(any::<u8>(), 0..4),
    ]
}

/// libp2p key protobufs assembled from plausible and implausible fields.
fn key_protobuf() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just(vec![0x08, 0x01]),
        (0..0x80u8).prop_map(|t| vec![0x08, t]),
        key_bytes().prop_map(|k| [&[0x12, k.len() as u8][..], &k].concat()),
        Just(vec![0x18, 0x01]),
        vec(any::<u8>(), 0..3),
    ];
    vec(field, 0..4).prop_map(|fields| fields.concat())
}

/// Identity strings in each accepted form around those bytes.
fn wrapped_identity() -> impl Strategy<Value = String> {
    let base58 = |b: &[u8]| multibase::Base::Base58Btc.encode(b);
    prop_oneof![
        key_protobuf().prop_map(|p| multibase::encode(multibase::Base::Base32Lower, p)),
        key_protobuf().prop_map(move |p| base58(&[&[0x00, p.len() as u8][..], &p].concat())),
        (
            key_bytes(),
            prop_oneof![Just([0xed, 0x01]), Just([0x80, 0x26]), any::<[u8; 2]>()]
        )
            .prop_map(|(k, codec)| format!(
                "did:key:{}",
                multibase::encode(multibase::Base::Base58Btc, [&codec[..], &k].concat())
            )),
    ]
}

/// Any string: arbitrary Unicode, or arbitrary bytes made valid UTF-8.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(any::<u8>(), 0..400).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// Replaces the character at `at` (a char index, wrapped) with `with`, or inserts or
/// deletes there: one edit of a real value.
fn edit(s: &str, at: prop::sample::Index, with: char, kind: u8) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let i = at.index(chars.len() + 1);
    match kind % 3 {
        0 if i < chars.len() => chars[i] = with,
        1 if i < chars.len() => {
            chars.remove(i);
        }
        _ => chars.insert(i, with),
    }
    chars.into_iter().collect()
}

fn check_identity_result(
    input: &str,
    got: Result<Identity, IdentityError>,
) -> Result<(), TestCaseError> {
    match got {
        Ok(id) => {
            let canonical = id.to_string();
            prop_assert!(canonical.starts_with("bbaarei"));
            prop_assert_eq!(Identity::parse(&canonical), Ok(id));
            // The canonical slot takes exactly one spelling per key.
            if input.starts_with('b') {
                prop_assert_eq!(input, canonical.as_str());
            }
        }
        Err(e) => {
            prop_assert!(IDENTITY_REASONS.contains(&e.reason()), "{}", e.reason());
            prop_assert_eq!(IdentityError::CODE, "invalid_identity");
            // Nothing the user sent is echoed back.
            if input.len() >= 16 {
                prop_assert!(!e.to_string().contains(input));
            }
        }
    }
    Ok(())
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
        scope: "read".into(),
        client_id: None,
        role: None,
        acct: None,
        acr: None,
        amr: None,
        cnf: None,
    }
}

fn token_fixture() -> (TokenSigner, TokenVerifier, String) {
    let signer = TokenSigner::new(SigningKey::from_bytes(&[3; 32]));
    let jwks = Jwks {
        keys: vec![signer.jwk().clone()],
    };
    let verifier = TokenVerifier::new(&jwks, ISSUER);
    let token = signer.mint(&claims());
    (signer, verifier, token)
}

/// JOSE headers an attacker might try, base64url-encoded.
fn header_strategy(kid: String) -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        Just("EdDSA".to_owned()),
        Just("none".to_owned()),
        Just("HS256".to_owned()),
        Just("ES256".to_owned()),
        "[A-Za-z0-9]{0,8}",
    ];
    let typ = prop_oneof![
        Just(Some("at+jwt".to_owned())),
        Just(Some("JWT".to_owned())),
        Just(None),
        "[ -~]{0,12}".prop_map(Some),
    ];
    let kid = prop_oneof![Just(Some(kid)), Just(None), "[ -~]{0,70}".prop_map(Some)];
    (alg, typ, kid, any::<bool>()).prop_map(|(alg, typ, kid, crit)| {
        let mut h = serde_json::json!({ "alg": alg });
        if let Some(t) = typ {
            h["typ"] = t.into();
        }
        if let Some(k) = kid {
            h["kid"] = k.into();
        }
        if crit {
            h["crit"] = serde_json::json!(["exp"]);
        }
        URL_SAFE_NO_PAD.encode(h.to_string())
    })
}

proptest! {
    #![proptest_config(proptest_config(512))]

    #[test]
    fn identity_parse_random_text(input in any_text()) {
        check_identity_result(&input, Identity::parse(&input))?;
    }

    #[test]
    fn identity_parse_shaped_text(
        input in prop_oneof![
            "b[a-z2-7]{0,90}",
            "bbaare[a-z2-7]{0,60}",
            "bbaareq[a-z2-7]{0,110}",
            "B[A-Z2-7]{50,60}",
            "12D3KooW[1-9A-HJ-NP-Za-km-z]{0,50}",
            "Q[1-9A-HJ-NP-Za-km-z]{0,50}",
            "1[1-9A-HJ-NP-Za-km-z]{0,60}",
            "did:key:z[1-9A-HJ-NP-Za-km-z]{0,60}",
            "did:key:z6Mk[1-9A-HJ-NP-Za-km-z]{40,50}",
            "did:key:[ -~]{0,60}",
        ],
    ) {
        check_identity_result(&input, Identity::parse(&input))?;
    }

    #[test]
    fn identity_parse_wrapped_key_material(input in wrapped_identity()) {
        check_identity_result(&input, Identity::parse(&input))?;
    }

    #[test]
    fn identity_parse_edited_real_identities(
        seed in any::<[u8; 32]>(),
        spelling in 0..3usize,
        at in any::<prop::sample::Index>(),
        with in prop_oneof![prop::char::range('0', 'z'), any::<char>()],
        kind in any::<u8>(),
    ) {
        let id = Identity::from(&SigningKey::from_bytes(&seed));
        let real = [id.to_string(), id.peer_id(), id.did_key()][spelling].clone();
        let input = edit(&real, at, with, kind);
        check_identity_result(&input, Identity::parse(&input))?;
    }

    /// Canonical, PeerId and did:key all name the same identity, for any key.
    #[test]
    fn identity_round_trips(seed in any::<[u8; 32]>()) {
        let id = Identity::from(&SigningKey::from_bytes(&seed));
        let canonical = id.to_string();
        prop_assert!(canonical.starts_with("bbaarei"), "{}", canonical);
        prop_assert_eq!(canonical.len(), 59);
        prop_assert_eq!(Identity::parse(&canonical), Ok(id));
        let peer = id.peer_id();
        prop_assert!(peer.starts_with("12D3KooW"), "{}", peer);
        prop_assert_eq!(Identity::parse(&peer), Ok(id));
        let did = id.did_key();
        prop_assert!(did.starts_with("did:key:z6Mk"), "{}", did);
        prop_assert_eq!(Identity::parse(&did), Ok(id));
        prop_assert_eq!(Identity::from_bytes(id.as_bytes()), Ok(id));
    }

    #[test]
    fn challenge_verify_random_input(text in any_text(), sig in any_text()) {
        let id = Identity::from(&user_key());
        let got = challenge::verify(&nonce_key(), APP, challenge::Flow::HubHttp, &text, &id, None, &sig, NOW);
        prop_assert!(got.is_err());
    }

    /// One edit anywhere in a real challenge, signed again by the user (who can sign
    /// anything): the Hub must still see that it did not issue that text.
    #[test]
    fn challenge_verify_edited_real_challenge(
        at in any::<prop::sample::Index>(),
        with in prop_oneof![prop::char::range(' ', '~'), Just('\n'), any::<char>()],
        kind in any::<u8>(),
    ) {
        let (issued, _) = signed_challenge();
        let text = edit(&issued.text, at, with, kind);
        prop_assume!(text != issued.text);
        let sig = challenge::sign(&user_key(), &text);
        let id = Identity::from(&user_key());
        let got = challenge::verify(&nonce_key(), APP, challenge::Flow::HubHttp, &text, &id, None, &sig, NOW);
        prop_assert!(
            matches!(got, Err(ChallengeError::Malformed | ChallengeError::NotIssuedHere)),
            "{:?} for {:?}", got, text
        );
    }

    #[test]
    fn check_before_signing_random_and_edited(
        random in any_text(),
        at in any::<prop::sample::Index>(),
        with in prop_oneof![prop::char::range(' ', '~'), any::<char>()],
        kind in any::<u8>(),
    ) {
        let id = Identity::from(&user_key());
        prop_assert!(challenge::check_before_signing(&random, AUDIENCE, &id, NOW).is_err());
        let (issued, _) = signed_challenge();
        let text = edit(&issued.text, at, with, kind);
        match challenge::check_before_signing(&text, AUDIENCE, &id, NOW) {
            // A client cannot check the MAC, so an edit inside the nonce (or an earlier
            // issue time) passes; audience, identity and expiry are what it checks.
            Ok(()) => {
                let lines: Vec<&str> = text.split('\n').collect();
                prop_assert_eq!(lines[1], format!("audience: {AUDIENCE}"));
                prop_assert_eq!(lines[2], format!("identity: {id}"));
                let expires = parse_rfc3339(&lines[5]["expires-at: ".len()..]);
                prop_assert!(expires.is_some_and(|t| t > NOW));
            }
            Err(e) => prop_assert!(
                matches!(
                    e,
                    ChallengeError::Malformed
                        | ChallengeError::WrongAudience
                        | ChallengeError::WrongIdentity
                        | ChallengeError::Expired
                ),
                "{:?}", e
            ),
        }
    }

    #[test]
    fn decode_signature_random_input(
        input in prop_oneof![
            any_text(),
            "[A-Za-z0-9_-]{86}",
            "[A-Za-z0-9_-]{85}[A-Za-z0-9_=-]{1,3}",
            "[A-Za-z0-9+/]{86}",
        ],
    ) {
        match challenge::decode_signature(&input) {
            // Only the one canonical spelling of 64 bytes is accepted.
            Ok(sig) => prop_assert_eq!(URL_SAFE_NO_PAD.encode(sig.to_bytes()), input),
            Err(e) => prop_assert_eq!(e, ChallengeError::MalformedSignature),
        }
    }

    #[test]
    fn token_verify_random_input(
        input in prop_oneof![
            any_text(),
            "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,120}\\.[A-Za-z0-9_-]{0,90}",
            "[A-Za-z0-9_.=+/-]{0,200}",
        ],
    ) {
        let (_, verifier, _) = token_fixture();
        prop_assert!(verifier.verify(&input, NOW).is_err());
        let _ = token::decode_unverified(&input);
    }

    #[test]
    fn token_verify_forged_headers(
        header in header_strategy(TokenSigner::new(SigningKey::from_bytes(&[3; 32])).kid().to_owned()),
        sig in "[A-Za-z0-9_-]{0,90}",
    ) {
        let (_, verifier, token) = token_fixture();
        let payload = token.split('.').nth(1).expect("three parts");
        let forged = format!("{header}.{payload}.{sig}");
        prop_assert!(verifier.verify(&forged, NOW).is_err());
        prop_assert_eq!(
            token::decode_unverified(&forged).and_then(|c| c["sub"].as_str().map(str::to_owned)),
            Some(claims().sub)
        );
    }

    /// One character of a real token replaced, inserted or deleted.
    #[test]
    fn token_verify_edited_real_token(
        at in any::<prop::sample::Index>(),
        with in prop_oneof![prop::char::range('-', 'z'), any::<char>()],
        kind in any::<u8>(),
    ) {
        let (_, verifier, token) = token_fixture();
        prop_assert_eq!(verifier.verify(&token, NOW), Ok(claims()));
        let edited = edit(&token, at, with, kind);
        prop_assume!(edited != token);
        let got = verifier.verify(&edited, NOW);
        prop_assert!(got.is_err(), "{}", edited);
    }

    #[test]
    fn api_secret_parse_random_input(
        input in prop_oneof![any_text(), "b[a-z2-7]{0,60}", "[a-zA-Z][a-zA-Z2-7]{50,55}"],
    ) {
        if let Some(secret) = ApiSecret::parse(&input) {
            prop_assert_eq!(ApiSecret::parse(&secret.reveal()), Some(secret));
        }
    }

    #[test]
    fn api_signature_random_input(
        msg in prop_oneof![
            any_text(),
            "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][0-2][0-9]:[0-5][0-9])",
        ],
        sig in prop_oneof![any_text(), "b[a-z2-7]{52}", "[A-Za-z][a-zA-Z2-7]{52}"],
    ) {
        let secret = ApiSecret::from_bytes([5; 32]);
        prop_assert_eq!(secret.verify(&msg, &sig, NOW), Err(apikey::ApiKeyError));
        // The right MAC over a random message still needs a message inside the window.
        let (_, real_sig) = secret.sign(NOW + 60);
        if secret.verify(&msg, &real_sig, NOW).is_ok() {
            prop_assert_eq!(parse_rfc3339(&msg), Some(NOW + 60));
        }
    }

    #[test]
    fn valid_key_id_random_input(input in prop_oneof![any_text(), "kgk_[a-z2-7]{0,70}", "kgk_[ -~]{0,10}"]) {
        if apikey::valid_key_id(&input) {
            let rest = input.strip_prefix("kgk_");
            prop_assert!(input.len() <= 64);
            prop_assert!(rest.is_some_and(|r| !r.is_empty()
                && r.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))));
        }
    }

    #[test]
    fn parse_rfc3339_random_input(
        input in prop_oneof![
            any_text(),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,20})?([Zz]|[+-][0-9]{2}:[0-9]{2})",
        ],
    ) {
        if let Some(t) = parse_rfc3339(&input)
            && (0..=253_402_300_799).contains(&t)
        {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn format_rfc3339_any_time(t in any::<i64>(), in_range in 0i64..=253_402_300_799) {
        let _ = format_rfc3339(t);
        let s = format_rfc3339(in_range);
        prop_assert_eq!(s.len(), 20);
        prop_assert_eq!(parse_rfc3339(&s), Some(in_range));
    }
}
