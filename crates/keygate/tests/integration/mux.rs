//! The Hub's `/v1/ws/mux` (many sign-ins over one API-key authenticated socket)
//! and the split-mode Provider's pool of such links.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use keygate::server::{self, Mode};
use keygate::time::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

/// Sockets accepted on `port` of 127.0.0.1 and still established, from the
/// kernel's table: what a server really holds open, whatever it counts itself.
fn established_on(port: u16) -> usize {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == local && f[3] == "01"
        })
        .count()
}

/// A user key of its own for each `n`.
fn user_n(n: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    SigningKey::from_bytes(&seed)
}

/// A WebSocket handshake to `path` of `s` with these headers.
fn upgrade(
    s: &TestServer,
    path: &str,
    headers: reqwest::header::HeaderMap,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = s.ws(path).into_client_request().unwrap();
    req.headers_mut().extend(headers);
    req
}

/// `/v1/ws/mux` of `s`, signed with the app's key.
async fn mux(s: &TestServer, app: &App) -> Ws {
    let req = upgrade(
        s,
        "/v1/ws/mux",
        api_headers(&app.id, &app.secret, s.clock.now() + 60),
    );
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect in time")
        .expect("connect");
    ws
}

async fn app_of(s: &TestServer) -> App {
    let (id, secret) = s.api_key(&[]).await;
    App { id, secret }
}

/// A server, an app of it, and a mux link of the app's.
async fn linked() -> (TestServer, App, Ws) {
    let s = serve().await;
    let app = app_of(&s).await;
    let ws = mux(&s, &app).await;
    (s, app, ws)
}

/// Checks an error frame: its code, its id (none when `id` is `None`), the
/// message repeated as `value`, and that it quotes nothing of `sent`.
fn assert_error(f: &Value, id: Option<&str>, code: &str, sent: &str) {
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["code"], code, "{f}");
    assert_eq!(f.get("id").and_then(Value::as_str), id, "{f}");
    assert_eq!(f["value"], f["message"], "{f}");
    assert!(!f["message"].as_str().unwrap().is_empty(), "{f}");
    assert!(sent.is_empty() || !f.to_string().contains(sent), "{f}");
}

/// Starts sign-in `tag` of `key` on a mux link; the challenge text.
async fn ask(ws: &mut Ws, tag: &str, key: &SigningKey) -> String {
    send(ws, json!({"type": "token", "id": tag, "pubkey": id(key)})).await;
    let c = recv(ws).await;
    assert_eq!(
        (c["type"].as_str(), c["id"].as_str()),
        (Some("challenge"), Some(tag)),
        "{c}"
    );
    c["value"].as_str().unwrap().to_owned()
}

/// Answers challenge `text` of sign-in `tag` with `key`'s signature; the token frame.
async fn answer(ws: &mut Ws, tag: &str, key: &SigningKey, text: &str) -> Value {
    send(
        ws,
        json!({"type": "challenge", "id": tag, "sig": sign(key, text)}),
    )
    .await;
    let t = recv(ws).await;
    assert_eq!(
        (t["type"].as_str(), t["id"].as_str()),
        (Some("token"), Some(tag)),
        "{t}"
    );
    t
}

/// A user's sign-in on a Provider's `/ws/userauth` up to its first answer.
async fn user_asks(url: &str, origin: &str, key: &SigningKey) -> (Ws, Value) {
    let mut ws = connect(url, Some(origin)).await;
    send(&mut ws, json!({"type": "token", "pubkey": id(key)})).await;
    let c = recv(&mut ws).await;
    (ws, c)
}

/// The user signs challenge frame `c`; the Provider's answer.
async fn user_answers(ws: &mut Ws, key: &SigningKey, c: &Value) -> Value {
    let text = c["value"].as_str().unwrap();
    send(ws, json!({"type": "challenge", "sig": sign(key, text)})).await;
    recv(ws).await
}

