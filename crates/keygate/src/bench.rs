//! `keygate bench`: a load generator for full sign-ins and the measurements that
//! put its numbers in context (see BENCHMARKS.md at the repository root).
//!
//! - `load`: N concurrent clients doing complete sign-ins over `/ws/userauth` or
//!   `GET`/`POST /api/token` against a running server (keys made before the clock
//!   starts), closed loop or at a fixed rate, for a duration or a count; reports
//!   sign-ins/s, latency percentiles, errors, the server's CPU per sign-in (from
//!   `/proc/<pid>/stat`) against the crypto floor, and with `--compare` the same
//!   load against a second server (the koa baseline) and the ratio.
//! - `floor`: the crypto floor alone. `prefill`: many sessions in a store.
//!   `idle`: server memory per idle WebSocket. `startup`: spawn to first token.
//!
//! Everything targets 127.0.0.1 only, and every run is bounded in time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod args;
mod client;
mod floor;
mod oidc;
mod procfs;
mod scale;

pub use args::{BenchCommand, Flow, LoadArgs};
pub use client::{Failure, Target};
pub use floor::Floor;

/// Longest measured window or run accepted, in seconds.
pub const MAX_SECONDS: f64 = 600.0;
/// Most concurrent clients or idle connections accepted.
pub const MAX_CLIENTS: usize = 20_000;
/// Bound on one sign-in; past it the attempt counts as a timeout.
const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a `keygate bench` command.
pub async fn run(command: BenchCommand) -> Result<(), String> {
    match command {
        BenchCommand::Load(a) => load(a).await,
        BenchCommand::Oidc(a) => oidc::run(a).await,
        BenchCommand::Floor { budget } => {
            let f = measure_floor(budget.clamp(0.1, 60.0)).await?;
            print_floor(&f);
            Ok(())
        }
        BenchCommand::Prefill {
            database,
            sessions,
            chunk,
        } => scale::prefill(&database, sessions, chunk).await,
        BenchCommand::Store {
            database,
            concurrency,
            count,
        } => {
            if concurrency == 0 || concurrency > MAX_CLIENTS || count > 10_000_000 {
                return Err(format!(
                    "--concurrency must be 1 to {MAX_CLIENTS}, --count at most 10000000"
                ));
            }
            scale::store(&database, concurrency, count).await
        }
        BenchCommand::Purge { database, rows } => {
            if rows == 0 || rows > 10_000_000 {
                return Err("--rows must be 1 to 10000000".into());
            }
            scale::purge(&database, rows).await
        }
        BenchCommand::Idle {
            url,
            connections,
            server_pid,
            settle,
        } => {
            let target = Target::new(&url, None)?;
            let pid = server_pid_of(&target, server_pid)?;
            if connections > MAX_CLIENTS {
                return Err(format!("at most {MAX_CLIENTS} connections"));
            }
            let settle = Duration::from_secs_f64(settle.clamp(0.0, 20.0));
            scale::idle(&target, connections, pid, settle).await
        }
        BenchCommand::Startup {
            database,
            runs,
            fresh,
            exe,
        } => {
            let exe = match exe {
                Some(e) => e,
                None => std::env::current_exe().map_err(|e| e.to_string())?,
            };
            scale::startup(exe, &database, runs.min(50), fresh).await
        }
    }
}

async fn measure_floor(budget: f64) -> Result<Floor, String> {
    tokio::task::spawn_blocking(move || floor::measure(budget))
        .await
        .map_err(|e| e.to_string())?
}

fn print_floor(f: &Floor) {
    let kind = if f.cpu_time { "CPU" } else { "wall" };
    println!(
        "crypto floor ({kind} time, one thread): verify_strict {:.1} µs + mint {:.1} µs = {:.1} µs per sign-in",
        f.verify * 1e6,
        f.mint * 1e6,
        f.per_sign_in() * 1e6
    );
    println!(
        "  not in the floor, for reference: Identity::parse (point and torsion checks) {:.1} µs",
        f.parse * 1e6
    );
}

