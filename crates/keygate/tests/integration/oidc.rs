//! The OpenID Provider over real HTTP (docs/oidc.md): the authorization code flow
//! with PKCE driven as the sign-in page drives it (the key signs in Rust here;
//! the browser and stock relying-party libraries are in tests/oidc/), the token
//! endpoint's grants and errors, ID tokens checked with jsonwebtoken against the
//! provider's JWKS, userinfo, revocation, introspection, logout and the device
//! grant approved with `keygate::client::device`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use keygate::oauth;
use keygate::store::OAuthClientRecord;
use keygate::time::Clock;

use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:9/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

struct Client {
    id: String,
    secret: Option<String>,
    app: String,
}

/// A client of a fresh app, straight into the store (the CLI has tests of its own).
async fn client(s: &TestServer, alg: &str, public: bool, first_party: bool) -> Client {
    let (app, _) = s.api_key(&[]).await;
    let mut rng = keygate::entropy::os_rng();
    let id = oauth::new_client_id(&mut rng);
    let secret = (!public).then(|| oauth::new_client_secret(&mut rng));
    let store = s.running.store.as_ref().unwrap();
    store
        .insert_client(OAuthClientRecord {
            id: id.clone(),
            name: "Test RP".into(),
            secret_hash: secret.as_deref().map(oauth::hash_client_secret),
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec!["http://127.0.0.1:9/bye".into()],
            alg: alg.into(),
            scopes: vec!["openid".into(), "profile".into(), "offline_access".into()],
            first_party,
            app: app.clone(),
            created_at: s.clock.now(),
            revoked_at: None,
        })
        .await
        .unwrap();
    Client { id, secret, app }
}

