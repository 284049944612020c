//! The Rust client of keygate: for services that verify tokens offline
//! ([`OfflineVerifier`], [`fetch_verifier`]), for app backends talking to a Hub with
//! their API key ([`HubClient`]), and for users signing in with a local key
//! ([`login_ws`], [`login_http`], [`account`]).
//!
//! It depends on the protocol (`keygate-core`, re-exported as [`core`]) and the
//! wire types (`keygate-proto`, as [`proto`]), plus reqwest and tokio-tungstenite;
//! never on the server, a database or a web framework.
//!
//! # Verify a token
//!
//! A service in front of which users present keygate access tokens follows the
//! Hub's keys and revocations and checks each token locally:
//!
//! ```no_run
//! use keygate_client::OfflineVerifier;
//! use keygate_client::core::time::{Clock, SystemClock};
//!
//! # async fn check(token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let hub = "https://hub.example";
//! let verifier = OfflineVerifier::start(hub, hub).await?; // JWKS + revocation feed
//! let claims = verifier.verify_async(token, SystemClock.now()).await?;
//! println!("user {} of app {}", claims.sub, claims.aud);
//! # Ok(()) }
//! ```
//!
//! The same check with a JWKS already in hand (what `GET /.well-known/jwks.json`
//! answers), runnable as it is:
//!
//! ```
//! use keygate_client::core::token::{Jwks, TokenVerifier};
//! # use keygate_client::core::token::{AccessClaims, TokenSigner};
//! # let hub_key = TokenSigner::new(ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
//! # let jwks_json = format!(r#"{{"keys":[{}]}}"#, serde_json::to_string(hub_key.jwk())?);
//! # let now = 1_795_430_809;
//! # let token = hub_key.mint(&AccessClaims {
//! #     iss: "https://hub.example".into(), sub: "bbaareialice".into(), aud: "kgk_app".into(),
//! #     iat: now, nbf: now, exp: now + 600, jti: "j1".into(), sid: "s1".into(),
//! #     scope: String::new(), client_id: Some("kgk_app".into()), role: None, acct: None,
//! #     acr: Some("aal1".into()), amr: Some(vec!["swk".into()]),
//! #     cnf: None,
//! # });
//!
//! let jwks: Jwks = serde_json::from_str(&jwks_json)?;
//! let verifier = TokenVerifier::new(&jwks, "https://hub.example");
//! let claims = verifier.verify(&token, now)?; // signature, typ, iss, times
//! assert_eq!((claims.sub.as_str(), claims.aud.as_str()), ("bbaareialice", "kgk_app"));
//! assert!(verifier.verify(&format!("{token}x"), now).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use keygate_core as core;
pub use keygate_proto as proto;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use keygate_core::apikey::{ApiSecret, HEADER_KEY, HEADER_MSG, HEADER_SIG};
use keygate_core::challenge::{self, ChallengeError, IssuedChallenge};
use keygate_core::error::Error;
use keygate_core::identity::Identity;
use keygate_core::time::{UnixTime, parse_rfc3339};
use keygate_core::token::{Jwks, TokenVerifier};
use keygate_proto::{
    ChallengeBody, ClientFrame, IssuedToken, MAX_FRAME, RefreshRequest, ServerFrame, TokenOptions,
};

pub mod account;
pub mod device;
pub mod mux;
pub mod recovery;
mod verifier;
pub use verifier::{
    KEY_REFETCH_INTERVAL, KEY_REFRESH_PERIOD, OfflineVerifier, Presented, TokenAuthority,
};

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long an API-key signature made by the client stays valid.
const SIG_TTL: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {0}")]
    Connect(String),
    #[error("server refused: {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("refusing to sign: {0}")]
    Refused(ChallengeError),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<ClientError> for Error {
    /// How a Provider reports a failure of the Hub behind it.
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Server {
                status,
                code,
                message,
            } => Error::from_remote(status, &code, &message),
            ClientError::Connect(_) => Error::Unavailable,
            ClientError::Refused(c) => Error::Challenge(c),
            ClientError::Protocol(_) => Error::Unavailable,
        }
    }
}