fn server_pid_of(target: &Target, given: Option<u32>) -> Result<u32, String> {
    given
        .or_else(|| procfs::pid_listening_on(target.addr.port()))
        .ok_or_else(|| {
            format!(
                "cannot find the process listening on port {}: pass --server-pid",
                target.addr.port()
            )
        })
}

/// The settings shared by every target of one `load` run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    flow: Flow,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    count: Option<u64>,
    rate: Option<f64>,
    /// A new key for every sign-in: each is the key's first (its account is made).
    new_keys: bool,
}

async fn load(a: LoadArgs) -> Result<(), String> {
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        return Err(format!("--clients must be 1 to {MAX_CLIENTS}"));
    }
    if !(a.duration > 0.0 && a.duration <= MAX_SECONDS && a.warmup >= 0.0 && a.warmup <= 60.0) {
        return Err(format!(
            "--duration must be in (0, {MAX_SECONDS}] s, --warmup in [0, 60] s"
        ));
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r <= 1e6)) {
        return Err("--rate must be in (0, 1000000]".into());
    }
    let plan = Plan {
        flow: a.flow,
        clients: a.clients,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        count: a.count,
        rate: a.rate,
        new_keys: a.new_keys,
    };
    let floor = if a.floor_budget > 0.0 {
        let f = measure_floor(a.floor_budget.min(60.0)).await?;
        print_floor(&f);
        Some(f)
    } else {
        None
    };
    let mut targets = vec![("keygate", a.url.clone(), a.server_pid, a.audience.clone())];
    if let Some(url) = &a.compare {
        targets.push(("baseline", url.clone(), a.compare_pid, None));
    }
    let mut reports = Vec::new();
    for (name, url, pid, audience) in targets {
        let target = Target::new(&url, audience.as_deref())?;
        let pid = server_pid_of(&target, pid)?;
        let report = run_load(name, &target, pid, plan).await;
        report.print(floor.as_ref());
        if a.json {
            println!("{}", report.json(floor.as_ref()));
        }
        reports.push(report);
    }
    if let [k, b] = &reports[..] {
        println!(
            "keygate / baseline: {:.2}× the sign-ins/s; server CPU per sign-in {:.2}× the baseline's",
            k.rate() / b.rate().max(1e-9),
            k.server_cpu_per_sign_in() / b.server_cpu_per_sign_in().max(1e-12),
        );
    }
    Ok(())
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// What the clients share with the coordinator.
struct Shared {
    phase: AtomicU8,
    measured: AtomicU64,
    /// Sign-ins that got a token, in every phase (warm-up and the tail too).
    completed: AtomicU64,
    ticket: AtomicU64,
    /// Open loop: start of the schedule and sign-ins per second.
    schedule: Option<(Instant, f64)>,
}