fn authorize_url(s: &TestServer, c: &Client, extra: &[(&str, &str)]) -> String {
    let challenge = challenge_of(VERIFIER);
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    let defaults = [
        ("response_type", "code"),
        ("client_id", c.id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile offline_access"),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in defaults {
        if !extra.iter().any(|(e, _)| *e == k) {
            q.append_pair(k, v);
        }
    }
    for (k, v) in extra {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    format!("{}/oauth/authorize?{}", s.http(), q.finish())
}

fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

/// What the sign-in page does: read the sealed request, sign the challenge with
/// `key`, then consent (when asked) with `allow`. Returns where the page goes.
async fn sign_in_page(
    s: &TestServer,
    url: &str,
    key: &ed25519_dalek::SigningKey,
    allow: bool,
) -> String {
    let (request, t) = page_sign_in(s, url, key).await;
    let token = t["token"].as_str().unwrap();
    let (status, f) = finish(s, &request, token, None).await;
    assert_eq!(status, 200, "{f}");
    if let Some(to) = f["redirect"].as_str() {
        return to.to_owned();
    }
    assert_eq!(f["consent"]["client"], "Test RP");
    let (status, f) = finish(s, &request, token, Some(allow)).await;
    assert_eq!(status, 200, "{f}");
    f["redirect"].as_str().unwrap().to_owned()
}

/// The page's first steps: load it (its sealed request), then sign the challenge.
/// Returns the request and the sign-in's answer (the page's token).
async fn page_sign_in(
    s: &TestServer,
    url: &str,
    key: &ed25519_dalek::SigningKey,
) -> (String, serde_json::Value) {
    let res = no_redirects().get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "the sign-in page");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = res.text().await.unwrap();
    let request = page
        .split("data-request=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let body = serde_json::json!({"request": request, "pubkey": id(key)});
    let (status, c) = post(s, "/oauth/authorize/challenge", None, body).await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    assert!(
        text.contains("http://keygate.test"),
        "audience is the issuer's origin: {text}"
    );
    let body = serde_json::json!({"request": request, "pubkey": id(key), "challenge": text, "sig": sign(key, text)});
    let (status, t) = post(s, "/oauth/authorize/signin", None, body).await;
    assert_eq!(status, 200, "{t}");
    (request, t)
}

/// The page's last step: consent (when `allow` is given), then the code.
async fn finish(
    s: &TestServer,
    request: &str,
    token: &str,
    allow: Option<bool>,
) -> (u16, serde_json::Value) {
    let mut body = serde_json::json!({"request": request});
    if let Some(a) = allow {
        body["allow"] = a.into();
    }
    post(s, "/oauth/authorize/finish", Some(token), body).await
}

async fn token_request(
    s: &TestServer,
    c: &Client,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value, Option<String>) {
    let mut r = no_redirects()
        .post(format!("{}/oauth/token", s.http()))
        .form(form);
    r = match &c.secret {
        Some(secret) => r.basic_auth(&c.id, Some(secret)),
        None => r.form(&[form, &[("client_id", c.id.as_str())]].concat()),
    };
    let res = r.send().await.unwrap();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, v) = json_of(res).await;
    (status, v, www)
}

async fn exchange(s: &TestServer, c: &Client, code: &str) -> (u16, serde_json::Value) {
    let (status, v, _) = token_request(
        s,
        c,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    (status, v)
}

/// Verifies an ID token with jsonwebtoken against the provider's JWKS.
async fn id_claims(
    s: &TestServer,
    c: &Client,
    token: &str,
    alg: jsonwebtoken::Algorithm,
) -> serde_json::Value {
    let jwks: jsonwebtoken::jwk::JwkSet = http()
        .get(format!("{}/oauth/jwks", s.http()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, alg);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&[&c.id]);
    v.set_issuer(&["http://keygate.test"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn the_code_flow_issues_id_tokens_each_client_can_verify() {
    let s = serve().await;
    for (alg, jwt_alg) in [
        ("RS256", jsonwebtoken::Algorithm::RS256),
        ("ES256", jsonwebtoken::Algorithm::ES256),
        ("EdDSA", jsonwebtoken::Algorithm::EdDSA),
    ] {
        let c = client(&s, alg, false, false).await;
        let key = user(41);
        let to = sign_in_page(&s, &authorize_url(&s, &c, &[]), &key, true).await;
        assert!(to.starts_with(REDIRECT), "{to}");
        let q = query_of(&to);
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["iss"], "http://keygate.test");
        let (status, t) = exchange(&s, &c, &q["code"]).await;
        assert_eq!(status, 200, "{t}");
        assert_eq!(t["token_type"], "Bearer");
        assert!(
            t["refresh_token"].as_str().is_some(),
            "offline_access was granted"
        );
        let claims = id_claims(&s, &c, t["id_token"].as_str().unwrap(), jwt_alg).await;
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(claims["azp"], c.id);
        assert_eq!(claims["key"], id(&key));
        assert!(claims["did"].as_str().unwrap().starts_with("did:key:z6Mk"));
        assert_eq!(claims["acr"], "aal1");
        let access = t["access_token"].as_str().unwrap();
        // The access token is the Hub's RFC 9068 token for the client's app.
        let at = verifier(&s.http())
            .await
            .with_audiences(vec![c.app.clone()])
            .verify(access, s.clock.now())
            .unwrap();
        assert_eq!(at.client_id.as_deref(), Some(c.id.as_str()));
        assert_eq!(
            at.acct.as_deref(),
            claims["sub"].as_str(),
            "sub is the account"
        );
        let (status, info) = get(&s, "/oauth/userinfo", access).await;
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["sub"], claims["sub"]);
    }
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_ends_what_it_issued() {
    let s = serve().await;
    let c = client(&s, "RS256", false, true).await;
    // A first-party client: no consent screen.
    let to = sign_in_page(&s, &authorize_url(&s, &c, &[]), &user(42), false).await;
    let code = query_of(&to)["code"].clone();
    let (status, t) = exchange(&s, &c, &code).await;
    assert_eq!(status, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(get(&s, "/oauth/userinfo", &access).await.0, 200);
    let (status, again) = exchange(&s, &c, &code).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        get(&s, "/oauth/userinfo", &access).await.0,
        401,
        "the first exchange's tokens end"
    );
    let (_, r, _) = token_request(
        &s,
        &c,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(r["error"], "invalid_grant");
}

#[tokio::test]
async fn codes_are_bound_to_client_redirect_uri_and_verifier() {
    let s = serve().await;
    let c = client(&s, "RS256", false, true).await;
    let other = client(&s, "RS256", false, true).await;
    for attempt in 0..3 {
        let to = sign_in_page(&s, &authorize_url(&s, &c, &[]), &user(43), true).await;
        let code = query_of(&to)["code"].clone();
        let (status, v, _) = match attempt {
            0 => {
                token_request(
                    &s,
                    &c,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", REDIRECT),
                        (
                            "code_verifier",
                            "wrong-verifier-wrong-verifier-wrong-verifier-0",
                        ),
                    ],
                )
                .await
            }
            1 => {
                token_request(
                    &s,
                    &c,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", "http://127.0.0.1:9/other"),
                        ("code_verifier", VERIFIER),
                    ],
                )
                .await
            }
            _ => {
                token_request(
                    &s,
                    &other,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", REDIRECT),
                        ("code_verifier", VERIFIER),
                    ],
                )
                .await
            }
        };
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("invalid_grant")),
            "attempt {attempt}"
        );
        // Spent: the right request cannot use it afterwards either.
        assert_eq!(exchange(&s, &c, &code).await.1["error"], "invalid_grant");
    }
}

