//! Every bad input gets its documented error, and the socket is closed cleanly.

use keygate::entropy::os_rng;
use keygate::time::Clock;
use serde_json::json;

use crate::support::*;

async fn open(s: &TestServer) -> Ws {
    connect(&s.ws("/ws/userauth"), Some(&s.origin())).await
}

/// Opens a socket and gets a challenge for `key`; returns the socket and text.
async fn challenged(s: &TestServer, key: &ed25519_dalek::SigningKey) -> (Ws, String) {
    let mut ws = open(s).await;
    send(&mut ws, json!({"type": "token", "pubkey": id(key)})).await;
    let c = recv(&mut ws).await;
    (ws, c["value"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn websocket_protocol_errors() {
    let s = serve().await;
    let key = user(10);

    let mut ws = open(&s).await;
    send_raw(&mut ws, "{not json").await;
    expect_error(&mut ws, "bad_request", 1008).await;

    let mut ws = open(&s).await;
    send(&mut ws, json!({"type": "hello"})).await;
    expect_error(&mut ws, "bad_request", 1008).await;

    let mut ws = open(&s).await;
    send(&mut ws, json!({"type": "challenge", "sig": "AAAA"})).await;
    let f = expect_error(&mut ws, "bad_request", 1008).await;
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("no challenge is pending")
    );

    let (mut ws, _) = challenged(&s, &key).await;
    send(&mut ws, json!({"type": "token", "pubkey": id(&key)})).await;
    let f = expect_error(&mut ws, "bad_request", 1008).await;
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("one challenge at a time")
    );

    let mut ws = open(&s).await;
    send(&mut ws, json!({"type": "token"})).await;
    expect_error(&mut ws, "bad_request", 1008).await;

    let mut ws = open(&s).await;
    send_raw(
        &mut ws,
        &format!(
            "{{\"type\":\"token\",\"pubkey\":\"{}\"}}",
            "a".repeat(17 * 1024)
        ),
    )
    .await;
    expect_error(&mut ws, "message_too_large", 1009).await;
    s.stop().await;
}

#[tokio::test]
async fn websocket_signature_errors() {
    let s = serve().await;
    let key = user(11);
    let other = user(12);

    // A signature by another key.
    let (mut ws, text) = challenged(&s, &key).await;
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&other, &text)}),
    )
    .await;
    expect_error(&mut ws, "invalid_signature", 1008).await;

    // A signature for another challenge.
    let (_ws1, first) = challenged(&s, &key).await;
    let (mut ws, _second) = challenged(&s, &key).await;
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&key, &first)}),
    )
    .await;
    expect_error(&mut ws, "invalid_signature", 1008).await;

    // Garbage signature.
    let (mut ws, _) = challenged(&s, &key).await;
    send(&mut ws, json!({"type": "challenge", "sig": "not base64!"})).await;
    expect_error(&mut ws, "invalid_signature", 1008).await;

    // Expired: the injected clock moves past expires-at.
    let (mut ws, text) = challenged(&s, &key).await;
    s.clock.advance(61);
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&key, &text)}),
    )
    .await;
    expect_error(&mut ws, "challenge_expired", 1008).await;
    s.stop().await;
}

#[tokio::test]
async fn private_key_as_identity_is_refused_without_echo() {
    let s = serve().await;
    let sk = user(13);
    let mut kp = [0u8; 68];
    kp[..4].copy_from_slice(&[0x08, 0x01, 0x12, 0x40]);
    kp[4..].copy_from_slice(&sk.to_keypair_bytes());
    let private = multibase::encode(multibase::Base::Base32Lower, kp);
    assert!(private.starts_with("bbaareq"));

    let mut ws = open(&s).await;
    send(&mut ws, json!({"type": "token", "pubkey": private})).await;
    let f = expect_error(&mut ws, "invalid_identity", 1008).await;
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("never send a private key")
    );
    assert!(!f.to_string().contains(&private[..20]));

    let res = http()
        .get(format!("{}/api/token", s.http()))
        .query(&[("id", &private)])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_identity");
    assert!(!body.to_string().contains(&private[..20]));
    s.stop().await;
}

