//! One request through the gateway: find the route, check the token, rewrite the
//! headers, forward with the body streamed, hand back the response (keeping what
//! the upstream exported for the session), and for a WebSocket upgrade, splice the
//! two upgraded connections together.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Either, Full, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::assertion::{AssertionClaims, AssertionSigner};
use super::config::{GatewayConfig, PUBLIC_PREFIX, Route};
use super::headers;
use super::state::{self, AssertionCache, SessionValues, TokenCache};
use crate::client::OfflineVerifier;
use crate::error::Error;
use crate::time::Clock;
use crate::token::AccessClaims;
use keygate_core::entropy::Entropy;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// An upstream's body passed through as it streams, or one made here.
pub type ResBody = Either<Incoming, BoxBody<Bytes, BoxError>>;

/// Path of the gateway's own JWKS (the keys that sign assertions).
pub const JWKS_PATH: &str = "/.well-known/gateway-jwks.json";

/// How often an open WebSocket tunnel checks that its session is still live.
const TUNNEL_REVOCATION_CHECK: Duration = Duration::from_millis(200);

/// Everything a request needs, shared by all connections.
pub struct Gate {
    pub(super) routes: Vec<Route>,
    pub(super) verifier: Arc<OfflineVerifier>,
    pub(super) tokens: TokenCache,
    pub(super) assertions: AssertionCache,
    pub(super) sessions: SessionValues,
    pub(super) signer: AssertionSigner,
    pub(super) assertion_issuer: String,
    pub(super) assertion_ttl: i64,
    pub(super) upstream_timeout: Duration,
    pub(super) jwks_body: Bytes,
    pub(super) client: Client<HttpConnector, Incoming>,
    pub(super) clock: Arc<dyn Clock>,
    /// Assertion ids and WebSocket close-frame masks.
    pub(super) entropy: Arc<dyn Entropy>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// DPoP proofs seen (and nonces) of key-bound tokens (docs/dpop.md).
    pub(super) dpop: crate::dpop::DpopGuard,
    pub(super) public_origin: Option<String>,
}

impl Gate {
    pub(super) fn new(
        config: &GatewayConfig,
        verifier: Arc<OfflineVerifier>,
        signer: AssertionSigner,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut routes = config.routes.clone();
        // Longest prefix first, so the most specific route wins.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let jwks_body = Bytes::from(serde_json::to_vec(&signer.jwks()).unwrap_or_default());
        let nonce_secret = config.dpop_nonce.then(|| entropy.bytes::<32>());
        Gate {
            routes,
            verifier,
            tokens: TokenCache::new(config.token_cache),
            assertions: AssertionCache::new(config.token_cache),
            sessions: SessionValues::new(config.max_sessions),
            signer,
            assertion_issuer: config.assertion_issuer.clone(),
            assertion_ttl: config.assertion_ttl,
            upstream_timeout: Duration::from_secs(config.upstream_timeout),
            jwks_body,
            client,
            clock,
            entropy,
            shutdown,
            dpop: crate::dpop::DpopGuard::new(config.dpop_replay_cache, nonce_secret),
            public_origin: config.public_origin.clone(),
        }
    }

    /// The hyper service: never fails, every error is a response.
    pub(super) async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ResBody>, Infallible> {
        // CONNECT would turn the gateway into a TCP relay, TRACE would echo the
        // request (headers and all) back: neither is ever forwarded.
        if matches!(*req.method(), Method::CONNECT | Method::TRACE) {
            let mut res = error(&Error::bad_request("method not allowed"));
            *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            return Ok(res);
        }
        let mut seen = Seen::default();
        let res = match self.handle(req, peer, &mut seen).await {
            Ok(res) => res,
            Err(e) => error(&e),
        };
        // Route names come from the operator's configuration, never the request.
        let route = seen.route.map_or("none", |i| self.routes[i].name.as_str());
        crate::metrics::metrics().gateway_request(route, res.status().as_u16(), seen.upstream);
        Ok(res)
    }