/// An app backend's handle on a Hub: its base URL and API key.
#[derive(Clone)]
pub struct HubClient {
    http_base: String,
    ws_base: String,
    key_id: String,
    secret: ApiSecret,
    http: reqwest::Client,
}

impl HubClient {
    /// `hub_url` is the Hub's base URL, `ws://…`, `wss://…`, `http://…` or
    /// `https://…`, with or without a path.
    pub fn new(hub_url: &str, key_id: &str, secret: ApiSecret) -> Result<Self, ClientError> {
        let url = reqwest::Url::parse(hub_url)
            .map_err(|_| ClientError::Protocol(format!("bad hub URL {hub_url:?}")))?;
        let (http_scheme, ws_scheme) = match url.scheme() {
            "ws" | "http" => ("http", "ws"),
            "wss" | "https" => ("https", "wss"),
            other => return Err(ClientError::Protocol(format!("unsupported scheme {other}"))),
        };
        let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
        Ok(HubClient {
            http_base: format!("{http_scheme}://{authority}"),
            ws_base: format!("{ws_scheme}://{authority}"),
            key_id: key_id.to_owned(),
            secret,
            http: reqwest::Client::new(),
        })
    }

    pub fn http_base(&self) -> &str {
        &self.http_base
    }

    fn signature(&self) -> [(&'static str, String); 3] {
        let (msg, sig) = self
            .secret
            .sign(keygate_core::time::Clock::now(&keygate_core::time::SystemClock) + SIG_TTL);
        [
            (HEADER_KEY, self.key_id.clone()),
            (HEADER_MSG, msg),
            (HEADER_SIG, sig),
        ]
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.http_base))
            .json(body);
        for (k, v) in self.signature() {
            req = req.header(k, v);
        }
        read_json(
            req.send()
                .await
                .map_err(|_| ClientError::Connect(self.http_base.clone()))?,
        )
        .await
    }

    /// `POST /v1/challenge`.
    pub async fn challenge(
        &self,
        pubkey: &str,
        audience: Option<&str>,
    ) -> Result<IssuedChallenge, ClientError> {
        let body: ChallengeBody = self
            .post(
                "/v1/challenge",
                &serde_json::json!({ "pubkey": pubkey, "audience": audience }),
            )
            .await?;
        Ok(IssuedChallenge {
            expires_at: parse_rfc3339(&body.expires_at)
                .ok_or_else(|| ClientError::Protocol("bad expires_at".into()))?,
            text: body.challenge,
        })
    }

    /// `POST /v1/token`.
    pub async fn token(
        &self,
        pubkey: &str,
        challenge: &str,
        sig: &str,
        options: &TokenOptions,
    ) -> Result<IssuedToken, ClientError> {
        let mut body =
            serde_json::to_value(options).map_err(|e| ClientError::Protocol(e.to_string()))?;
        body["pubkey"] = pubkey.into();
        body["challenge"] = challenge.into();
        body["sig"] = sig.into();
        self.post("/v1/token", &body).await
    }

    /// Opens `/v1/ws/token`, authenticated with the API-key signature.
    pub async fn connect_ws(&self) -> Result<WsStream, ClientError> {
        self.connect_signed("/v1/ws/token").await
    }

    /// Opens `/v1/ws/mux` (many sign-ins over one socket), authenticated with the
    /// API-key signature; run it with [`mux::MuxLink::start`], or let a
    /// [`mux::MuxPool`] do both.
    pub async fn connect_mux(&self) -> Result<WsStream, ClientError> {
        self.connect_signed("/v1/ws/mux").await
    }

    async fn connect_signed(&self, path: &str) -> Result<WsStream, ClientError> {
        let url = format!("{}{path}", self.ws_base);
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        for (k, v) in self.signature() {
            let v = HeaderValue::from_str(&v).map_err(|e| ClientError::Protocol(e.to_string()))?;
            req.headers_mut().insert(k, v);
        }
        connect(req, &self.ws_base).await
    }

    /// Forwards a user request (`/v1/whoami`, `/v1/sessions`…) to the Hub as is,
    /// keeping only the headers that carry the user's token.
    pub async fn forward(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &reqwest::header::HeaderMap,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.http_base))
            .body(body);
        for name in [
            "authorization",
            "x-auth-token",
            "content-type",
            "user-agent",
        ] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                req = req.header(name, v);
            }
        }
        let res = req
            .send()
            .await
            .map_err(|_| ClientError::Connect(self.http_base.clone()))?;
        let status = res.status().as_u16();
        let bytes = res
            .bytes()
            .await
            .map_err(|_| ClientError::Connect(self.http_base.clone()))?;
        Ok((status, bytes.to_vec()))
    }

    /// `POST /v1/token/refresh` (no API key needed; for completeness of the client).
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_id: &str,
    ) -> Result<IssuedToken, ClientError> {
        let body = RefreshRequest {
            refresh_token: refresh_token.to_owned(),
            client_id: client_id.to_owned(),
        };
        self.post("/v1/token/refresh", &body).await
    }
}

