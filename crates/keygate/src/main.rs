//! The `keygate` command: servers (`serve`, `hub`, `provider`), the user's key and
//! sign-in (`id`, `login`, `token verify`), and administration (`keys`, `sessions`).
//! It parses, builds configuration, and calls into the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};

use keygate::apikey::{self, ApiSecret};
use keygate::client::account::{AccountClient, LinkCode, accept_link};
use keygate::hub::TokenOptions;
use keygate::identity::Identity;
use keygate::limits::Limits;
use keygate::server::{self, Mode};
use keygate::session::SessionPolicy;
use keygate::store::{ApiKeyRecord, Revoke, Store};
use keygate::time::{Clock, SystemClock, format_rfc3339};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "Identity tokens for users who hold their own Ed25519 keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Hub and the Provider in one process on an embedded SQLite store.
    Serve(ServeArgs),
    /// Run the Hub alone (the token authority).
    Hub(ServeArgs),
    /// Run a Provider alone, talking to a remote Hub.
    Provider(ProviderArgs),
    /// Your identity key: create it or show it.
    #[command(subcommand)]
    Id(IdCommand),
    /// Sign in to a Provider with your key and print the token.
    Login(LoginArgs),
    /// Your account: the keys that make it up (docs/accounts.md).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Your second factors.
    #[command(subcommand)]
    Mfa(MfaCommand),
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Apps' API keys (administration, on the database directly).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Users' sessions (administration, on the database directly).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Run the token-checking reverse proxy in front of your services.
    Gateway(GatewayArgs),
    /// Benchmarks: sign-in load, crypto floor, scale (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(keygate::bench::BenchCommand),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DbArgs,
    /// Issuer URL put in tokens (default http://localhost:<port>).
    #[arg(long, env = "KEYGATE_ISSUER")]
    issuer: Option<String>,
    /// Public origin of the Provider; repeat for several (default
    /// http://localhost:<port> and http://127.0.0.1:<port>).
    #[arg(long = "origin", env = "KEYGATE_ORIGINS", value_delimiter = ',')]
    origins: Vec<String>,
    /// Directory served at / (default: the web-demo/ of this source tree, if present).
    #[arg(long, env = "KEYGATE_WEB_ROOT")]
    web_root: Option<PathBuf>,
    /// Challenge lifetime in seconds.
    #[arg(long, env = "KEYGATE_CHALLENGE_TTL", default_value_t = keygate::challenge::DEFAULT_TTL)]
    challenge_ttl: i64,
    /// Also run the gateway (docs/gateway.md) as this file configures it, on its own
    /// `listen` address, checking this Hub's tokens in-process (`hub` may be left out).
    #[arg(long, env = "KEYGATE_SERVE_GATEWAY_CONFIG")]
    gateway_config: Option<PathBuf>,
    /// Development mode: accept development keys (`keys create --dev`), which mint
    /// tokens for any identity without a signature (docs/dev-mode.md). Never in
    /// production.
    #[arg(long)]
    dev: bool,
    #[command(flatten)]
    net: NetArgs,
}

