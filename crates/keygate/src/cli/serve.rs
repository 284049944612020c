//! The servers: `serve`, `hub`, `provider` and `gateway`, with the network
//! limits and TLS flags they share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use keygate::apikey::ApiSecret;
use keygate::limits::Limits;
use keygate::server::{self, Mode};
use keygate::time::SystemClock;

use super::{CliResult, DbArgs};

/// `keygate serve` and `keygate hub`.
#[derive(Args, Clone)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DbArgs,
    /// Issuer URL put in tokens (default http://localhost:<port>).
    #[arg(long, env = "KEYGATE_ISSUER")]
    issuer: Option<String>,
    /// Public origin of the Provider; repeat for several (default
    /// http://localhost:<port> and http://127.0.0.1:<port>).
    #[arg(long = "origin", env = "KEYGATE_ORIGINS", value_delimiter = ',')]
    origins: Vec<String>,
    /// Directory served at / (default: the web-demo/ of this source tree, if present).
    #[arg(long, env = "KEYGATE_WEB_ROOT")]
    web_root: Option<PathBuf>,
    /// Challenge lifetime in seconds.
    #[arg(long, env = "KEYGATE_CHALLENGE_TTL", default_value_t = keygate::challenge::DEFAULT_TTL)]
    challenge_ttl: i64,
    /// Also run the gateway (docs/gateway.md) as this file configures it, on its own
    /// `listen` address, checking this Hub's tokens in-process (`hub` may be left out).
    #[arg(long, env = "KEYGATE_SERVE_GATEWAY_CONFIG")]
    gateway_config: Option<PathBuf>,
    /// Development mode: accept development keys (`keys create --dev`), which mint
    /// tokens for any identity without a signature (docs/dev-mode.md). Never in
    /// production.
    #[arg(long)]
    dev: bool,
    /// Ask DPoP clients for server nonces (`DPoP-Nonce`, RFC 9449 §8): a proof
    /// must then carry a nonce this server handed out in the last minute or two
    /// (docs/dpop.md).
    #[arg(long)]
    dpop_nonce: bool,
    /// Days audit events are kept (docs/audit.md); older ones are purged every
    /// ten minutes. 0 keeps them for ever.
    #[arg(long, env = "KEYGATE_AUDIT_RETENTION_DAYS",
          default_value_t = keygate::server::DEFAULT_AUDIT_RETENTION_DAYS)]
    audit_retention_days: u32,
    /// Also print every audit event as one JSON object per line on stdout, for a
    /// SIEM (logs go to stderr).
    #[arg(long)]
    audit_stdout: bool,
    #[command(flatten)]
    net: NetArgs,
}

