//! The command line of `keygate bench`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Full sign-ins from N concurrent clients against a running server.
    Load(LoadArgs),
    /// The crypto floor: one verify_strict plus one token mint, in CPU time.
    Floor {
        /// Seconds of CPU to spend on each of the two operations.
        #[arg(long, default_value_t = 2.0)]
        budget: f64,
    },
    /// Add N sessions to a store (run it while no server has the file open).
    Prefill {
        #[arg(long, default_value = "sqlite://keygate.db")]
        database: String,
        #[arg(long)]
        sessions: u64,
        /// Rows per transaction.
        #[arg(long, default_value_t = 100_000)]
        chunk: u64,
    },
    /// The store alone: N concurrent redemptions (durable group commits) in this
    /// process, without network or crypto.
    Store {
        #[arg(long, default_value = "sqlite://keygate-store-bench.db")]
        database: String,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        #[arg(long, default_value_t = 50_000)]
        count: u64,
    },
    /// The purge of expired rows: fill a SQLite store with N expired sessions
    /// (each with a refresh token and a revocation-feed entry) and N/10 live
    /// ones, then time the purge in its production batches (run it while no
    /// server has the file open).
    Purge {
        #[arg(long, default_value = "sqlite://keygate-purge-bench.db")]
        database: String,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// OpenID Provider: authorization-code flows per second and server CPU per
    /// flow and per token exchange, against a running server.
    Oidc(super::oidc::OidcArgs),
    /// Server memory per idle WebSocket: open N, wait, read VmRSS.
    Idle {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// The server's pid (default: the process listening on the URL's port).
        #[arg(long)]
        server_pid: Option<u32>,
        /// Seconds to wait after the last connection opened before reading memory.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// Spawn `keygate serve` and time its first TCP accept and first token.
    Startup {
        #[arg(long, default_value = "sqlite://keygate-startup.db")]
        database: String,
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Delete the database before each run (first start: keys are created).
        #[arg(long)]
        fresh: bool,
        /// The keygate binary (default: this one).
        #[arg(long)]
        exe: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Flow {
    /// `/ws/userauth`: token frame, challenge, signed challenge, token; one socket each.
    Ws,
    /// `GET /api/token?id=` then `POST /api/token`, keep-alive connections.
    Http,
}

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    #[arg(long, value_enum, default_value_t = Flow::Ws)]
    pub flow: Flow,
    /// Concurrent clients, each with its own key.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many measured sign-ins instead (still bounded by 600 s).
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Start sign-ins at this total rate per second (open loop; latency counts from
    /// the scheduled start) instead of each client going as fast as it can.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The server's pid (default: the process listening on the URL's port).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The audience challenges must name (default: the URL's origin).
    #[arg(long)]
    pub audience: Option<String>,
    /// Run the same load against this server too (e.g. the koa baseline on
    /// http://127.0.0.1:8090) and report the ratio.
    #[arg(long)]
    pub compare: Option<String>,
    #[arg(long)]
    pub compare_pid: Option<u32>,
    /// Seconds of CPU for each half of the crypto floor (0: skip it).
    #[arg(long, default_value_t = 1.0)]
    pub floor_budget: f64,
    /// Also print each result as one line of JSON.
    #[arg(long)]
    pub json: bool,
    /// Sign in with a new key every time (each sign-in is that key's first, and
    /// makes its account) instead of one key per client.
    #[arg(long)]
    pub new_keys: bool,
}