/// TLS and abuse limits, shared by every server command.
#[derive(Args, Clone)]
struct NetArgs {
    /// Serve HTTPS/WSS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "KEYGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "KEYGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Open TCP connections, in all (0: no cap); when reached, the connection that
    /// has waited longest for a request head is closed to admit a new one.
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Open TCP connections per client address, an IPv6 one by its /64 (0: no cap).
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS_PER_IP", default_value_t = Limits::default().max_connections_per_ip)]
    max_connections_per_ip: usize,
    /// Open sign-in WebSockets, in all (0: no cap).
    #[arg(long, env = "KEYGATE_MAX_HANDSHAKES", default_value_t = Limits::default().max_handshakes)]
    max_handshakes: usize,
    /// Open sign-in WebSockets per client address (0: no cap).
    #[arg(long, env = "KEYGATE_MAX_HANDSHAKES_PER_IP", default_value_t = Limits::default().max_handshakes_per_ip)]
    max_handshakes_per_ip: usize,
    /// Seconds a sign-in socket has to finish.
    #[arg(long, env = "KEYGATE_HANDSHAKE_TIMEOUT", default_value_t = 30)]
    handshake_timeout: u64,
    /// Seconds from accept (or from the first byte of a later request) to a
    /// complete request head.
    #[arg(long, env = "KEYGATE_HEADER_TIMEOUT", default_value_t = Limits::default().header_timeout.as_secs())]
    header_timeout: u64,
    /// Seconds from a request's head to the end of its body.
    #[arg(long, env = "KEYGATE_BODY_TIMEOUT", default_value_t = Limits::default().body_timeout.as_secs())]
    body_timeout: u64,
    /// Seconds a connection may wait for its next request, and a write may stall
    /// on a peer that does not read.
    #[arg(long, env = "KEYGATE_IDLE_TIMEOUT", default_value_t = Limits::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    /// Sign-in requests per second per client address (bursts of twice that; 0: off).
    #[arg(long, env = "KEYGATE_RATE_PER_IP", default_value_t = Limits::default().rate_per_ip)]
    rate_per_ip: u32,
    /// Challenges and redemptions per minute per identity (bursts of 10; 0: off).
    #[arg(long, env = "KEYGATE_RATE_PER_IDENTITY", default_value_t = Limits::default().rate_per_identity_per_minute)]
    rate_per_identity: u32,
}

impl NetArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_ip: self.max_handshakes_per_ip,
            handshake_timeout: std::time::Duration::from_secs(self.handshake_timeout.max(1)),
            header_timeout: std::time::Duration::from_secs(self.header_timeout.max(1)),
            body_timeout: std::time::Duration::from_secs(self.body_timeout.max(1)),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout.max(1)),
            rate_per_ip: self.rate_per_ip,
            rate_per_identity_per_minute: self.rate_per_identity,
        }
    }
}

#[derive(Args, Clone)]
struct DbArgs {
    /// Database URL.
    #[arg(long, env = "KEYGATE_DATABASE", default_value = "sqlite://keygate.db")]
    database: String,
}

#[derive(Args)]
struct GatewayArgs {
    /// The gateway's configuration (see docs/gateway.md and examples/gateway.toml).
    #[arg(long, env = "KEYGATE_GATEWAY_CONFIG", default_value = "gateway.toml")]
    config: PathBuf,
}

#[derive(Args)]
struct ProviderArgs {
    #[arg(long, env = "KEYGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The Hub's URL, e.g. ws://127.0.0.1:8081.
    #[arg(long, env = "HUB_URL")]
    hub_url: String,
    #[arg(long = "origin", env = "KEYGATE_ORIGINS", value_delimiter = ',')]
    origins: Vec<String>,
    #[arg(long, env = "KEYGATE_WEB_ROOT")]
    web_root: Option<PathBuf>,
    #[command(flatten)]
    net: NetArgs,
}

