//! Starting servers and talking to them like a client would.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use keygate::apikey::{self, ApiSecret};
use keygate::entropy::{Entropy, OsEntropy, os_rng};
use keygate::server::{self, Mode, Options, Running};
use keygate::store::ApiKeyRecord;
use keygate::time::{Clock, ManualClock, SystemClock};
use keygate::token::{Jwks, TokenVerifier};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Ws = keygate::client::WsStream;

/// Bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long [`eventually`] waits: generous, so that a loaded machine makes a test
/// slower, never failed. [`eventually_within`] takes another bound.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// What a probe of [`eventually`] answers: ready (with a value), or not yet (with
/// what it saw, for the failure message).
pub trait Probe {
    type Value;
    fn ready(self) -> Result<Self::Value, String>;
}

impl Probe for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

impl<T, E: std::fmt::Debug> Probe for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Runs `probe` every 25 ms until it is ready (true, `Some`, `Ok`) and returns its
/// value; panics naming `what` and the last answer if that takes over
/// [`PATIENCE`]. For conditions that come true in the background; assert on the
/// behaviour, not on how long it took.
pub async fn eventually<P: Probe>(what: &str, probe: impl AsyncFnMut() -> P) -> P::Value {
    eventually_within(PATIENCE, what, probe).await
}

/// [`eventually`] with the bound `limit` (a probe that hangs counts against it).
pub async fn eventually_within<P: Probe>(
    limit: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> P,
) -> P::Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match tokio::time::timeout_at(deadline, probe()).await {
            Ok(answer) => match answer.ready() {
                Ok(value) => return value,
                Err(last) => last,
            },
            Err(_) => "no answer (the probe itself hung)".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {limit:?} for {what}; last probe: {last}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn eventually_returns_the_value_once_ready() {
    let mut polls = 0;
    let got = eventually("the third poll", async || {
        polls += 1;
        if polls == 3 { Ok(polls) } else { Err(polls) }
    })
    .await;
    assert_eq!(got, 3);
}

#[tokio::test]
#[should_panic(expected = "waited 100ms for a thing that never comes; last probe: 7")]
async fn eventually_names_what_it_waited_for() {
    eventually_within(
        Duration::from_millis(100),
        "a thing that never comes",
        async || Err::<(), _>(7),
    )
    .await;
}

#[tokio::test]
#[should_panic(expected = "the probe itself hung")]
async fn eventually_bounds_a_hanging_probe() {
    eventually_within(Duration::from_millis(100), "an answer", async || {
        std::future::pending::<bool>().await
    })
    .await;
}

pub struct TestServer {
    pub running: Running,
    pub clock: ManualClock,
    pub dir: Arc<tempfile::TempDir>,
}

impl TestServer {
    pub fn http(&self) -> String {
        self.running.http_url()
    }
    pub fn ws(&self, path: &str) -> String {
        self.running.ws_url(path)
    }
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.running.addr.port())
    }
    pub async fn stop(self) -> Arc<tempfile::TempDir> {
        self.running.stop().await;
        self.dir
    }
    /// Creates an API key directly in the store; returns (id, secret).
    pub async fn api_key(&self, scopes: &[&str]) -> (String, ApiSecret) {
        self.api_key_with(|k| ApiKeyRecord {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..k
        })
        .await
    }
    /// Creates an API key that `edit` makes from a default one (no scopes,
    /// origins or rights); returns (id, secret).
    pub async fn api_key_with(
        &self,
        edit: impl FnOnce(ApiKeyRecord) -> ApiKeyRecord,
    ) -> (String, ApiSecret) {
        let store = self.running.store.as_ref().expect("hub mode");
        let key = apikey::generate(&mut os_rng());
        let record = ApiKeyRecord::new(
            key.id.clone(),
            "test app".into(),
            key.secret.clone(),
            self.clock.now(),
        );
        store.insert_api_key(edit(record)).await.unwrap();
        (key.id, key.secret)
    }
}