#[tokio::test]
async fn http_replay_and_wrong_signature() {
    let s = serve().await;
    let key = user(14);
    let get = |s: &TestServer| {
        http()
            .get(format!("{}/api/token", s.http()))
            .query(&[("id", id(&key))])
            .send()
    };
    let (_, c) = json_of(get(&s).await.unwrap()).await;
    let text = c["challenge"].as_str().unwrap().to_owned();
    let post = |body: serde_json::Value| {
        http()
            .post(format!("{}/api/token", s.http()))
            .json(&body)
            .send()
    };

    let (status, body) = json_of(
        post(json!({"id": id(&key), "challenge": text, "sig": sign(&user(15), &text)}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    assert!(body.get("message").is_some());

    let good = json!({"id": id(&key), "challenge": text, "sig": sign(&key, &text)});
    let (status, _) = json_of(post(good.clone()).await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, body) = json_of(post(good).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("challenge_used"))
    );

    // A challenge we never issued (tampered expiry).
    let forged = text.replace("expires-at: ", "expires-at: 2").replacen(
        "expires-at: 22",
        "expires-at: 29",
        1,
    );
    let (status, body) = json_of(
        post(json!({"id": id(&key), "challenge": forged, "sig": sign(&key, &forged)}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status / 100, 4, "{body}");
    assert!(
        ["invalid_challenge", "bad_request"].contains(&body["error"].as_str().unwrap()),
        "{body}"
    );

    // Malformed bodies.
    let res = http()
        .post(format!("{}/api/token", s.http()))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let res = http()
        .post(format!("{}/api/token", s.http()))
        .body(vec![b'a'; 20_000])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let res = http()
        .get(format!("{}/api/token", s.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res).await.0, 400);
    s.stop().await;
}

#[tokio::test]
async fn foreign_origin_is_refused() {
    let s = serve().await;
    let req = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = s.ws("/ws/userauth").into_client_request().unwrap();
        r.headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        r
    };
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let res = http()
        .get(format!("{}/api/token", s.http()))
        .query(&[("id", id(&user(1)))])
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden_origin"))
    );
    s.stop().await;
}

#[tokio::test]
async fn api_key_failures_are_all_401_invalid_api_key() {
    let s = serve().await;
    let (kid, secret) = s.api_key(&[]).await;
    let now = s.clock.now();
    let url = format!("{}/v1/challenge", s.http());
    let body = json!({"pubkey": id(&user(20))});
    let call = |h: reqwest::header::HeaderMap| http().post(&url).headers(h).json(&body).send();

    let (status, _) = json_of(call(api_headers(&kid, &secret, now + 60)).await.unwrap()).await;
    assert_eq!(status, 200);

    let wrong_secret = keygate::apikey::generate(&mut os_rng()).secret;
    let unknown = keygate::apikey::generate(&mut os_rng()).id;
    let cases = vec![
        ("unknown key", api_headers(&unknown, &secret, now + 60)),
        ("wrong secret", api_headers(&kid, &wrong_secret, now + 60)),
        ("expired signature", api_headers(&kid, &secret, now - 1)),
        ("too far ahead", api_headers(&kid, &secret, now + 3601)),
        ("no headers", reqwest::header::HeaderMap::new()),
    ];
    for (what, headers) in cases {
        let res = call(headers).await.unwrap();
        assert!(res.headers().contains_key("www-authenticate"), "{what}");
        let (status, body) = json_of(res).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_api_key")),
            "{what}"
        );
    }

    // Revoked: refused at once, on HTTP and on the socket.
    assert!(
        s.running
            .store
            .as_ref()
            .unwrap()
            .revoke_api_key(&kid, now)
            .await
            .unwrap()
    );
    let (status, body) = json_of(call(api_headers(&kid, &secret, now + 60)).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let client = keygate::client::HubClient::new(&s.http(), &kid, secret).unwrap();
    match client.connect_ws().await {
        Err(keygate::client::ClientError::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (401, "invalid_api_key"))
        }
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    s.stop().await;
}

/// A method a path does not take is 405 with `Allow` naming the ones it does
/// (RFC 9110 §15.5.6, from the OpenAPI document), and the document is served as
/// it is checked in.
#[tokio::test]
async fn method_not_allowed_names_the_allowed_ones() {
    let s = serve().await;
    let c = http();
    let r = c
        .put(format!("{}/v1/whoami", s.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    let r = c
        .delete(format!("{}/oauth/userinfo", s.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
    let r = c
        .get(format!("{}/openapi.json", s.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), keygate::openapi::json());
}
