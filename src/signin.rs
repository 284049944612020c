//! The WebSocket sign-in flow, shared by the Hub (`/v1/ws/token`) and the Provider
//! (`/ws/userauth`): the same JSON frames, the same limits, the same errors.
//!
//! ```text
//! → {"type":"token","pubkey":"<identity>", …options}
//! ← {"type":"challenge","value":"<text>","expires_at":"…"}
//! → {"type":"challenge","sig":"<base64url>"}
//! ← {"type":"token","value":"<jwt>","token_type":"Bearer",…}
//! ```
//! Where the challenge comes from and where the signature goes is a
//! [`SignInBackend`]: the Hub in this process, or a remote Hub over a socket.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use warp::ws::{Message, WebSocket};

use crate::challenge::IssuedChallenge;
use crate::error::Error;
use crate::hub::{ClientMeta, Hub, IssuedToken, SignedChallenge, TokenOptions};
use crate::store::ApiKeyRecord;
use crate::time::format_rfc3339;

/// Largest frame accepted (close 1009 beyond it).
pub const MAX_FRAME: usize = 16 * 1024;
/// A handshake not finished in this time is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// A frame from the client. Fields not used by a `type` are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ClientFrame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// Hub only: the audience an API-key-authenticated app asks for (its origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(flatten)]
    pub options: TokenOptions,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Challenge {
        value: String,
        expires_at: String,
    },
    Token {
        value: String,
        token_type: String,
        expires_at: String,
        expires_in: i64,
        session_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
    },
    Error {
        code: String,
        message: String,
    },
}

impl ServerFrame {
    pub fn challenge(c: &IssuedChallenge) -> Self {
        ServerFrame::Challenge {
            value: c.text.clone(),
            expires_at: format_rfc3339(c.expires_at),
        }
    }

    pub fn token(t: IssuedToken) -> Self {
        ServerFrame::Token {
            value: t.token,
            token_type: t.token_type,
            expires_at: t.expires_at,
            expires_in: t.expires_in,
            session_id: t.session_id,
            refresh_token: t.refresh_token,
        }
    }

    pub fn error(e: &Error) -> Self {
        ServerFrame::Error {
            code: e.code().to_owned(),
            message: e.message(),
        }
    }

    fn to_message(&self) -> Message {
        Message::text(serde_json::to_string(self).unwrap_or_default())
    }
}

/// One sign-in's two steps.
pub trait SignInBackend: Send {
    fn begin(&mut self, frame: ClientFrame) -> BoxFuture<'_, Result<IssuedChallenge, Error>>;
    fn finish(&mut self, sig: String) -> BoxFuture<'_, Result<IssuedToken, Error>>;
}

/// Sign-in against the Hub in this process, as `app`, for `audience`.
pub struct LocalSignIn {
    hub: Arc<Hub>,
    app: ApiKeyRecord,
    /// The audience fixed by the caller (a Provider's origin); when `None`, the
    /// frame may name one (an app talking to the Hub), else the key id is used.
    audience: Option<String>,
    meta: ClientMeta,
    pending: Option<(String, IssuedChallenge, TokenOptions, Option<String>)>,
}

impl LocalSignIn {
    pub fn new(
        hub: Arc<Hub>,
        app: ApiKeyRecord,
        audience: Option<String>,
        meta: ClientMeta,
    ) -> Self {
        LocalSignIn {
            hub,
            app,
            audience,
            meta,
            pending: None,
        }
    }
}

