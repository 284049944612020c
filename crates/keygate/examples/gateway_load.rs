//! Load through the gateway against direct calls to the same upstream: requests per
//! second at a fixed concurrency, and per-request latency at concurrency 1 (the
//! latency the gateway adds). Everything runs in this one process on 127.0.0.1: a
//! `keygate serve` on a temporary database, a tiny hyper upstream answering `ok`,
//! the gateway, and the load loops (one keep-alive HTTP/1.1 connection per worker,
//! bounded by time and by count).
//!
//! Each round also loads the gateway with a key-bound (DPoP) token: every request
//! carries a fresh proof for its URL and token, made before the phase starts (so
//! the numbers are the gateway's cost of checking a proof, not the load
//! generator's cost of signing one).
//!
//! ```text
//! cargo run --release --example gateway_load
//! DURATION_SECS=5 CONCURRENCY=32 cargo run --release --example gateway_load
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use keygate::gateway::{self, GatewayConfig};
use keygate::hub::TokenOptions;
use keygate::server::{self, Mode, Options};
use keygate::time::{Clock, SystemClock};

/// Hard cap on the requests of one phase, whatever the duration.
const MAX_REQUESTS_PER_PHASE: usize = 2_000_000;
/// The public origin the gateway is told it serves: DPoP proofs name
/// `{PUBLIC_ORIGIN}/bench`.
const PUBLIC_ORIGIN: &str = "http://bench";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs = env_num("DURATION_SECS", 5).clamp(1, 60);
    let concurrency = env_num("CONCURRENCY", 32).clamp(1, 256) as usize;
    let rounds = env_num("ROUNDS", 3).clamp(1, 10);

    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let hub = server::start(Options::new(Mode::Serve, "127.0.0.1:0".parse()?, db)).await?;
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let issued = keygate::client::login_ws(
        &hub.ws_url("/ws/userauth"),
        &key,
        None,
        TokenOptions::default(),
        SystemClock.now(),
    )
    .await?;
    let token = issued.token;
    let bound = keygate::client::login_ws(
        &hub.ws_url("/ws/userauth"),
        &key,
        None,
        TokenOptions {
            dpop: true,
            ..TokenOptions::default()
        },
        SystemClock.now(),
    )
    .await?;
    let bound = Arc::new(Bound {
        key: key.clone(),
        token: bound.token,
    });
    let max_proofs = env_num("DPOP_PROOFS", 150_000).clamp(1_000, 1_000_000) as usize;

    let upstream = start_upstream().await?;
    let config = GatewayConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nhub = \"{}\"\nissuer = \"{}\"\n\
         public_origin = \"{PUBLIC_ORIGIN}\"\ndpop_replay_cache = 4000000\n\
         [[route]]\nname = \"api\"\nprefix = \"/\"\nupstream = \"http://{upstream}\"\n",
        hub.http_url(),
        hub.issuer.clone().unwrap_or_default(),
    ))?;
    let gw = gateway::start(config).await?;
    let bare = start_bare_proxy(upstream).await?;

    println!(
        "gateway_load: {concurrency} connections x {secs} s per phase, {rounds} rounds, \
         {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut direct_rps = Vec::new();
    let mut gateway_rps = Vec::new();
    let mut bare_rps = Vec::new();
    let mut direct_lat = Vec::new();
    let mut gateway_lat = Vec::new();
    let mut dpop_rps = Vec::new();
    let mut dpop_lat = Vec::new();
    if let Ok(only) = std::env::var("ONLY") {
        // For profiling one side: `ONLY=gateway perf stat …` (only that side is
        // warmed up and loaded).
        let addr = match only.as_str() {
            "gateway" => gw.addr,
            "bare" => bare,
            _ => upstream,
        };
        run_phase(addr, &Auth::Bearer(&token), 4, Duration::from_millis(500)).await?;
        let p = run_phase(
            addr,
            &Auth::Bearer(&token),
            concurrency,
            Duration::from_secs(secs),
        )
        .await?;
        println!(
            "{only}: {:.0} req/s, p50 {} µs, p99 {} µs",
            p.rps, p.p50, p.p99
        );
        return Ok(());
    }
    // Warm up every path (connections, the gateway's token cache).
    for addr in [upstream, gw.addr, bare] {
        run_phase(addr, &Auth::Bearer(&token), 4, Duration::from_millis(500)).await?;
    }
    let dpop = |n: usize| Auth::Dpop(bound.clone(), n);
    run_phase(gw.addr, &dpop(2_000), 4, Duration::from_millis(500)).await?;
    for round in 1..=rounds {
        let bearer = Auth::Bearer(&token);
        let secs = Duration::from_secs(secs);
        let d = run_phase(upstream, &bearer, concurrency, secs).await?;
        let g = run_phase(gw.addr, &bearer, concurrency, secs).await?;
        let p = run_phase(gw.addr, &dpop(max_proofs), concurrency, secs).await?;
        let b = run_phase(bare, &bearer, concurrency, secs).await?;
        let d1 = run_phase(upstream, &bearer, 1, secs).await?;
        let g1 = run_phase(gw.addr, &bearer, 1, secs).await?;
        let p1 = run_phase(gw.addr, &dpop(max_proofs / 2), 1, secs).await?;
        println!(
            "round {round}: throughput direct {:.0} req/s, gateway {:.0} req/s ({:.0} %), \
             bare proxy {:.0} req/s ({:.0} %); \
             c=1 p50 direct {} µs, gateway {} µs (+{} µs); p99 direct {} µs, gateway {} µs; \
             DPoP: {:.0} req/s ({:.0} % of bearer), c=1 p50 {} µs, p99 {} µs",
            d.rps,
            g.rps,
            100.0 * g.rps / d.rps,
            b.rps,
            100.0 * b.rps / d.rps,
            d1.p50,
            g1.p50,
            g1.p50 as i64 - d1.p50 as i64,
            d1.p99,
            g1.p99,
            p.rps,
            100.0 * p.rps / g.rps,
            p1.p50,
            p1.p99,
        );
        direct_rps.push(d.rps);
        gateway_rps.push(g.rps);
        bare_rps.push(b.rps);
        direct_lat.push(d1.p50);
        gateway_lat.push(g1.p50);
        dpop_rps.push(p.rps);
        dpop_lat.push(p1.p50);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let medu = |v: &mut Vec<u64>| {
        v.sort();
        v[v.len() / 2]
    };
    let (d, g, b) = (
        med(&mut direct_rps),
        med(&mut gateway_rps),
        med(&mut bare_rps),
    );
    let (dl, gl) = (medu(&mut direct_lat), medu(&mut gateway_lat));
    let (p, pl) = (med(&mut dpop_rps), medu(&mut dpop_lat));
    println!(
        "median: direct {d:.0} req/s, gateway {g:.0} req/s = {:.0} % of direct \
         (bare proxy {b:.0} req/s = {:.0} %); added p50 latency {} µs (direct {dl} µs, \
         gateway {gl} µs)",
        100.0 * g / d,
        100.0 * b / d,
        gl as i64 - dl as i64
    );
    println!(
        "median DPoP: gateway {p:.0} req/s = {:.0} % of bearer through the gateway; \
         c=1 p50 {pl} µs (+{} µs over bearer)",
        100.0 * p / g,
        pl as i64 - gl as i64
    );

    gw.stop().await;
    hub.stop().await;
    Ok(())
}

/// A key-bound token and the key it is bound to.
struct Bound {
    key: ed25519_dalek::SigningKey,
    token: String,
}

/// How the requests of a phase are authorized.
enum Auth<'a> {
    Bearer(&'a str),
    /// A DPoP-bound token with at most this many fresh proofs for the phase.
    Dpop(Arc<Bound>, usize),
}

struct Phase {
    rps: f64,
    p50: u64,
    p99: u64,
}

/// `concurrency` workers, each on its own keep-alive connection, sending GETs with
/// the token until `duration` has passed (or, with DPoP, its proofs run out).
async fn run_phase(
    addr: SocketAddr,
    auth: &Auth<'_>,
    concurrency: usize,
    duration: Duration,
) -> Result<Phase, Box<dyn std::error::Error>> {
    let (authorization, proofs) = match auth {
        Auth::Bearer(token) => (format!("Bearer {token}"), None),
        Auth::Dpop(bound, n) => (format!("DPoP {}", bound.token), Some((bound.clone(), *n))),
    };
    let auth = Arc::new(authorization);
    let mut per_worker = MAX_REQUESTS_PER_PHASE / concurrency;
    // One pool of proofs per worker, made before the clock starts.
    let mut pools: Vec<Vec<String>> = vec![Vec::new(); concurrency];
    if let Some((bound, n)) = proofs {
        per_worker = per_worker.min(n / concurrency).max(1);
        let url = format!("{PUBLIC_ORIGIN}/bench");
        let now = SystemClock.now();
        for pool in &mut pools {
            *pool = (0..per_worker)
                .map(|_| {
                    keygate::client::dpop_proof(
                        &bound.key,
                        "GET",
                        &url,
                        Some(&bound.token),
                        None,
                        now,
                    )
                })
                .collect();
        }
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut pool in pools {
        let auth = auth.clone();
        let dpop = !pool.is_empty();
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(4096);
            while Instant::now() < deadline && lat.len() < per_worker {
                let mut req = Request::get("/bench")
                    .header("host", "bench")
                    .header("authorization", auth.as_str());
                if dpop {
                    match pool.pop() {
                        Some(proof) => req = req.header("dpop", proof),
                        None => break,
                    }
                }
                let req = req.body(Empty::<Bytes>::new())?;
                let t = Instant::now();
                sender.ready().await?;
                let res = sender.send_request(req).await?;
                if !res.status().is_success() {
                    return Err(format!("status {}", res.status()).into());
                }
                res.into_body().collect().await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(lat)
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await?.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok(Phase {
        rps: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

/// A bare reverse proxy on the gateway's HTTP stack (hyper-util's server and
/// pooled client) that checks and rewrites nothing: the cost of the extra hop
/// alone, to tell it apart from the cost of the gateway's own work.
async fn start_bare_proxy(upstream: SocketAddr) -> std::io::Result<SocketAddr> {
    use hyper_util::client::legacy::{Client, connect::HttpConnector};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, hyper::body::Incoming> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<_>| {
                    let client = client.clone();
                    async move {
                        let uri = format!("http://{upstream}{}", req.uri().path());
                        *req.uri_mut() = uri.parse().expect("a valid URI");
                        client.request(req).await
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    Ok(addr)
}

/// The upstream: `200 ok` to everything, HTTP/1.1 keep-alive.
async fn start_upstream() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
