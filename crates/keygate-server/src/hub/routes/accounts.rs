//! `/v1/account/*` and `/v1/mfa/*`: accounts of several keys and second factors
//! (docs/accounts.md). Answered on the Provider's origin too.

use std::sync::Arc;

use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;

use super::{ChallengeBody, with_hub};
use crate::error::Error;
use crate::http::{bearer, json_body, reply};
use crate::hub::Hub;
use crate::time::format_rfc3339;

#[derive(Debug, Deserialize)]
struct KeyRequest {
    identity: String,
}

#[derive(Debug, Deserialize)]
struct LinkRequest {
    challenge: String,
    /// The signed-in key's signature.
    sig: String,
    /// The new key's signature.
    new_sig: String,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SignedRequest {
    challenge: String,
    sig: String,
}

#[derive(Debug, Deserialize)]
struct QrRequest {
    text: String,
}

#[derive(Debug, Deserialize)]
struct CodeRequest {
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
            | "/v1/account/link/challenge"
            | "/v1/account/link"
            | "/v1/mfa/challenge"
            | "/v1/mfa/key"
            | "/v1/mfa/totp"
            | "/v1/mfa/totp/verify"
            | "/v1/qr"
    ) || path
        .strip_prefix("/v1/account/keys/")
        .is_some_and(|id| !id.is_empty() && id.len() <= 128 && !id.contains('/'))
}

pub fn routes(hub: Arc<Hub>) -> BoxedFilter<(Response,)> {
    let keys = warp::path!("v1" / "account" / "keys")
        .and(warp::get())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .then(
            |hub: Arc<Hub>, h: HeaderMap| async move { reply(hub.account_keys(bearer(&h)).await) },
        );

    let remove = warp::path!("v1" / "account" / "keys" / String)
        .and(warp::delete())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .then(|identity: String, hub: Arc<Hub>, h: HeaderMap| async move {
            reply(
                hub.remove_account_key(bearer(&h), &identity)
                    .await
                    .map(|n| serde_json::json!({ "removed": identity, "revoked": n })),
            )
        });

    let link_challenge = warp::path!("v1" / "account" / "link" / "challenge")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(json_body::<KeyRequest>())
        .then(
            |hub: Arc<Hub>, h: HeaderMap, body: Result<KeyRequest, Error>| async move {
                reply(
                    async {
                        let b = body?;
                        let c = hub.link_challenge(bearer(&h), &b.identity).await?;
                        Ok(challenge_body(c))
                    }
                    .await,
                )
            },
        );

    let link = warp::path!("v1" / "account" / "link")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(crate::listener::peer_ip())
        .and(json_body::<LinkRequest>())
        .then(
            |hub: Arc<Hub>, ip: Option<std::net::IpAddr>, body: Result<LinkRequest, Error>| async move {
                reply(
                    async {
                        hub.guard().check_ip(ip)?;
                        let b = body?;
                        hub.link_key(&b.challenge, &b.sig, &b.new_sig, b.label.as_deref())
                            .await
                    }
                    .await,
                )
            },
        );

    let mfa_challenge = warp::path!("v1" / "mfa" / "challenge")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(json_body::<KeyRequest>())
        .then(
            |hub: Arc<Hub>, h: HeaderMap, body: Result<KeyRequest, Error>| async move {
                reply(
                    async {
                        let b = body?;
                        let c = hub.mfa_challenge(bearer(&h), &b.identity).await?;
                        Ok(challenge_body(c))
                    }
                    .await,
                )
            },
        );

    let mfa_key = warp::path!("v1" / "mfa" / "key")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(json_body::<SignedRequest>())
        .then(
            |hub: Arc<Hub>, h: HeaderMap, body: Result<SignedRequest, Error>| async move {
                reply(
                    async {
                        let b = body?;
                        hub.mfa_by_key(bearer(&h), &b.challenge, &b.sig).await
                    }
                    .await,
                )
            },
        );

    let totp_enrol = warp::path!("v1" / "mfa" / "totp")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .then(|hub: Arc<Hub>, h: HeaderMap| async move { reply(hub.totp_enrol(bearer(&h)).await) });

    let totp_verify = warp::path!("v1" / "mfa" / "totp" / "verify")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(warp::header::headers_cloned())
        .and(json_body::<CodeRequest>())
        .then(
            |hub: Arc<Hub>, h: HeaderMap, body: Result<CodeRequest, Error>| async move {
                reply(
                    async {
                        let b = body?;
                        hub.totp_verify(bearer(&h), &b.code).await
                    }
                    .await,
                )
            },
        );

    let qr = warp::path!("v1" / "qr")
        .and(warp::post())
        .and(with_hub(hub))
        .and(warp::header::headers_cloned())
        .and(json_body::<QrRequest>())
        .then(
            |hub: Arc<Hub>, h: HeaderMap, body: Result<QrRequest, Error>| async move {
                match async { hub.qr_svg(bearer(&h), &body?.text).await }.await {
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
            },
        );

    keys.or(qr)
        .unify()
        .or(remove)
        .unify()
        .or(link_challenge)
        .unify()
        .or(link)
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
