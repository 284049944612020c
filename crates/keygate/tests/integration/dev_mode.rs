//! Development keys (docs/dev-mode.md): they mint tokens without a signature on
//! a Hub started with `--dev` only, their tokens say `acr` `dev`, and verifiers
//! refuse those tokens unless told to accept them.

use std::sync::Arc;

use keygate::store::ApiKeyRecord;
use keygate::time::Clock;
use serde_json::{Value, json};

use crate::support::*;

async fn dev_app(s: &TestServer) -> App {
    let (id, secret) = s
        .api_key_with(|k| ApiKeyRecord {
            dev: true,
            scopes: vec!["read".into()],
            ..k
        })
        .await;
    App { id, secret }
}

fn claims(v: &Value) -> Value {
    keygate::token::decode_unverified(tok(v)).unwrap()
}

#[tokio::test]
async fn dev_keys_mint_tokens_only_on_a_dev_hub() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let s = serve_with(dir.clone(), |o| o.dev = true).await;
    let dev = dev_app(&s).await;
    let (id_plain, secret_plain) = s.api_key(&[]).await;
    let plain = App {
        id: id_plain,
        secret: secret_plain,
    };
    let who = id(&user(130));
    let body =
        json!({"pubkey": who, "scope": "read", "client_id": "cli", "access_type": "offline"});
    let (status, t) = dev.post(&s, "/v1/dev/token", body.clone()).await;
    assert_eq!(status, 200, "{t}");
    let c = claims(&t);
    assert_eq!(
        (c["sub"].as_str(), c["aud"].as_str()),
        (Some(who.as_str()), Some(dev.id.as_str()))
    );
    assert_eq!(
        (c["acr"].clone(), c["amr"].clone()),
        (json!("dev"), json!(["dev"]))
    );
    assert_eq!(c["scope"], "read");
    // A real session: the Hub answers for it, and a refresh stays a dev token.
    let (status, me) = get(&s, "/v1/whoami", tok(&t)).await;
    assert_eq!(
        (status, me["identity"].as_str()),
        (200, Some(who.as_str())),
        "{me}"
    );
    let (status, r) = post(
        &s,
        "/v1/token/refresh",
        None,
        json!({"refresh_token": t["refresh_token"], "client_id": "cli"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(claims(&r)["acr"], "dev");
    // Whatever way in, a dev key's tokens say so: a signed sign-in too.
    let signed = sign_in(&s, &dev, &user(131), json!({})).await;
    assert_eq!(claims(&signed)["amr"], json!(["dev"]));
    // Not a dev key: refused; bad input: named, not echoed.
    let (status, e) = plain
        .post(&s, "/v1/dev/token", json!({"pubkey": who}))
        .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    let (status, e) = dev
        .post(&s, "/v1/dev/token", json!({"pubkey": "bnotakey"}))
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(!e.to_string().contains("bnotakey"), "{e}");
    let (status, e) = dev
        .post(
            &s,
            "/v1/dev/token",
            json!({"pubkey": who, "session_id": c["sid"]}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    s.stop().await;

    // The same database without --dev: the key and its tokens are refused.
    let s = serve_in(dir).await;
    for path in ["/v1/dev/token", "/v1/challenge"] {
        let (status, e) = dev.post(&s, path, json!({"pubkey": who})).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (403, Some("forbidden")),
            "{path}: {e}"
        );
    }
    let (status, e) = get(&s, "/v1/whoami", tok(&r)).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    let (status, e) = post(
        &s,
        "/v1/token/refresh",
        None,
        json!({"refresh_token": r["refresh_token"], "client_id": "cli"}),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    // A wrong signature with the dev key id is the same 401 as for any key.
    let (status, e) = json_of(
        http()
            .post(format!("{}/v1/challenge", s.http()))
            .headers(api_headers(&dev.id, &plain.secret, s.clock.now() + 60))
            .json(&json!({"pubkey": who}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (401, Some("invalid_api_key"))
    );
    // serve warns while a dev key exists.
    let store = s.running.store.clone().unwrap();
    let warned = keygate::server::warn_of_dev_keys(store.as_ref(), false)
        .await
        .unwrap();
    assert_eq!(warned, std::slice::from_ref(&dev.id));
    s.stop().await;
}

#[tokio::test]
async fn offline_verifiers_refuse_dev_tokens_unless_told() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let s = serve_with(dir, |o| o.dev = true).await;
    let dev = dev_app(&s).await;
    let (_, t) = dev
        .post(&s, "/v1/dev/token", json!({"pubkey": id(&user(132))}))
        .await;
    let normal = ws_login(
        &s.ws("/ws/userauth"),
        Some(&s.origin()),
        &user(133),
        json!({}),
    )
    .await;
    let v = keygate::client::OfflineVerifier::start(&s.http(), "http://keygate.test")
        .await
        .unwrap();
    let now = s.clock.now();
    assert!(v.verify(tok(&normal), now).is_ok());
    match v.verify(tok(&t), now) {
        Err(keygate::Error::Forbidden(_)) => {}
        other => panic!("expected forbidden, got {other:?}"),
    }
    v.accept_dev_tokens(true);
    assert_eq!(v.verify(tok(&t), now).unwrap().acr.as_deref(), Some("dev"));
    s.stop().await;
}

#[test]
fn keys_create_dev_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args([
            "keys",
            "create",
            "--name",
            "local",
            "--dev",
            "--database",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEVELOPMENT key"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["keys", "list", "--database", &db])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("dev=true"));
}
