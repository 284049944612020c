//! Sessions and token lifecycle: lifetimes, refresh rotation, revocation,
//! introspection, logout scopes, scopes, brokered tokens, and secrets at rest.

use std::time::{Duration, Instant};

use keygate::time::Clock;
use serde_json::{Value, json};

use crate::support::*;

fn offline() -> Value {
    json!({"client_id": "cli", "access_type": "offline"})
}

async fn login(s: &TestServer, seed: u8, extra: Value) -> Value {
    ws_login(&s.ws("/ws/userauth"), Some(&s.origin()), &user(seed), extra).await
}

async fn refresh(s: &TestServer, token: &str, client_id: &str) -> (u16, Value) {
    let body = json!({"refresh_token": token, "client_id": client_id});
    post(s, "/v1/token/refresh", None, body).await
}

#[tokio::test]
async fn many_sessions_per_identity_and_requested_lifetimes() {
    let s = serve().await;
    let a = login(&s, 40, json!({})).await;
    let b = login(&s, 40, json!({"expiration": 120})).await;
    let c = login(&s, 40, json!({"expiration": 999_999})).await;
    assert_ne!(a["session_id"], b["session_id"]);
    assert_eq!(b["expires_in"], 120);
    assert_eq!(c["expires_in"], 3600, "capped at the key's maximum");
    let (status, body) = get(&s, "/v1/sessions", tok(&a)).await;
    assert_eq!(status, 200);
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    let current: Vec<&Value> = sessions.iter().filter(|x| x["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["session_id"], a["session_id"]);
    for field in [
        "created_at",
        "last_used_at",
        "expires_at",
        "client_id",
        "user_agent",
        "address",
    ] {
        assert!(current[0].get(field).is_some(), "{field}");
    }
    assert_eq!(current[0]["address"], "127.0.0.1");
    s.stop().await;
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let s = serve().await;
    let t = login(&s, 41, offline()).await;
    let r0 = t["refresh_token"].as_str().unwrap().to_owned();
    assert!(r0.len() >= 43, "at least 256 bits");

    let (status, n1) = refresh(&s, &r0, "cli").await;
    assert_eq!(status, 200, "{n1}");
    assert_eq!(n1["session_id"], t["session_id"]);
    let r1 = n1["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r0);
    assert_eq!(get(&s, "/v1/whoami", tok(&n1)).await.0, 200);

    // Bound to its client: another client id gets 401 and spends nothing.
    let (status, body) = refresh(&s, &r1, "other").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_refresh_token"))
    );

    // The spent token again: 401, and the whole session is revoked.
    let (status, body) = refresh(&s, &r0, "cli").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("refresh_token_reused"))
    );
    let (status, body) = get(&s, "/v1/whoami", tok(&n1)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("session_revoked"))
    );
    let (status, _) = refresh(&s, &r1, "cli").await;
    assert_eq!(status, 401, "the live refresh token died with its session");
    s.stop().await;
}

#[tokio::test]
async fn twenty_parallel_refreshes_one_success() {
    let s = serve().await;
    let t = login(&s, 42, offline()).await;
    let r = t["refresh_token"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/token/refresh", s.http());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (url, r) = (url.clone(), r.clone());
            tokio::spawn(async move {
                json_of(
                    http()
                        .post(url)
                        .json(&json!({"refresh_token": r, "client_id": "cli"}))
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            401 => assert!(
                ["refresh_token_reused", "session_revoked"]
                    .contains(&body["error"].as_str().unwrap()),
                "{body}"
            ),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(ok, 1);
    s.stop().await;
}

#[tokio::test]
async fn refresh_and_access_tokens_are_not_interchangeable() {
    let s = serve().await;
    let t = login(&s, 43, offline()).await;
    let r = t["refresh_token"].as_str().unwrap();
    let (status, body) = get(&s, "/v1/whoami", r).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let (status, body) = refresh(&s, tok(&t), "cli").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_refresh_token"))
    );
    // Without offline access there is no refresh token at all.
    let online = login(&s, 43, json!({"client_id": "cli"})).await;
    assert!(online.get("refresh_token").is_none());
    // offline without a client_id is a bad request.
    let mut ws = connect(&s.ws("/ws/userauth"), Some(&s.origin())).await;
    send(
        &mut ws,
        json!({"type": "token", "pubkey": id(&user(43)), "access_type": "offline"}),
    )
    .await;
    let c = recv(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&user(43), c["value"].as_str().unwrap())}),
    )
    .await;
    expect_error(&mut ws, "bad_request", 1008).await;
    s.stop().await;
}

