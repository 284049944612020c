//! keygate's wire types: the request and response bodies of the Hub and Provider
//! HTTP APIs and the WebSocket sign-in frames, as serde types and nothing else.
//! Every other keygate crate speaks through these; docs/protocol.md is their
//! specification.

use serde::{Deserialize, Serialize};

pub mod sig;

/// Largest WebSocket message or frame either side accepts (16 KiB).
pub const MAX_FRAME: usize = 16 * 1024;
/// WebSocket close code for a protocol or policy failure.
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for a message over [`MAX_FRAME`].
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The options of a token request, shared by every surface (WS frames, HTTP bodies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `"offline"` asks for a refresh token (requires `client_id`); `"online"` or
    /// absent does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Requested access-token lifetime in seconds, honoured up to the key's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<i64>,
    /// Renew this session of the same identity and app (signing a fresh challenge
    /// instead of presenting a refresh token) rather than start a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Bind the token to the identity's key (DPoP, docs/dpop.md). An app backend
    /// sets it once it has checked its user's proof; a Provider sets it for its
    /// users' sign-ins that bring one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dpop: bool,
}

/// The `dpop` member of a WebSocket frame: `true` in a `token` frame (bind the
/// token to the key), the proof itself in the `challenge` frame.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum DpopField {
    Flag(bool),
    Proof(String),
}

/// The token body of `POST /v1/token`, `POST /api/token` and `/v1/token/refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedToken {
    pub token: String,
    pub token_type: String,
    pub expires_at: String,
    pub expires_in: i64,
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The app requires a second factor: this token only works for the MFA step
    /// (docs/accounts.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mfa_required: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChallengeBody {
    pub challenge: String,
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    pub refresh_token: String,
    pub client_id: String,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    pub identity: String,
    pub session_id: String,
    pub aud: String,
    pub scope: String,
    pub client_id: Option<String>,
    pub expires_at: String,
}

/// One row of `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    pub session_id: String,
    pub identity: String,
    pub app: String,
    pub client_id: Option<String>,
    pub scope: String,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    pub user_agent: Option<String>,
    pub address: Option<String>,
    pub current: bool,
}

/// `POST /v1/broker/tokens` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerToken {
    pub token_id: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevocationEvent {
    pub seq: i64,
    pub session_id: String,
    pub revoked_at: i64,
    /// After this the session's tokens have expired anyway.
    pub expires_at: i64,
}

/// `GET /v1/revocations?since=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevocationFeed {
    pub revocations: Vec<RevocationEvent>,
    pub cursor: i64,
}

/// One row of `GET /v1/account/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountKeyView {
    pub identity: String,
    pub label: Option<String>,
    pub added_at: String,
    pub last_used_at: Option<String>,
    /// The key of the calling session.
    pub current: bool,
}

/// `GET /v1/account/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountView {
    pub account: String,
    pub keys: Vec<AccountKeyView>,
    /// Whether a TOTP secret is enrolled and confirmed.
    pub totp: bool,
}

/// One event of `GET /v1/account/events` (docs/audit.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    /// Increases with every event recorded: the cursor of the next page.
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `signin_succeeded`, `signin_failed`, `token_refreshed`, … (docs/audit.md).
    pub kind: String,
    /// The error code of a refusal (`invalid_signature` …); null on success.
    pub outcome: Option<String>,
    /// The app's API key id.
    pub app: Option<String>,
    /// The key the event concerns.
    pub identity: Option<String>,
    pub session_id: Option<String>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
    /// The kind's own field: who revoked, a logout's scope, a factor, a label.
    pub detail: Option<String>,
}

/// `GET /v1/account/events?before=&limit=`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvents {
    pub events: Vec<AccountEvent>,
    /// The `before` of the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

/// `POST /v1/account/link`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Linked {
    pub account: String,
    pub identity: String,
}

/// `POST /v1/mfa/totp`: the secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpEnrolment {
    /// Base32 (RFC 4648, no padding), for typing into an authenticator app.
    pub secret: String,
    pub otpauth_uri: String,
}