#[derive(Default)]
struct ClientStats {
    /// Latencies of the sign-ins finished while measuring, in microseconds.
    latencies: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

/// CPU counters read at both ends of the measured window.
#[derive(Debug, Clone, Copy)]
struct Counters {
    server: Option<f64>,
    own: Option<f64>,
    machine: Option<(f64, f64)>,
}

impl Counters {
    fn read(pid: u32) -> Self {
        Counters {
            server: procfs::process_cpu(pid),
            own: procfs::process_cpu(std::process::id()),
            machine: procfs::machine_cpu(),
        }
    }
}

async fn run_load(name: &'static str, target: &Target, pid: u32, plan: Plan) -> Report {
    let users: Vec<client::User> = (0..plan.clients)
        .map(|_| client::User::new(target))
        .collect();
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMING),
        measured: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        ticket: AtomicU64::new(0),
        schedule: plan.rate.map(|r| (Instant::now(), r)),
    });
    let target = Arc::new(target.clone());
    let tasks: Vec<_> = users
        .into_iter()
        .map(|user| {
            let (target, shared) = (target.clone(), shared.clone());
            tokio::spawn(client_loop(target, user, plan.flow, plan.new_keys, shared))
        })
        .collect();
    tokio::time::sleep(plan.warmup).await;
    let before = Counters::read(pid);
    shared.phase.store(MEASURING, Ordering::SeqCst);
    let started = Instant::now();
    let limit = match plan.count {
        Some(_) => Duration::from_secs_f64(MAX_SECONDS),
        None => plan.duration,
    };
    while started.elapsed() < limit {
        if plan
            .count
            .is_some_and(|c| shared.measured.load(Ordering::Relaxed) >= c)
        {
            break;
        }
        let left = limit.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_millis(5))).await;
    }
    shared.phase.store(STOPPED, Ordering::SeqCst);
    let window = started.elapsed();
    let after = Counters::read(pid);
    let mut stats = ClientStats::default();
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout(SIGN_IN_TIMEOUT + Duration::from_secs(3), t).await {
            Ok(Ok(s)) => {
                stats.latencies.extend(s.latencies);
                for (k, v) in s.errors {
                    *stats.errors.entry(k).or_default() += v;
                }
            }
            _ => abort.abort(),
        }
    }
    stats.latencies.sort_unstable();
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    Report {
        name,
        url: match plan.flow {
            Flow::Ws => target.ws_url.clone(),
            Flow::Http => format!("http://{}/api/token", target.authority),
        },
        pid,
        plan,
        window,
        ok: stats.latencies.len() as u64,
        completed: shared.completed.load(Ordering::Relaxed),
        latencies: stats.latencies,
        errors: stats.errors,
        server_cpu: diff(before.server, after.server),
        own_cpu: diff(before.own, after.own),
        machine: match (before.machine, after.machine) {
            (Some((b0, t0)), Some((b1, t1))) => Some((b1 - b0, t1 - t0)),
            _ => None,
        },
    }
}

