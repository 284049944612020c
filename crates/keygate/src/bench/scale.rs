//! The measurements around the load itself: a store pre-filled with many sessions,
//! the memory an idle WebSocket costs the server, and how long `keygate serve`
//! takes from spawn to its first connection and its first token.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::client::{self, Target, User};
use super::procfs;
use crate::entropy::{Entropy, OsEntropy, os_rng};
use crate::time::{Clock, SystemClock};

fn sqlite_url(database: &str) -> String {
    if database.starts_with("sqlite:") {
        database.to_owned()
    } else {
        format!("sqlite://{database}")
    }
}

/// A connection for filling the store fast (WAL without a sync per commit).
async fn fill_connection(url: &str) -> Result<sqlx::SqliteConnection, String> {
    SqliteConnectOptions::from_str(url)
        .map_err(|e| e.to_string())?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// Adds `sessions` live sessions to the store at `database` (created and migrated
/// if needed), `chunk` rows per transaction, each row generated inside SQLite.
/// Run it while no server has the file open.
pub async fn prefill(database: &str, sessions: u64, chunk: u64) -> Result<(), String> {
    let url = sqlite_url(database);
    let store = crate::store::SqliteStore::open(&url)
        .await
        .map_err(|e| format!("cannot open {url}: {e}"))?;
    crate::store::Store::close(&store).await;
    let mut conn = fill_connection(&url).await?;
    // Sessions of the oldest live key (the built-in Provider's when `serve` has
    // made one), so that the api_key index looks as it would in production.
    let api_key: String = sqlx::query_scalar(
        "SELECT COALESCE((SELECT id FROM api_keys WHERE revoked_at IS NULL \
         ORDER BY created_at LIMIT 1), 'kgk_benchprefill')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    let now = SystemClock.now();
    let policy = crate::session::SessionPolicy::default();
    let started = Instant::now();
    let mut done = 0u64;
    while done < sessions {
        let n = chunk.clamp(1, sessions - done);
        let mut tx = sqlx::Connection::begin(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        // Ids and identities have the lengths of real ones (22 and 59 characters).
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
             INSERT INTO sessions (id, subject, api_key, client_id, scope, created_at, \
             last_used_at, expires_at, idle_timeout, user_agent, address) \
             SELECT substr(lower(hex(randomblob(11))), 1, 22), \
             'bbaarei' || lower(hex(randomblob(26))), ?, NULL, '', ?, ?, ?, ?, \
             'keygate-bench-prefill', '127.0.0.1' FROM n",
        )
        .bind(n as i64)
        .bind(&api_key)
        .bind(now)
        .bind(now)
        .bind(now + policy.session_ttl)
        .bind(policy.idle_timeout)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        done += n;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "prefill: added {done} sessions in {secs:.1} s ({:.0} rows/s); the store now holds {total}",
        done as f64 / secs
    );
    Ok(())
}

/// Fills the store at `database` with `rows` expired sessions, each with a
/// refresh token and a feed entry, and `rows / 10` live sessions; then runs the
/// purge to the end in its production batches and reports the rate and the
/// longest round (the longest the writer is held from sign-ins).
pub async fn purge(database: &str, rows: u64) -> Result<(), String> {
    use crate::store::{PURGE_BATCH, PURGE_GRACE, Purged, Store};
    let url = sqlite_url(database);
    let store = crate::store::SqliteStore::open(&url)
        .await
        .map_err(|e| format!("cannot open {url}: {e}"))?;
    let mut conn = fill_connection(&url).await?;
    let now = SystemClock.now();
    let expired = now - PURGE_GRACE - 3600;
    let fill = Instant::now();
    let chunk = 100_000u64;
    let mut done = 0u64;
    let live = rows / 10;
    while done < rows + live {
        let n = chunk.min(rows + live - done);
        let first = done as i64;
        // Rows before `rows` are expired, the rest live.
        let mut tx = sqlx::Connection::begin(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        for sql in [
            "INSERT INTO sessions (id, subject, api_key, client_id, scope, created_at, \
             last_used_at, expires_at, idle_timeout) \
             SELECT printf('s%021d', i), 'bbaarei' || lower(hex(randomblob(26))), \
             'kgk_benchpurge', 'cli', '', ?3, ?3, \
             CASE WHEN i < ?4 THEN ?3 ELSE ?5 END, 3600 FROM n",
            "INSERT INTO refresh_tokens (hash, session_id, client_id, created_at) \
             SELECT randomblob(32), printf('s%021d', i), 'cli', ?3 FROM n",
            "INSERT INTO revocations (session_id, revoked_at, expires_at) \
             SELECT printf('s%021d', i), ?3, CASE WHEN i < ?4 THEN ?3 ELSE ?5 END FROM n",
        ] {
            let sql = format!(
                "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) {sql}"
            );
            let q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(first)
                .bind(first + n as i64 - 1)
                .bind(expired);
            let q = if sql.contains("?4") {
                q.bind(rows as i64).bind(now + 36_000)
            } else {
                q
            };
            q.execute(&mut *tx).await.map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        done += n;
    }
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "purge: filled {rows} expired and {live} live sessions (each with a refresh token \
         and a feed entry) in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut all = Purged::default();
    let (mut rounds, mut longest) = (0u32, Duration::ZERO);
    loop {
        let t = Instant::now();
        let p = store
            .purge_expired(now - PURGE_GRACE, PURGE_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        longest = longest.max(t.elapsed());
        rounds += 1;
        all.sessions += p.sessions;
        all.refresh_tokens += p.refresh_tokens;
        all.revocations += p.revocations;
        if !p.full(PURGE_BATCH) {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let left: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM sessions), (SELECT COUNT(*) FROM refresh_tokens), \
         (SELECT COUNT(*) FROM revocations)",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    store.close().await;
    let deleted = all.sessions + all.refresh_tokens + all.revocations;
    println!(
        "purge: deleted {} sessions, {} refresh tokens, {} feed entries ({deleted} rows) in \
         {secs:.1} s = {:.0} rows/s; {rounds} rounds of up to {PURGE_BATCH} per kind, \
         longest round {:.1} ms; left: {} sessions, {} refresh tokens, {} feed entries",
        all.sessions,
        all.refresh_tokens,
        all.revocations,
        deleted as f64 / secs,
        longest.as_secs_f64() * 1000.0,
        left.0,
        left.1,
        left.2,
    );
    if left != (live as i64, live as i64, live as i64) {
        return Err("the purge left other rows than the live ones".into());
    }
    Ok(())
}

/// Redeems `count` synthetic sign-ins through [`crate::store::Store::redeem`] from
/// `concurrency` tasks, and reports the rate and this process's CPU per sign-in:
/// the cost of durability alone (group commit, B-tree inserts, WAL, fsync).
pub async fn store(database: &str, concurrency: usize, count: u64) -> Result<(), String> {
    use crate::store::{AuditEvent, AuditKind, NewSession, RedeemOutcome, Redemption, Store};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let url = sqlite_url(database);
    let store: Arc<dyn Store> = Arc::new(
        crate::store::SqliteStore::open(&url)
            .await
            .map_err(|e| format!("cannot open {url}: {e}"))?,
    );
    let key = crate::apikey::generate(&mut os_rng());
    let now = SystemClock.now();
    store
        .insert_api_key(crate::store::ApiKeyRecord::new(
            key.id.clone(),
            "keygate bench store".into(),
            key.secret,
            now,
        ))
        .await
        .map_err(|e| e.to_string())?;
    // Identities made before the clock starts, as the load generator does.
    let subjects: Arc<Vec<String>> = Arc::new(
        (0..concurrency)
            .map(|_| {
                let k = ed25519_dalek::SigningKey::generate(&mut os_rng());
                crate::identity::Identity::from(&k).to_string()
            })
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = procfs::process_cpu(std::process::id());
    let io0 = procfs::io_writes(std::process::id());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let (store, subjects, next, api_key) = (
                store.clone(),
                subjects.clone(),
                next.clone(),
                key.id.clone(),
            );
            tokio::spawn(async move {
                let mut failed = 0u64;
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let mut nonce_id = [0u8; 16];
                    OsEntropy.fill(&mut nonce_id);
                    let r = Redemption {
                        nonce_id,
                        nonce_expires_at: now + 60,
                        session: NewSession {
                            jkt: None,
                            id: crate::session::session_id(now, &mut os_rng()),
                            subject: subjects[i].clone(),
                            api_key: api_key.clone(),
                            client_id: None,
                            scope: String::new(),
                            created_at: now,
                            expires_at: now + 36_000,
                            idle_timeout: 14_400,
                            user_agent: Some("keygate-bench".into()),
                            address: Some("127.0.0.1".into()),
                        },
                        refresh: None,
                        renew: None,
                        new_account: format!("kga_bench{i}"),
                        keep: None,
                        // As the Hub's sign-ins do: their event in the same commit.
                        event: Some(
                            AuditEvent::new(AuditKind::SigninSucceeded, now)
                                .app(api_key.as_str())
                                .identity(subjects[i].as_str()),
                        ),
                    };
                    if !matches!(store.redeem(r).await, Ok(RedeemOutcome::Created(_))) {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(1);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = procfs::process_cpu(std::process::id())
        .zip(cpu0)
        .map(|(b, a)| b - a);
    let n = count.max(1) as f64;
    let io = procfs::io_writes(std::process::id())
        .zip(io0)
        .map(|((b, c), (a, d))| {
            format!(
                "; {:.0} bytes in {:.2} write calls",
                (b - a) as f64 / n,
                (c - d) as f64 / n
            )
        })
        .unwrap_or_default();
    println!(
        "store: {count} redemptions ({failed} failed) from {concurrency} tasks in {secs:.2} s = {:.0}/s; \
         per redemption: CPU {}{io}",
        count as f64 / secs,
        cpu.map_or("n/a".into(), |c| format!("{:.1} µs", c / n * 1e6))
    );
    store.close().await;
    Ok(())
}

/// Opens `connections` WebSockets to `/ws/userauth`, leaves them idle, and reports
/// how much the server's resident memory grew per connection.
pub async fn idle(
    target: &Target,
    connections: usize,
    pid: u32,
    settle: Duration,
) -> Result<(), String> {
    let rss = |pid: u32| procfs::vm_rss(pid).ok_or(format!("cannot read /proc/{pid}/status"));
    let me = std::process::id();
    let (server0, own0) = (rss(pid)?, rss(me)?);
    let started = Instant::now();
    let opened: Vec<_> = futures_util::stream::iter(0..connections)
        .map(|_| async {
            tokio::time::timeout(Duration::from_secs(10), client::ws_connect(target)).await
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let open_secs = started.elapsed().as_secs_f64();
    let mut sockets = Vec::with_capacity(connections);
    let mut failures = std::collections::BTreeMap::<String, u64>::new();
    for r in opened {
        match r {
            Ok(Ok(ws)) => sockets.push(ws),
            Ok(Err(f)) => *failures.entry(f.label()).or_default() += 1,
            Err(_) => *failures.entry("timeout".into()).or_default() += 1,
        }
    }
    tokio::time::sleep(settle).await;
    let (server1, own1) = (rss(pid)?, rss(me)?);
    let n = sockets.len().max(1) as f64;
    println!(
        "idle: {} WebSockets open ({:.1} s to open), failures: {failures:?}",
        sockets.len(),
        open_secs
    );
    println!(
        "server pid {pid}: VmRSS {:.1} MiB -> {:.1} MiB = {:.0} bytes per idle connection",
        server0 as f64 / 1048576.0,
        server1 as f64 / 1048576.0,
        server1.saturating_sub(server0) as f64 / n
    );
    println!(
        "load generator: {:.0} bytes per connection on the client side",
        own1.saturating_sub(own0) as f64 / n
    );
    drop(sockets);
    Ok(())
}

/// Spawns `exe serve` `runs` times and reports the time from spawn to the first
/// accepted TCP connection and to the first token over `/ws/userauth`.
pub async fn startup(exe: PathBuf, database: &str, runs: u32, fresh: bool) -> Result<(), String> {
    let url = sqlite_url(database);
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .to_owned();
    let mut rows = Vec::new();
    for run in 0..runs.max(1) {
        if fresh {
            for suffix in ["", "-wal", "-shm", ".key"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let target = Target::new(&format!("http://127.0.0.1:{port}"), None)?;
        let user = User::new(&target);
        let mut child = std::process::Command::new(&exe)
            .args(["serve", "--listen", &target.authority, "--database", &url])
            // An empty USER_API_KEY keeps a .env from choosing the Provider's key.
            .env("USER_API_KEY", "")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let started = Instant::now();
        let measured = async {
            loop {
                if tokio::net::TcpStream::connect(target.addr).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let listening = started.elapsed();
            let ws = client::ws_sign_in(&target, &user)
                .await
                .map_err(|f| f.label())?;
            let token = started.elapsed();
            client::ws_finish(ws).await;
            Ok::<_, String>((listening, token))
        };
        let result = tokio::time::timeout(Duration::from_secs(30), measured).await;
        let _ = child.kill();
        let _ = child.wait();
        let (listening, token) = result.map_err(|_| "no token within 30 s".to_owned())??;
        println!(
            "startup run {}{}: listening after {:.1} ms, first token after {:.1} ms",
            run + 1,
            if fresh { " (fresh database)" } else { "" },
            listening.as_secs_f64() * 1e3,
            token.as_secs_f64() * 1e3
        );
        rows.push((listening, token));
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    println!(
        "startup median of {}: listening {:.1} ms, first token {:.1} ms",
        rows.len(),
        median(rows.iter().map(|r| r.0).collect()),
        median(rows.iter().map(|r| r.1).collect())
    );
    Ok(())
}
