//! The examples, run as real processes against a real server: what a newcomer
//! copies has to work.
//!
//! The binaries are the ones `cargo test` (or `cargo build --examples`) builds next
//! to this test binary, in `target/<profile>/examples/`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use keygate::time::Clock;
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::*;

/// Settings the examples read; cleared for every child so that neither the
/// environment of `cargo test` nor a `.env` can change what is tested.
const SETTINGS: &[&str] = &[
    "HUB_URL",
    "USER_API_KEY",
    "USER_API_SECRET",
    "LISTEN",
    "HUB",
    "ISSUER",
    "AUDIENCE",
];

/// `target/<profile>/examples/<name>`, found from this test binary's own path
/// (`target/<profile>/deps/integration-<hash>`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example binary {} is missing: run `cargo build --examples` first \
         (a plain `cargo test` builds them too)",
        path.display()
    );
    path
}

/// An example running as a child process, killed when dropped.
struct Example {
    name: &'static str,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Example {
    /// Starts `name` in `cwd` (a directory without a `.env`) with only `env` set
    /// among the examples' settings.
    fn spawn(name: &'static str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Example {
        let mut cmd = Command::new(binary(name));
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in SETTINGS {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));

        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Example {
            name,
            child,
            lines,
            stderr,
        }
    }

    /// What the example wrote to stderr so far, for failure messages.
    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reads stdout until the `<what> listening on <url>` line; returns the URL.
    async fn listening_url(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv()).await;
            match line {
                Ok(Some(line)) => {
                    if let Some((_, url)) = line.split_once(" listening on ") {
                        return url.trim().to_owned();
                    }
                }
                Ok(None) => panic!(
                    "{} exited before listening ({:?}); stderr:\n{}",
                    self.name,
                    self.child.try_wait(),
                    self.stderr()
                ),
                Err(_) => panic!(
                    "{} did not say where it listens within {WAIT:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits (bounded) for the example to exit; returns its status and stdout.
    async fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        let status = eventually(&format!("{} to exit", self.name), async || {
            self.child
                .try_wait()
                .unwrap()
                .ok_or_else(|| Stderr(self.stderr()))
        })
        .await;
        let mut out = Vec::new();
        // The reader thread ends at EOF, which follows the exit closely.
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            out.push(line);
        }
        (status, out)
    }
}

/// An example's stderr, as it wrote it, in the message of a failed wait.
struct Stderr(String);

