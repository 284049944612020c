//! The gateway's configuration file (`gateway.toml`): parsed strictly (unknown keys
//! are errors) and checked once, so that every mistake stops start-up with a message
//! that names the line it is on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// Start of the path under which public routes answer: `/public/<key id>/<name>/…`.
pub const PUBLIC_PREFIX: &str = "/public/";

/// A configuration mistake, with the line it is on when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the configuration was read from one.
    pub file: Option<String>,
    /// 1-based line number.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}, line {line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    hub: Option<Spanned<String>>,
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    signing_key: Option<Spanned<String>>,
    assertion_issuer: Option<String>,
    assertion_ttl: Option<Spanned<i64>>,
    upstream_timeout: Option<Spanned<u64>>,
    max_sessions: Option<Spanned<usize>>,
    token_cache: Option<Spanned<usize>>,
    #[serde(default)]
    accept_dev_tokens: bool,
    public_origin: Option<Spanned<String>>,
    dpop_replay_cache: Option<Spanned<usize>>,
    #[serde(default)]
    dpop_nonce: bool,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    prefix: Option<Spanned<String>>,
    upstream: Spanned<String>,
    #[serde(default)]
    strip_prefix: bool,
    #[serde(default)]
    forward_token: bool,
    #[serde(default)]
    public: bool,
    key_id: Option<Spanned<String>>,
    #[serde(default)]
    exports: Vec<Spanned<String>>,
    public_origin: Option<Spanned<String>>,
}

/// A checked gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The Hub's base URL (`http://host:port`): JWKS and revocation feed. Required
    /// by `keygate gateway`; a gateway run by `keygate serve` uses that Hub instead.
    pub hub: Option<String>,
    /// The `iss` the Hub puts in its tokens (given, or derived from `hub`); a
    /// gateway run by `keygate serve` uses that Hub's.
    pub issuer: Option<String>,
    /// Accept only tokens for these apps (API key ids), when given.
    pub audiences: Option<Vec<String>>,
    /// PKCS#8 PEM file of the gateway's Ed25519 key; a fresh key per start if absent.
    pub signing_key: Option<PathBuf>,
    pub assertion_issuer: String,
    /// Seconds an assertion stays valid.
    pub assertion_ttl: i64,
    /// Seconds to wait for an upstream's response headers.
    pub upstream_timeout: u64,
    /// Sessions whose exported values are kept (least recently used ones go first).
    pub max_sessions: usize,
    /// Verified tokens kept to skip signature checks.
    pub token_cache: usize,
    /// Accept tokens minted by development keys (`acr` `dev`, docs/dev-mode.md);
    /// off unless the file says `accept_dev_tokens = true`.
    pub accept_dev_tokens: bool,
    /// The origin clients send requests to (`https://api.example`), which their
    /// DPoP proofs name; by default the request's `Host` on the listener's scheme.
    pub public_origin: Option<String>,
    /// Entries of the DPoP replay cache.
    pub dpop_replay_cache: usize,
    /// Ask DPoP clients for server nonces (`DPoP-Nonce`).
    pub dpop_nonce: bool,
    pub routes: Vec<Route>,
}

/// One route: requests whose path is `prefix` or under `prefix/` go to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's name: the `aud` of its assertions, and for a public route the
    /// `<service>` part of its path.
    pub name: String,
    /// Without trailing slash (except for `/` itself).
    pub prefix: String,
    /// `http://host:port`.
    pub upstream_authority: String,
    /// The upstream URL's path, without trailing slash (may be empty).
    pub upstream_base: String,
    /// Remove `prefix` from the path before appending it to the upstream's.
    pub strip_prefix: bool,
    pub forward_token: bool,
    pub public: bool,
    /// Header names (as declared) the upstream may hand back for the session.
    pub exports: Vec<String>,
    /// This route's public origin, when it differs from the gateway's (another
    /// proxy in front of it): what DPoP proofs for it name.
    pub public_origin: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
