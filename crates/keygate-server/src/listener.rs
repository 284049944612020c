//! keygate's own accept loop around a warp filter, because warp 0.4's server has
//! no hooks for what a hostile network needs: caps on open connections (global
//! and per address, an IPv6 peer by its /64), deadlines (request head, request
//! body, stalled writes, keep-alive idle), native TLS (rustls), and a graceful
//! drain on shutdown that waits for sign-ins in flight.
//!
//! Each connection has a watchdog that closes it at the first deadline it
//! misses:
//! - head: a request head must be complete within `header_timeout` of accept
//!   (whether a byte came or not); after a response, the next head within
//!   `idle_timeout`, and within `header_timeout` of its first byte;
//! - body: a request body must be complete within `body_timeout` of its head;
//! - write: a write may not stall (a peer that does not read) for `idle_timeout`.
//!
//! When the global cap is reached, the connection that has waited longest for a
//! request head (silent, trickling a head, or idle between requests) is closed to
//! admit the new one; a connection with a request in flight is never evicted. The
//! per-address cap is not relieved this way: past it, a new connection from that
//! address is closed at once.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use warp::Filter;
use warp::reply::Response;

use crate::limits::{Limits, client_key};
use io::{InFlight, RequestBody, ResponseBody, Tracked};

/// The peer address of a request, as seen by the listener (warp's own
/// `addr::remote()` is only filled by warp's server).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// `Option<IpAddr>` of the request's peer.
/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn`
/// (4096 by default since Linux 5.4).
pub const BACKLOG: u32 = 4096;

/// Listens on `addr` with a backlog of [`BACKLOG`]. `TcpListener::bind` (tokio,
/// mio and std alike) asks for 128: a burst of more new connections than that
/// overflows the accept queue, and the kernel drops their SYNs, which clients
/// only send again after a second (measured: 256 clients reconnecting for every
/// sign-in saw a p99 of 1.1 s against 0.2 s).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

pub fn peer_ip()
-> impl Filter<Extract = (Option<IpAddr>,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<PeerAddr>().map(|p: Option<PeerAddr>| p.map(|p| p.0.ip()))
}

/// Loads a certificate chain and private key (PEM files) into a TLS acceptor.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("bad certificate or key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `filter` on `listener` until `shutdown` completes, then stops accepting
/// and waits (up to `drain`) for open connections to finish.
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) where
    F: Filter<Extract = (Response,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let connections = Connections::new(&limits);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = connections.admit(peer.ip()) else {
            // Over a cap: close at once, before reading a byte.
            crate::metrics::metrics().refused("connection_cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = slot.conn.clone();
        let stream = Tracked {
            io: stream,
            conn: conn.clone(),
        };
        let service = warp::service(filter.clone());
        let hyper_service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let request = InFlight::start(conn.clone());
                let mut req = req.map(|body| RequestBody::new(body, conn.clone()));
                req.extensions_mut().insert(PeerAddr(peer));
                let mut service = service.clone();
                async move {
                    let res = tower_service::Service::call(&mut service, req).await;
                    res.map(|res| {
                        res.map(|body| ResponseBody {
                            inner: body,
                            _request: request,
                        })
                    })
                }
            });
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // The watchdog keeps the head deadline (from accept, not from the
            // first byte as hyper's own would be, and idle_timeout between
            // requests).
            .header_read_timeout(None)
            .keep_alive(true);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _open = crate::metrics::metrics().connection("tcp");
            let serve = async {
                match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls_stream) => {
                            let conn = builder.serve_connection_with_upgrades(
                                TokioIo::new(tls_stream),
                                hyper_service,
                            );
                            watcher.watch(conn.into_owned()).await
                        }
                        Err(_) => Ok(()),
                    },
                    None => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service);
                        watcher.watch(conn.into_owned()).await
                    }
                }
            };
            tokio::select! {
                result = serve => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                }
                why = slot.conn.watchdog() => {
                    tracing::debug!(why, "connection closed by the listener");
                    // An idle keep-alive connection ending is no refusal.
                    if let Some(kind) = match why {
                        EVICTED => Some("connection_evicted"),
                        SLOW_BODY => Some("body_timeout"),
                        NOT_READING => Some("write_stalled"),
                        _ => None,
                    } {
                        crate::metrics::metrics().refused(kind);
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing");
    }
}

/// The open connections of one listener: counted globally and per address, with
/// those waiting for a request head in the order they started waiting.
struct Connections {
    max: usize,
    max_per_ip: usize,
    header_timeout: Duration,
    body_timeout: Duration,
    idle_timeout: Duration,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
    next: u64,
    /// Connections waiting for a request head, oldest first.
    waiting: BTreeMap<u64, Arc<Conn>>,
}

impl Registry {
    fn enter_waiting(&mut self, conn: &Arc<Conn>, state: &mut State) {
        if state.counted && state.waiting.is_none() {
            self.next += 1;
            state.waiting = Some(self.next);
            self.waiting.insert(self.next, conn.clone());
        }
    }

    fn uncount(&mut self, key: IpAddr, state: &mut State) {
        if let Some(seq) = state.waiting.take() {
            self.waiting.remove(&seq);
        }
        if std::mem::take(&mut state.counted) {
            self.open = self.open.saturating_sub(1);
            if let Some(n) = self.per_ip.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&key);
                }
            }
        }
    }
}

impl Connections {
    fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Connections {
            max: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            header_timeout: limits.header_timeout,
            body_timeout: limits.body_timeout,
            idle_timeout: limits.idle_timeout,
            registry: Mutex::new(Registry::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip`, closing the connection that has waited
    /// longest for a request head when the global cap is reached; `None` when no
    /// connection can give way, or past the per-address cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let key = client_key(ip);
        let mut r = self.lock();
        if self.max_per_ip != 0 && r.per_ip.get(&key).copied().unwrap_or(0) >= self.max_per_ip {
            return None;
        }
        if self.max != 0 && r.open >= self.max {
            let (_, oldest) = r.waiting.pop_first()?;
            let mut state = oldest.state();
            state.waiting = None;
            state.evicted = true;
            r.uncount(oldest.key, &mut state);
            drop(state);
            oldest.changed.notify_one();
        }
        r.open += 1;
        *r.per_ip.entry(key).or_insert(0) += 1;
        let conn = Arc::new(Conn {
            key,
            connections: self.clone(),
            state: Mutex::new(State {
                counted: true,
                head_deadline: Some(Instant::now() + self.header_timeout),
                ..State::default()
            }),
            awaiting_first_byte: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            changed: Notify::new(),
        });
        let mut state = conn.state();
        r.enter_waiting(&conn, &mut state);
        drop(state);
        Some(ConnSlot { conn })
    }
}

