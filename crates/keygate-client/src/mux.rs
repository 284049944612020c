//! The client side of the Hub's `/v1/ws/mux`: many sign-ins over one long-lived
//! WebSocket, each tagged by a request id ([`MuxLink`]), and a small pool of such
//! links opened on demand and replaced when they fail ([`MuxPool`]). A Provider
//! in split mode relays its users' sign-ins this way; an app backend may too.
//!
//! ```no_run
//! # use keygate_client::{HubClient, mux::MuxPool};
//! # use keygate_client::proto::ClientFrame;
//! # async fn f(hub: HubClient, pubkey: String) -> Result<(), keygate_client::ClientError> {
//! let pool = MuxPool::new(hub, 4, std::time::Duration::from_secs(10));
//! let sign_in = pool.sign_in().await?;
//! let first = ClientFrame { kind: "token".into(), pubkey: Some(pubkey), ..Default::default() };
//! let challenge = sign_in.send(&first).await?; // then the user signs it…
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use keygate_core::error::Error;
use keygate_proto::{ClientFrame, MuxClientFrame, MuxServerFrame, ServerFrame};

use crate::{ClientError, HubClient, WsStream};

/// Period of the link's pings.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A link that has heard nothing from the Hub (frames, pings or pongs) for this
/// long is taken for dead.
const IDLE: Duration = Duration::from_secs(45);
/// Frames queued for the Hub at most; a sender waits beyond it.
const QUEUE: usize = 1024;
/// First wait before a slot that failed to connect tries again; doubled per
/// failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Answer = oneshot::Sender<Result<ServerFrame, ClientError>>;

/// One `/v1/ws/mux` socket and the sign-ins waiting for an answer on it.
pub struct MuxLink {
    out: mpsc::Sender<Message>,
    /// Whoever waits for the next frame of each id.
    waiting: Mutex<HashMap<String, Answer>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Sign-ins started and not yet ended.
    load: AtomicUsize,
}

