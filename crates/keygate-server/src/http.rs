//! Warp glue shared by the Hub and the Provider: errors to responses (the one
//! place where an [`Error`] becomes HTTP), JSON bodies, bearer tokens.

use std::convert::Infallible;

use serde::Serialize;
use serde::de::DeserializeOwned;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::error::Error;

/// Largest request body accepted anywhere.
pub const MAX_BODY: u64 = 16 * 1024;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

/// A JSON response that no cache may keep (every body here may carry a token or
/// a challenge, or says something about a credential).
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut res = Response::new(bytes.into());
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub fn error_response(e: &Error) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        error: e.code(),
        message: e.message(),
    };
    let mut res = match e.details() {
        None => json(status, &body),
        Some(mut details) => {
            details["error"] = body.error.into();
            details["message"] = body.message.into();
            json(status, &details)
        }
    };
    if let Some(v) = e
        .www_authenticate()
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if let Some(v) = e.dpop_nonce().and_then(|n| HeaderValue::from_str(n).ok()) {
        res.headers_mut().insert("dpop-nonce", v);
    }
    if let Error::RateLimited { retry_after } = e {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
    }
    res
}

/// `200` with the body, or the error's response.
pub fn reply<T: Serialize>(r: Result<T, Error>) -> Response {
    match r {
        Ok(body) => json(StatusCode::OK, &body),
        Err(e) => error_response(&e),
    }
}

/// A JSON body of at most [`MAX_BODY`] bytes, parsed into `T`; a parse failure is
/// a `400 bad_request` handed to the handler rather than a rejection.
pub fn json_body<T: DeserializeOwned + Send>()
-> impl Filter<Extract = (Result<T, Error>,), Error = Rejection> + Clone {
    capped_body().map(|b: Bytes| {
        serde_json::from_slice::<T>(&b)
            .map_err(|e| Error::bad_request(format!("malformed JSON body: {}", e.classify_msg())))
    })
}

/// The raw body, at most [`MAX_BODY`] bytes, whether its length is declared or
/// it comes chunked; empty for a request without a body. Over the cap (declared
/// or counted while reading) is `413 payload_too_large`, before more is read.
pub fn optional_body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    capped_body()
}

fn capped_body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-length")
        .and(warp::body::stream())
        .and_then(|declared: Option<String>, body| async move {
            read_capped(declared, body, MAX_BODY as usize)
                .await
                .map_err(|e| warp::reject::custom(Rejected(e)))
        })
}

/// Reads `body` into memory, refusing it as soon as it is (declared or found to
/// be) over `max` bytes.
async fn read_capped<S, B>(declared: Option<String>, body: S, max: usize) -> Result<Bytes, Error>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    use futures_util::StreamExt;
    if let Some(len) = declared {
        match len.trim().parse::<u64>() {
            Ok(n) if n > max as u64 => return Err(Error::PayloadTooLarge),
            Ok(_) => {}
            Err(_) => return Err(Error::bad_request("malformed Content-Length header")),
        }
    }
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| Error::bad_request("unreadable body"))?;
        if out.len() + chunk.remaining() > max {
            return Err(Error::PayloadTooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(out))
}

trait ClassifyMsg {
    fn classify_msg(&self) -> &'static str;
}

impl ClassifyMsg for serde_json::Error {
    /// A description of what is wrong that never quotes the input.
    fn classify_msg(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "missing or mistyped fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// A request's headers with its method and path: what a user endpoint reads to
/// authenticate its caller (the token, and a DPoP proof for that request line).
/// Derefs to the headers.
#[derive(Debug)]
pub struct Request {
    pub headers: HeaderMap,
    pub method: warp::http::Method,
    pub path: String,
    /// The peer's address, as the listener saw it.
    pub address: Option<std::net::IpAddr>,
}

impl std::ops::Deref for Request {
    type Target = HeaderMap;
    fn deref(&self) -> &HeaderMap {
        &self.headers
    }
}

impl Request {
    /// The caller's credential: token, scheme and DPoP proof.
    pub fn credential(&self) -> Credential<'_> {
        Credential {
            address: self.address,
            ..credential(&self.headers, self.method.as_str(), &self.path)
        }
    }
}

/// Headers, method, path and peer address of the request.
pub fn request() -> impl Filter<Extract = (Request,), Error = Infallible> + Clone {
    warp::header::headers_cloned()
        .and(warp::method())
        .and(warp::path::full())
        .and(crate::listener::peer_ip())
        .map(
            |headers, method, path: warp::path::FullPath, address| Request {
                headers,
                method,
                path: path.as_str().to_owned(),
                address,
            },
        )
}

/// What a request presents to a user endpoint: its access token, whether it came
/// with the `DPoP` scheme, its DPoP proof, and the method and path the proof must
/// name (docs/dpop.md).
#[derive(Debug, Clone, Copy, Default)]
pub struct Credential<'a> {
    pub token: Option<&'a str>,
    /// `Authorization: DPoP <token>`.
    pub dpop_scheme: bool,
    /// The `DPoP` header.
    pub proof: Option<&'a str>,
    /// More than one `DPoP` header: refused (RFC 9449 §4.3).
    pub proofs_repeated: bool,
    /// The token is looked at for someone else (introspection, revocation): its
    /// binding is not checked here, the resource server checks it (`cnf`).
    pub holder_unknown: bool,
    pub method: &'a str,
    pub path: &'a str,
    /// The `Host` header (the gateway's default public origin).
    pub host: Option<&'a str>,
    /// The caller's address and user agent, for the audit trail.
    pub address: Option<std::net::IpAddr>,
    pub user_agent: Option<&'a str>,
}