pub const DEFAULT_ASSERTION_ISSUER: &str = "keygate-gateway";
pub const DEFAULT_ASSERTION_TTL: i64 = 60;
pub const DEFAULT_UPSTREAM_TIMEOUT: u64 = 30;
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
pub const DEFAULT_TOKEN_CACHE: usize = 10_000;
/// Longest accepted export name (after `x-keygate-session-`).
pub const MAX_EXPORT_NAME: usize = 64;

impl GatewayConfig {
    /// Reads and checks `path`; a relative `signing_key` is taken relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(file.clone()),
            line: None,
            message: format!("cannot read it: {e}"),
        })?;
        let mut config = Self::parse(&text).map_err(|e| ConfigError {
            file: Some(file.clone()),
            ..e
        })?;
        if let (Some(key), Some(dir)) = (&mut config.signing_key, path.parent())
            && key.is_relative()
        {
            *key = dir.join(&*key);
        }
        Ok(config)
    }

    /// Parses and checks the text of a `gateway.toml`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
            file: None,
            line: span.map(|s| line_of(text, s.start)),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| at(e.span(), e.message().into()))?;

        let listen = match &raw.listen {
            Some(l) => l.get_ref().parse().map_err(|_| {
                at(
                    Some(l.span()),
                    format!("listen: not an address (ip:port): {:?}", l.get_ref()),
                )
            })?,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| at(None, "bad default".into()))?,
        };
        let hub = match &raw.hub {
            Some(h) => {
                let url = reqwest::Url::parse(h.get_ref())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or_else(|| {
                        at(Some(h.span()), "hub: not an http:// URL of the Hub".into())
                    })?;
                Some(format!(
                    "{}://{}",
                    url.scheme(),
                    &url[url::Position::BeforeHost..url::Position::AfterPort]
                ))
            }
            None => None,
        };
        // `keygate serve` names itself `http://localhost:<port>` by default.
        let issuer = raw.issuer.or_else(|| {
            hub.as_ref()
                .map(|h| h.replace("://127.0.0.1:", "://localhost:"))
        });

        let assertion_ttl = match &raw.assertion_ttl {
            Some(t) if !(5..=3600).contains(t.get_ref()) => {
                return Err(at(
                    Some(t.span()),
                    "assertion_ttl: between 5 and 3600 seconds".into(),
                ));
            }
            Some(t) => *t.get_ref(),
            None => DEFAULT_ASSERTION_TTL,
        };
        let upstream_timeout = positive(&raw.upstream_timeout, "upstream_timeout", &at)?
            .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT);
        let max_sessions =
            positive(&raw.max_sessions, "max_sessions", &at)?.unwrap_or(DEFAULT_MAX_SESSIONS);
        let token_cache =
            positive(&raw.token_cache, "token_cache", &at)?.unwrap_or(DEFAULT_TOKEN_CACHE);

        let mut routes: Vec<Route> = Vec::new();
        for spanned in &raw.routes {
            let r = spanned.get_ref();
            let route = check_route(r, &at)?;
            if let Some(other) = routes.iter().find(|o| o.name == route.name) {
                return Err(at(
                    Some(r.name.span()),
                    format!("route name {:?} is used twice", other.name),
                ));
            }
            if let Some(other) = routes.iter().find(|o| o.prefix == route.prefix) {
                return Err(at(
                    Some(spanned.span()),
                    format!(
                        "routes {:?} and {:?} have the same path prefix",
                        other.name, route.name
                    ),
                ));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(at(
                None,
                "no routes: add at least one [[route]] with name, prefix and upstream".into(),
            ));
        }
        Ok(GatewayConfig {
            listen,
            hub,
            issuer,
            audiences: raw.audiences,
            signing_key: raw.signing_key.map(|k| PathBuf::from(k.into_inner())),
            assertion_issuer: raw
                .assertion_issuer
                .unwrap_or_else(|| DEFAULT_ASSERTION_ISSUER.into()),
            assertion_ttl,
            upstream_timeout,
            max_sessions,
            token_cache,
            accept_dev_tokens: raw.accept_dev_tokens,
            public_origin: origin(&raw.public_origin, &at)?,
            dpop_replay_cache: positive(&raw.dpop_replay_cache, "dpop_replay_cache", &at)?
                .unwrap_or(keygate_core::dpop::DEFAULT_REPLAY_CAPACITY),
            dpop_nonce: raw.dpop_nonce,
            routes,
        })
    }
}

