//! The Provider: an app's backend that brokers tokens for its users. It holds the
//! app's user-group API key, relays the Hub's challenge to the user and the user's
//! signature back, and never sees a private key.
//!
//! The Hub is either in this process (`keygate serve`) or remote (`keygate
//! provider --hub-url ws://…`), reached over WebSocket for the socket flow and over
//! HTTP for the rest.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::challenge::{self, Flow, IssuedChallenge};
use crate::client::HubClient;
use crate::client::mux::{MuxPool, MuxSignIn};
use crate::error::Error;
use crate::http::{error_response, header_str, json_body, reply};
use crate::hub::routes::{ChallengeBody, client_meta};
use crate::hub::{ClientMeta, Hub, IssuedToken, SignedChallenge, TokenOptions};
use crate::signin::{self, ClientFrame, LocalSignIn, ServerFrame, SignInBackend};
use crate::store::ApiKeyRecord;
use crate::time::{format_rfc3339, parse_rfc3339};

/// How the Provider reaches its Hub.
pub enum HubLink {
    Local { hub: Arc<Hub>, app: ApiKeyRecord },
    Remote(HubClient),
}

pub struct Provider {
    link: HubLink,
    guard: Arc<crate::limits::Guard>,
    /// The replay cache (and nonces) of the sign-in proofs it checks; the Hub's
    /// when they share a process.
    dpop: Arc<crate::dpop::DpopGuard>,
    clock: Arc<dyn crate::time::Clock>,
    /// Public origins, first one the default audience.
    origins: Vec<String>,
    web_root: Option<PathBuf>,
    /// Split mode: the long-lived `/v1/ws/mux` links its socket sign-ins take.
    mux: Option<Arc<MuxPool>>,
}

/// Links to the Hub a Provider in split mode keeps by default (`--hub-connections`).
pub const DEFAULT_HUB_CONNECTIONS: usize = 4;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChallengeQuery {
    /// The user's identity.
    #[param(example = "bbaareibfea5jj555eqknpoxuaf5fsquky2r2i5o36rhkbbsglwbzmof4ra")]
    id: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ProviderTokenRequest)]
pub(crate) struct TokenRequest {
    id: String,
    challenge: String,
    #[serde(deserialize_with = "crate::challenge::de_signature")]
    #[schema(value_type = keygate_proto::sig::WireSignature)]
    sig: String,
    #[serde(flatten)]
    options: TokenOptions,
}

impl Provider {
    pub fn new(link: HubLink, origins: Vec<String>, web_root: Option<PathBuf>) -> Self {
        let (dpop, clock) = match &link {
            HubLink::Local { hub, .. } => (hub.dpop().clone(), hub.clock()),
            HubLink::Remote(_) => (
                Arc::new(crate::dpop::DpopGuard::new(
                    keygate_core::dpop::DEFAULT_REPLAY_CAPACITY,
                    None,
                )),
                Arc::new(crate::time::SystemClock) as Arc<dyn crate::time::Clock>,
            ),
        };
        Provider {
            link,
            dpop,
            clock,
            guard: crate::limits::Guard::new(crate::limits::Limits::default()),
            origins,
            web_root,
            mux: None,
        }
        .with_hub_connections(DEFAULT_HUB_CONNECTIONS)
    }

    /// Enforce these limits (by default [`crate::limits::Limits::default`]); a
    /// Provider sharing a process with its Hub shares the Hub's guard.
    pub fn with_guard(mut self, guard: Arc<crate::limits::Guard>) -> Self {
        self.guard = guard;
        let size = self
            .mux
            .as_ref()
            .map_or(DEFAULT_HUB_CONNECTIONS, |p| p.size());
        self.with_hub_connections(size)
    }

    /// Split mode: relay socket sign-ins over at most `n` long-lived links to the
    /// Hub (`/v1/ws/mux`, opened when first needed). Each answer from the Hub is
    /// awaited at most half the handshake deadline; past it the user gets
    /// `unavailable`.
    pub fn with_hub_connections(mut self, n: usize) -> Self {
        if let HubLink::Remote(client) = &self.link {
            let deadline = self.guard.limits.handshake_timeout / 2;
            self.mux = Some(Arc::new(MuxPool::new(client.clone(), n, deadline)));
        }
        self
    }

    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// How its sign-ins on `path` check their DPoP proofs.
    fn dpop_check(&self, path: &str) -> signin::DpopCheck {
        signin::DpopCheck {
            guard: self.dpop.clone(),
            urls: crate::dpop::urls(&self.origins, path),
            clock: self.clock.clone(),
        }
    }

