//! Process-wide metrics in the Prometheus/OpenMetrics text format
//! (`prometheus-client`), served at `/metrics` on the admin listener
//! (`--admin-listen`, docs/operations.md), and the health probes `/healthz` and
//! `/readyz`.
//!
//! Every label value comes from a fixed set the code names (a flow, an error
//! code, a limiter, a gateway route from the operator's configuration, an HTTP
//! status): never an identity, a token, an address or anything else a peer sends.
//! Recording is a few atomic operations (a label lookup takes an uncontended read
//! lock); nothing on the hot path waits for a scrape.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::challenge::Flow;
use crate::error::Error;
use crate::store::Store;

/// The content type of `/metrics` (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignIn {
    flow: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabel {
    flow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Event {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayRequest {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric keygate keeps (one set per process: see [`metrics`]).
pub struct Metrics {
    registry: Registry,
    signins: Family<SignIn, Counter>,
    signin_seconds: HistogramFamily<FlowLabel>,
    tokens: Family<Event, Counter>,
    refresh_reuse: Counter,
    refusals: Family<Kind, Counter>,
    connections: Family<Kind, Gauge>,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    store_errors: Family<Kind, Counter>,
    gateway_requests: Family<GatewayRequest, Counter>,
    upstream_seconds: HistogramFamily<Route>,
    feed_lag: Gauge<f64, AtomicU64>,
    key_age: Gauge,
    audit_dropped: Counter,
    /// When the revocation feed was last read (unix seconds; 0: never).
    feed_read_at: AtomicI64,
    /// When the current signing key was made (unix seconds; 0: no key here).
    key_created_at: AtomicI64,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("keygate");
        let m = Metrics {
            signins: Family::default(),
            signin_seconds: Family::new_with_constructor(latency_histogram),
            tokens: Family::default(),
            refresh_reuse: Counter::default(),
            refusals: Family::default(),
            connections: Family::default(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            commit_seconds: latency_histogram(),
            store_errors: Family::default(),
            gateway_requests: Family::default(),
            upstream_seconds: Family::new_with_constructor(latency_histogram),
            feed_lag: Gauge::default(),
            key_age: Gauge::default(),
            audit_dropped: Counter::default(),
            feed_read_at: AtomicI64::new(0),
            key_created_at: AtomicI64::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "signins",
            "Key sign-ins verified by this Hub, by flow and outcome (ok or the error code)",
            m.signins.clone(),
        );
        registry.register(
            "signin_duration_seconds",
            "Time from a signed challenge's arrival to its token (verify, store, mint), by flow",
            m.signin_seconds.clone(),
        );
        registry.register(
            "tokens",
            "Access tokens minted, sessions refreshed, sessions revoked",
            m.tokens.clone(),
        );
        registry.register(
            "refresh_reuse",
            "Spent refresh tokens presented again (each revoked its session)",
            m.refresh_reuse.clone(),
        );
        registry.register(
            "refusals",
            "Requests and connections refused by a rate limit or a cap, by kind",
            m.refusals.clone(),
        );
        registry.register(
            "open_connections",
            "Open connections: tcp (every listener) and websocket (sign-in and feed sockets)",
            m.connections.clone(),
        );
        registry.register(
            "store_commit_batch_size",
            "Sign-ins per group commit (one transaction, one fsync)",
            m.commit_batch.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "Time one group commit took",
            m.commit_seconds.clone(),
        );
        registry.register(
            "store_errors",
            "Store operations that failed, by kind (unavailable, internal, conflict)",
            m.store_errors.clone(),
        );
        registry.register(
            "gateway_requests",
            "Requests the gateway answered, by route and status",
            m.gateway_requests.clone(),
        );
        registry.register(
            "gateway_upstream_duration_seconds",
            "Time the upstream took to answer a forwarded request, by route",
            m.upstream_seconds.clone(),
        );
        registry.register(
            "revocation_feed_lag_seconds",
            "Seconds since this Hub last read the store's revocation feed (it reads it \
             several times a second)",
            m.feed_lag.clone(),
        );
        registry.register(
            "signing_key_age_seconds",
            "Age of the current token signing key",
            m.key_age.clone(),
        );
        registry.register(
            "audit_events_dropped",
            "Audit events lost: the audit queue was full, or the store refused their batch",
            m.audit_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A key sign-in's outcome and how long it took.
    pub fn signin(&self, flow: Flow, outcome: Result<(), &Error>, took: Duration) {
        let flow = flow_name(flow);
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(e) => code_label(e),
        };
        self.signins.get_or_create(&SignIn { flow, outcome }).inc();
        self.signin_seconds
            .get_or_create(&FlowLabel { flow })
            .observe(took.as_secs_f64());
    }

    /// A development-mode token (no signature; counted as flow `dev`).
    pub fn dev_signin(&self) {
        self.signins
            .get_or_create(&SignIn {
                flow: "dev",
                outcome: "ok",
            })
            .inc();
    }

    pub fn token_minted(&self) {
        self.tokens.get_or_create(&Event { event: "minted" }).inc();
    }

    pub fn session_refreshed(&self) {
        self.tokens
            .get_or_create(&Event { event: "refreshed" })
            .inc();
    }

    pub fn sessions_revoked(&self, n: u64) {
        if n > 0 {
            self.tokens
                .get_or_create(&Event { event: "revoked" })
                .inc_by(n);
        }
    }

    pub fn refresh_reused(&self) {
        self.refresh_reuse.inc();
    }

    /// A refusal by a limiter or a cap; `kind` is one of a fixed set
    /// (docs/operations.md).
    pub fn refused(&self, kind: &'static str) {
        self.refusals.get_or_create(&Kind { kind }).inc();
    }

    /// A connection of `kind` (`tcp`, `websocket`) opened; it counts until the
    /// returned guard drops.
    pub fn connection(&self, kind: &'static str) -> ConnectionGauge {
        let gauge = self.connections.get_or_create_owned(&Kind { kind });
        gauge.inc();
        ConnectionGauge(gauge)
    }

    pub fn group_commit(&self, batch: usize, took: Duration) {
        self.commit_batch.observe(batch as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub fn store_error(&self, kind: &'static str) {
        self.store_errors.get_or_create(&Kind { kind }).inc();
    }

    /// A request the gateway answered; `upstream` is how long its upstream took
    /// when it was forwarded.
    pub fn gateway_request(&self, route: &str, status: u16, upstream: Option<Duration>) {
        let route = route.to_owned();
        if let Some(took) = upstream {
            self.upstream_seconds
                .get_or_create(&Route {
                    route: route.clone(),
                })
                .observe(took.as_secs_f64());
        }
        self.gateway_requests
            .get_or_create(&GatewayRequest { route, status })
            .inc();
    }

    /// The revocation feed was read at `now` (unix seconds).
    pub fn feed_read(&self, now: i64) {
        self.feed_read_at.store(now, Ordering::Relaxed);
    }

    /// The current signing key was made at `created_at` (unix seconds).
    pub fn signing_key(&self, created_at: i64) {
        self.key_created_at.store(created_at, Ordering::Relaxed);
    }

    pub fn audit_dropped(&self, n: u64) {
        self.audit_dropped.inc_by(n);
    }

    /// The text exposition at `now` (unix seconds).
    pub fn encode(&self, now: i64) -> String {
        let read = self.feed_read_at.load(Ordering::Relaxed);
        if read > 0 {
            self.feed_lag.set((now - read).max(0) as f64);
        }
        let made = self.key_created_at.load(Ordering::Relaxed);
        if made > 0 {
            self.key_age.set((now - made).max(0));
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Keeps a connection counted in `keygate_open_connections` while it lives.
pub struct ConnectionGauge(Gauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

fn flow_name(flow: Flow) -> &'static str {
    match flow {
        Flow::ProviderWs => "provider_ws",
        Flow::ProviderHttp => "provider_http",
        Flow::HubWs => "hub_ws",
        Flow::HubHttp => "hub_http",
        Flow::Oidc => "oidc",
    }
}

/// An error's code as a label: the codes keygate itself answers with. A remote
/// Hub's code (a Provider relays it) is a label only if it is one of them.
fn code_label(e: &Error) -> &'static str {
    const KNOWN: &[&str] = &[
        "invalid_identity",
        "invalid_signature",
        "challenge_expired",
        "challenge_used",
        "invalid_challenge",
        "bad_audience",
        "bad_request",
        "invalid_token",
        "invalid_api_key",
        "forbidden_origin",
        "forbidden_audience",
        "forbidden",
        "mfa_required",
        "rate_limited",
        "unavailable",
        "internal_error",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        "dpop_required",
        "handshake_timeout",
        "message_too_large",
        "payload_too_large",
        "invalid_scope",
        "not_found",
    ];
    let code = e.code();
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("other")
}

/// Whether this server is ready for traffic: `/readyz`.
pub struct Health {
    draining: AtomicBool,
    store: Option<Arc<dyn Store>>,
}

/// How long `/readyz` waits for the store.
pub const READY_DEADLINE: Duration = Duration::from_secs(2);

impl Health {
    pub fn new(store: Option<Arc<dyn Store>>) -> Arc<Self> {
        Arc::new(Health {
            draining: AtomicBool::new(false),
            store,
        })
    }

    /// From now on `/readyz` answers 503 `draining`.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not (`draining`, `unavailable`).
    pub async fn ready(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining");
        }
        if let Some(store) = &self.store {
            // A cheap read: the store answers within the deadline or it is not
            // reachable. (The signing keys were loaded before the server listened.)
            match tokio::time::timeout(READY_DEADLINE, store.revocation_cursor()).await {
                Ok(Ok(_)) => {}
                _ => return Err("unavailable"),
            }
        }
        Ok(())
    }
}

fn status_reply(status: StatusCode, word: &str) -> Response {
    let mut res = crate::http::json(status, &serde_json::json!({ "status": word }));
    res.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    res
}

/// `GET /healthz` (the process answers) and `GET /readyz` (see [`Health::ready`]).
pub fn health_routes(
    health: Arc<Health>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| status_reply(StatusCode::OK, "ok"));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(warp::any().map(move || health.clone()))
        .then(|health: Arc<Health>| async move {
            match health.ready().await {
                Ok(()) => status_reply(StatusCode::OK, "ok"),
                Err(why) => status_reply(StatusCode::SERVICE_UNAVAILABLE, why),
            }
        });
    healthz.or(readyz).unify()
}

/// `GET /metrics`: the text exposition.
pub fn metrics_route(
    clock: Arc<dyn crate::time::Clock>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("metrics").and(warp::get()).map(move || {
        let body = metrics().encode(clock.now());
        let mut res = Response::new(body.into());
        res.headers_mut().insert(
            "content-type",
            warp::http::HeaderValue::from_static(CONTENT_TYPE),
        );
        res
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family_and_no_label_from_input() {
        let m = Metrics::new();
        m.signin(
            Flow::HubWs,
            Err(&Error::Remote {
                code: "did:key:z6Mk-not-a-code".into(),
                message: String::new(),
                status: 401,
            }),
            Duration::from_millis(1),
        );
        m.signin(Flow::ProviderWs, Ok(()), Duration::from_micros(400));
        m.token_minted();
        m.sessions_revoked(2);
        m.refused("ip_rate");
        m.group_commit(8, Duration::from_millis(2));
        m.gateway_request("api", 200, Some(Duration::from_micros(300)));
        m.feed_read(1_000);
        m.signing_key(400);
        let text = m.encode(1_003);
        for name in [
            "keygate_signins_total{flow=\"hub_ws\",outcome=\"other\"} 1",
            "keygate_signins_total{flow=\"provider_ws\",outcome=\"ok\"} 1",
            "keygate_signin_duration_seconds_count{flow=\"provider_ws\"} 1",
            "keygate_tokens_total{event=\"revoked\"} 2",
            "keygate_refusals_total{kind=\"ip_rate\"} 1",
            "keygate_store_commit_batch_size_sum 8.0",
            "keygate_gateway_requests_total{route=\"api\",status=\"200\"} 1",
            "keygate_revocation_feed_lag_seconds 3.0",
            "keygate_signing_key_age_seconds 603",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(!text.contains("did:key"));
    }
}
