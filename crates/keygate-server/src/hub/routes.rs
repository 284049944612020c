//! The Hub's HTTP and WebSocket surface. Handlers are a few lines: read the
//! request, call [`Hub`], turn the result into a response.

use std::sync::Arc;

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{ClientMeta, Hub, SignedChallenge, TokenOptions};
use crate::apikey::{HEADER_KEY, HEADER_MSG, HEADER_SIG};
use crate::challenge::Flow;
use crate::error::Error;
use crate::http::{bearer, error_response, header_str, json, json_body, reply};
use crate::signin::{self, LocalSignIn};
use crate::store::ApiKeyRecord;
use crate::time::format_rfc3339;

pub use keygate_proto::{ChallengeBody, RefreshRequest};

mod accounts;
pub use accounts::is_account_path;

#[derive(Debug, Deserialize)]
struct ChallengeRequest {
    pubkey: String,
    #[serde(default)]
    audience: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    pubkey: String,
    challenge: String,
    #[serde(deserialize_with = "crate::challenge::de_signature")]
    sig: String,
    #[serde(flatten)]
    options: TokenOptions,
}

/// `POST /v1/dev/token`: an identity and the options of a token request.
#[derive(Debug, Deserialize)]
struct DevTokenRequest {
    pubkey: String,
    #[serde(flatten)]
    options: TokenOptions,
}

