//! Upstream connections owned by one client connection and driven in its task.
//!
//! A pooled client (hyper-util's) runs every upstream connection in a task of its
//! own: each proxied request then crosses tasks, and often threads, twice (request
//! to the connection's task, response back), and goes through the pool's locks. Here
//! a client connection keeps its own keep-alive connections to the upstreams it uses,
//! and its task polls them next to the client connection itself, so a proxied
//! request stays in one task. HTTP/1 serves one request at a time per client
//! connection, so one upstream connection per upstream is normally enough; HTTP/2
//! clients get more as their streams need them (kept up to [`MAX_IDLE`]).

use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::proxy::BoxError;

/// Idle upstream connections a client connection keeps.
const MAX_IDLE: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The upstream connections of one client connection.
pub struct Upstreams {
    idle: Mutex<Vec<(String, SendRequest<Incoming>)>>,
    /// Hands new connections to [`drive`], running in the client connection's task.
    spawn: mpsc::UnboundedSender<BoxFuture<'static, ()>>,
}

impl Upstreams {
    /// The connections, and the future that drives them: poll it in the same task
    /// as the client connection, for as long as that lives.
    pub fn new() -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (spawn, rx) = mpsc::unbounded_channel();
        let upstreams = Upstreams {
            idle: Mutex::new(Vec::new()),
            spawn,
        };
        (upstreams, drive(rx))
    }

    /// Sends `req` (absolute URI `http://authority/…`) on a kept connection to its
    /// authority, or on a new one. A request that a kept connection could not take
    /// (it had closed meanwhile) goes on a new connection.
    pub async fn send(&self, mut req: Request<Incoming>) -> Result<Response<Incoming>, BoxError> {
        let authority = req
            .uri()
            .authority()
            .ok_or("upstream URI without authority")?
            .as_str()
            .to_owned();
        // HTTP/1 to an origin server: origin-form target and a Host header.
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()?;
        *req.uri_mut() = target;
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&authority)?);

        if let Some(mut sender) = self.take(&authority) {
            match sender.try_send_request(req).await {
                Ok(res) => {
                    self.put(authority, sender);
                    return Ok(res);
                }
                Err(mut e) => match e.take_message() {
                    // Never written: safe to send again on a fresh connection.
                    Some(r) => req = r,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(&authority).await?;
        let res = sender.send_request(req).await?;
        self.put(authority, sender);
        Ok(res)
    }

    fn take(&self, authority: &str) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|(_, s)| !s.is_closed());
        let i = idle
            .iter()
            .position(|(a, s)| a == authority && s.is_ready())?;
        Some(idle.swap_remove(i).1)
    }

    fn put(&self, authority: String, sender: SendRequest<Incoming>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((authority, sender));
        }
    }

    async fn connect(&self, authority: &str) -> Result<SendRequest<Incoming>, BoxError> {
        let stream =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority))
                .await
                .map_err(|_| "upstream connect timed out")??;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        self.spawn
            .send(Box::pin(async move {
                let _ = conn.await;
            }))
            .map_err(|_| "client connection closed")?;
        Ok(sender)
    }
}

/// Polls the upstream connections handed over by [`Upstreams::connect`]; never
/// returns (it ends when dropped with the client connection).
async fn drive(mut new: mpsc::UnboundedReceiver<BoxFuture<'static, ()>>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(conn) = new.recv() => running.push(conn),
            Some(()) = running.next(), if !running.is_empty() => {}
            else => std::future::pending::<()>().await,
        }
    }
}
