//! OAuth 2.0 errors (RFC 6749 §5.2, RFC 6750 §3): `{"error", "error_description"}`
//! with the status each code calls for. Descriptions are fixed text: nothing a
//! client sent is ever echoed.

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub code: &'static str,
    pub description: &'static str,
    /// The `WWW-Authenticate` challenge to send, if any.
    pub challenge: Option<&'static str>,
    /// A fresh server nonce to send as `DPoP-Nonce` (`use_dpop_nonce`).
    pub dpop_nonce: Option<String>,
}

const DPOP_INVALID_PROOF: &str =
    r#"DPoP realm="keygate", error="invalid_dpop_proof", algs="EdDSA Ed25519 ES256""#;
const DPOP_USE_NONCE: &str =
    r#"DPoP realm="keygate", error="use_dpop_nonce", algs="EdDSA Ed25519 ES256""#;
const DPOP_INVALID_TOKEN: &str =
    r#"DPoP realm="keygate", error="invalid_token", algs="EdDSA Ed25519 ES256""#;

impl OAuthError {
    pub const fn new(status: u16, code: &'static str, description: &'static str) -> Self {
        OAuthError {
            status,
            code,
            description,
            challenge: None,
            dpop_nonce: None,
        }
    }

    /// A DPoP refusal (RFC 9449 §5.10, §7.1): 400 at the token endpoint, 401 with
    /// a `DPoP` challenge at a resource. None for other errors.
    fn dpop(e: &Error, at_resource: bool) -> Option<Self> {
        let (code, description, challenge) = match e {
            Error::Dpop { .. } => (
                "invalid_dpop_proof",
                "the DPoP proof is missing, malformed, replayed, or not for this request or key",
                DPOP_INVALID_PROOF,
            ),
            Error::UseDpopNonce { .. } => (
                "use_dpop_nonce",
                "the DPoP proof must carry the nonce in the DPoP-Nonce header",
                DPOP_USE_NONCE,
            ),
            Error::DpopBoundToken if at_resource => (
                "invalid_token",
                "this token is bound to a key: send it as Authorization: DPoP with a DPoP proof",
                DPOP_INVALID_TOKEN,
            ),
            Error::DpopUnboundToken if at_resource => (
                "invalid_token",
                "this token is not bound to a key: send it as Authorization: Bearer",
                DPOP_INVALID_TOKEN,
            ),
            Error::DpopScheme(_) if at_resource => (
                "invalid_token",
                "the access token is invalid, expired or revoked",
                DPOP_INVALID_TOKEN,
            ),
            _ => return None,
        };
        Some(OAuthError {
            status: if at_resource { 401 } else { 400 },
            code,
            description,
            challenge: at_resource.then_some(challenge),
            dpop_nonce: e.dpop_nonce().map(str::to_owned),
        })
    }

    pub const fn invalid_request(description: &'static str) -> Self {
        Self::new(400, "invalid_request", description)
    }

    /// Client authentication failed (RFC 6749 §5.2): 401 with a Basic challenge.
    pub fn invalid_client() -> Self {
        OAuthError {
            challenge: Some(r#"Basic realm="keygate""#),
            ..Self::new(401, "invalid_client", "client authentication failed")
        }
    }

    pub const fn invalid_grant() -> Self {
        Self::new(
            400,
            "invalid_grant",
            "the grant is invalid, expired, already used, or was issued to another client",
        )
    }

    pub const fn unauthorized_client(description: &'static str) -> Self {
        Self::new(400, "unauthorized_client", description)
    }

    pub const fn unsupported_grant_type() -> Self {
        Self::new(
            400,
            "unsupported_grant_type",
            "this grant type is not supported",
        )
    }

    pub const fn invalid_scope() -> Self {
        Self::new(
            400,
            "invalid_scope",
            "scope: this client may not ask for one of the requested scopes",
        )
    }

    /// RFC 6750 §3.1 at a resource (userinfo): a missing or bad access token.
    pub fn bearer(e: Error) -> Self {
        if let Some(d) = Self::dpop(&e, true) {
            return d;
        }
        match e {
            Error::Unavailable | Error::Internal | Error::RateLimited { .. } => e.into(),
            Error::MissingToken => OAuthError {
                challenge: Some(r#"Bearer realm="keygate""#),
                ..Self::new(
                    401,
                    "invalid_request",
                    "send the access token as Authorization: Bearer",
                )
            },
            _ => OAuthError {
                challenge: Some(r#"Bearer realm="keygate", error="invalid_token""#),
                ..Self::new(
                    401,
                    "invalid_token",
                    "the access token is invalid, expired or revoked",
                )
            },
        }
    }

    /// `403` for a token without `openid` at userinfo (RFC 6750 §3.1), challenged
    /// in the scheme the token came with (RFC 9449 §7.1).
    pub fn insufficient_scope(dpop_scheme: bool) -> Self {
        OAuthError {
            challenge: Some(if dpop_scheme {
                r#"DPoP realm="keygate", error="insufficient_scope", scope="openid", algs="EdDSA Ed25519 ES256""#
            } else {
                r#"Bearer realm="keygate", error="insufficient_scope", scope="openid""#
            }),
            ..Self::new(
                403,
                "insufficient_scope",
                "this token's scope does not include openid",
            )
        }
    }

    pub fn response(&self) -> Response {
        let body = serde_json::json!({
            "error": self.code,
            "error_description": self.description,
        });
        let mut res = crate::http::json(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            &body,
        );
        res.headers_mut()
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(c) = self.challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Some(n) = self
            .dpop_nonce
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            res.headers_mut().insert("dpop-nonce", n);
        }
        res
    }
}

/// The Hub's own errors where an OAuth endpoint meets them: an outage is a 503
/// `temporarily_unavailable`, a rate limit a 429, anything else a bad request.
impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        if let Some(d) = Self::dpop(&e, false) {
            return d;
        }
        match e {
            Error::Unavailable | Error::Internal => Self::new(
                503,
                "temporarily_unavailable",
                "the service is unavailable; try again",
            ),
            Error::RateLimited { .. } => {
                Self::new(429, "slow_down", "too many requests; retry later")
            }
            _ => Self::new(400, "invalid_request", "the request was refused"),
        }
    }
}
