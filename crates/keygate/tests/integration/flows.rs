//! The happy paths: sign in over WebSocket and HTTP, verify offline, survive a restart.

use keygate::time::Clock;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn websocket_sign_in_verifies_against_jwks() {
    let s = serve().await;
    let key = user(1);
    let t = ws_login(&s.ws("/ws/userauth"), Some(&s.origin()), &key, json!({})).await;
    assert_eq!(t["type"], "token");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert!(t.get("refresh_token").is_none());
    let token = t["value"].as_str().unwrap();
    let claims = verifier(&s.http())
        .await
        .verify(token, s.clock.now())
        .unwrap();
    assert_eq!(claims.sub, id(&key));
    assert_eq!(claims.sid, t["session_id"].as_str().unwrap());
    assert_eq!(Some(claims.aud.as_str()), s.running.provider_key.as_deref());
    assert_eq!(claims.iss, "http://keygate.test");
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.scope, "");

    // The token is live at the Hub in every accepted header form.
    for (name, value) in [
        ("authorization", format!("Bearer {token}")),
        ("authorization", format!("Token {token}")),
        ("x-auth-token", token.to_owned()),
    ] {
        let res = http()
            .get(format!("{}/v1/whoami", s.http()))
            .header(name, value)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(res).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["identity"], id(&key));
    }
    s.stop().await;
}

#[tokio::test]
async fn websocket_challenge_names_origin_and_identity() {
    let s = serve().await;
    let key = user(2);
    for origin in s.running.origins.clone() {
        let mut ws = connect(&s.ws("/ws/userauth"), Some(&origin)).await;
        send(
            &mut ws,
            json!({"type": "token", "pubkey": keygate::Identity::from(&key).peer_id()}),
        )
        .await;
        let c = recv(&mut ws).await;
        let text = c["value"].as_str().unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "keygate sign-in challenge v1");
        assert_eq!(lines[1], format!("audience: {origin}"));
        assert_eq!(
            lines[2],
            format!("identity: {}", id(&key)),
            "answered in canonical form"
        );
        assert!(c["expires_at"].as_str().unwrap().ends_with('Z'));
    }
    // No Origin (a CLI): the configured origin matching Host.
    let mut ws = connect(&s.ws("/ws/userauth"), None).await;
    send(&mut ws, json!({"type": "token", "pubkey": id(&key)})).await;
    let c = recv(&mut ws).await;
    assert!(
        c["value"]
            .as_str()
            .unwrap()
            .contains(&format!("audience: {}", s.origin()))
    );
    s.stop().await;
}

#[tokio::test]
async fn http_sign_in_and_no_store() {
    let s = serve().await;
    let key = user(3);
    let res = http()
        .get(format!("{}/api/token", s.http()))
        .query(&[("id", id(&key))])
        .header("origin", s.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (status, c) = json_of(res).await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    let res = http()
        .post(format!("{}/api/token", s.http()))
        .header("origin", s.origin())
        .json(&json!({"id": id(&key), "challenge": text, "sig": sign(&key, text)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (status, t) = json_of(res).await;
    assert_eq!(status, 200, "{t}");
    for field in [
        "token",
        "token_type",
        "expires_at",
        "expires_in",
        "session_id",
    ] {
        assert!(t.get(field).is_some(), "{field} in {t}");
    }
    let claims = verifier(&s.http())
        .await
        .verify(t["token"].as_str().unwrap(), s.clock.now())
        .unwrap();
    assert_eq!(claims.sub, id(&key));

    // The client library's HTTP and WebSocket logins work against it too.
    let now = s.clock.now();
    let via_http = keygate::client::login_http(&s.origin(), &key, None, Default::default(), now)
        .await
        .unwrap();
    let via_ws = keygate::client::login_ws(
        &format!("ws://127.0.0.1:{}/ws/userauth", s.running.addr.port()),
        &key,
        None,
        Default::default(),
        now,
    )
    .await
    .unwrap();
    assert_ne!(
        via_http.session_id, via_ws.session_id,
        "one session per sign-in"
    );
    s.stop().await;
}

#[tokio::test]
async fn hub_endpoints_for_app_backends() {
    let s = serve().await;
    let (kid, secret) = s.api_key(&[]).await;
    let client = keygate::client::HubClient::new(&s.http(), &kid, secret).unwrap();
    let key = user(4);
    // Backend-only app: the audience is the key id.
    let c = client.challenge(&id(&key), None).await.unwrap();
    assert!(c.text.contains(&format!("audience: {kid}")));
    let t = client
        .token(
            &id(&key),
            &c.text,
            &sign(&key, &c.text),
            &Default::default(),
        )
        .await
        .unwrap();
    let claims = verifier(&s.http())
        .await
        .verify(&t.token, s.clock.now())
        .unwrap();
    assert_eq!(claims.aud, kid);

    // The same over /v1/ws/token.
    let mut ws = client.connect_ws().await.unwrap();
    let frame = keygate::signin::ClientFrame {
        kind: "token".into(),
        pubkey: Some(id(&key)),
        ..Default::default()
    };
    let keygate::signin::ServerFrame::Challenge { value, .. } =
        keygate::client::exchange(&mut ws, &frame).await.unwrap()
    else {
        panic!("expected a challenge")
    };
    let frame = keygate::signin::ClientFrame {
        kind: "challenge".into(),
        sig: Some(sign(&key, &value)),
        ..Default::default()
    };
    let answer = keygate::client::exchange(&mut ws, &frame).await.unwrap();
    assert!(matches!(answer, keygate::signin::ServerFrame::Token { .. }));
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_keys_and_sessions() {
    let s = serve().await;
    let key = user(5);
    let t = ws_login(&s.ws("/ws/userauth"), Some(&s.origin()), &key, json!({})).await;
    let token = t["value"].as_str().unwrap().to_owned();
    let kid_before = jwks(&s.http()).await.keys[0].kid.clone();
    let provider_key = s.running.provider_key.clone();
    let dir = s.stop().await;

    let s = serve_in(dir).await;
    assert_eq!(
        jwks(&s.http()).await.keys[0].kid,
        kid_before,
        "signing key kept"
    );
    assert_eq!(s.running.provider_key, provider_key, "provider key kept");
    let res = http()
        .get(format!("{}/v1/whoami", s.http()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_id"], t["session_id"]);
    s.stop().await;
}

#[tokio::test]
async fn concurrent_redemptions_of_one_challenge_give_one_token() {
    let s = serve().await;
    let key = user(6);
    let (status, c) = json_of(
        http()
            .get(format!("{}/api/token", s.http()))
            .query(&[("id", id(&key))])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let text = c["challenge"].as_str().unwrap().to_owned();
    let body = json!({"id": id(&key), "challenge": text, "sig": sign(&key, &text)});
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let url = format!("{}/api/token", s.http());
            let body = body.clone();
            tokio::spawn(async move {
                json_of(http().post(url).json(&body).send().await.unwrap()).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            401 => assert_eq!(body["error"], "challenge_used"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 1);
    s.stop().await;
}

#[tokio::test]
async fn web_demo_or_placeholder_is_served_at_root() {
    let s = serve().await;
    let res = http().get(s.http()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("keygate"));
    s.stop().await;
}
