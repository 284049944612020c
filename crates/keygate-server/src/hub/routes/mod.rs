//! The Hub's HTTP and WebSocket surface: which path and method reach which
//! handler. The handlers are in `handlers` (token authority, sessions, feed) and
//! `accounts` (accounts and second factors): most read the request, call [`Hub`]
//! and return its result, which [`reply`] turns into a response. Every route is
//! built here from the same few filters.

use std::net::IpAddr;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{ClientMeta, Hub, SignedChallenge, TokenOptions};
use crate::error::Error;
use crate::http::{Request, header_str, json_body, optional_body, reply, request};
use crate::listener::peer_ip;
use crate::signin;

pub use keygate_proto::{ChallengeBody, RefreshRequest};

pub(crate) mod accounts;
pub(crate) mod handlers;
pub use accounts::is_account_path;

use handlers::{BrokerRequest, ChallengeRequest, DevTokenRequest, ExchangeRequest, FeedQuery};

fn with_hub(
    hub: &Arc<Hub>,
) -> impl Filter<Extract = (Arc<Hub>,), Error = std::convert::Infallible> + Clone + use<> {
    let hub = hub.clone();
    warp::any().map(move || hub.clone())
}

/// What most routes take after their path: the method, then the Hub and the
/// request headers (where the API-key signature or the bearer token is).
fn on<M: Filter<Extract = (), Error = Rejection> + Clone>(
    method: M,
    hub: &Arc<Hub>,
) -> impl Filter<Extract = (Arc<Hub>, Request), Error = Rejection> + Clone + use<M> {
    method.and(with_hub(hub)).and(request())
}

/// A `POST` with a JSON body: the Hub, the headers and the body (parsed, or the
/// error the handler answers once it has checked the caller).
fn post_json<T: DeserializeOwned + Send>(
    hub: &Arc<Hub>,
) -> impl Filter<Extract = (Arc<Hub>, Request, Result<T, Error>), Error = Rejection> + Clone + use<T>
{
    on(warp::post(), hub).and(json_body::<T>())
}

/// A `POST` with a JSON body from a caller not yet authenticated, whose
/// address the handler checks against the abuse limits first.
fn post_from_ip<T: DeserializeOwned + Send>(
    hub: &Arc<Hub>,
) -> impl Filter<Extract = (Arc<Hub>, Option<IpAddr>, Result<T, Error>), Error = Rejection>
+ Clone
+ use<T> {
    warp::post()
        .and(with_hub(hub))
        .and(peer_ip())
        .and(json_body::<T>())
}

/// User-agent and address of the request, recorded on sessions.
pub fn client_meta()
-> impl Filter<Extract = (ClientMeta,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned()
        .and(peer_ip())
        .map(|h: HeaderMap, ip: Option<IpAddr>| ClientMeta {
            user_agent: header_str(&h, "user-agent").map(str::to_owned),
            address: ip.map(|ip| ip.to_string()),
        })
}

/// Every Hub route, API-key endpoints and user endpoints.
pub fn routes(hub: Arc<Hub>) -> BoxedFilter<(Response,)> {
    api_routes(hub.clone())
        .or(super::oidc::routes::routes(hub.clone()))
        .unify()
        .or(user_routes(hub))
        .unify()
        .or(crate::openapi::route())
        .unify()
        .boxed()
}