    async fn handle(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        seen: &mut Seen,
    ) -> Result<Response<ResBody>, Error> {
        let path = req.uri().path();
        if path == JWKS_PATH && matches!(*req.method(), Method::GET | Method::HEAD) {
            return Ok(self.jwks());
        }
        if !headers::safe_path(path) {
            return Err(Error::bad_request(
                "the path must not contain dot segments (also with `;`), backslashes, \
                 encoded dots, slashes or percent signs, control characters or invalid UTF-8",
            ));
        }
        let (index, route) = self.route(path).ok_or(Error::NotFound)?;
        seen.route = Some(index);
        let now = self.clock.now();
        let claims = if route.public {
            None
        } else {
            let cred = crate::http::credential(req.headers(), req.method().as_str(), path);
            let token = cred.token.ok_or(Error::MissingToken)?;
            let claims = self
                .authenticate(token, now)
                .await
                .map_err(|e| e.under_scheme(cred.dpop_scheme))?;
            self.check_binding(&cred, token, &claims, route, now)?;
            Some(claims)
        };
        let values = match &claims {
            Some(c) => self.sessions.get(&c.sid),
            None => Vec::new(),
        };

        let uri = upstream_uri(route, req.uri())?;
        let assertion = self.assertion(index, route, claims.as_deref(), &values, now)?;
        let client_upgrade = rewrite_request(&mut req, route, peer)?;
        let client_upgrade = client_upgrade.map(|proto| (proto, hyper::upgrade::on(&mut req)));
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        let h = req.headers_mut();
        if let Some(c) = &claims {
            h.insert(headers::IDENTITY, value(&c.sub)?);
            h.insert(headers::SESSION, value(&c.sid)?);
            h.insert(headers::SCOPE, value(&c.scope)?);
        }
        for (name, v) in values {
            let name = HeaderName::from_bytes(
                format!(
                    "{}{}",
                    headers::SESSION_VALUE_PREFIX,
                    name.to_ascii_lowercase()
                )
                .as_bytes(),
            )
            .map_err(|_| Error::Internal)?;
            h.insert(name, v);
        }
        h.insert(headers::ASSERTION, assertion);
        // The proof was for this hop; the assertion says the call was key-bound.
        h.remove("dpop");
        if let Some((proto, _)) = &client_upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, proto.clone());
        }

        let asked = std::time::Instant::now();
        let answer = tokio::time::timeout(self.upstream_timeout, self.client.request(req)).await;
        seen.upstream = Some(asked.elapsed());
        let mut res = match answer {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                tracing::warn!(route = %route.name, error = %e, "upstream request failed");
                return Err(Error::BadGateway);
            }
            Err(_) => {
                tracing::warn!(route = %route.name, "upstream did not answer in time");
                return Err(Error::BadGateway);
            }
        };

        let exported = headers::take_exports(res.headers_mut(), &route.exports);
        if let Some(c) = &claims {
            self.sessions.set(&c.sid, exported);
        }
        let upgraded = headers::strip_hop_by_hop(res.headers_mut());
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some((asked, client_on)), Some(proto)) = (client_upgrade, upgraded) else {
                tracing::warn!(route = %route.name, "upstream switched protocols unasked");
                return Err(Error::BadGateway);
            };
            let upstream_on = hyper::upgrade::on(&mut res);
            let h = res.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, proto);
            let websocket = asked.as_bytes().eq_ignore_ascii_case(b"websocket");
            tokio::spawn(self.clone().tunnel(
                client_on,
                upstream_on,
                claims.map(|c| (c.sid.clone(), c.exp)),
                websocket,
            ));
        }
        Ok(res.map(Either::Left))
    }

    /// RFC 9449 §7 at the gateway: a key-bound token only with the `DPoP` scheme
    /// and a proof by its key for this method and the public URL the client sent
    /// the request to (the route's `public_origin`, the gateway's, or the `Host`
    /// on `http`); a bearer token only as a bearer token.
    fn check_binding(
        &self,
        cred: &crate::http::Credential<'_>,
        token: &str,
        claims: &AccessClaims,
        route: &Route,
        now: crate::time::UnixTime,
    ) -> Result<(), Error> {
        let Some(jkt) = keygate_core::dpop::bound_key(claims.cnf.as_ref(), cred.dpop_scheme)?
        else {
            return Ok(());
        };
        let url = match route.public_origin.as_ref().or(self.public_origin.as_ref()) {
            Some(o) => format!("{o}{}", cred.path),
            None => {
                // The gateway listens on plain HTTP: behind a TLS terminator,
                // `public_origin` says what clients see.
                let scheme = "http";
                let host = cred.host.ok_or(Error::Dpop {
                    error: keygate_core::dpop::DpopError::WrongRequest,
                    at_issue: false,
                })?;
                format!("{scheme}://{host}{}", cred.path)
            }
        };
        self.dpop.check_use(cred, token, jkt, &[&url], now)
    }

    /// The route for `path`: the longest matching prefix; under `/public/` only a
    /// public route.
    fn route(&self, path: &str) -> Option<(usize, &Route)> {
        let public_path = path.starts_with(PUBLIC_PREFIX) || path == "/public";
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.public == public_path && headers::under_prefix(path, &r.prefix))
    }

    /// Checks a token: from the cache of verified tokens when it is there, in full
    /// otherwise (reading the Hub's keys again if it names a new one); the
    /// session's revocation is checked either way.
    async fn authenticate(
        &self,
        token: &str,
        now: crate::time::UnixTime,
    ) -> Result<Arc<AccessClaims>, Error> {
        if let Some(c) = self.tokens.get(token, now) {
            if self.verifier.is_revoked(&c.sid) {
                self.sessions.remove(&c.sid);
                return Err(Error::SessionRevoked);
            }
            return Ok(c);
        }
        let claims = Arc::new(self.verifier.verify_async(token, now).await?);
        self.tokens.insert(token, claims.clone(), now);
        Ok(claims)
    }

    /// The assertion for this caller on this route: a cached one while it is fresh
    /// and carries the current session values, else a new one.
    fn assertion(
        &self,
        index: usize,
        route: &Route,
        claims: Option<&AccessClaims>,
        values: &[(String, HeaderValue)],
        now: crate::time::UnixTime,
    ) -> Result<HeaderValue, Error> {
        let jti = claims.map_or("", |c| c.jti.as_str());
        let hash = state::values_hash(values);
        if let Some(v) = self.assertions.get(jti, index, hash, now) {
            return Ok(v);
        }
        let exp = now + self.assertion_ttl;
        let minted = self.signer.mint(&AssertionClaims {
            iss: self.assertion_issuer.clone(),
            aud: route.name.clone(),
            iat: now,
            exp,
            jti: crate::session::random_id(&mut self.entropy.rng()),
            sub: claims.map(|c| c.sub.clone()),
            sid: claims.map(|c| c.sid.clone()),
            scope: claims.map(|c| c.scope.clone()),
            app: claims.map(|c| c.aud.clone()),
            client_id: claims.and_then(|c| c.client_id.clone()),
            cnf: claims.and_then(|c| c.cnf.clone()),
            session_values: values
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.to_str().ok()?.to_owned())))
                .collect(),
        });
        let v = value(&minted)?;
        self.assertions
            .insert(jti, index, self.routes.len(), hash, v.clone(), now, exp);
        Ok(v)
    }

    fn jwks(&self) -> Response<ResBody> {
        let mut res = Response::new(Either::Right(
            Full::new(self.jwks_body.clone())
                .map_err(|never| match never {})
                .boxed(),
        ));
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        );
        res
    }

    /// Copies bytes both ways between an upgraded client connection and its
    /// upstream, until either side closes, the session is revoked, the token
    /// expires (at its `exp`, on the gateway's clock), or the gateway stops. A
    /// WebSocket cut for its token is closed with code [`TUNNEL_CLOSE_CODE`] on
    /// both sides.
    async fn tunnel(
        self: Arc<Self>,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
        session: Option<(String, crate::time::UnixTime)>,
        websocket: bool,
    ) {
        let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let mut shutdown = self.shutdown.clone();
        let cut = async {
            let Some((sid, exp)) = &session else {
                return std::future::pending().await;
            };
            let mut tick = tokio::time::interval(TUNNEL_REVOCATION_CHECK);
            loop {
                tick.tick().await;
                if self.verifier.is_revoked(sid) {
                    return "session revoked";
                }
                if self.clock.now() >= *exp {
                    return "token expired";
                }
            }
        };
        let reason = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
            reason = cut => reason,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        tracing::debug!(reason, "closing a WebSocket tunnel");
        if websocket {
            // Best effort within a second: a close frame to each side (masked
            // towards the upstream, as a client's must be), then the client's
            // answer, then the connections are dropped.
            let mask: [u8; 4] = self.entropy.bytes();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = upstream
                    .write_all(&close_frame(TUNNEL_CLOSE_CODE, reason, Some(mask)))
                    .await;
                let _ = upstream.shutdown().await;
                client
                    .write_all(&close_frame(TUNNEL_CLOSE_CODE, reason, None))
                    .await?;
                client.flush().await?;
                let mut buf = [0u8; 256];
                let _ = client.read(&mut buf).await;
                client.shutdown().await
            })
            .await;
        }
    }
}