impl std::fmt::Debug for Stderr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stderr:\n{}", self.0)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the `<label>: value` line of an example's output.
fn field<'a>(out: &'a [String], label: &str) -> &'a str {
    let prefix = format!("{label}: ");
    out.iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} line in {out:#?}"))
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// Asserts a 401 in the protocol's shape and returns its error code.
async fn unauthorized(res: reqwest::Response) -> String {
    assert!(
        res.headers().contains_key("www-authenticate"),
        "{:?}",
        res.headers()
    );
    let (status, body) = json_of(res).await;
    assert_eq!(status, 401, "{body}");
    body["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn app_backend_brokers_tokens_for_its_users() {
    let s = serve().await;
    let (kid, secret) = s.api_key(&[]).await;
    let mut app = Example::spawn(
        "app_backend",
        &[],
        &[
            ("HUB_URL", &s.ws("")),
            ("USER_API_KEY", &kid),
            ("USER_API_SECRET", &secret.reveal()),
            ("LISTEN", "127.0.0.1:0"),
        ],
        s.dir.path(),
    );
    let base = app.listening_url().await;
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    // The key names the backend's origin (`keygate keys create --origin`).
    let store = s.running.store.as_ref().unwrap();
    assert!(
        store
            .set_api_key_origins(&kid, std::slice::from_ref(&base))
            .await
            .unwrap()
    );

    // A client without Origin gets a challenge for the backend's own origin.
    let key = user(31);
    let (status, c) = json_of(
        http()
            .get(format!("{base}/api/token"))
            .query(&[("id", id(&key))])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{c}\n{}", app.stderr());
    assert!(
        c["challenge"]
            .as_str()
            .unwrap()
            .contains(&format!("\naudience: {base}\n")),
        "{c}"
    );

    // A user signs in through the backend; the client library checks that the
    // challenge names the backend's origin before signing.
    let ws_url = format!("{}/ws/userauth", base.replacen("http://", "ws://", 1));
    let t = tokio::time::timeout(
        WAIT,
        keygate::client::login_ws(&ws_url, &key, None, Default::default(), s.clock.now()),
    )
    .await
    .expect("sign-in in time")
    .unwrap_or_else(|e| panic!("sign-in through app_backend: {e}\n{}", app.stderr()));
    let claims = verifier(&s.http())
        .await
        .verify(&t.token, s.clock.now())
        .unwrap();
    assert_eq!(claims.sub, id(&key));
    assert_eq!(claims.aud, kid, "the token is for the backend's API key");
    assert_eq!(claims.sid, t.session_id);

    // The app's own route uses the token.
    let (status, body) = json_of(get(&format!("{base}/hello"), Some(&t.token)).await).await;
    assert_eq!(status, 200, "{body}\n{}", app.stderr());
    assert_eq!(body["identity"], id(&key));
    assert!(
        body["message"].as_str().unwrap().contains(&id(&key)),
        "{body}"
    );
    assert_eq!(
        unauthorized(get(&format!("{base}/hello"), None).await).await,
        "invalid_token"
    );
    assert_eq!(
        unauthorized(get(&format!("{base}/hello"), Some("not.a.token")).await).await,
        "invalid_token"
    );

    // The user endpoints are answered on the backend's origin too.
    let (status, body) = json_of(get(&format!("{base}/v1/whoami"), Some(&t.token)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity"], id(&key));
    assert_eq!(body["aud"], kid);

    drop(app);
    s.stop().await;
}

#[tokio::test]
async fn user_login_signs_in_with_a_fresh_key_or_a_key_file() {
    let s = serve().await;
    let url = s.ws("/ws/userauth");

    let mut fresh = Example::spawn("user_login", &["--url", &url], &[], s.dir.path());
    let (status, out) = fresh.finish().await;
    assert!(status.success(), "{status}: {out:#?}\n{}", fresh.stderr());
    let identity = field(&out, "identity");
    assert!(identity.starts_with("bbaarei"), "{identity}");
    let claims = verifier(&s.http())
        .await
        .verify(field(&out, "token"), s.clock.now())
        .unwrap();
    assert_eq!(claims.sub, identity);
    assert_eq!(claims.sid, field(&out, "session"));
    assert_eq!(Some(claims.aud.as_str()), s.running.provider_key.as_deref());
    let whoami: serde_json::Value = serde_json::from_str(field(&out, "whoami")).unwrap();
    assert_eq!(whoami["identity"], identity);

    // A key file as `keygate id new` writes it: the identity is that key's.
    let key = user(32);
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let path = s.dir.path().join("id_ed25519.pem");
    std::fs::write(&path, pem.as_bytes()).unwrap();
    let path = path.to_str().unwrap();
    let mut keyed = Example::spawn(
        "user_login",
        &["--url", &url, "--key", path],
        &[],
        s.dir.path(),
    );
    let (status, out) = keyed.finish().await;
    assert!(status.success(), "{status}: {out:#?}\n{}", keyed.stderr());
    assert_eq!(field(&out, "identity"), id(&key));
    let claims = verifier(&s.http())
        .await
        .verify(field(&out, "token"), s.clock.now())
        .unwrap();
    assert_eq!(claims.sub, id(&key));

    // A server that is not there: a failure exit, not a hang.
    let mut nowhere = Example::spawn(
        "user_login",
        &["--url", "ws://127.0.0.1:9/ws/userauth"],
        &[],
        s.dir.path(),
    );
    let (status, _) = nowhere.finish().await;
    assert!(!status.success());
    s.stop().await;
}

#[tokio::test]
async fn protected_service_verifies_offline_and_follows_revocations() {
    let s = serve().await;
    let mut svc = Example::spawn(
        "protected_service",
        &[],
        &[
            ("HUB", &s.http()),
            ("ISSUER", "http://keygate.test"),
            ("LISTEN", "127.0.0.1:0"),
        ],
        s.dir.path(),
    );
    let data = format!("{}/data", svc.listening_url().await);

    let key = user(33);
    let t = ws_login(&s.ws("/ws/userauth"), Some(&s.origin()), &key, json!({})).await;
    let token = t["value"].as_str().unwrap();
    let sid = t["session_id"].as_str().unwrap();
    let (status, body) = json_of(get(&data, Some(token)).await).await;
    assert_eq!(status, 200, "{body}\n{}", svc.stderr());
    assert_eq!(body["identity"], id(&key));
    assert_eq!(body["session_id"], sid);
    assert!(body["data"].is_string(), "{body}");

    assert_eq!(unauthorized(get(&data, None).await).await, "invalid_token");
    assert_eq!(
        unauthorized(get(&data, Some("not.a.token")).await).await,
        "invalid_token"
    );

    // Revoked at the Hub: the service learns it from the feed, without asking.
    let res = http()
        .delete(format!("{}/v1/sessions/{sid}", s.http()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let revoked_at = Instant::now();
    // The token has most of its lifetime left: only the feed makes it refused.
    let what = "protected_service to refuse the revoked session";
    let res = eventually(what, async || {
        let res = get(&data, Some(token)).await;
        match res.status().as_u16() {
            401 => Ok(res),
            other => Err((other, Stderr(svc.stderr()))),
        }
    })
    .await;
    assert_eq!(unauthorized(res).await, "session_revoked");
    // Logged, not asserted: a loaded machine may take longer.
    eprintln!(
        "protected_service refused the revoked session after {:?}",
        revoked_at.elapsed()
    );

    drop(svc);
    s.stop().await;
}

#[tokio::test]
async fn protected_service_checks_the_audience_when_asked() {
    let s = serve().await;
    let app = s
        .running
        .provider_key
        .clone()
        .expect("serve has a provider key");
    let hub = s.http();
    let start = |audience: &str| {
        Example::spawn(
            "protected_service",
            &[],
            &[
                ("HUB", &hub),
                ("ISSUER", "http://keygate.test"),
                ("LISTEN", "127.0.0.1:0"),
                ("AUDIENCE", audience),
            ],
            s.dir.path(),
        )
    };
    let mut ours = start(&app);
    let mut theirs = start("kgk_some_other_app");
    let for_us = format!("{}/data", ours.listening_url().await);
    let for_them = format!("{}/data", theirs.listening_url().await);

    let t = ws_login(
        &s.ws("/ws/userauth"),
        Some(&s.origin()),
        &user(34),
        json!({}),
    )
    .await;
    let token = t["value"].as_str().unwrap();
    let (status, body) = json_of(get(&for_us, Some(token)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        unauthorized(get(&for_them, Some(token)).await).await,
        "invalid_token"
    );
    drop((ours, theirs));
    s.stop().await;
}
