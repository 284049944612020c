//! `keygate hub` and `keygate provider` as separate servers.

use keygate::time::Clock;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn provider_reaches_a_remote_hub() {
    let Split {
        hub,
        provider,
        key_id: kid,
        origin,
    } = split().await;
    let clock = hub.clock.clone();

    // WebSocket flow through the Provider.
    let key = user(30);
    let t = ws_login(
        &provider.ws_url("/ws/userauth"),
        Some(&origin),
        &key,
        json!({}),
    )
    .await;
    assert_eq!(t["type"], "token", "{t}");
    let token = t["value"].as_str().unwrap();
    let claims = verifier(&hub.http())
        .await
        .verify(token, clock.now())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.aud.as_str()),
        (id(&key).as_str(), kid.as_str())
    );

    // Errors from the Hub come through with their codes.
    let mut ws = connect(&provider.ws_url("/ws/userauth"), Some(&origin)).await;
    send(&mut ws, json!({"type": "token", "pubkey": id(&key)})).await;
    let c = recv(&mut ws).await;
    assert!(
        c["value"]
            .as_str()
            .unwrap()
            .contains(&format!("audience: {origin}"))
    );
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&user(31), c["value"].as_str().unwrap())}),
    )
    .await;
    expect_error(&mut ws, "invalid_signature", 1008).await;

    // HTTP flow through the Provider, then the user endpoints on its origin.
    let now = clock.now();
    let issued = keygate::client::login_http(
        &provider.http_url(),
        &key,
        Some(&origin),
        Default::default(),
        now,
    )
    .await
    .unwrap();
    let res = http()
        .get(format!("{}/v1/whoami", provider.http_url()))
        .bearer_auth(&issued.token)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_id"], issued.session_id.as_str());
    let res = http()
        .get(format!("{}/v1/whoami", provider.http_url()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res).await.1["error"], "invalid_token");

    provider.stop().await;
    hub.stop().await;
}