#[derive(Debug, Default, Deserialize)]
struct LogoutRequest {
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IntrospectRequest {
    token: String,
}

#[derive(Debug, Deserialize)]
struct BrokerRequest {
    endpoint_id: String,
    role: String,
    #[serde(default)]
    ttl: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct ExchangeRequest {
    token_id: String,
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    #[serde(default)]
    since: i64,
}

fn with_hub(
    hub: Arc<Hub>,
) -> impl Filter<Extract = (Arc<Hub>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || hub.clone())
}

/// Authenticates the calling app from its API-key signature headers.
async fn app(hub: &Hub, headers: &HeaderMap) -> Result<ApiKeyRecord, Error> {
    hub.authenticate_app(
        header_str(headers, HEADER_KEY),
        header_str(headers, HEADER_MSG),
        header_str(headers, HEADER_SIG),
    )
    .await
}

/// User-agent and address of the request, recorded on sessions.
pub fn client_meta()
-> impl Filter<Extract = (ClientMeta,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned()
        .and(crate::listener::peer_ip())
        .map(|h: HeaderMap, ip: Option<std::net::IpAddr>| ClientMeta {
            user_agent: header_str(&h, "user-agent").map(str::to_owned),
            address: ip.map(|ip| ip.to_string()),
        })
}

/// Every Hub route, API-key endpoints and user endpoints.
pub fn routes(hub: Arc<Hub>) -> BoxedFilter<(Response,)> {
    api_routes(hub.clone()).or(user_routes(hub)).unify().boxed()
}

/// Endpoints for app backends (API-key authenticated) and the public JWKS.
pub fn api_routes(hub: Arc<Hub>) -> BoxedFilter<(Response,)> {
    let jwks = warp::path!(".well-known" / "jwks.json")
        .and(warp::get())
        .and(with_hub(hub.clone()))
        .map(|hub: Arc<Hub>| {
            let mut res = json(StatusCode::OK, &hub.jwks());
            res.headers_mut().insert(
                warp::http::header::CACHE_CONTROL,
                warp::http::HeaderValue::from_static("public, max-age=60"),
            );
            res
        });

    let challenge = warp::path!("v1" / "challenge")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(json_body::<ChallengeRequest>())
        .then(
            |hub: Arc<Hub>, headers: HeaderMap, body: Result<ChallengeRequest, Error>| async move {
                reply(
                    async {
                        let app = app(&hub, &headers).await?;
                        let body = body?;
                        let c = hub.challenge(
                            &app,
                            Flow::HubHttp,
                            &body.pubkey,
                            body.audience.as_deref(),
                        )?;
                        Ok(ChallengeBody {
                            challenge: c.text,
                            expires_at: format_rfc3339(c.expires_at),
                        })
                    }
                    .await,
                )
            },
        );

    let token = warp::path!("v1" / "token")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(json_body::<TokenRequest>())
        .then(
            |hub: Arc<Hub>, headers: HeaderMap, body: Result<TokenRequest, Error>| async move {
                reply(
                    async {
                        let app = app(&hub, &headers).await?;
                        let b = body?;
                        let signed = SignedChallenge {
                            pubkey: &b.pubkey,
                            challenge: &b.challenge,
                            sig: &b.sig,
                        };
                        hub.redeem(
                            &app,
                            Flow::HubHttp,
                            signed,
                            &b.options,
                            None,
                            ClientMeta::default(),
                        )
                        .await
                    }
                    .await,
                )
            },
        );

    let dev_token = warp::path!("v1" / "dev" / "token")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(client_meta())
        .and(json_body::<DevTokenRequest>())
        .then(
            |hub: Arc<Hub>,
             headers: HeaderMap,
             meta: ClientMeta,
             body: Result<DevTokenRequest, Error>| async move {
                reply(
                    async {
                        let app = app(&hub, &headers).await?;
                        let b = body?;
                        hub.dev_token(&app, &b.pubkey, &b.options, meta).await
                    }
                    .await,
                )
            },
        );

    let ws_token = warp::path!("v1" / "ws" / "token")
        .and(signin::ws())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(crate::listener::peer_ip())
        .then(
            |ws: signin::Upgrade,
             hub: Arc<Hub>,
             headers: HeaderMap,
             ip: Option<std::net::IpAddr>| async move {
                let admitted = async {
                    let app = app(&hub, &headers).await?;
                    let slot = hub.guard().handshake(ip)?;
                    Ok::<_, Error>((app, slot))
                };
                match admitted.await {
                    Ok((app, slot)) => {
                        let deadline = hub.guard().limits.handshake_timeout;
                        ws.max_message_size(signin::MAX_FRAME)
                            .max_frame_size(signin::MAX_FRAME)
                            .on_upgrade(move |socket| {
                                let backend = LocalSignIn::new(
                                    hub,
                                    app,
                                    Flow::HubWs,
                                    None,
                                    ClientMeta::default(),
                                );
                                signin::serve(socket, backend, deadline, slot)
                            })
                            .into_response()
                    }
                    Err(e) => error_response(&e),
                }
            },
        );

    let introspect = warp::path!("v1" / "introspect")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(crate::http::optional_body())
        .then(
            |hub: Arc<Hub>, headers: HeaderMap, body: warp::hyper::body::Bytes| async move {
                reply(
                    async {
                        let caller = app(&hub, &headers).await?;
                        let req: IntrospectRequest = if body.first() == Some(&b'{') {
                            serde_json::from_slice(&body)
                                .map_err(|_| Error::bad_request("malformed JSON body"))?
                        } else {
                            serde_urlencoded::from_bytes(&body)
                                .map_err(|_| Error::bad_request("malformed form body"))?
                        };
                        hub.introspect(&caller, &req.token).await
                    }
                    .await,
                )
            },
        );

    let revocations = warp::path!("v1" / "revocations")
        .and(warp::get())
        .and(with_hub(hub.clone()))
        .and(warp::query::<FeedQuery>())
        .then(
            |hub: Arc<Hub>, q: FeedQuery| async move { reply(hub.revocation_feed(q.since).await) },
        );

    let broker = warp::path!("v1" / "broker" / "tokens")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(json_body::<BrokerRequest>())
        .then(
            |hub: Arc<Hub>, headers: HeaderMap, body: Result<BrokerRequest, Error>| async move {
                reply(
                    async {
                        let app = app(&hub, &headers).await?;
                        let b = body?;
                        hub.create_broker_token(&app, &b.endpoint_id, &b.role, b.ttl)
                            .await
                    }
                    .await,
                )
            },
        );

    let feed_ws = warp::path!("v1" / "revocations" / "ws")
        .and(warp::ws())
        .and(with_hub(hub.clone()))
        .and(warp::query::<FeedQuery>())
        .map(|ws: warp::ws::Ws, hub: Arc<Hub>, q: FeedQuery| {
            ws.max_message_size(signin::MAX_FRAME)
                .on_upgrade(move |socket| push_revocations(socket, hub, q.since))
                .into_response()
        });

    jwks.map(crate::http::boxed)
        .or(broker)
        .unify()
        .or(feed_ws)
        .unify()
        .or(challenge)
        .unify()
        .or(token)
        .unify()
        .or(dev_token)
        .unify()
        .or(ws_token)
        .unify()
        .or(introspect)
        .unify()
        .or(revocations)
        .unify()
        .boxed()
}

/// Endpoints for users, authenticated by their access or refresh token. The
/// Provider answers these on its own origin too.
pub fn user_routes(hub: Arc<Hub>) -> BoxedFilter<(Response,)> {
    let whoami = warp::path!("v1" / "whoami")
        .and(warp::get())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .then(|hub: Arc<Hub>, h: HeaderMap| async move { reply(hub.whoami(bearer(&h)).await) });

    let refresh =
        warp::path!("v1" / "token" / "refresh")
            .and(warp::post())
            .and(with_hub(hub.clone()))
            .and(crate::listener::peer_ip())
            .and(json_body::<RefreshRequest>())
            .then(
                |hub: Arc<Hub>,
                 ip: Option<std::net::IpAddr>,
                 body: Result<RefreshRequest, Error>| async move {
                    reply(
                        async {
                            hub.guard().check_ip(ip)?;
                            let b = body?;
                            hub.refresh(&b.refresh_token, &b.client_id).await
                        }
                        .await,
                    )
                },
            );

    let list = warp::path!("v1" / "sessions")
        .and(warp::get())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .then(|hub: Arc<Hub>, h: HeaderMap| async move {
            reply(
                hub.sessions(bearer(&h))
                    .await
                    .map(|s| serde_json::json!({ "sessions": s })),
            )
        });

    let revoke = warp::path!("v1" / "sessions" / String)
        .and(warp::delete())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .then(|sid: String, hub: Arc<Hub>, h: HeaderMap| async move {
            match hub.revoke_session(bearer(&h), &sid).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => error_response(&e),
            }
        });

