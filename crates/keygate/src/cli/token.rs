//! `token verify`: a token checked offline against a JWKS.

use clap::Subcommand;

use keygate::time::{Clock, SystemClock};

use super::CliResult;

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
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

pub(crate) async fn token(t: TokenCommand) -> CliResult {
    match t {
        TokenCommand::Verify {
            token,
            jwks,
            issuer,
            audience,
        } => token_verify(&token, &jwks, issuer, audience).await,
    }
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
