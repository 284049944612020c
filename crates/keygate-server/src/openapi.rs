//! The OpenAPI 3.1 description of every HTTP endpoint keygate answers: the
//! Hub's API-key, user, account and OpenID Provider routes, the Provider's
//! sign-in routes and the health probes (docs/openapi.md). Built with utoipa's
//! builders from the wire types (`ToSchema` on keygate-proto's types, behind its
//! `openapi` feature, and on the request types of the handlers), so a field
//! added to a type shows in the document. The routes themselves are declared in
//! `hub/routes`, `hub/oidc/routes.rs` and `provider`; this module only says what
//! they take and answer, one [`Op`] per method and path. Served at
//! `GET /openapi.json`, checked in as docs/openapi.json (`keygate openapi`).

use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder, ParameterBuilder};
use utoipa::openapi::path::{ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required,
    ResponseBuilder, Tag,
};
use utoipa::{IntoParams, ToSchema};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::apikey::{HEADER_KEY, HEADER_MSG, HEADER_SIG};
use crate::hub::oidc::routes as oidc;
use crate::hub::routes::{accounts, handlers};
use crate::provider;
use keygate_proto::{
    AccountView, BrokerToken, ChallengeBody, IssuedToken, Linked, RefreshRequest, RevocationFeed,
    SessionView, TotpEnrolment, WhoAmI,
};

/// The path the document is served at.
pub const PATH: &str = "/openapi.json";

/// `{"error","message"}`: every keygate error answer (docs/protocol.md). Some
/// errors add fields (e.g. `mfa_required` names the factors).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Error {
    /// The error code, e.g. `invalid_signature`.
    error: String,
    /// A description that never quotes the request.
    message: String,
}

/// `{"error","error_description"}`: the OAuth 2.0 error answer of the
/// `/oauth/*` endpoints (RFC 6749 §5.2).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct OAuthError {
    error: String,
    error_description: String,
}

/// `GET /v1/sessions`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct SessionList {
    sessions: Vec<SessionView>,
}

/// `DELETE /v1/account/keys/{identity}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct KeyRemoved {
    removed: String,
    /// Sessions of that key ended.
    revoked: i64,
}

/// `POST /v1/logout`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct LoggedOut {
    /// Sessions ended.
    revoked: i64,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
struct Health {
    #[schema(value_type = String, pattern = "^(ok|draining|unavailable)$")]
    status: String,
}

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// An app backend: the API-key signature headers.
    ApiKey,
    /// A user: an access token (`Bearer`, or `DPoP` with its proof); the
    /// refresh endpoint takes the refresh token in its body instead.
    User,
    /// An OAuth client: `client_secret_basic`, `client_secret_post` or `none`.
    Client,
}

/// The methods keygate's routes take.
#[derive(Clone, Copy, PartialEq)]
enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    fn http(self) -> HttpMethod {
        match self {
            Method::Get => HttpMethod::Get,
            Method::Post => HttpMethod::Post,
            Method::Delete => HttpMethod::Delete,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Delete => "delete",
        }
    }
}

/// One operation: a method on a path, what it takes and what it answers.
struct Op {
    method: Method,
    path: &'static str,
    op: OperationBuilder,
}

fn json_content(schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn schema_ref<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// Any JSON value.
fn any() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::AnyValue)
}

/// An object with free-form members, `required` among them.
fn object(required: &[&str], description: &str) -> RefOr<Schema> {
    let mut o = ObjectBuilder::new().description(Some(description));
    for name in required {
        o = o.property(*name, any()).required(*name);
    }
    o.into()
}

impl Op {
    fn new(method: Method, path: &'static str, tag: &str, summary: &str) -> Self {
        let id = format!(
            "{}{}",
            method.name(),
            path.replace(['/', '.', '-', '{', '}'], "_")
        );
        Op {
            method,
            path,
            op: OperationBuilder::new()
                .tag(tag)
                .summary(Some(summary))
                .operation_id(Some(id)),
        }
    }

