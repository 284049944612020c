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
        cnf: None,
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