async fn read_json<T: DeserializeOwned>(res: reqwest::Response) -> Result<T, ClientError> {
    let status = res.status().as_u16();
    let bytes = res
        .bytes()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()));
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Err(ClientError::Server {
        status,
        code: v["error"].as_str().unwrap_or("unknown").to_owned(),
        message: v["message"].as_str().unwrap_or("").to_owned(),
    })
}

async fn connect(
    req: tokio_tungstenite::tungstenite::handshake::client::Request,
    what: &str,
) -> Result<WsStream, ClientError> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME * 4))
        .max_frame_size(Some(MAX_FRAME * 4));
    match tokio_tungstenite::connect_async_with_config(req, Some(config), true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let status = res.status().as_u16();
            let v: serde_json::Value = res
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            Err(ClientError::Server {
                status,
                code: v["error"].as_str().unwrap_or("unknown").to_owned(),
                message: v["message"].as_str().unwrap_or("").to_owned(),
            })
        }
        Err(_) => Err(ClientError::Connect(what.to_owned())),
    }
}

/// Sends one frame and reads the server's answer (skipping pings).
pub async fn exchange(ws: &mut WsStream, frame: &ClientFrame) -> Result<ServerFrame, ClientError> {
    let text = serde_json::to_string(frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let f: ServerFrame =
                    serde_json::from_str(&t).map_err(|e| ClientError::Protocol(e.to_string()))?;
                if let ServerFrame::Error { code, message, .. } = f {
                    return Err(ClientError::Server {
                        status: Error::status_for_code(&code),
                        code,
                        message,
                    });
                }
                return Ok(f);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) | None => return Err(ClientError::Protocol("socket closed".into())),
            Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
        }
    }
}

/// The audience a browser on `url`'s origin would see: `ws://h:p/x` → `http://h:p`.
pub fn origin_of(url: &str) -> Result<String, ClientError> {
    let u =
        reqwest::Url::parse(url).map_err(|_| ClientError::Protocol(format!("bad URL {url:?}")))?;
    let scheme = match u.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => return Err(ClientError::Protocol(format!("unsupported scheme {other}"))),
    };
    Ok(format!(
        "{scheme}://{}",
        &u[url::Position::BeforeHost..url::Position::AfterPort]
    ))
}

