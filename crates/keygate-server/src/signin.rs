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
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode,
};
use warp::Filter;
use warp::hyper::upgrade::OnUpgrade;
use warp::reply::Response;

use crate::challenge::{Flow, IssuedChallenge};
use crate::error::Error;
use crate::hub::{ClientMeta, Hub, IssuedToken, SignedChallenge, TokenOptions};
use crate::identity::Identity;
use crate::store::ApiKeyRecord;
use crate::time::format_rfc3339;

/// Largest frame accepted (close 1009 beyond it).
pub use keygate_proto::{
    CLOSE_POLICY, CLOSE_TOO_BIG, ClientFrame, DpopField, MAX_FRAME, ServerFrame,
};
/// Bytes read from a sign-in socket at a time. Sign-in frames are a few hundred
/// bytes; tungstenite's default (128 KiB, zeroed on every read) cost more CPU
/// than the signature check and made every idle socket hold 128 KiB.
const READ_BUFFER: usize = 2048;

/// Keys the identity cache holds at most (about 250 bytes each, 4 MiB in all).
pub const IDENTITY_CACHE: usize = 16_384;

/// Parses a signing identity through the process's cache of keys that passed
/// their point checks before (`IdentityCache`: the same answers as
/// `Identity::parse`, without the torsion check for a returning key).
pub fn parse_identity(input: &str) -> Result<Identity, crate::identity::IdentityError> {
    static KEYS: std::sync::LazyLock<crate::identity::IdentityCache> =
        std::sync::LazyLock::new(|| crate::identity::IdentityCache::new(IDENTITY_CACHE));
    KEYS.parse(input)
}

/// An upgraded sign-in socket.
pub type SignInSocket = WebSocketStream<hyper_util::rt::TokioIo<warp::hyper::upgrade::Upgraded>>;

/// The WebSocket upgrade of the sign-in endpoints: warp's [`warp::ws()`] (same
/// checks, same rejections), finished with a socket sized for sign-in frames.
pub fn ws() -> impl Filter<Extract = (Upgrade,), Error = warp::Rejection> + Clone {
    // warp::ws() takes the upgrade handle out of the request; keep a handle first.
    warp::ext::optional::<OnUpgrade>()
        .and(warp::ws())
        .and(warp::header::<String>("sec-websocket-key"))
        .map(
            |on_upgrade: Option<OnUpgrade>, _checked: warp::ws::Ws, key: String| Upgrade {
                on_upgrade,
                key,
                config: WebSocketConfig::default()
                    .read_buffer_size(READ_BUFFER)
                    .max_message_size(Some(MAX_FRAME))
                    .max_frame_size(Some(MAX_FRAME)),
            },
        )
}

/// A WebSocket upgrade to finish with [`Upgrade::on_upgrade`].
pub struct Upgrade {
    on_upgrade: Option<OnUpgrade>,
    key: String,
    config: WebSocketConfig,
}

impl Upgrade {
    /// Largest message accepted (default [`MAX_FRAME`]).
    pub fn max_message_size(mut self, max: usize) -> Self {
        self.config.max_message_size = Some(max);
        self
    }

    /// Largest frame accepted (default [`MAX_FRAME`]).
    pub fn max_frame_size(mut self, max: usize) -> Self {
        self.config.max_frame_size = Some(max);
        self
    }