async fn client_loop(
    target: Arc<Target>,
    mut user: client::User,
    flow: Flow,
    new_keys: bool,
    shared: Arc<Shared>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut http = client::HttpConn::default();
    loop {
        let start = match shared.schedule {
            Some((t0, rate)) => {
                let k = shared.ticket.fetch_add(1, Ordering::Relaxed);
                let at = t0 + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        if shared.phase.load(Ordering::SeqCst) == STOPPED {
            break;
        }
        if new_keys {
            user = client::User::new(&target);
        }
        let outcome = tokio::time::timeout(SIGN_IN_TIMEOUT, async {
            match flow {
                Flow::Ws => client::ws_sign_in(&target, &user).await.map(Some),
                Flow::Http => http.sign_in(&target, &user).await.map(|()| None),
            }
        })
        .await;
        let latency = start.elapsed();
        let measuring = shared.phase.load(Ordering::SeqCst) == MEASURING;
        match outcome {
            Ok(Ok(socket)) => {
                shared.completed.fetch_add(1, Ordering::Relaxed);
                if measuring {
                    stats
                        .latencies
                        .push(latency.as_micros().min(u32::MAX as u128) as u32);
                    shared.measured.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(ws) = socket {
                    client::ws_finish(ws).await;
                }
            }
            Ok(Err(f)) => {
                if measuring {
                    *stats.errors.entry(f.label()).or_default() += 1;
                }
                // A refused connection fails at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => {
                if measuring {
                    *stats.errors.entry(Failure::Timeout.label()).or_default() += 1;
                }
            }
        }
    }
    stats
}

/// One target's results.
struct Report {
    name: &'static str,
    url: String,
    pid: u32,
    plan: Plan,
    window: Duration,
    ok: u64,
    /// Every sign-in that got a token, warm-up included: what the server counted.
    completed: u64,
    /// Sorted, microseconds.
    latencies: Vec<u32>,
    errors: BTreeMap<String, u64>,
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
    /// Busy and total CPU seconds of the whole machine over the window.
    machine: Option<(f64, f64)>,
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Report {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn per_sign_in(&self, cpu: Option<f64>) -> Option<f64> {
        cpu.filter(|_| self.ok > 0).map(|c| c / self.ok as f64)
    }

    fn server_cpu_per_sign_in(&self) -> f64 {
        self.per_sign_in(self.server_cpu).unwrap_or(f64::NAN)
    }

    fn ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).map_or(f64::NAN, |us| f64::from(us) / 1e3)
    }

    fn print(&self, floor: Option<&Floor>) {
        let secs = self.window.as_secs_f64();
        let mode = match self.plan.rate {
            Some(r) => format!("open loop at {r:.0}/s"),
            None => "closed loop".into(),
        };
        let mode = if self.plan.new_keys {
            format!("{mode}, a new key each sign-in")
        } else {
            mode
        };
        let flow = match self.plan.flow {
            Flow::Ws => "WebSocket",
            Flow::Http => "HTTP",
        };
        println!(
            "\n== {} ({}), {flow} flow, {} clients, {mode}, {secs:.1} s measured",
            self.name, self.url, self.plan.clients
        );
        println!(
            "sign-ins/s      {:.0}  ({} ok, {} errors{})",
            self.rate(),
            self.ok,
            self.errors_total(),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(": {:?}", self.errors)
            }
        );
        println!(
            "latency         p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(1.0)
        );
        let us = |c: Option<f64>| c.map_or("n/a".into(), |c| format!("{:.1} µs", c * 1e6));
        let cores = |c: Option<f64>| c.map_or("n/a".into(), |c| format!("{:.2}", c / secs));
        let mut server = format!(
            "server CPU      {} per sign-in, {} cores busy (pid {})",
            us(self.per_sign_in(self.server_cpu)),
            cores(self.server_cpu),
            self.pid
        );
        if let (Some(f), Some(c)) = (floor, self.per_sign_in(self.server_cpu)) {
            server.push_str(&format!(" = {:.2}× the crypto floor", c / f.per_sign_in()));
        }
        println!("{server}");
        println!(
            "load generator  {} per sign-in, {} cores busy (this process, same machine)",
            us(self.per_sign_in(self.own_cpu)),
            cores(self.own_cpu)
        );
        if let Some((busy, total)) = self.machine {
            let others = busy - self.server_cpu.unwrap_or(0.0) - self.own_cpu.unwrap_or(0.0);
            println!(
                "machine         {:.2} of {:.0} cores busy; other processes {:.2} cores",
                busy / secs,
                total / secs,
                others.max(0.0) / secs
            );
        }
    }

    fn json(&self, floor: Option<&Floor>) -> serde_json::Value {
        serde_json::json!({
            "target": self.name,
            "url": self.url,
            "flow": format!("{:?}", self.plan.flow).to_lowercase(),
            "clients": self.plan.clients,
            "new_keys": self.plan.new_keys,
            "rate_target": self.plan.rate,
            "seconds": self.window.as_secs_f64(),
            "ok": self.ok,
            "completed": self.completed,
            "errors": self.errors,
            "sign_ins_per_s": self.rate(),
            "p50_ms": self.ms(0.5),
            "p90_ms": self.ms(0.9),
            "p99_ms": self.ms(0.99),
            "max_ms": self.ms(1.0),
            "server_cpu_us": self.per_sign_in(self.server_cpu).map(|c| c * 1e6),
            "loadgen_cpu_us": self.per_sign_in(self.own_cpu).map(|c| c * 1e6),
            "machine_busy_cores": self.machine.map(|(b, _)| b / self.window.as_secs_f64()),
            "floor_us": floor.map(|f| f.per_sign_in() * 1e6),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.9), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