    /// The audience of a request: its `Origin` when that is one of ours (else 403);
    /// with no `Origin` (a CLI, a backend, a same-origin GET), the configured origin
    /// whose host matches `Host`, or the first one.
    pub fn audience(&self, headers: &HeaderMap) -> Result<String, Error> {
        if let Some(origin) = headers.get("origin") {
            let origin = origin.to_str().map_err(|_| Error::ForbiddenOrigin)?;
            return self
                .origins
                .iter()
                .find(|o| o.as_str() == origin)
                .cloned()
                .ok_or(Error::ForbiddenOrigin);
        }
        let host = header_str(headers, "host");
        let by_host = host.and_then(|h| {
            self.origins.iter().find(|o| {
                o.split_once("://")
                    .is_some_and(|(_, authority)| authority == h)
            })
        });
        by_host
            .or(self.origins.first())
            .cloned()
            .ok_or(Error::ForbiddenOrigin)
    }

    async fn challenge(&self, id: &str, audience: &str) -> Result<IssuedChallenge, Error> {
        match &self.link {
            HubLink::Local { hub, app } => {
                hub.challenge(app, Flow::ProviderHttp, id, Some(audience))
            }
            HubLink::Remote(client) => {
                crate::signin::parse_identity(id)?;
                Ok(client.challenge(id, Some(audience)).await?)
            }
        }
    }

    async fn token(
        &self,
        req: TokenRequest,
        audience: &str,
        meta: ClientMeta,
    ) -> Result<IssuedToken, Error> {
        match &self.link {
            HubLink::Local { hub, app } => {
                let signed = SignedChallenge {
                    pubkey: &req.id,
                    challenge: &req.challenge,
                    sig: &req.sig,
                };
                hub.redeem(
                    app,
                    Flow::ProviderHttp,
                    signed,
                    &req.options,
                    Some(audience),
                    meta,
                )
                .await
            }
            HubLink::Remote(client) => {
                // The Hub checks that it issued the challenge; we check that it was
                // issued for this origin.
                let identity = crate::signin::parse_identity(&req.id)?;
                challenge::check_addressed_to(&req.challenge, audience, &identity)?;
                Ok(client
                    .token(&req.id, &req.challenge, &req.sig, &req.options)
                    .await?)
            }
        }
    }
}

/// Sign-in relayed to a remote Hub over a pooled `/v1/ws/mux` link.
struct RemoteSignIn {
    pool: Arc<MuxPool>,
    audience: String,
    /// The sign-in on the link, once its challenge has come.
    on_link: Option<MuxSignIn>,
}

impl SignInBackend for RemoteSignIn {
    fn begin(&mut self, mut frame: ClientFrame) -> BoxFuture<'_, Result<IssuedChallenge, Error>> {
        async move {
            let pubkey = frame
                .pubkey
                .as_deref()
                .ok_or_else(|| Error::bad_request("a token request needs a pubkey"))?;
            crate::signin::parse_identity(pubkey)?;
            frame.audience = Some(self.audience.clone());
            let sign_in = self.pool.sign_in().await?;
            let answer = sign_in.send(&frame).await?;
            self.on_link = Some(sign_in);
            match answer {
                ServerFrame::Challenge { value, expires_at } => Ok(IssuedChallenge {
                    expires_at: parse_rfc3339(&expires_at).unwrap_or_default(),
                    text: value,
                }),
                _ => Err(Error::Unavailable),
            }
        }
        .boxed()
    }

    fn finish(&mut self, sig: String) -> BoxFuture<'_, Result<IssuedToken, Error>> {
        async move {
            let sign_in = self.on_link.take().ok_or(Error::Unavailable)?;
            let frame = ClientFrame {
                kind: "challenge".into(),
                sig: Some(sig),
                ..Default::default()
            };
            sign_in
                .send(&frame)
                .await?
                .into_token()
                .ok_or(Error::Unavailable)
        }
        .boxed()
    }
}

fn with_provider(
    p: Arc<Provider>,
) -> impl Filter<Extract = (Arc<Provider>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || p.clone())
}

