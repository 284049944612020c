//! Key-bound tokens (DPoP, RFC 9449) end to end: sign-ins that bind, the checks at
//! the Hub's and Provider's user endpoints, refresh, the app policy, nonces,
//! introspection and the offline verifier. The gateway's are in gateway.rs; stock
//! client libraries' in tests/oidc.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use keygate::dpop;
use keygate::store::{ApiKeyRecord, DpopPolicy};
use keygate::time::Clock;
use serde_json::json;

use crate::support::*;

/// A proof by `key` for `htm` `url` at the server's time (`iat` moved by `skew`).
fn proof(s: &TestServer, key: &SigningKey, htm: &str, url: &str, token: Option<&str>) -> String {
    proof_at(s.clock.now(), key, htm, url, token, None)
}

fn proof_at(
    iat: i64,
    key: &SigningKey,
    htm: &str,
    url: &str,
    token: Option<&str>,
    nonce: Option<&str>,
) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let jti = format!(
        "jti-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    dpop::sign(key, htm, url, token, nonce, iat, &jti)
}

fn payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn call(
    url: &str,
    method: reqwest::Method,
    auth: &str,
    proof: Option<&str>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut req = http().request(method, url).header("authorization", auth);
    if let Some(p) = proof {
        req = req.header("dpop", p);
    }
    let res = req.send().await.unwrap();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = res.status().as_u16();
    (status, challenge, res.json().await.unwrap_or_default())
}

