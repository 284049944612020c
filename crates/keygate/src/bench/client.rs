//! One sign-in as a user's client does it, over the WebSocket or the HTTP flow,
//! kept lean because the load generator shares the machine's cores with the server
//! it measures. The challenge is checked (audience, identity, expiry) before it is
//! signed, as every keygate client must.
//!
//! The HTTP flow speaks just enough HTTP/1.1 (keep-alive, `Content-Length` bodies)
//! to drive `GET`/`POST /api/token` on one connection per client: a general client
//! such as reqwest costs more CPU per request than the server under test.

use std::net::SocketAddr;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::challenge;
use crate::identity::Identity;
use crate::signin::ServerFrame;
use crate::time::{Clock, SystemClock};

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` as written in the URL, for `Host` headers.
    pub authority: String,
    pub addr: SocketAddr,
    /// `ws://host:port/ws/userauth`.
    pub ws_url: String,
    /// The audience the challenge must name (and the `Origin` sent).
    pub audience: String,
}

impl Target {
    /// A target from a base URL (`http://127.0.0.1:8080`).
    pub fn new(base: &str, audience: Option<&str>) -> Result<Self, String> {
        let url = url::Url::parse(base).map_err(|e| format!("bad URL {base:?}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("{base}: give the server's http:// base URL"));
        }
        let host = url.host_str().ok_or("URL without a host")?;
        let port = url.port_or_known_default().ok_or("URL without a port")?;
        let authority = format!("{host}:{port}");
        let addr = authority
            .parse::<SocketAddr>()
            .map_err(|_| format!("{authority}: give a literal IP address (127.0.0.1)"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{addr}: benchmarks only target 127.0.0.1"));
        }
        Ok(Target {
            ws_url: format!("ws://{authority}/ws/userauth"),
            audience: audience.map_or_else(|| format!("http://{authority}"), str::to_owned),
            authority,
            addr,
        })
    }
}

/// A user whose key is made before the clock starts, with the requests that do
/// not depend on the challenge prepared in advance.
pub struct User {
    key: SigningKey,
    identity: Identity,
    token_frame: String,
    get_request: Vec<u8>,
    post_head: String,
}

impl User {
    pub fn new(target: &Target) -> Self {
        let key = SigningKey::generate(&mut crate::entropy::os_rng());
        let identity = Identity::from(&key);
        let id = identity.to_string();
        let (host, aud) = (&target.authority, &target.audience);
        User {
            token_frame: format!(r#"{{"type":"token","pubkey":"{id}"}}"#),
            get_request: format!(
                "GET /api/token?id={id} HTTP/1.1\r\nHost: {host}\r\nOrigin: {aud}\r\n\r\n"
            )
            .into_bytes(),
            post_head: format!(
                "POST /api/token HTTP/1.1\r\nHost: {host}\r\nOrigin: {aud}\r\n\
                 Content-Type: application/json\r\nContent-Length: "
            ),
            key,
            identity,
        }
    }

    /// Checks the challenge as a client must, then signs it.
    fn sign(&self, text: &str, audience: &str) -> Result<String, Failure> {
        challenge::check_before_signing(text, audience, &self.identity, SystemClock.now())
            .map_err(|e| Failure::Refused(e.code()))?;
        Ok(challenge::sign(&self.key, text))
    }
}

/// Why a sign-in failed, as counted in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Connect,
    /// The WebSocket upgrade was answered with this HTTP status.
    Upgrade(u16),
    /// The server answered with an error (code, and HTTP status for the HTTP flow).
    Server(String),
    /// The client refused to sign (bad audience, identity or expiry).
    Refused(&'static str),
    Protocol(&'static str),
    Timeout,
}

impl Failure {
    pub fn label(&self) -> String {
        match self {
            Failure::Connect => "connect".into(),
            Failure::Upgrade(s) => format!("upgrade_{s}"),
            Failure::Server(c) => format!("server:{c}"),
            Failure::Refused(c) => format!("refused:{c}"),
            Failure::Protocol(w) => format!("protocol:{w}"),
            Failure::Timeout => "timeout".into(),
        }
    }
}

/// Opens `/ws/userauth` the way a browser on the audience's origin does.
pub async fn ws_connect(target: &Target) -> Result<crate::client::WsStream, Failure> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    let mut req = target
        .ws_url
        .as_str()
        .into_client_request()
        .map_err(|_| Failure::Protocol("request"))?;
    let origin =
        HeaderValue::from_str(&target.audience).map_err(|_| Failure::Protocol("origin"))?;
    req.headers_mut().insert("origin", origin);
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    // Small frames only: tungstenite's default 128 KiB read buffer is zeroed on
    // every read, which would make the load generator spend its CPU on memset.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    match tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            Err(Failure::Upgrade(res.status().as_u16()))
        }
        Err(_) => Err(Failure::Protocol("handshake")),
    }
}

/// One sign-in over a fresh WebSocket: token frame, challenge, signature, token.
/// Returns once the token has arrived; the socket's close is left to
/// [`ws_finish`], outside the measured latency.
pub async fn ws_sign_in(target: &Target, user: &User) -> Result<crate::client::WsStream, Failure> {
    let mut ws = ws_connect(target).await?;
    ws.send(Message::text(user.token_frame.as_str()))
        .await
        .map_err(|_| Failure::Protocol("send"))?;
    let ServerFrame::Challenge { value, .. } = next_frame(&mut ws).await? else {
        return Err(Failure::Protocol("expected a challenge"));
    };
    let sig = user.sign(&value, &target.audience)?;
    ws.send(Message::text(format!(
        r#"{{"type":"challenge","sig":"{sig}"}}"#
    )))
    .await
    .map_err(|_| Failure::Protocol("send"))?;
    match next_frame(&mut ws).await? {
        ServerFrame::Token { value, .. } if !value.is_empty() => Ok(ws),
        _ => Err(Failure::Protocol("expected a token")),
    }
}

/// Ends the socket politely: a close frame, then reading until the server is gone.
pub async fn ws_finish(mut ws: crate::client::WsStream) {
    let _ = ws.close(None).await;
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}

async fn next_frame(ws: &mut crate::client::WsStream) -> Result<ServerFrame, Failure> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let f: ServerFrame =
                    serde_json::from_str(&t).map_err(|_| Failure::Protocol("bad frame"))?;
                if let ServerFrame::Error { code, .. } = f {
                    return Err(Failure::Server(code));
                }
                return Ok(f);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) | None => return Err(Failure::Protocol("closed early")),
            Some(Err(_)) => return Err(Failure::Protocol("read")),
        }
    }
}