    fn auth(mut self, auth: Auth) -> Self {
        self.op = match auth {
            Auth::ApiKey => self.op.security(
                SecurityRequirement::new("apiKey", [""; 0])
                    .add("apiKeySigMsg", [""; 0])
                    .add("apiKeySig", [""; 0]),
            ),
            Auth::User => self
                .op
                .security(SecurityRequirement::new("bearer", [""; 0]))
                .security(SecurityRequirement::new("dpop", [""; 0]).add("dpopProof", [""; 0])),
            Auth::Client => self
                .op
                .security(SecurityRequirement::new("clientBasic", [""; 0]))
                .security(SecurityRequirement::default()),
        };
        self
    }

    /// A JSON request body of type `T`.
    fn body<T: ToSchema>(self, doc: &mut Doc) -> Self {
        self.json_body::<T>(doc, Required::True)
    }

    /// A JSON request body of type `T` that may be left out.
    fn optional_body<T: ToSchema>(self, doc: &mut Doc) -> Self {
        self.json_body::<T>(doc, Required::False)
    }

    fn json_body<T: ToSchema>(mut self, doc: &mut Doc, required: Required) -> Self {
        doc.add::<T>();
        self.op = self.op.request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json_content(schema_ref::<T>()))
                .required(Some(required))
                .build(),
        ));
        self
    }

    /// A form body (`application/x-www-form-urlencoded`) of the named string
    /// parameters, `required` first; without required ones the body may be left out.
    fn form(mut self, required: &[&str], optional: &[&str]) -> Self {
        let mut o = ObjectBuilder::new();
        for name in required {
            o = o.property(*name, string()).required(*name);
        }
        for name in optional {
            o = o.property(*name, string());
        }
        self.op = self.op.request_body(Some(
            RequestBodyBuilder::new()
                .content("application/x-www-form-urlencoded", json_content(o))
                .required(Some(if required.is_empty() {
                    Required::False
                } else {
                    Required::True
                }))
                .build(),
        ));
        self
    }

    fn params<T: IntoParams>(mut self) -> Self {
        self = self.long_uri();
        for p in T::into_params(|| Some(ParameterIn::Query)) {
            self.op = self.op.parameter(p);
        }
        self
    }

    fn param(mut self, name: &str, at: ParameterIn, required: bool, description: &str) -> Self {
        if at == ParameterIn::Query {
            self = self.long_uri();
        }
        self.op = self.op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(at)
                .required(if required {
                    Required::True
                } else {
                    Required::False
                })
                .description(Some(description))
                .schema(Some(string())),
        );
        self
    }

    /// A `200` JSON answer of type `T`.
    fn ok<T: ToSchema>(self, doc: &mut Doc, description: &str) -> Self {
        doc.add::<T>();
        self.answer("200", description, "application/json", schema_ref::<T>())
    }

    fn answer(
        mut self,
        status: &str,
        description: &str,
        content_type: &str,
        schema: impl Into<RefOr<Schema>>,
    ) -> Self {
        self.op = self.op.response(
            status,
            ResponseBuilder::new()
                .description(description)
                .content(content_type, json_content(schema)),
        );
        self
    }

    /// The listener's `414` (no body) for a request line over its limit.
    fn long_uri(self) -> Self {
        self.empty(
            "414",
            "Request line too long (answered by the listener, no body)",
        )
    }

    fn empty(mut self, status: &str, description: &str) -> Self {
        self.op = self
            .op
            .response(status, ResponseBuilder::new().description(description));
        self
    }

    /// keygate's `{"error","message"}` answers with these statuses.
    fn errors(self, statuses: &[u16]) -> Self {
        self.error_answers::<Error>(statuses)
    }

    /// The OAuth `{"error","error_description"}` answers with these statuses.
    fn oauth_errors(self, statuses: &[u16]) -> Self {
        self.error_answers::<OAuthError>(statuses)
    }

    fn error_answers<T: ToSchema>(mut self, statuses: &[u16]) -> Self {
        for s in statuses {
            let description = error_description(*s);
            self = self.answer(
                &s.to_string(),
                description,
                "application/json",
                schema_ref::<T>(),
            );
        }
        self
    }

    fn html(self, status: &str, description: &str) -> Self {
        self.answer(status, description, "text/html", string())
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Malformed request (names the field, never quotes it)",
        401 => "Missing or invalid credential, signature or challenge",
        403 => "Not allowed (scope, origin, audience, second factor)",
        404 => "Not found",
        409 => "Conflicts with the account's keys",
        413 => "Body over 16 KiB",
        429 => "Rate limited; see Retry-After",
        503 => "The store is unavailable",
        _ => "Error",
    }
}