impl SignInBackend for LocalSignIn {
    fn begin(&mut self, frame: ClientFrame) -> BoxFuture<'_, Result<IssuedChallenge, Error>> {
        async move {
            let pubkey = frame
                .pubkey
                .ok_or_else(|| Error::bad_request("a token request needs a pubkey"))?;
            let audience = self.audience.clone().or(frame.audience);
            let c = self
                .hub
                .challenge(&self.app, &pubkey, audience.as_deref())?;
            self.pending = Some((pubkey, c.clone(), frame.options, audience));
            Ok(c)
        }
        .boxed()
    }

    fn finish(&mut self, sig: String) -> BoxFuture<'_, Result<IssuedToken, Error>> {
        async move {
            let (pubkey, c, options, audience) = self
                .pending
                .take()
                .ok_or_else(|| Error::bad_request("no challenge is pending"))?;
            let signed = SignedChallenge {
                pubkey: &pubkey,
                challenge: &c.text,
                sig: &sig,
            };
            let audience = audience.as_deref().unwrap_or(&self.app.id);
            self.hub
                .redeem(
                    &self.app,
                    signed,
                    &options,
                    Some(audience),
                    self.meta.clone(),
                )
                .await
        }
        .boxed()
    }
}

enum Outcome {
    Done,
    ClientLeft,
}

/// Runs one sign-in on an upgraded socket, then closes it: 1000 after a token,
/// 1008 after an error (1009 for a frame over [`MAX_FRAME`]).
pub async fn serve<B: SignInBackend>(ws: WebSocket, mut backend: B) {
    let (mut tx, mut rx) = ws.split();
    let flow = async {
        let mut pending = false;
        loop {
            let msg = match rx.next().await {
                None => return Ok(Outcome::ClientLeft),
                Some(Err(e)) => return Err(read_error(&e)),
                Some(Ok(m)) => m,
            };
            if msg.is_close() {
                return Ok(Outcome::ClientLeft);
            }
            if msg.is_ping() || msg.is_pong() {
                continue;
            }
            let text = msg
                .to_str()
                .map_err(|_| Error::bad_request("frames must be JSON text"))?;
            let frame: ClientFrame = serde_json::from_str(text)
                .map_err(|_| Error::bad_request("malformed JSON frame"))?;
            match (frame.kind.as_str(), pending) {
                ("token", false) => {
                    let c = backend.begin(frame).await?;
                    send(&mut tx, &ServerFrame::challenge(&c)).await?;
                    pending = true;
                }
                ("token", true) => {
                    return Err(Error::bad_request(
                        "one challenge at a time: sign the pending challenge first",
                    ));
                }
                ("challenge", false) => {
                    return Err(Error::bad_request(
                        "no challenge is pending: send a token request first",
                    ));
                }
                ("challenge", true) => {
                    let sig = frame
                        .sig
                        .ok_or_else(|| Error::bad_request("a challenge reply needs a sig"))?;
                    let t = backend.finish(sig).await?;
                    send(&mut tx, &ServerFrame::token(t)).await?;
                    return Ok(Outcome::Done);
                }
                _ => return Err(Error::bad_request("unknown message type")),
            }
        }
    };
    let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, flow).await {
        Ok(r) => r,
        Err(_) => Err(Error::HandshakeTimeout),
    };
    let close = match result {
        Ok(Outcome::Done) => Message::close_with(1000u16, "done"),
        Ok(Outcome::ClientLeft) => return,
        Err(e) => {
            let code = if e == Error::MessageTooLarge {
                CLOSE_TOO_BIG
            } else {
                CLOSE_POLICY
            };
            let _ = tx.send(ServerFrame::error(&e).to_message()).await;
            Message::close_with(code, e.code().to_owned())
        }
    };
    let _ = tx.send(close).await;
    let _ = tx.close().await;
}

async fn send<S>(tx: &mut S, frame: &ServerFrame) -> Result<(), Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    tx.send(frame.to_message())
        .await
        .map_err(|_| Error::bad_request("connection lost"))
}

fn read_error(e: &warp::Error) -> Error {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e.source().and_then(|s| s.downcast_ref::<WsError>()) {
        Some(WsError::Capacity(_)) => Error::MessageTooLarge,
        _ => Error::bad_request("malformed WebSocket frame"),
    }
}