/// The PostgreSQL server the suite runs against instead of SQLite files, when
/// `KEYGATE_TEST_POSTGRES` names one (`postgres://user@host:port/`; the role must
/// be allowed to create databases). `KEYGATE_MASTER_KEY` (or `_FILE`) must be set
/// too: a shared database has no key file beside it.
pub fn postgres() -> Option<String> {
    let base = std::env::var("KEYGATE_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())?;
    assert!(
        std::env::var_os("KEYGATE_MASTER_KEY").is_some()
            || std::env::var_os("KEYGATE_MASTER_KEY_FILE").is_some(),
        "KEYGATE_TEST_POSTGRES needs KEYGATE_MASTER_KEY (base64url of 32 bytes) as well"
    );
    Some(base)
}

/// The PostgreSQL server of a test that needs one (several nodes on one database,
/// a database outage): such a test is `#[ignore = "needs KEYGATE_TEST_POSTGRES"]`,
/// scripts/test.sh runs it in its PostgreSQL pass (`-- --include-ignored`), and run
/// without the server it fails here instead of passing without testing anything.
pub fn require_postgres() -> String {
    postgres().expect(
        "this test needs PostgreSQL: set KEYGATE_TEST_POSTGRES (and KEYGATE_MASTER_KEY), \
         e.g. through scripts/test.sh, which starts a throwaway cluster",
    )
}

/// Whether this test runs on SQLite; if not, says why it skips (or skips a part).
pub fn on_sqlite(what: &str) -> bool {
    let sqlite = postgres().is_none();
    if !sqlite {
        eprintln!("skipped on PostgreSQL: {what}");
    }
    sqlite
}

/// The database of a test server whose state lives in `dir`: a file there, or
/// under `KEYGATE_TEST_POSTGRES` a database of its own named after `dir` (and
/// this test run), created by the server on first start.
pub fn db_url(dir: &tempfile::TempDir) -> String {
    match postgres() {
        Some(base) => postgres_db(&base, &dir.path().display().to_string()),
        None => format!("sqlite://{}", dir.path().join("keygate.db").display()),
    }
}

/// `base` (`postgres://user@host:port/[db][?params]`) with its database replaced by
/// one named after `key` and this test process.
pub fn postgres_db(base: &str, key: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let entropy: &dyn Entropy = &OsEntropy;
        u64::from(u32::from_le_bytes(entropy.bytes()))
    });
    // A fixed hasher: the same directory names the same database on a restart.
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(key.as_bytes());
    let (url, query) = base.split_once('?').unwrap_or((base, ""));
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!(
        "{}/kg_{run:08x}_{:016x}{query}",
        &url[..host_end],
        h.finish()
    )
}

pub fn options(mode: Mode, dir: &tempfile::TempDir, clock: &ManualClock) -> Options {
    let mut o = Options::new(mode, "127.0.0.1:0".parse().unwrap(), db_url(dir));
    o.issuer = Some("http://keygate.test".into());
    o.clock = Arc::new(clock.clone());
    // Tests hammer one identity from one address; the limits have tests of their own.
    o.limits = keygate::limits::Limits::unlimited();
    // Some tests stop the server with sign-in sockets left open on purpose.
    o.drain = Duration::from_secs(1);
    o
}

/// `keygate serve` on a fresh database with a clock starting at the real time.
pub async fn serve() -> TestServer {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    serve_in(dir).await
}

pub async fn serve_in(dir: Arc<tempfile::TempDir>) -> TestServer {
    serve_with(dir, |_| {}).await
}

/// `keygate serve` in `dir` with the options `edit` changes.
pub async fn serve_with(
    dir: Arc<tempfile::TempDir>,
    edit: impl FnOnce(&mut Options),
) -> TestServer {
    let clock = ManualClock::new(SystemClock.now());
    let mut o = options(Mode::Serve, &dir, &clock);
    edit(&mut o);
    let running = server::start(o).await.unwrap();
    TestServer {
        running,
        clock,
        dir,
    }
}

