//! The one error type of keygate's services, with its stable codes and statuses.
//!
//! Every failure a client can see is a variant here; the HTTP and WebSocket layers
//! map it to a status and a JSON body in one place each. Messages are written for
//! people and never contain secrets, tokens, or echoed input.

use crate::apikey::ApiKeyError;
use crate::challenge::ChallengeError;
use crate::dpop::DpopError;
use crate::identity::IdentityError;
use crate::token::TokenError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Challenge(#[from] ChallengeError),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("{0}")]
    ApiKey(#[from] ApiKeyError),
    #[error("{0}")]
    BadRequest(String),
    #[error("this challenge has already been used; ask for a new one")]
    ChallengeUsed,
    #[error("missing access token: send it as Authorization: Bearer <token>")]
    MissingToken,
    #[error("this session has been revoked; sign in again")]
    SessionRevoked,
    #[error("this session has expired; sign in again")]
    SessionExpired,
    /// A renewal's `session_id` names no session of this identity and app.
    #[error("session_id: no session of this identity and app has this id")]
    InvalidSession,
    #[error("refresh token is invalid, expired, or bound to another client")]
    InvalidRefreshToken,
    #[error("refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    #[error("this token id is unknown, expired or already used")]
    InvalidGrant,
    /// A requested scope the app may not grant. The message names the field and
    /// never quotes the value.
    #[error("scope: this app may not grant one of the requested scopes")]
    InvalidScope,
    #[error("requests from this origin are not allowed")]
    ForbiddenOrigin,
    /// A challenge audience that is neither the API key's id nor one of its
    /// origins (docs/tenancy.md).
    #[error("this API key may not name this audience: use its key id or one of its origins")]
    ForbiddenAudience,
    #[error("{0}")]
    Forbidden(String),
    /// The session must show a second factor first (an MFA-pending sign-in, or an
    /// action that needs `aal2`). `methods` are the factors the account can use.
    #[error("this needs a second factor: complete the MFA step first (docs/accounts.md)")]
    MfaRequired { methods: Vec<&'static str> },
    #[error("this key already belongs to another account")]
    KeyInOtherAccount,
    #[error("the last key of an account cannot be removed")]
    LastAccountKey,
    #[error("the one-time code is wrong or expired")]
    InvalidOtp,
    #[error("this one-time code was already used; wait for the next one")]
    OtpReused,
    #[error("not found")]
    NotFound,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("message is larger than 16 KiB")]
    MessageTooLarge,
    #[error("sign-in was not completed in time")]
    HandshakeTimeout,
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the service is unavailable; try again shortly")]
    Unavailable,
    #[error("the upstream service could not be reached or did not answer in time")]
    BadGateway,
    #[error("internal error")]
    Internal,
    /// A DPoP proof refused (docs/dpop.md): `401` where a token is used, `400`
    /// where one is issued (`at_issue`, RFC 9449 §5 and §7).
    #[error("{error}")]
    Dpop { error: DpopError, at_issue: bool },
    /// The proof must carry this server's nonce: here is a fresh one (`DPoP-Nonce`).
    #[error("the DPoP proof must carry the nonce in the DPoP-Nonce header")]
    UseDpopNonce { nonce: String, at_issue: bool },
    /// A key-bound token presented without DPoP (RFC 9449 §7.1).
    #[error(
        "this token is bound to a key: send it as Authorization: DPoP <token> with a DPoP proof"
    )]
    DpopBoundToken,
    /// A bearer token sent with the DPoP scheme.
    #[error("this token is not bound to a key: send it as Authorization: Bearer")]
    DpopUnboundToken,
    /// A token refused for itself (malformed, expired, revoked, ...) when it came
    /// with the `DPoP` scheme: the same code, status and message, answered with a
    /// `DPoP` challenge instead of a `Bearer` one (RFC 9449 §7.1). See
    /// [`Error::under_scheme`].
    #[error("{0}")]
    DpopScheme(Box<Error>),
    /// The app takes key-bound tokens only and the sign-in brought no proof.
    #[error("this app requires DPoP: sign in with a DPoP proof made by your key")]
    DpopRequired,
    /// An error passed through from a remote Hub, code and message as it sent them.
    #[error("{message}")]
    Remote {
        status: u16,
        code: String,
        message: String,
    },
}