    let exchange = warp::path!("v1" / "session-tokens")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(client_meta())
        .and(crate::listener::peer_ip())
        .and(json_body::<ExchangeRequest>())
        .then(
            |hub: Arc<Hub>,
             meta: ClientMeta,
             ip: Option<std::net::IpAddr>,
             body: Result<ExchangeRequest, Error>| async move {
                reply(
                    async {
                        hub.guard().check_ip(ip)?;
                        hub.exchange_broker_token(&body?.token_id, meta).await
                    }
                    .await,
                )
            },
        );

    let logout = warp::path!("v1" / "logout")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(crate::http::optional_body())
        .then(
            |hub: Arc<Hub>, h: HeaderMap, body: warp::hyper::body::Bytes| async move {
                reply(
                    async {
                        let req: LogoutRequest = if body.is_empty() {
                            LogoutRequest::default()
                        } else {
                            serde_json::from_slice(&body)
                                .map_err(|_| Error::bad_request("malformed JSON body"))?
                        };
                        let n = hub
                            .logout(bearer(&h), req.scope.as_deref().unwrap_or("local"))
                            .await?;
                        Ok(serde_json::json!({ "revoked": n }))
                    }
                    .await,
                )
            },
        );

    whoami
        .or(accounts::routes(hub.clone()))
        .unify()
        .or(refresh)
        .unify()
        .or(exchange)
        .unify()
        .or(list)
        .unify()
        .or(revoke)
        .unify()
        .or(logout)
        .unify()
        .boxed()
}

/// The push side of the revocation feed: the backlog after `since`, then every new
/// revocation as the Hub learns of it, as `{"type":"revocation",…}` text frames.
async fn push_revocations(socket: warp::ws::WebSocket, hub: Arc<Hub>, since: i64) {
    use futures_util::{SinkExt, StreamExt};
    use tokio::sync::broadcast::error::RecvError;
    let (mut tx, mut rx) = socket.split();
    let mut live = hub.subscribe_revocations();
    let mut cursor = since.max(0);
    let frame = |e: &crate::store::RevocationEvent| {
        let mut v = serde_json::to_value(e).unwrap_or_default();
        v["type"] = "revocation".into();
        warp::ws::Message::text(v.to_string())
    };
    // Backlog (and catch-up after lagging), from the store.
    'outer: loop {
        loop {
            let Ok(batch) = hub.store().revocations_since(cursor, 1000).await else {
                break 'outer;
            };
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                cursor = e.seq;
                if tx.send(frame(e)).await.is_err() {
                    break 'outer;
                }
            }
        }
        loop {
            tokio::select! {
                event = live.recv() => match event {
                    Ok(e) if e.seq <= cursor => {}
                    Ok(e) => {
                        cursor = e.seq;
                        if tx.send(frame(&e)).await.is_err() {
                            break 'outer;
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue 'outer,
                    Err(RecvError::Closed) => break 'outer,
                },
                incoming = rx.next() => match incoming {
                    Some(Ok(m)) if !m.is_close() => {}
                    _ => break 'outer,
                },
            }
        }
    }
    let _ = tx.close().await;
}