    /// Answers `101 Switching Protocols` and runs `f` on the socket once upgraded.
    pub fn on_upgrade<F, U>(self, f: F) -> Response
    where
        F: FnOnce(SignInSocket) -> U + Send + 'static,
        U: std::future::Future<Output = ()> + Send + 'static,
    {
        let Upgrade {
            on_upgrade,
            key,
            config,
        } = self;
        match on_upgrade {
            Some(on_upgrade) => {
                tokio::spawn(async move {
                    match on_upgrade.await {
                        Ok(upgraded) => {
                            let io = hyper_util::rt::TokioIo::new(upgraded);
                            f(
                                WebSocketStream::from_raw_socket(io, Role::Server, Some(config))
                                    .await,
                            )
                            .await
                        }
                        Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                    }
                });
            }
            None => tracing::debug!("websocket upgrade without upgrade state"),
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut res = Response::default();
        *res.status_mut() = warp::http::StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(
            warp::http::header::CONNECTION,
            warp::http::HeaderValue::from_static("upgrade"),
        );
        h.insert(
            warp::http::header::UPGRADE,
            warp::http::HeaderValue::from_static("websocket"),
        );
        if let Ok(v) = warp::http::HeaderValue::from_str(&accept) {
            h.insert(warp::http::header::SEC_WEBSOCKET_ACCEPT, v);
        }
        res
    }
}

/// The frame that reports `e` (code, message, and the message again as `value`).
pub fn error_frame(e: &Error) -> ServerFrame {
    let message = e.message();
    ServerFrame::Error {
        code: e.code().to_owned(),
        value: message.clone(),
        message,
    }
}

/// The frame that carries challenge `c` to the user.
pub fn challenge_frame(c: &IssuedChallenge) -> ServerFrame {
    ServerFrame::Challenge {
        value: c.text.clone(),
        expires_at: format_rfc3339(c.expires_at),
    }
}

pub(crate) fn to_message(frame: &ServerFrame) -> Message {
    Message::text(serde_json::to_string(frame).unwrap_or_default())
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
    /// The flow the challenge is issued on and redeemed by.
    flow: Flow,
    /// The audience fixed by the caller (a Provider's origin); when `None`, the
    /// frame may name one (an app talking to the Hub), else the key id is used.
    audience: Option<String>,
    meta: ClientMeta,
    /// The challenge handed out, for whom, with the options and audience asked.
    /// The identity is kept parsed: parsing checks the point, which costs as much
    /// as a signature check.
    pending: Option<(Identity, IssuedChallenge, TokenOptions, Option<String>)>,
}

impl LocalSignIn {
    pub fn new(
        hub: Arc<Hub>,
        app: ApiKeyRecord,
        flow: Flow,
        audience: Option<String>,
        meta: ClientMeta,
    ) -> Self {
        LocalSignIn {
            hub,
            app,
            flow,
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
            let refused = |e: Error| self.hub.challenge_refused(&self.app, None, e, &self.meta);
            let identity = parse_identity(&pubkey).map_err(|e| refused(e.into()))?;
            let audience = self.audience.clone().or(frame.audience);
            let c = self.hub.challenge_from(
                &self.app,
                self.flow,
                &identity,
                audience.as_deref(),
                &self.meta,
            )?;
            self.pending = Some((identity, c.clone(), frame.options, audience));
            Ok(c)
        }
        .boxed()
    }

