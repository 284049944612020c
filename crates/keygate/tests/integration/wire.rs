//! Wire findings from real clients and a hostile audit: errors that never echo
//! input, flow-bound challenges, one answer for a forged nonce and a bad
//! signature, Node `Buffer` signatures, RFC 9068 claims, token time checks at the
//! Hub, renewal codes, and a clean close after an error.

use keygate::time::Clock;
use keygate::token::{AccessClaims, TokenSigner};
use serde_json::{Value, json};

use crate::support::*;

/// A signature as a Node `Buffer` serialised to JSON.
fn buffer_sig(key: &ed25519_dalek::SigningKey, text: &str) -> Value {
    use ed25519_dalek::Signer;
    let bytes = key.sign(text.as_bytes()).to_bytes();
    json!({"type": "Buffer", "data": bytes.to_vec()})
}

/// Opens `/ws/userauth` and asks for a challenge; returns the socket and text.
async fn ws_challenge(
    s: &TestServer,
    key: &ed25519_dalek::SigningKey,
    extra: Value,
) -> (Ws, String) {
    let mut ws = connect(&s.ws("/ws/userauth"), Some(&s.origin())).await;
    let mut first = json!({"type": "token", "pubkey": id(key)});
    if let (Some(f), Some(e)) = (first.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    send(&mut ws, first).await;
    let c = recv(&mut ws).await;
    assert_eq!(c["type"], "challenge", "{c}");
    (ws, c["value"].as_str().unwrap().to_owned())
}

/// `GET /api/token?id=` on the Provider; the challenge text.
async fn http_challenge(s: &TestServer, key: &ed25519_dalek::SigningKey) -> String {
    let res = http()
        .get(format!("{}/api/token", s.http()))
        .query(&[("id", id(key))])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200, "{body}");
    body["challenge"].as_str().unwrap().to_owned()
}

