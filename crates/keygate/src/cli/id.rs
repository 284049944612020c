//! The user's key (`id new`, `id show`) and signing in with it (`login`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};

use keygate::hub::{IssuedToken, TokenOptions};
use keygate::identity::Identity;
use keygate::time::{Clock, SystemClock};

use super::CliResult;

#[derive(Args)]
pub(crate) struct KeyArg {
    /// Key file (PKCS#8 PEM).
    #[arg(long, env = "KEYGATE_KEY")]
    pub(crate) key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum IdCommand {
    /// Create a new Ed25519 key (file mode 0600; never overwrites).
    New(KeyArg),
    /// Show the identity of a key in its three spellings.
    Show(KeyArg),
}

#[derive(Args)]
pub(crate) struct LoginArgs {
    /// The Provider's sign-in URL: ws://host:port/ws/userauth (or http://host:port with --http).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/userauth")]
    url: String,
    #[command(flatten)]
    key: KeyArg,
    /// Use the HTTP flow instead of the WebSocket.
    #[arg(long)]
    http: bool,
    /// Bind the token to this key (DPoP, docs/dpop.md): the token is good only
    /// with a DPoP proof made by the key for each request (`keygate dpop`).
    #[arg(long)]
    dpop: bool,
    /// The audience to expect (default: the URL's origin).
    #[arg(long)]
    audience: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
    /// Ask for a refresh token (needs --client-id).
    #[arg(long)]
    offline: bool,
    #[arg(long)]
    scope: Option<String>,
    /// Access token lifetime in seconds (up to the app's maximum).
    #[arg(long)]
    expiration: Option<i64>,
    /// Renew this session (same identity and app) instead of starting a new one.
    #[arg(long, value_name = "SESSION_ID")]
    renew: Option<String>,
    /// Print the whole token response as JSON instead of the token alone.
    #[arg(long)]
    json: bool,
    /// Approve the OAuth device code a TV or CLI app shows (RFC 8628) instead of
    /// signing in here; --url is then the OpenID Provider's issuer URL.
    #[arg(long, value_name = "USER_CODE")]
    device: Option<String>,
    /// With --device: refuse the device instead of approving it.
    #[arg(long, requires = "device")]
    deny: bool,
}

/// The key file `--key` names, else the default one in the config directory.
pub(crate) fn key_path(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("cannot find a config directory: pass --key")?;
    Ok(base.join("keygate").join("id_ed25519.pem"))
}

pub(crate) fn id(c: IdCommand) -> CliResult {
    match c {
        IdCommand::New(k) => id_new(&key_path(k.key)?),
        IdCommand::Show(k) => id_show(&key_path(k.key)?),
    }
}

fn id_new(path: &Path) -> CliResult {
    use std::io::Write;
    let key = SigningKey::generate(&mut keygate::entropy::os_rng());
    // PKCS#8 v1 as RFC 8410 writes it (the seed alone, no public key): the form
    // OpenSSL, Python's cryptography and every other tool read. ed25519-dalek's
    // own encoding adds the public key (v2, RFC 5958), which some of them refuse.
    // Reading takes both.
    let pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| format!("cannot encode the key: {e}"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "{} already exists; keygate never overwrites a key (move it away first)",
            path.display()
        ),
        _ => format!("cannot create {}: {e}", path.display()),
    })?;
    file.write_all(pem.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("created {}", path.display());
    println!("{}", Identity::from(&key));
    Ok(())
}

pub(crate) fn load_key(path: &Path) -> Result<SigningKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {e} (create a key with `keygate id new`)",
            path.display()
        )
    })?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|_| format!("{} is not an Ed25519 PKCS#8 key", path.display()))
}

fn id_show(path: &Path) -> CliResult {
    let id = Identity::from(&load_key(path)?);
    println!("identity: {id}");
    println!("peer id:  {}", id.peer_id());
    println!("did:key:  {}", id.did_key());
    Ok(())
}

pub(crate) async fn login(a: LoginArgs) -> CliResult {
    let key = load_key(&key_path(a.key.key)?)?;
    if let Some(code) = a.device {
        return approve_device(&a.url, &key, &code, !a.deny).await;
    }
    let options = TokenOptions {
        client_id: a.client_id,
        access_type: a.offline.then(|| "offline".to_owned()),
        scope: a.scope,
        expiration: a.expiration,
        session_id: a.renew,
        dpop: a.dpop,
    };
    let now = SystemClock.now();
    let issued = if a.http {
        keygate::client::login_http(&a.url, &key, a.audience.as_deref(), options, now).await
    } else {
        keygate::client::login_ws(&a.url, &key, a.audience.as_deref(), options, now).await
    }
    .map_err(|e| e.to_string())?;
    print_token(&issued, a.json)
}

#[derive(Args)]
pub(crate) struct DpopArgs {
    /// The URL the request goes to (query and fragment are not part of the proof).
    #[arg(long)]
    url: String,
    /// The request's method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// The key-bound access token the request carries (its hash goes in the proof).
    #[arg(long)]
    token: Option<String>,
    /// A nonce the server asked for (its `DPoP-Nonce` header).
    #[arg(long)]
    nonce: Option<String>,
    #[command(flatten)]
    key: KeyArg,
}

/// `keygate dpop`: one proof, for one request, on standard output.
pub(crate) fn dpop(a: DpopArgs) -> CliResult {
    let key = load_key(&key_path(a.key.key)?)?;
    if keygate::dpop::normalize_htu(&a.url).is_none() {
        return Err("--url must be an absolute http(s) URL".into());
    }
    println!(
        "{}",
        keygate::client::dpop_proof(
            &key,
            &a.method.to_ascii_uppercase(),
            &a.url,
            a.token.as_deref(),
            a.nonce.as_deref(),
            SystemClock.now(),
        )
    );
    Ok(())
}

/// `keygate login --device CODE --url ISSUER`: says what the code asks for,
/// then signs the provider's challenge to approve (or deny) it.
async fn approve_device(issuer: &str, key: &SigningKey, code: &str, approve: bool) -> CliResult {
    use keygate::client::device;
    let request = device::device_request(issuer, key, code)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "{} asks for: {}",
        request.client,
        if request.scope.is_empty() {
            "-"
        } else {
            &request.scope
        }
    );
    let decision = device::device_decide(issuer, key, code, &request, approve, SystemClock.now())
        .await
        .map_err(|e| e.to_string())?;
    if decision.approved {
        println!("approved: the device now gets its tokens");
    } else {
        println!("denied");
    }
    Ok(())
}

/// Prints a token: the whole response as JSON with `--json`, else the token alone.
pub(crate) fn print_token(issued: &IssuedToken, json: bool) -> CliResult {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(issued).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", issued.token);
    }
    Ok(())
}