/// A user's command: sign in to a Provider with the key file, then act.
#[derive(Args)]
struct UserArgs {
    /// The Provider's base URL.
    #[arg(long, env = "KEYGATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[command(flatten)]
    key: KeyArg,
    /// First raise the session with this TOTP code (changing an account that has a
    /// second factor needs it).
    #[arg(long, value_name = "CODE")]
    totp: Option<String>,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// List your account's keys.
    Keys(UserArgs),
    /// Link another key to your account. Both keys sign one link challenge:
    /// `--new-key FILE` signs both here; `--identity ID` prints a link code (and
    /// URL) for the other device, which runs `--accept CODE` with its own key.
    Link {
        #[command(flatten)]
        user: UserArgs,
        /// The new key's file (both keys on this machine).
        #[arg(long, conflicts_with_all = ["identity", "accept"])]
        new_key: Option<PathBuf>,
        /// The new key's identity (it will sign elsewhere).
        #[arg(long, conflicts_with = "accept")]
        identity: Option<String>,
        /// On the new device: a link code or link URL from the signed-in device.
        #[arg(long)]
        accept: Option<String>,
        /// A name for the new key in the key list.
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove a key from your account; every session it made ends at once.
    Remove {
        identity: String,
        #[command(flatten)]
        user: UserArgs,
    },
}

#[derive(Subcommand)]
enum MfaCommand {
    /// TOTP codes from an authenticator app.
    #[command(subcommand)]
    Totp(TotpCommand),
}

#[derive(Subcommand)]
enum TotpCommand {
    /// Enrol a new TOTP secret for your account; it is shown once.
    Enrol(UserArgs),
    /// Show a code: raises your session to aal2 (and confirms a new enrolment).
    Verify {
        code: String,
        #[command(flatten)]
        user: UserArgs,
        /// Print the whole token response as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct KeyArg {
    /// Key file (PKCS#8 PEM).
    #[arg(long, env = "KEYGATE_KEY")]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum IdCommand {
    /// Create a new Ed25519 key (file mode 0600; never overwrites).
    New(KeyArg),
    /// Show the identity of a key in its three spellings.
    Show(KeyArg),
}

#[derive(Args)]
struct LoginArgs {
    /// The Provider's sign-in URL: ws://host:port/ws/userauth (or http://host:port with --http).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/userauth")]
    url: String,
    #[command(flatten)]
    key: KeyArg,
    /// Use the HTTP flow instead of the WebSocket.
    #[arg(long)]
    http: bool,
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
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Verify a token offline against a JWKS URL and print its claims.
    Verify {
        token: String,
        /// e.g. http://127.0.0.1:8080/.well-known/jwks.json
        #[arg(long)]
        jwks: String,
        /// Expected issuer (default: the JWKS URL's origin with host localhost).
        #[arg(long)]
        issuer: Option<String>,
        /// Expected audience (an API key id); any if omitted.
        #[arg(long)]
        audience: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Scopes tokens made through this key may carry (space or comma separated).
        #[arg(long, default_value = "")]
        scopes: String,
        /// Allow this key to create brokered tokens.
        #[arg(long)]
        broker: bool,
        #[arg(long, default_value_t = keygate::session::DEFAULT_ACCESS_TTL)]
        access_ttl: i64,
        #[arg(long, default_value_t = keygate::session::DEFAULT_SESSION_TTL)]
        session_ttl: i64,
        #[arg(long, default_value_t = keygate::session::DEFAULT_IDLE_TIMEOUT)]
        idle_timeout: i64,
        /// Second factor: `required` makes every sign-in `mfa_pending` until the
        /// user shows another key of their account or a TOTP code (docs/accounts.md).
        #[arg(long, default_value = "off", value_parser = ["off", "required"])]
        mfa: String,
        /// An origin of this app (e.g. `https://app.example`) that its challenges
        /// may name as their audience besides the key id; repeat for several
        /// (docs/tenancy.md).
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Allow this key to introspect tokens issued to other apps (a shared
        /// resource server); without it they are `active: false`.
        #[arg(long)]
        introspect_any: bool,
        /// Live sessions one identity may hold with this app; a sign-in past it
        /// ends the oldest (docs/lifecycle.md).
        #[arg(long, default_value_t = keygate::store::DEFAULT_MAX_SESSIONS,
              value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max_sessions: u32,
        /// A development key: it may mint a token for any identity without a
        /// signature (`POST /v1/dev/token`), and works only on a Hub started with
        /// `--dev`; its tokens say `acr` `dev` (docs/dev-mode.md).
        #[arg(long)]
        dev: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Replace an API key's origins (the audiences its challenges may name
    /// besides the key id); none given leaves only the key id.
    Origins {
        id: String,
        #[arg(long = "origin")]
        origins: Vec<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Set an API key's MFA policy (takes effect at once, live sessions included).
    Mfa {
        id: String,
        #[arg(value_parser = ["off", "required"])]
        policy: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List API keys (never their secrets).
    List(DbArgs),
    /// Revoke an API key and every session made through it.
    Revoke {
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Add a new token-signing key and retire the current one: new tokens are
    /// signed with the new key at once (running servers reload within a second);
    /// the retired key stays in the JWKS until the tokens it signed have expired.
    RotateSigning {
        /// The old key leaked: drop it from the JWKS at once, so that the tokens it
        /// signed (and any forged with it) stop verifying.
        #[arg(long)]
        drop_old: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List an identity's sessions.
    List {
        #[arg(long)]
        identity: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke one session (--session) or all of an identity's sessions.
    Revoke {
        #[arg(long)]
        identity: String,
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

type CliResult = Result<(), String>;

fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    // RUST_LOG with the caps that keep frame and header contents out of the log.
    keygate::logging::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> CliResult {
    match command {
        Command::Serve(a) => serve(Mode::Serve, a, None).await,
        Command::Hub(a) => serve(Mode::Hub, a, None).await,
        Command::Provider(a) => {
            let args = ServeArgs {
                listen: a.listen,
                db: DbArgs {
                    database: String::new(),
                },
                issuer: None,
                origins: a.origins,
                web_root: a.web_root,
                challenge_ttl: keygate::challenge::DEFAULT_TTL,
                gateway_config: None,
                dev: false,
                net: a.net,
            };
            serve(Mode::Provider, args, Some(a.hub_url)).await
        }
        Command::Id(IdCommand::New(k)) => id_new(&key_path(k.key)?),
        Command::Id(IdCommand::Show(k)) => id_show(&key_path(k.key)?),
        Command::Login(a) => login(a).await,
        Command::Account(a) => account(a).await,
        Command::Mfa(MfaCommand::Totp(t)) => totp(t).await,
        Command::Token(TokenCommand::Verify {
            token,
            jwks,
            issuer,
            audience,
        }) => token_verify(&token, &jwks, issuer, audience).await,
        Command::Keys(k) => keys(k).await,
        Command::Sessions(s) => sessions(s).await,
        Command::Gateway(a) => keygate::gateway::run(&a.config, shutdown_signal())
            .await
            .map_err(|e| e.to_string()),
        Command::Bench(b) => keygate::bench::run(b).await,
    }
}

fn user_api_key() -> Result<Option<(String, ApiSecret)>, String> {
    match (
        std::env::var("USER_API_KEY"),
        std::env::var("USER_API_SECRET"),
    ) {
        (Ok(id), Ok(secret)) if !id.is_empty() => {
            let secret = ApiSecret::parse(secret.trim())
                .ok_or("USER_API_SECRET is not a keygate API secret (b… base32)")?;
            Ok(Some((id.trim().to_owned(), secret)))
        }
        (Ok(id), _) if !id.is_empty() => {
            Err("USER_API_KEY is set but USER_API_SECRET is not".into())
        }
        _ => Ok(None),
    }
}

fn default_web_root() -> Option<PathBuf> {
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("web-demo");
    [PathBuf::from("web-demo"), in_tree]
        .into_iter()
        .find(|p| p.join("index.html").is_file())
}

async fn serve(mode: Mode, a: ServeArgs, hub_url: Option<String>) -> CliResult {
    let mut opts = server::Options::new(mode, a.listen, a.db.database);
    opts.issuer = a.issuer;
    opts.origins = a.origins;
    opts.web_root = a.web_root.or_else(default_web_root);
    opts.challenge_ttl = a.challenge_ttl;
    opts.limits = a.net.limits();
    opts.tls = a.net.tls_cert.clone().zip(a.net.tls_key.clone());
    opts.user_api_key = user_api_key()?;
    opts.hub_url = hub_url;
    opts.dev = a.dev;
    if let Some(path) = &a.gateway_config {
        opts.gateway =
            Some(keygate::gateway::GatewayConfig::load(path).map_err(|e| e.to_string())?);
    }
    let running_tls = opts.tls.is_some();
    let running = server::start(opts).await.map_err(|e| e.to_string())?;
    if let Some(g) = &running.gateway {
        tracing::info!(
            "keygate gateway listening on {} (assertion keys at {})",
            g.http_url(),
            keygate::gateway::JWKS_PATH
        );
    }
    let what = match mode {
        Mode::Serve => "hub and provider",
        Mode::Hub => "hub",
        Mode::Provider => "provider",
    };
    tracing::info!(
        issuer = running.issuer.as_deref().unwrap_or("-"),
        provider_key = running.provider_key.as_deref().unwrap_or("-"),
        "keygate {what} listening on {}://{}",
        if running_tls { "https" } else { "http" },
        running.addr
    );
    running.run_until(shutdown_signal()).await;
    tracing::info!("keygate stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn key_path(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("cannot find a config directory: pass --key")?;
    Ok(base.join("keygate").join("id_ed25519.pem"))
}

fn id_new(path: &Path) -> CliResult {
    use std::io::Write;
    let key = SigningKey::generate(&mut rand::rng());
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

fn load_key(path: &Path) -> Result<SigningKey, String> {
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

/// Signs in to the Provider with the user's key (raising the session with
/// `--totp` if given).
async fn user_session(u: UserArgs) -> Result<(SigningKey, AccountClient), String> {
    let key = load_key(&key_path(u.key.key)?)?;
    let now = SystemClock.now();
    let t = keygate::client::login_http(&u.url, &key, None, TokenOptions::default(), now)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = AccountClient::new(&u.url, &t.token);
    if let Some(code) = u.totp {
        client.totp_verify(&code).await.map_err(|e| e.to_string())?;
    }
    Ok((key, client))
}

async fn account(a: AccountCommand) -> CliResult {
    match a {
        AccountCommand::Keys(u) => {
            let (_, client) = user_session(u).await?;
            let view = client.keys().await.map_err(|e| e.to_string())?;
            println!("account {} (totp: {})", view.account, view.totp);
            for k in view.keys {
                println!(
                    "{}{}  {}  added {}  last used {}",
                    if k.current { "* " } else { "  " },
                    k.identity,
                    k.label.as_deref().unwrap_or("-"),
                    k.added_at,
                    k.last_used_at.as_deref().unwrap_or("-"),
                );
            }
            Ok(())
        }
        AccountCommand::Link {
            user,
            new_key,
            identity,
            accept,
            label,
        } => {
            let url = user.url.clone();
            let label = label.as_deref();
            let linked = if let Some(code) = accept {
                let key = load_key(&key_path(user.key.key)?)?;
                let code = LinkCode::decode(&code).map_err(|e| e.to_string())?;
                accept_link(&url, &code, &key, label).await
            } else if let Some(path) = new_key {
                let new_key = load_key(&path)?;
                let (key, client) = user_session(user).await?;
                let new_id = Identity::from(&new_key).to_string();
                let code = client
                    .invite(&key, &new_id)
                    .await
                    .map_err(|e| e.to_string())?;
                accept_link(&url, &code, &new_key, label).await
            } else if let Some(id) = identity {
                let (key, client) = user_session(user).await?;
                let code = client.invite(&key, &id).await.map_err(|e| e.to_string())?;
                eprintln!(
                    "On the new device, within 5 minutes: keygate account link --accept CODE \
                     (or open the URL in its browser)."
                );
                println!("{}", code.encode());
                println!("{}/#link={}", url.trim_end_matches('/'), code.encode());
                return Ok(());
            } else {
                return Err("give --new-key FILE, --identity ID or --accept CODE".into());
            };
            let linked = linked.map_err(|e| e.to_string())?;
            println!("linked {} to account {}", linked.identity, linked.account);
            Ok(())
        }
        AccountCommand::Remove { identity, user } => {
            let (_, client) = user_session(user).await?;
            let v = client.remove(&identity).await.map_err(|e| e.to_string())?;
            println!("removed {identity}; {} session(s) ended", v["revoked"]);
            Ok(())
        }
    }
}

async fn totp(t: TotpCommand) -> CliResult {
    match t {
        TotpCommand::Enrol(u) => {
            let (_, client) = user_session(u).await?;
            let e = client.totp_enrol().await.map_err(|e| e.to_string())?;
            eprintln!(
                "Add this to your authenticator app now: it is shown once. Then confirm \
                 with `keygate mfa totp verify CODE`."
            );
            println!("secret: {}", e.secret);
            println!("{}", e.otpauth_uri);
            Ok(())
        }
        TotpCommand::Verify { code, user, json } => {
            let (_, mut client) = user_session(user).await?;
            let t = client.totp_verify(&code).await.map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&t).map_err(|e| e.to_string())?
                );
            } else {
                println!("{}", t.token);
            }
            Ok(())
        }
    }
}

async fn login(a: LoginArgs) -> CliResult {
    let key = load_key(&key_path(a.key.key)?)?;
    let options = TokenOptions {
        client_id: a.client_id,
        access_type: a.offline.then(|| "offline".to_owned()),
        scope: a.scope,
        expiration: a.expiration,
        session_id: a.renew,
    };
    let now = SystemClock.now();
    let issued = if a.http {
        keygate::client::login_http(&a.url, &key, a.audience.as_deref(), options, now).await
    } else {
        keygate::client::login_ws(&a.url, &key, a.audience.as_deref(), options, now).await
    }
    .map_err(|e| e.to_string())?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&issued).map_err(|e| e.to_string())?
        );
    } else {
        println!("{}", issued.token);
    }
    Ok(())
}

async fn token_verify(
    token: &str,
    jwks: &str,
    issuer: Option<String>,
    audience: Option<String>,
) -> CliResult {
    let issuer = match issuer {
        Some(i) => i,
        None => {
            let origin = keygate::client::origin_of(jwks).map_err(|e| e.to_string())?;
            origin.replace("://127.0.0.1:", "://localhost:")
        }
    };
    let mut verifier = keygate::client::fetch_verifier(jwks, &issuer)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(aud) = audience {
        verifier = verifier.with_audiences(vec![aud]);
    }
    let claims = verifier
        .verify(token.trim(), SystemClock.now())
        .map_err(|e| format!("invalid token: {e}"))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&claims).map_err(|e| e.to_string())?
    );
    Ok(())
}

async fn open_store(db: &DbArgs) -> Result<Arc<dyn Store>, String> {
    keygate::store::open(&db.database)
        .await
        .map_err(|e| format!("cannot open {}: {e}", db.database))
}

/// An API key's origins must be origins (`scheme://host[:port]`), as the
/// Provider's are.
fn check_origins(origins: &[String]) -> CliResult {
    match origins.iter().find(|o| !keygate::server::valid_origin(o)) {
        Some(_) => Err("each --origin must be an origin such as https://app.example".into()),
        None => Ok(()),
    }
}

async fn keys(k: KeysCommand) -> CliResult {
    match k {
        KeysCommand::Create {
            name,
            scopes,
            broker,
            access_ttl,
            session_ttl,
            idle_timeout,
            mfa,
            origins,
            introspect_any,
            max_sessions,
            dev,
            db,
        } => {
            check_origins(&origins)?;
            let store = open_store(&db).await?;
            let key = apikey::generate(&mut rand::rng());
            let policy = SessionPolicy {
                access_ttl,
                session_ttl,
                idle_timeout,
            };
            if !(keygate::session::MIN_ACCESS_TTL..=keygate::token::MAX_LIFETIME)
                .contains(&access_ttl)
                || session_ttl < access_ttl
                || idle_timeout <= 0
            {
                return Err(
                    "need 60 <= access_ttl <= 86400, session_ttl >= access_ttl and idle_timeout > 0"
                        .into(),
                );
            }
            store
                .insert_api_key(ApiKeyRecord {
                    scopes: scopes
                        .split([' ', ','])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    can_broker: broker,
                    policy,
                    origins,
                    introspect_any,
                    max_sessions,
                    dev,
                    ..ApiKeyRecord::new(key.id.clone(), name, key.secret.clone(), SystemClock.now())
                })
                .await
                .map_err(|e| e.to_string())?;
            if mfa == "required" {
                store
                    .set_mfa_required(&key.id, true)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if dev {
                eprintln!(
                    "This is a DEVELOPMENT key: it mints tokens for any identity without a \
                     signature, on a Hub started with --dev only. Never use it in production."
                );
            }
            eprintln!("API key created. The secret is shown once: store it now (e.g. in .env).");
            println!("USER_API_KEY={}", key.id);
            println!("USER_API_SECRET={}", key.secret.reveal());
            Ok(())
        }
        KeysCommand::Origins { id, origins, db } => {
            check_origins(&origins)?;
            let store = open_store(&db).await?;
            if !store
                .set_api_key_origins(&id, &origins)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no API key {id}"));
            }
            println!("{id}: origins {}", origins.join(" "));
            Ok(())
        }
        KeysCommand::Mfa { id, policy, db } => {
            let store = open_store(&db).await?;
            match store.api_key(&id).await.map_err(|e| e.to_string())? {
                Some(_) => {}
                None => return Err(format!("no API key {id}")),
            }
            store
                .set_mfa_required(&id, policy == "required")
                .await
                .map_err(|e| e.to_string())?;
            println!("{id}: mfa {policy}");
            Ok(())
        }
        KeysCommand::List(db) => {
            let store = open_store(&db).await?;
            for k in store.api_keys().await.map_err(|e| e.to_string())? {
                println!(
                    "{}\t{}\t{}\tscopes={}\tbroker={}\torigins={}\tintrospect_any={}\tmax_sessions={}\tdev={}\t{}",
                    k.id,
                    k.name,
                    format_rfc3339(k.created_at),
                    k.scopes.join(","),
                    k.can_broker,
                    k.origins.join(","),
                    k.introspect_any,
                    k.max_sessions,
                    k.dev,
                    k.revoked_at.map_or("active".to_owned(), |t| format!(
                        "revoked {}",
                        format_rfc3339(t)
                    )),
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id, db } => {
            let store = open_store(&db).await?;
            if store
                .revoke_api_key(&id, SystemClock.now())
                .await
                .map_err(|e| e.to_string())?
            {
                println!("revoked {id} and every session made through it");
                Ok(())
            } else {
                Err(format!("no live key {id}"))
            }
        }
        KeysCommand::RotateSigning { drop_old, db } => {
            let store = open_store(&db).await?;
            let (kid, retired) =
                keygate::hub::rotate_signing_key(store.as_ref(), SystemClock.now(), drop_old)
                    .await
                    .map_err(|e| e.to_string())?;
            println!("signing key {kid} is now current");
            for old in retired {
                if drop_old {
                    println!("retired {old}: dropped from the JWKS, its tokens no longer verify");
                } else {
                    println!("retired {old}: published until the tokens it signed have expired");
                }
            }
            Ok(())
        }
    }
}

async fn sessions(s: SessionsCommand) -> CliResult {
    match s {
        SessionsCommand::List { identity, db } => {
            let identity = Identity::parse(&identity)
                .map_err(|e| e.to_string())?
                .to_string();
            let store = open_store(&db).await?;
            for s in store
                .sessions_of(&identity)
                .await
                .map_err(|e| e.to_string())?
            {
                let state = match s.check(SystemClock.now()) {
                    Ok(()) => "active".to_owned(),
                    Err(e) => e.code().to_owned(),
                };
                println!(
                    "{}\t{}\tcreated {}\texpires {}\t{}\t{}",
                    s.id,
                    s.api_key,
                    format_rfc3339(s.created_at),
                    format_rfc3339(s.expires_at),
                    s.client_id.as_deref().unwrap_or("-"),
                    state
                );
            }
            Ok(())
        }
        SessionsCommand::Revoke {
            identity,
            session,
            db,
        } => {
            let identity = Identity::parse(&identity)
                .map_err(|e| e.to_string())?
                .to_string();
            let store = open_store(&db).await?;
            let which = match &session {
                Some(id) => Revoke::One {
                    subject: &identity,
                    id,
                },
                None => Revoke::AllOf { subject: &identity },
            };
            let n = store
                .revoke_sessions(which, SystemClock.now())
                .await
                .map_err(|e| e.to_string())?;
            println!("revoked {n} session(s)");
            Ok(())
        }
    }
}