/// The Provider's routes: `/ws/userauth`, `/api/token`, the web demo at `/`, and in
/// split mode the user endpoints forwarded to the Hub.
pub fn routes(provider: Arc<Provider>) -> BoxedFilter<(Response,)> {
    let ws = warp::path!("ws" / "userauth")
        .and(signin::ws())
        .and(with_provider(provider.clone()))
        .and(warp::header::headers_cloned())
        .and(client_meta())
        .and(crate::listener::peer_ip())
        .map(
            |ws: signin::Upgrade,
             p: Arc<Provider>,
             headers: HeaderMap,
             meta: ClientMeta,
             ip: Option<std::net::IpAddr>| {
                let admitted = p
                    .audience(&headers)
                    .and_then(|a| p.guard.check_ip(ip).map(|()| a))
                    .and_then(|a| Ok((a, p.guard.handshake(ip)?)));
                let (audience, slot) = match admitted {
                    Ok(a) => a,
                    Err(e) => return error_response(&e),
                };
                let deadline = p.guard.limits.handshake_timeout;
                let ws = ws
                    .max_message_size(signin::MAX_FRAME)
                    .max_frame_size(signin::MAX_FRAME);
                match &p.link {
                    HubLink::Local { hub, app } => {
                        let backend = LocalSignIn::new(
                            hub.clone(),
                            app.clone(),
                            Flow::ProviderWs,
                            Some(audience),
                            meta,
                        );
                        let check = p.dpop_check("/ws/userauth");
                        ws.on_upgrade(move |s| {
                            signin::serve(s, backend, deadline, slot, Some(check))
                        })
                        .into_response()
                    }
                    HubLink::Remote(_) => {
                        let Some(pool) = p.mux.clone() else {
                            return error_response(&Error::Unavailable);
                        };
                        let backend = RemoteSignIn {
                            pool,
                            audience,
                            on_link: None,
                        };
                        let check = p.dpop_check("/ws/userauth");
                        ws.on_upgrade(move |s| {
                            signin::serve(s, backend, deadline, slot, Some(check))
                        })
                        .into_response()
                    }
                }
            },
        );

    let get_challenge = warp::path!("api" / "token")
        .and(warp::get())
        .and(with_provider(provider.clone()))
        .and(warp::header::headers_cloned())
        .and(crate::listener::peer_ip())
        .and(
            warp::query::<ChallengeQuery>()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .then(
            |p: Arc<Provider>,
             headers: HeaderMap,
             ip: Option<std::net::IpAddr>,
             q: Option<ChallengeQuery>| async move {
                reply(
                    async {
                        let audience = p.audience(&headers)?;
                        p.guard.check_ip(ip)?;
                        let q =
                            q.ok_or_else(|| Error::bad_request("pass the identity as ?id=…"))?;
                        let c = p.challenge(&q.id, &audience).await?;
                        Ok(ChallengeBody {
                            challenge: c.text,
                            expires_at: format_rfc3339(c.expires_at),
                        })
                    }
                    .await,
                )
            },
        );

    let post_token = warp::path!("api" / "token")
        .and(warp::post())
        .and(with_provider(provider.clone()))
        .and(warp::header::headers_cloned())
        .and(client_meta())
        .and(json_body::<TokenRequest>())
        .then(
            |p: Arc<Provider>,
             headers: HeaderMap,
             meta: ClientMeta,
             body: Result<TokenRequest, Error>| async move {
                reply(
                    async {
                        let audience = p.audience(&headers)?;
                        p.guard
                            .check_ip(meta.address.as_deref().and_then(|a| a.parse().ok()))?;
                        let mut body = body?;
                        // A key-bound token only for a sign-in that brings a proof
                        // by the identity's own key (docs/dpop.md).
                        let (proof, repeated) = crate::http::dpop_header(&headers);
                        if repeated {
                            return Err(Error::Dpop {
                                error: keygate_core::dpop::DpopError::Malformed,
                                at_issue: true,
                            });
                        }
                        body.options.dpop = proof.is_some() || body.options.dpop;
                        if body.options.dpop {
                            let identity = crate::signin::parse_identity(&body.id)?;
                            p.dpop_check("/api/token")
                                .sign_in(proof, "POST", &identity)?;
                        }
                        p.token(body, &audience, meta).await
                    }
                    .await,
                )
            },
        );

    let api = ws
        .or(get_challenge)
        .unify()
        .or(post_token)
        .unify()
        .or(crate::openapi::route())
        .unify()
        .boxed();
    let api = match &provider.link {
        HubLink::Local { .. } => api,
        HubLink::Remote(_) => api.or(forwarded(provider.clone())).unify().boxed(),
    };
    api.or(static_files(provider.web_root.clone()))
        .unify()
        .boxed()
}

/// Split mode: the user endpoints answered on the Provider's origin by the Hub.
fn forwarded(provider: Arc<Provider>) -> BoxedFilter<(Response,)> {
    warp::path("v1")
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(crate::http::optional_body())
        .and(with_provider(provider))
        .then(
            |path: warp::path::FullPath,
             query: String,
             method: warp::http::Method,
             headers: HeaderMap,
             body: warp::hyper::body::Bytes,
             p: Arc<Provider>| async move {
                let path = path.as_str();
                let allowed = matches!(
                    path,
                    "/v1/whoami" | "/v1/token/refresh" | "/v1/sessions" | "/v1/logout"
                ) || path
                    .strip_prefix("/v1/sessions/")
                    .is_some_and(crate::session::valid_id)
                    || crate::hub::routes::is_account_path(path);
                let HubLink::Remote(client) = &p.link else {
                    return error_response(&Error::NotFound);
                };
                if !allowed {
                    return error_response(&Error::NotFound);
                }
                let target = if query.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}?{query}")
                };
                let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
                    .unwrap_or(reqwest::Method::GET);
                match client
                    .forward(method, &target, &headers, body.to_vec())
                    .await
                {
                    Ok((status, bytes)) => {
                        let mut res = Response::new(bytes.into());
                        *res.status_mut() =
                            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                        let h = res.headers_mut();
                        h.insert(
                            "content-type",
                            warp::http::HeaderValue::from_static("application/json"),
                        );
                        h.insert(
                            "cache-control",
                            warp::http::HeaderValue::from_static("no-store"),
                        );
                        res
                    }
                    Err(e) => error_response(&e.into()),
                }
            },
        )
        .boxed()
}