/// One connection's place in [`Connections`]; released on drop.
struct ConnSlot {
    conn: Arc<Conn>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut r = self.conn.connections.lock();
        let mut state = self.conn.state();
        r.uncount(self.conn.key, &mut state);
    }
}

/// Why the watchdog closed a connection (besides a late or idle request head).
const EVICTED: &str = "evicted for a new connection";
const SLOW_BODY: &str = "no complete request body in time";
const NOT_READING: &str = "the peer stopped reading";

/// What the watchdog of one connection watches.
struct Conn {
    key: IpAddr,
    connections: Arc<Connections>,
    state: Mutex<State>,
    /// Set while waiting for the first byte of a later request head.
    awaiting_first_byte: AtomicBool,
    write_blocked: AtomicBool,
    /// Wakes the watchdog: a deadline was set, or the connection was evicted.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Still counted in [`Connections`] (not released, not evicted).
    counted: bool,
    evicted: bool,
    /// Its place among the connections waiting for a request head.
    waiting: Option<u64>,
    head_deadline: Option<Instant>,
    /// Requests whose response has not been sent in full.
    in_flight: usize,
    /// Deadlines of request bodies not yet read in full, by body.
    bodies: Vec<(u64, Instant)>,
    next_body: u64,
    write_blocked_since: Option<Instant>,
}

impl Conn {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the connection misses a deadline or is evicted; says which.
    async fn watchdog(&self) -> &'static str {
        loop {
            let now = Instant::now();
            let next = {
                let s = self.state();
                if s.evicted {
                    return EVICTED;
                }
                let write = s
                    .write_blocked_since
                    .map(|t| t + self.connections.idle_timeout);
                let body = s.bodies.iter().map(|(_, t)| *t).min();
                for (deadline, why) in [
                    (s.head_deadline, "no complete request head in time"),
                    (body, SLOW_BODY),
                    (write, NOT_READING),
                ] {
                    if deadline.is_some_and(|t| t <= now) {
                        return why;
                    }
                }
                [s.head_deadline, body, write].into_iter().flatten().min()
            };
            match next {
                Some(t) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(t) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }

    /// A request head is complete: no head deadline until its response is sent.
    fn request_started(&self) {
        let mut r = self.connections.lock();
        let mut s = self.state();
        if let Some(seq) = s.waiting.take() {
            r.waiting.remove(&seq);
        }
        s.head_deadline = None;
        s.in_flight += 1;
        self.awaiting_first_byte.store(false, Ordering::Relaxed);
    }

    /// A response is sent (or abandoned): with none left in flight, the
    /// connection waits for its next request, for at most `idle_timeout`.
    fn request_finished(self: &Arc<Self>) {
        let mut r = self.connections.lock();
        let mut s = self.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 && s.counted {
            s.head_deadline = Some(Instant::now() + self.connections.idle_timeout);
            r.enter_waiting(self, &mut s);
            self.awaiting_first_byte.store(true, Ordering::Relaxed);
            drop(s);
            self.changed.notify_one();
        }
    }

    /// The first byte of a later request head: the head is due within
    /// `header_timeout` of it.
    fn first_byte(&self) {
        if self.awaiting_first_byte.swap(false, Ordering::Relaxed) {
            let mut s = self.state();
            if let Some(t) = s.head_deadline {
                s.head_deadline = Some(t.min(Instant::now() + self.connections.header_timeout));
            }
            drop(s);
            self.changed.notify_one();
        }
    }

    fn body_started(&self) -> u64 {
        let mut s = self.state();
        s.next_body += 1;
        let id = s.next_body;
        s.bodies
            .push((id, Instant::now() + self.connections.body_timeout));
        drop(s);
        self.changed.notify_one();
        id
    }

    fn body_finished(&self, id: u64) {
        self.state().bodies.retain(|(b, _)| *b != id);
    }

    fn write_progress(&self, blocked: bool) {
        if self.write_blocked.load(Ordering::Relaxed) == blocked {
            return;
        }
        self.write_blocked.store(blocked, Ordering::Relaxed);
        self.state().write_blocked_since = blocked.then(Instant::now);
        if blocked {
            self.changed.notify_one();
        }
    }
}

mod io;
#[cfg(test)]
mod tests;