/// TLS and abuse limits, shared by every server command.
#[derive(Args, Clone)]
struct NetArgs {
    /// Serve HTTPS/WSS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "KEYGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "KEYGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Open TCP connections, in all (0: no cap); when reached, the connection that
    /// has waited longest for a request head is closed to admit a new one.
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Open TCP connections per client address, an IPv6 one by its /64 (0: no cap).
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS_PER_IP", default_value_t = Limits::default().max_connections_per_ip)]
    max_connections_per_ip: usize,
    /// Open sign-in WebSockets, in all (0: no cap).
    #[arg(long, env = "KEYGATE_MAX_HANDSHAKES", default_value_t = Limits::default().max_handshakes)]
    max_handshakes: usize,
    /// Open sign-in WebSockets per client address (0: no cap).
    #[arg(long, env = "KEYGATE_MAX_HANDSHAKES_PER_IP", default_value_t = Limits::default().max_handshakes_per_ip)]
    max_handshakes_per_ip: usize,
    /// Seconds a sign-in socket has to finish.
    #[arg(long, env = "KEYGATE_HANDSHAKE_TIMEOUT", default_value_t = 30)]
    handshake_timeout: u64,
    /// Seconds from accept (or from the first byte of a later request) to a
    /// complete request head.
    #[arg(long, env = "KEYGATE_HEADER_TIMEOUT", default_value_t = Limits::default().header_timeout.as_secs())]
    header_timeout: u64,
    /// Seconds from a request's head to the end of its body.
    #[arg(long, env = "KEYGATE_BODY_TIMEOUT", default_value_t = Limits::default().body_timeout.as_secs())]
    body_timeout: u64,
    /// Seconds a connection may wait for its next request, and a write may stall
    /// on a peer that does not read.
    #[arg(long, env = "KEYGATE_IDLE_TIMEOUT", default_value_t = Limits::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    /// Sign-in requests per second per client address (bursts of twice that; 0: off).
    #[arg(long, env = "KEYGATE_RATE_PER_IP", default_value_t = Limits::default().rate_per_ip)]
    rate_per_ip: u32,
    /// Challenges and redemptions per minute per identity (bursts of 10; 0: off).
    #[arg(long, env = "KEYGATE_RATE_PER_IDENTITY", default_value_t = Limits::default().rate_per_identity_per_minute)]
    rate_per_identity: u32,
    #[command(flatten)]
    admin: AdminArgs,
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz` (docs/operations.md).
#[derive(Args, Clone)]
struct AdminArgs {
    /// Serve /metrics, /healthz and /readyz on this address (off by default; the
    /// flag alone means 127.0.0.1:9464).
    #[arg(long, env = "KEYGATE_ADMIN_LISTEN", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    admin_listen: Option<SocketAddr>,
    /// Allow an --admin-listen address that is not loopback.
    #[arg(long, requires = "admin_listen")]
    admin_listen_any: bool,
    /// Also serve /metrics on the public listener (off by default).
    #[arg(long)]
    metrics_public: bool,
}

impl AdminArgs {
    fn admin(&self) -> server::Admin {
        server::Admin {
            listen: self.admin_listen,
            any_address: self.admin_listen_any,
            metrics_public: self.metrics_public,
        }
    }
}

impl NetArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_ip: self.max_handshakes_per_ip,
            handshake_timeout: std::time::Duration::from_secs(self.handshake_timeout.max(1)),
            header_timeout: std::time::Duration::from_secs(self.header_timeout.max(1)),
            body_timeout: std::time::Duration::from_secs(self.body_timeout.max(1)),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout.max(1)),
            rate_per_ip: self.rate_per_ip,
            rate_per_identity_per_minute: self.rate_per_identity,
        }
    }
}

/// `keygate gateway`.
#[derive(Args)]
pub(crate) struct GatewayArgs {
    /// The gateway's configuration (see docs/gateway.md and examples/gateway.toml).
    #[arg(long, env = "KEYGATE_GATEWAY_CONFIG", default_value = "gateway.toml")]
    config: PathBuf,
    #[command(flatten)]
    admin: AdminArgs,
}

/// `keygate provider`.
#[derive(Args)]
pub(crate) struct ProviderArgs {
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The Hub's URL, e.g. ws://127.0.0.1:8081.
    #[arg(long, env = "HUB_URL")]
    hub_url: String,
    /// Long-lived WebSockets to the Hub that carry the socket sign-ins, many
    /// at once each (opened when first needed, reopened after a failure).
    #[arg(long, env = "HUB_CONNECTIONS", default_value_t = keygate::provider::DEFAULT_HUB_CONNECTIONS as u16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    hub_connections: u16,
    #[arg(long = "origin", env = "KEYGATE_ORIGINS", value_delimiter = ',')]
    origins: Vec<String>,
    #[arg(long, env = "KEYGATE_WEB_ROOT")]
    web_root: Option<PathBuf>,
    #[command(flatten)]
    net: NetArgs,
}

fn user_api_key() -> Result<Option<(String, ApiSecret)>, String> {
    match (
        std::env::var("USER_API_KEY"),
        std::env::var("USER_API_SECRET"),
    ) {
        (Ok(id), Ok(secret)) if !id.is_empty() => {
            let secret = ApiSecret::parse(secret.trim())
                .ok_or("USER_API_SECRET is not a keygate API secret (b… base32)")?;
            Ok(Some((id.trim().to_owned(), secret)))
        }
        (Ok(id), _) if !id.is_empty() => {
            Err("USER_API_KEY is set but USER_API_SECRET is not".into())
        }
        _ => Ok(None),
    }
}

fn default_web_root() -> Option<PathBuf> {
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-demo");
    [PathBuf::from("web-demo"), in_tree]
        .into_iter()
        .find(|p| p.join("index.html").is_file())
}

/// `hub`: a Provider's Hub URL and how many links it keeps to it.
pub(crate) async fn serve(mode: Mode, a: ServeArgs, hub: Option<(String, usize)>) -> CliResult {
    let mut opts = server::Options::new(mode, a.listen, a.db.database);
    opts.issuer = a.issuer;
    opts.origins = a.origins;
    opts.web_root = a.web_root.or_else(default_web_root);
    opts.challenge_ttl = a.challenge_ttl;
    opts.limits = a.net.limits();
    opts.tls = a.net.tls_cert.clone().zip(a.net.tls_key.clone());
    opts.user_api_key = user_api_key()?;
    if let Some((url, links)) = hub {
        opts.hub_url = Some(url);
        opts.hub_connections = links;
    }
    opts.dev = a.dev;
    opts.dpop_nonces = a.dpop_nonce;
    opts.admin = a.net.admin.admin();
    opts.audit_retention_days = a.audit_retention_days;
    opts.audit_stdout = a.audit_stdout;
    if let Some(path) = &a.gateway_config {
        opts.gateway =
            Some(keygate::gateway::GatewayConfig::load(path).map_err(|e| e.to_string())?);
    }
    let running_tls = opts.tls.is_some();
    let running = server::start(opts).await.map_err(|e| e.to_string())?;
    if let Some(g) = &running.gateway {
        tracing::info!(
            "keygate gateway listening on {} (assertion keys at {})",
            g.http_url(),
            keygate::gateway::JWKS_PATH
        );
    }
    let what = match mode {
        Mode::Serve => "hub and provider",
        Mode::Hub => "hub",
        Mode::Provider => "provider",
    };
    tracing::info!(
        issuer = running.issuer.as_deref().unwrap_or("-"),
        provider_key = running.provider_key.as_deref().unwrap_or("-"),
        "keygate {what} listening on {}://{}",
        if running_tls { "https" } else { "http" },
        running.addr
    );
    running.run_until(shutdown_signal()).await;
    tracing::info!("keygate stopped");
    Ok(())
}

/// A Provider alone: `serve` without a store, relaying to the Hub at `hub_url`.
pub(crate) async fn provider(a: ProviderArgs) -> CliResult {
    let args = ServeArgs {
        listen: a.listen,
        db: DbArgs {
            database: String::new(),
        },
        issuer: None,
        origins: a.origins,
        web_root: a.web_root,
        challenge_ttl: keygate::challenge::DEFAULT_TTL,
        gateway_config: None,
        dev: false,
        dpop_nonce: false,
        audit_retention_days: 0,
        audit_stdout: false,
        net: a.net,
    };
    serve(
        Mode::Provider,
        args,
        Some((a.hub_url, usize::from(a.hub_connections))),
    )
    .await
}

pub(crate) async fn gateway(a: GatewayArgs) -> CliResult {
    let admin = a.admin.admin();
    admin.check().map_err(|e| e.to_string())?;
    if admin.metrics_public {
        return Err("the gateway forwards every path: its metrics are on --admin-listen".into());
    }
    let health = keygate::metrics::Health::new(None);
    let admin = match admin.listen {
        Some(addr) => Some(
            server::AdminServer::start(addr, health.clone(), std::sync::Arc::new(SystemClock))
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let signal = async {
        shutdown_signal().await;
        health.drain();
    };
    let result = keygate::gateway::run(&a.config, signal).await;
    if let Some(admin) = admin {
        admin.stop().await;
    }
    result.map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
