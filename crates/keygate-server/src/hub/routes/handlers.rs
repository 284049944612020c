//! The handlers behind the Hub's own routes (`routes/mod.rs` wires them): read
//! the request, call [`Hub`], turn the result into a response.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use warp::Reply;
use warp::http::{HeaderMap, StatusCode};
use warp::hyper::body::Bytes;
use warp::reply::Response;

use super::{ChallengeBody, ClientMeta, Hub, RefreshRequest, SignedChallenge, TokenOptions};
use crate::apikey::{HEADER_KEY, HEADER_MSG, HEADER_SIG};
use crate::challenge::Flow;
use crate::error::Error;
use crate::http::{Request, error_response, header_str, json};
use crate::hub::{BrokerToken, IssuedToken, RevocationFeed, WhoAmI};
use crate::signin::{self, LocalSignIn};
use crate::store::ApiKeyRecord;
use crate::time::format_rfc3339;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ChallengeRequest {
    /// The user's identity (docs/protocol.md).
    #[schema(example = "bbaareibfea5jj555eqknpoxuaf5fsquky2r2i5o36rhkbbsglwbzmof4ra")]
    pubkey: String,
    #[serde(default)]
    audience: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct TokenRequest {
    pubkey: String,
    challenge: String,
    #[serde(deserialize_with = "crate::challenge::de_signature")]
    #[schema(value_type = keygate_proto::sig::WireSignature)]
    sig: String,
    #[serde(flatten)]
    options: TokenOptions,
}

/// `POST /v1/dev/token`: an identity and the options of a token request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct DevTokenRequest {
    #[schema(example = "bbaareibfea5jj555eqknpoxuaf5fsquky2r2i5o36rhkbbsglwbzmof4ra")]
    pubkey: String,
    #[serde(flatten)]
    options: TokenOptions,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct LogoutRequest {
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct IntrospectRequest {
    token: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct BrokerRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[!-~]+$",
        example = "device-1"
    )]
    endpoint_id: String,
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_.-]+$",
        example = "reader"
    )]
    role: String,
    /// Seconds, 1 to 3600 (default 300).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    ttl: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ExchangeRequest {
    token_id: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FeedQuery {
    #[serde(default)]
    since: i64,
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

pub(super) fn jwks(hub: Arc<Hub>) -> Response {
    let mut res = json(StatusCode::OK, &hub.jwks());
    res.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("public, max-age=60"),
    );
    res
}

pub(super) async fn challenge(
    hub: Arc<Hub>,
    headers: Request,
    body: Result<ChallengeRequest, Error>,
) -> Result<ChallengeBody, Error> {
    let app = app(&hub, &headers).await?;
    let body = body?;
    let c = hub.challenge(&app, Flow::HubHttp, &body.pubkey, body.audience.as_deref())?;
    Ok(ChallengeBody {
        challenge: c.text,
        expires_at: format_rfc3339(c.expires_at),
    })
}

pub(super) async fn token(
    hub: Arc<Hub>,
    headers: Request,
    body: Result<TokenRequest, Error>,
) -> Result<IssuedToken, Error> {
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

pub(super) async fn dev_token(
    hub: Arc<Hub>,
    headers: Request,
    body: Result<DevTokenRequest, Error>,
    meta: ClientMeta,
) -> Result<IssuedToken, Error> {
    let app = app(&hub, &headers).await?;
    let b = body?;
    hub.dev_token(&app, &b.pubkey, &b.options, meta).await
}

pub(super) async fn ws_token(
    ws: signin::Upgrade,
    hub: Arc<Hub>,
    headers: HeaderMap,
    ip: Option<IpAddr>,
) -> Response {
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
                    let backend =
                        LocalSignIn::new(hub, app, Flow::HubWs, None, ClientMeta::default());
                    signin::serve(socket, backend, deadline, slot, None)
                })
                .into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// `GET /v1/ws/mux`: the admission of `/v1/ws/token` (API-key signature), then
/// a long-lived link carrying many sign-ins (see [`crate::hub::mux`]). It holds no
/// handshake slot: it is authenticated and meant to stay open.
pub(super) async fn ws_mux(ws: signin::Upgrade, hub: Arc<Hub>, headers: HeaderMap) -> Response {
    match app(&hub, &headers).await {
        Ok(app) => ws
            .max_message_size(signin::MAX_FRAME)
            .max_frame_size(signin::MAX_FRAME)
            .on_upgrade(move |socket| crate::hub::mux::serve(socket, hub, app))
            .into_response(),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn introspect(
    hub: Arc<Hub>,
    headers: Request,
    body: Bytes,
) -> Result<serde_json::Value, Error> {
    let caller = app(&hub, &headers).await?;
    let req: IntrospectRequest = if body.first() == Some(&b'{') {
        serde_json::from_slice(&body).map_err(|_| Error::bad_request("malformed JSON body"))?
    } else {
        serde_urlencoded::from_bytes(&body)
            .map_err(|_| Error::bad_request("malformed form body"))?
    };
    hub.introspect(&caller, &req.token).await
}

pub(super) async fn revocations(hub: Arc<Hub>, q: FeedQuery) -> Result<RevocationFeed, Error> {
    hub.revocation_feed(q.since).await
}

pub(super) async fn broker(
    hub: Arc<Hub>,
    headers: Request,
    body: Result<BrokerRequest, Error>,
) -> Result<BrokerToken, Error> {
    let app = app(&hub, &headers).await?;
    let b = body?;
    hub.create_broker_token(&app, &b.endpoint_id, &b.role, b.ttl)
        .await
}

pub(super) fn feed_ws(ws: warp::ws::Ws, hub: Arc<Hub>, q: FeedQuery) -> Response {
    ws.max_message_size(signin::MAX_FRAME)
        .on_upgrade(move |socket| push_revocations(socket, hub, q.since))
        .into_response()
}

pub(super) async fn whoami(hub: Arc<Hub>, h: Request) -> Result<WhoAmI, Error> {
    hub.whoami(h.credential()).await
}

pub(super) async fn refresh(
    hub: Arc<Hub>,
    ip: Option<IpAddr>,
    body: Result<RefreshRequest, Error>,
    h: Request,
) -> Result<IssuedToken, Error> {
    hub.guard().check_ip(ip)?;
    let b = body?;
    hub.refresh(&b.refresh_token, &b.client_id, h.credential(), false, None)
        .await
}

pub(super) async fn sessions(hub: Arc<Hub>, h: Request) -> Result<serde_json::Value, Error> {
    hub.sessions(h.credential())
        .await
        .map(|s| serde_json::json!({ "sessions": s }))
}

pub(super) async fn revoke_session(sid: String, hub: Arc<Hub>, h: Request) -> Response {
    match hub.revoke_session(h.credential(), &sid).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn exchange(
    hub: Arc<Hub>,
    ip: Option<IpAddr>,
    body: Result<ExchangeRequest, Error>,
    meta: ClientMeta,
) -> Result<IssuedToken, Error> {
    hub.guard().check_ip(ip)?;
    hub.exchange_broker_token(&body?.token_id, meta).await
}

pub(super) async fn logout(
    hub: Arc<Hub>,
    h: Request,
    body: Bytes,
) -> Result<serde_json::Value, Error> {
    let req: LogoutRequest = if body.is_empty() {
        LogoutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|_| Error::bad_request("malformed JSON body"))?
    };
    let n = hub
        .logout(h.credential(), req.scope.as_deref().unwrap_or("local"))
        .await?;
    Ok(serde_json::json!({ "revoked": n }))
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