#[tokio::test]
async fn client_authentication_failures_are_401_with_a_challenge() {
    let s = serve().await;
    let c = client(&s, "RS256", false, true).await;
    let wrong = Client {
        secret: Some("kgcs_wrong".into()),
        id: c.id.clone(),
        app: c.app.clone(),
    };
    let (status, v, www) = token_request(
        &s,
        &wrong,
        &[("grant_type", "authorization_code"), ("code", "x")],
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(www.unwrap().starts_with("Basic"));
    // A public client's id alone does not pass for a confidential client.
    let public = Client {
        secret: None,
        ..wrong
    };
    let (status, v, _) = token_request(
        &s,
        &public,
        &[("grant_type", "authorization_code"), ("code", "x")],
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (401, Some("invalid_client")));
    let (status, v, _) = token_request(&s, &c, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn authorization_errors_redirect_only_to_the_registered_uri() {
    let s = serve().await;
    let c = client(&s, "RS256", true, false).await;
    let http = no_redirects();
    // Never a redirect when the client or the redirect URI is wrong.
    for bad in [
        "http://127.0.0.1:9/cb/",
        "http://127.0.0.1:9/CB",
        "http://127.0.0.1:9/cb?x=1",
        "http://127.0.0.1:9/cb#f",
        "http://evil@127.0.0.1:9/cb",
        "http://127.0.0.1:10/cb",
        "https://attacker.example/cb",
    ] {
        let res = http
            .get(authorize_url(&s, &c, &[("redirect_uri", bad)]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        assert!(res.headers().get("location").is_none(), "{bad}");
        let page = res.text().await.unwrap();
        assert!(
            !page.contains("attacker") && !page.contains("evil"),
            "never echoed"
        );
    }
    let unknown = Client {
        id: "kgc_unknown".into(),
        secret: None,
        app: String::new(),
    };
    let res = http
        .get(authorize_url(&s, &unknown, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    // With a registered redirect URI, the client hears the error there.
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "profile")], "invalid_scope"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("registration", "{}")], "registration_not_supported"),
    ] {
        let res = http
            .get(authorize_url(&s, &c, &extra))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302, "{extra:?}");
        let to = res.headers()["location"].to_str().unwrap();
        assert!(to.starts_with(REDIRECT), "{to}");
        let q = query_of(to);
        assert_eq!(q["error"], error, "{extra:?}");
        assert_eq!(q["state"], "st-1");
    }
    // A repeated state (RFC 6749 §3.1): refused, and echoed as neither value.
    let res = http
        .get(format!("{}&state=st-2", authorize_url(&s, &c, &[])))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let q = query_of(res.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "invalid_request");
    assert!(!q.contains_key("state"), "{q:?}");
}

#[tokio::test]
async fn consent_is_remembered_and_refusal_reaches_the_client() {
    let s = serve().await;
    let c = client(&s, "ES256", true, false).await;
    let key = user(44);
    let to = sign_in_page(&s, &authorize_url(&s, &c, &[]), &key, false).await;
    let q = query_of(&to);
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "st-1")
    );
    // Allowed once, remembered: the next sign-in goes straight back with a code.
    let to = sign_in_page(&s, &authorize_url(&s, &c, &[]), &key, true).await;
    assert!(query_of(&to).contains_key("code"));
    let to = sign_in_page(
        &s,
        &authorize_url(&s, &c, &[("scope", "openid")]),
        &key,
        false,
    )
    .await;
    assert!(
        query_of(&to).contains_key("code"),
        "no consent screen: {to}"
    );
}