/// The close code of a WebSocket tunnel cut because its token expired or its
/// session was revoked: 1008, policy violation (as keygate's own sockets use).
pub const TUNNEL_CLOSE_CODE: u16 = 1008;

/// A WebSocket close frame (RFC 6455 §5.5.1) with `code` and `reason` (short
/// ASCII), masked with `mask` when it goes to a server.
fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    let mut frame = vec![0x88, payload.len() as u8];
    if let Some(mask) = mask {
        frame[1] |= 0x80;
        frame.extend_from_slice(&mask);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    frame.extend_from_slice(&payload);
    frame
}

/// What one request came to, for the metrics: its route (an index into the
/// routes) and how long its upstream took.
#[derive(Default)]
pub(super) struct Seen {
    route: Option<usize>,
    upstream: Option<Duration>,
}

/// The upstream URI: the route's upstream, its base path, the request's path
/// (without the route's prefix when it strips it) and query.
fn upstream_uri(route: &Route, uri: &Uri) -> Result<Uri, Error> {
    let path = uri.path();
    let rest = if route.strip_prefix && route.prefix != "/" {
        &path[route.prefix.len().min(path.len())..]
    } else {
        path
    };
    let mut s = String::with_capacity(
        route.upstream_authority.len() + route.upstream_base.len() + uri.path().len() + 64,
    );
    s.push_str(&route.upstream_authority);
    s.push_str(&route.upstream_base);
    s.push_str(rest);
    if route.upstream_base.is_empty() && rest.is_empty() {
        s.push('/');
    }
    if let Some(q) = uri.query() {
        s.push('?');
        s.push_str(q);
    }
    s.parse()
        .map_err(|_| Error::bad_request("the request URI cannot be forwarded"))
}