async fn bound_login(s: &TestServer, key: &SigningKey) -> keygate::proto::IssuedToken {
    let options = keygate::proto::TokenOptions {
        dpop: true,
        ..Default::default()
    };
    keygate::client::login_http(&s.http(), key, None, options, s.clock.now())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_bound_token_works_only_with_a_fresh_proof_by_its_key_for_that_request() {
    let s = serve().await;
    let key = user(81);
    let t = bound_login(&s, &key).await;
    assert_eq!(t.token_type, "DPoP");
    let identity = keygate::Identity::from(&key);
    assert_eq!(
        payload(&t.token)["cnf"]["jkt"],
        dpop::identity_jkt(&identity),
        "bound to the identity's own key"
    );
    let url = format!("{}/v1/whoami", s.http());
    let dpop_auth = format!("DPoP {}", t.token);
    let get = reqwest::Method::GET;

    let good = proof(&s, &key, "GET", &url, Some(&t.token));
    let (status, _, body) = call(&url, get.clone(), &dpop_auth, Some(&good)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity"], identity.to_string());

    let invalid_proof = |(status, challenge, body): (u16, Option<String>, serde_json::Value)| {
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
        let c = challenge.unwrap();
        assert!(
            c.starts_with("DPoP ") && c.contains(r#"error="invalid_dpop_proof""#),
            "{c}"
        );
        assert!(c.contains(r#"algs="EdDSA Ed25519 ES256""#), "{c}");
    };
    // The same proof again: replayed.
    invalid_proof(call(&url, get.clone(), &dpop_auth, Some(&good)).await);
    // No proof.
    invalid_proof(call(&url, get.clone(), &dpop_auth, None).await);
    // A proof by another key.
    let other = proof(&s, &user(82), "GET", &url, Some(&t.token));
    invalid_proof(call(&url, get.clone(), &dpop_auth, Some(&other)).await);
    // Another method, another URL.
    let post = proof(&s, &key, "POST", &url, Some(&t.token));
    invalid_proof(call(&url, get.clone(), &dpop_auth, Some(&post)).await);
    let elsewhere = proof(
        &s,
        &key,
        "GET",
        &format!("{}/v1/sessions", s.http()),
        Some(&t.token),
    );
    invalid_proof(call(&url, get.clone(), &dpop_auth, Some(&elsewhere)).await);
    // Stale, and from the future.
    let now = s.clock.now();
    for iat in [now - 120, now + 60] {
        let p = proof_at(iat, &key, "GET", &url, Some(&t.token), None);
        invalid_proof(call(&url, get.clone(), &dpop_auth, Some(&p)).await);
    }
    // For another token (wrong ath), and with no ath at all.
    let wrong_ath = proof(&s, &key, "GET", &url, Some("another token"));
    invalid_proof(call(&url, get.clone(), &dpop_auth, Some(&wrong_ath)).await);
    let no_ath = proof(&s, &key, "GET", &url, None);
    invalid_proof(call(&url, get.clone(), &dpop_auth, Some(&no_ath)).await);

    // As a bearer token (RFC 9449 §7.1), even with a good proof.
    let p = proof(&s, &key, "GET", &url, Some(&t.token));
    let (status, challenge, body) =
        call(&url, get.clone(), &format!("Bearer {}", t.token), Some(&p)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    assert!(challenge.unwrap().starts_with("DPoP "));

    // A bearer token sent with the DPoP scheme.
    let bearer =
        keygate::client::login_http(&s.http(), &key, None, Default::default(), s.clock.now())
            .await
            .unwrap();
    assert_eq!(bearer.token_type, "Bearer");
    let p = proof(&s, &key, "GET", &url, Some(&bearer.token));
    let (status, _, body) = call(
        &url,
        get.clone(),
        &format!("DPoP {}", bearer.token),
        Some(&p),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    let (status, _, _) = call(&url, get.clone(), &format!("Bearer {}", bearer.token), None).await;
    assert_eq!(status, 200);

    // A token refused for itself is answered in the scheme it came with (RFC
    // 9449 §7.1): at userinfo, this sign-in's token lacks `openid`,
    let userinfo = format!("{}/oauth/userinfo", s.http());
    let p = proof(&s, &key, "GET", &userinfo, Some(&t.token));
    let (status, challenge, body) = call(&userinfo, get.clone(), &dpop_auth, Some(&p)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope")),
        "{body}"
    );
    let c = challenge.unwrap();
    assert!(
        c.starts_with("DPoP ") && c.contains(r#"error="insufficient_scope""#),
        "{c}"
    );
    // and here its session ended, at keygate's endpoints and userinfo.
    let logout = format!("{}/v1/logout", s.http());
    let p = proof(&s, &key, "POST", &logout, Some(&t.token));
    let (status, _, body) = call(&logout, reqwest::Method::POST, &dpop_auth, Some(&p)).await;
    assert_eq!(status, 200, "{body}");
    for (at, code) in [(&url, "session_revoked"), (&userinfo, "invalid_token")] {
        let p = proof(&s, &key, "GET", at, Some(&t.token));
        let (status, challenge, body) = call(at, get.clone(), &dpop_auth, Some(&p)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some(code)),
            "{at}: {body}"
        );
        let c = challenge.unwrap();
        assert!(
            c.starts_with("DPoP ") && c.contains(r#"error="invalid_token""#),
            "{at}: {c}"
        );
    }
    let (_, challenge, _) = call(&url, get, "Bearer not-a-token", None).await;
    assert!(
        challenge.unwrap().starts_with("Bearer "),
        "Bearer stays Bearer"
    );
}

#[tokio::test]
async fn a_sign_in_binds_only_to_a_proof_by_the_signing_identity() {
    let s = serve().await;
    let key = user(83);
    // WebSocket: "dpop": true, the proof with the signature.
    let t = keygate::client::login_ws(
        &s.ws("/ws/userauth"),
        &key,
        Some(&s.origin()),
        keygate::proto::TokenOptions {
            dpop: true,
            ..Default::default()
        },
        s.clock.now(),
    )
    .await
    .unwrap();
    assert_eq!(t.token_type, "DPoP");

    // A proof by another key than the identity's: refused, at the socket…
    let url = s.ws("/ws/userauth");
    let mut ws = connect(&url, Some(&s.origin())).await;
    send(
        &mut ws,
        json!({"type": "token", "pubkey": id(&key), "dpop": true}),
    )
    .await;
    let c = recv(&mut ws).await;
    let text = c["value"].as_str().unwrap().to_owned();
    let other = proof(&s, &user(84), "GET", &url, None);
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&key, &text), "dpop": other}),
    )
    .await;
    expect_error(&mut ws, "invalid_dpop_proof", 1008).await;
    // …and over HTTP (400 where a token is issued).
    let api = format!("{}/api/token", s.http());
    let (status, c) = json_of(
        http()
            .get(&api)
            .query(&[("id", id(&key))])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let text = c["challenge"].as_str().unwrap();
    let body = json!({"id": id(&key), "challenge": text, "sig": sign(&key, text)});
    let (status, v) = json_of(
        http()
            .post(&api)
            .header("dpop", proof(&s, &user(84), "POST", &api, None))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{v}"
    );
}

#[tokio::test]
async fn refreshing_a_bound_session_needs_a_proof_by_its_key_and_keeps_the_binding() {
    let s = serve().await;
    let key = user(85);
    let options = keygate::proto::TokenOptions {
        dpop: true,
        client_id: Some("cli".into()),
        access_type: Some("offline".into()),
        ..Default::default()
    };
    let t = keygate::client::login_http(&s.http(), &key, None, options, s.clock.now())
        .await
        .unwrap();
    let rt = t.refresh_token.unwrap();
    let url = format!("{}/v1/token/refresh", s.http());
    let body = json!({"refresh_token": rt, "client_id": "cli"});
    let refresh = async |proof: Option<String>| {
        let mut req = http().post(&url).json(&body);
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        json_of(req.send().await.unwrap()).await
    };
    let (status, v) = refresh(None).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{v}"
    );
    let (status, v) = refresh(Some(proof(&s, &user(86), "POST", &url, None))).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{v}"
    );
    // The refused attempts did not spend the refresh token.
    let (status, v) = refresh(Some(proof(&s, &key, "POST", &url, None))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "DPoP");
    assert_eq!(
        payload(v["token"].as_str().unwrap())["cnf"]["jkt"],
        dpop::identity_jkt(&keygate::Identity::from(&key))
    );
}

#[tokio::test]
async fn an_app_that_requires_dpop_refuses_bearer_sign_ins() {
    let s = serve().await;
    let (kid, secret) = s
        .api_key_with(|k| ApiKeyRecord {
            dpop: DpopPolicy::Required,
            ..k
        })
        .await;
    let app = App {
        id: kid.clone(),
        secret,
    };
    let key = user(87);
    let (status, c) = app
        .post(&s, "/v1/challenge", json!({"pubkey": id(&key)}))
        .await;
    assert_eq!(status, 200);
    let text = c["challenge"].as_str().unwrap();
    let body = json!({"pubkey": id(&key), "challenge": text, "sig": sign(&key, text)});
    let (status, v) = app.post(&s, "/v1/token", body).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("dpop_required")),
        "{v}"
    );
    // The app checked its user's proof: "dpop": true binds to the identity's key.
    let t = sign_in(&s, &app, &key, json!({"dpop": true})).await;
    assert_eq!(t["token_type"], "DPoP");
    let v = introspect(&s, &app, t["token"].as_str().unwrap()).await;
    assert_eq!(v["active"], true);
    assert_eq!(
        v["cnf"]["jkt"],
        dpop::identity_jkt(&keygate::Identity::from(&key)),
        "introspection tells the resource server the binding: {v}"
    );
    // An app with DPoP off issues bearer tokens whatever the sign-in asks.
    let (kid, secret) = s
        .api_key_with(|k| ApiKeyRecord {
            dpop: DpopPolicy::Off,
            ..k
        })
        .await;
    let off = App { id: kid, secret };
    let t = sign_in(&s, &off, &key, json!({"dpop": true})).await;
    assert_eq!(t["token_type"], "Bearer");
}

#[tokio::test]
async fn with_nonces_on_a_proof_must_carry_a_fresh_one() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let s = serve_with(dir, |o| o.dpop_nonces = true).await;
    let key = user(88);
    let api = format!("{}/api/token", s.http());
    let (_, c) = json_of(
        http()
            .get(&api)
            .query(&[("id", id(&key))])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let text = c["challenge"].as_str().unwrap();
    let body = json!({"id": id(&key), "challenge": text, "sig": sign(&key, text)});
    let res = http()
        .post(&api)
        .header("dpop", proof(&s, &key, "POST", &api, None))
        .json(&body)
        .send()
        .await
        .unwrap();
    let nonce = res
        .headers()
        .get("dpop-nonce")
        .expect("a nonce to use")
        .to_str()
        .unwrap()
        .to_owned();
    let (status, v) = json_of(res).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("use_dpop_nonce")),
        "{v}"
    );
    let with_nonce = proof_at(s.clock.now(), &key, "POST", &api, None, Some(&nonce));
    let (status, v) = json_of(
        http()
            .post(&api)
            .header("dpop", with_nonce)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "DPoP");
    // A made-up nonce is refused like none.
    let url = format!("{}/v1/whoami", s.http());
    let t = v["token"].as_str().unwrap();
    let p = proof_at(s.clock.now(), &key, "GET", &url, Some(t), Some("AAAA"));
    let (status, _, v) = call(&url, reqwest::Method::GET, &format!("DPoP {t}"), Some(&p)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("use_dpop_nonce")),
        "{v}"
    );
}

