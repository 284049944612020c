//! What the gateway removes from and adds to the headers passing through it. Pure
//! functions on header maps, so that the rules can be tested one by one.
//!
//! The identity headers are the gateway's word to its services, so a client must
//! never be able to send one: every header whose name, lower-cased and with `_` read
//! as `-`, starts with `x-keygate-` is removed, however it is spelled and however
//! often it appears (some servers and frameworks treat `X_Keygate_Identity` as
//! `x-keygate-identity`).

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The namespace of the gateway's own headers.
pub const PREFIX: &str = "x-keygate-";
pub const IDENTITY: &str = "x-keygate-identity";
pub const SESSION: &str = "x-keygate-session";
pub const SCOPE: &str = "x-keygate-scope";
pub const ASSERTION: &str = "x-keygate-assertion";
/// Prefix of the session values injected into requests.
pub const SESSION_VALUE_PREFIX: &str = "x-keygate-session-";
/// Prefix of the headers by which an upstream hands values to the session.
pub const EXPORT_PREFIX: &str = "x-keygate-export-";

/// Whether `name`, read case-insensitively and with `_` as `-`, starts with `prefix`
/// (which must be lower case).
pub fn normalized_starts_with(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.bytes().zip(prefix.bytes()).all(|(a, b)| {
            (if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            }) == b
        })
}

/// Removes every header in the `x-keygate-` namespace, in any spelling.
pub fn strip_keygate(headers: &mut HeaderMap) {
    strip_prefixed(headers, PREFIX);
}

/// Removes every header whose normalized name starts with `prefix`.
pub fn strip_prefixed(headers: &mut HeaderMap, prefix: &str) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| normalized_starts_with(n.as_str(), prefix))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Removes the headers that carry the client's access token.
pub fn strip_token(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove("x-auth-token");
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded as they are.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes the hop-by-hop headers, those named by `Connection`, and `Upgrade`;
/// returns the `Upgrade` value when the message asked to switch protocols.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let connection_says_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = headers.remove(header::UPGRADE);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    upgrade.filter(|_| connection_says_upgrade)
}

/// Whether a request path is safe to route on a prefix, that is, whether every
/// upstream reads it the way the gateway does. A path like
/// `/public/k/hooks/../../api` would otherwise reach a public route's upstream,
/// which might resolve it to a path that requires a token. Refused, as sent or
/// after decoding `%XX` once:
/// - `.` and `..` segments, also with `;` parameters (`..;`, which Tomcat-style
///   servers resolve) and encoded (`%2e`);
/// - encoded `/` and `\`, a raw `\`;
/// - anything still encoded after one decoding (`%252e`, `%252f`, `%2525`);
/// - bytes that are not UTF-8 once decoded (overlong forms such as `%c0%ae`);
/// - NUL and other control characters.
pub fn safe_path(path: &str) -> bool {
    if path.contains('\\') {
        return false;
    }
    let lower_has = |s: &[u8], pat: &str| {
        s.windows(pat.len())
            .any(|w| w.eq_ignore_ascii_case(pat.as_bytes()))
    };
    let raw = path.as_bytes();
    if lower_has(raw, "%2e") || lower_has(raw, "%2f") || lower_has(raw, "%5c") {
        return false;
    }
    // A malformed escape (`%zz`) stays as it was, so its `%` is refused below.
    let Ok(decoded) = percent_encoding::percent_decode(raw).decode_utf8() else {
        return false;
    };
    if decoded.contains(['\\', '%']) || decoded.chars().any(char::is_control) {
        return false;
    }
    !decoded.split('/').any(|seg| {
        let name = seg.split(';').next().unwrap_or(seg);
        name == "." || name == ".."
    })
}

/// Whether `path` is `prefix` or lies under `prefix/`.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// Collects (and removes) the values an upstream exports: headers named
/// `x-keygate-export-<name>` for a declared `<name>` (compared case-insensitively).
/// Every other header of the export namespace is removed too, so none reaches the
/// client.
pub fn take_exports<'a>(
    headers: &mut HeaderMap,
    declared: &'a [String],
) -> Vec<(&'a str, HeaderValue)> {
    let mut out = Vec::new();
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| normalized_starts_with(n.as_str(), EXPORT_PREFIX))
        .cloned()
        .collect();
    for name in names {
        let suffix = &name.as_str()[EXPORT_PREFIX.len()..];
        let values: Vec<HeaderValue> = match headers.entry(&name) {
            header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
            header::Entry::Vacant(_) => continue,
        };
        // Only the canonical spelling counts: `x_keygate_export_…` is dropped.
        if !name.as_str().starts_with(EXPORT_PREFIX) {
            continue;
        }
        if let Some(d) = declared.iter().find(|d| d.eq_ignore_ascii_case(suffix))
            && let Some(v) = values.into_iter().last()
        {
            out.push((d.as_str(), v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_every_spelling_of_the_namespace() {
        let mut h = map(&[
            ("X-Keygate-Identity", "forged"),
            ("x-keygate-identity", "forged2"),
            ("x_keygate_session", "forged"),
            ("X_KEYGATE-SCOPE", "admin"),
            ("x-keygate-session-auth-userId", "1"),
            ("x-keygate-assertion", "x"),
            ("x-keygateway", "kept"),
            ("x-other", "kept"),
        ]);
        strip_keygate(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["x-keygateway", "x-other"]);
    }

    #[test]
    fn hop_by_hop_and_upgrade() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-length"]);
        let mut h = map(&[("upgrade", "h2c")]);
        assert_eq!(strip_hop_by_hop(&mut h), None, "no Connection: upgrade");
    }

    #[test]
    fn paths() {
        assert!(safe_path("/api/x/y.json"));
        assert!(safe_path("/api/.well-known/x"));
        assert!(safe_path("/api/caf%C3%A9;v=1/x%20y"));
        assert!(safe_path("/api/...;/x"));
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a%2fb",
            "/a\\b",
            "/a/%5c",
            "/hooks/..;/..;/api/admin",
            "/hooks/..;jsessionid=1/api",
            "/hooks/.;/api",
            "/a/%252e%252e/b",
            "/a/%252f",
            "/a/%255c",
            "/a/%2525",
            "/a/%c0%ae%c0%ae/b",
            "/a/%c0%af",
            "/a/%e0%80%ae",
            "/a/%00",
            "/a/%0a",
            "/a/%zz",
            "/a/%2",
            "/a/%5C",
        ] {
            assert!(!safe_path(bad), "{bad}");
        }
        assert!(under_prefix("/api", "/api"));
        assert!(under_prefix("/api/x", "/api"));
        assert!(!under_prefix("/apix", "/api"));
        assert!(under_prefix("/anything", "/"));
    }

    #[test]
    fn exports_are_taken_and_never_passed_on() {
        let declared = vec!["auth-userId".to_owned()];
        let mut h = map(&[
            ("x-keygate-export-auth-userid", "42"),
            ("x-keygate-export-undeclared", "1"),
            ("x_keygate_export_auth-userid", "evil"),
            ("content-type", "text/plain"),
        ]);
        let got = take_exports(&mut h, &declared);
        assert_eq!(got, vec![("auth-userId", HeaderValue::from_static("42"))]);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type"]);
    }
}