/// `POST /api/token` on the Provider; status, JSON body and raw body text.
async fn api_token(s: &TestServer, body: Value) -> (u16, Value, String) {
    let res = http()
        .post(format!("{}/api/token", s.http()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// Characters an error must never reflect: NUL, RIGHT-TO-LEFT OVERRIDE, a
/// combining mark.
const HOSTILE: &str = "read\u{0}\u{202e}nimda\u{301}";

fn assert_not_echoed(raw: &str) {
    for bad in [
        "\u{0}", "\\u0000", "\u{202e}", "\\u202e", "\u{301}", "\\u0301", "nimda",
    ] {
        assert!(!raw.contains(bad), "{bad:?} echoed in {raw}");
    }
}

#[tokio::test]
async fn error_messages_name_the_field_and_never_echo_it() {
    let s = serve().await;
    let key = user(60);
    // POST /api/token (the options are checked before the signature).
    let text = http_challenge(&s, &key).await;
    let (status, body, raw) = api_token(
        &s,
        json!({"id": id(&key), "challenge": text, "sig": sign(&key, &text), "scope": HOSTILE}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("invalid_scope")),
        "{raw}"
    );
    assert!(body["message"].as_str().unwrap().contains("scope"), "{raw}");
    assert_not_echoed(&raw);
    // The same over the socket.
    let (mut ws, text) = ws_challenge(&s, &key, json!({"scope": HOSTILE})).await;
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&key, &text)}),
    )
    .await;
    let f = expect_error(&mut ws, "invalid_scope", 1008).await;
    assert_not_echoed(&f.to_string());
    // And on the Hub's own endpoint.
    let (kid, secret) = s.api_key(&["read"]).await;
    let client = keygate::client::HubClient::new(&s.http(), &kid, secret.clone()).unwrap();
    let c = client.challenge(&id(&key), None).await.unwrap();
    let res = http()
        .post(format!("{}/v1/token", s.http()))
        .headers(api_headers(&kid, &secret, s.clock.now() + 60))
        .json(&json!({"pubkey": id(&key), "challenge": c.text,
                      "sig": sign(&key, &c.text), "scope": format!("read {HOSTILE}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_not_echoed(&res.text().await.unwrap());
    // Other fields: a hostile client_id or access_type is named, not quoted.
    for extra in [
        json!({"client_id": HOSTILE}),
        json!({"access_type": HOSTILE}),
    ] {
        let text = http_challenge(&s, &key).await;
        let mut body = json!({"id": id(&key), "challenge": text, "sig": sign(&key, &text)});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, _, raw) = api_token(&s, body).await;
        assert_eq!(status, 400, "{raw}");
        assert_not_echoed(&raw);
    }
    s.stop().await;
}

#[tokio::test]
async fn a_challenge_is_redeemed_only_by_the_flow_that_issued_it() {
    let s = serve().await;
    let key = user(61);
    // Issued on /ws/userauth, redeemed by POST /api/token: refused.
    let (ws, text) = ws_challenge(&s, &key, json!({})).await;
    drop(ws);
    let (status, body, _) = api_token(
        &s,
        json!({"id": id(&key), "challenge": text, "sig": sign(&key, &text)}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_signature")),
        "{body}"
    );
    // The HTTP flow's own challenge is redeemed by it.
    let text = http_challenge(&s, &key).await;
    let (status, body, _) = api_token(
        &s,
        json!({"id": id(&key), "challenge": text, "sig": sign(&key, &text)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Issued on /v1/ws/token, redeemed by POST /v1/token: refused.
    let (kid, secret) = s.api_key(&[]).await;
    let client = keygate::client::HubClient::new(&s.http(), &kid, secret).unwrap();
    let mut ws = client.connect_ws().await.unwrap();
    send(&mut ws, json!({"type": "token", "pubkey": id(&key)})).await;
    let c = recv(&mut ws).await;
    let text = c["value"].as_str().unwrap();
    match client
        .token(&id(&key), text, &sign(&key, text), &Default::default())
        .await
    {
        Err(keygate::client::ClientError::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (401, "invalid_signature"))
        }
        other => panic!("expected 401 invalid_signature, got {other:?}"),
    }
    // While the socket's own challenge still works on the socket.
    send(
        &mut ws,
        json!({"type": "challenge", "sig": sign(&key, text)}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "token");
    s.stop().await;
}

#[tokio::test]
async fn a_forged_nonce_and_a_bad_signature_get_the_same_answer() {
    let s = serve().await;
    let key = user(62);
    let text = http_challenge(&s, &key).await;
    // A nonce this server never issued: one character of its tag changed.
    let nonce_line = text.lines().find(|l| l.starts_with("nonce: ")).unwrap();
    let mut nonce: Vec<u8> = nonce_line["nonce: ".len()..].bytes().collect();
    nonce[30] = if nonce[30] == b'A' { b'B' } else { b'A' };
    let forged = text.replace(
        nonce_line,
        &format!("nonce: {}", String::from_utf8(nonce).unwrap()),
    );
    let (s1, forged_body, _) = api_token(
        &s,
        json!({"id": id(&key), "challenge": forged, "sig": sign(&key, &forged)}),
    )
    .await;
    // The real challenge, signed by someone else.
    let (s2, bad_sig_body, _) = api_token(
        &s,
        json!({"id": id(&key), "challenge": text, "sig": sign(&user(63), &text)}),
    )
    .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(forged_body["error"], "invalid_signature");
    assert_eq!(forged_body, bad_sig_body);
    s.stop().await;
}

#[tokio::test]
async fn node_buffer_signatures_sign_in_on_every_surface() {
    let s = serve().await;
    let key = user(64);
    // /ws/userauth, the way the Textile example client sends it.
    let (mut ws, text) = ws_challenge(&s, &key, json!({})).await;
    send(
        &mut ws,
        json!({"type": "challenge", "sig": buffer_sig(&key, &text)}),
    )
    .await;
    let t = recv(&mut ws).await;
    assert_eq!(t["type"], "token", "{t}");
    // POST /api/token.
    let text = http_challenge(&s, &key).await;
    let (status, body, _) = api_token(
        &s,
        json!({"id": id(&key), "challenge": text, "sig": buffer_sig(&key, &text)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The Hub: /v1/ws/token and POST /v1/token.
    let (kid, secret) = s.api_key(&[]).await;
    let client = keygate::client::HubClient::new(&s.http(), &kid, secret.clone()).unwrap();
    let mut hws = client.connect_ws().await.unwrap();
    send(&mut hws, json!({"type": "token", "pubkey": id(&key)})).await;
    let c = recv(&mut hws).await;
    let htext = c["value"].as_str().unwrap();
    send(
        &mut hws,
        json!({"type": "challenge", "sig": buffer_sig(&key, htext)}),
    )
    .await;
    assert_eq!(recv(&mut hws).await["type"], "token");
    let c = client.challenge(&id(&key), None).await.unwrap();
    let res = http()
        .post(format!("{}/v1/token", s.http()))
        .headers(api_headers(&kid, &secret, s.clock.now() + 60))
        .json(&json!({"pubkey": id(&key), "challenge": c.text, "sig": buffer_sig(&key, &c.text)}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // 63 bytes, a byte of 256, another type: refused (bad_request), with `value`.
    let mut short = buffer_sig(&key, &text);
    short["data"].as_array_mut().unwrap().pop();
    let mut high = buffer_sig(&key, &text);
    high["data"][0] = json!(256);
    let mut other = buffer_sig(&key, &text);
    other["type"] = json!("Uint8Array");
    for sig in [short, high, other] {
        let (mut ws, _) = ws_challenge(&s, &key, json!({})).await;
        send(&mut ws, json!({"type": "challenge", "sig": sig})).await;
        let f = expect_error(&mut ws, "bad_request", 1008).await;
        assert_eq!(f["value"], f["message"]);
        let text = http_challenge(&s, &key).await;
        let (status, body, _) =
            api_token(&s, json!({"id": id(&key), "challenge": text, "sig": sig})).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    }
    // A wrong signature in Buffer form is a bad signature like any other, and the
    // error frame carries the message as `value` too.
    let (mut ws, text) = ws_challenge(&s, &key, json!({})).await;
    send(
        &mut ws,
        json!({"type": "challenge", "sig": buffer_sig(&user(65), &text)}),
    )
    .await;
    let f = expect_error(&mut ws, "invalid_signature", 1008).await;
    assert!(f["value"].as_str().is_some_and(|v| !v.is_empty()));
    s.stop().await;
}

#[tokio::test]
async fn tokens_always_carry_client_id_and_no_empty_scope() {
    let s = serve().await;
    let key = user(66);
    let app = s.running.provider_key.clone().unwrap();
    let t = ws_login(&s.ws("/ws/userauth"), Some(&s.origin()), &key, json!({})).await;
    let claims = keygate::token::decode_unverified(tok(&t)).unwrap();
    assert_eq!(claims["client_id"], app.as_str(), "{claims}");
    assert!(claims.get("scope").is_none(), "{claims}");
    let (status, me) = get(&s, "/v1/whoami", tok(&t)).await;
    assert_eq!(status, 200);
    assert_eq!(me["client_id"], app.as_str());
    assert_eq!(me["scope"], "");
    // Introspection says the same (to a key that may read other apps' tokens).
    let (kid, secret) = s
        .api_key_with(|k| keygate::store::ApiKeyRecord {
            introspect_any: true,
            ..k
        })
        .await;
    let res = http()
        .post(format!("{}/v1/introspect", s.http()))
        .headers(api_headers(&kid, &secret, s.clock.now() + 60))
        .json(&json!({"token": tok(&t)}))
        .send()
        .await
        .unwrap();
    let (_, intro) = json_of(res).await;
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["client_id"], app.as_str());
    assert!(intro.get("scope").is_none(), "{intro}");
    // A client named at sign-in is the client_id.
    let t = ws_login(
        &s.ws("/ws/userauth"),
        Some(&s.origin()),
        &key,
        json!({"client_id": "cli"}),
    )
    .await;
    let claims = keygate::token::decode_unverified(tok(&t)).unwrap();
    assert_eq!(claims["client_id"], "cli");
    assert_eq!(get(&s, "/v1/whoami", tok(&t)).await.1["client_id"], "cli");
    s.stop().await;
}

/// The Hub's current signing key, to mint tokens the Hub did not.
async fn hub_signer(s: &TestServer) -> TokenSigner {
    let store = s.running.store.as_ref().unwrap();
    let rec = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.retired_at.is_none())
        .unwrap();
    TokenSigner::new(ed25519_dalek::SigningKey::from_bytes(&rec.secret))
}

#[tokio::test]
async fn the_hub_checks_iat_lifetime_audience_and_exp_without_leeway() {
    let s = serve().await;
    let key = user(67);
    let t = ws_login(&s.ws("/ws/userauth"), Some(&s.origin()), &key, json!({})).await;
    let signer = hub_signer(&s).await;
    let real: AccessClaims = verifier(&s.http())
        .await
        .verify(tok(&t), s.clock.now())
        .unwrap();
    let now = s.clock.now();
    let whoami_with = |f: &dyn Fn(&mut AccessClaims)| {
        let mut c = real.clone();
        f(&mut c);
        signer.mint(&c)
    };
    // The real token passes; the same claims re-signed pass too (a sanity check).
    assert_eq!(get(&s, "/v1/whoami", &whoami_with(&|_| {})).await.0, 200);
    let cases: [(&str, ClaimsEdit); 4] = [
        ("iat an hour ahead", &|c| c.iat = now + 3600),
        ("exp 2^63-1", &|c| c.exp = i64::MAX),
        ("two-day lifetime", &|c| c.exp = c.iat + 2 * 86_400),
        ("another app's aud", &|c| c.aud = "kgk_someoneelse".into()),
    ];
    for (what, f) in cases {
        let (status, body) = get(&s, "/v1/whoami", &whoami_with(f)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "{what}: {body}"
        );
    }
    // At exp the Hub refuses, though offline verifiers allow 60 s of leeway.
    s.clock.set(real.exp - 1);
    assert_eq!(get(&s, "/v1/whoami", tok(&t)).await.0, 200);
    s.clock.set(real.exp);
    let (status, body) = get(&s, "/v1/whoami", tok(&t)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_expired")),
        "{body}"
    );
    assert!(verifier(&s.http()).await.verify(tok(&t), real.exp).is_ok());
    s.stop().await;
}

/// A raw WebSocket client: after an oversized frame it must read the error frame,
/// then the close frame (1009), and after its own close the server's end of
/// the TCP connection (EOF), never a reset.
#[tokio::test]
async fn an_oversized_frame_gets_its_error_and_a_clean_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = serve().await;
    let addr = s.running.addr;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws/userauth HTTP/1.1\r\nHost: {addr}\r\nOrigin: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        s.origin()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    // The 101 head, byte by byte up to its blank line (nothing after it is ours).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096);
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "upgrade answer cut short");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // One masked text frame of 20 KiB (over the 16 KiB limit), sent whole.
    let len = 20 * 1024;
    let mut frame = vec![0x81, 0x80 | 126, (len >> 8) as u8, len as u8, 1, 2, 3, 4];
    frame.extend((0..len).map(|i| b'a' ^ [1, 2, 3, 4][i % 4]));
    tcp.write_all(&frame).await.unwrap();
    // Read what the server sends until it closes its side (EOF).
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut replied = false;
    let end = loop {
        let r = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("server answers in time");
        match r {
            Ok(0) => break Ok(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
        // Once the close frame is in, answer it as a client does (masked, 1009).
        if !replied && parse_frames(&got).iter().any(|(op, _)| *op == 8) {
            replied = true;
            let _ = tcp
                .write_all(&[0x88, 0x82, 9, 9, 9, 9, 0x03 ^ 9, 0xf1 ^ 9])
                .await;
        }
    };
    let frames = parse_frames(&got);
    assert!(frames.len() >= 2, "frames: {frames:?}");
    assert_eq!(frames[0].0, 1, "a text frame first");
    let error: Value = serde_json::from_slice(&frames[0].1).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "message_too_large");
    assert_eq!(error["value"], error["message"]);
    assert_eq!(frames[1].0, 8, "then the close frame");
    assert_eq!(u16::from_be_bytes([frames[1].1[0], frames[1].1[1]]), 1009);
    assert!(end.is_ok(), "the server reset the connection: {end:?}");
    s.stop().await;
}

/// Unmasked server frames in `bytes` (complete ones): (opcode, payload).
fn parse_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let op = bytes[0] & 0x0f;
        let (len, at) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if bytes.len() < at + len {
            break;
        }
        out.push((op, bytes[at..at + len].to_vec()));
        bytes = &bytes[at + len..];
    }
    out
}

/// A change to a token's claims, for the refusal cases.
type ClaimsEdit<'a> = &'a dyn Fn(&mut AccessClaims);
