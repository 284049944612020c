//! `GET /v1/ws/mux`: one long-lived, API-key authenticated WebSocket carrying many
//! sign-ins at once, each tagged by a request id the app picks. A Provider in
//! split mode reaches its Hub over a small pool of these instead of one
//! `/v1/ws/token` socket per user.
//!
//! Every frame is a frame of `/v1/ws/token` plus `"id"`:
//!
//! ```text
//! → {"type":"token","id":"7","pubkey":"<identity>", …options}
//! ← {"type":"challenge","id":"7","value":"<text>","expires_at":"…"}
//! → {"type":"challenge","id":"7","sig":"<base64url>"}
//! ← {"type":"token","id":"7","value":"<jwt>",…}   or   {"type":"error","id":"7",…}
//! → {"type":"cancel","id":"7"}   (the user left: drop it; no answer)
//! ```
//!
//! Each id runs the sign-in of `/v1/ws/token` ([`LocalSignIn`], flow
//! [`Flow::HubWs`]: the same audience rules, DPoP, audit and metrics) in a task
//! of its own, so a slow redemption never holds up another id. The challenge
//! stays on the Hub: the client only sends a signature for it under its id, so
//! a challenge handed out under one id (or on another socket, or on
//! `/v1/ws/token`) can only be redeemed there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::{ClientMeta, Hub};
use crate::challenge::{ChallengeError, Flow};
use crate::error::Error;
use crate::signin::{
    self, CLOSE_POLICY, CLOSE_TOO_BIG, ClientFrame, LocalSignIn, ServerFrame, SignInBackend,
    SignInSocket,
};
use crate::store::ApiKeyRecord;
use keygate_proto::{MuxServerFrame, valid_mux_id};

/// Most sign-ins in progress on one link; past it a new id is refused with
/// `rate_limited`.
pub const MAX_PENDING: usize = 1024;
/// Most frames queued for a peer that does not read; past it the link closes
/// (1008): a slow reader cannot grow the Hub's memory.
pub const MAX_QUEUED: usize = 2 * MAX_PENDING;
/// Period of the pings, of the check that the API key is still live, and of the
/// malformed-frame budget.
pub const TICK: Duration = Duration::from_secs(10);
/// Most frames without a valid id or that are not JSON per [`TICK`]; past it
/// the link closes (1008).
pub const MAX_BAD_FRAMES: u32 = 32;
/// A link that has not heard from its peer (frames or pongs) for this long closes.
pub const IDLE: Duration = Duration::from_secs(60);
/// Longest a pending sign-in waits for its signature, whatever the challenge says.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// What the sign-ins of one link share with its reader.
struct Link {
    hub: Arc<Hub>,
    /// The app, as last checked.
    app: Mutex<ApiKeyRecord>,
    /// Sign-ins in progress by id: the way to hand each its `challenge` frame
    /// while it waits for one (`None` once handed or before it is issued).
    pending: Mutex<HashMap<String, Option<oneshot::Sender<ClientFrame>>>>,
    out: mpsc::Sender<Message>,
    /// Signalled when `out` is full: the peer is not reading.
    overflow: Notify,
}

impl Link {
    fn push(&self, id: Option<&str>, frame: ServerFrame) {
        let tagged = MuxServerFrame {
            id: id.map(str::to_owned),
            frame,
        };
        let text = serde_json::to_string(&tagged).unwrap_or_default();
        if self.out.try_send(Message::text(text)).is_err() {
            self.overflow.notify_one();
        }
    }