/// A user's sign-in over a Provider's `/ws/userauth`: asks for a challenge, checks
/// that it names `audience` (by default the URL's own origin) and our identity and
/// has not expired, signs it locally, and returns the token.
pub async fn login_ws(
    url: &str,
    key: &SigningKey,
    audience: Option<&str>,
    options: TokenOptions,
    now: UnixTime,
) -> Result<IssuedToken, ClientError> {
    let audience = match audience {
        Some(a) => a.to_owned(),
        None => origin_of(url)?,
    };
    let identity = Identity::from(key);
    let mut req = url
        .into_client_request()
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    req.headers_mut().insert(
        "origin",
        HeaderValue::from_str(&audience).map_err(|e| ClientError::Protocol(e.to_string()))?,
    );
    let mut ws = connect(req, url).await?;
    // DPoP (docs/dpop.md): `"dpop": true` here, the proof with the signature.
    let dpop = options.dpop;
    let first = ClientFrame {
        kind: "token".into(),
        pubkey: Some(identity.to_string()),
        dpop: dpop.then_some(keygate_proto::DpopField::Flag(true)),
        options: TokenOptions {
            dpop: false,
            ..options
        },
        ..Default::default()
    };
    let ServerFrame::Challenge { value, .. } = exchange(&mut ws, &first).await? else {
        return Err(ClientError::Protocol("expected a challenge".into()));
    };
    challenge::check_before_signing(&value, &audience, &identity, now)
        .map_err(ClientError::Refused)?;
    let reply = ClientFrame {
        kind: "challenge".into(),
        sig: Some(challenge::sign(key, &value)),
        dpop: dpop
            .then(|| keygate_proto::DpopField::Proof(dpop_proof(key, "GET", url, None, None, now))),
        ..Default::default()
    };
    let token = exchange(&mut ws, &reply)
        .await?
        .into_token()
        .ok_or_else(|| ClientError::Protocol("expected a token".into()))?;
    let _ = ws.close(None).await;
    Ok(token)
}

/// The same sign-in over a Provider's HTTP flow (`GET`/`POST /api/token`).
pub async fn login_http(
    base_url: &str,
    key: &SigningKey,
    audience: Option<&str>,
    options: TokenOptions,
    now: UnixTime,
) -> Result<IssuedToken, ClientError> {
    let audience = match audience {
        Some(a) => a.to_owned(),
        None => origin_of(base_url)?,
    };
    let identity = Identity::from(key);
    let http = reqwest::Client::new();
    let base = base_url.trim_end_matches('/');
    let res = http
        .get(format!("{base}/api/token"))
        .query(&[("id", identity.to_string())])
        .header("origin", &audience)
        .send()
        .await
        .map_err(|_| ClientError::Connect(base.to_owned()))?;
    let c: ChallengeBody = read_json(res).await?;
    challenge::check_before_signing(&c.challenge, &audience, &identity, now)
        .map_err(ClientError::Refused)?;
    let mut body =
        serde_json::to_value(&options).map_err(|e| ClientError::Protocol(e.to_string()))?;
    body["id"] = identity.to_string().into();
    body["sig"] = challenge::sign(key, &c.challenge).into();
    body["challenge"] = c.challenge.into();
    let url = format!("{base}/api/token");
    let mut post = http.post(&url).header("origin", &audience).json(&body);
    if options.dpop {
        post = post.header("dpop", dpop_proof(key, "POST", &url, None, None, now));
    }
    let res = post
        .send()
        .await
        .map_err(|_| ClientError::Connect(base.to_owned()))?;
    read_json(res).await
}

/// A DPoP proof (RFC 9449) made with the user's key for the request `htm` `url`,
/// with `ath` when `token` is given: what a client sends as the `DPoP` header with
/// a key-bound token (docs/dpop.md), with the server's `nonce` when it asked.
pub fn dpop_proof(
    key: &SigningKey,
    htm: &str,
    url: &str,
    token: Option<&str>,
    nonce: Option<&str>,
    now: UnixTime,
) -> String {
    use base64::Engine;
    let entropy: &dyn keygate_core::entropy::Entropy = &keygate_core::entropy::OsEntropy;
    let jti = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(entropy.bytes::<16>());
    keygate_core::dpop::sign(key, htm, url, token, nonce, now, &jti)
}

/// Fetches a JWKS document and builds an offline verifier for `issuer`'s tokens.
pub async fn fetch_verifier(jwks_url: &str, issuer: &str) -> Result<TokenVerifier, ClientError> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let res = http
        .get(jwks_url)
        .send()
        .await
        .map_err(|_| ClientError::Connect(jwks_url.to_owned()))?;
    let jwks: Jwks = read_json(res).await?;
    Ok(TokenVerifier::new(&jwks, issuer))
}