/// Cleans the client's headers for the upstream: hop-by-hop headers, every
/// `x-keygate-` header, the token (unless the route forwards it), `Host` (the
/// client sets the upstream's); adds `X-Forwarded-*`. Returns the protocol the
/// client asked to upgrade to, if any.
fn rewrite_request(
    req: &mut Request<Incoming>,
    route: &Route,
    peer: SocketAddr,
) -> Result<Option<HeaderValue>, Error> {
    let h = req.headers_mut();
    let upgrade = headers::strip_hop_by_hop(h);
    headers::strip_keygate(h);
    if !route.forward_token {
        headers::strip_token(h);
    }
    if let Some(host) = h.remove(header::HOST) {
        h.insert("x-forwarded-host", host);
    }
    let ip = peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    h.insert("x-forwarded-for", value(&xff)?);
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    Ok(upgrade)
}

fn value(s: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(s).map_err(|_| Error::Internal)
}

/// The protocol's JSON error, as a gateway response.
pub fn error(e: &Error) -> Response<ResBody> {
    crate::http::error_response(e).map(|b| Either::Right(b.map_err(BoxError::from).boxed()))
}

#[cfg(test)]
mod tests {
    use super::close_frame;

    #[test]
    fn close_frames() {
        assert_eq!(
            close_frame(1008, "x", None),
            vec![0x88, 3, 0x03, 0xf0, b'x']
        );
        let masked = close_frame(1008, "x", Some([1, 2, 3, 4]));
        assert_eq!(
            masked,
            vec![0x88, 0x83, 1, 2, 3, 4, 0x03 ^ 1, 0xf0 ^ 2, b'x' ^ 3]
        );
    }
}