#[tokio::test]
async fn renewal_by_signing_a_fresh_challenge() {
    let s = serve().await;
    let t = login(&s, 44, json!({})).await;
    let sid = t["session_id"].as_str().unwrap();
    s.clock.advance(600);
    let renewed = login(&s, 44, json!({"session_id": sid})).await;
    assert_eq!(renewed["type"], "token", "{renewed}");
    assert_eq!(renewed["session_id"], sid);
    let (_, list) = get(&s, "/v1/sessions", tok(&renewed)).await;
    let row = &list["sessions"][0];
    assert_ne!(row["created_at"], row["last_used_at"], "last use moved");
    // Another identity cannot renew this session, and is told that its
    // session_id names none of its sessions (not that the live one was revoked);
    // an unknown session_id is answered alike.
    let renew = |seed: u8, sid: String| {
        let url = s.ws("/ws/userauth");
        let origin = s.origin();
        async move {
            let mut ws = connect(&url, Some(&origin)).await;
            send(
                &mut ws,
                json!({"type": "token", "pubkey": id(&user(seed)), "session_id": sid}),
            )
            .await;
            let c = recv(&mut ws).await;
            send(
                &mut ws,
                json!({"type": "challenge", "sig": sign(&user(seed), c["value"].as_str().unwrap())}),
            )
            .await;
            ws
        }
    };
    let mut ws = renew(45, sid.to_owned()).await;
    expect_error(&mut ws, "invalid_session", 1008).await;
    let unknown = keygate::session::session_id(s.clock.now(), &mut keygate::entropy::os_rng());
    let mut ws = renew(44, unknown).await;
    expect_error(&mut ws, "invalid_session", 1008).await;
    // The session is still live for its owner.
    assert_eq!(get(&s, "/v1/whoami", tok(&renewed)).await.0, 200);
    // Its owner, once it is revoked, hears that it was.
    let (status, _) = post(&s, "/v1/logout", Some(tok(&renewed)), json!({})).await;
    assert_eq!(status, 200);
    let mut ws = renew(44, sid.to_owned()).await;
    expect_error(&mut ws, "session_revoked", 1008).await;
    s.stop().await;
}