pub fn user(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn id(key: &SigningKey) -> String {
    keygate::Identity::from(key).to_string()
}

pub async fn connect(url: &str, origin: Option<&str>) -> Ws {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect in time")
        .expect("connect");
    ws
}

pub async fn send(ws: &mut Ws, v: serde_json::Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

pub async fn send_raw(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// The next JSON text frame.
pub async fn recv(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Reads until the server closes; returns the close code.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Expects an error frame with `code`, then a close with `close`.
pub async fn expect_error(ws: &mut Ws, code: &str, close: u16) -> serde_json::Value {
    let f = recv(ws).await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["code"], code, "{f}");
    assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
    // `value` repeats the message (Textile's clients read it).
    assert_eq!(f["value"], f["message"], "{f}");
    assert_eq!(close_code(ws).await, Some(close));
    f
}

pub fn sign(key: &SigningKey, text: &str) -> String {
    keygate::challenge::sign(key, text)
}

/// A whole WebSocket sign-in; returns the token frame.
pub async fn ws_login(
    url: &str,
    origin: Option<&str>,
    key: &SigningKey,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut ws = connect(url, origin).await;
    let mut first = serde_json::json!({"type": "token", "pubkey": id(key)});
    if let (Some(f), Some(e)) = (first.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    send(&mut ws, first).await;
    let c = recv(&mut ws).await;
    assert_eq!(c["type"], "challenge", "{c}");
    let text = c["value"].as_str().unwrap().to_owned();
    send(
        &mut ws,
        serde_json::json!({"type": "challenge", "sig": sign(key, &text)}),
    )
    .await;
    let t = recv(&mut ws).await;
    assert_eq!(close_code(&mut ws).await, Some(1000));
    t
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

pub async fn jwks(base: &str) -> Jwks {
    http()
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn verifier(base: &str) -> TokenVerifier {
    TokenVerifier::new(&jwks(base).await, "http://keygate.test")
}

/// Headers of an API-key-signed request expiring in `ttl` seconds from `now`.
pub fn api_headers(id: &str, secret: &ApiSecret, expires_at: i64) -> reqwest::header::HeaderMap {
    let (msg, sig) = secret.sign(expires_at);
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(apikey::HEADER_KEY, id.parse().unwrap());
    h.insert(apikey::HEADER_MSG, msg.parse().unwrap());
    h.insert(apikey::HEADER_SIG, sig.parse().unwrap());
    h
}

pub async fn json_of(res: reqwest::Response) -> (u16, serde_json::Value) {
    let status = res.status().as_u16();
    let v = res.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// A token from a sign-in answer: `value` (WebSocket frame) or `token` (HTTP).
pub fn tok(v: &serde_json::Value) -> &str {
    v["value"].as_str().or(v["token"].as_str()).unwrap()
}

/// `GET path` on `s` with a bearer token; status and JSON body.
pub async fn get(s: &TestServer, path: &str, token: &str) -> (u16, serde_json::Value) {
    json_of(
        http()
            .get(format!("{}{path}", s.http()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `POST path` on `s` with a JSON body, and a bearer token if given.
pub async fn post(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = http().post(format!("{}{path}", s.http())).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    json_of(req.send().await.unwrap()).await
}

/// `DELETE path` on `s` with a bearer token.
pub async fn delete(s: &TestServer, path: &str, token: &str) -> (u16, serde_json::Value) {
    json_of(
        http()
            .delete(format!("{}{path}", s.http()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `keygate hub` and `keygate provider` as two servers: the Provider holds a
/// fresh API key of the Hub's and reaches it over WebSocket.
pub struct Split {
    pub hub: TestServer,
    pub provider: Running,
    /// The Provider's API key id.
    pub key_id: String,
    /// The Provider's origin (the audience its challenges name).
    pub origin: String,
}

pub async fn split() -> Split {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = ManualClock::new(SystemClock.now());
    let hub = TestServer {
        running: server::start(options(Mode::Hub, &dir, &clock))
            .await
            .unwrap(),
        clock: clock.clone(),
        dir: dir.clone(),
    };
    let (key_id, secret) = hub.api_key(&[]).await;
    let mut o = options(Mode::Provider, &dir, &clock);
    o.hub_url = Some(hub.ws(""));
    o.user_api_key = Some((key_id.clone(), secret));
    let provider = server::start(o).await.unwrap();
    // The key names the Provider's origins, as `keygate keys create --origin` would.
    let store = hub.running.store.as_ref().expect("hub mode");
    assert!(
        store
            .set_api_key_origins(&key_id, &provider.origins)
            .await
            .unwrap()
    );
    let origin = format!("http://127.0.0.1:{}", provider.addr.port());
    Split {
        hub,
        provider,
        key_id,
        origin,
    }
}

/// An app of the Hub: its API key id and secret.
pub struct App {
    pub id: String,
    pub secret: ApiSecret,
}

impl App {
    /// `POST path` with this app's API-key signature and a JSON body.
    pub async fn post(
        &self,
        s: &TestServer,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        json_of(
            http()
                .post(format!("{}{path}", s.http()))
                .headers(api_headers(&self.id, &self.secret, s.clock.now() + 60))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

/// A sign-in through the Hub's HTTP API as `app`; the token body.
pub async fn sign_in(
    s: &TestServer,
    app: &App,
    key: &SigningKey,
    extra: serde_json::Value,
) -> serde_json::Value {
    let (status, c) = app
        .post(s, "/v1/challenge", serde_json::json!({"pubkey": id(key)}))
        .await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    let mut body =
        serde_json::json!({"pubkey": id(key), "challenge": text, "sig": sign(key, text)});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, t) = app.post(s, "/v1/token", body).await;
    assert_eq!(status, 200, "{t}");
    t
}

/// `POST /v1/introspect` as `app`; the answer (which must be a 200).
pub async fn introspect(s: &TestServer, app: &App, token: &str) -> serde_json::Value {
    let (status, v) = app
        .post(s, "/v1/introspect", serde_json::json!({"token": token}))
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// One raw HTTP/1.1 exchange (`Connection: close`), for requests a client library
/// would not send as written (odd header spellings, dot segments).
pub async fn raw(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `keygate` binary as a child process (`keygate serve` on 127.0.0.1:0), killed
/// when dropped. Everything it writes to stderr is kept.
pub struct Keygate {
    pub child: Child,
    pub addr: SocketAddr,
    /// The gateway's address, when started with `--gateway-config`.
    pub gateway: Option<SocketAddr>,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Keygate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Keygate {
    /// `keygate serve` on `db` with `extra` arguments.
    pub fn start(db: &str, extra: &[&str]) -> Keygate {
        Keygate::start_with(db, extra, &[])
    }

    /// `keygate serve` on `db` with `extra` arguments and `env` set.
    pub fn start_with(db: &str, extra: &[&str], env: &[(&str, &str)]) -> Keygate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                db,
                "--issuer",
                "http://keygate.test",
            ])
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("USER_API_KEY")
            .env_remove("USER_API_SECRET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            // Kept (in `child.stdout`) only when there is something to read.
            .stdout(if extra.contains(&"--audit-stdout") {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let kept = Arc::new(Mutex::new(Vec::new()));
        let sink = kept.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                let text = String::from_utf8_lossy(&line);
                if let Some(i) = text.find("listening on http://") {
                    let addr: String = text[i + "listening on http://".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                        .collect();
                    let _ = tx.send((text.contains("gateway listening"), addr));
                }
                sink.lock().unwrap().extend_from_slice(&line);
                line.clear();
            }
        });
        let mut gateway = None;
        let with_gateway = extra.contains(&"--gateway-config");
        let mut main = None;
        // The two listeners may announce themselves in either order.
        while main.is_none() || (with_gateway && gateway.is_none()) {
            let (is_gateway, addr) = rx
                .recv_timeout(WAIT)
                .expect("keygate says where it listens");
            let addr: SocketAddr = addr.parse().unwrap();
            if is_gateway {
                gateway = Some(addr);
            } else {
                main = Some(addr);
            }
        }
        let addr = main.unwrap();
        Keygate {
            child,
            addr,
            gateway,
            stderr: kept,
            reader: Some(reader),
        }
    }

    /// Stops it with SIGTERM (SIGKILL if it lingers) and returns all it wrote to
    /// stderr.
    pub async fn stop(mut self) -> Vec<u8> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let exited = tokio::time::timeout(WAIT, async {
            while self.child.try_wait().unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if exited.is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // The pipe is at its end once the child is gone.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        std::mem::take(&mut *self.stderr.lock().unwrap())
    }
}

/// Runs the `keygate` binary with `args`; its stdout and stderr, or a panic with
/// its stderr if it did not succeed (`ok`) or fail (`!ok`) as expected.
pub fn keygate(args: &[&str], ok: bool) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env_remove("KEYGATE_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.success(), ok, "{args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}