#[tokio::test]
async fn refresh_rotates_and_revocation_ends_the_session() {
    let s = serve().await;
    let c = client(&s, "RS256", true, true).await;
    let to = sign_in_page(&s, &authorize_url(&s, &c, &[]), &user(45), true).await;
    let (_, t) = exchange(&s, &c, &query_of(&to)["code"]).await;
    let first = t["refresh_token"].as_str().unwrap().to_owned();
    let (status, r, _) = token_request(
        &s,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let claims = id_claims(
        &s,
        &c,
        r["id_token"].as_str().unwrap(),
        jsonwebtoken::Algorithm::RS256,
    )
    .await;
    assert!(claims.get("nonce").is_none(), "no nonce on refresh");
    let second = r["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let introspect = |token: String| {
        let c = &c;
        let s = &s;
        async move {
            json_of(
                http()
                    .post(format!("{}/oauth/introspect", s.http()))
                    .form(&[("token", token.as_str()), ("client_id", c.id.as_str())])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
            .1
        }
    };
    let access = r["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(access.clone()).await["active"], true);
    assert_eq!(introspect(second.clone()).await["active"], true);
    let res = http()
        .post(format!("{}/oauth/revoke", s.http()))
        .form(&[("token", second.as_str()), ("client_id", c.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(introspect(access.clone()).await["active"], false);
    assert_eq!(get(&s, "/oauth/userinfo", &access).await.0, 401);
    // Revoking something unknown is fine too (RFC 7009 §2.2).
    let res = http()
        .post(format!("{}/oauth/revoke", s.http()))
        .form(&[("token", "nothing"), ("client_id", c.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_refresh_narrows_the_scope_and_never_widens_it() {
    let s = serve().await;
    let c = client(&s, "RS256", true, true).await;
    let url = authorize_url(&s, &c, &[("scope", "openid offline_access")]);
    let to = sign_in_page(&s, &url, &user(46), true).await;
    let (_, t) = exchange(&s, &c, &query_of(&to)["code"]).await;
    assert_eq!(t["scope"], "openid offline_access");
    let refresh = |token: String, scope: &'static str| {
        let (s, c) = (&s, &c);
        async move {
            let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", &*token)];
            if !scope.is_empty() {
                form.push(("scope", scope));
            }
            let (status, v, _) = token_request(s, c, &form).await;
            (status, v)
        }
    };
    // `profile` is the client's, but this session was not granted it: refused,
    // and the refresh token is not spent.
    let first = t["refresh_token"].as_str().unwrap().to_owned();
    let (status, r) = refresh(first.clone(), "openid profile").await;
    assert_eq!((status, r["error"].as_str()), (400, Some("invalid_scope")));
    // Narrowed: the access token holds only what was asked, no ID token without
    // `openid`, so userinfo refuses it.
    let (status, r) = refresh(first, "offline_access").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["scope"], "offline_access");
    assert!(r.get("id_token").is_none());
    let access = r["access_token"].as_str().unwrap();
    assert_eq!(get(&s, "/oauth/userinfo", access).await.0, 403);
    // The refresh token keeps the scope granted.
    let (status, r) = refresh(r["refresh_token"].as_str().unwrap().to_owned(), "").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["scope"], "openid offline_access");
    assert!(r["id_token"].is_string());
    assert_eq!(
        get(&s, "/oauth/userinfo", r["access_token"].as_str().unwrap())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn browser_clients_get_cors_at_the_token_endpoints_only() {
    let s = serve().await;
    let spa = "https://spa.example";
    let open = ["/oauth/token", "/oauth/userinfo", "/oauth/revoke"];
    let closed = ["/oauth/introspect", "/oauth/device_authorization"];
    for path in open.into_iter().chain(closed) {
        let url = format!("{}{path}", s.http());
        let preflight = http()
            .request(reqwest::Method::OPTIONS, &url)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, dpop");
        for r in [preflight, http().post(&url)] {
            let res = r.header("origin", spa).send().await.unwrap();
            let h = res.headers();
            if closed.contains(&path) {
                assert!(!h.contains_key("access-control-allow-origin"), "{path}");
                continue;
            }
            assert_eq!(h["access-control-allow-origin"], spa, "{path}");
            assert!(
                !h.contains_key("access-control-allow-credentials"),
                "{path}"
            );
            assert!(
                h.get_all("vary").iter().any(|v| v == "origin"),
                "{path}: {h:?}"
            );
        }
    }
}

#[tokio::test]
async fn logout_ends_the_session_and_returns_only_to_a_registered_uri() {
    let s = serve().await;
    let c = client(&s, "EdDSA", false, true).await;
    let to = sign_in_page(&s, &authorize_url(&s, &c, &[]), &user(46), true).await;
    let (_, t) = exchange(&s, &c, &query_of(&to)["code"]).await;
    let id_token = t["id_token"].as_str().unwrap();
    let access = t["access_token"].as_str().unwrap();
    let http = no_redirects();
    let url = |target: &str| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("id_token_hint", id_token);
        q.append_pair("post_logout_redirect_uri", target);
        q.append_pair("state", "bye-1");
        format!("{}/oauth/logout?{}", s.http(), q.finish())
    };
    let res = http
        .get(url("https://attacker.example/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    assert_eq!(
        get(&s, "/oauth/userinfo", access).await.0,
        200,
        "a refused logout ends nothing"
    );
    let res = http
        .get(url("http://127.0.0.1:9/bye"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.headers()["location"],
        "http://127.0.0.1:9/bye?state=bye-1"
    );
    assert_eq!(get(&s, "/oauth/userinfo", access).await.0, 401);
    // A forged hint ends nothing and is refused.
    let mut forged = id_token.to_owned();
    forged.push('A');
    let res = http
        .get(format!("{}/oauth/logout?id_token_hint={forged}", s.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

/// `POST /oauth/device_authorization` by the public client `c`: its `200` answer.
async fn device_authorization(s: &TestServer, c: &Client, scope: &str) -> serde_json::Value {
    let res = http()
        .post(format!("{}/oauth/device_authorization", s.http()))
        .form(&[("client_id", c.id.as_str()), ("scope", scope)])
        .send()
        .await
        .unwrap();
    let (status, d) = json_of(res).await;
    assert_eq!(status, 200, "{d}");
    d
}

#[tokio::test]
async fn the_device_grant_is_approved_with_the_key() {
    let s = serve().await;
    let c = client(&s, "RS256", true, true).await;
    let d = device_authorization(&s, &c, "openid offline_access").await;
    let device_code = d["device_code"].as_str().unwrap().to_owned();
    let user_code = d["user_code"].as_str().unwrap().to_owned();
    assert_eq!(d["verification_uri"], "http://keygate.test/oauth/device");
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code.as_str()),
    ];
    let poll = || token_request(&s, &c, &form);
    assert_eq!(poll().await.1["error"], "authorization_pending");
    assert_eq!(poll().await.1["error"], "slow_down", "polled again at once");
    s.clock.advance(6);
    let key = user(47);
    let base = s.http();
    let request = keygate::client::device::device_request(&base, &key, &user_code.to_lowercase())
        .await
        .unwrap();
    assert_eq!(request.client, "Test RP");
    // What `keygate login --device` then sends (tests/oidc runs the command itself).
    let res = http()
        .post(format!("{base}/oauth/device/approve"))
        .json(&serde_json::json!({"user_code": user_code, "pubkey": id(&key), "challenge": request.challenge, "sig": sign(&key, &request.challenge)}))
        .send()
        .await
        .unwrap();
    let (status, v) = json_of(res).await;
    assert_eq!((status, v["approved"].as_bool()), (200, Some(true)), "{v}");
    s.clock.advance(6);
    let (status, t, _) = poll().await;
    assert_eq!(status, 200, "{t}");
    assert!(t["id_token"].is_string() && t["refresh_token"].is_string());
    s.clock.advance(6);
    assert_eq!(
        poll().await.1["error"],
        "invalid_grant",
        "tokens are handed out once"
    );
}

/// RFC 8628 §3.4: a device code is bound to the client it was issued to. Another
/// client's poll learns nothing of it (not `authorization_pending`), and spends
/// it, as a code presented by the wrong client is.
#[tokio::test]
async fn a_device_code_polled_by_another_client_is_spent() {
    let s = serve().await;
    let (owner, thief) = (
        client(&s, "RS256", true, true).await,
        client(&s, "RS256", true, true).await,
    );
    let d = device_authorization(&s, &owner, "openid").await;
    let device_code = d["device_code"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code.as_str()),
    ];
    let (status, t, _) = token_request(&s, &thief, &form).await;
    assert_eq!((status, t["error"].as_str()), (400, Some("invalid_grant")));
    s.clock.advance(6);
    let (status, t, _) = token_request(&s, &owner, &form).await;
    assert_eq!(
        (status, t["error"].as_str()),
        (400, Some("invalid_grant")),
        "the device starts over"
    );
    let user_code = d["user_code"].as_str().unwrap();
    let approval = keygate::client::device::device_request(&s.http(), &user(48), user_code).await;
    assert!(approval.is_err(), "the user code went with it");
}

#[tokio::test]
async fn discovery_names_every_endpoint_under_the_issuer() {
    let s = serve().await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let (status, m) = json_of(
            http()
                .get(format!("{}{path}", s.http()))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(m["issuer"], "http://keygate.test");
        assert_eq!(m["token_endpoint"], "http://keygate.test/oauth/token");
        assert_eq!(
            m["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
    }
    let (_, jwks) = json_of(
        http()
            .get(format!("{}/oauth/jwks", s.http()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kinds: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["OKP", "RSA", "EC"]);
}

#[tokio::test]
async fn an_app_that_requires_mfa_gets_its_code_after_the_second_factor() {
    let s = serve().await;
    let c = client(&s, "RS256", false, true).await;
    let store = s.running.store.as_ref().unwrap();
    store.set_mfa_required(&c.app, true).await.unwrap();
    let (request, t) = page_sign_in(&s, &authorize_url(&s, &c, &[]), &user(48)).await;
    assert_eq!(t["mfa_required"], true);
    let pending = t["token"].as_str().unwrap();
    // No code for a session still waiting for its second factor.
    let (status, f) = finish(&s, &request, pending, None).await;
    assert_eq!((status, f["error"].as_str()), (403, Some("mfa_required")));
    // What the page does: the TOTP step (here with a factor enrolled just now).
    let (status, e) = post(&s, "/v1/mfa/totp", Some(pending), serde_json::json!({})).await;
    assert_eq!(status, 200, "{e}");
    let secret = totp_rs::Secret::try_from_base32(e["secret"].as_str().unwrap())
        .unwrap()
        .as_ref()
        .to_vec();
    let code = keygate::account::totp_code(&secret, s.clock.now());
    let body = serde_json::json!({"code": code});
    let (status, raised) = post(&s, "/v1/mfa/totp/verify", Some(pending), body).await;
    assert_eq!(status, 200, "{raised}");
    let (status, f) = finish(&s, &request, raised["token"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{f}");
    let to = f["redirect"].as_str().unwrap();
    let (status, tokens) = exchange(&s, &c, &query_of(to)["code"]).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = id_claims(
        &s,
        &c,
        tokens["id_token"].as_str().unwrap(),
        jsonwebtoken::Algorithm::RS256,
    )
    .await;
    assert_eq!(claims["acr"], "aal2");
    assert_eq!(claims["amr"], serde_json::json!(["swk", "otp", "mfa"]));
}