    fn push_error(&self, id: Option<&str>, e: &Error) {
        self.push(id, signin::error_frame(e));
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Option<oneshot::Sender<ClientFrame>>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a link ends.
enum End {
    /// The peer closed or went away: nothing more to send.
    PeerLeft,
    /// We close with this code and reason.
    Close(u16, &'static str),
}

/// Serves one `/v1/ws/mux` link of `app` until the peer leaves, the key is
/// revoked, the peer misbehaves, or the Hub stops.
pub async fn serve(ws: SignInSocket, hub: Arc<Hub>, app: ApiKeyRecord) {
    let _open = crate::metrics::metrics().connection("websocket");
    let mut closing = hub.links_closing();
    let (mut sink, mut stream) = ws.split();
    let (out, mut queue) = mpsc::channel::<Message>(MAX_QUEUED);
    let link = Arc::new(Link {
        hub: hub.clone(),
        app: Mutex::new(app),
        pending: Mutex::new(HashMap::new()),
        out,
        overflow: Notify::new(),
    });
    let mut writer = tokio::spawn(async move {
        while let Some(m) = queue.recv().await {
            if sink.send(m).await.is_err() {
                return None;
            }
        }
        Some(sink)
    });
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut bad = 0u32;
    let mut heard = tokio::time::Instant::now();
    let end = loop {
        tokio::select! {
            m = stream.next() => {
                heard = tokio::time::Instant::now();
                match m {
                    None | Some(Ok(Message::Close(_))) => break End::PeerLeft,
                    Some(Err(e)) => {
                        let e = signin::read_error(&e);
                        link.push_error(None, &e);
                        let code = if e == Error::MessageTooLarge { CLOSE_TOO_BIG } else { CLOSE_POLICY };
                        break End::Close(code, if code == CLOSE_TOO_BIG { "message_too_large" } else { "bad_request" });
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Binary(_))) => {
                        bad += 1;
                        link.push_error(None, &Error::bad_request("frames must be JSON text"));
                    }
                    Some(Ok(Message::Text(t))) => {
                        if !on_frame(&link, t.as_str(), &mut tasks) {
                            bad += 1;
                        }
                    }
                }
                if bad > MAX_BAD_FRAMES {
                    break End::Close(CLOSE_POLICY, "bad_request");
                }
            }
            _ = tick.tick() => {
                bad = 0;
                if heard.elapsed() > IDLE {
                    break End::Close(CLOSE_POLICY, "idle");
                }
                let key_id = link.app.lock().unwrap_or_else(|p| p.into_inner()).id.clone();
                match hub.live_api_key(&key_id).await.and_then(|k| hub.usable(k)) {
                    Ok(k) => *link.app.lock().unwrap_or_else(|p| p.into_inner()) = k,
                    Err(e @ (Error::ApiKey(_) | Error::Forbidden(_))) => {
                        link.push_error(None, &e);
                        break End::Close(CLOSE_POLICY, "invalid_api_key");
                    }
                    // A store outage is no reason to drop the link.
                    Err(_) => {}
                }
                if link.out.try_send(Message::Ping(Default::default())).is_err() {
                    break End::Close(CLOSE_POLICY, "not_reading");
                }
            }
            _ = link.overflow.notified() => break End::Close(CLOSE_POLICY, "not_reading"),
            _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                break End::Close(1001, "going_away");
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = &mut writer => {
                // Its peer is gone: nothing more can be sent.
                tasks.shutdown().await;
                return;
            }
        }
    };
    // The sign-ins in progress end with the link.
    tasks.shutdown().await;
    link.pending().clear();
    if let End::Close(code, reason) = end {
        let close = signin::close_frame(code, reason);
        let _ = link.out.try_send(close);
    }
    drop(link);
    match tokio::time::timeout(LINGER, &mut writer).await {
        Ok(Ok(Some(sink))) => {
            if let Ok(ws) = stream.reunite(sink) {
                signin::close_cleanly(ws.into_inner()).await;
            }
        }
        _ => writer.abort(),
    }
}

/// Longest wait for the queued frames and our close frame to leave.
const LINGER: Duration = Duration::from_secs(2);

/// Handles one text frame; `false` for a frame without a valid id or that is
/// not a JSON object (answered by an error frame without id).
fn on_frame(link: &Arc<Link>, text: &str, tasks: &mut JoinSet<()>) -> bool {
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(text) else {
        link.push_error(None, &Error::bad_request("malformed JSON frame"));
        return false;
    };
    let id = match fields.remove("id") {
        Some(serde_json::Value::String(id)) if valid_mux_id(&id) => id,
        _ => {
            link.push_error(
                None,
                &Error::bad_request("id: 1 to 64 visible ASCII characters are required"),
            );
            return false;
        }
    };
    let id = id.as_str();
    let frame: ClientFrame = match serde_json::from_value(serde_json::Value::Object(fields)) {
        Ok(f) => f,
        Err(_) => {
            link.push_error(Some(id), &Error::bad_request("malformed JSON frame"));
            return true;
        }
    };
    match frame.kind.as_str() {
        "token" => {
            let (tx, rx) = oneshot::channel();
            {
                let mut pending = link.pending();
                if pending.contains_key(id) {
                    drop(pending);
                    link.push_error(
                        Some(id),
                        &Error::bad_request("id: a sign-in with this id is in progress"),
                    );
                    return true;
                }
                if pending.len() >= MAX_PENDING {
                    drop(pending);
                    crate::metrics::metrics().refused("mux_pending_cap");
                    link.push_error(Some(id), &Error::RateLimited { retry_after: 1 });
                    return true;
                }
                pending.insert(id.to_owned(), Some(tx));
            }
            tasks.spawn(sign_in(link.clone(), id.to_owned(), frame, rx));
        }
        "challenge" => {
            let waiting = link.pending().get_mut(id).map(Option::take);
            match waiting {
                Some(Some(tx)) => {
                    // Refused only once the sign-in has ended, which answers itself.
                    let _ = tx.send(frame);
                }
                Some(None) => link.push_error(
                    Some(id),
                    &Error::bad_request("id: this sign-in is not waiting for a signature"),
                ),
                None => link.push_error(
                    Some(id),
                    &Error::bad_request("id: no sign-in with this id is in progress"),
                ),
            }
        }
        "cancel" => {
            // Dropping the way to hand it its signature ends it, silently; a
            // sign-in not waiting for one (or unknown) ends on its own.
            if let Some(waiting) = link.pending().get_mut(id) {
                waiting.take();
            }
        }
        _ => link.push_error(Some(id), &Error::bad_request("unknown message type")),
    }
    true
}

/// One sign-in of a link: the challenge for `first`, then the token for the
/// signature that comes under the same id, or an error; the id is free again
/// once its last frame is queued.
async fn sign_in(
    link: Arc<Link>,
    id: String,
    mut first: ClientFrame,
    reply: oneshot::Receiver<ClientFrame>,
) {
    let hub = link.hub.clone();
    let app = link.app.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut backend = LocalSignIn::new(hub.clone(), app, Flow::HubWs, None, ClientMeta::default());
    let answer = async {
        first.options.dpop = signin::token_dpop(first.dpop.take())?;
        let c = backend.begin(first).await?;
        link.push(Some(&id), signin::challenge_frame(&c));
        let left = u64::try_from(c.expires_at - hub.clock().now()).unwrap_or(0);
        let wait = Duration::from_secs(left).min(MAX_WAIT);
        let frame = match tokio::time::timeout(wait, reply).await {
            Ok(Ok(frame)) => frame,
            // Cancelled: no answer.
            Ok(Err(_)) => return Ok(None),
            Err(_) => return Err(Error::Challenge(ChallengeError::Expired)),
        };
        let sig = frame
            .sig
            .ok_or_else(|| Error::bad_request("a challenge reply needs a sig"))?;
        backend.finish(sig).await.map(Some)
    }
    .await;
    link.pending().remove(&id);
    match answer {
        Ok(Some(t)) => link.push(Some(&id), ServerFrame::token(t)),
        Ok(None) => {}
        Err(e) => link.push_error(Some(&id), &e),
    }
}
