//! The OpenID Provider's HTTP surface (docs/oidc.md): discovery, the
//! authorization endpoint and its sign-in page, the token, userinfo,
//! revocation, introspection, logout and device endpoints.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{AuthorizeError, ClientCredentials, OAuthError};
use crate::error::Error;
use crate::http::{bearer, header_str, json, json_body, optional_body, reply};
use crate::hub::routes::client_meta;
use crate::hub::{ClientMeta, Hub, SignedChallenge};
use crate::listener::peer_ip;

const PAGE: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");
const DEVICE_PAGE: &str = include_str!("device.html");
const DEVICE_JS: &str = include_str!("device.js");
// The web demo's own modules: the same keystore (IndexedDB database `keygate`)
// and the same checks before signing.
const KEYSTORE_JS: &str = include_str!("../../../../../web-demo/keygate-keystore.js");
const IDENTITY_JS: &str = include_str!("../../../../../web-demo/keygate-identity.js");
const PROTOCOL_JS: &str = include_str!("../../../../../web-demo/keygate-protocol.js");
const ERRORS_JS: &str = include_str!("../../../../../web-demo/keygate-errors.js");
const DPOP_JS: &str = include_str!("../../../../../web-demo/keygate-dpop.js");

/// What the provider's pages may do: their own scripts and calls, nothing
/// framed (the consent button must not be clickjacked), no form posts.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
                   img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn with_hub(
    hub: &Arc<Hub>,
) -> impl Filter<Extract = (Arc<Hub>,), Error = std::convert::Infallible> + Clone + use<> {
    let hub = hub.clone();
    warp::any().map(move || hub.clone())
}

fn html(status: StatusCode, body: String) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut res = Response::new(body.into());
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page that explains an error and links nowhere (the redirect URI could not
/// be trusted, or there is none).
fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <link rel=\"stylesheet\" href=\"/oauth/assets/page.css\"></head><body><main>\
         <h1>{t}</h1><p id=\"error\">{x}</p></main></body></html>",
        t = escape(title),
        x = escape(text)
    );
    html(status, body)
}

