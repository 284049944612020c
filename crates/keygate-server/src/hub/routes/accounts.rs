//! The handlers of `/v1/account/*` and `/v1/mfa/*`: accounts of several keys and
//! second factors (docs/accounts.md). Answered on the Provider's origin too.

use std::sync::Arc;

use std::net::IpAddr;

use serde::Deserialize;

use warp::reply::Response;

use super::ChallengeBody;
use crate::error::Error;
use crate::http::Request;
use crate::hub::{AccountEvents, AccountView, Hub, IssuedToken, Linked, TotpEnrolment};
use crate::time::format_rfc3339;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct KeyRequest {
    identity: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct LinkRequest {
    challenge: String,
    /// The signed-in key's signature.
    sig: String,
    /// The new key's signature.
    new_sig: String,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct RecoverRequest {
    challenge: String,
    /// The recovery key's signature.
    sig: String,
    /// The signed-in (new) key's signature.
    new_sig: String,
    /// A name for the new key in the key list (not `recovery`).
    #[serde(default)]
    label: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct SignedRequest {
    challenge: String,
    sig: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct QrRequest {
    #[schema(min_length = 1, max_length = 1024, example = "otpauth://totp/keygate")]
    text: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct CodeRequest {
    code: String,
}

fn challenge_body(c: crate::challenge::IssuedChallenge) -> ChallengeBody {
    ChallengeBody {
        challenge: c.text,
        expires_at: format_rfc3339(c.expires_at),
    }
}

/// The paths of these routes, for the split-mode Provider's forwarding.
pub fn is_account_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/account/keys"
            | "/v1/account/events"
            | "/v1/account/link/challenge"
            | "/v1/account/link"
            | "/v1/account/recover/challenge"
            | "/v1/account/recover"
            | "/v1/mfa/challenge"
            | "/v1/mfa/key"
            | "/v1/mfa/totp"
            | "/v1/mfa/totp/verify"
            | "/v1/qr"
    ) || path
        .strip_prefix("/v1/account/keys/")
        .is_some_and(|id| !id.is_empty() && id.len() <= 128 && !id.contains('/'))
}

pub(super) async fn keys(hub: Arc<Hub>, h: Request) -> Result<AccountView, Error> {
    hub.account_keys(h.credential()).await
}

/// `GET /v1/account/events?before=<id>&limit=<n>`: the caller is checked first,
/// then the query (a bad value is a 400 naming the parameter, never echoing it).
pub(super) async fn events(
    hub: Arc<Hub>,
    h: Request,
    query: String,
) -> Result<AccountEvents, Error> {
    let token = h.credential();
    let (before, limit) = match events_query(&query) {
        Ok(q) => q,
        Err(e) => {
            hub.authenticate_user(token).await?;
            return Err(e);
        }
    };
    hub.account_events(token, before, limit).await
}

/// `before` (a positive event id) and `limit` (1 to 200, default 50) of a query
/// string; other parameters are ignored.
fn events_query(query: &str) -> Result<(Option<i64>, u32), Error> {
    let mut before = None;
    let mut limit = crate::hub::DEFAULT_EVENTS_PAGE;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "before" => {
                before = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|b| *b > 0)
                        .ok_or_else(|| Error::bad_request("before must be a positive event id"))?,
                )
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=crate::hub::MAX_EVENTS_PAGE).contains(l))
                    .ok_or_else(|| Error::bad_request("limit must be between 1 and 200"))?
            }
            _ => {}
        }
    }
    Ok((before, limit))
}

pub(super) async fn remove(
    identity: String,
    hub: Arc<Hub>,
    h: Request,
) -> Result<serde_json::Value, Error> {
    hub.remove_account_key(h.credential(), &identity)
        .await
        .map(|n| serde_json::json!({ "removed": identity, "revoked": n }))
}

pub(super) async fn link_challenge(
    hub: Arc<Hub>,
    h: Request,
    body: Result<KeyRequest, Error>,
) -> Result<ChallengeBody, Error> {
    let b = body?;
    let c = hub.link_challenge(h.credential(), &b.identity).await?;
    Ok(challenge_body(c))
}

pub(super) async fn link(
    hub: Arc<Hub>,
    ip: Option<IpAddr>,
    body: Result<LinkRequest, Error>,
) -> Result<Linked, Error> {
    hub.guard().check_ip(ip)?;
    let b = body?;
    hub.link_key(&b.challenge, &b.sig, &b.new_sig, b.label.as_deref(), ip)
        .await
}

pub(super) async fn recover_challenge(
    hub: Arc<Hub>,
    h: Request,
    body: Result<KeyRequest, Error>,
) -> Result<ChallengeBody, Error> {
    let b = body?;
    let c = hub.recovery_challenge(h.credential(), &b.identity).await?;
    Ok(challenge_body(c))
}

pub(super) async fn recover(
    hub: Arc<Hub>,
    h: Request,
    body: Result<RecoverRequest, Error>,
) -> Result<IssuedToken, Error> {
    let b = body?;
    let label = b.label.as_deref();
    hub.recover_with_key(h.credential(), &b.challenge, &b.sig, &b.new_sig, label)
        .await
}

pub(super) async fn mfa_challenge(
    hub: Arc<Hub>,
    h: Request,
    body: Result<KeyRequest, Error>,
) -> Result<ChallengeBody, Error> {
    let b = body?;
    let c = hub.mfa_challenge(h.credential(), &b.identity).await?;
    Ok(challenge_body(c))
}

pub(super) async fn mfa_key(
    hub: Arc<Hub>,
    h: Request,
    body: Result<SignedRequest, Error>,
) -> Result<IssuedToken, Error> {
    let b = body?;
    hub.mfa_by_key(h.credential(), &b.challenge, &b.sig).await
}

pub(super) async fn totp_enrol(hub: Arc<Hub>, h: Request) -> Result<TotpEnrolment, Error> {
    hub.totp_enrol(h.credential()).await
}

pub(super) async fn totp_verify(
    hub: Arc<Hub>,
    h: Request,
    body: Result<CodeRequest, Error>,
) -> Result<IssuedToken, Error> {
    let b = body?;
    hub.totp_verify(h.credential(), &b.code).await
}

pub(super) async fn qr(hub: Arc<Hub>, h: Request, body: Result<QrRequest, Error>) -> Response {
    match async { hub.qr_svg(h.credential(), &body?.text).await }.await {
        Ok(svg) => {
            let mut res = Response::new(svg.into());
            let headers = res.headers_mut();
            headers.insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("image/svg+xml"),
            );
            headers.insert(
                warp::http::header::CACHE_CONTROL,
                warp::http::HeaderValue::from_static("no-store"),
            );
            res
        }
        Err(e) => crate::http::error_response(&e),
    }
}