impl MuxLink {
    /// Runs the link on `ws` (opened by [`HubClient::connect_mux`]) until either
    /// side closes it or it falls silent.
    pub fn start(ws: WsStream) -> Arc<MuxLink> {
        let (out, mut queue) = mpsc::channel::<Message>(QUEUE);
        let link = Arc::new(MuxLink {
            out,
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            load: AtomicUsize::new(0),
        });
        let (mut sink, mut stream) = ws.split();
        let reader = link.clone();
        tokio::spawn(async move {
            let mut ping = tokio::time::interval(PING_EVERY);
            ping.tick().await;
            let mut heard = Instant::now();
            loop {
                tokio::select! {
                    m = stream.next() => {
                        heard = Instant::now();
                        match m {
                            Some(Ok(Message::Text(t))) => reader.deliver(t.as_str()),
                            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                            Some(Ok(Message::Binary(_))) => {}
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        }
                    }
                    m = queue.recv() => match m {
                        Some(m) => if sink.send(m).await.is_err() { break },
                        None => break,
                    },
                    _ = ping.tick() => {
                        if heard.elapsed() > IDLE
                            || sink.send(Message::Ping(Default::default())).await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
            reader.fail_all();
            let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
        });
        link
    }

    /// Whether the link still runs.
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }

    /// Sign-ins in progress on this link.
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// A new sign-in on this link, under an id of its own.
    pub fn sign_in(self: &Arc<Self>, deadline: Duration) -> MuxSignIn {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        self.load.fetch_add(1, Ordering::Relaxed);
        MuxSignIn {
            link: self.clone(),
            id,
            deadline,
            open_on_hub: AtomicBool::new(false),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Answer>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a frame from the Hub to whoever waits for its id.
    fn deliver(&self, text: &str) {
        let Ok(MuxServerFrame { id, frame }) = serde_json::from_str::<MuxServerFrame>(text) else {
            tracing::debug!("unreadable frame from the hub");
            return;
        };
        let Some(id) = id else {
            // About a frame of ours without a valid id: a bug on this side.
            tracing::warn!("the hub refused a frame of this link");
            return;
        };
        let Some(answer) = self.waiting().remove(&id) else {
            return;
        };
        let _ = answer.send(match frame {
            ServerFrame::Error { code, message, .. } => Err(ClientError::Server {
                status: Error::status_for_code(&code),
                code,
                message,
            }),
            f => Ok(f),
        });
    }

    /// The link has ended: every sign-in waiting on it fails at once.
    fn fail_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (_, answer) in self.waiting().drain() {
            let _ = answer.send(Err(ClientError::Connect("hub link closed".into())));
        }
    }
}

/// One sign-in on a [`MuxLink`]: its frames carry the same id. Dropped while the
/// Hub holds it open (a challenge handed out and not answered, or an answer not
/// awaited to the end), it tells the Hub to drop it (`cancel`).
pub struct MuxSignIn {
    link: Arc<MuxLink>,
    id: String,
    deadline: Duration,
    /// The Hub may still hold this sign-in.
    open_on_hub: AtomicBool,
}

impl Drop for MuxSignIn {
    fn drop(&mut self) {
        self.link.load.fetch_sub(1, Ordering::Relaxed);
        self.link.waiting().remove(&self.id);
        if self.open_on_hub.load(Ordering::Relaxed) {
            let cancel = serde_json::json!({"type": "cancel", "id": self.id});
            let _ = self.link.out.try_send(Message::text(cancel.to_string()));
        }
    }
}

impl MuxSignIn {
    /// The request id of this sign-in.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends `frame` under this sign-in's id and waits for the Hub's answer: the
    /// frame, the Hub's error, or [`ClientError::Connect`] when the link fails
    /// or no answer comes within the deadline.
    pub async fn send(&self, frame: &ClientFrame) -> Result<ServerFrame, ClientError> {
        let text = serde_json::to_string(&MuxClientFrame {
            id: self.id.clone(),
            frame: frame.clone(),
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.link.waiting().insert(self.id.clone(), tx);
        let lost = || ClientError::Connect("hub link closed".into());
        if !self.link.is_open() {
            self.link.waiting().remove(&self.id);
            return Err(lost());
        }
        let exchange = async {
            self.link
                .out
                .send(Message::text(text))
                .await
                .map_err(|_| lost())?;
            self.open_on_hub.store(true, Ordering::Relaxed);
            rx.await.map_err(|_| lost())?
        };
        match tokio::time::timeout(self.deadline, exchange).await {
            Ok(answer) => {
                let challenged = matches!(answer, Ok(ServerFrame::Challenge { .. }));
                self.open_on_hub.store(challenged, Ordering::Relaxed);
                answer
            }
            Err(_) => {
                self.link.waiting().remove(&self.id);
                Err(ClientError::Connect(
                    "no answer from the hub in time".into(),
                ))
            }
        }
    }
}

struct Slot {
    link: Option<Arc<MuxLink>>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// A few long-lived [`MuxLink`]s to one Hub, opened when first needed and
/// reopened after a failure (with a backoff of [`FIRST_BACKOFF`] doubling up to
/// [`MAX_BACKOFF`]), used in turn. The Hub sees at most `size` sockets from it.
pub struct MuxPool {
    client: HubClient,
    slots: Vec<tokio::sync::Mutex<Slot>>,
    next: AtomicUsize,
    deadline: Duration,
}

impl MuxPool {
    /// A pool of `size` links (at least one) to `client`'s Hub; every answer is
    /// awaited at most `deadline`, and so is the opening of a link.
    pub fn new(client: HubClient, size: usize, deadline: Duration) -> Self {
        MuxPool {
            client,
            slots: (0..size.max(1))
                .map(|_| {
                    tokio::sync::Mutex::new(Slot {
                        link: None,
                        failures: 0,
                        retry_at: None,
                    })
                })
                .collect(),
            next: AtomicUsize::new(0),
            deadline,
        }
    }

    /// How many links it may hold.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// A new sign-in on the next link in turn that is open or can be opened.
    pub async fn sign_in(&self) -> Result<MuxSignIn, ClientError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = ClientError::Connect("hub links are failing; retrying shortly".into());
        for k in 0..n {
            let mut slot = self.slots[(start + k) % n].lock().await;
            if let Some(link) = slot.link.as_ref().filter(|l| l.is_open()) {
                return Ok(link.sign_in(self.deadline));
            }
            slot.link = None;
            if slot.retry_at.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let opened = tokio::time::timeout(self.deadline, self.client.connect_mux()).await;
            match opened {
                Ok(Ok(ws)) => {
                    slot.failures = 0;
                    slot.retry_at = None;
                    let link = MuxLink::start(ws);
                    slot.link = Some(link.clone());
                    return Ok(link.sign_in(self.deadline));
                }
                Ok(Err(e)) => last = e,
                Err(_) => {}
            }
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << slot.failures.min(16))
                .min(MAX_BACKOFF);
            slot.failures = slot.failures.saturating_add(1);
            slot.retry_at = Some(Instant::now() + backoff);
        }
        Err(last)
    }
}
