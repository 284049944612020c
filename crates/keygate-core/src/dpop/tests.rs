use super::*;
use ed25519_dalek::SigningKey;

const NOW: UnixTime = 1_800_000_000;
const URL: &str = "https://api.example.com/v1/whoami";

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn expect<'a>(htu: &'a [&'a str], token: Option<&'a str>) -> Expect<'a> {
    Expect {
        htm: "GET",
        htu,
        token,
        keys: Keys::Ed25519,
        nonces: None,
    }
}

fn proof(k: &SigningKey, iat: UnixTime, jti: &str, token: Option<&str>) -> String {
    sign(k, "GET", URL, token, None, iat, jti)
}

#[test]
fn a_good_proof_gives_the_thumbprint_of_its_key() {
    let k = key(1);
    let p = proof(&k, NOW, "a", Some("tok"));
    let got = verify(&p, &expect(&[URL], Some("tok")), NOW).unwrap();
    let id = Identity::from_bytes(k.verifying_key().as_bytes()).unwrap();
    assert_eq!(got.jkt, identity_jkt(&id));
    assert_eq!(got.jti, "a");
    assert_eq!(got.iat, NOW);
}

#[test]
fn the_thumbprint_is_rfc_7638s() {
    // RFC 8037 §A.3: the thumbprint of its Ed25519 example key.
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        ed25519_thumbprint(&x),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn every_wrong_field_is_refused() {
    let k = key(1);
    let e = expect(&[URL], Some("tok"));
    let other = sign(&k, "POST", URL, Some("tok"), None, NOW, "b");
    assert_eq!(verify(&other, &e, NOW), Err(DpopError::WrongRequest));
    let other = sign(
        &k,
        "GET",
        "https://api.example.com/v1/x",
        Some("tok"),
        None,
        NOW,
        "b",
    );
    assert_eq!(verify(&other, &e, NOW), Err(DpopError::WrongRequest));
    let other = sign(&k, "GET", URL, Some("other"), None, NOW, "b");
    assert_eq!(verify(&other, &e, NOW), Err(DpopError::WrongToken));
    let other = sign(&k, "GET", URL, None, None, NOW, "b");
    assert_eq!(verify(&other, &e, NOW), Err(DpopError::WrongToken));
    let stale = proof(&k, NOW - MAX_AGE - 1, "b", Some("tok"));
    assert_eq!(verify(&stale, &e, NOW), Err(DpopError::Stale));
    let ahead = proof(&k, NOW + MAX_AHEAD + 1, "b", Some("tok"));
    assert_eq!(verify(&ahead, &e, NOW), Err(DpopError::Stale));
    // Edges are in.
    let edge = proof(&k, NOW - MAX_AGE, "b", Some("tok"));
    assert!(verify(&edge, &e, NOW).is_ok());
    let edge = proof(&k, NOW + MAX_AHEAD, "b", Some("tok"));
    assert!(verify(&edge, &e, NOW).is_ok());
}

#[test]
fn a_tampered_proof_fails_its_signature() {
    let p = proof(&key(1), NOW, "a", None);
    let (signed, sig) = p.rsplit_once('.').unwrap();
    let (h, _) = signed.split_once('.').unwrap();
    let claims = serde_json::json!({"jti":"a","htm":"GET","htu":URL,"iat":NOW + 1});
    let forged = format!("{h}.{}.{sig}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    assert_eq!(
        verify(&forged, &expect(&[URL], None), NOW),
        Err(DpopError::BadSignature)
    );
    for bad in [
        "",
        "a.b",
        "a.b.c.d",
        "x.y.z",
        &"a".repeat(MAX_PROOF_LEN + 1),
    ] {
        assert_eq!(
            verify(bad, &expect(&[URL], None), NOW),
            Err(DpopError::Malformed)
        );
    }
}

fn hand_made(header: serde_json::Value, k: &SigningKey) -> String {
    use ed25519_dalek::Signer;
    let claims = serde_json::json!({"jti":"a","htm":"GET","htu":URL,"iat":NOW});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = URL_SAFE_NO_PAD.encode(k.sign(signed.as_bytes()).to_bytes());
    format!("{signed}.{sig}")
}

#[test]
fn headers_other_than_a_dpop_jwt_with_a_public_key_are_refused() {
    let k = key(1);
    let x = URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes());
    let e = expect(&[URL], None);
    let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","x":x});
    let ok = hand_made(
        serde_json::json!({"typ":"dpop+jwt","alg":"Ed25519","jwk":jwk}),
        &k,
    );
    assert!(
        verify(&ok, &e, NOW).is_ok(),
        "alg Ed25519 (RFC 9864) is taken"
    );
    let typ = hand_made(serde_json::json!({"typ":"JWT","alg":"EdDSA","jwk":jwk}), &k);
    assert_eq!(verify(&typ, &e, NOW), Err(DpopError::Malformed));
    let none = hand_made(
        serde_json::json!({"typ":"dpop+jwt","alg":"none","jwk":jwk}),
        &k,
    );
    assert_eq!(verify(&none, &e, NOW), Err(DpopError::UnsupportedKey));
    let hs = hand_made(
        serde_json::json!({"typ":"dpop+jwt","alg":"HS256","jwk":jwk}),
        &k,
    );
    assert_eq!(verify(&hs, &e, NOW), Err(DpopError::UnsupportedKey));
    let d = URL_SAFE_NO_PAD.encode(k.to_bytes());
    let private = serde_json::json!({"kty":"OKP","crv":"Ed25519","x":x,"d":d});
    let private = hand_made(
        serde_json::json!({"typ":"dpop+jwt","alg":"EdDSA","jwk":private}),
        &k,
    );
    assert_eq!(verify(&private, &e, NOW), Err(DpopError::UnsupportedKey));
    let es = serde_json::json!({"kty":"EC","crv":"P-256","x":x,"y":x});
    let es = hand_made(
        serde_json::json!({"typ":"dpop+jwt","alg":"ES256","jwk":es}),
        &k,
    );
    assert_eq!(
        verify(&es, &e, NOW),
        Err(DpopError::UnsupportedKey),
        "user keys only"
    );
    let padded = serde_json::json!({"kty":"OKP","crv":"Ed25519","x":format!("{x}=")});
    let padded = hand_made(
        serde_json::json!({"typ":"dpop+jwt","alg":"EdDSA","jwk":padded}),
        &k,
    );
    assert_eq!(verify(&padded, &e, NOW), Err(DpopError::UnsupportedKey));
    // A small-order key (the identity point) never verifies anything.
    let weak = URL_SAFE_NO_PAD.encode(
        [1u8]
            .iter()
            .chain([0u8; 31].iter())
            .copied()
            .collect::<Vec<_>>(),
    );
    let weak = serde_json::json!({"kty":"OKP","crv":"Ed25519","x":weak});
    let weak = hand_made(
        serde_json::json!({"typ":"dpop+jwt","alg":"EdDSA","jwk":weak}),
        &k,
    );
    assert_eq!(verify(&weak, &e, NOW), Err(DpopError::UnsupportedKey));
}