/// One client's keep-alive HTTP/1.1 connection.
#[derive(Default)]
pub struct HttpConn {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

#[derive(Deserialize)]
struct ChallengeBody {
    challenge: String,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

#[derive(serde::Serialize)]
struct TokenRequest<'a> {
    id: &'a str,
    challenge: &'a str,
    sig: &'a str,
}

impl HttpConn {
    /// One sign-in over `GET /api/token` then `POST /api/token`.
    pub async fn sign_in(&mut self, target: &Target, user: &User) -> Result<(), Failure> {
        let r = self.sign_in_inner(target, user).await;
        if r.is_err() {
            // Whatever state the connection is in, start the next one afresh.
            self.stream = None;
        }
        r
    }

    async fn sign_in_inner(&mut self, target: &Target, user: &User) -> Result<(), Failure> {
        self.out.clear();
        self.out.extend_from_slice(&user.get_request);
        let body = self.round_trip(target).await?;
        let c: ChallengeBody = json(&body)?;
        let sig = user.sign(&c.challenge, &target.audience)?;
        let id = user.identity.to_string();
        let payload = serde_json::to_vec(&TokenRequest {
            id: &id,
            challenge: &c.challenge,
            sig: &sig,
        })
        .map_err(|_| Failure::Protocol("encode"))?;
        self.out.clear();
        self.out.extend_from_slice(user.post_head.as_bytes());
        self.out
            .extend_from_slice(format!("{}\r\n\r\n", payload.len()).as_bytes());
        self.out.extend_from_slice(&payload);
        let body = self.round_trip(target).await?;
        let t: TokenBody = json(&body)?;
        if t.token.is_empty() {
            return Err(Failure::Protocol("empty token"));
        }
        Ok(())
    }

    /// Sends `self.out`, reads one response; a non-2xx status is the body's error.
    async fn round_trip(&mut self, target: &Target) -> Result<Vec<u8>, Failure> {
        if self.stream.is_none() {
            let s = TcpStream::connect(target.addr)
                .await
                .map_err(|_| Failure::Connect)?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.buf.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failure::Connect);
        };
        stream
            .write_all(&self.out)
            .await
            .map_err(|_| Failure::Protocol("write"))?;
        let head = loop {
            if let Some(h) = parse_head(&self.buf)? {
                break h;
            }
            read_more(stream, &mut self.buf).await?;
        };
        while self.buf.len() < head.len + head.body_len {
            read_more(stream, &mut self.buf).await?;
        }
        let body = self.buf[head.len..head.len + head.body_len].to_vec();
        self.buf.drain(..head.len + head.body_len);
        if head.close {
            self.stream = None;
        }
        if !(200..300).contains(&head.status) {
            let code = json::<ErrorBody>(&body).map_or_else(|_| "unknown".into(), |e| e.error);
            return Err(Failure::Server(format!("{}:{code}", head.status)));
        }
        Ok(body)
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Failure> {
    if buf.len() > 64 * 1024 {
        return Err(Failure::Protocol("response too large"));
    }
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) => Err(Failure::Protocol("closed early")),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(_) => Err(Failure::Protocol("read")),
    }
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|_| Failure::Protocol("bad JSON"))
}

/// The parts of a response head the client needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Length of the head, blank line included.
    pub len: usize,
    pub body_len: usize,
    pub close: bool,
}

/// Parses a response head once it is complete (`None` until then). Bodies must
/// come with a `Content-Length`, as both servers under test send them.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| Failure::Protocol("head"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or(Failure::Protocol("status line"))?;
    let (mut body_len, mut close) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::Protocol("chunked body"));
        }
    }
    Ok(Some(Head {
        status,
        len: end + 4,
        body_len: body_len.ok_or(Failure::Protocol("no content-length"))?,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        let r =
            b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nconnection: keep-alive\r\n\r\n{\"token\":1}";
        assert_eq!(
            parse_head(r),
            Ok(Some(Head {
                status: 200,
                len: r.len() - 11,
                body_len: 12,
                close: false
            }))
        );
        let closing =
            b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_head(closing),
            Ok(Some(Head {
                status: 429,
                close: true,
                ..
            }))
        ));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
        assert!(parse_head(b"SPDY 200\r\n\r\n").is_err());
    }

    #[test]
    fn targets_are_loopback_only() {
        let t = Target::new("http://127.0.0.1:8090", None).unwrap();
        assert_eq!(t.ws_url, "ws://127.0.0.1:8090/ws/userauth");
        assert_eq!(t.audience, "http://127.0.0.1:8090");
        assert!(Target::new("http://10.0.0.1:8080", None).is_err());
        assert!(Target::new("ws://127.0.0.1:8080", None).is_err());
    }
}
