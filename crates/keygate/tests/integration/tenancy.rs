//! Tenant isolation on one Hub (docs/tenancy.md): app B's API key, at every
//! API-key endpoint, learns nothing about app A's tokens, sessions, brokered
//! tokens or audiences, and changes none of them; each app works on its own.

use keygate::store::ApiKeyRecord;
use serde_json::{Value, json};

use crate::support::*;

const A_ORIGIN: &str = "https://a.example";
const B_ORIGIN: &str = "https://b.example";

/// Two apps on one `keygate serve`: each names its own origin and may broker.
async fn two_apps(s: &TestServer) -> (App, App) {
    let mut apps = Vec::new();
    for origin in [A_ORIGIN, B_ORIGIN] {
        let (id, secret) = s
            .api_key_with(|k| ApiKeyRecord {
                origins: vec![origin.to_owned()],
                can_broker: true,
                ..k
            })
            .await;
        apps.push(App { id, secret });
    }
    let b = apps.pop().unwrap();
    (apps.pop().unwrap(), b)
}

/// Nothing of A's (key id, origin, identity, session, token) in `v`.
fn reveals_nothing(v: &Value, a: &App, secrets: &[&str]) {
    let text = v.to_string();
    for s in [a.id.as_str(), A_ORIGIN].iter().chain(secrets) {
        assert!(!text.contains(s), "{text} reveals {s}");
    }
}

#[tokio::test]
async fn an_app_names_only_its_own_audiences() {
    let s = serve().await;
    let (a, b) = two_apps(&s).await;
    let user = id(&user(120));
    // Happy path: each app's own id (the default) and its own origin.
    for (app, origin) in [(&a, A_ORIGIN), (&b, B_ORIGIN)] {
        for audience in [Value::Null, json!(app.id), json!(origin)] {
            let (status, c) = app
                .post(
                    &s,
                    "/v1/challenge",
                    json!({"pubkey": user, "audience": audience}),
                )
                .await;
            assert_eq!(status, 200, "{c}");
            let want = audience.as_str().unwrap_or(&app.id);
            assert!(
                c["challenge"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("\naudience: {want}\n")),
                "{c}"
            );
        }
    }
    // B may not name A's origin, A's key id, or anything else.
    for audience in [A_ORIGIN, a.id.as_str(), "https://evil.example", "x"] {
        let (status, body) = b
            .post(
                &s,
                "/v1/challenge",
                json!({"pubkey": user, "audience": audience}),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden_audience")),
            "{audience}: {body}"
        );
        reveals_nothing(&body, &a, &[audience]);
    }
    // The same on the Hub's WebSocket.
    let client = keygate::client::HubClient::new(&s.http(), &b.id, b.secret.clone()).unwrap();
    let mut ws = client.connect_ws().await.unwrap();
    send(
        &mut ws,
        json!({"type": "token", "pubkey": user, "audience": A_ORIGIN}),
    )
    .await;
    let f = expect_error(&mut ws, "forbidden_audience", 1008).await;
    reveals_nothing(&f, &a, &[]);
    let mut ws = client.connect_ws().await.unwrap();
    send(
        &mut ws,
        json!({"type": "token", "pubkey": user, "audience": B_ORIGIN}),
    )
    .await;
    let c = recv(&mut ws).await;
    assert_eq!(c["type"], "challenge", "{c}");
    assert!(c["value"].as_str().unwrap().contains(B_ORIGIN), "{c}");
    s.stop().await;
}

#[tokio::test]
async fn introspection_answers_only_for_the_callers_tokens() {
    let s = serve().await;
    let (a, b) = two_apps(&s).await;
    let ta = sign_in(&s, &a, &user(121), json!({})).await;
    let tb = sign_in(&s, &b, &user(121), json!({})).await;
    // Each app sees its own token.
    for (app, t) in [(&a, &ta), (&b, &tb)] {
        let v = introspect(&s, app, tok(t)).await;
        assert_eq!(v["active"], true, "{v}");
        assert_eq!(v["aud"], app.id.as_str());
        assert_eq!(v["sub"], id(&user(121)));
        assert_eq!(v["sid"], t["session_id"]);
    }
    // B learns nothing of A's token (and A nothing of B's): the answer is the one
    // for a token that does not exist.
    assert_eq!(introspect(&s, &b, tok(&ta)).await, json!({"active": false}));
    assert_eq!(introspect(&s, &a, tok(&tb)).await, json!({"active": false}));
    assert_eq!(
        introspect(&s, &b, "garbage").await,
        json!({"active": false})
    );
    // A key created with --introspect-any sees both.
    let (id_any, secret_any) = s
        .api_key_with(|k| ApiKeyRecord {
            introspect_any: true,
            ..k
        })
        .await;
    let any = App {
        id: id_any,
        secret: secret_any,
    };
    for (app, t) in [(&a, &ta), (&b, &tb)] {
        let v = introspect(&s, &any, tok(t)).await;
        assert_eq!(
            (v["active"].as_bool(), v["aud"].as_str()),
            (Some(true), Some(app.id.as_str()))
        );
    }
    s.stop().await;
}

/// A sign-in as `app` that asks to renew session `sid`.
async fn renew(
    s: &TestServer,
    app: &App,
    key: &ed25519_dalek::SigningKey,
    sid: &str,
) -> (u16, Value) {
    let (_, c) = app
        .post(s, "/v1/challenge", json!({"pubkey": id(key)}))
        .await;
    let text = c["challenge"].as_str().unwrap();
    let body =
        json!({"pubkey": id(key), "challenge": text, "sig": sign(key, text), "session_id": sid});
    app.post(s, "/v1/token", body).await
}