#[tokio::test]
async fn split_provider_carries_many_sign_ins_over_a_few_hub_links() {
    const USERS: u32 = 300;
    let split = split().await;
    let hub_port = split.hub.running.addr.port();
    let url = split.provider.ws_url("/ws/userauth");
    // Every user holds a challenge before any signs: all sign-ins are in flight at once.
    let all_challenged = Arc::new(tokio::sync::Barrier::new(USERS as usize + 1));
    let users: Vec<_> = (0..USERS)
        .map(|n| {
            let (url, origin, barrier) =
                (url.clone(), split.origin.clone(), all_challenged.clone());
            tokio::spawn(async move {
                let key = user_n(n);
                let (mut ws, c) = user_asks(&url, &origin, &key).await;
                assert_eq!(c["type"], "challenge", "{c}");
                barrier.wait().await;
                let t = user_answers(&mut ws, &key, &c).await;
                assert_eq!(t["type"], "token", "{t}");
                (id(&key), t["value"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), all_challenged.wait())
        .await
        .expect("every user has a challenge");
    let links_at_peak = established_on(hub_port);
    let mut tokens = Vec::new();
    for u in users {
        let signed_in = tokio::time::timeout(Duration::from_secs(120), u);
        tokens.push(signed_in.await.expect("sign-in in time").unwrap());
    }
    let links_at_end = established_on(hub_port);
    let pool = keygate::provider::DEFAULT_HUB_CONNECTIONS;
    assert!(
        (1..=pool).contains(&links_at_peak),
        "{links_at_peak} sockets on the hub with {USERS} sign-ins in flight"
    );
    assert!(links_at_end <= pool, "{links_at_end}");
    let verifier = verifier(&split.hub.http()).await;
    for (sub, token) in tokens {
        let claims = verifier.verify(&token, split.hub.clock.now()).unwrap();
        assert_eq!(
            (claims.sub, claims.aud.as_str()),
            (sub, split.key_id.as_str())
        );
    }
    split.provider.stop().await;
    split.hub.stop().await;
}

#[tokio::test]
async fn mux_refuses_unsigned_handshakes_and_frames_without_a_valid_id() {
    let s = serve().await;
    let app = app_of(&s).await;

    // Same admission as /v1/ws/token: the API-key signature.
    let req = s.ws("/v1/ws/mux").into_client_request().unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401)
        }
        other => panic!("unsigned handshake accepted: {:?}", other.map(|_| ())),
    }
    let mut bad = api_headers(&app.id, &app.secret, s.clock.now() + 60);
    bad.insert(
        keygate::apikey::HEADER_KEY,
        "kgk_nosuchkey".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(upgrade(&s, "/v1/ws/mux", bad)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 401)
        }
        other => panic!("unknown key accepted: {:?}", other.map(|_| ())),
    }

    let mut ws = mux(&s, &app).await;
    let key = user(60);
    let evil = "<evil-input>";
    for frame in [
        json!({"type": "token", "pubkey": id(&key)}),
        json!({"type": "token", "id": "", "pubkey": id(&key)}),
        json!({"type": "token", "id": "a b", "pubkey": id(&key)}),
        json!({"type": "token", "id": "x".repeat(65), "pubkey": id(&key)}),
        json!({"type": "token", "id": 7, "pubkey": id(&key)}),
        json!({"type": "token", "id": format!("{evil}\n"), "pubkey": id(&key)}),
    ] {
        send(&mut ws, frame).await;
        assert_error(&recv(&mut ws).await, None, "bad_request", evil);
    }
    send_raw(&mut ws, &format!("not json {evil}")).await;
    assert_error(&recv(&mut ws).await, None, "bad_request", evil);

    // With an id: answered under it, never quoting the input.
    send(
        &mut ws,
        json!({"type": "token", "id": "e1", "pubkey": evil}),
    )
    .await;
    assert_error(&recv(&mut ws).await, Some("e1"), "invalid_identity", evil);
    send(&mut ws, json!({"type": evil, "id": "e2"})).await;
    assert_error(&recv(&mut ws).await, Some("e2"), "bad_request", evil);
    send(
        &mut ws,
        json!({"type": "challenge", "id": "nobody", "sig": "AAAA"}),
    )
    .await;
    assert_error(&recv(&mut ws).await, Some("nobody"), "bad_request", evil);

    // The link still serves a sign-in after all that.
    let text = ask(&mut ws, "ok", &key).await;
    answer(&mut ws, "ok", &key, &text).await;

    // A flood of frames without a valid id closes it.
    for _ in 0..40 {
        if ws.send(Message::text("{}")).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, Some(1008));

    // So does a frame over 16 KiB.
    let mut ws = mux(&s, &app).await;
    send_raw(
        &mut ws,
        &format!(
            r#"{{"id":"big","type":"token","pubkey":"{}"}}"#,
            "a".repeat(17_000)
        ),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    s.stop().await;
}

#[tokio::test]
async fn mux_sign_ins_are_kept_apart_by_id() {
    let (s, app, mut ws) = linked().await;
    let (a, b) = (user(61), user(62));
    send(
        &mut ws,
        json!({"type": "token", "id": "A", "pubkey": id(&a)}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "token", "id": "B", "pubkey": id(&b)}),
    )
    .await;
    let mut challenges = std::collections::HashMap::new();
    for _ in 0..2 {
        let c = recv(&mut ws).await;
        assert_eq!(c["type"], "challenge", "{c}");
        challenges.insert(
            c["id"].as_str().unwrap().to_owned(),
            c["value"].as_str().unwrap().to_owned(),
        );
    }
    // An id in progress cannot start again.
    send(
        &mut ws,
        json!({"type": "token", "id": "A", "pubkey": id(&a)}),
    )
    .await;
    assert_error(&recv(&mut ws).await, Some("A"), "bad_request", "");

    // A's signature under B: B fails, A is untouched.
    send(
        &mut ws,
        json!({"type": "challenge", "id": "B", "sig": sign(&a, &challenges["A"])}),
    )
    .await;
    assert_error(&recv(&mut ws).await, Some("B"), "invalid_signature", "");
    // B is over: its id is unknown now.
    send(
        &mut ws,
        json!({"type": "challenge", "id": "B", "sig": sign(&b, &challenges["B"])}),
    )
    .await;
    assert_error(&recv(&mut ws).await, Some("B"), "bad_request", "");

    // A's challenge is bound to the Hub's socket flow: not redeemable over HTTP.
    let (status, body) = app
        .post(
            &s,
            "/v1/token",
            json!({"pubkey": id(&a), "challenge": challenges["A"], "sig": sign(&a, &challenges["A"])}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_signature")),
        "{body}"
    );

    let t = answer(&mut ws, "A", &a, &challenges["A"]).await;
    let claims = verifier(&s.http())
        .await
        .verify(t["value"].as_str().unwrap(), s.clock.now())
        .unwrap();
    assert_eq!((claims.sub, claims.aud), (id(&a), app.id.clone()));

    // A challenge of /v1/ws/token's is of the same flow but held by that socket:
    // the mux has nothing pending under any id for it.
    let signed = api_headers(&app.id, &app.secret, s.clock.now() + 60);
    let req = upgrade(&s, "/v1/ws/token", signed);
    let mut single = tokio_tungstenite::connect_async(req).await.unwrap().0;
    send(&mut single, json!({"type": "token", "pubkey": id(&a)})).await;
    let c = recv(&mut single).await;
    send(
        &mut ws,
        json!({"type": "challenge", "id": "A", "sig": sign(&a, c["value"].as_str().unwrap())}),
    )
    .await;
    assert_error(&recv(&mut ws).await, Some("A"), "bad_request", "");
    s.stop().await;
}

#[tokio::test]
async fn mux_caps_the_sign_ins_in_progress_on_a_link() {
    let (s, _app, mut ws) = linked().await;
    let key = user(63);
    let cap = keygate::hub::mux::MAX_PENDING;
    for n in 0..cap {
        send(
            &mut ws,
            json!({"type": "token", "id": n.to_string(), "pubkey": id(&key)}),
        )
        .await;
    }
    let mut first = None;
    for _ in 0..cap {
        let c = recv(&mut ws).await;
        assert_eq!(c["type"], "challenge", "{c}");
        if c["id"] == "0" {
            first = Some(c["value"].as_str().unwrap().to_owned());
        }
    }
    send(
        &mut ws,
        json!({"type": "token", "id": "one-more", "pubkey": id(&key)}),
    )
    .await;
    assert_error(&recv(&mut ws).await, Some("one-more"), "rate_limited", "");

    // One is cancelled (its user left): there is room again, without an answer.
    send(&mut ws, json!({"type": "cancel", "id": "1"})).await;
    let mut attempt = 0;
    eventually("a slot freed by the cancel", async || {
        attempt += 1;
        let tag = format!("after-cancel-{attempt}");
        send(
            &mut ws,
            json!({"type": "token", "id": tag, "pubkey": id(&key)}),
        )
        .await;
        let f = recv(&mut ws).await;
        assert_eq!(f["id"], tag.as_str(), "{f}");
        if f["type"] != "challenge" {
            assert_error(&f, Some(&tag), "rate_limited", "");
        }
        f["type"] == "challenge"
    })
    .await;
    send(
        &mut ws,
        json!({"type": "token", "id": "one-more", "pubkey": id(&key)}),
    )
    .await;
    assert_error(&recv(&mut ws).await, Some("one-more"), "rate_limited", "");

    // One ends: there is room again.
    let first = first.unwrap();
    answer(&mut ws, "0", &key, &first).await;
    ask(&mut ws, "one-more", &key).await;
    s.stop().await;
}

#[tokio::test]
async fn mux_link_closes_once_its_api_key_is_revoked() {
    let (s, app, mut ws) = linked().await;
    let store = s.running.store.as_ref().unwrap();
    assert!(store.revoke_api_key(&app.id, s.clock.now()).await.unwrap());
    // Checked every few seconds: the error frame, then 1008.
    let f = tokio::time::timeout(keygate::hub::mux::TICK * 3, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str::<Value>(&t).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("closed without an error frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the link closes");
    assert_error(&f, None, "invalid_api_key", "");
    assert_eq!(close_code(&mut ws).await, Some(1008));
    s.stop().await;
}

/// A Hub alone on `listen` over the database in `dir`.
async fn hub_on(
    dir: &Arc<tempfile::TempDir>,
    clock: &ManualClock,
    listen: std::net::SocketAddr,
) -> TestServer {
    let mut o = options(Mode::Hub, dir, clock);
    o.listen = listen;
    TestServer {
        running: server::start(o).await.unwrap(),
        clock: clock.clone(),
        dir: dir.clone(),
    }
}

#[tokio::test]
async fn sign_ins_pending_on_a_closed_hub_link_fail_and_the_next_takes_a_new_link() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = ManualClock::new(SystemClock.now());
    let hub = hub_on(&dir, &clock, "127.0.0.1:0".parse().unwrap()).await;
    let hub_addr = hub.running.addr;
    let (key_id, secret) = hub.api_key(&[]).await;
    let mut o = options(Mode::Provider, &dir, &clock);
    o.hub_url = Some(hub.ws(""));
    o.user_api_key = Some((key_id.clone(), secret));
    o.hub_connections = 1;
    let provider = server::start(o).await.unwrap();
    let origin = format!("http://127.0.0.1:{}", provider.addr.port());
    let store = hub.running.store.as_ref().unwrap();
    assert!(
        store
            .set_api_key_origins(&key_id, &provider.origins)
            .await
            .unwrap()
    );
    let url = provider.ws_url("/ws/userauth");

    // Three users hold a challenge each, over the one link.
    let keys: Vec<_> = (0..3).map(|n| user_n(100 + n)).collect();
    let mut pending = Vec::new();
    for key in &keys {
        let (ws, c) = user_asks(&url, &origin, key).await;
        assert_eq!(c["type"], "challenge", "{c}");
        pending.push((ws, c));
    }
    assert_eq!(established_on(hub_addr.port()), 1);

    // The Hub stops (closing its links) and comes back on the same address.
    hub.stop().await;
    for ((ws, c), key) in pending.iter_mut().zip(&keys) {
        send(
            ws,
            json!({"type": "challenge", "sig": sign(key, c["value"].as_str().unwrap())}),
        )
        .await;
        expect_error(ws, "unavailable", 1008).await;
    }
    let hub = hub_on(&dir, &clock, hub_addr).await;

    // The next sign-in opens a fresh link (at once, or after the backoff).
    let key = user_n(200);
    let t = eventually("a sign-in over a new hub link", async || {
        let (mut ws, c) = user_asks(&url, &origin, &key).await;
        if c["type"] != "challenge" {
            return Err(c);
        }
        let t = user_answers(&mut ws, &key, &c).await;
        if t["type"] == "token" { Ok(t) } else { Err(t) }
    })
    .await;
    assert_eq!(established_on(hub_addr.port()), 1);
    verifier(&hub.http())
        .await
        .verify(t["value"].as_str().unwrap(), clock.now())
        .unwrap();
    provider.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_hub_that_never_answers_gives_users_unavailable_not_a_hang() {
    // A "Hub" that accepts the link and reads it, never answering.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let mut links = Vec::new();
        for _ in 0..4 {
            let (tcp, _) = silent.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            links.push(tokio::spawn(
                async move { while ws.next().await.is_some() {} },
            ));
        }
        links
    });
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = ManualClock::new(SystemClock.now());
    let mut o = options(Mode::Provider, &dir, &clock);
    o.hub_url = Some(format!("ws://{silent_addr}"));
    let key = keygate::apikey::generate(&mut keygate::entropy::os_rng());
    o.user_api_key = Some((key.id, key.secret));
    o.limits.handshake_timeout = Duration::from_secs(4);
    let provider = server::start(o).await.unwrap();
    let origin = format!("http://127.0.0.1:{}", provider.addr.port());
    let mut ws = connect(&provider.ws_url("/ws/userauth"), Some(&origin)).await;
    send(&mut ws, json!({"type": "token", "pubkey": id(&user(64))})).await;
    expect_error(&mut ws, "unavailable", 1008).await;
    provider.stop().await;
    accept.abort();
}