fn redirect(to: &str) -> Response {
    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn params(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

fn is_form(h: &HeaderMap) -> bool {
    header_str(h, "content-type").is_some_and(|c| {
        c.split(';').next().is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// Client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: each half
/// form-urlencoded) and from the form.
fn credentials(h: &HeaderMap, form: &[(String, String)]) -> Result<ClientCredentials, OAuthError> {
    use base64::Engine;
    let get = |name| {
        super::single(form, name)
            .map(|v| v.map(str::to_owned))
            .map_err(|_| OAuthError::invalid_request("a parameter is repeated"))
    };
    let mut creds = ClientCredentials {
        basic: None,
        form_id: get("client_id")?,
        form_secret: get("client_secret")?,
        dpop: None,
        dpop_repeated: false,
    };
    if let Some(v) = header_str(h, "authorization")
        && let Some((scheme, value)) = v.split_once(' ')
        && scheme.eq_ignore_ascii_case("basic")
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| OAuthError::invalid_client())?;
        let text = String::from_utf8(raw).map_err(|_| OAuthError::invalid_client())?;
        let (id, secret) = text.split_once(':').ok_or(OAuthError::invalid_client())?;
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("v={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        creds.basic = Some((decode(id), decode(secret)));
    }
    Ok(creds)
}

fn oauth_reply<T: serde::Serialize>(r: Result<T, OAuthError>) -> Response {
    match r {
        Ok(body) => {
            let mut res = json(StatusCode::OK, &body);
            res.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => e.response(),
    }
}

/// What a client-authenticated form endpoint gets: the client's credentials and
/// the form, or the error for a body that is not one.
type FormParts = Result<(ClientCredentials, Vec<(String, String)>), OAuthError>;

/// A client-authenticated form endpoint: the headers and the form (or the
/// error for a body that is not one).
fn form_post(
    hub: &Arc<Hub>,
) -> impl Filter<Extract = (Arc<Hub>, FormParts), Error = Rejection> + Clone + use<> {
    warp::post()
        .and(with_hub(hub))
        .and(warp::header::headers_cloned())
        .and(optional_body())
        .map(|hub, h: HeaderMap, body: Bytes| {
            let parsed = if is_form(&h) {
                let form = params(&body);
                credentials(&h, &form).map(|mut c| {
                    let (proof, repeated) = crate::http::dpop_header(&h);
                    c.dpop = proof.map(str::to_owned);
                    c.dpop_repeated = repeated;
                    (c, form)
                })
            } else {
                Err(OAuthError::invalid_request(
                    "send the parameters as application/x-www-form-urlencoded",
                ))
            };
            (hub, parsed)
        })
        .untuple_one()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PageChallengeRequest)]
pub(crate) struct ChallengeRequest {
    request: String,
    pubkey: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PageSignInRequest)]
pub(crate) struct SignInRequest {
    request: String,
    pubkey: String,
    challenge: String,
    sig: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PageFinishRequest)]
pub(crate) struct FinishRequest {
    request: String,
    #[serde(default)]
    allow: Option<bool>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct DeviceChallengeRequest {
    user_code: String,
    pubkey: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct DeviceDecision {
    user_code: String,
    pubkey: String,
    challenge: String,
    sig: String,
    #[serde(default = "yes")]
    approve: bool,
}

fn yes() -> bool {
    true
}

async fn authorize_page(hub: Arc<Hub>, raw: Vec<(String, String)>) -> Response {
    match hub.authorize(&raw).await {
        Ok(r) => {
            let client = hub
                .live_client(&r.client_id)
                .await
                .ok()
                .flatten()
                .map(|c| c.name)
                .unwrap_or_default();
            match hub.seal_request(&r).await {
                Ok(sealed) => {
                    let prompt = if r.prompt_none { "none" } else { "" };
                    let body = PAGE
                        .replace("{{REQUEST}}", &escape(&sealed))
                        .replace("{{PROMPT}}", prompt)
                        .replace("{{CLIENT}}", &escape(&client))
                        .replace("{{HINT}}", &escape(r.login_hint.as_deref().unwrap_or("")));
                    html(StatusCode::OK, body)
                }
                Err(_) => message_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in unavailable",
                    "The service is unavailable; try again.",
                ),
            }
        }
        Err(AuthorizeError::Redirect(to)) => redirect(&to),
        Err(AuthorizeError::Page(why)) => message_page(
            StatusCode::BAD_REQUEST,
            "This sign-in request is invalid",
            why,
        ),
    }
}

async fn logout(hub: Arc<Hub>, raw: Vec<(String, String)>) -> Response {
    match hub.oidc_logout(&raw).await {
        Ok(Some(to)) => redirect(&to),
        Ok(None) => message_page(
            StatusCode::OK,
            "Signed out",
            "You are signed out of this app.",
        ),
        Err(AuthorizeError::Page(why)) => {
            message_page(StatusCode::BAD_REQUEST, "Sign-out refused", why)
        }
        Err(AuthorizeError::Redirect(_)) => message_page(
            StatusCode::BAD_REQUEST,
            "Sign-out refused",
            "invalid request",
        ),
    }
}

/// The query of a GET, or the form of a POST (OIDC Core §3.1.2.1 allows both).
fn query_or_form() -> impl Filter<Extract = (Vec<(String, String)>,), Error = Rejection> + Clone {
    let get = warp::get()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(|q: String| params(q.as_bytes()));
    let post = warp::post().and(optional_body()).map(|b: Bytes| params(&b));
    get.or(post).unify()
}

fn checked_ip(hub: &Hub, ip: Option<IpAddr>) -> Result<(), Error> {
    hub.guard().check_ip(ip)
}

/// `endpoint` open to scripts of any origin (CORS), for a browser client (a
/// public client's single-page app) that calls it itself: the token, userinfo and
/// revocation endpoints. No credentials are allowed: none of them reads a cookie,
/// each request brings its own code, token or client credentials, so another
/// origin's script can do nothing a server could not. Preflights may ask for the
/// headers these endpoints take; the answers expose the two a client must read.
/// The allowed origin is the request's own, so every answer says `Vary: Origin`.
fn browser_cors<F>(endpoint: F) -> BoxedFilter<(Response,)>
where
    F: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    let cors = warp::cors()
        .allow_any_origin()
        .allow_methods(["GET", "POST"])
        .allow_headers(["authorization", "content-type", "dpop"])
        .expose_headers(["dpop-nonce", "www-authenticate"])
        .max_age(600);
    endpoint
        .with(cors)
        .map(|reply| {
            let mut res = warp::Reply::into_response(reply);
            res.headers_mut()
                .append(header::VARY, HeaderValue::from_static("origin"));
            res
        })
        .boxed()
}

/// Every OpenID Provider route.
pub fn routes(hub: Arc<Hub>) -> BoxedFilter<(Response,)> {
    let discovery = warp::path!(".well-known" / "openid-configuration")
        .or(warp::path!(".well-known" / "oauth-authorization-server"))
        .unify()
        .and(warp::get())
        .and(with_hub(&hub))
        .map(|hub: Arc<Hub>| {
            let mut res = json(StatusCode::OK, &hub.oidc_metadata());
            res.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            res
        });
    let jwks = warp::path!("oauth" / "jwks")
        .and(warp::get())
        .and(with_hub(&hub))
        .then(|hub: Arc<Hub>| async move {
            let mut res = reply(hub.oidc_jwks().await);
            res.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            res
        });
    let authorize = warp::path!("oauth" / "authorize")
        .and(with_hub(&hub))
        .and(query_or_form())
        .then(authorize_page);
    let page_challenge = warp::path!("oauth" / "authorize" / "challenge")
        .and(warp::post())
        .and(with_hub(&hub))
        .and(peer_ip())
        .and(json_body::<ChallengeRequest>())
        .then(
            |hub: Arc<Hub>, ip, b: Result<ChallengeRequest, Error>| async move {
                let r = async {
                    checked_ip(&hub, ip)?;
                    let b = b?;
                    let challenge = hub.oidc_challenge(&b.request, &b.pubkey).await?;
                    Ok(serde_json::json!({ "challenge": challenge }))
                };
                reply(r.await)
            },
        );
    let page_sign_in = warp::path!("oauth" / "authorize" / "signin")
        .and(warp::post())
        .and(with_hub(&hub))
        .and(peer_ip())
        .and(json_body::<SignInRequest>())
        .and(client_meta())
        .then(
            |hub: Arc<Hub>, ip, b: Result<SignInRequest, Error>, meta: ClientMeta| async move {
                let r = async {
                    checked_ip(&hub, ip)?;
                    let b = b?;
                    let signed = SignedChallenge {
                        pubkey: &b.pubkey,
                        challenge: &b.challenge,
                        sig: &b.sig,
                    };
                    hub.oidc_page_sign_in(&b.request, signed, meta).await
                };
                reply(r.await)
            },
        );
    let page_finish = warp::path!("oauth" / "authorize" / "finish")
        .and(warp::post())
        .and(with_hub(&hub))
        .and(warp::header::headers_cloned())
        .and(json_body::<FinishRequest>())
        .then(
            |hub: Arc<Hub>, h: HeaderMap, b: Result<FinishRequest, Error>| async move {
                let r = async {
                    let b = b?;
                    hub.oidc_finish(&b.request, bearer(&h), b.allow, b.error.as_deref())
                        .await
                };
                reply(r.await)
            },
        );
    // The token, userinfo and revocation endpoints, then each under its path with
    // CORS (the path first, so that only these paths answer preflights).
    let token = form_post(&hub).then(|hub: Arc<Hub>, parsed: FormParts| async move {
        let r = async {
            let (creds, form) = parsed?;
            hub.oauth_token(&creds, &form).await
        };
        oauth_reply(r.await)
    });
    let userinfo = warp::get()
        .or(warp::post())
        .unify()
        .and(with_hub(&hub))
        .and(crate::http::request())
        .then(|hub: Arc<Hub>, h: crate::http::Request| async move {
            oauth_reply(hub.userinfo(h.credential()).await)
        });
    let revoke = form_post(&hub).then(|hub: Arc<Hub>, parsed: FormParts| async move {
        let r = async {
            let (creds, form) = parsed?;
            hub.oauth_revoke(&creds, &form).await
        };
        match r.await {
            Ok(()) => {
                let mut res = Response::new(Default::default());
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res
            }
            Err(e) => e.response(),
        }
    });
    let token = warp::path!("oauth" / "token").and(browser_cors(token));
    let userinfo = warp::path!("oauth" / "userinfo").and(browser_cors(userinfo));
    let revoke = warp::path!("oauth" / "revoke").and(browser_cors(revoke));
    let introspect = warp::path!("oauth" / "introspect")
        .and(form_post(&hub))
        .then(|hub: Arc<Hub>, parsed: FormParts| async move {
            let r = async {
                let (creds, form) = parsed?;
                hub.oauth_introspect(&creds, &form).await
            };
            oauth_reply(r.await)
        });
    let end_session = warp::path!("oauth" / "logout")
        .and(with_hub(&hub))
        .and(query_or_form())
        .then(logout);
    let device_authorization = warp::path!("oauth" / "device_authorization")
        .and(form_post(&hub))
        .then(|hub: Arc<Hub>, parsed: FormParts| async move {
            let r = async {
                let (creds, form) = parsed?;
                hub.device_authorization(&creds, &form).await
            };
            oauth_reply(r.await)
        });
    let device_page = warp::path!("oauth" / "device")
        .and(warp::get())
        .and(with_hub(&hub))
        .map(|hub: Arc<Hub>| {
            html(
                StatusCode::OK,
                DEVICE_PAGE.replace("{{ISSUER}}", &escape(hub.issuer())),
            )
        });
    let device_challenge = warp::path!("oauth" / "device" / "challenge")
        .and(warp::post())
        .and(with_hub(&hub))
        .and(peer_ip())
        .and(json_body::<DeviceChallengeRequest>())
        .then(
            |hub: Arc<Hub>, ip, b: Result<DeviceChallengeRequest, Error>| async move {
                let r = async {
                    checked_ip(&hub, ip)?;
                    let b = b?;
                    hub.device_challenge(&b.user_code, &b.pubkey).await
                };
                reply(r.await)
            },
        );
    let device_decide = warp::path!("oauth" / "device" / "approve")
        .and(warp::post())
        .and(with_hub(&hub))
        .and(peer_ip())
        .and(json_body::<DeviceDecision>())
        .and(client_meta())
        .then(
            |hub: Arc<Hub>, ip, b: Result<DeviceDecision, Error>, meta: ClientMeta| async move {
                let r = async {
                    checked_ip(&hub, ip)?;
                    let b = b?;
                    let signed = SignedChallenge {
                        pubkey: &b.pubkey,
                        challenge: &b.challenge,
                        sig: &b.sig,
                    };
                    hub.device_decide(&b.user_code, signed, b.approve, meta)
                        .await
                };
                reply(r.await)
            },
        );
    let assets = warp::path!("oauth" / "assets" / String)
        .and(warp::get())
        .map(|name: String| match name.as_str() {
            "page.js" => asset(PAGE_JS, "text/javascript"),
            "page.css" => asset(PAGE_CSS, "text/css"),
            "device.js" => asset(DEVICE_JS, "text/javascript"),
            "keygate-keystore.js" => asset(KEYSTORE_JS, "text/javascript"),
            "keygate-identity.js" => asset(IDENTITY_JS, "text/javascript"),
            "keygate-dpop.js" => asset(DPOP_JS, "text/javascript"),
            "keygate-protocol.js" => asset(PROTOCOL_JS, "text/javascript"),
            "keygate-errors.js" => asset(ERRORS_JS, "text/javascript"),
            _ => crate::http::error_response(&Error::NotFound),
        });

    discovery
        .or(jwks)
        .unify()
        .or(page_challenge)
        .unify()
        .or(page_sign_in)
        .unify()
        .or(page_finish)
        .unify()
        .or(authorize)
        .unify()
        .or(token)
        .unify()
        .or(userinfo)
        .unify()
        .or(revoke)
        .unify()
        .or(introspect)
        .unify()
        .or(end_session)
        .unify()
        .or(device_authorization)
        .unify()
        .or(device_challenge)
        .unify()
        .or(device_decide)
        .unify()
        .or(device_page)
        .unify()
        .or(assets)
        .unify()
        .boxed()
}
