//! The gateway: a reverse proxy in front of an app's services that lets through
//! only requests with a valid access token (checked offline against the Hub's JWKS,
//! with the revocation feed applied), and tells each service who is calling with
//! headers no client can forge, backed by a signed assertion.
//!
//! `keygate gateway --config gateway.toml` runs it; [`start`] does the same
//! in-process. See `docs/gateway.md` for the configuration, the headers, the
//! assertion and how a service checks it.

pub mod assertion;
pub mod config;
pub mod headers;
mod proxy;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{ClientError, OfflineVerifier};
use crate::time::{Clock, SystemClock};
use crate::token::Jwks;
use keygate_core::entropy::{Entropy, OsEntropy};

pub use assertion::{ASSERTION_TYPE, AssertionClaims, AssertionVerifier};
pub use config::{ConfigError, GatewayConfig, Route};
pub use proxy::JWKS_PATH;

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot set up the token verifier from the hub at {0}: {1}")]
    Hub(String, ClientError),
    #[error("cannot set up the token verifier on this hub: {0}")]
    LocalHub(crate::error::Error),
    #[error("signing key {0}: {1}")]
    Key(String, String),
}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    /// The keys that sign assertions (also served at [`JWKS_PATH`]).
    pub jwks: Jwks,
    /// The assertions' `iss`.
    pub assertion_issuer: String,
    verifier: Arc<OfflineVerifier>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The verifier of the Hub's tokens (its revocations, its key reads).
    pub fn verifier(&self) -> &Arc<OfflineVerifier> {
        &self.verifier
    }

    /// Stops accepting, lets requests in flight finish (up to 10 s), and closes
    /// WebSocket tunnels.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }

    /// Runs until `signal` completes, then stops.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.stop().await;
    }
}

/// Starts a gateway as `config` says, on the system clock and the OS RNG; returns
/// once it is listening and has the Hub's keys and revocation backlog.
pub async fn start(config: GatewayConfig) -> Result<Running, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] on `clock`.
pub async fn start_with_clock(
    config: GatewayConfig,
    clock: Arc<dyn Clock>,
) -> Result<Running, StartError> {
    start_with(config, clock, Arc::new(OsEntropy)).await
}

/// [`start`] on `clock`, taking assertion ids (and the assertion key, when the
/// configuration names none) from `entropy`.
pub async fn start_with(
    config: GatewayConfig,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
) -> Result<Running, StartError> {
    let (Some(hub), Some(issuer)) = (&config.hub, &config.issuer) else {
        return Err(StartError::Config(ConfigError {
            file: None,
            line: None,
            message: MISSING_HUB.into(),
        }));
    };
    let verifier = OfflineVerifier::start_for(hub, issuer, config.audiences.clone())
        .await
        .map_err(|e| StartError::Hub(hub.clone(), e))?;
    launch(config, verifier, clock, entropy).await
}

/// Starts a gateway in front of `hub`, a Hub running in this process (what
/// `keygate serve --gateway-config` does): tokens are checked against its key ring
/// and its revocation broadcast, with no sockets; `hub` and `issuer` in the
/// configuration are not used.
pub async fn start_local(
    config: GatewayConfig,
    hub: Arc<crate::hub::Hub>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
) -> Result<Running, StartError> {
    if config.hub.is_some() {
        tracing::info!("gateway: `hub` is not used: tokens are checked by the hub in this process");
    }
    let verifier = OfflineVerifier::local(hub, config.audiences.clone())
        .await
        .map_err(StartError::LocalHub)?;
    launch(config, verifier, clock, entropy).await
}

const MISSING_HUB: &str = "hub: required: the Hub's base URL (http://host:port), \
    unless `keygate serve --gateway-config` runs the gateway";

async fn launch(
    config: GatewayConfig,
    verifier: Arc<OfflineVerifier>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
) -> Result<Running, StartError> {
    let key = match &config.signing_key {
        Some(path) => load_key(path)?,
        None => SigningKey::generate(&mut entropy.rng()),
    };
    verifier.accept_dev_tokens(config.accept_dev_tokens);
    if config.accept_dev_tokens {
        tracing::warn!("the gateway accepts development tokens (accept_dev_tokens = true)");
    }
    let signer = assertion::AssertionSigner::new(key);
    let jwks = signer.jwks();
    let listener =
        crate::listener::bind(config.listen).map_err(|e| StartError::Bind(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(config.listen, e))?;
    let (shutdown, stop_rx) = watch::channel(false);
    let gate = Arc::new(proxy::Gate::new(
        &config,
        verifier.clone(),
        signer,
        clock,
        entropy,
        stop_rx.clone(),
    ));
    let task = tokio::spawn(accept_loop(listener, gate, stop_rx));
    Ok(Running {
        addr,
        jwks,
        assertion_issuer: config.assertion_issuer,
        verifier,
        shutdown,
        task,
    })
}

/// Reads the configuration at `path`, runs the gateway until `signal`, then stops.
pub async fn run(path: &Path, signal: impl Future<Output = ()>) -> Result<(), StartError> {
    let config = GatewayConfig::load(path)?;
    if config.hub.is_none() {
        return Err(StartError::Config(ConfigError {
            file: Some(path.display().to_string()),
            line: None,
            message: MISSING_HUB.into(),
        }));
    }
    let routes = config.routes.len();
    let running = start(config).await?;
    tracing::info!(
        routes,
        "keygate gateway listening on http://{} (assertion keys at {})",
        running.addr,
        JWKS_PATH
    );
    running.run_until(signal).await;
    tracing::info!("keygate gateway stopped");
    Ok(())
}

fn load_key(path: &Path) -> Result<SigningKey, StartError> {
    let shown = path.display().to_string();
    let pem =
        std::fs::read_to_string(path).map_err(|e| StartError::Key(shown.clone(), e.to_string()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|_| StartError::Key(shown, "not an Ed25519 PKCS#8 PEM key".into()))
}

/// How long a connection to the gateway may take to send its first byte, and then
/// its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(30);

async fn accept_loop(
    listener: tokio::net::TcpListener,
    gate: Arc<proxy::Gate>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gate = gate.clone();
        let service = hyper::service::service_fn(move |req| gate.clone().serve(req, peer));
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper's head deadline starts with the first byte: a connection that
            // never sends one is closed here.
            let mut probe = [0u8; 1];
            match tokio::time::timeout(HEAD_DEADLINE, stream.peek(&mut probe)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}
