//! `keygate bench oidc`: authorization-code flows against a running provider,
//! without the browser: what the sign-in page does after it has loaded
//! (challenge → signed challenge → code), then the token exchange. Reports full
//! flows per second and the server's CPU per flow, then the server's CPU per
//! token exchange alone (codes made first, exchanged in a measured window).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use super::procfs;
use crate::identity::Identity;

/// The PKCE verifier every flow of the bench uses (RFC 7636 Appendix B's).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

#[derive(Debug, Clone, clap::Args)]
pub struct OidcArgs {
    /// The provider's base URL (where the server listens; the issuer may differ).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A public, first-party client (`keygate clients create --public --first-party`).
    #[arg(long)]
    pub client_id: String,
    /// One of the client's redirect URIs (nothing is sent there).
    #[arg(long, default_value = "http://127.0.0.1/cb")]
    pub redirect_uri: String,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Flows in the measured window (and exchanges in the second one).
    #[arg(long, default_value_t = 2000)]
    pub count: u64,
    #[arg(long)]
    pub server_pid: Option<u32>,
}

struct Flow {
    http: reqwest::Client,
    base: String,
    request: String,
    key: SigningKey,
    client_id: String,
    redirect_uri: String,
}

fn field<'a>(v: &'a serde_json::Value, name: &str) -> Result<&'a str, String> {
    v[name]
        .as_str()
        .ok_or_else(|| format!("no {name} in the answer: {v}"))
}

impl Flow {
    async fn new(a: &OidcArgs, seed: u64) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let base = a.url.trim_end_matches('/').to_owned();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", &a.client_id)
            .append_pair("redirect_uri", &a.redirect_uri)
            .append_pair("scope", "openid")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let page = http
            .get(format!("{base}/oauth/authorize?{}", q.finish()))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let request = page
            .split("data-request=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or("no sign-in page: is the client public, first-party, with this redirect URI?")?
            .to_owned();
        let mut seed_bytes = [7u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Ok(Flow {
            http,
            base,
            request,
            key: SigningKey::from_bytes(&seed_bytes),
            client_id: a.client_id.clone(),
            redirect_uri: a.redirect_uri.clone(),
        })
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        token: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let res = r.send().await.map_err(|e| e.to_string())?;
        let status = res.status();
        let v: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path}: {status} {v}"));
        }
        Ok(v)
    }

    /// Challenge → signature → code.
    async fn code(&self) -> Result<String, String> {
        let pubkey = Identity::from(&self.key).to_string();
        let c = self
            .post(
                "/oauth/authorize/challenge",
                serde_json::json!({"request": self.request, "pubkey": pubkey}),
                None,
            )
            .await?;
        let text = field(&c, "challenge")?;
        let sig = crate::challenge::sign(&self.key, text);
        let t = self
            .post(
                "/oauth/authorize/signin",
                serde_json::json!({"request": self.request, "pubkey": pubkey, "challenge": text, "sig": sig}),
                None,
            )
            .await?;
        let f = self
            .post(
                "/oauth/authorize/finish",
                serde_json::json!({"request": self.request}),
                Some(field(&t, "token")?),
            )
            .await?;
        let to = url::Url::parse(field(&f, "redirect")?).map_err(|e| e.to_string())?;
        to.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| format!("no code: {to}"))
    }

    async fn exchange(&self, code: &str) -> Result<(), String> {
        let res = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.redirect_uri),
                ("code_verifier", VERIFIER),
                ("client_id", &self.client_id),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("token: {}", res.status()));
        }
        res.bytes().await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// `per_client` full flows on every flow at once.
async fn full_flows(flows: &[Flow], per_client: u64) -> Result<(), String> {
    let runs = flows.iter().map(|f| async move {
        for _ in 0..per_client {
            f.exchange(&f.code().await?).await?;
        }
        Ok::<(), String>(())
    });
    for r in futures_util::future::join_all(runs).await {
        r?;
    }
    Ok(())
}

pub async fn run(a: OidcArgs) -> Result<(), String> {
    if a.clients == 0 || a.clients > 1024 || a.count == 0 || a.count > 1_000_000 {
        return Err("--clients must be 1 to 1024, --count 1 to 1000000".into());
    }
    let port = url::Url::parse(&a.url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .ok_or("--url must be an http URL")?;
    let pid = a
        .server_pid
        .or_else(|| procfs::pid_listening_on(port))
        .ok_or("cannot find the server's process: pass --server-pid")?;
    let mut flows = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        flows.push(Flow::new(&a, i as u64).await?);
    }
    let per_client = a.count.div_ceil(a.clients as u64);
    let total = per_client * a.clients as u64;
    full_flows(&flows, 1).await?; // warm-up
    let cpu0 = procfs::process_cpu(pid);
    let t0 = Instant::now();
    full_flows(&flows, per_client).await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = procfs::process_cpu(pid).zip(cpu0).map(|(b, a)| b - a);
    println!(
        "oidc: {total} authorization-code flows (challenge → code → token) in {wall:.2} s: {:.0} flows/s, server CPU {} per flow",
        total as f64 / wall,
        cpu.map_or("?".into(), |c| format!("{:.0} µs", c / total as f64 * 1e6)),
    );
    // Exchanges alone: in rounds (codes live 60 s), each round makes one code per
    // client unmeasured, then exchanges them all at once, measured.
    let (mut wall, mut cpu) = (0.0, Some(0.0));
    for _ in 0..per_client {
        let mut codes = Vec::with_capacity(flows.len());
        for f in &flows {
            codes.push(f.code().await?);
        }
        let cpu0 = procfs::process_cpu(pid);
        let t0 = Instant::now();
        let runs = flows.iter().zip(&codes).map(|(f, code)| f.exchange(code));
        for r in futures_util::future::join_all(runs).await {
            r?;
        }
        wall += t0.elapsed().as_secs_f64();
        cpu = cpu
            .zip(procfs::process_cpu(pid).zip(cpu0).map(|(b, a)| b - a))
            .map(|(t, d)| t + d);
    }
    println!(
        "oidc: {total} token exchanges in {wall:.2} s: {:.0} exchanges/s, server CPU {} per exchange",
        total as f64 / wall,
        cpu.map_or("?".into(), |c| format!("{:.0} µs", c / total as f64 * 1e6)),
    );
    Ok(())
}