#[tokio::test]
async fn delete_session_and_logout_scopes() {
    let s = serve().await;
    let a = login(&s, 46, json!({})).await;
    let b = login(&s, 46, json!({})).await;
    let c = login(&s, 46, json!({})).await;
    let d = login(&s, 46, json!({})).await;
    let other = login(&s, 47, json!({})).await;

    // Only one's own sessions can be deleted.
    let res = http()
        .delete(format!(
            "{}/v1/sessions/{}",
            s.http(),
            other["session_id"].as_str().unwrap()
        ))
        .bearer_auth(tok(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = http()
        .delete(format!(
            "{}/v1/sessions/{}",
            s.http(),
            b["session_id"].as_str().unwrap()
        ))
        .bearer_auth(tok(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        get(&s, "/v1/whoami", tok(&b)).await.1["error"],
        "session_revoked"
    );

    let (status, body) = post(&s, "/v1/logout", Some(tok(&a)), json!({"scope": "others"})).await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(2)));
    assert_eq!(get(&s, "/v1/whoami", tok(&a)).await.0, 200);
    assert_eq!(get(&s, "/v1/whoami", tok(&c)).await.0, 401);
    assert_eq!(get(&s, "/v1/whoami", tok(&d)).await.0, 401);
    assert_eq!(
        get(&s, "/v1/whoami", tok(&other)).await.0,
        200,
        "other identities untouched"
    );

    let (status, body) = post(&s, "/v1/logout", Some(tok(&a)), json!({"scope": "local"})).await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)));
    assert_eq!(get(&s, "/v1/whoami", tok(&a)).await.0, 401);

    let e = login(&s, 46, json!({})).await;
    let f = login(&s, 46, json!({})).await;
    let (status, body) = post(&s, "/v1/logout", Some(tok(&e)), json!({"scope": "global"})).await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(2)));
    assert_eq!(get(&s, "/v1/whoami", tok(&f)).await.0, 401);
    let (status, body) = post(
        &s,
        "/v1/logout",
        Some(tok(&other)),
        json!({"scope": "everything"}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    s.stop().await;
}

#[tokio::test]
async fn idle_timeout_and_absolute_lifetime() {
    let s = serve().await;
    let t = login(&s, 48, offline()).await;
    s.clock.advance(4 * 3600);
    let (status, body) = refresh(&s, t["refresh_token"].as_str().unwrap(), "cli").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("session_expired"))
    );

    let t = login(&s, 48, offline()).await;
    let mut r = t["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..9 {
        s.clock.advance(3600);
        let (status, n) = refresh(&s, &r, "cli").await;
        assert_eq!(status, 200, "{n}");
        r = n["refresh_token"].as_str().unwrap().to_owned();
        assert!(n["expires_in"].as_i64().unwrap() <= 3600);
    }
    s.clock.advance(3600);
    let (status, body) = refresh(&s, &r, "cli").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("session_expired")),
        "10 h absolute lifetime"
    );
    s.stop().await;
}

