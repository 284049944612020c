//! The gateway end to end: a real `serve()`, a gateway started in-process, and
//! upstreams written here (tiny hyper servers on 127.0.0.1:0 that echo what they
//! received), talked to over real sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use keygate::gateway::{self, AssertionVerifier, GatewayConfig};
use keygate::time::Clock;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::support::*;

// ---------------------------------------------------------------- upstreams

type UpBody = BoxBody<Bytes, Infallible>;

/// An upstream that answers every request with a JSON echo of what it received:
/// `{"method","path","query","headers":{name:[values]},"body_len","body_sha256"}`.
/// Paths ending in `/export` also set export headers, `/stream` streams its body in
/// two chunks (the second only once `release` is notified), `/ws` accepts a
/// WebSocket that first sends the echo, then echoes frames.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (h, r, c) = (hits.clone(), release.clone(), conns.clone());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (h, r) = (h.clone(), r.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(req, h.clone(), r.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream {
        addr,
        hits,
        conns,
        release,
        task,
    }
}

fn headers_json(h: &hyper::HeaderMap) -> Value {
    let mut out = serde_json::Map::new();
    for name in h.keys() {
        let values: Vec<Value> = h
            .get_all(name)
            .iter()
            .map(|v| Value::from(v.to_str().unwrap_or("<binary>")))
            .collect();
        out.insert(name.as_str().to_owned(), Value::Array(values));
    }
    Value::Object(out)
}

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).boxed()
}

async fn answer(
    mut req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
    release: Arc<Notify>,
) -> Result<Response<UpBody>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let mut echo = json!({
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query(),
        "headers": headers_json(req.headers()),
    });
    if path.ends_with("/ws") {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(up),
                Role::Server,
                None,
            )
            .await;
            let _ = ws.send(Message::text(echo.to_string())).await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    break;
                }
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let res = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(full(Bytes::new()))
            .unwrap();
        return Ok(res);
    }
    if path.ends_with("/stream") {
        let stream = futures_util::stream::unfold(0u8, move |step| {
            let release = release.clone();
            async move {
                match step {
                    0 => Some((Ok(Frame::data(Bytes::from("first\n"))), 1)),
                    1 => {
                        let _ = tokio::time::timeout(WAIT, release.notified()).await;
                        Some((Ok(Frame::data(Bytes::from("second\n"))), 2))
                    }
                    _ => None,
                }
            }
        });
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body = body.unwrap_or_default();
    echo["body_len"] = body.len().into();
    echo["body_sha256"] = hex(&Sha256::digest(&body)).into();
    let mut res = Response::new(full(echo.to_string()));
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if path.ends_with("/export") {
        let v = req_query_value(echo["query"].as_str().unwrap_or(""));
        let h = res.headers_mut();
        h.insert("x-keygate-export-auth-userId", v.parse().unwrap());
        h.insert("x-keygate-export-undeclared", "leak".parse().unwrap());
        h.insert("x-visible", "yes".parse().unwrap());
    }
    if path.ends_with("/close") {
        // The upstream ends the keep-alive connection after this response.
        res.headers_mut()
            .insert("connection", "close".parse().unwrap());
    }
    Ok(res)
}

fn req_query_value(q: &str) -> String {
    q.strip_prefix("v=").unwrap_or("none").to_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------- helpers

/// A gateway config with `routes` (TOML `[[route]]` tables) in front of `s`.
fn config(s: &TestServer, routes: &str) -> GatewayConfig {
    GatewayConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nhub = \"{}\"\nissuer = \"http://keygate.test\"\n{routes}",
        s.http()
    ))
    .unwrap()
}

fn api_route(up: &Upstream) -> String {
    format!(
        "[[route]]\nname = \"api\"\nprefix = \"/api\"\nupstream = \"{}\"\n",
        up.url()
    )
}

