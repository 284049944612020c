//! Costs of the protocol core on the sign-in and request hot paths.
//!
//! Fixed keys and times, as in the tests. `ed25519/verify_strict` is the floor under
//! `challenge/verify` (which adds parsing, the nonce MAC and the identity check), and
//! `token/verify` goes through the stock `jsonwebtoken` backend. Measurement is kept
//! short so the whole run fits in a few minutes on a small machine:
//! `cargo bench --bench core`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use keygate_core::apikey::ApiSecret;
use keygate_core::challenge::{self, NonceKey};
use keygate_core::identity::Identity;
use keygate_core::token::{AccessClaims, Jwks, TokenSigner, TokenVerifier};

const NOW: i64 = 1_795_430_809;
const APP: &str = "kgk_benchapp";
const AUDIENCE: &str = "http://localhost:8080";
const ISSUER: &str = "http://127.0.0.1:8080";

fn identity(c: &mut Criterion) {
    let id = Identity::from(&SigningKey::from_bytes(&[7; 32]));
    let mut g = c.benchmark_group("identity");
    for (name, s) in [
        ("parse_canonical", id.to_string()),
        ("parse_peer_id", id.peer_id()),
        ("parse_did_key", id.did_key()),
    ] {
        assert_eq!(Identity::parse(&s), Ok(id));
        g.bench_function(name, |b| b.iter(|| Identity::parse(black_box(&s))));
    }
    g.finish();
}

fn challenges(c: &mut Criterion) {
    let sk = SigningKey::from_bytes(&[7; 32]);
    let id = Identity::from(&sk);
    let key = NonceKey::from_bytes([42; 32]);
    let issued = challenge::issue(
        &key,
        APP,
        challenge::Flow::HubWs,
        AUDIENCE,
        &id,
        NOW,
        60,
        [1; 16],
    )
    .unwrap();
    let sig = challenge::sign(&sk, &issued.text);
    let raw_sig = sk.sign(issued.text.as_bytes());
    assert!(
        challenge::verify(
            &key,
            APP,
            challenge::Flow::HubWs,
            &issued.text,
            &id,
            Some(AUDIENCE),
            &sig,
            NOW
        )
        .is_ok()
    );

    let mut g = c.benchmark_group("challenge");
    g.bench_function("issue", |b| {
        b.iter(|| {
            challenge::issue(
                &key,
                APP,
                challenge::Flow::HubWs,
                AUDIENCE,
                black_box(&id),
                NOW,
                60,
                [1; 16],
            )
        })
    });
    g.bench_function("verify", |b| {
        b.iter(|| {
            challenge::verify(
                &key,
                APP,
                challenge::Flow::HubWs,
                black_box(&issued.text),
                &id,
                Some(AUDIENCE),
                black_box(&sig),
                NOW,
            )
        })
    });
    g.finish();

    c.bench_function("ed25519/verify_strict", |b| {
        b.iter(|| id.verify_strict(black_box(issued.text.as_bytes()), black_box(&raw_sig)))
    });
}

fn tokens(c: &mut Criterion) {
    let signer = TokenSigner::new(SigningKey::from_bytes(&[3; 32]));
    let verifier = TokenVerifier::new(
        &Jwks {
            keys: vec![signer.jwk().clone()],
        },
        ISSUER,
    )
    .with_audiences(vec![APP.into()]);
    let claims = AccessClaims {
        iss: ISSUER.into(),
        sub: Identity::from(&SigningKey::from_bytes(&[7; 32])).to_string(),
        aud: APP.into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 3600,
        jti: "0123456789abcdef0123456789abcdef".into(),
        sid: "0123456789abcdef0123456789abcdef".into(),
        scope: "read write".into(),
        client_id: Some("cli".into()),
        role: None,
        acct: None,
        acr: None,
        amr: None,
        cnf: None,
    };
    let token = signer.mint(&claims);
    assert_eq!(verifier.verify(&token, NOW), Ok(claims.clone()));

    let mut g = c.benchmark_group("token");
    g.bench_function("mint", |b| b.iter(|| signer.mint(black_box(&claims))));
    g.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&token), NOW))
    });
    g.finish();
}

fn api_keys(c: &mut Criterion) {
    let secret = ApiSecret::from_bytes([5; 32]);
    let (msg, sig) = secret.sign(NOW + 300);
    assert_eq!(secret.verify(&msg, &sig, NOW), Ok(()));
    c.bench_function("apikey/verify", |b| {
        b.iter(|| secret.verify(black_box(&msg), black_box(&sig), NOW))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = core;
    config = config();
    targets = identity, challenges, tokens, api_keys
}
criterion_main!(core);