/// The document being built: its operations and the schemas they name.
struct Doc {
    paths: Paths,
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl Doc {
    fn add<T: ToSchema>(&mut self) {
        let name = T::name().into_owned();
        if !self.schemas.iter().any(|(n, _)| *n == name) {
            self.schemas.push((name, T::schema()));
            let mut nested = Vec::new();
            T::schemas(&mut nested);
            for (n, s) in nested {
                if !self.schemas.iter().any(|(m, _)| *m == n) {
                    self.schemas.push((n, s));
                }
            }
        }
    }

    fn push(&mut self, op: Op) {
        let operation: Operation = op.op.build();
        self.paths
            .add_path_operation(op.path, vec![op.method.http()], operation);
    }
}

/// Statuses of an API-key endpoint with a JSON body.
const API_KEY_ERRORS: &[u16] = &[400, 401, 403, 413, 429, 503];
/// Statuses of a user endpoint (access token, DPoP).
const USER_ERRORS: &[u16] = &[400, 401, 403, 429, 503];

/// The whole document.
pub fn document() -> OpenApi {
    use Method::{Delete, Get, Post};
    let mut d = Doc {
        paths: Paths::new(),
        schemas: Vec::new(),
    };
    d.add::<Error>();
    d.add::<OAuthError>();

    // The Hub's API-key endpoints (app backends).
    let op = Op::new(
        Get,
        "/.well-known/jwks.json",
        "hub",
        "The Hub's signing keys (JWKS)",
    )
    .answer(
        "200",
        "JWKS",
        "application/json",
        object(&["keys"], "RFC 7517 key set"),
    );
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/challenge",
        "hub",
        "A challenge for an identity to sign",
    )
    .auth(Auth::ApiKey)
    .body::<handlers::ChallengeRequest>(&mut d)
    .ok::<ChallengeBody>(&mut d, "The challenge")
    .errors(API_KEY_ERRORS);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/token",
        "hub",
        "Redeem a signed challenge for a token",
    )
    .auth(Auth::ApiKey)
    .body::<handlers::TokenRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "The token")
    .errors(API_KEY_ERRORS);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/dev/token",
        "hub",
        "A token without a signature (development keys only)",
    )
    .auth(Auth::ApiKey)
    .body::<handlers::DevTokenRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "The token")
    .errors(API_KEY_ERRORS);
    d.push(op);
    let op = Op::new(
        Get,
        "/v1/ws/token",
        "hub",
        "WebSocket sign-in for an app backend (upgrade)",
    )
    .auth(Auth::ApiKey)
    .empty(
        "101",
        "Switching to the WebSocket sign-in (ClientFrame / ServerFrame)",
    )
    .errors(&[400, 401, 429, 503]);
    d.add::<keygate_proto::ClientFrame>();
    d.add::<keygate_proto::ServerFrame>();
    d.push(op);
    let op = Op::new(
        Get,
        "/v1/ws/mux",
        "hub",
        "Many WebSocket sign-ins over one long-lived socket (upgrade)",
    )
    .auth(Auth::ApiKey)
    .empty(
        "101",
        "Switching to the multiplexed sign-in: the frames of /v1/ws/token with a request `id`",
    )
    .errors(&[400, 401, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/introspect",
        "hub",
        "Token introspection (RFC 7662), JSON or form body",
    )
    .auth(Auth::ApiKey)
    .body::<handlers::IntrospectRequest>(&mut d)
    .answer(
        "200",
        "`active`, and the claims of an active token",
        "application/json",
        object(&["active"], "RFC 7662 introspection answer"),
    )
    .errors(API_KEY_ERRORS);
    d.push(op);
    let op = Op::new(
        Get,
        "/v1/revocations",
        "hub",
        "Revoked sessions after a cursor",
    )
    .params::<handlers::FeedQuery>()
    .ok::<RevocationFeed>(&mut d, "Revocations and the next cursor")
    .errors(&[400, 503]);
    d.push(op);
    let op = Op::new(
        Get,
        "/v1/revocations/ws",
        "hub",
        "The revocation feed, pushed (upgrade)",
    )
    .params::<handlers::FeedQuery>()
    .empty(
        "101",
        "Switching to the feed: `{\"type\":\"revocation\",…}` text frames",
    )
    .errors(&[400]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/broker/tokens",
        "hub",
        "A one-time token a user exchanges for a session",
    )
    .auth(Auth::ApiKey)
    .body::<handlers::BrokerRequest>(&mut d)
    .ok::<BrokerToken>(&mut d, "The brokered token")
    .errors(API_KEY_ERRORS);
    d.push(op);

    // User endpoints (the Hub, and the Provider on its own origin).
    let op = Op::new(
        Get,
        "/v1/whoami",
        "user",
        "The calling token's identity and session",
    )
    .auth(Auth::User)
    .ok::<WhoAmI>(&mut d, "The token's claims")
    .errors(USER_ERRORS);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/token/refresh",
        "user",
        "A fresh token for a refresh token (rotated)",
    )
    .body::<RefreshRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "The token and the next refresh token")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/session-tokens",
        "user",
        "Exchange a brokered token for a session",
    )
    .body::<handlers::ExchangeRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "The token")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(Get, "/v1/sessions", "user", "The caller's live sessions")
        .auth(Auth::User)
        .ok::<SessionList>(&mut d, "The sessions")
        .errors(USER_ERRORS);
    d.push(op);
    let op = Op::new(
        Delete,
        "/v1/sessions/{session_id}",
        "user",
        "End one of the caller's sessions",
    )
    .auth(Auth::User)
    .param("session_id", ParameterIn::Path, true, "The session")
    .empty("204", "Ended")
    .errors(&[400, 401, 403, 404, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/logout",
        "user",
        "End this session (`local`) or all of them (`global`)",
    )
    .auth(Auth::User)
    .optional_body::<handlers::LogoutRequest>(&mut d)
    .ok::<LoggedOut>(&mut d, "Sessions ended")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);

    // Accounts and second factors (docs/accounts.md).
    let op = Op::new(
        Get,
        "/v1/account/keys",
        "account",
        "The caller's account and its keys",
    )
    .auth(Auth::User)
    .ok::<AccountView>(&mut d, "The account")
    .errors(USER_ERRORS);
    d.push(op);
    let op = Op::new(
        Delete,
        "/v1/account/keys/{identity}",
        "account",
        "Remove a key from the account",
    )
    .auth(Auth::User)
    .param("identity", ParameterIn::Path, true, "The key's identity")
    .ok::<KeyRemoved>(&mut d, "Removed; its sessions ended")
    .errors(&[400, 401, 403, 404, 409, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/account/link/challenge",
        "account",
        "A challenge both keys sign to link a new key",
    )
    .auth(Auth::User)
    .body::<accounts::KeyRequest>(&mut d)
    .ok::<ChallengeBody>(&mut d, "The challenge")
    .errors(&[400, 401, 403, 409, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/account/link",
        "account",
        "Link the new key (both signatures)",
    )
    .body::<accounts::LinkRequest>(&mut d)
    .ok::<Linked>(&mut d, "Linked")
    .errors(&[400, 401, 403, 409, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/account/recover/challenge",
        "account",
        "A challenge the account's recovery key and the caller's key sign",
    )
    .auth(Auth::User)
    .body::<accounts::KeyRequest>(&mut d)
    .ok::<ChallengeBody>(&mut d, "The challenge")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/account/recover",
        "account",
        "Join the account with its recovery key (both signatures); other sessions end",
    )
    .auth(Auth::User)
    .body::<accounts::RecoverRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "The caller's session, raised, in the account")
    .errors(&[400, 401, 403, 409, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/mfa/challenge",
        "account",
        "A challenge for another key of the account",
    )
    .auth(Auth::User)
    .body::<accounts::KeyRequest>(&mut d)
    .ok::<ChallengeBody>(&mut d, "The challenge")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/mfa/key",
        "account",
        "Second factor: another key's signature",
    )
    .auth(Auth::User)
    .body::<accounts::SignedRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "A full token")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/mfa/totp",
        "account",
        "Enrol a TOTP secret (shown once)",
    )
    .auth(Auth::User)
    .ok::<TotpEnrolment>(&mut d, "The secret")
    .errors(USER_ERRORS);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/mfa/totp/verify",
        "account",
        "Second factor: a TOTP code",
    )
    .auth(Auth::User)
    .body::<accounts::CodeRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "A full token")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/v1/qr",
        "account",
        "A QR code (SVG) of a text, for a signed-in user",
    )
    .auth(Auth::User)
    .body::<accounts::QrRequest>(&mut d)
    .answer("200", "The QR code", "image/svg+xml", string())
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);

    // The OpenID Provider (docs/oidc.md).
    let metadata = object(&["issuer"], "OpenID Provider / RFC 8414 metadata");
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let op = Op::new(Get, path, "oidc", "Provider metadata").answer(
            "200",
            "Metadata",
            "application/json",
            metadata.clone(),
        );
        d.push(op);
    }
    let op = Op::new(
        Get,
        "/oauth/jwks",
        "oidc",
        "The provider's keys (Ed25519, RSA, P-256)",
    )
    .answer(
        "200",
        "JWKS",
        "application/json",
        object(&["keys"], "RFC 7517 key set"),
    )
    .errors(&[503]);
    d.push(op);
    for method in [Get, Post] {
        let op = Op::new(
            method,
            "/oauth/authorize",
            "oidc",
            "Authorization endpoint: the sign-in page",
        )
        .html("200", "The sign-in page")
        .empty("302", "Back to the client with a code or an error")
        .html("400", "The request cannot be trusted to redirect")
        .html("503", "The store is unavailable");
        let op = if method == Get {
            op.param("client_id", ParameterIn::Query, false, "The client")
                .param(
                    "redirect_uri",
                    ParameterIn::Query,
                    false,
                    "Registered redirect URI",
                )
                .param("response_type", ParameterIn::Query, false, "`code`")
                .param("scope", ParameterIn::Query, false, "Space-separated scopes")
                .param("state", ParameterIn::Query, false, "Opaque client state")
                .param(
                    "code_challenge",
                    ParameterIn::Query,
                    false,
                    "PKCE S256 challenge",
                )
        } else {
            op.form(
                &[],
                &[
                    "client_id",
                    "redirect_uri",
                    "response_type",
                    "scope",
                    "state",
                    "code_challenge",
                ],
            )
        };
        d.push(op);
    }
    let op = Op::new(
        Post,
        "/oauth/authorize/challenge",
        "oidc",
        "The sign-in page's challenge",
    )
    .body::<oidc::ChallengeRequest>(&mut d)
    .answer(
        "200",
        "The challenge",
        "application/json",
        ObjectBuilder::new()
            .property("challenge", string())
            .required("challenge"),
    )
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/oauth/authorize/signin",
        "oidc",
        "The sign-in page's signed challenge",
    )
    .body::<oidc::SignInRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "A token for the page's next step")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/oauth/authorize/finish",
        "oidc",
        "Consent, then the redirect to the client",
    )
    .auth(Auth::User)
    .body::<oidc::FinishRequest>(&mut d)
    .ok::<crate::hub::oidc::Finish>(&mut d, "Ask for consent, or where to go")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/oauth/token",
        "oidc",
        "Token endpoint (code, refresh, device grants)",
    )
    .auth(Auth::Client)
    .form(
        &["grant_type"],
        &[
            "code",
            "redirect_uri",
            "code_verifier",
            "refresh_token",
            "device_code",
            "client_id",
            "client_secret",
            "scope",
        ],
    )
    .ok::<crate::hub::oidc::TokenResponse>(&mut d, "Tokens")
    .oauth_errors(&[400, 401, 429, 503]);
    d.push(op);
    for method in [Get, Post] {
        let op = Op::new(method, "/oauth/userinfo", "oidc", "The user's claims")
            .auth(Auth::User)
            .answer(
                "200",
                "Claims",
                "application/json",
                object(&["sub"], "OIDC UserInfo"),
            )
            .oauth_errors(&[400, 401, 403, 429, 503]);
        d.push(op);
    }
    let op = Op::new(Post, "/oauth/revoke", "oidc", "Revoke a token (RFC 7009)")
        .auth(Auth::Client)
        .form(
            &["token"],
            &["token_type_hint", "client_id", "client_secret"],
        )
        .empty("200", "Revoked (or unknown)")
        .oauth_errors(&[400, 401, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/oauth/introspect",
        "oidc",
        "Introspect a token (RFC 7662)",
    )
    .auth(Auth::Client)
    .form(
        &["token"],
        &["token_type_hint", "client_id", "client_secret"],
    )
    .answer(
        "200",
        "`active`, and the claims of an active token",
        "application/json",
        object(&["active"], "RFC 7662 introspection answer"),
    )
    .oauth_errors(&[400, 401, 429, 503]);
    d.push(op);
    for method in [Get, Post] {
        let op = Op::new(method, "/oauth/logout", "oidc", "RP-initiated logout")
            .html("200", "Signed out")
            .empty("302", "Back to the client")
            .html("400", "Refused");
        let op = if method == Get {
            op.param("id_token_hint", ParameterIn::Query, false, "The ID token")
                .param(
                    "post_logout_redirect_uri",
                    ParameterIn::Query,
                    false,
                    "Where to go next",
                )
                .param("client_id", ParameterIn::Query, false, "The client")
                .param("state", ParameterIn::Query, false, "Opaque client state")
        } else {
            op.form(
                &[],
                &[
                    "id_token_hint",
                    "post_logout_redirect_uri",
                    "client_id",
                    "state",
                ],
            )
        };
        d.push(op);
    }
    let op = Op::new(
        Post,
        "/oauth/device_authorization",
        "oidc",
        "Device authorization (RFC 8628)",
    )
    .auth(Auth::Client)
    .form(&[], &["client_id", "client_secret", "scope"])
    .answer(
        "200",
        "The device and user codes",
        "application/json",
        object(
            &[
                "device_code",
                "user_code",
                "verification_uri",
                "expires_in",
                "interval",
            ],
            "RFC 8628 §3.2",
        ),
    )
    .oauth_errors(&[400, 401, 429, 503]);
    d.push(op);
    let op =
        Op::new(Get, "/oauth/device", "oidc", "The device-approval page").html("200", "The page");
    d.push(op);
    let op = Op::new(
        Post,
        "/oauth/device/challenge",
        "oidc",
        "The device page's challenge for a user code",
    )
    .body::<oidc::DeviceChallengeRequest>(&mut d)
    .answer(
        "200",
        "The challenge, the client and the scope",
        "application/json",
        object(&["challenge", "client", "scope"], "What the code asks for"),
    )
    .errors(&[400, 401, 403, 404, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/oauth/device/approve",
        "oidc",
        "Approve or deny a user code (signed)",
    )
    .body::<oidc::DeviceDecision>(&mut d)
    .answer(
        "200",
        "Whether the device was approved",
        "application/json",
        object(&["approved"], "The decision"),
    )
    .errors(&[400, 401, 403, 404, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Get,
        "/oauth/assets/{name}",
        "oidc",
        "The pages' scripts and style sheet",
    )
    .param("name", ParameterIn::Path, true, "e.g. page.js")
    .answer("200", "JavaScript", "text/javascript", string())
    .errors(&[404]);
    d.push(op);

    // The Provider.
    let op = Op::new(
        Get,
        "/api/token",
        "provider",
        "A challenge for a user's identity (HTTP sign-in)",
    )
    .params::<provider::ChallengeQuery>()
    .param(
        "origin",
        ParameterIn::Header,
        false,
        "The page's origin: the token's audience",
    )
    .ok::<ChallengeBody>(&mut d, "The challenge")
    .errors(&[400, 401, 403, 429, 503]);
    d.push(op);
    let op = Op::new(
        Post,
        "/api/token",
        "provider",
        "Redeem the signed challenge for a token",
    )
    .param(
        "origin",
        ParameterIn::Header,
        false,
        "The page's origin: the token's audience",
    )
    .param(
        "dpop",
        ParameterIn::Header,
        false,
        "A DPoP proof by the identity's key: a key-bound token",
    )
    .body::<provider::TokenRequest>(&mut d)
    .ok::<IssuedToken>(&mut d, "The token")
    .errors(&[400, 401, 403, 413, 429, 503]);
    d.push(op);
    let op = Op::new(
        Get,
        "/ws/userauth",
        "provider",
        "WebSocket sign-in for a user (upgrade)",
    )
    .param(
        "origin",
        ParameterIn::Header,
        false,
        "The page's origin: the token's audience",
    )
    .empty(
        "101",
        "Switching to the WebSocket sign-in (ClientFrame / ServerFrame)",
    )
    .errors(&[400, 403, 429]);
    d.push(op);

    // Health and this document.
    d.add::<Health>();
    for (path, summary) in [
        ("/healthz", "Liveness: the process answers"),
        (
            "/readyz",
            "Readiness: store reachable, signing keys loaded, not draining",
        ),
    ] {
        let op = Op::new(Get, path, "health", summary)
            .answer(
                "200",
                "`{\"status\":\"ok\"}`",
                "application/json",
                schema_ref::<Health>(),
            )
            .answer(
                "503",
                "`{\"status\":\"draining\"}` or `{\"status\":\"unavailable\"}`",
                "application/json",
                schema_ref::<Health>(),
            );
        d.push(op);
    }
    let op = Op::new(Get, PATH, "health", "This OpenAPI document").answer(
        "200",
        "OpenAPI 3.1",
        "application/json",
        ObjectBuilder::new()
            .property("openapi", string())
            .required("openapi"),
    );
    d.push(op);

    let components = ComponentsBuilder::new()
        .schemas_from_iter(d.schemas)
        .security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                HEADER_KEY,
                "The API key's id",
            ))),
        )
        .security_scheme(
            "apiKeySigMsg",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                HEADER_MSG,
                "The signature's expiry, RFC 3339, at most an hour ahead",
            ))),
        )
        .security_scheme(
            "apiKeySig",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                HEADER_SIG,
                "HMAC-SHA256 of the expiry under the API secret, multibase base32 lower",
            ))),
        )
        .security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        )
        .security_scheme(
            "dpop",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`DPoP <token>`: a key-bound access token (RFC 9449, docs/dpop.md)",
            ))),
        )
        .security_scheme(
            "dpopProof",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "DPoP",
                "The DPoP proof for this request, made by the token's key",
            ))),
        )
        .security_scheme(
            "clientBasic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        )
        .build();
    let tags = [
        (
            "hub",
            "The Hub's endpoints for app backends (API-key signed)",
        ),
        (
            "user",
            "A signed-in user's token and sessions (Hub and Provider)",
        ),
        ("account", "Accounts of several keys and second factors"),
        ("oidc", "The OpenID Provider"),
        ("provider", "The Provider's sign-in for users of one app"),
        ("health", "Probes and this document"),
    ]
    .map(|(name, description)| {
        let mut t = Tag::new(name);
        t.description = Some(description.into());
        t
    });
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("keygate")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Identity tokens for users who hold their own Ed25519 keys. \
                     Errors are `{\"error\",\"message\"}` (OAuth endpoints: \
                     `{\"error\",\"error_description\"}`); a method a path does not \
                     take is 405, an unknown path 404.",
                ))
                .build(),
        )
        .paths(d.paths)
        .components(Some(components))
        .tags(Some(tags))
        .build()
}

