//! A user signing in with a key that never leaves this process.
//!
//! The client asks the Provider for a challenge, checks that it names the
//! Provider's own origin and our identity (so a phishing site cannot relay another
//! site's challenge to us), signs it locally, and gets an access token. It then
//! calls `/v1/whoami` on the same origin with the token.
//!
//! Run it against `keygate serve` (or the `app_backend` example):
//!
//! ```text
//! cargo run -- serve
//! cargo run --example user_login -- --url ws://127.0.0.1:8080/ws/userauth
//! cargo run --example user_login -- --key ~/.config/keygate/id_ed25519.pem   # a key from `keygate id new`
//! ```
//!
//! Without `--key`, a fresh key is generated for this run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use keygate::Identity;
use keygate::client::{login_ws, origin_of};
use keygate::time::{Clock, SystemClock};

#[derive(Parser)]
#[command(about = "Sign in to a keygate Provider with a local Ed25519 key")]
struct Args {
    /// The Provider's sign-in socket.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/userauth")]
    url: String,
    /// Key file (PKCS#8 PEM, as `keygate id new` writes); a fresh key if omitted.
    #[arg(long)]
    key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let key = match &args.key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            SigningKey::from_pkcs8_pem(&pem)
                .map_err(|e| format!("{} is not a PKCS#8 Ed25519 key: {e}", path.display()))?
        }
        None => SigningKey::generate(&mut keygate::entropy::os_rng()),
    };
    println!("identity: {}", Identity::from(&key));

    let token = login_ws(&args.url, &key, None, Default::default(), SystemClock.now()).await?;
    println!("session: {}", token.session_id);
    println!("expires at: {}", token.expires_at);
    println!("token: {}", token.token);

    // The token at work: the same origin answers who we are.
    let whoami = format!("{}/v1/whoami", origin_of(&args.url)?);
    let res = reqwest::Client::new()
        .get(&whoami)
        .bearer_auth(&token.token)
        .send()
        .await?;
    let status = res.status();
    let body = res.text().await?;
    println!("whoami: {body}");
    if !status.is_success() {
        return Err(format!("{whoami} answered {status}").into());
    }
    Ok(())
}