#[tokio::test]
async fn the_offline_verifier_checks_the_binding_of_a_request() {
    let s = serve().await;
    let key = user(89);
    let t = bound_login(&s, &key).await;
    let v = keygate::client::OfflineVerifier::start(&s.http(), "http://keygate.test")
        .await
        .unwrap();
    let url = "https://api.example/orders";
    let auth = format!("DPoP {}", t.token);
    let now = s.clock.now();
    let p = proof(&s, &key, "GET", url, Some(&t.token));
    fn req<'a>(dpop: Option<&'a str>, authorization: &'a str) -> keygate::client::Presented<'a> {
        keygate::client::Presented {
            authorization: Some(authorization),
            dpop,
            method: "GET",
            url: "https://api.example/orders",
        }
    }
    let claims = v.verify_request(&req(Some(&p), &auth), now).unwrap();
    assert!(claims.cnf.is_some());
    assert!(
        matches!(
            v.verify_request(&req(Some(&p), &auth), now),
            Err(keygate::Error::Dpop { .. })
        ),
        "replayed"
    );
    let bearer = format!("Bearer {}", t.token);
    assert_eq!(
        v.verify_request(&req(None, &bearer), now),
        Err(keygate::Error::DpopBoundToken)
    );
    let other = proof(&s, &user(90), "GET", url, Some(&t.token));
    assert!(matches!(
        v.verify_request(&req(Some(&other), &auth), now),
        Err(keygate::Error::Dpop { .. })
    ));
    // An expired token with the DPoP scheme: refused for itself, under that scheme.
    let p = proof(&s, &key, "GET", url, Some(&t.token));
    let late = v.verify_request(&req(Some(&p), &auth), now + 86_400);
    let e = late.unwrap_err();
    assert!(matches!(e, keygate::Error::DpopScheme(_)), "{e:?}");
    assert!(e.www_authenticate().unwrap().starts_with("DPoP "));
}
