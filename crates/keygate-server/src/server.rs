//! Assembles and runs the servers: `serve` (Hub and Provider in one process),
//! `hub`, and `provider`. Used by the CLI and by the integration tests, which start
//! real servers on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warp::Filter;

use crate::apikey::{self, ApiSecret};
use crate::challenge;
use crate::client::HubClient;
use crate::error::Error;
use crate::hub::{Hub, HubConfig};
use crate::provider::{HubLink, Provider};
use crate::store::{ApiKeyRecord, Store};
use crate::time::{Clock, SystemClock};
use keygate_core::entropy::{Entropy, OsEntropy};

/// Name under which `serve` remembers the key it provisioned for its Provider.
const BUILTIN_PROVIDER_KEY: &str = "builtin_provider_api_key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Hub and Provider in one process on one port.
    Serve,
    Hub,
    Provider,
}

pub struct Options {
    pub mode: Mode,
    pub listen: SocketAddr,
    /// `sqlite://path` or `postgres://…` (Hub modes).
    pub database: String,
    /// The tokens' `iss`; by default `http://localhost:<port>`.
    pub issuer: Option<String>,
    /// The Provider's public origins; by default `http://localhost:<port>` and
    /// `http://127.0.0.1:<port>`.
    pub origins: Vec<String>,
    pub web_root: Option<PathBuf>,
    pub challenge_ttl: i64,
    /// The Provider's user-group key (`USER_API_KEY`, `USER_API_SECRET`).
    pub user_api_key: Option<(String, ApiSecret)>,
    /// Provider mode: the Hub's URL (`ws://…`).
    pub hub_url: Option<String>,
    /// Provider mode: long-lived `/v1/ws/mux` links to the Hub that carry the
    /// socket sign-ins (`--hub-connections`).
    pub hub_connections: usize,
    pub clock: Arc<dyn Clock>,
    /// Where new ids and keys come from (the OS RNG unless a test fixes it).
    pub entropy: Arc<dyn Entropy>,
    pub limits: crate::limits::Limits,
    /// Serve HTTPS and WSS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long a shutdown waits for sign-ins in flight.
    pub drain: Duration,
    /// Hub modes: also run the gateway, on its own `listen` address, checking this
    /// Hub's tokens in-process (`keygate serve --gateway-config`).
    pub gateway: Option<crate::gateway::GatewayConfig>,
    /// Hub modes: accept development keys and their tokens (docs/dev-mode.md).
    pub dev: bool,
    /// Ask DPoP clients for server nonces (`--dpop-nonce`, docs/dpop.md).
    pub dpop_nonces: bool,
    /// Hub modes: audit events older than this many days are purged
    /// (`--audit-retention-days`; 0 keeps them for ever).
    pub audit_retention_days: u32,
    /// Hub modes: also print every audit event as a JSON line on stdout
    /// (`--audit-stdout`).
    pub audit_stdout: bool,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`), off by default;
    /// see [`Admin`].
    pub admin: Admin,
}

/// The admin listener's settings (`--admin-listen`, docs/operations.md).
#[derive(Debug, Clone, Default)]
pub struct Admin {
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (off when `None`).
    pub listen: Option<SocketAddr>,
    /// Allow an admin address that is not loopback (`--admin-listen-any`).
    pub any_address: bool,
    /// Also serve `/metrics` on the public listener (`--metrics-public`).
    pub metrics_public: bool,
}

impl Admin {
    /// Refuses an admin address off loopback unless asked for.
    pub fn check(&self) -> Result<(), StartError> {
        match self.listen {
            Some(a) if !a.ip().is_loopback() && !self.any_address => {
                Err(StartError::Config(format!(
                    "the admin listener {a} is not a loopback address; pass --admin-listen-any to serve \
                     metrics there anyway"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// A running admin listener.
pub struct AdminServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr`.
    pub async fn start(
        addr: SocketAddr,
        health: Arc<crate::metrics::Health>,
        clock: Arc<dyn Clock>,
    ) -> Result<AdminServer, StartError> {
        let listener = crate::listener::bind(addr).map_err(|e| StartError::Bind(addr, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Bind(addr, e))?;
        let routes = crate::metrics::health_routes(health)
            .or(crate::metrics::metrics_route(clock))
            .unify()
            .recover(crate::http::recover)
            .unify();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.await;
            };
            let limits = crate::limits::Limits::default();
            crate::listener::serve(listener, routes, limits, None, stop, Duration::from_secs(1))
                .await;
        });
        tracing::info!(%addr, "admin listener (/metrics, /healthz, /readyz)");
        Ok(AdminServer { addr, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

impl Options {
    pub fn new(mode: Mode, listen: SocketAddr, database: impl Into<String>) -> Self {
        Options {
            mode,
            listen,
            database: database.into(),
            issuer: None,
            origins: Vec::new(),
            web_root: None,
            challenge_ttl: challenge::DEFAULT_TTL,
            user_api_key: None,
            hub_url: None,
            hub_connections: crate::provider::DEFAULT_HUB_CONNECTIONS,
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
            limits: crate::limits::Limits::default(),
            tls: None,
            drain: Duration::from_secs(30),
            gateway: None,
            dev: false,
            dpop_nonces: false,
            admin: Admin::default(),
            audit_retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
            audit_stdout: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Config(String),
    #[error("hub: {0}")]
    Hub(Error),
    #[error("gateway: {0}")]
    Gateway(#[from] crate::gateway::StartError),
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub hub: Option<Arc<Hub>>,
    pub store: Option<Arc<dyn Store>>,
    /// The API key id the Provider uses.
    pub provider_key: Option<String>,
    pub origins: Vec<String>,
    pub issuer: Option<String>,
    /// The gateway, when `Options::gateway` asked for one.
    pub gateway: Option<crate::gateway::Running>,
    /// The admin listener, when `Options::admin` asked for one.
    pub admin: Option<AdminServer>,
    /// What `/readyz` reports.
    pub health: Arc<crate::metrics::Health>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish, writes the audit events
    /// still queued, and closes the store. `/readyz` answers 503 `draining` from
    /// the start; the admin listener stops last.
    pub async fn stop(mut self) {
        self.health.drain();
        if let Some(hub) = &self.hub {
            hub.close_links();
        }
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        for t in &self.background {
            t.abort();
        }
        if let Some(hub) = &self.hub {
            let _ = tokio::time::timeout(Duration::from_secs(10), hub.audit().flush()).await;
        }
        if let Some(store) = &self.store {
            store.close().await;
        }
        if let Some(admin) = self.admin.take() {
            admin.stop().await;
        }
    }

    /// Runs until `signal` completes, then stops.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.stop().await;
    }
}

/// Starts a server as `opts` says and returns once it is listening.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    opts.admin.check()?;
    let listener =
        crate::listener::bind(opts.listen).map_err(|e| StartError::Bind(opts.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(opts.listen, e))?;
    let origins = if opts.origins.is_empty() {
        vec![
            format!("http://localhost:{}", addr.port()),
            format!("http://127.0.0.1:{}", addr.port()),
        ]
    } else {
        opts.origins.clone()
    };
    if let Some(bad) = origins.iter().find(|o| !valid_origin(o)) {
        return Err(StartError::Config(format!("not an origin: {bad:?}")));
    }
    let issuer = opts
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{}", addr.port()));

    let tls = match &opts.tls {
        Some((cert, key)) => {
            Some(crate::listener::tls_acceptor(cert, key).map_err(StartError::Config)?)
        }
        None => None,
    };
    let mut background = Vec::new();
    let (hub, store) = match opts.mode {
        Mode::Serve | Mode::Hub => {
            let store = crate::store::open(&opts.database).await?;
            let config = HubConfig {
                issuer: issuer.clone(),
                challenge_ttl: opts.challenge_ttl,
                limits: opts.limits.clone(),
                dev: opts.dev,
                dpop: crate::hub::DpopConfig {
                    // A Provider in this process answers the user endpoints on
                    // its origins too.
                    origins: if opts.mode == Mode::Serve {
                        origins.clone()
                    } else {
                        Vec::new()
                    },
                    nonces: opts.dpop_nonces,
                    ..Default::default()
                },
                audit: crate::audit::AuditConfig {
                    stdout: opts.audit_stdout,
                    ..Default::default()
                },
            };
            let hub = Hub::open(
                store.clone(),
                opts.clock.clone(),
                opts.entropy.clone(),
                config,
            )
            .await
            .map_err(StartError::Hub)?;
            background.push(spawn_purger(store.clone(), opts.clock.clone()));
            if opts.audit_retention_days > 0 {
                let keep = i64::from(opts.audit_retention_days) * 86_400;
                background.push(spawn_audit_purger(store.clone(), opts.clock.clone(), keep));
            }
            warn_of_dev_keys(store.as_ref(), opts.dev).await?;
            let hub = Arc::new(hub);
            background.push(tokio::spawn(
                hub.clone().follow_revocations(Duration::from_millis(200)),
            ));
            background.push(tokio::spawn(
                hub.clone().follow_signing_keys(Duration::from_secs(1)),
            ));
            (Some(hub), Some(store))
        }
        Mode::Provider => (None, None),
    };
    let guard = match &hub {
        Some(hub) => hub.guard().clone(),
        None => crate::limits::Guard::new(opts.limits.clone()),
    };
    background.push(tokio::spawn({
        let guard = guard.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                guard.shrink();
            }
        }
    }));

    let mut provider_key = None;
    let routes = match opts.mode {
        Mode::Hub => crate::hub::routes::routes(hub.clone().expect("hub mode has a hub")),
        Mode::Serve => {
            let hub = hub.clone().expect("serve mode has a hub");
            let app = provider_app(
                &hub,
                opts.entropy.as_ref(),
                opts.user_api_key.as_ref(),
                &origins,
            )
            .await?;
            provider_key = Some(app.id.clone());
            let provider = Provider::new(
                HubLink::Local {
                    hub: hub.clone(),
                    app,
                },
                origins.clone(),
                opts.web_root.clone(),
            )
            .with_guard(hub.guard().clone());
            crate::hub::routes::routes(hub)
                .or(crate::provider::routes(Arc::new(provider)))
                .unify()
                .boxed()
        }
        Mode::Provider => {
            let (id, secret) = opts.user_api_key.clone().ok_or_else(|| {
                StartError::Config("a provider needs USER_API_KEY and USER_API_SECRET".into())
            })?;
            let url = opts
                .hub_url
                .as_deref()
                .ok_or_else(|| StartError::Config("a provider needs --hub-url (HUB_URL)".into()))?;
            let client =
                HubClient::new(url, &id, secret).map_err(|e| StartError::Config(e.to_string()))?;
            provider_key = Some(id);
            let provider = Provider::new(
                HubLink::Remote(client),
                origins.clone(),
                opts.web_root.clone(),
            )
            .with_guard(guard.clone())
            .with_hub_connections(opts.hub_connections);
            crate::provider::routes(Arc::new(provider))
        }
    };
    let health = crate::metrics::Health::new(store.clone());
    let routes = crate::metrics::health_routes(health.clone())
        .or(routes)
        .unify();
    let routes = if opts.admin.metrics_public {
        crate::metrics::metrics_route(opts.clock.clone())
            .or(routes)
            .unify()
            .boxed()
    } else {
        routes.boxed()
    };
    let routes = warp::path::full()
        .and(routes.recover(crate::http::recover).unify())
        .map(crate::http::with_allow)
        .with(warp::log::custom(|info| {
            tracing::debug!(
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                micros = info.elapsed().as_micros() as u64,
                "request"
            );
        }));

    // With nonces on, every answer hands out a fresh one (RFC 9449 §8.2), so a
    // client has one before its first proof (a WebSocket sign-in included).
    let nonces = hub.clone().filter(|h| h.dpop().wants_nonces());
    let routes = routes.map(move |reply| {
        let mut res = warp::Reply::into_response(reply);
        if let Some(h) = &nonces
            && let Some(n) = h.dpop().nonce(h.now())
            && !res.headers().contains_key("dpop-nonce")
            && let Ok(v) = warp::http::HeaderValue::from_str(&n)
        {
            res.headers_mut().insert("dpop-nonce", v);
        }
        res
    });
    let gateway = match (opts.gateway, &hub) {
        (Some(config), Some(hub)) => {
            let (clock, entropy) = (opts.clock.clone(), opts.entropy.clone());
            match crate::gateway::start_local(config, hub.clone(), clock, entropy).await {
                Ok(g) => Some(g),
                Err(e) => {
                    for t in &background {
                        t.abort();
                    }
                    if let Some(store) = &store {
                        store.close().await;
                    }
                    return Err(e.into());
                }
            }
        }
        (Some(_), None) => {
            return Err(StartError::Config(
                "the gateway runs with a Hub: use `keygate serve` or `keygate hub`, \
                 or `keygate gateway` next to a provider"
                    .into(),
            ));
        }
        (None, _) => None,
    };
    let admin = match opts.admin.listen {
        Some(addr) => match AdminServer::start(addr, health.clone(), opts.clock.clone()).await {
            Ok(a) => Some(a),
            Err(e) => {
                for t in &background {
                    t.abort();
                }
                if let Some(g) = gateway {
                    g.stop().await;
                }
                if let Some(store) = &store {
                    store.close().await;
                }
                return Err(e);
            }
        },
        None => None,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let (limits, drain) = (opts.limits.clone(), opts.drain);
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = rx.await;
        };
        crate::listener::serve(listener, routes, limits, tls, stop, drain).await;
        // Sign-in sockets outlive their HTTP connection: wait for them too.
        let deadline = tokio::time::Instant::now() + drain;
        while guard.handshakes.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    Ok(Running {
        addr,
        hub,
        store,
        provider_key,
        origins,
        issuer: matches!(opts.mode, Mode::Serve | Mode::Hub).then_some(issuer),
        gateway,
        admin,
        health,
        shutdown: Some(tx),
        task,
        background,
    })
}

/// Logs a warning at start while a live development key exists (and while
/// development mode is on); returns their ids.
pub async fn warn_of_dev_keys(
    store: &dyn Store,
    dev_mode: bool,
) -> Result<Vec<String>, StartError> {
    if dev_mode {
        tracing::warn!(
            "DEVELOPMENT MODE (--dev): development keys mint tokens without signatures; \
             never run this in production"
        );
    }
    let ids: Vec<String> = store
        .api_keys()
        .await?
        .into_iter()
        .filter(|k| k.dev && k.revoked_at.is_none())
        .map(|k| k.id)
        .collect();
    for id in &ids {
        if dev_mode {
            tracing::warn!(key = %id, "a development key exists and is accepted (--dev)");
        } else {
            tracing::warn!(
                key = %id,
                "a development key exists (refused: the Hub runs without --dev); \
                 revoke it with `keygate keys revoke`"
            );
        }
    }
    Ok(ids)
}

/// Whether `o` may be an origin of the Provider or of an API key.
pub fn valid_origin(o: &str) -> bool {
    challenge::valid_audience(o) && o.contains("://")
}

/// The key `serve`'s Provider uses: `USER_API_KEY`/`USER_API_SECRET` when given
/// (and present in this store), else one provisioned on first start. Either
/// way the serve origins become origins of that key (its challenges name them).
async fn provider_app(
    hub: &Hub,
    entropy: &dyn Entropy,
    configured: Option<&(String, ApiSecret)>,
    origins: &[String],
) -> Result<ApiKeyRecord, StartError> {
    let app = match configured {
        Some((id, secret)) => hub.api_key_with_secret(id, secret).await.map_err(|_| {
            StartError::Config(format!(
                "USER_API_KEY {id} with this USER_API_SECRET is not a live key in this database \
                 (create one with `keygate keys create`, or unset both to use the built-in key)"
            ))
        })?,
        None => builtin_provider_app(hub, entropy).await?,
    };
    let missing: Vec<&String> = origins
        .iter()
        .filter(|o| !app.origins.contains(o))
        .collect();
    if missing.is_empty() {
        return Ok(app);
    }
    let mut all = app.origins.clone();
    all.extend(missing.into_iter().cloned());
    hub.store().set_api_key_origins(&app.id, &all).await?;
    tracing::info!(key = %app.id, origins = %all.join(" "), "the provider's API key names the serve origins");
    Ok(ApiKeyRecord {
        origins: all,
        ..app
    })
}

/// The key provisioned on first start for `serve`'s Provider.
async fn builtin_provider_app(
    hub: &Hub,
    entropy: &dyn Entropy,
) -> Result<ApiKeyRecord, StartError> {
    let fresh = apikey::generate(&mut entropy.rng());
    let now = hub.now();
    let chosen = hub
        .store()
        .secret_or_insert(BUILTIN_PROVIDER_KEY, fresh.id.clone().into_bytes(), now)
        .await?;
    let chosen = String::from_utf8(chosen)
        .map_err(|_| StartError::Config("corrupt built-in key id".into()))?;
    if chosen == fresh.id {
        hub.store()
            .insert_api_key(ApiKeyRecord::new(
                fresh.id.clone(),
                "keygate serve built-in provider".into(),
                fresh.secret,
                now,
            ))
            .await?;
        tracing::info!(
            key = %fresh.id,
            "provisioned the built-in provider's user-group API key (its secret stays in the database)"
        );
    }
    hub.live_api_key(&chosen).await.map_err(|_| {
        StartError::Config(format!(
            "the built-in provider key {chosen} has been revoked; set USER_API_KEY and USER_API_SECRET"
        ))
    })
}

/// Every minute, deletes what has expired for good (spent nonces, sessions past
/// their end with their refresh tokens, feed entries that revoke nothing live,
/// brokered token ids): bounded rounds with pauses, at most
/// [`PURGE_ROUNDS`] × [`crate::store::PURGE_BATCH`] rows of each kind a minute.
fn spawn_purger(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let before = clock.now() - crate::store::PURGE_GRACE;
            match crate::store::purge(
                store.as_ref(),
                before,
                crate::store::PURGE_BATCH,
                PURGE_ROUNDS,
                Duration::from_millis(20),
            )
            .await
            {
                Ok(p) if p.total() > 0 => tracing::debug!(
                    nonces = p.nonces,
                    sessions = p.sessions,
                    refresh_tokens = p.refresh_tokens,
                    revocations = p.revocations,
                    broker_tokens = p.broker_tokens,
                    "purged expired rows"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge of expired rows failed"),
            }
        }
    })
}

/// How long audit events are kept unless `--audit-retention-days` says otherwise.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 90;

/// Every ten minutes, deletes audit events older than `keep` seconds, in bounded
/// rounds with pauses (at most [`PURGE_ROUNDS`] × [`crate::store::PURGE_BATCH`]
/// rows a time).
fn spawn_audit_purger(store: Arc<dyn Store>, clock: Arc<dyn Clock>, keep: i64) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            match crate::store::audit::purge_audit(
                store.as_ref(),
                clock.now() - keep,
                crate::store::PURGE_BATCH,
                PURGE_ROUNDS,
                Duration::from_millis(20),
            )
            .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(events = n, "purged old audit events"),
                Err(e) => tracing::warn!(error = %e, "purge of old audit events failed"),
            }
        }
    })
}

/// Purge rounds per minute at most.
pub const PURGE_ROUNDS: u32 = 200;