impl<'a> Credential<'a> {
    /// A token looked at on someone else's behalf (introspection, revocation).
    pub fn for_introspection(token: &'a str) -> Self {
        Credential {
            token: Some(token),
            holder_unknown: true,
            ..Credential::default()
        }
    }
}

impl<'a> From<Option<&'a str>> for Credential<'a> {
    /// A bearer token alone (tests, internal callers).
    fn from(token: Option<&'a str>) -> Self {
        Credential {
            token,
            ..Credential::default()
        }
    }
}

/// The `DPoP` header of a request, and whether it came more than once (which
/// RFC 9449 §4.3 refuses).
pub fn dpop_header(headers: &HeaderMap) -> (Option<&str>, bool) {
    let mut proofs = headers.get_all("dpop").iter();
    let proof = proofs.next().and_then(|v| v.to_str().ok()).map(str::trim);
    (proof, proofs.next().is_some())
}

/// The [`Credential`] of a request with `headers`, `method` and `path`.
pub fn credential<'a>(headers: &'a HeaderMap, method: &'a str, path: &'a str) -> Credential<'a> {
    let (proof, proofs_repeated) = dpop_header(headers);
    let dpop = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("dpop"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    Credential {
        token: dpop.or_else(|| bearer(headers)),
        dpop_scheme: dpop.is_some(),
        proof,
        proofs_repeated,
        holder_unknown: false,
        method,
        path,
        host: header_str(headers, "host"),
        address: None,
        user_agent: header_str(headers, "user-agent"),
    }
}

/// The access token of a request: `Authorization: Bearer <t>`, `Authorization:
/// Token <t>`, or `X-Auth-Token: <t>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = v.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            let token = token.trim();
            return (!token.is_empty()).then_some(token);
        }
        return None;
    }
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Maps what is left of warp's own rejections (no route, wrong method, body too
/// large) to the protocol's JSON errors. Never a 500 for bad input.
pub async fn recover(r: Rejection) -> Result<Response, Infallible> {
    let e = if r.is_not_found() {
        Error::NotFound
    } else if let Some(Rejected(e)) = r.find::<Rejected>() {
        e.clone()
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        Error::PayloadTooLarge
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        let mut res = error_response(&Error::bad_request("method not allowed"));
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(res);
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        Error::bad_request("a Content-Length header is required")
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        Error::bad_request("malformed query string")
    } else if r.find::<warp::reject::InvalidHeader>().is_some()
        || r.find::<warp::reject::MissingHeader>().is_some()
    {
        Error::bad_request("missing or malformed header")
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        Error::bad_request("unsupported media type")
    } else {
        Error::bad_request("bad request")
    };
    Ok(error_response(&e))
}

/// A `405` names the methods its path takes (`Allow`, RFC 9110 §15.5.6), as
/// the OpenAPI document lists them.
pub fn with_allow(path: warp::path::FullPath, mut res: Response) -> Response {
    if res.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(methods) = crate::openapi::allow(path.as_str())
    {
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(methods));
    }
    res
}

/// An [`Error`] carried through a warp rejection.
#[derive(Debug)]
pub struct Rejected(pub Error);

impl warp::reject::Reject for Rejected {}

/// Boxes a reply so that routes with different reply types can be combined cheaply.
pub fn boxed(r: impl Reply + 'static) -> Response {
    r.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Token abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        let mut h = HeaderMap::new();
        h.insert("x-auth-token", HeaderValue::from_static("xyz"));
        assert_eq!(bearer(&h), Some("xyz"));
    }
}