/// Whether `raw` (the request path after `/`, as sent) names a page file that
/// may be served: empty (the index), or, decoded once, a plain top-level file
/// name (ASCII letters, digits, `.`, `-`, `_`; not starting with `.`) with a page
/// extension. Anything else (an encoded `/`, `\`, `.` that starts a dot-file,
/// NUL, `%` left after decoding, an escape that is not two hex digits) is
/// refused, so `warp::fs::dir`, which decodes again, can only reach what this
/// check saw.
fn page_file_name(raw: &str) -> bool {
    if raw.is_empty() {
        return true;
    }
    // Decoded once; a malformed escape keeps its `%`, which no page name has.
    let Ok(name) = percent_encoding::percent_decode_str(raw).decode_utf8() else {
        return false;
    };
    !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && [".html", ".js", ".css", ".svg", ".png", ".ico"]
            .iter()
            .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

const PLACEHOLDER: &str = "<!doctype html><meta charset=utf-8><title>keygate</title>\
<h1>keygate is running</h1><p>Sign in over <code>/ws/userauth</code> or <code>/api/token</code>.</p>";

/// Serves the web demo: the top-level page files of `web_root` only (no
/// subdirectories such as the browser test's `node_modules`, no dotfiles).
fn static_files(web_root: Option<PathBuf>) -> BoxedFilter<(Response,)> {
    match web_root {
        Some(dir) if dir.is_dir() => {
            let page_file = warp::path::peek().and_then(|tail: warp::path::Peek| async move {
                if page_file_name(tail.as_str()) {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            });
            warp::get()
                .and(page_file)
                .untuple_one()
                .and(warp::fs::dir(dir))
                .map(|f: warp::fs::File| {
                    let mut res = f.into_response();
                    res.headers_mut().insert(
                        "x-content-type-options",
                        warp::http::HeaderValue::from_static("nosniff"),
                    );
                    res
                })
                .boxed()
        }
        _ => warp::get()
            .and(warp::path::end())
            .map(|| warp::reply::html(PLACEHOLDER).into_response())
            .boxed(),
    }
}

#[cfg(test)]
mod tests {
    use super::page_file_name;

    #[test]
    fn only_plain_top_level_page_files() {
        for ok in [
            "",
            "index.html",
            "app.js",
            "style.css",
            "favicon.svg",
            "index%2ehtml",
        ] {
            assert!(page_file_name(ok), "{ok}");
        }
        for bad in [
            "sub/inner.html",
            "sub%2finner.html",
            "sub%2Finner.html",
            "sub%5cinner.html",
            "sub\\inner.html",
            ".hidden.html",
            "%2ehidden.html",
            "%2Eenv",
            "%252ehidden.html",
            "index.html%00.js",
            "index%00.html",
            "%zz.html",
            "%2.html",
            "%+1.html",
            ".html",
            "README.md",
            "test%2fdemo.test.js",
            "%c0%ae%c0%ae.js",
            "caf%c3%a9.html",
        ] {
            assert!(!page_file_name(bad), "{bad}");
        }
    }
}