#[tokio::test]
async fn introspection_and_api_key_revocation_are_live() {
    let s = serve().await;
    // A resource server of its own that introspects the Provider's tokens.
    let (kid, secret) = s
        .api_key_with(|k| keygate::store::ApiKeyRecord {
            introspect_any: true,
            ..k
        })
        .await;
    let t = login(&s, 49, json!({})).await;
    let introspect = |token: String| {
        let (url, h) = (
            format!("{}/v1/introspect", s.http()),
            api_headers(&kid, &secret, s.clock.now() + 60),
        );
        async move {
            json_of(
                http()
                    .post(url)
                    .headers(h)
                    .form(&[("token", token)])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, body) = introspect(tok(&t).to_owned()).await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], true);
    assert_eq!(body["sub"], id(&user(49)));
    assert_eq!(body["sid"], t["session_id"]);
    let (_, body) = introspect("garbage".into()).await;
    assert_eq!(body, json!({"active": false}));
    // Introspection needs an API key.
    let res = http()
        .post(format!("{}/v1/introspect", s.http()))
        .form(&[("token", tok(&t))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Revoking the Provider's API key ends every session made through it, at once.
    let provider_key = s.running.provider_key.clone().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args([
            "keys",
            "revoke",
            &provider_key,
            "--database",
            &db_url(&s.dir),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, body) = introspect(tok(&t).to_owned()).await;
    assert_eq!(body["active"], false);
    assert_eq!(
        get(&s, "/v1/whoami", tok(&t)).await.1["error"],
        "session_revoked"
    );
    s.stop().await;
}

#[tokio::test]
async fn admin_cli_lists_and_revokes_sessions() {
    let s = serve().await;
    let t = login(&s, 50, json!({})).await;
    let who = id(&user(50));
    let db = db_url(&s.dir);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let list = run(&["sessions", "list", "--identity", &who, "--database", &db]);
    assert!(
        list.contains(t["session_id"].as_str().unwrap()) && list.contains("active"),
        "{list}"
    );
    let out = run(&["sessions", "revoke", "--identity", &who, "--database", &db]);
    assert!(out.contains("revoked 1"), "{out}");
    assert_eq!(
        get(&s, "/v1/whoami", tok(&t)).await.1["error"],
        "session_revoked"
    );
    s.stop().await;
}

#[tokio::test]
async fn offline_verifiers_learn_of_revocations_within_a_second() {
    let s = serve().await;
    let t = login(&s, 51, json!({})).await;
    let verifier = keygate::client::OfflineVerifier::start(&s.http(), "http://keygate.test")
        .await
        .unwrap();
    assert!(verifier.verify(tok(&t), s.clock.now()).is_ok());

    // The pull feed.
    let (status, feed) = json_of(
        http()
            .get(format!("{}/v1/revocations?since=0", s.http()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let cursor = feed["cursor"].as_i64().unwrap();

    let revoked_at = Instant::now();
    assert_eq!(
        post(&s, "/v1/logout", Some(tok(&t)), json!({})).await.0,
        200
    );
    // The verifier's clock stands still: only the push feed can make it refuse.
    eventually(
        "the offline verifier to refuse the revoked session",
        async || match verifier.verify(tok(&t), s.clock.now()) {
            Err(keygate::Error::SessionRevoked) => Ok(()),
            other => Err(other),
        },
    )
    .await;
    // Within a second as a rule (SECURITY.md); logged, not asserted: a loaded
    // machine may take longer.
    eprintln!(
        "the offline verifier refused the revoked session after {:?}",
        revoked_at.elapsed()
    );

    let (_, feed) = json_of(
        http()
            .get(format!("{}/v1/revocations?since={cursor}", s.http()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(feed["revocations"][0]["session_id"], t["session_id"]);
    assert!(feed["cursor"].as_i64().unwrap() > cursor);
    s.stop().await;
}

#[tokio::test]
async fn scopes_are_limited_by_the_api_key() {
    let s = serve().await;
    let (kid, secret) = s.api_key(&["read", "write"]).await;
    let client = keygate::client::HubClient::new(&s.http(), &kid, secret).unwrap();
    let key = user(52);
    let with_scope = |scope: &str| keygate::hub::TokenOptions {
        scope: Some(scope.into()),
        ..Default::default()
    };
    let c = client.challenge(&id(&key), None).await.unwrap();
    let t = client
        .token(
            &id(&key),
            &c.text,
            &sign(&key, &c.text),
            &with_scope("read read write"),
        )
        .await
        .unwrap();
    let claims = verifier(&s.http())
        .await
        .verify(&t.token, s.clock.now())
        .unwrap();
    assert_eq!(claims.scope, "read write");
    let c = client.challenge(&id(&key), None).await.unwrap();
    match client
        .token(
            &id(&key),
            &c.text,
            &sign(&key, &c.text),
            &with_scope("read admin"),
        )
        .await
    {
        Err(keygate::client::ClientError::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (403, "invalid_scope"))
        }
        other => panic!("expected 403 invalid_scope, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn brokered_tokens_work_once_and_are_namespaced() {
    let s = serve().await;
    let (broker_id, broker_secret) = s
        .api_key_with(|k| keygate::store::ApiKeyRecord {
            can_broker: true,
            ..k
        })
        .await;
    let create = |h: reqwest::header::HeaderMap, body: Value| {
        let url = format!("{}/v1/broker/tokens", s.http());
        async move {
            json_of(
                http()
                    .post(url)
                    .headers(h)
                    .json(&body)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, grant) = create(
        api_headers(&broker_id, &broker_secret, s.clock.now() + 60),
        json!({"endpoint_id": "user-7", "role": "member", "ttl": 60}),
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    let token_id = grant["token_id"].as_str().unwrap().to_owned();

    let exchange = |token_id: String| {
        let url = format!("{}/v1/session-tokens", s.http());
        async move {
            json_of(
                http()
                    .post(url)
                    .json(&json!({"token_id": token_id}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, t) = exchange(token_id.clone()).await;
    assert_eq!(status, 200, "{t}");
    let claims = verifier(&s.http())
        .await
        .verify(tok(&t), s.clock.now())
        .unwrap();
    assert_eq!(claims.sub, format!("{broker_id}:user-7"));
    assert!(
        keygate::Identity::parse(&claims.sub).is_err(),
        "never a key identity"
    );
    assert_eq!(claims.role.as_deref(), Some("member"));
    assert_eq!(get(&s, "/v1/whoami", tok(&t)).await.0, 200);

    let (status, body) = exchange(token_id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_grant")),
        "works once"
    );

    let (_, grant) = create(
        api_headers(&broker_id, &broker_secret, s.clock.now() + 60),
        json!({"endpoint_id": "user-8", "role": "member", "ttl": 5}),
    )
    .await;
    s.clock.advance(6);
    let (status, _) = exchange(grant["token_id"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, 401, "expired");

    let (kid, secret) = s.api_key(&[]).await;
    let (status, body) = create(
        api_headers(&kid, &secret, s.clock.now() + 60),
        json!({"endpoint_id": "x", "role": "member"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "no broker permission"
    );
    s.stop().await;
}

/// A plain HTTP/1.1 server on 127.0.0.1 that answers every request `200 ok`, for
/// the gateway to forward to; stops when dropped.
struct Echo {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo() -> Echo {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                    match conn.read(&mut buf).await {
                        Ok(n @ 1..) => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    Echo { addr, task }
}

// The binary runs as a child process; the CLI calls block, so a second worker
// keeps the test's own tasks (the upstream) going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_secrets_are_never_stored_or_logged_in_plain_text() {
    use keygate::time::SystemClock;
    // The shipped binary at its most talkative: `RUST_LOG=trace keygate serve`,
    // with its gateway in front of an upstream that receives the token.
    let dir = tempfile::tempdir().unwrap();
    let db = db_url(&dir);
    let up = echo().await;
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\n[[route]]\nname = \"api\"\nprefix = \"/api\"\n\
             upstream = \"http://{}\"\nforward_token = true\n",
            up.addr
        ),
    )
    .unwrap();
    let server = Keygate::start_with(
        &db,
        &["--gateway-config", config.to_str().unwrap()],
        &[("RUST_LOG", "trace")],
    );
    let base = format!("http://{}", server.addr);
    let origin = format!("http://127.0.0.1:{}", server.addr.port());
    let created = keygate(
        &[
            "keys",
            "create",
            "--name",
            "secrets",
            "--broker",
            "--database",
            &db,
        ],
        true,
    );
    let line = |label: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap()
            .to_owned()
    };
    let kid = line("USER_API_KEY=");
    let secret = keygate::apikey::ApiSecret::parse(&line("USER_API_SECRET=")).unwrap();
    let signed = || api_headers(&kid, &secret, SystemClock.now() + 60);
    let key = user(53);
    let post_json = |path: &str, headers: reqwest::header::HeaderMap, body: Value| {
        http()
            .post(format!("{base}{path}"))
            .headers(headers)
            .json(&body)
            .send()
    };
    let none = reqwest::header::HeaderMap::new;

    // WebSocket sign-in, offline: a token and a refresh token.
    let mut ws = connect(&format!("ws://{}/ws/userauth", server.addr), Some(&origin)).await;
    send(
        &mut ws,
        json!({"type": "token", "pubkey": id(&key), "client_id": "cli", "access_type": "offline"}),
    )
    .await;
    let c = recv(&mut ws).await;
    let ws_sig = sign(&key, c["value"].as_str().unwrap());
    send(&mut ws, json!({"type": "challenge", "sig": ws_sig})).await;
    let t = recv(&mut ws).await;
    assert_eq!(t["type"], "token", "{t}");
    let r0 = t["refresh_token"].as_str().unwrap().to_owned();

    // Refresh.
    let (status, n) = json_of(
        post_json(
            "/v1/token/refresh",
            none(),
            json!({"refresh_token": r0, "client_id": "cli"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{n}");
    let r1 = n["refresh_token"].as_str().unwrap().to_owned();

    // HTTP sign-in at the Provider.
    let (status, c) = json_of(
        http()
            .get(format!("{base}/api/token"))
            .query(&[("id", id(&key))])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    let http_sig = sign(&key, text);
    let body = json!({"id": id(&key), "challenge": text, "sig": http_sig});
    let (status, ht) = json_of(post_json("/api/token", none(), body).await.unwrap()).await;
    assert_eq!(status, 200, "{ht}");

    // An app backend at the Hub: API-key-signed challenge and token.
    let headers = signed();
    let api_sig = headers[keygate::apikey::HEADER_SIG]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, c) = json_of(
        post_json("/v1/challenge", headers, json!({"pubkey": id(&key)}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    let hub_sig = sign(&key, text);
    let body = json!({"pubkey": id(&key), "challenge": text, "sig": hub_sig});
    let (status, hub) = json_of(post_json("/v1/token", signed(), body).await.unwrap()).await;
    assert_eq!(status, 200, "{hub}");

    // A brokered token.
    let body = json!({"endpoint_id": "user-1", "role": "member"});
    let (status, grant) = json_of(
        post_json("/v1/broker/tokens", signed(), body)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{grant}");
    let token_id = grant["token_id"].as_str().unwrap().to_owned();
    let body = json!({"token_id": token_id});
    let (status, bt) = json_of(post_json("/v1/session-tokens", none(), body).await.unwrap()).await;
    assert_eq!(status, 200, "{bt}");

    // Through the gateway, with the token forwarded to the upstream.
    let res = http()
        .get(format!("http://{}/api/data", server.gateway.unwrap()))
        .bearer_auth(tok(&n))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");

    // Whoami, sessions, introspection, logout.
    for path in ["/v1/whoami", "/v1/sessions"] {
        let res = http()
            .get(format!("{base}{path}"))
            .bearer_auth(tok(&n))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let body = json!({"token": tok(&hub)});
    let (status, v) = json_of(post_json("/v1/introspect", signed(), body).await.unwrap()).await;
    assert_eq!((status, &v["active"]), (200, &json!(true)), "{v}");
    let res = http()
        .post(format!("{base}/v1/logout"))
        .bearer_auth(tok(&ht))
        .json(&json!({"scope": "global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let logs = server.stop().await;
    let text = String::from_utf8_lossy(&logs);
    assert!(
        text.contains(" TRACE ") || text.contains(" DEBUG "),
        "RUST_LOG=trace took effect:\n{}",
        &text[..text.len().min(2000)]
    );
    let secrets = [
        tok(&t).to_owned(),
        tok(&n).to_owned(),
        tok(&ht).to_owned(),
        tok(&hub).to_owned(),
        tok(&bt).to_owned(),
        r0.clone(),
        r1.clone(),
        token_id,
        ws_sig,
        http_sig,
        hub_sig,
        secret.reveal(),
        api_sig,
    ];
    let at_rest = stored(&dir).await;
    // Binary values as they appear in `at_rest`: raw in SQLite's file, hex in
    // PostgreSQL's text form of a row.
    let binary = |b: &[u8]| -> Vec<u8> {
        match postgres() {
            None => b.to_vec(),
            Some(_) => b
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
                .into(),
        }
    };
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for secret in &secrets {
        // A JWT's signature part alone would be enough to find it.
        let needle = secret.rsplit('.').next().unwrap();
        assert!(
            !contains(&at_rest, needle.as_bytes()),
            "stored in plain text: {}…",
            &secret[..12]
        );
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            panic!(
                "logged: {}… in {}",
                &secret[..12],
                &line[..line.len().min(300)]
            );
        }
    }
    // The API secret is sealed under the master key, not stored as its bytes.
    assert!(
        !contains(&at_rest, &binary(secret.as_bytes())),
        "API secret stored in plain text"
    );
    // The refresh tokens are there, as hashes.
    for r in [&r0, &r1] {
        assert!(
            contains(&at_rest, &binary(&keygate::session::hash_secret(r))),
            "refresh token hash stored"
        );
    }
}

/// Everything the store holds for the server of `dir`: its SQLite files, or
/// every row of its PostgreSQL database in text form.
async fn stored(dir: &tempfile::TempDir) -> Vec<u8> {
    let mut at_rest = Vec::new();
    if postgres().is_none() {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            at_rest.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        return at_rest;
    }
    let pool = sqlx::PgPool::connect(&db_url(dir)).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(tables.iter().any(|t| t == "refresh_tokens"), "{tables:?}");
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{table}\" t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        for row in rows {
            at_rest.extend(row.into_bytes());
        }
    }
    pool.close().await;
    at_rest
}

/// The session ids in the revocation feed.
async fn revoked_sids(s: &TestServer) -> Vec<String> {
    let (status, feed) = json_of(
        http()
            .get(format!("{}/v1/revocations?since=0", s.http()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{feed}");
    feed["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["session_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sessions_per_identity_and_app_are_capped() {
    let s = serve().await;
    let builtin = s.running.provider_key.clone().unwrap();
    let store = s.running.store.clone().unwrap();
    assert_eq!(
        store.api_key(&builtin).await.unwrap().unwrap().max_sessions,
        keygate::store::DEFAULT_MAX_SESSIONS
    );
    let mut apps = Vec::new();
    for _ in 0..2 {
        let (id, secret) = s
            .api_key_with(|k| keygate::store::ApiKeyRecord {
                max_sessions: 3,
                ..k
            })
            .await;
        apps.push(App { id, secret });
    }
    let key = user(60);
    // Another identity and another app of the same identity: not counted.
    let other_user = sign_in(&s, &apps[0], &user(61), json!({})).await;
    let other_app = sign_in(&s, &apps[1], &key, json!({})).await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        s.clock.advance(1);
        tokens.push(sign_in(&s, &apps[0], &key, json!({})).await);
    }
    // The two oldest ended, with feed entries; the newest three live.
    let revoked = revoked_sids(&s).await;
    for (i, t) in tokens.iter().enumerate() {
        let (status, body) = get(&s, "/v1/whoami", tok(t)).await;
        let sid = t["session_id"].as_str().unwrap().to_owned();
        if i < 2 {
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("session_revoked"))
            );
            assert!(revoked.contains(&sid), "{i}");
        } else {
            assert_eq!(status, 200, "{i}: {body}");
            assert!(!revoked.contains(&sid), "{i}");
        }
    }
    assert_eq!(revoked.len(), 2);
    for t in [&other_user, &other_app] {
        assert_eq!(get(&s, "/v1/whoami", tok(t)).await.0, 200);
    }
    assert_eq!(
        store
            .live_session_count(&id(&key), &apps[0].id, s.clock.now())
            .await
            .unwrap(),
        3
    );
    s.stop().await;
}

#[tokio::test]
async fn the_purge_deletes_only_what_can_no_longer_matter() {
    use keygate::store::{PURGE_GRACE, purge};
    let s = serve().await;
    let store = s.running.store.clone().unwrap();
    let (kid, secret) = s
        .api_key_with(|k| keygate::store::ApiKeyRecord {
            can_broker: true,
            ..k
        })
        .await;
    let app = App { id: kid, secret };
    let policy = keygate::session::SessionPolicy::default();
    // Old: three sessions with refresh tokens, one of them revoked (a feed
    // entry), and a brokered token id never used.
    let mut old = Vec::new();
    for seed in 62..65 {
        old.push(sign_in(&s, &app, &user(seed), offline()).await);
    }
    assert_eq!(
        post(&s, "/v1/logout", Some(tok(&old[0])), json!({}))
            .await
            .0,
        200
    );
    let (status, _) = app
        .post(
            &s,
            "/v1/broker/tokens",
            json!({"endpoint_id": "e", "role": "r", "ttl": 60}),
        )
        .await;
    assert_eq!(status, 200);
    // Past the end of the old sessions, but not yet by the grace: nothing goes.
    s.clock.advance(policy.session_ttl + 1);
    let young = sign_in(&s, &app, &user(65), offline()).await;
    assert_eq!(
        post(&s, "/v1/logout", Some(tok(&young)), json!({})).await.0,
        200
    );
    let kept = sign_in(&s, &app, &user(66), offline()).await;
    let p = purge(
        store.as_ref(),
        s.clock.now() - PURGE_GRACE,
        1,
        100,
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!((p.sessions, p.revocations), (0, 0), "{p:?}");
    assert_eq!(
        p.broker_tokens, 1,
        "an expired brokered token id goes at once"
    );
    // Past the grace: the old rows go, in rounds of one row per kind.
    s.clock.advance(PURGE_GRACE);
    let one = store
        .purge_expired(s.clock.now() - PURGE_GRACE, 1)
        .await
        .unwrap();
    assert_eq!((one.sessions, one.revocations), (1, 1), "{one:?}");
    let rest = purge(
        store.as_ref(),
        s.clock.now() - PURGE_GRACE,
        1,
        100,
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            one.sessions + rest.sessions,
            one.refresh_tokens + rest.refresh_tokens
        ),
        (3, 3),
        "{one:?} {rest:?}"
    );
    assert_eq!(rest.revocations, 0, "one old feed entry only");
    for t in &old {
        let sid = t["session_id"].as_str().unwrap();
        assert_eq!(store.session(sid).await.unwrap(), None);
        let (status, body) = refresh(&s, t["refresh_token"].as_str().unwrap(), "cli").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_refresh_token"))
        );
    }
    // The young session's feed entry stays while its tokens may be valid; the
    // live session and its refresh token work.
    let revoked = revoked_sids(&s).await;
    assert_eq!(revoked, [young["session_id"].as_str().unwrap()]);
    assert_eq!(get(&s, "/v1/whoami", tok(&kept)).await.0, 200);
    let (status, _) = refresh(&s, kept["refresh_token"].as_str().unwrap(), "cli").await;
    assert_eq!(status, 200);
    s.stop().await;
}

/// `keygate id new` writes the RFC 8410 form (PKCS#8 v1, the seed alone) that
/// OpenSSL reads, and OpenSSL derives the same public key from it that keygate
/// shows; keygate still reads the v2 form (RFC 5958, public key included).
#[test]
fn key_files_open_in_openssl_with_the_identity_keygate_shows() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id_ed25519.pem");
    let p = path.to_str().unwrap();
    keygate(&["id", "new", "--key", p], true);
    let shown_identity = |p: &str| {
        keygate(&["id", "show", "--key", p], true)
            .lines()
            .find_map(|l| l.strip_prefix("identity: "))
            .unwrap()
            .trim()
            .to_owned()
    };
    let identity = shown_identity(p);

    // The file: PEM "PRIVATE KEY" around the 48 bytes of RFC 8410 §7: version 0,
    // algorithm id-Ed25519 (1.3.101.112), the seed in an OCTET STRING, nothing more.
    let pem = std::fs::read_to_string(&path).unwrap();
    let (label, der) = ed25519_dalek::pkcs8::SecretDocument::from_pem(&pem).unwrap();
    assert_eq!(label, "PRIVATE KEY");
    let der = der.as_bytes();
    let head = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    assert_eq!(der.len(), 48, "{der:02x?}");
    assert_eq!(der[..16], head, "{der:02x?}");

    // OpenSSL reads it and derives the public key: the identity keygate shows.
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-in", p, "-pubout", "-outform", "DER"])
        .output()
        .expect("openssl must be installed to run this test (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl pkey refused the key file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SubjectPublicKeyInfo of RFC 8410 §4: 12 bytes of header, then the key.
    assert_eq!(out.stdout.len(), 44, "{:02x?}", out.stdout);
    let public: [u8; 32] = out.stdout[12..].try_into().unwrap();
    let from_openssl = keygate::Identity::from_bytes(&public).unwrap();
    assert_eq!(from_openssl.to_string(), identity);

    // A v2 file (with the public key) is still read.
    let key = user(54);
    let v2 = dir.path().join("v2.pem");
    std::fs::write(&v2, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    assert_eq!(shown_identity(v2.to_str().unwrap()), id(&key));
}