#[test]
fn htu_is_compared_after_normalisation() {
    let n = |s| normalize_htu(s);
    assert_eq!(
        n("HTTPS://Api.Example.COM:443/v1/whoami?x=1#f").as_deref(),
        Some(URL)
    );
    assert_eq!(n("http://h:80").as_deref(), Some("http://h/"));
    assert_eq!(
        n("ws://h:8080/ws/userauth").as_deref(),
        Some("http://h:8080/ws/userauth")
    );
    assert_eq!(n("wss://h/a/../b").as_deref(), Some("https://h/b"));
    assert_eq!(n("http://h:8080/a").as_deref(), Some("http://h:8080/a"));
    assert_ne!(n("http://h/a"), n("https://h/a"));
    assert_ne!(n("http://h/a"), n("http://h/a/"));
    for bad in ["/v1/whoami", "ftp://h/", "http://u:p@h/", "not a url"] {
        assert_eq!(n(bad), None, "{bad}");
    }
    let k = key(1);
    let p = sign(
        &k,
        "GET",
        "https://API.example.com:443/v1/whoami?q",
        None,
        None,
        NOW,
        "a",
    );
    let e = expect(&["http://other/", URL], None);
    assert!(verify(&p, &e, NOW).is_ok());
}

#[test]
fn the_replay_cache_refuses_a_second_use_and_forgets_after_the_window() {
    let mut cache = ReplayCache::new(2);
    let p = Proof {
        jkt: "k".into(),
        jti: "a".into(),
        iat: NOW,
    };
    assert_eq!(cache.insert(&p, NOW), Ok(()));
    assert_eq!(cache.insert(&p, NOW), Err(DpopError::Replayed));
    let other_key = Proof {
        jkt: "k2".into(),
        ..p.clone()
    };
    assert_eq!(cache.insert(&other_key, NOW), Ok(()), "jti is per key");
    let third = Proof {
        jti: "c".into(),
        ..p.clone()
    };
    assert_eq!(cache.insert(&third, NOW), Err(DpopError::Busy), "bounded");
    let later = NOW + MAX_AGE + 1;
    assert_eq!(
        cache.insert(
            &Proof {
                iat: later,
                ..third
            },
            later
        ),
        Ok(())
    );
    assert_eq!(cache.len(), 1, "the expired entries are gone");
}

#[test]
fn nonces_are_good_for_two_windows_and_only_from_their_key() {
    let nk = NonceKey::new([7; 32]);
    let n = nk.issue(NOW);
    assert!(nk.check(&n, NOW));
    assert!(nk.check(&n, NOW + NONCE_WINDOW));
    assert!(!nk.check(&n, NOW + 2 * NONCE_WINDOW + 1));
    assert!(!NonceKey::new([8; 32]).check(&n, NOW));
    assert!(!nk.check("x", NOW));
    let k = key(1);
    let nonces = Expect {
        nonces: Some(&nk),
        ..expect(&[URL], None)
    };
    let without = sign(&k, "GET", URL, None, None, NOW, "a");
    assert_eq!(verify(&without, &nonces, NOW), Err(DpopError::UseNonce));
    let with = sign(&k, "GET", URL, None, Some(&n), NOW, "a");
    assert!(verify(&with, &nonces, NOW).is_ok());
}

#[test]
fn es256_proofs_are_taken_for_any_key_verifiers() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let public = kp.public_key().as_ref();
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(&public[1..33]),
        URL_SAFE_NO_PAD.encode(&public[33..]),
    );
    let header = serde_json::json!({"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":x,"y":y}});
    let claims = serde_json::json!({"jti":"a","htm":"GET","htu":URL,"iat":NOW});
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = kp.sign(&rng, signed.as_bytes()).unwrap();
    let p = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    let any = Expect {
        keys: Keys::Any,
        ..expect(&[URL], None)
    };
    let got = verify(&p, &any, NOW).unwrap();
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    assert_eq!(got.jkt, thumbprint(&canonical));
    assert_eq!(
        verify(&p, &expect(&[URL], None), NOW),
        Err(DpopError::UnsupportedKey)
    );
}