/// The document as the pretty JSON of docs/openapi.json (with a final newline).
pub fn json() -> String {
    let mut s = document()
        .to_pretty_json()
        .expect("the document serializes");
    s.push('\n');
    s
}

/// The methods the document names for the request path `path`, as the value of
/// the `Allow` header a `405` carries (RFC 9110 §15.5.6); `None` for a path it
/// does not describe.
pub fn allow(path: &str) -> Option<&'static str> {
    static TABLE: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        document()
            .paths
            .paths
            .into_iter()
            .map(|(template, item)| {
                let methods = [
                    ("GET", &item.get),
                    ("POST", &item.post),
                    ("DELETE", &item.delete),
                ]
                .into_iter()
                .filter(|(_, op)| op.is_some())
                .map(|(m, _)| m)
                .collect::<Vec<_>>();
                (template, methods.join(", "))
            })
            .collect()
    });
    let matches = |template: &str| {
        let (mut t, mut p) = (template.split('/'), path.split('/'));
        loop {
            match (t.next(), p.next()) {
                (None, None) => return true,
                (Some(t), Some(p)) if t.starts_with('{') && !p.is_empty() => {}
                (Some(t), Some(p)) if t == p => {}
                _ => return false,
            }
        }
    };
    table
        .iter()
        .find(|(template, _)| matches(template))
        .map(|(_, methods)| methods.as_str())
}