/// A frame from the client. Fields not used by a `type` are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientFrame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<String>,
    /// base64url, or a Node `Buffer` as JSON ([`crate::sig::WireSignature`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::sig::de_optional_signature"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::sig::WireSignature>))]
    pub sig: Option<String>,
    /// Hub only: the audience an API-key-authenticated app asks for (its origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// DPoP: `true` in a `token` frame, the proof in the `challenge` frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop: Option<DpopField>,
    #[serde(flatten)]
    pub options: TokenOptions,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Challenge {
        value: String,
        expires_at: String,
    },
    Token {
        value: String,
        token_type: String,
        expires_at: String,
        expires_in: i64,
        session_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
        /// The token only works for the MFA step (docs/accounts.md).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        mfa_required: bool,
    },
    Error {
        code: String,
        message: String,
        /// The message again: Textile's clients read an error frame's `value`.
        #[serde(default)]
        value: String,
    },
}

impl ServerFrame {
    pub fn token(t: IssuedToken) -> Self {
        ServerFrame::Token {
            value: t.token,
            token_type: t.token_type,
            expires_at: t.expires_at,
            expires_in: t.expires_in,
            session_id: t.session_id,
            refresh_token: t.refresh_token,
            mfa_required: t.mfa_required,
        }
    }

    /// The token body a token frame carries; `None` for any other frame.
    pub fn into_token(self) -> Option<IssuedToken> {
        match self {
            ServerFrame::Token {
                value,
                token_type,
                expires_at,
                expires_in,
                session_id,
                refresh_token,
                mfa_required,
            } => Some(IssuedToken {
                token: value,
                token_type,
                expires_at,
                expires_in,
                session_id,
                refresh_token,
                mfa_required,
            }),
            _ => None,
        }
    }
}

/// Longest request id of a multiplexed sign-in (`/v1/ws/mux`).
pub const MUX_ID_MAX: usize = 64;

/// Whether `id` may tag a sign-in on `/v1/ws/mux`: 1 to [`MUX_ID_MAX`] visible
/// ASCII characters (`!` to `~`).
pub fn valid_mux_id(id: &str) -> bool {
    (1..=MUX_ID_MAX).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A frame to `/v1/ws/mux`: a [`ClientFrame`] tagged with the request id of its
/// sign-in.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MuxClientFrame {
    pub id: String,
    #[serde(flatten)]
    pub frame: ClientFrame,
}

/// A frame from `/v1/ws/mux`: a [`ServerFrame`] tagged with the request id it
/// answers; without one for an error about a frame that had no valid id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MuxServerFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub frame: ServerFrame,
}

#[cfg(test)]
mod mux_tests {
    use super::*;

    #[test]
    fn mux_ids_are_short_visible_ascii() {
        for ok in ["1", "a-b_c.d", "~!", &"x".repeat(MUX_ID_MAX)] {
            assert!(valid_mux_id(ok), "{ok}");
        }
        for bad in ["", " ", "a b", "é", "a\n", &"x".repeat(MUX_ID_MAX + 1)] {
            assert!(!valid_mux_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn mux_frames_are_sign_in_frames_with_an_id() {
        let f = MuxClientFrame {
            id: "7".into(),
            frame: ClientFrame {
                kind: "token".into(),
                pubkey: Some("bbaa".into()),
                ..Default::default()
            },
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"id": "7", "type": "token", "pubkey": "bbaa"})
        );
        let s: MuxServerFrame = serde_json::from_value(serde_json::json!(
            {"id": "7", "type": "challenge", "value": "v", "expires_at": "t"}
        ))
        .unwrap();
        assert_eq!(s.id.as_deref(), Some("7"));
        assert_eq!(
            s.frame,
            ServerFrame::Challenge {
                value: "v".into(),
                expires_at: "t".into()
            }
        );
        let e = MuxServerFrame {
            id: None,
            frame: ServerFrame::Error {
                code: "bad_request".into(),
                message: "m".into(),
                value: "m".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type": "error", "code": "bad_request", "message": "m", "value": "m"})
        );
    }
}