#[tokio::test]
async fn an_app_cannot_renew_or_touch_another_apps_session() {
    let s = serve().await;
    let (a, b) = two_apps(&s).await;
    let key = user(122);
    let ta = sign_in(&s, &a, &key, json!({})).await;
    let sid = ta["session_id"].as_str().unwrap().to_owned();
    let before = s
        .running
        .store
        .as_ref()
        .unwrap()
        .session(&sid)
        .await
        .unwrap()
        .unwrap();
    s.clock.advance(30);
    // B has the user sign B's challenge and asks to renew A's session: refused
    // exactly as for a session id that does not exist.
    let (status, foreign) = renew(&s, &b, &key, &sid).await;
    let (_, unknown) = renew(&s, &b, &key, "no-such-session-id").await;
    assert_eq!(status, 403, "{foreign}");
    assert_eq!(foreign, unknown);
    reveals_nothing(&foreign, &a, &[&sid]);
    let after = s
        .running
        .store
        .as_ref()
        .unwrap()
        .session(&sid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, before, "A's session untouched");
    // A renews its own session.
    let (status, renewed) = renew(&s, &a, &key, &sid).await;
    assert_eq!(
        (status, renewed["session_id"].as_str()),
        (200, Some(sid.as_str())),
        "{renewed}"
    );
    assert_eq!(get(&s, "/v1/whoami", tok(&ta)).await.0, 200);
    s.stop().await;
}

async fn broker(s: &TestServer, app: &App, endpoint: &str) -> (u16, Value) {
    let body = json!({"endpoint_id": endpoint, "role": "member"});
    app.post(s, "/v1/broker/tokens", body).await
}

#[tokio::test]
async fn brokered_tokens_stay_in_their_apps_namespace() {
    let s = serve().await;
    let (a, b) = two_apps(&s).await;
    // A brokers for its user "alice"; B, asking for the same endpoint id, gets
    // one in its own namespace.
    let (status, ga) = broker(&s, &a, "alice").await;
    assert_eq!(status, 200, "{ga}");
    let (status, gb) = broker(&s, &b, "alice").await;
    assert_eq!(status, 200, "{gb}");
    let mut tokens = Vec::new();
    for (app, g) in [(&a, &ga), (&b, &gb)] {
        let (status, t) = post(
            &s,
            "/v1/session-tokens",
            None,
            json!({"token_id": g["token_id"]}),
        )
        .await;
        assert_eq!(status, 200, "{t}");
        let c = keygate::token::decode_unverified(tok(&t)).unwrap();
        assert_eq!(c["sub"], format!("{}:alice", app.id));
        assert_eq!(c["aud"], app.id.as_str());
        tokens.push(t);
    }
    // B's key learns nothing of A's brokered session, and vice versa.
    assert_eq!(
        introspect(&s, &b, tok(&tokens[0])).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&s, &a, tok(&tokens[1])).await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&s, &a, tok(&tokens[0])).await["sub"],
        format!("{}:alice", a.id)
    );
    // A key without the broker right is refused whatever it asks for.
    let (id, secret) = s.api_key(&[]).await;
    let (status, body) = broker(&s, &App { id, secret }, "alice").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    s.stop().await;
}

#[tokio::test]
async fn serve_gives_its_provider_key_the_serve_origins() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let s = serve_in(dir.clone()).await;
    let store = s.running.store.clone().unwrap();
    let kid = s.running.provider_key.clone().unwrap();
    let origins = store.api_key(&kid).await.unwrap().unwrap().origins;
    assert_eq!(origins, s.running.origins);
    // A key as an older database holds it (no origins): the next start adds
    // the serve origins back, and the browser flow works.
    assert!(store.set_api_key_origins(&kid, &[]).await.unwrap());
    s.stop().await;
    let s = serve_in(dir).await;
    let store = s.running.store.clone().unwrap();
    let origins = store.api_key(&kid).await.unwrap().unwrap().origins;
    assert_eq!(origins, s.running.origins);
    let t = ws_login(
        &s.ws("/ws/userauth"),
        Some(&s.origin()),
        &user(123),
        json!({}),
    )
    .await;
    assert_eq!(t["type"], "token", "{t}");
    s.stop().await;
}

#[tokio::test]
async fn keys_cli_sets_origins_and_rights() {
    let s = serve().await;
    let db = db_url(&s.dir);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(args)
            .args(["--database", &db])
            .output()
            .unwrap()
    };
    let out = run(&[
        "keys",
        "create",
        "--name",
        "a",
        "--origin",
        A_ORIGIN,
        "--origin",
        "http://localhost:3000",
        "--introspect-any",
        "--max-sessions",
        "7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("USER_API_KEY="))
        .unwrap()
        .to_owned();
    let k = s
        .running
        .store
        .as_ref()
        .unwrap()
        .api_key(&kid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(k.origins, [A_ORIGIN, "http://localhost:3000"]);
    assert!(k.introspect_any);
    assert_eq!(k.max_sessions, 7);
    let listed = String::from_utf8_lossy(&run(&["keys", "list"]).stdout).into_owned();
    assert!(
        listed.contains(&format!("origins={A_ORIGIN},http://localhost:3000")),
        "{listed}"
    );
    // Not an origin: refused, nothing created.
    for bad in ["a.example", "https://a example", ""] {
        let out = run(&["keys", "create", "--name", "bad", "--origin", bad]);
        assert!(!out.status.success(), "{bad}");
    }
    let out = run(&["keys", "origins", &kid, "--origin", B_ORIGIN]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k = s
        .running
        .store
        .as_ref()
        .unwrap()
        .api_key(&kid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(k.origins, [B_ORIGIN]);
    let keys = s.running.store.as_ref().unwrap().api_keys().await.unwrap();
    assert!(keys.iter().all(|k| k.name != "bad"));
    s.stop().await;
}