/// Endpoints for app backends (API-key authenticated) and the public JWKS.
pub fn api_routes(hub: Arc<Hub>) -> BoxedFilter<(Response,)> {
    use handlers as h;
    let jwks = warp::path!(".well-known" / "jwks.json")
        .and(warp::get())
        .and(with_hub(&hub))
        .map(h::jwks);
    let challenge = warp::path!("v1" / "challenge")
        .and(post_json::<ChallengeRequest>(&hub))
        .then(h::challenge)
        .map(reply);
    let token = warp::path!("v1" / "token")
        .and(post_json::<handlers::TokenRequest>(&hub))
        .then(h::token)
        .map(reply);
    let dev_token = warp::path!("v1" / "dev" / "token")
        .and(post_json::<DevTokenRequest>(&hub))
        .and(client_meta())
        .then(h::dev_token)
        .map(reply);
    let ws_token = warp::path!("v1" / "ws" / "token")
        .and(signin::ws())
        .and(with_hub(&hub))
        .and(warp::header::headers_cloned())
        .and(peer_ip())
        .then(h::ws_token);
    let ws_mux = warp::path!("v1" / "ws" / "mux")
        .and(signin::ws())
        .and(with_hub(&hub))
        .and(warp::header::headers_cloned())
        .then(h::ws_mux);
    let introspect = warp::path!("v1" / "introspect")
        .and(on(warp::post(), &hub))
        .and(optional_body())
        .then(h::introspect)
        .map(reply);
    let revocations = warp::path!("v1" / "revocations")
        .and(warp::get())
        .and(with_hub(&hub))
        .and(warp::query::<FeedQuery>())
        .then(h::revocations)
        .map(reply);
    let broker = warp::path!("v1" / "broker" / "tokens")
        .and(post_json::<BrokerRequest>(&hub))
        .then(h::broker)
        .map(reply);
    let feed_ws = warp::path!("v1" / "revocations" / "ws")
        .and(warp::ws())
        .and(with_hub(&hub))
        .and(warp::query::<FeedQuery>())
        .map(h::feed_ws);

    jwks.or(broker)
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
        .or(ws_mux)
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
    use handlers as h;
    let whoami = warp::path!("v1" / "whoami")
        .and(on(warp::get(), &hub))
        .then(h::whoami)
        .map(reply);
    let refresh = warp::path!("v1" / "token" / "refresh")
        .and(post_from_ip::<RefreshRequest>(&hub))
        .and(request())
        .then(h::refresh)
        .map(reply);
    let list = warp::path!("v1" / "sessions")
        .and(on(warp::get(), &hub))
        .then(h::sessions)
        .map(reply);
    let revoke = warp::path!("v1" / "sessions" / String)
        .and(on(warp::delete(), &hub))
        .then(h::revoke_session);
    let exchange = warp::path!("v1" / "session-tokens")
        .and(post_from_ip::<ExchangeRequest>(&hub))
        .and(client_meta())
        .then(h::exchange)
        .map(reply);
    let logout = warp::path!("v1" / "logout")
        .and(on(warp::post(), &hub))
        .and(optional_body())
        .then(h::logout)
        .map(reply);

    whoami
        .or(account_routes(&hub))
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

/// `/v1/account/*` and `/v1/mfa/*` (docs/accounts.md); answered on the
/// Provider's origin too.
fn account_routes(hub: &Arc<Hub>) -> BoxedFilter<(Response,)> {
    use accounts as a;
    let keys = warp::path!("v1" / "account" / "keys")
        .and(on(warp::get(), hub))
        .then(a::keys)
        .map(reply);
    let events = warp::path!("v1" / "account" / "events")
        .and(on(warp::get(), hub))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .then(a::events)
        .map(reply);
    let remove = warp::path!("v1" / "account" / "keys" / String)
        .and(on(warp::delete(), hub))
        .then(a::remove)
        .map(reply);
    let link_challenge = warp::path!("v1" / "account" / "link" / "challenge")
        .and(post_json::<a::KeyRequest>(hub))
        .then(a::link_challenge)
        .map(reply);
    let link = warp::path!("v1" / "account" / "link")
        .and(post_from_ip::<a::LinkRequest>(hub))
        .then(a::link)
        .map(reply);
    let recover_challenge = warp::path!("v1" / "account" / "recover" / "challenge")
        .and(post_json::<a::KeyRequest>(hub))
        .then(a::recover_challenge)
        .map(reply);
    let recover = warp::path!("v1" / "account" / "recover")
        .and(post_json::<a::RecoverRequest>(hub))
        .then(a::recover)
        .map(reply);
    let mfa_challenge = warp::path!("v1" / "mfa" / "challenge")
        .and(post_json::<a::KeyRequest>(hub))
        .then(a::mfa_challenge)
        .map(reply);
    let mfa_key = warp::path!("v1" / "mfa" / "key")
        .and(post_json::<a::SignedRequest>(hub))
        .then(a::mfa_key)
        .map(reply);
    let totp_enrol = warp::path!("v1" / "mfa" / "totp")
        .and(on(warp::post(), hub))
        .then(a::totp_enrol)
        .map(reply);
    let totp_verify = warp::path!("v1" / "mfa" / "totp" / "verify")
        .and(post_json::<a::CodeRequest>(hub))
        .then(a::totp_verify)
        .map(reply);
    let qr = warp::path!("v1" / "qr")
        .and(post_json::<a::QrRequest>(hub))
        .then(a::qr);

    keys.or(qr)
        .unify()
        .or(events)
        .unify()
        .or(remove)
        .unify()
        .or(link_challenge)
        .unify()
        .or(link)
        .unify()
        .or(recover_challenge)
        .unify()
        .or(recover)
        .unify()
        .or(mfa_challenge)
        .unify()
        .or(mfa_key)
        .unify()
        .or(totp_enrol)
        .unify()
        .or(totp_verify)
        .unify()
        .boxed()
}