impl Error {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }

    /// The stable snake_case code.
    pub fn code(&self) -> &str {
        match self {
            Error::Identity(_) => IdentityError::CODE,
            Error::Challenge(e) => e.code(),
            Error::Token(e) => e.code(),
            Error::ApiKey(_) => ApiKeyError::CODE,
            Error::BadRequest(_) => "bad_request",
            Error::ChallengeUsed => "challenge_used",
            Error::MissingToken => "invalid_token",
            Error::SessionRevoked => "session_revoked",
            Error::SessionExpired => "session_expired",
            Error::InvalidSession => "invalid_session",
            Error::InvalidRefreshToken => "invalid_refresh_token",
            Error::RefreshTokenReused => "refresh_token_reused",
            Error::InvalidGrant => "invalid_grant",
            Error::InvalidScope => "invalid_scope",
            Error::ForbiddenOrigin => "forbidden_origin",
            Error::ForbiddenAudience => "forbidden_audience",
            Error::Forbidden(_) => "forbidden",
            Error::MfaRequired { .. } => "mfa_required",
            Error::KeyInOtherAccount => "key_in_other_account",
            Error::LastAccountKey => "last_account_key",
            Error::InvalidOtp => "invalid_otp",
            Error::OtpReused => "otp_reused",
            Error::NotFound => "not_found",
            Error::PayloadTooLarge => "payload_too_large",
            Error::MessageTooLarge => "message_too_large",
            Error::HandshakeTimeout => "handshake_timeout",
            Error::RateLimited { .. } => "rate_limited",
            Error::Unavailable => "unavailable",
            Error::BadGateway => "bad_gateway",
            Error::Internal => "internal_error",
            Error::Dpop { .. } => "invalid_dpop_proof",
            Error::UseDpopNonce { .. } => "use_dpop_nonce",
            Error::DpopBoundToken | Error::DpopUnboundToken => "invalid_token",
            Error::DpopRequired => "dpop_required",
            Error::DpopScheme(e) => e.code(),
            Error::Remote { code, .. } => code,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Error::Identity(_) | Error::BadRequest(_) => 400,
            Error::Challenge(ChallengeError::BadAudience | ChallengeError::Malformed) => 400,
            Error::Token(crate::token::TokenError::MfaPending) => 403,
            Error::Challenge(_)
            | Error::Token(_)
            | Error::ApiKey(_)
            | Error::ChallengeUsed
            | Error::MissingToken
            | Error::SessionRevoked
            | Error::SessionExpired
            | Error::InvalidRefreshToken
            | Error::RefreshTokenReused
            | Error::InvalidGrant
            | Error::DpopBoundToken
            | Error::DpopUnboundToken => 401,
            Error::Dpop { at_issue, .. } | Error::UseDpopNonce { at_issue, .. } => {
                if *at_issue {
                    400
                } else {
                    401
                }
            }
            Error::DpopRequired => 400,
            Error::DpopScheme(e) => e.status(),
            Error::InvalidScope
            | Error::InvalidSession
            | Error::ForbiddenOrigin
            | Error::ForbiddenAudience
            | Error::Forbidden(_)
            | Error::MfaRequired { .. }
            | Error::InvalidOtp
            | Error::OtpReused => 403,
            Error::KeyInOtherAccount | Error::LastAccountKey => 409,
            Error::NotFound => 404,
            Error::PayloadTooLarge | Error::MessageTooLarge => 413,
            Error::HandshakeTimeout => 408,
            Error::RateLimited { .. } => 429,
            Error::Unavailable => 503,
            Error::BadGateway => 502,
            Error::Internal => 500,
            Error::Remote { status, .. } => *status,
        }
    }

    /// The human message sent to clients.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// Fields added to the JSON error body beside `error` and `message`.
    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            Error::MfaRequired { methods } => Some(serde_json::json!({
                "missing": ["second_factor"],
                "methods": methods,
            })),
            Error::Token(crate::token::TokenError::MfaPending) => Some(serde_json::json!({
                "missing": ["second_factor"],
            })),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge for a 401, per RFC 6750.
    pub fn www_authenticate(&self) -> Option<String> {
        if matches!(
            self,
            Error::MfaRequired { .. } | Error::Token(crate::token::TokenError::MfaPending)
        ) {
            // RFC 9470's step-up challenge, on keygate's 403.
            return Some(
                r#"Bearer realm="keygate", error="insufficient_user_authentication", acr_values="aal2""#
                    .to_owned(),
            );
        }
        if let Some(e) = self.dpop_error() {
            return Some(format!(
                r#"DPoP realm="keygate", error="{e}", algs="{}""#,
                crate::dpop::ALGS
            ));
        }
        if self.status() != 401 {
            return None;
        }
        Some(match self {
            Error::ApiKey(_) => r#"KeygateApiSig realm="keygate""#.to_owned(),
            Error::MissingToken => r#"Bearer realm="keygate""#.to_owned(),
            e => format!(
                r#"Bearer realm="keygate", error="invalid_token", error_description="{}""#,
                e.code()
            ),
        })
    }

    /// The status that goes with a code, for errors that arrive without one (a
    /// WebSocket error frame from a remote Hub).
    /// The RFC 9449 error of a DPoP refusal, for a `WWW-Authenticate: DPoP`
    /// challenge (at a resource; a token endpoint answers it in the body).
    pub fn dpop_error(&self) -> Option<&'static str> {
        match self {
            Error::Dpop {
                at_issue: false, ..
            } => Some("invalid_dpop_proof"),
            Error::UseDpopNonce {
                at_issue: false, ..
            } => Some("use_dpop_nonce"),
            Error::DpopBoundToken | Error::DpopUnboundToken | Error::DpopScheme(_) => {
                Some("invalid_token")
            }
            _ => None,
        }
    }

    /// `self` as the answer to a request whose token came with the `DPoP` scheme
    /// when `dpop_scheme`: a refusal of the token itself (a `401` that is not
    /// already a DPoP refusal) becomes [`Error::DpopScheme`], so that its
    /// challenge is `DPoP`. Anything else is unchanged.
    pub fn under_scheme(self, dpop_scheme: bool) -> Self {
        let token_refused = self.status() == 401
            && self.dpop_error().is_none()
            && !matches!(
                self,
                Error::MissingToken | Error::ApiKey(_) | Error::Remote { .. }
            );
        if dpop_scheme && token_refused {
            Error::DpopScheme(Box::new(self))
        } else {
            self
        }
    }

    /// The nonce to send as `DPoP-Nonce`, when the answer asks for one.
    pub fn dpop_nonce(&self) -> Option<&str> {
        match self {
            Error::UseDpopNonce { nonce, .. } => Some(nonce),
            _ => None,
        }
    }

    pub fn status_for_code(code: &str) -> u16 {
        match code {
            "bad_request" | "invalid_identity" => 400,
            "invalid_challenge"
            | "challenge_expired"
            | "challenge_used"
            | "invalid_signature"
            | "invalid_api_key"
            | "invalid_token"
            | "token_expired"
            | "session_revoked"
            | "session_expired"
            | "invalid_refresh_token"
            | "refresh_token_reused"
            | "invalid_grant" => 401,
            // 400 at a token endpoint, 401 at a resource: a Provider relays the
            // Hub's status, so this is only a fallback.
            "invalid_dpop_proof" | "use_dpop_nonce" => 401,
            "dpop_required" => 400,
            "invalid_scope" | "invalid_session" | "forbidden_origin" | "forbidden_audience"
            | "forbidden" | "mfa_required" | "invalid_otp" | "otp_reused" => 403,
            "not_found" => 404,
            "key_in_other_account" | "last_account_key" => 409,
            "handshake_timeout" => 408,
            "payload_too_large" | "message_too_large" => 413,
            "rate_limited" => 429,
            "unavailable" => 503,
            _ => 502,
        }
    }

    /// Rebuilds an error from a code and message sent by a remote Hub, keeping the
    /// local variant where one exists.
    pub fn from_remote(status: u16, code: &str, message: &str) -> Self {
        Error::Remote {
            status: if (400..600).contains(&status) {
                status
            } else {
                502
            },
            code: code
                .chars()
                .filter(|c| c.is_ascii_lowercase() || *c == '_')
                .take(64)
                .collect(),
            message: message.chars().take(512).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        assert_eq!(
            Error::from(IdentityError::PrivateKey).code(),
            "invalid_identity"
        );
        assert_eq!(Error::from(IdentityError::PrivateKey).status(), 400);
        assert_eq!(
            Error::from(ChallengeError::Expired).code(),
            "challenge_expired"
        );
        assert_eq!(Error::from(ChallengeError::Expired).status(), 401);
        assert_eq!(
            Error::from(ChallengeError::BadSignature).code(),
            "invalid_signature"
        );
        assert_eq!(Error::from(ApiKeyError).status(), 401);
        assert_eq!(Error::RateLimited { retry_after: 3 }.status(), 429);
        assert!(
            Error::SessionRevoked
                .www_authenticate()
                .unwrap()
                .contains("invalid_token")
        );
        assert_eq!(Error::NotFound.www_authenticate(), None);
        // A token refused under the DPoP scheme keeps its code, status and
        // message, with a DPoP challenge; nothing else changes scheme.
        let expired = Error::from(TokenError::Expired);
        let under = expired.clone().under_scheme(true);
        assert_eq!(under, Error::DpopScheme(Box::new(expired.clone())));
        assert_eq!(
            (under.code(), under.status(), under.message()),
            (expired.code(), 401, expired.message())
        );
        assert_eq!(
            under.www_authenticate().unwrap(),
            r#"DPoP realm="keygate", error="invalid_token", algs="EdDSA Ed25519 ES256""#
        );
        assert_eq!(expired.clone().under_scheme(false), expired);
        for same in [
            Error::MissingToken,
            Error::NotFound,
            Error::DpopBoundToken,
            Error::from(ApiKeyError),
            Error::MfaRequired { methods: vec![] },
        ] {
            assert_eq!(same.clone().under_scheme(true), same);
        }
        let r = Error::from_remote(200, "Bad Code!", "m");
        assert_eq!((r.status(), r.code()), (502, "adode"));
    }

    /// A remote Hub's code keeps the status the local variant has, so a relayed
    /// error (split mode) answers like a local one.
    #[test]
    fn remote_codes_keep_their_local_status() {
        for e in [
            Error::InvalidGrant,
            Error::ForbiddenAudience,
            Error::InvalidSession,
            Error::ForbiddenOrigin,
            Error::InvalidScope,
            Error::SessionRevoked,
            Error::InvalidOtp,
            Error::from(ApiKeyError),
            Error::from(ChallengeError::Expired),
        ] {
            assert_eq!(Error::status_for_code(e.code()), e.status(), "{}", e.code());
        }
    }
}