/// `GET /openapi.json`.
pub fn route() -> BoxedFilter<(Response,)> {
    let body: &'static str = Box::leak(json().into_boxed_str());
    warp::path!("openapi.json")
        .and(warp::get())
        .map(move || {
            let mut res = Response::new(body.into());
            res.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/json"),
            );
            *res.status_mut() = StatusCode::OK;
            res
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    /// docs/openapi.json is what the code generates: regenerate it with
    /// `cargo run -p keygate -- openapi > docs/openapi.json`.
    #[test]
    fn checked_in_document_is_current() {
        let checked_in = include_str!("../../../docs/openapi.json");
        assert!(
            super::json() == checked_in,
            "docs/openapi.json is stale: run `cargo run -p keygate -- openapi > docs/openapi.json`"
        );
    }

    #[test]
    fn allow_names_the_methods_of_a_path() {
        assert_eq!(super::allow("/v1/whoami"), Some("GET"));
        assert_eq!(super::allow("/oauth/userinfo"), Some("GET, POST"));
        assert_eq!(super::allow("/v1/sessions/abc"), Some("DELETE"));
        assert_eq!(super::allow("/v1/sessions/"), None);
        assert_eq!(super::allow("/v1/sessions/a/b"), None);
        assert_eq!(super::allow("/nowhere"), None);
    }

    #[test]
    fn every_operation_names_its_answers() {
        let doc = super::document();
        let mut n = 0;
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.delete].into_iter().flatten() {
                n += 1;
                assert!(!op.responses.responses.is_empty(), "{path}");
            }
        }
        assert!(n > 40, "{n} operations");
    }
}