async fn login(s: &TestServer, seed: u8) -> (String, String) {
    let t = ws_login(
        &s.ws("/ws/userauth"),
        Some(&s.origin()),
        &user(seed),
        json!({}),
    )
    .await;
    (
        t["value"].as_str().unwrap().to_owned(),
        t["session_id"].as_str().unwrap().to_owned(),
    )
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn gateway_jwks(g: &gateway::Running) -> keygate::token::Jwks {
    http()
        .get(format!("{}{}", g.http_url(), gateway::JWKS_PATH))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn values<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn injects_identity_strips_forgeries_and_signs_an_assertion() {
    let s = serve().await;
    let up = upstream().await;
    let g = gateway::start(config(&s, &api_route(&up))).await.unwrap();
    let (token, sid) = login(&s, 60).await;

    // Every spelling a client might try, duplicates included, plus the token twice.
    let head = format!(
        "GET /api/hello?x=1 HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {token}\r\n\
         X-Auth-Token: {token}\r\nX-Keygate-Identity: forged\r\nx_keygate_identity: forged\r\n\
         X_KEYGATE_SESSION: forged\r\nx-keygate-scope: admin\r\nx-keygate-scope: root\r\n\
         X-Keygate-Session-auth-userId: evil\r\nx-keygate-assertion: forged\r\n\
         X-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw(g.addr, &head).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/api/hello");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(values(&echo, "x-keygate-identity"), vec![id(&user(60))]);
    assert_eq!(values(&echo, "x-keygate-session"), vec![sid.as_str()]);
    assert_eq!(values(&echo, "x-keygate-scope"), vec![""]);
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    assert!(echo["headers"].get("x-auth-token").is_none(), "{echo}");
    for name in echo["headers"].as_object().unwrap().keys() {
        let normalized = name.replace('_', "-");
        assert!(
            !normalized.starts_with("x-keygate-")
                || [
                    "x-keygate-identity",
                    "x-keygate-session",
                    "x-keygate-scope",
                    "x-keygate-assertion"
                ]
                .contains(&name.as_str()),
            "{name} reached the upstream"
        );
        assert!(!values(&echo, name).contains(&"forged"), "{name}");
    }
    assert_eq!(
        values(&echo, "x-forwarded-for"),
        vec!["10.9.9.9, 127.0.0.1"]
    );
    assert_eq!(values(&echo, "x-forwarded-host"), vec!["gw.test"]);

    // The assertion verifies from the gateway's JWKS, for this route only.
    let assertion = values(&echo, "x-keygate-assertion")[0].to_owned();
    let jwks = gateway_jwks(&g).await;
    assert_eq!(jwks, g.jwks);
    let now = s.clock.now();
    let claims = AssertionVerifier::new(&jwks, "keygate-gateway", "api")
        .verify(&assertion, now)
        .unwrap();
    assert_eq!(claims.sub.as_deref(), Some(id(&user(60)).as_str()));
    assert_eq!(claims.sid.as_deref(), Some(sid.as_str()));
    assert_eq!(claims.app, Some(s.running.provider_key.clone().unwrap()));
    // The same token on the same route reuses it (no signature per request).
    let (_, again) = json_of(get(&format!("{}/api/other", g.http_url()), Some(&token)).await).await;
    assert_eq!(
        values(&again, "x-keygate-assertion"),
        vec![assertion.as_str()]
    );
    // The gateway mints on the system clock, which runs on while the test's
    // manual clock stands still: bound the expiry by the real time.
    let real_now = keygate::time::Clock::now(&keygate::time::SystemClock);
    assert!(claims.exp > now && claims.exp <= real_now + 60);
    assert!(
        AssertionVerifier::new(&jwks, "keygate-gateway", "billing")
            .verify(&assertion, now)
            .is_err()
    );
    // …and with a stock JWT library, as a service in any language would.
    let header = jsonwebtoken::decode_header(&assertion).unwrap();
    assert_eq!(header.typ.as_deref(), Some(gateway::ASSERTION_TYPE));
    let jwk = jwks
        .keys
        .iter()
        .find(|k| Some(&k.kid) == header.kid.as_ref())
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_ed_components(&jwk.x).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["api"]);
    v.set_issuer(&["keygate-gateway"]);
    let stock = jsonwebtoken::decode::<Value>(&assertion, &key, &v).unwrap();
    assert_eq!(stock.claims["sub"], id(&user(60)));
    // It is no access token: the Hub's verifier refuses it.
    assert!(verifier(&s.http()).await.verify(&assertion, now).is_err());

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn dev_tokens_pass_only_a_gateway_configured_to_accept_them() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let s = serve_with(dir, |o| o.dev = true).await;
    let (kid, secret) = s
        .api_key_with(|k| keygate::store::ApiKeyRecord { dev: true, ..k })
        .await;
    let dev = App { id: kid, secret };
    let (status, t) = dev
        .post(&s, "/v1/dev/token", json!({"pubkey": id(&user(62))}))
        .await;
    assert_eq!(status, 200, "{t}");
    let up = upstream().await;
    let strict = gateway::start(config(&s, &api_route(&up))).await.unwrap();
    let res = get(&format!("{}/api/x", strict.http_url()), Some(tok(&t))).await;
    assert_eq!(json_of(res).await.1["error"], "forbidden");
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    let lenient = gateway::start(config(
        &s,
        &format!("accept_dev_tokens = true\n{}", api_route(&up)),
    ))
    .await
    .unwrap();
    let res = get(&format!("{}/api/x", lenient.http_url()), Some(tok(&t))).await;
    assert_eq!(res.status().as_u16(), 200);
    strict.stop().await;
    lenient.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_and_never_reach_the_upstream() {
    let s = serve().await;
    let up = upstream().await;
    let g = gateway::start(config(&s, &api_route(&up))).await.unwrap();
    let url = format!("{}/api/x", g.http_url());

    let res = get(&url, None).await;
    assert_eq!(res.status().as_u16(), 401);
    let www = res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(www.starts_with("Bearer realm=\"keygate\""), "{www}");
    let (_, body) = json_of(res).await;
    assert_eq!(body["error"], "invalid_token");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    let res = get(&url, Some("not.a.token")).await;
    assert_eq!(res.status().as_u16(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    assert_eq!(json_of(res).await.1["error"], "invalid_token");
    // A token for the wrong issuer (another Hub) is refused too.
    let other = serve().await;
    let (foreign, _) = login(&other, 61).await;
    assert_eq!(get(&url, Some(&foreign)).await.status().as_u16(), 401);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );

    // Unknown paths are 404, the /public/ space included.
    let (token, _) = login(&s, 61).await;
    let res = get(&format!("{}/nowhere", g.http_url()), Some(&token)).await;
    assert_eq!(
        json_of(res).await,
        (404, json!({"error": "not_found", "message": "not found"}))
    );
    let res = get(
        &format!("{}/public/kgk_x/api/y", g.http_url()),
        Some(&token),
    )
    .await;
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(
        get(&format!("{}/apix", g.http_url()), Some(&token))
            .await
            .status(),
        404
    );
    assert_eq!(get(&url, Some(&token)).await.status().as_u16(), 200);

    g.stop().await;
    other.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn the_token_is_forwarded_only_where_the_route_says_so() {
    let s = serve().await;
    let up = upstream().await;
    let routes = format!(
        "{}\n[[route]]\nname = \"legacy\"\nprefix = \"/legacy\"\nupstream = \"{}/v2\"\n\
         strip_prefix = true\nforward_token = true\n",
        api_route(&up),
        up.url()
    );
    let g = gateway::start(config(&s, &routes)).await.unwrap();
    let (token, _) = login(&s, 62).await;

    let (_, echo) = json_of(get(&format!("{}/api/a", g.http_url()), Some(&token)).await).await;
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");

    let (status, echo) =
        json_of(get(&format!("{}/legacy/a/b?q=1", g.http_url()), Some(&token)).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        echo["path"], "/v2/a/b",
        "prefix stripped, upstream base kept"
    );
    assert_eq!(echo["query"], "q=1");
    assert_eq!(
        values(&echo, "authorization"),
        vec![format!("Bearer {token}")]
    );
    assert_eq!(values(&echo, "x-keygate-identity"), vec![id(&user(62))]);

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn public_routes_answer_without_a_token_under_public_key_service() {
    let s = serve().await;
    let up = upstream().await;
    let routes = format!(
        "{}\n[[route]]\nname = \"hooks\"\npublic = true\nkey_id = \"kgk_test\"\n\
         upstream = \"{}/webhooks\"\n",
        api_route(&up),
        up.url()
    );
    let g = gateway::start(config(&s, &routes)).await.unwrap();

    let res = http()
        .post(format!(
            "{}/public/kgk_test/hooks/stripe?id=7",
            g.http_url()
        ))
        .header("x-keygate-identity", "forged")
        .header("authorization", "Bearer whatever")
        .body("{\"event\":\"paid\"}")
        .send()
        .await
        .unwrap();
    let (status, echo) = json_of(res).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/webhooks/stripe");
    assert_eq!(echo["query"], "id=7");
    assert_eq!(echo["body_len"], 16);
    for h in ["x-keygate-identity", "x-keygate-session", "authorization"] {
        assert!(echo["headers"].get(h).is_none(), "{h}: {echo}");
    }
    let assertion = values(&echo, "x-keygate-assertion")[0];
    let claims = AssertionVerifier::new(&g.jwks, "keygate-gateway", "hooks")
        .verify(assertion, s.clock.now())
        .unwrap();
    assert_eq!(
        (claims.sub, claims.sid),
        (None, None),
        "no identity on a public route"
    );

    // Another key id, or the service name alone, is no public route; and a path
    // cannot climb out of the public route into a protected one.
    for path in ["/public/kgk_other/hooks/x", "/public/hooks/x", "/public"] {
        let res = get(&format!("{}{path}", g.http_url()), None).await;
        assert_eq!(res.status().as_u16(), 404, "{path}");
    }
    for path in [
        "/public/kgk_test/hooks/%2e%2e/%2e%2e/%2e%2e/api/x",
        "/public/kgk_test/hooks/../../../api/x",
        "/public/kgk_test/hooks/..%2f..%2fapi",
    ] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let (status, body) = raw(g.addr, &head).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
    // The protected route next to it still wants a token.
    assert_eq!(
        get(&format!("{}/api/x", g.http_url()), None).await.status(),
        401
    );

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn exported_session_values_reach_later_requests_on_every_route() {
    let s = serve().await;
    let up = upstream().await;
    let routes = format!(
        "{}\n[[route]]\nname = \"auth\"\nprefix = \"/auth\"\nupstream = \"{}\"\n\
         exports = [\"auth-userId\"]\n",
        api_route(&up),
        up.url()
    );
    let g = gateway::start(config(&s, &routes)).await.unwrap();
    let (alice, alice_sid) = login(&s, 63).await;
    let (bob, _) = login(&s, 64).await;

    // The upstream sets the value; the client never sees an export header.
    let res = get(&format!("{}/auth/export?v=42", g.http_url()), Some(&alice)).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["x-visible"], "yes");
    for name in res.headers().keys() {
        assert!(
            !name.as_str().starts_with("x-keygate-"),
            "{name} reached the client"
        );
    }

    // Later requests of that session, on any route, carry it (and a forged one is
    // replaced); other sessions do not.
    let res = http()
        .get(format!("{}/api/next", g.http_url()))
        .bearer_auth(&alice)
        .header("x-keygate-session-auth-userId", "666")
        .send()
        .await
        .unwrap();
    let (_, echo) = json_of(res).await;
    assert_eq!(
        values(&echo, "x-keygate-session-auth-userid"),
        vec!["42"],
        "{echo}"
    );
    assert!(
        echo["headers"]
            .get("x-keygate-session-undeclared")
            .is_none()
    );
    let claims = AssertionVerifier::new(&g.jwks, "keygate-gateway", "api")
        .verify(values(&echo, "x-keygate-assertion")[0], s.clock.now())
        .unwrap();
    assert_eq!(claims.session_values["auth-userId"], "42");
    assert_eq!(claims.sid.as_deref(), Some(alice_sid.as_str()));

    let (_, echo) = json_of(get(&format!("{}/auth/other", g.http_url()), Some(&alice)).await).await;
    assert_eq!(values(&echo, "x-keygate-session-auth-userid"), vec!["42"]);
    let (_, echo) = json_of(get(&format!("{}/api/next", g.http_url()), Some(&bob)).await).await;
    assert!(
        echo["headers"]
            .get("x-keygate-session-auth-userid")
            .is_none(),
        "{echo}"
    );

    // A route that did not declare the export cannot set it.
    let _ = get(&format!("{}/api/export?v=99", g.http_url()), Some(&alice)).await;
    let (_, echo) = json_of(get(&format!("{}/api/next", g.http_url()), Some(&alice)).await).await;
    assert_eq!(values(&echo, "x-keygate-session-auth-userid"), vec!["42"]);

    g.stop().await;
    s.stop().await;
}

/// The gateway caches verified tokens until they expire: refusing one before
/// that can only come from the revocation feed.
#[tokio::test]
async fn a_revoked_session_is_refused_before_its_token_expires() {
    let s = serve().await;
    let up = upstream().await;
    let g = gateway::start(config(&s, &api_route(&up))).await.unwrap();
    let (token, sid) = login(&s, 65).await;
    let (other, _) = login(&s, 65).await;
    let url = format!("{}/api/x", g.http_url());
    // Verified once, then served from the cache of verified tokens.
    for _ in 0..3 {
        assert_eq!(get(&url, Some(&token)).await.status().as_u16(), 200);
    }

    let res = http()
        .delete(format!("{}/v1/sessions/{sid}", s.http()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let (lag, body) = until_status(&url, &token, 401).await;
    eprintln!("gateway refused the revoked session after {lag:?}");
    assert_eq!(body["error"], "session_revoked");
    assert_eq!(
        get(&url, Some(&other)).await.status().as_u16(),
        200,
        "other session"
    );

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn websockets_are_proxied_and_closed_when_their_session_is_revoked() {
    let s = serve().await;
    let up = upstream().await;
    let g = gateway::start(config(&s, &api_route(&up))).await.unwrap();
    let (token, sid) = login(&s, 66).await;

    // Without a token the handshake is refused with the JSON 401.
    let err = tokio_tungstenite::connect_async(g.ws_url("/api/ws"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => assert_eq!(res.status(), 401),
        other => panic!("{other}"),
    }

    let mut req = g.ws_url("/api/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req.headers_mut()
        .insert("x-keygate-identity", "forged".parse().unwrap());
    let (mut ws, res) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status().as_u16(), 101);
    let first = recv(&mut ws).await;
    assert_eq!(values(&first, "x-keygate-identity"), vec![id(&user(66))]);
    assert!(first["headers"].get("authorization").is_none());
    ws.send(Message::text("ping")).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("ping"));

    let res = http()
        .delete(format!("{}/v1/sessions/{sid}", s.http()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    // The token has most of its lifetime left: only the revocation closes it.
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the tunnel outlived its session");

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn bodies_stream_through_in_both_directions() {
    let s = serve().await;
    let up = upstream().await;
    let g = gateway::start(config(&s, &api_route(&up))).await.unwrap();
    let (token, _) = login(&s, 67).await;

    // A request body far over the Hub's 16 KiB limit passes intact, streamed.
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..64u8)
        .map(|i| Ok(Frame::data(Bytes::from(vec![i; 64 * 1024]))))
        .collect();
    let expected: Vec<u8> = (0..64u8).flat_map(|i| vec![i; 64 * 1024]).collect();
    let res = http()
        .post(format!("{}/api/upload", g.http_url()))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap(StreamBody::new(
            futures_util::stream::iter(chunks),
        )))
        .send()
        .await
        .unwrap();
    let (status, echo) = json_of(res).await;
    assert_eq!(status, 200);
    assert_eq!(echo["body_len"], expected.len());
    assert_eq!(echo["body_sha256"], hex(&Sha256::digest(&expected)));

    // The response's first chunk arrives while the upstream still holds the second
    // (until `release`: no race with time, so the usual bound).
    let mut res = get(&format!("{}/api/stream", g.http_url()), Some(&token)).await;
    assert_eq!(res.status().as_u16(), 200);
    let first = tokio::time::timeout(WAIT, res.chunk())
        .await
        .expect("first chunk before the upstream finished")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first\n");
    up.release.notify_one();
    let rest = tokio::time::timeout(WAIT, res.bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&rest[..], b"second\n");

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_502_with_a_json_body() {
    let s = serve().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let routes = format!(
        "[[route]]\nname = \"down\"\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{port}\"\n"
    );
    let g = gateway::start(config(&s, &routes)).await.unwrap();
    let (token, _) = login(&s, 68).await;
    let (status, body) = json_of(get(&format!("{}/x", g.http_url()), Some(&token)).await).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "bad_gateway");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    // The gateway's own JWKS is answered even with a catch-all route.
    let jwks = gateway_jwks(&g).await;
    assert_eq!(jwks.keys.len(), 1);

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn a_configured_signing_key_signs_the_assertions() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let s = serve().await;
    let up = upstream().await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let path = s.dir.path().join("gateway-key.pem");
    std::fs::write(&path, pem.as_bytes()).unwrap();
    let mut c = config(&s, &api_route(&up));
    c.signing_key = Some(path);
    let g = gateway::start(c).await.unwrap();
    let expected = keygate::token::Jwk::ed25519(key.verifying_key().as_bytes());
    assert_eq!(gateway_jwks(&g).await.keys, vec![expected]);
    g.stop().await;
    s.stop().await;
}

/// Without a configured key, the gateway draws its assertion key and its
/// assertion ids from the entropy it is given: with a seeded one, they are those
/// the same seed gives.
#[tokio::test]
async fn the_gateway_draws_its_key_and_assertion_ids_from_its_entropy() {
    use keygate::entropy::{Entropy, SeededEntropy};
    let s = serve().await;
    let up = upstream().await;
    let g = gateway::start_with(
        config(&s, &api_route(&up)),
        Arc::new(s.clock.clone()),
        Arc::new(SeededEntropy::new(76)),
    )
    .await
    .unwrap();
    let same: &dyn Entropy = &SeededEntropy::new(76);
    let key = ed25519_dalek::SigningKey::generate(&mut same.rng());
    let jti = keygate::session::random_id(&mut same.rng());
    let expected = keygate::token::Jwk::ed25519(key.verifying_key().as_bytes());
    assert_eq!(gateway_jwks(&g).await.keys, vec![expected]);

    let (token, _) = login(&s, 76).await;
    let (status, echo) = json_of(get(&format!("{}/api/x", g.http_url()), Some(&token)).await).await;
    assert_eq!(status, 200, "{echo}");
    let assertion = values(&echo, "x-keygate-assertion")[0];
    let claims = AssertionVerifier::new(&g.jwks, "keygate-gateway", "api")
        .verify(assertion, s.clock.now())
        .unwrap();
    assert_eq!(claims.jti, jti);
    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_replaced_when_the_upstream_closes_them() {
    let s = serve().await;
    let up = upstream().await;
    let g = gateway::start(config(&s, &api_route(&up))).await.unwrap();
    let (token, _) = login(&s, 74).await;
    // One client connection (reqwest keeps it alive): its requests share one
    // upstream connection.
    let client = http();
    for i in 0..5 {
        let res = client
            .get(format!("{}/api/k{i}", g.http_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        res.bytes().await.unwrap();
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 5);
    assert_eq!(
        up.conns.load(Ordering::SeqCst),
        1,
        "one kept-alive upstream connection"
    );
    // An upstream that closes its connection after each response: every request
    // still gets through, on a new connection.
    for i in 0..5 {
        let res = client
            .get(format!("{}/api/c{i}/close", g.http_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "request {i}");
        res.bytes().await.unwrap();
        // The point of the test: every other request comes a little later, once
        // the upstream's close may have reached the pool, so that both a stale
        // pooled connection and an already-dropped one are met.
        tokio::time::sleep(Duration::from_millis(10 * (i % 2))).await;
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 10);
    assert!(up.conns.load(Ordering::SeqCst) >= 5);
    g.stop().await;
    s.stop().await;
}

/// Waits (bounded) until `url` with `token` gets `status`; returns how long that
/// took (for the log: a loaded machine may take longer) and the body.
async fn until_status(url: &str, token: &str, status: u16) -> (Duration, Value) {
    let start = Instant::now();
    let res = eventually(&format!("{status} from {url}"), async || {
        let res = get(url, Some(token)).await;
        match res.status().as_u16() {
            s if s == status => Ok(res),
            other => Err(other),
        }
    })
    .await;
    (start.elapsed(), json_of(res).await.1)
}

/// `keygate serve` running the gateway with `routes`, without `hub` in its
/// configuration: it checks the tokens of the Hub it runs with.
async fn serve_with_gateway(routes: &str) -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = keygate::time::ManualClock::new(keygate::time::SystemClock.now());
    let mut o = options(keygate::server::Mode::Serve, &dir, &clock);
    let text = format!("listen = \"127.0.0.1:0\"\n{routes}");
    o.gateway = Some(GatewayConfig::parse(&text).unwrap());
    TestServer {
        running: keygate::server::start(o).await.unwrap(),
        clock,
        dir,
    }
}

#[tokio::test]
async fn serve_runs_the_gateway_on_its_own_hub_and_stops_it() {
    let up = upstream().await;
    let s = serve_with_gateway(&api_route(&up)).await;
    let g = s
        .running
        .gateway
        .as_ref()
        .expect("serve started the gateway");
    assert_ne!(g.addr, s.running.addr, "the gateway has its own address");
    let (gw_url, gw_addr, jwks) = (g.http_url(), g.addr, g.jwks.clone());
    let (token, sid) = login(&s, 70).await;
    let url = format!("{gw_url}/api/hello");

    let (status, echo) = json_of(get(&url, Some(&token)).await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(values(&echo, "x-keygate-identity"), vec![id(&user(70))]);
    assert_eq!(values(&echo, "x-keygate-session"), vec![sid.as_str()]);
    let assertion = values(&echo, "x-keygate-assertion")[0];
    let claims = AssertionVerifier::new(&jwks, "keygate-gateway", "api")
        .verify(assertion, s.clock.now())
        .unwrap();
    assert_eq!(claims.sid.as_deref(), Some(sid.as_str()));
    let (status, body) = json_of(get(&url, None).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);

    let res = http()
        .delete(format!("{}/v1/sessions/{sid}", s.http()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let (lag, body) = until_status(&url, &token, 401).await;
    eprintln!("in-process gateway refused the revoked session after {lag:?}");
    assert_eq!(body["error"], "session_revoked");

    // Stopping serve stops its gateway.
    s.stop().await;
    assert!(tokio::net::TcpStream::connect(gw_addr).await.is_err());
}

#[tokio::test]
async fn the_gateway_in_serve_follows_a_signing_key_rotation() {
    let up = upstream().await;
    let s = serve_with_gateway(&api_route(&up)).await;
    let g = s.running.gateway.as_ref().unwrap();
    let hub = s.running.hub.clone().unwrap();
    let url = format!("{}/api/x", g.http_url());
    let (old, _) = login(&s, 75).await;
    assert_eq!(get(&url, Some(&old)).await.status().as_u16(), 200);
    assert_eq!(g.verifier().key_fetches(), 1);

    let store = s.running.store.clone().unwrap();
    let (new_kid, _) = keygate::hub::rotate_signing_key(
        store.as_ref(),
        &keygate::entropy::OsEntropy,
        s.clock.now(),
        false,
    )
    .await
    .unwrap();
    // The Hub reloads its keys every second.
    eventually("the Hub to sign with the new key", async || {
        hub.signing_kid() == new_kid
    })
    .await;
    let (new, _) = login(&s, 75).await;
    assert_eq!(kid_of(&new), new_kid);
    let (status, echo) = json_of(get(&url, Some(&new)).await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(values(&echo, "x-keygate-identity"), vec![id(&user(75))]);
    assert_eq!(
        g.verifier().key_fetches(),
        2,
        "one read of the Hub's key ring"
    );
    assert_eq!(get(&url, Some(&old)).await.status().as_u16(), 200);
    s.stop().await;
}

/// `token` with its header replaced by one naming key `kid`.
fn with_kid(token: &str, kid: &str) -> String {
    use base64::Engine;
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}).to_string();
    let (_, rest) = token.split_once('.').unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
    format!("{b64}.{rest}")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn a_new_hub_signing_key_is_fetched_once_and_made_up_ones_are_rate_limited() {
    let s = serve().await;
    let up = upstream().await;
    let g = gateway::start(config(&s, &api_route(&up))).await.unwrap();
    let service = keygate::client::OfflineVerifier::start(&s.http(), "http://keygate.test")
        .await
        .unwrap();
    assert_eq!(g.verifier().key_fetches(), 1, "read once at start");
    let (old, _) = login(&s, 72).await;
    let url = format!("{}/api/x", g.http_url());
    assert_eq!(get(&url, Some(&old)).await.status().as_u16(), 200);

    // A key the gateway did not know at start: added to the store, and the Hub
    // restarted on the same address signs with it (the newest key signs).
    let addr = s.running.addr;
    let store = s.running.store.clone().unwrap();
    let new_key = ed25519_dalek::SigningKey::from_bytes(&[73; 32]);
    let new_kid = keygate::token::TokenSigner::new(new_key.clone())
        .kid()
        .to_owned();
    store
        .insert_signing_key(keygate::store::SigningKeyRecord {
            kid: new_kid.clone(),
            secret: new_key.to_bytes(),
            created_at: s.clock.now() + 1,
            retired_at: None,
        })
        .await
        .unwrap();
    drop(store);
    let dir = s.stop().await;
    let clock = keygate::time::ManualClock::new(keygate::time::SystemClock.now());
    let mut o = options(keygate::server::Mode::Serve, &dir, &clock);
    o.listen = addr;
    let s = TestServer {
        running: keygate::server::start(o).await.unwrap(),
        clock,
        dir,
    };
    let (new, _) = login(&s, 72).await;
    assert_eq!(kid_of(&new), new_kid);

    // The gateway reads the JWKS again for the unknown key id, and lets it through.
    let (status, echo) = json_of(get(&url, Some(&new)).await).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(values(&echo, "x-keygate-identity"), vec![id(&user(72))]);
    assert_eq!(g.verifier().key_fetches(), 2);
    assert_eq!(get(&url, Some(&old)).await.status().as_u16(), 200);

    // Made-up key ids: refused, and at most one more JWKS read per interval.
    for i in 0..20 {
        let forged = with_kid(&new, &format!("madeUpKeyId{i}"));
        let (status, body) = json_of(get(&url, Some(&forged)).await).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token"))
        );
    }
    assert!(
        g.verifier().key_fetches() <= 3,
        "{}",
        g.verifier().key_fetches()
    );

    // A service's verifier (`verify`, not async) refuses the new key once, reads
    // the JWKS in the background, then accepts it.
    eventually("the offline verifier to pick up the new key", async || {
        service.verify(&new, s.clock.now())
    })
    .await;
    assert_eq!(service.key_fetches(), 2);
    for i in 0..20 {
        let forged = with_kid(&new, &format!("madeUpKeyId{i}"));
        assert!(service.verify(&forged, s.clock.now()).is_err());
    }
    // Nothing to poll for: the check is that no more reads happen. The pause
    // lets background reads the forged ids might have started land first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(service.key_fetches() <= 3, "{}", service.key_fetches());

    g.stop().await;
    s.stop().await;
}

/// Runs the keygate binary with `args`, expects it to fail; returns its stderr.
fn keygate_fails(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    stderr
}

#[test]
fn a_bad_config_stops_the_binary_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // An unknown key (a typo) on line 5.
        "hub = \"http://127.0.0.1:1\"\n\n[[route]]\nname = \"api\"\nprefx = \"/api\"\nupstream = \"http://127.0.0.1:2\"\n",
        // A value that is no URL, on line 5.
        "hub = \"http://127.0.0.1:1\"\n[[route]]\nname = \"api\"\nprefix = \"/api\"\nupstream = \"not a url\"\n",
    ];
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    for (i, text) in cases.iter().enumerate() {
        let path = dir.path().join(format!("gateway{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let stderr = keygate_fails(&["gateway".as_ref(), "--config".as_ref(), path.as_ref()]);
        assert!(
            stderr.contains(&format!("gateway{i}.toml, line 5:")),
            "{stderr}"
        );
        // `keygate serve --gateway-config` reads it the same way, before starting.
        let stderr = keygate_fails(&[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--database".as_ref(),
            db.as_ref(),
            "--gateway-config".as_ref(),
            path.as_ref(),
        ]);
        assert!(
            stderr.contains(&format!("gateway{i}.toml, line 5:")),
            "{stderr}"
        );
    }
    // Only a gateway run by `keygate serve` may leave out the Hub's URL.
    let path = dir.path().join("nohub.toml");
    std::fs::write(
        &path,
        "[[route]]\nname = \"api\"\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:2\"\n",
    )
    .unwrap();
    let stderr = keygate_fails(&["gateway".as_ref(), "--config".as_ref(), path.as_ref()]);
    assert!(stderr.contains("nohub.toml: hub: required"), "{stderr}");
}

#[tokio::test]
async fn ambiguous_paths_connect_and_trace_are_refused_before_routing() {
    let s = serve().await;
    let up = upstream().await;
    // A public route and a catch-all `/` route, both in front of the upstream.
    let routes = format!(
        "[[route]]\nname = \"hooks\"\npublic = true\nkey_id = \"kgk_test\"\n\
         upstream = \"{0}/up\"\n[[route]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"{0}\"\n",
        up.url()
    );
    let g = gateway::start(config(&s, &routes)).await.unwrap();
    let (token, _) = login(&s, 70).await;

    for path in [
        "/public/kgk_test/hooks/..;/..;/api/admin",
        "/public/kgk_test/hooks/..;x=1/api/admin",
        "/public/kgk_test/hooks/.;/x",
        "/public/kgk_test/hooks/%252e%252e/%252e%252e/api",
        "/public/kgk_test/hooks/..%252f..%252fapi",
        "/public/kgk_test/hooks/%255c",
        "/public/kgk_test/hooks/%c0%ae%c0%ae/%c0%ae%c0%ae/api",
        "/public/kgk_test/hooks/%c0%af",
        "/public/kgk_test/hooks/%e0%80%ae",
        "/public/kgk_test/hooks/x%00",
        "/public/kgk_test/hooks/%2e%2e;/api",
        "/public/kgk_test/hooks/%zz",
    ] {
        // With and without a token: the path is refused before routing either way.
        for auth in ["", &format!("Authorization: Bearer {token}\r\n")] {
            let head =
                format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n");
            let (status, body) = raw(g.addr, &head).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("bad_request"), "{path}: {body}");
            assert!(
                !body.contains("..;") && !body.contains("%25"),
                "echoed: {body}"
            );
        }
    }
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );

    // CONNECT and TRACE through the `/` route: refused at once, never forwarded.
    for head in [
        format!(
            "CONNECT {} HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
            up.addr
        ),
        format!(
            "TRACE / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
        "TRACE /public/kgk_test/hooks/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
            .to_string(),
    ] {
        let (status, body) = raw(g.addr, &head).await;
        assert_eq!(status, 405, "{head}: {body}");
    }
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );

    // A plain path still goes through.
    let res = get(
        &format!("{}/public/kgk_test/hooks/a;b=1", g.http_url()),
        None,
    )
    .await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn websocket_tunnels_close_when_their_token_expires() {
    let s = serve().await;
    let up = upstream().await;
    // The gateway reads the same (manual) clock as the Hub that issues the token.
    let g = gateway::start_with_clock(config(&s, &api_route(&up)), Arc::new(s.clock.clone()))
        .await
        .unwrap();
    let t = ws_login(
        &s.ws("/ws/userauth"),
        Some(&s.origin()),
        &user(71),
        json!({"expiration": 60}),
    )
    .await;
    let token = tok(&t).to_owned();
    let mut req = g.ws_url("/api/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    recv(&mut ws).await;
    // Before `exp` the tunnel carries frames (several revocation ticks later: the
    // sleep lets the 200 ms tunnel check run on the advanced clock; it can only
    // weaken this check on a slow machine, not fail it).
    s.clock.advance(50);
    tokio::time::sleep(Duration::from_millis(600)).await;
    ws.send(Message::text("still")).await.unwrap();
    let m = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::text("still"));

    // At `exp` the gateway closes it with 1008.
    s.clock.advance(10);
    let code = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("no close frame: {e}"),
                None => panic!("closed without a close frame"),
            }
        }
    })
    .await
    .expect("the tunnel outlived its token");
    assert_eq!(code, Some(1008));

    g.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn key_bound_tokens_pass_only_with_a_proof_for_the_public_url_which_is_not_forwarded() {
    let s = serve().await;
    let up = upstream().await;
    let routes = format!(
        "{}[[route]]\nname = \"behind\"\nprefix = \"/behind\"\nupstream = \"{}\"\n\
         public_origin = \"https://api.example\"\n",
        api_route(&up),
        up.url()
    );
    let g = gateway::start(config(&s, &routes)).await.unwrap();
    let key = user(91);
    let t = keygate::client::login_http(
        &s.http(),
        &key,
        None,
        keygate::proto::TokenOptions {
            dpop: true,
            ..Default::default()
        },
        s.clock.now(),
    )
    .await
    .unwrap();
    let token = t.token;
    let proof = |htm: &str, url: &str, k: &ed25519_dalek::SigningKey| {
        keygate::client::dpop_proof(
            k,
            htm,
            url,
            Some(&token),
            None,
            keygate::time::SystemClock.now(),
        )
    };
    let send = async |path: &str, auth: String, proof: Option<String>| {
        let mut req = http()
            .get(format!("{}{path}", g.http_url()))
            .header("authorization", auth);
        if let Some(p) = proof {
            req = req.header("dpop", p);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    };
    // The default public URL: the Host the client sent, on http.
    let url = format!("{}/api/orders", g.http_url());
    let (status, body) = send(
        "/api/orders?page=2",
        format!("DPoP {token}"),
        Some(proof("GET", &url, &key)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert!(
        echo["headers"].get("dpop").is_none(),
        "the proof is not forwarded"
    );
    let assertion = values(&echo, "x-keygate-assertion")[0].to_owned();
    let claims = AssertionVerifier::new(&gateway_jwks(&g).await, "keygate-gateway", "api")
        .verify(&assertion, keygate::time::SystemClock.now())
        .unwrap();
    assert_eq!(
        claims.cnf.map(|c| c.jkt),
        Some(keygate::dpop::identity_jkt(&keygate::Identity::from(&key))),
        "the assertion says the call was key-bound"
    );
    // What a copied token gets without the key: nothing.
    for (auth, p) in [
        (format!("DPoP {token}"), None),
        (format!("Bearer {token}"), None),
        (format!("Bearer {token}"), Some(proof("GET", &url, &key))),
        (format!("DPoP {token}"), Some(proof("GET", &url, &user(92)))),
        (format!("DPoP {token}"), Some(proof("POST", &url, &key))),
    ] {
        let (status, body) = send("/api/orders", auth, p).await;
        assert_eq!(status, 401, "{body}");
    }
    // A route behind another proxy: proofs name its configured public origin.
    let (status, body) = send(
        "/behind/x",
        format!("DPoP {token}"),
        Some(proof("GET", "https://api.example/behind/x", &key)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(
        "/behind/x",
        format!("DPoP {token}"),
        Some(proof("GET", &format!("{}/behind/x", g.http_url()), &key)),
    )
    .await;
    assert_eq!(status, 401);
    // A token refused for itself is answered in the scheme it came with.
    for (scheme, want) in [("DPoP", "DPoP "), ("Bearer", "Bearer ")] {
        let res = http()
            .get(format!("{}/api/orders", g.http_url()))
            .header("authorization", format!("{scheme} {token}x"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let challenge = res.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with(want) && challenge.contains(r#"error="invalid_token""#),
            "{scheme}: {challenge}"
        );
    }
}
