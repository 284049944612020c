//! An app backend that brokers tokens for its users, with the private keys staying
//! on the users' devices: the counterpart of Textile's koa token server.
//!
//! The backend holds the app's user-group API key (`USER_API_KEY`,
//! `USER_API_SECRET`) and talks to the Hub with it. It serves the Provider routes
//! (`/ws/userauth`, `/api/token`, and `/v1/whoami`, `/v1/sessions`… forwarded to the
//! Hub), so a user signs the Hub's challenge locally and gets a token from the app's
//! own origin; and it has one route of its own, `GET /hello`, that shows how an app
//! uses the token: it asks the Hub who the caller is and greets them.
//!
//! Run it against `keygate serve`:
//!
//! ```text
//! cargo run -- keys create --name demo \
//!     --origin http://127.0.0.1:3000 --origin http://localhost:3000 >> .env   # USER_API_KEY=… (serve's database)
//! cargo run -- serve                             # the Hub, on 127.0.0.1:8080
//! cargo run --example app_backend                # this backend, on 127.0.0.1:3000
//! cargo run --example user_login -- --url ws://127.0.0.1:3000/ws/userauth
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/hello
//! ```
//!
//! Settings (from `.env`, then the environment): `HUB_URL` (default
//! `ws://127.0.0.1:8080`), `USER_API_KEY`, `USER_API_SECRET`, `LISTEN` (default
//! `127.0.0.1:3000`; port 0 picks a free one).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use keygate::Error;
use keygate::apikey::ApiSecret;
use keygate::client::HubClient;
use keygate::http::{error_response, json};
use keygate::hub::WhoAmI;
use keygate::provider::{HubLink, Provider};
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
    let hub_url = env_or("HUB_URL", "ws://127.0.0.1:8080");
    let key_id = std::env::var("USER_API_KEY")
        .map_err(|_| "set USER_API_KEY (create a key with `keygate keys create`)")?;
    let secret = std::env::var("USER_API_SECRET")
        .ok()
        .and_then(|s| ApiSecret::parse(s.trim()))
        .ok_or("set USER_API_SECRET to the secret `keygate keys create` printed")?;
    let listen: SocketAddr = env_or("LISTEN", "127.0.0.1:3000").parse()?;

    let hub = HubClient::new(&hub_url, key_id.trim(), secret)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // The origins a browser sees this backend at: challenges name one of them.
    let origins = vec![
        format!("http://127.0.0.1:{}", addr.port()),
        format!("http://localhost:{}", addr.port()),
    ];
    let provider = Arc::new(Provider::new(HubLink::Remote(hub.clone()), origins, None));

    let hello = warp::path!("hello")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .then(move |headers: HeaderMap| {
            let hub = hub.clone();
            async move { hello(&hub, &headers).await }
        });
    let routes = hello
        .or(keygate::provider::routes(provider))
        .unify()
        .recover(keygate::http::recover)
        .unify();

    println!("app backend listening on http://{addr}");
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

/// `GET /hello`: the app's own endpoint. The Hub says whose token this is (and
/// whether its session is still live); the app greets that identity.
async fn hello(hub: &HubClient, headers: &HeaderMap) -> Response {
    if keygate::http::bearer(headers).is_none() {
        return error_response(&Error::MissingToken);
    }
    let (status, body) = match hub
        .forward(reqwest::Method::GET, "/v1/whoami", headers, Vec::new())
        .await
    {
        Ok(answer) => answer,
        Err(e) => return error_response(&e.into()),
    };
    if status != 200 {
        // The Hub's refusal (expired, revoked…), passed on with its code.
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        return error_response(&Error::from_remote(
            status,
            v["error"].as_str().unwrap_or("unknown"),
            v["message"].as_str().unwrap_or(""),
        ));
    }
    match serde_json::from_slice::<WhoAmI>(&body) {
        Ok(me) => json(
            StatusCode::OK,
            &serde_json::json!({
                "message": format!("Hello, {}!", me.identity),
                "identity": me.identity,
                "session_id": me.session_id,
            }),
        ),
        Err(_) => error_response(&Error::Unavailable),
    }
}
