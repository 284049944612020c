//! A service that checks tokens on its own: signatures against the Hub's JWKS,
//! claims locally, and revocations from the Hub's feed, so it never asks the Hub
//! per request and still refuses a revoked session within about a second.
//!
//! Run it against `keygate serve`:
//!
//! ```text
//! cargo run -- serve
//! cargo run --example protected_service
//! cargo run -- id new                     # once: your key, in ~/.config/keygate/
//! TOKEN=$(cargo run -q -- login)
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3001/data
//! ```
//!
//! Settings (from `.env`, then the environment): `HUB` (default
//! `http://127.0.0.1:8080`), `ISSUER` (the tokens' `iss`, default
//! `http://localhost:8080`), `AUDIENCE` (an API key id; if set, only tokens for
//! that app are accepted), `LISTEN` (default `127.0.0.1:3001`).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use keygate::Error;
use keygate::client::OfflineVerifier;
use keygate::http::{bearer, error_response, json};
use keygate::time::{Clock, SystemClock};
use keygate::token::TokenError;
use warp::Filter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

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
    let _ = dotenvy::dotenv();
    let hub = env_or("HUB", "http://127.0.0.1:8080");
    let issuer = env_or("ISSUER", "http://localhost:8080");
    let audience = std::env::var("AUDIENCE").ok().filter(|a| !a.is_empty());
    let listen: SocketAddr = env_or("LISTEN", "127.0.0.1:3001").parse()?;

    let verifier = OfflineVerifier::start(&hub, &issuer).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;

    let data = warp::path!("data")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .map(move |headers: HeaderMap| data(&verifier, audience.as_deref(), &headers));
    let routes = data.recover(keygate::http::recover).unify();

    println!("protected service listening on http://{addr}");
    std::io::stdout().flush()?;
    warp::serve(routes)
        .incoming(listener)
        .graceful(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .run()
        .await;
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// `GET /data`: answered only for a valid, unrevoked token (for `audience`, if set).
fn data(verifier: &Arc<OfflineVerifier>, audience: Option<&str>, headers: &HeaderMap) -> Response {
    let checked = bearer(headers)
        .ok_or(Error::MissingToken)
        .and_then(|token| verifier.verify(token, SystemClock.now()))
        .and_then(|claims| match audience {
            Some(a) if claims.aud != a => Err(Error::Token(TokenError::WrongAudience)),
            _ => Ok(claims),
        });
    match checked {
        Ok(claims) => json(
            StatusCode::OK,
            &serde_json::json!({
                "identity": claims.sub,
                "session_id": claims.sid,
                "data": format!("something only {} may read", claims.sub),
            }),
        ),
        Err(e) => error_response(&e),
    }
}