type At<'a> = dyn Fn(Option<std::ops::Range<usize>>, String) -> ConfigError + 'a;

/// A `public_origin`: `http(s)://host[:port]`, nothing else.
fn origin(v: &Option<Spanned<String>>, at: &At<'_>) -> Result<Option<String>, ConfigError> {
    let Some(s) = v else { return Ok(None) };
    let raw = s.get_ref().trim_end_matches('/');
    match crate::dpop::origin_of(raw) {
        Some(o) if o == raw && (o.starts_with("http://") || o.starts_with("https://")) => {
            Ok(Some(o))
        }
        _ => Err(at(
            Some(s.span()),
            "public_origin: an origin like https://api.example (scheme, host, port only)".into(),
        )),
    }
}

fn positive<T: Copy + Default + PartialOrd>(
    v: &Option<Spanned<T>>,
    name: &str,
    at: &At<'_>,
) -> Result<Option<T>, ConfigError> {
    match v {
        Some(s) if *s.get_ref() <= T::default() => Err(at(
            Some(s.span()),
            format!("{name}: must be greater than 0"),
        )),
        Some(s) => Ok(Some(*s.get_ref())),
        None => Ok(None),
    }
}

fn check_route(r: &RawRoute, at: &At<'_>) -> Result<Route, ConfigError> {
    let name = r.name.get_ref();
    if !valid_name(name) {
        return Err(at(
            Some(r.name.span()),
            "name: 1 to 64 characters among a-z A-Z 0-9 - _ .".into(),
        ));
    }
    let prefix = if r.public {
        if let Some(p) = &r.prefix {
            return Err(at(
                Some(p.span()),
                "a public route has no prefix: it answers at /public/<key_id>/<name>/".into(),
            ));
        }
        let key_id = r.key_id.as_ref().ok_or_else(|| {
            at(
                Some(r.name.span()),
                "a public route needs key_id (the app's API key id)".into(),
            )
        })?;
        if !valid_name(key_id.get_ref()) {
            return Err(at(Some(key_id.span()), "key_id: not an API key id".into()));
        }
        format!("{PUBLIC_PREFIX}{}/{name}", key_id.get_ref())
    } else {
        if let Some(k) = &r.key_id {
            return Err(at(
                Some(k.span()),
                "key_id is only for public routes (public = true)".into(),
            ));
        }
        let p = r.prefix.as_ref().ok_or_else(|| {
            at(
                Some(r.name.span()),
                "a route needs a prefix (e.g. \"/api\") unless it is public".into(),
            )
        })?;
        let raw = p.get_ref();
        let prefix = if raw == "/" {
            raw.clone()
        } else {
            raw.trim_end_matches('/').to_owned()
        };
        if !prefix.starts_with('/') || !super::headers::safe_path(&prefix) {
            return Err(at(
                Some(p.span()),
                "prefix: an absolute path such as \"/api\", without dot segments".into(),
            ));
        }
        if prefix == "/public" || prefix.starts_with(PUBLIC_PREFIX) {
            return Err(at(
                Some(p.span()),
                "prefix: /public/ is reserved for public routes".into(),
            ));
        }
        prefix
    };
    let up = r.upstream.get_ref();
    let url = reqwest::Url::parse(up)
        .ok()
        .filter(|u| {
            u.scheme() == "http"
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
        })
        .ok_or_else(|| {
            at(
                Some(r.upstream.span()),
                format!(
                    "upstream: not a plain http:// URL (http://host:port[/path]): {up:?}; \
                     TLS to upstreams is not supported"
                ),
            )
        })?;
    let authority = format!(
        "http://{}",
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    );
    let mut exports = Vec::new();
    for e in &r.exports {
        let n = e.get_ref();
        let ok = !n.is_empty()
            && n.len() <= MAX_EXPORT_NAME
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(at(
                Some(e.span()),
                format!("exports: 1 to {MAX_EXPORT_NAME} characters among a-z A-Z 0-9 -"),
            ));
        }
        if r.public {
            return Err(at(
                Some(e.span()),
                "exports: a public route has no session to keep values in".into(),
            ));
        }
        exports.push(n.clone());
    }
    Ok(Route {
        name: name.clone(),
        prefix,
        upstream_authority: authority,
        upstream_base: url.path().trim_end_matches('/').to_owned(),
        strip_prefix: r.strip_prefix || r.public,
        forward_token: r.forward_token,
        public: r.public,
        exports,
        public_origin: origin(&r.public_origin, at)?,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

/// 1-based line of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:0"
hub = "http://127.0.0.1:8080"

[[route]]
name = "api"
prefix = "/api/"
upstream = "http://127.0.0.1:9001/base/"
exports = ["auth-userId"]

[[route]]
name = "hooks"
public = true
key_id = "kgk_abc"
upstream = "http://127.0.0.1:9002"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = GatewayConfig::parse(GOOD).unwrap();
        assert_eq!(c.issuer.as_deref(), Some("http://localhost:8080"));
        assert_eq!(c.assertion_ttl, DEFAULT_ASSERTION_TTL);
        assert_eq!(c.routes[0].prefix, "/api");
        assert_eq!(c.routes[0].upstream_authority, "http://127.0.0.1:9001");
        assert_eq!(c.routes[0].upstream_base, "/base");
        assert!(!c.routes[0].strip_prefix);
        assert_eq!(c.routes[1].prefix, "/public/kgk_abc/hooks");
        assert!(c.routes[1].strip_prefix && c.routes[1].public);
    }

    #[test]
    fn the_documented_example_parses() {
        let c = GatewayConfig::parse(include_str!("../../examples/gateway.toml")).unwrap();
        assert_eq!(c.routes.len(), 4);
        assert_eq!(c.routes[3].prefix, "/public/kgk_example/stripe");
        assert_eq!(c.routes[1].exports, vec!["auth-userId"]);
    }

    fn line(text: &str) -> Option<usize> {
        GatewayConfig::parse(text).unwrap_err().line
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            line(&GOOD.replace("prefix = \"/api/\"", "prefx = \"/api\"")),
            Some(7)
        );
        assert_eq!(line(&GOOD.replace("9001/base/", "x/y\"z")), Some(8));
        assert_eq!(
            line(&GOOD.replace("http://127.0.0.1:9002", "ftp://h")),
            Some(15)
        );
        assert_eq!(line(&GOOD.replace("\"/api/\"", "\"/public/x\"")), Some(7));
        assert_eq!(line(&GOOD.replace("\"/api/\"", "\"/a/../b\"")), Some(7));
        assert_eq!(line(&GOOD.replace("auth-userId", "a b")), Some(9));
        assert_eq!(line(&GOOD.replace("\"hooks\"", "\"api\"")), Some(12));
        assert_eq!(line(&GOOD.replace("127.0.0.1:0", "nowhere")), Some(2));
        assert_eq!(line(&format!("assertion_ttl = 1\n{GOOD}")), Some(1));
        assert_eq!(line(&format!("max_sessions = 0\n{GOOD}")), Some(1));
        let e = GatewayConfig::parse("hub = \"http://h:1\"").unwrap_err();
        assert!(e.message.contains("no routes"), "{e}");
        assert_eq!(
            ConfigError {
                file: Some("g.toml".into()),
                line: Some(3),
                message: "m".into()
            }
            .to_string(),
            "g.toml, line 3: m"
        );
    }
}