    fn finish(&mut self, sig: String) -> BoxFuture<'_, Result<IssuedToken, Error>> {
        async move {
            let (identity, c, options, audience) = self
                .pending
                .take()
                .ok_or_else(|| Error::bad_request("no challenge is pending"))?;
            let signed = SignedChallenge {
                pubkey: "",
                challenge: &c.text,
                sig: &sig,
            };
            let audience = audience.as_deref().unwrap_or(&self.app.id);
            self.hub
                .redeem_for(
                    &self.app,
                    self.flow,
                    &identity,
                    signed,
                    &options,
                    Some(audience),
                    std::mem::take(&mut self.meta),
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

/// How a user-facing socket (the Provider's `/ws/userauth`) checks the DPoP proof
/// of a sign-in that asks for a key-bound token (docs/dpop.md): the `challenge`
/// frame's `dpop` must be a proof by the identity's own key for `GET` on one of
/// `urls`. Without it (the Hub's socket for app backends) `"dpop": true` is taken
/// from the app as it is.
pub struct DpopCheck {
    pub guard: Arc<crate::dpop::DpopGuard>,
    pub urls: Vec<String>,
    pub clock: Arc<dyn crate::time::Clock>,
}

impl DpopCheck {
    /// Checks the proof of `identity`'s sign-in request.
    pub fn sign_in(
        &self,
        proof: Option<&str>,
        htm: &str,
        identity: &Identity,
    ) -> Result<(), Error> {
        let urls: Vec<&str> = self.urls.iter().map(String::as_str).collect();
        let p = self.guard.check(
            proof,
            htm,
            &urls,
            None,
            keygate_core::dpop::Keys::Ed25519,
            self.clock.now(),
            true,
        )?;
        if p.jkt != keygate_core::dpop::identity_jkt(identity) {
            return Err(Error::Dpop {
                error: keygate_core::dpop::DpopError::WrongKey,
                at_issue: true,
            });
        }
        Ok(())
    }
}

/// Whether a `token` frame's `dpop` member asks for a key-bound token; the
/// proof itself belongs in the `challenge` frame.
pub fn token_dpop(field: Option<DpopField>) -> Result<bool, Error> {
    match field {
        None | Some(DpopField::Flag(false)) => Ok(false),
        Some(DpopField::Flag(true)) => Ok(true),
        Some(DpopField::Proof(_)) => Err(Error::bad_request(
            "dpop: true in the token frame, the proof in the challenge frame",
        )),
    }
}

/// Runs one sign-in on an upgraded socket, then closes it: 1000 after a token,
/// 1008 after an error (1009 for a frame over [`MAX_FRAME`]), cleanly
/// (`close_cleanly`). The flow must end
/// within `deadline`; `slot` counts the socket against the caps until it closes.
pub async fn serve<B: SignInBackend>(
    mut ws: SignInSocket,
    mut backend: B,
    deadline: Duration,
    slot: Option<crate::limits::HandshakeSlot>,
    dpop: Option<DpopCheck>,
) {
    let _slot = slot;
    let _open = crate::metrics::metrics().connection("websocket");
    let flow = async {
        let mut pending = false;
        // The identity of a pending sign-in that asked for a key-bound token.
        let mut bind_to: Option<Identity> = None;
        loop {
            let text = match ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(Outcome::ClientLeft),
                Some(Err(e)) => return Err(read_error(&e)),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    return Err(Error::bad_request("frames must be JSON text"));
                }
                Some(Ok(Message::Text(t))) => t,
            };
            let mut frame: ClientFrame = serde_json::from_str(text.as_str())
                .map_err(|_| Error::bad_request("malformed JSON frame"))?;
            let dpop_field = frame.dpop.take();
            match (frame.kind.as_str(), pending) {
                ("token", false) => {
                    frame.options.dpop = token_dpop(dpop_field)?;
                    if frame.options.dpop && dpop.is_some() {
                        let pubkey = frame.pubkey.as_deref().unwrap_or_default();
                        bind_to = Some(parse_identity(pubkey)?);
                    }
                    let c = backend.begin(frame).await?;
                    send(&mut ws, &challenge_frame(&c)).await?;
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
                    if let (Some(check), Some(identity)) = (&dpop, &bind_to) {
                        let proof = match &dpop_field {
                            Some(DpopField::Proof(p)) => Some(p.as_str()),
                            _ => None,
                        };
                        check.sign_in(proof, "GET", identity)?;
                    }
                    let t = backend.finish(sig).await?;
                    // Queued, not flushed: it leaves with the close frame, in one write.
                    ws.feed(to_message(&ServerFrame::token(t)))
                        .await
                        .map_err(|_| Error::bad_request("connection lost"))?;
                    return Ok(Outcome::Done);
                }
                _ => return Err(Error::bad_request("unknown message type")),
            }
        }
    };
    let result = match tokio::time::timeout(deadline, flow).await {
        Ok(r) => r,
        Err(_) => Err(Error::HandshakeTimeout),
    };
    let close = match result {
        Ok(Outcome::Done) => close_frame(1000, "done"),
        Ok(Outcome::ClientLeft) => {
            // Our reply to its close frame, queued by tungstenite.
            let _ = ws.flush().await;
            return close_cleanly(ws.into_inner()).await;
        }
        Err(e) => {
            let code = if e == Error::MessageTooLarge {
                CLOSE_TOO_BIG
            } else {
                CLOSE_POLICY
            };
            let _ = ws.feed(to_message(&error_frame(&e))).await;
            close_frame(code, e.code())
        }
    };
    // Queued frames (token or error) leave with the close frame, in one write.
    let _ = ws.send(close).await;
    close_cleanly(ws.into_inner()).await;
}

/// Longest wait, after our close frame, for the peer to close its side.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and dropped meanwhile (the rest of an oversized frame, the
/// peer's close frame).
const LINGER_BYTES: usize = 1 << 20;

/// Ends a connection after our close frame so that every client sees the frames
/// before it: half-close (FIN after the close frame), then read and drop what the
/// peer still sends (its close frame, the rest of an oversized frame) until it
/// closes its side or [`LINGER`] passes, then let go. Closing a socket with bytes
/// unread makes the kernel answer with a reset, and a reset destroys what the
/// client has received but not read yet: the error frame and the close code.
pub(crate) async fn close_cleanly<S>(mut io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        let _ = io.shutdown().await;
        let mut buf = [0u8; 4096];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

pub(crate) fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

async fn send(ws: &mut SignInSocket, frame: &ServerFrame) -> Result<(), Error> {
    ws.send(to_message(frame))
        .await
        .map_err(|_| Error::bad_request("connection lost"))
}

pub(crate) fn read_error(e: &tokio_tungstenite::tungstenite::Error) -> Error {
    match e {
        tokio_tungstenite::tungstenite::Error::Capacity(_) => Error::MessageTooLarge,
        _ => Error::bad_request("malformed WebSocket frame"),
    }
}
