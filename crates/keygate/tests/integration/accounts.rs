//! Accounts of several keys and second factors (docs/accounts.md): linking needs
//! both keys, removing a key ends its sessions at once, MFA-pending tokens are
//! refused everywhere but the MFA step, TOTP codes work once and cannot be
//! brute-forced, and a step-up ends.

use ed25519_dalek::SigningKey;
use keygate::time::Clock;
use serde_json::{Value, json};

use crate::support::*;

async fn app(s: &TestServer, mfa: bool) -> App {
    let (id, secret) = s.api_key(&[]).await;
    if mfa {
        let store = s.running.store.as_ref().unwrap();
        store.set_mfa_required(&id, true).await.unwrap();
    }
    App { id, secret }
}

fn claims(v: &Value) -> Value {
    keygate::token::decode_unverified(tok(v)).unwrap()
}

/// Links `new` into the account of the key signed in with `token` (`inviter`).
async fn link(s: &TestServer, token: &str, inviter: &SigningKey, new: &SigningKey) {
    let (status, c) = post(
        s,
        "/v1/account/link/challenge",
        Some(token),
        json!({"identity": id(new)}),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    let (status, v) = post(
        s,
        "/v1/account/link",
        None,
        json!({"challenge": text, "sig": sign(inviter, text), "new_sig": sign(new, text)}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

/// Raises the session of `token` with a signature of `second`; the new token body.
async fn mfa_by_key(s: &TestServer, token: &str, second: &SigningKey) -> (u16, Value) {
    let (status, c) = post(
        s,
        "/v1/mfa/challenge",
        Some(token),
        json!({"identity": id(second)}),
    )
    .await;
    if status != 200 {
        return (status, c);
    }
    let text = c["challenge"].as_str().unwrap();
    post(
        s,
        "/v1/mfa/key",
        Some(token),
        json!({"challenge": text, "sig": sign(second, text)}),
    )
    .await
}

/// Enrols TOTP for the account of `token`; the secret's bytes.
async fn enrol_totp(s: &TestServer, token: &str) -> Vec<u8> {
    let (status, e) = post(s, "/v1/mfa/totp", Some(token), json!({})).await;
    assert_eq!(status, 200, "{e}");
    let uri = e["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let secret = e["secret"].as_str().unwrap();
    assert!(uri.contains(secret));
    totp_rs::Secret::try_from_base32(secret)
        .unwrap()
        .as_ref()
        .to_vec()
}

fn code(secret: &[u8], s: &TestServer) -> String {
    keygate::account::totp_code(secret, s.clock.now())
}

#[tokio::test]
async fn linking_needs_both_keys_and_lists_them() {
    let s = serve().await;
    let app = app(&s, false).await;
    let (a, b, c) = (user(101), user(102), user(103));

    // The first sign-in makes an account of the key alone.
    let ta = sign_in(&s, &app, &a, json!({})).await;
    let acct = claims(&ta)["acct"].as_str().unwrap().to_owned();
    assert!(acct.starts_with("acct_"));
    assert_eq!(claims(&ta)["acr"], "aal1");
    assert_eq!(claims(&ta)["amr"], json!(["swk"]));
    let (status, keys) = get(&s, "/v1/account/keys", tok(&ta)).await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["account"], acct);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys["keys"][0]["identity"], id(&a));
    assert_eq!(keys["keys"][0]["current"], true);
    assert!(keys["keys"][0]["last_used_at"].is_string());

    // A QR code of anything a signed-in user wants to show, drawn by the server.
    let res = http()
        .post(format!("{}/v1/qr", s.http()))
        .bearer_auth(tok(&ta))
        .json(&json!({"text": "otpauth://totp/keygate:x?secret=AAAA"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert!(res.text().await.unwrap().contains("<svg"));
    let (status, _) = post(&s, "/v1/qr", None, json!({"text": "x"})).await;
    assert_eq!(status, 401);

    // B signed in once before: a lone key, it may move.
    let tb_before = sign_in(&s, &app, &b, json!({})).await;
    assert_ne!(claims(&tb_before)["acct"], acct);

    let (_, ch) = post(
        &s,
        "/v1/account/link/challenge",
        Some(tok(&ta)),
        json!({"identity": id(&b)}),
    )
    .await;
    let text = ch["challenge"].as_str().unwrap();
    assert!(text.starts_with("keygate link challenge v1\n"), "{text}");
    let try_link = |sig: String, new_sig: String| {
        post(
            &s,
            "/v1/account/link",
            None,
            json!({"challenge": text, "sig": sig, "new_sig": new_sig, "label": "phone"}),
        )
    };
    // Each side alone fails: a signature by the wrong key in the other slot.
    let (status, v) = try_link(sign(&a, text), sign(&c, text)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, v) = try_link(sign(&c, text), sign(&b, text)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, v) = try_link(sign(&b, text), sign(&b, text)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    // Both: linked, once.
    s.clock.advance(1);
    let (status, v) = try_link(sign(&a, text), sign(&b, text)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["account"], acct);
    let (status, v) = try_link(sign(&a, text), sign(&b, text)).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("challenge_used")));

    // B's old session named its old account: revoked. New sign-ins carry A's.
    assert_eq!(
        get(&s, "/v1/whoami", tok(&tb_before)).await.1["error"],
        "session_revoked"
    );
    let tb = sign_in(&s, &app, &b, json!({})).await;
    assert_eq!(claims(&tb)["acct"], acct);
    assert_eq!(claims(&tb)["sub"], id(&b));
    let (_, keys) = get(&s, "/v1/account/keys", tok(&tb)).await;
    let listed: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["identity"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [id(&a), id(&b)]);
    assert_eq!(keys["keys"][1]["label"], "phone");
    assert_eq!(keys["keys"][1]["current"], true);

    // With a second key in the account, adding a third needs aal2.
    let (status, v) = post(
        &s,
        "/v1/account/link/challenge",
        Some(tok(&ta)),
        json!({"identity": id(&c)}),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("mfa_required")),
        "{v}"
    );
    assert_eq!(v["missing"], json!(["second_factor"]));
    assert_eq!(v["methods"], json!(["key"]));

    // A key in an account with more than itself cannot be taken.
    let (d, e) = (user(104), user(105));
    let td = sign_in(&s, &app, &d, json!({})).await;
    link(&s, tok(&td), &d, &e).await;
    let (_, raised) = mfa_by_key(&s, tok(&ta), &b).await;
    let (_, ch) = post(
        &s,
        "/v1/account/link/challenge",
        Some(tok(&raised)),
        json!({"identity": id(&e)}),
    )
    .await;
    let text = ch["challenge"].as_str().unwrap();
    let (status, v) = post(
        &s,
        "/v1/account/link",
        None,
        json!({"challenge": text, "sig": sign(&a, text), "new_sig": sign(&e, text)}),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("key_in_other_account"))
    );
    s.stop().await;
}

#[tokio::test]
async fn removing_a_key_ends_its_sessions_at_once() {
    let s = serve().await;
    let app = app(&s, false).await;
    let (a, b) = (user(111), user(112));
    let ta = sign_in(&s, &app, &a, json!({})).await;
    link(&s, tok(&ta), &a, &b).await;
    let tb1 = sign_in(&s, &app, &b, json!({})).await;
    let tb2 = sign_in(&s, &app, &b, json!({})).await;
    let verifier = keygate::client::OfflineVerifier::start(&s.http(), "http://keygate.test")
        .await
        .unwrap();
    assert!(verifier.verify(tok(&tb1), s.clock.now()).is_ok());

    // Removing another key needs aal2 (a stolen key must not evict its owner).
    let path = format!("/v1/account/keys/{}", id(&b));
    let (status, v) = delete(&s, &path, tok(&ta)).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("mfa_required")));
    assert_eq!(get(&s, "/v1/whoami", tok(&tb1)).await.0, 200);

    let (status, raised) = mfa_by_key(&s, tok(&ta), &b).await;
    assert_eq!(status, 200, "{raised}");
    let (status, v) = delete(&s, &path, tok(&raised)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revoked"], 2);

    // B's sessions are refused at once; A's go on.
    for t in [&tb1, &tb2] {
        let (status, v) = get(&s, "/v1/whoami", tok(t)).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (401, Some("session_revoked"))
        );
        assert_eq!(introspect(&s, &app, tok(t)).await, json!({"active": false}));
    }
    assert_eq!(get(&s, "/v1/whoami", tok(&ta)).await.0, 200);
    assert_eq!(introspect(&s, &app, tok(&ta)).await["active"], true);
    let (_, keys) = get(&s, "/v1/account/keys", tok(&ta)).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    // ...and offline verifiers learn it from the feed.
    let (_, feed) = json_of(
        http()
            .get(format!("{}/v1/revocations?since=0", s.http()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let revoked: Vec<&Value> = feed["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["session_id"])
        .collect();
    assert!(revoked.contains(&&tb1["session_id"]) && revoked.contains(&&tb2["session_id"]));
    eventually("the offline verifier to refuse B's session", async || {
        verifier.verify(tok(&tb1), s.clock.now()).is_err()
    })
    .await;

    // The last key stays; B signing in again gets an account of its own.
    let (status, v) = delete(&s, &format!("/v1/account/keys/{}", id(&a)), tok(&ta)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("last_account_key"))
    );
    let tb3 = sign_in(&s, &app, &b, json!({})).await;
    assert_ne!(claims(&tb3)["acct"], claims(&ta)["acct"]);
    s.stop().await;
}

#[tokio::test]
async fn a_pending_token_is_refused_everywhere_but_the_mfa_step() {
    let s = serve().await;
    let strict = app(&s, true).await;
    let a = user(121);
    let t = sign_in(
        &s,
        &strict,
        &a,
        json!({"client_id": "cli", "access_type": "offline"}),
    )
    .await;
    assert_eq!(t["mfa_required"], true);
    let pending = tok(&t).to_owned();
    let header = jsonwebtoken::decode_header(&pending).unwrap();
    assert_eq!(header.typ.as_deref(), Some("mfa-pending+jwt"));

    for path in ["/v1/whoami", "/v1/sessions", "/v1/account/keys"] {
        let (status, v) = get(&s, path, &pending).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (403, Some("mfa_required")),
            "{path}"
        );
        assert_eq!(v["missing"], json!(["second_factor"]));
        assert_eq!(v["methods"], json!([]), "no factor enrolled yet");
    }
    let (status, v) = post(&s, "/v1/logout", Some(&pending), json!({})).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("mfa_required")));
    let (status, v) = post(
        &s,
        "/v1/token/refresh",
        None,
        json!({"refresh_token": t["refresh_token"], "client_id": "cli"}),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("mfa_required")),
        "{v}"
    );
    assert_eq!(
        introspect(&s, &strict, &pending).await,
        json!({"active": false})
    );
    // Offline: the Rust verifier, and what a gateway does.
    let verifier = keygate::client::OfflineVerifier::start(&s.http(), "http://keygate.test")
        .await
        .unwrap();
    let err = verifier.verify(&pending, s.clock.now()).unwrap_err();
    assert_eq!(err.code(), "mfa_required");
    assert_eq!(err.status(), 403);
    assert_eq!(
        crate::support::verifier(&s.http())
            .await
            .verify(&pending, s.clock.now()),
        Err(keygate::token::TokenError::MfaPending)
    );

    // With no factor yet, the pending session may enrol one, then show it.
    let secret = enrol_totp(&s, &pending).await;
    let (status, v) = post(
        &s,
        "/v1/mfa/totp/verify",
        Some(&pending),
        json!({"code": "000000"}),
    )
    .await;
    if code(&secret, &s) != "000000" {
        assert_eq!((status, v["error"].as_str()), (403, Some("invalid_otp")));
    }
    let (status, done) = post(
        &s,
        "/v1/mfa/totp/verify",
        Some(&pending),
        json!({"code": code(&secret, &s)}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["session_id"], t["session_id"]);
    let c = claims(&done);
    assert_eq!(
        (c["acr"].as_str(), &c["amr"]),
        (Some("aal2"), &json!(["swk", "otp", "mfa"]))
    );
    assert_eq!(get(&s, "/v1/whoami", tok(&done)).await.0, 200);
    assert_eq!(introspect(&s, &strict, tok(&done)).await["acr"], "aal2");
    assert!(verifier.verify(tok(&done), s.clock.now()).is_ok());
    // The pending token itself stays refused; the refresh token now works, aal2.
    assert_eq!(get(&s, "/v1/whoami", &pending).await.0, 403);
    let (status, r) = post(
        &s,
        "/v1/token/refresh",
        None,
        json!({"refresh_token": t["refresh_token"], "client_id": "cli"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(claims(&r)["acr"], "aal2");

    // Now that the account has a factor, a new pending sign-in cannot enrol
    // another one (a stolen key alone cannot replace the owner's TOTP).
    let t2 = sign_in(&s, &strict, &a, json!({})).await;
    let (status, v) = post(&s, "/v1/mfa/totp", Some(tok(&t2)), json!({})).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("mfa_required")));
    assert_eq!(v["methods"], json!(["totp"]));
    s.stop().await;
}

#[tokio::test]
async fn mfa_by_a_second_key_of_the_account() {
    let s = serve().await;
    let plain = app(&s, false).await;
    let strict = app(&s, true).await;
    let (a, b, stranger) = (user(131), user(132), user(133));
    let ta = sign_in(&s, &plain, &a, json!({})).await;
    link(&s, tok(&ta), &a, &b).await;
    sign_in(&s, &plain, &stranger, json!({})).await;

    let t = sign_in(&s, &strict, &a, json!({})).await;
    let pending = tok(&t);
    let (_, v) = get(&s, "/v1/whoami", pending).await;
    assert_eq!(v["methods"], json!(["key"]));
    // Neither the key itself nor a key of another account is a second factor.
    for other in [&a, &stranger] {
        let (status, v) = mfa_by_key(&s, pending, other).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (403, Some("forbidden")),
            "{v}"
        );
    }
    let (_, ch) = post(
        &s,
        "/v1/mfa/challenge",
        Some(pending),
        json!({"identity": id(&b)}),
    )
    .await;
    let text = ch["challenge"].as_str().unwrap();
    assert!(text.starts_with("keygate step-up challenge v1\n"));
    // Signed by the wrong key: refused.
    let (status, v) = post(
        &s,
        "/v1/mfa/key",
        Some(pending),
        json!({"challenge": text, "sig": sign(&a, text)}),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    let body = json!({"challenge": text, "sig": sign(&b, text)});
    let (status, done) = post(&s, "/v1/mfa/key", Some(pending), body.clone()).await;
    assert_eq!(status, 200, "{done}");
    let c = claims(&done);
    assert_eq!(
        (c["acr"].as_str(), &c["amr"]),
        (Some("aal2"), &json!(["swk", "mfa"]))
    );
    assert_eq!(c["sub"], id(&a));
    assert_eq!(get(&s, "/v1/whoami", tok(&done)).await.0, 200);
    // The step-up challenge works once, and for its own session only.
    let (status, v) = post(&s, "/v1/mfa/key", Some(pending), body.clone()).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("challenge_used")));
    let other = sign_in(&s, &strict, &a, json!({})).await;
    let (status, _) = post(&s, "/v1/mfa/key", Some(tok(&other)), body).await;
    assert_eq!(status, 401);
    s.stop().await;
}

#[tokio::test]
async fn totp_codes_work_once_and_guessing_is_rate_limited() {
    let s = serve().await;
    let plain = app(&s, false).await;
    let a = user(141);
    let t = sign_in(&s, &plain, &a, json!({})).await;
    let secret = enrol_totp(&s, tok(&t)).await;
    let now_code = code(&secret, &s);
    let (status, v) = post(
        &s,
        "/v1/mfa/totp/verify",
        Some(tok(&t)),
        json!({"code": now_code}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // The same code again, from another session of the account: refused.
    let t2 = sign_in(&s, &plain, &a, json!({})).await;
    let (status, v) = post(
        &s,
        "/v1/mfa/totp/verify",
        Some(tok(&t2)),
        json!({"code": now_code}),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("otp_reused")),
        "{v}"
    );
    // The secret is stored sealed: not in the database files, raw or in base32.
    // (On PostgreSQL the directory holds no database: nothing to scan.)
    let b32 = totp_rs::Secret::from(secret.clone()).to_base32();
    for entry in std::fs::read_dir(s.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_slice()));
        assert!(!bytes.windows(b32.len()).any(|w| w == b32.as_bytes()));
    }
    // The next step's code works.
    s.clock.advance(30);
    let (status, v) = post(
        &s,
        "/v1/mfa/totp/verify",
        Some(tok(&t2)),
        json!({"code": code(&secret, &s)}),
    )
    .await;
    assert_eq!(status, 200, "{v}");

    // Guessing: a burst, then 429 with Retry-After, whatever the codes.
    let b = user(142);
    let tb = sign_in(&s, &plain, &b, json!({})).await;
    let secret_b = enrol_totp(&s, tok(&tb)).await;
    let right = code(&secret_b, &s);
    let mut limited = None;
    for i in 0..20u32 {
        let guess = format!("{:06}", (i * 7919) % 1_000_000);
        if guess == right {
            continue;
        }
        let res = http()
            .post(format!("{}/v1/mfa/totp/verify", s.http()))
            .bearer_auth(tok(&tb))
            .json(&json!({"code": guess}))
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            assert!(res.headers().get("retry-after").is_some());
            limited = Some(i);
            break;
        }
        assert_eq!(res.status(), 403);
    }
    assert_eq!(
        limited,
        Some(keygate::limits::TOTP_BURST),
        "limited after the burst"
    );
    // Even the right code waits now.
    let (status, _) = post(
        &s,
        "/v1/mfa/totp/verify",
        Some(tok(&tb)),
        json!({"code": right}),
    )
    .await;
    assert_eq!(status, 429);
    s.stop().await;
}

#[tokio::test]
async fn a_step_up_raises_acr_for_a_bounded_time() {
    let s = serve().await;
    let plain = app(&s, false).await;
    let a = user(151);
    let t = sign_in(
        &s,
        &plain,
        &a,
        json!({"client_id": "cli", "access_type": "offline"}),
    )
    .await;
    assert_eq!(claims(&t)["acr"], "aal1");
    let secret = enrol_totp(&s, tok(&t)).await;
    let (status, up) = post(
        &s,
        "/v1/mfa/totp/verify",
        Some(tok(&t)),
        json!({"code": code(&secret, &s)}),
    )
    .await;
    assert_eq!(status, 200, "{up}");
    let c = claims(&up);
    assert_eq!(c["acr"], "aal2");
    let step_up = keygate::account::STEP_UP_TTL;
    assert!(c["exp"].as_i64().unwrap() <= s.clock.now() + step_up, "{c}");
    assert_eq!(up["session_id"], t["session_id"]);

    // Within the step-up, refreshed tokens stay aal2; after it, aal1 again.
    let refresh = |rt: Value| {
        post(
            &s,
            "/v1/token/refresh",
            None,
            json!({"refresh_token": rt, "client_id": "cli"}),
        )
    };
    let (status, r1) = refresh(t["refresh_token"].clone()).await;
    assert_eq!(status, 200, "{r1}");
    assert_eq!(claims(&r1)["acr"], "aal2");
    s.clock.advance(step_up + 1);
    let (status, r2) = refresh(r1["refresh_token"].clone()).await;
    assert_eq!(status, 200, "{r2}");
    assert_eq!(claims(&r2)["acr"], "aal1");
    assert_eq!(claims(&r2)["amr"], json!(["swk"]));
    assert_eq!(introspect(&s, &plain, tok(&r2)).await["acr"], "aal1");
    s.stop().await;
}

// The CLI runs as a blocking child process: a second worker keeps serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_enrols_totp_links_lists_and_removes() {
    let s = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).display().to_string();
    let (a, b, c) = (path("a.pem"), path("b.pem"), path("c.pem"));
    for k in [&a, &b, &c] {
        keygate(&["id", "new", "--key", k], true);
    }
    let url = s.http();
    let user = |key: &str| vec!["--url".to_owned(), url.clone(), "--key".into(), key.into()];
    let run = |head: &[&str], key: &str, extra: &[&str], ok: bool| {
        let mut args: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        args.extend(user(key));
        args.extend(extra.iter().map(|s| s.to_string()));
        keygate(&args.iter().map(String::as_str).collect::<Vec<_>>(), ok)
    };

    // TOTP first, while the account is A alone.
    let out = run(&["mfa", "totp", "enrol"], &a, &[], true);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .to_owned();
    assert!(out.contains("otpauth://totp/"));
    let secret = totp_rs::Secret::try_from_base32(&secret)
        .unwrap()
        .as_ref()
        .to_vec();
    let token = run(
        &["mfa", "totp", "verify", &code(&secret, &s)],
        &a,
        &[],
        true,
    );
    let c0 = keygate::token::decode_unverified(token.lines().next().unwrap()).unwrap();
    assert_eq!(c0["acr"], "aal2");

    // Linking now needs aal2: refused without --totp, done with it.
    let b_file = b.clone();
    let out = run(&["account", "link"], &a, &["--new-key", &b_file], false);
    assert!(out.contains("mfa_required"), "{out}");
    s.clock.advance(30);
    let code1 = code(&secret, &s);
    let args = [
        "--new-key",
        b_file.as_str(),
        "--label",
        "laptop",
        "--totp",
        &code1,
    ];
    assert!(run(&["account", "link"], &a, &args, true).contains("linked"));
    // The two-device way: A prints a link code, C accepts it with its own key.
    s.clock.advance(30);
    let code2 = code(&secret, &s);
    let c_id = keygate(&["id", "show", "--key", &c], true);
    let c_id = c_id
        .split_whitespace()
        .find(|w| w.starts_with("bbaarei"))
        .unwrap()
        .to_owned();
    let out = run(
        &["account", "link"],
        &a,
        &["--identity", &c_id, "--totp", &code2],
        true,
    );
    let link_url = out
        .lines()
        .find(|l| l.contains("#link="))
        .unwrap()
        .to_owned();
    let out = keygate(
        &[
            "account", "link", "--url", &url, "--key", &c, "--accept", &link_url,
        ],
        true,
    );
    assert!(out.contains(&c_id), "{out}");

    let out = run(&["account", "keys"], &b, &[], true);
    assert_eq!(out.matches("bbaarei").count(), 3, "{out}");
    assert!(
        out.contains("laptop") && out.contains("totp: true"),
        "{out}"
    );

    // Removing another key needs the second factor too.
    assert!(run(&["account", "remove", &c_id], &a, &[], false).contains("mfa_required"));
    s.clock.advance(30);
    let code3 = code(&secret, &s);
    assert!(run(&["account", "remove", &c_id], &a, &["--totp", &code3], true).contains("removed"));
    let out = run(&["account", "keys"], &a, &[], true);
    assert_eq!(out.matches("bbaarei").count(), 2, "{out}");
    s.stop().await;
}

#[tokio::test]
async fn split_mode_provider_forwards_the_account_endpoints() {
    let Split {
        hub,
        provider,
        origin,
        ..
    } = split().await;
    let key = user(161);
    let t = ws_login(
        &provider.ws_url("/ws/userauth"),
        Some(&origin),
        &key,
        json!({}),
    )
    .await;
    let token = t["value"].as_str().unwrap();
    let base = provider.http_url();
    let (status, keys) = json_of(
        http()
            .get(format!("{base}/v1/account/keys"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["keys"][0]["identity"], id(&key));
    let (status, v) = json_of(
        http()
            .delete(format!("{base}/v1/account/keys/{}", id(&key)))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("last_account_key"))
    );
    let (status, e) = json_of(
        http()
            .post(format!("{base}/v1/mfa/totp"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{e}");
    provider.stop().await;
    hub.stop().await;
}

/// A sign-in through the Hub's HTTP API that may be refused; status and body.
async fn try_sign_in(s: &TestServer, app: &App, key: &SigningKey) -> (u16, Value) {
    let (status, c) = app
        .post(s, "/v1/challenge", json!({"pubkey": id(key)}))
        .await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    let body = json!({"pubkey": id(key), "challenge": text, "sig": sign(key, text)});
    app.post(s, "/v1/token", body).await
}

#[tokio::test]
async fn a_recovery_key_lets_a_new_device_join_once_and_ends_the_old_sessions() {
    use keygate::client::account::AccountClient;
    use keygate::client::recovery;
    let s = serve().await;
    let app = app(&s, false).await;
    let (a, n, m, m2) = (user(171), user(173), user(174), user(175));
    let ta = sign_in(&s, &app, &a, json!({})).await;
    let acct = claims(&ta)["acct"].as_str().unwrap().to_owned();
    let ta2 = sign_in(&s, &app, &a, json!({})).await;

    // Created by the signed-in device: linked with the label `recovery`; a newer
    // one replaces it.
    let old = recovery::new_recovery_key();
    let rec =
        recovery::key_from_words(&recovery::words_of(&SigningKey::from_bytes(&[172; 32]))).unwrap();
    let client = AccountClient::new(&s.http(), tok(&ta));
    client.create_recovery_key(&a, &old).await.unwrap();
    let linked = client.create_recovery_key(&a, &rec).await.unwrap();
    assert_eq!(linked.account, acct);
    let (_, keys) = get(&s, "/v1/account/keys", tok(&ta)).await;
    let listed: Vec<(&str, &Value)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["identity"].as_str().unwrap(), &k["label"]))
        .collect();
    assert_eq!(
        listed,
        [
            (id(&a).as_str(), &Value::Null),
            (id(&rec).as_str(), &json!("recovery"))
        ]
    );

    // It is no second factor: the account may still change from aal1, and it
    // cannot raise a session or sign in.
    let (status, v) = mfa_by_key(&s, tok(&ta), &rec).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (status, v) = try_sign_in(&s, &app, &rec).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    assert!(!v.to_string().contains(&id(&rec)), "{v}");
    // Nor can a key that is no recovery key serve as one.
    let mut nc = AccountClient::new(&s.http(), tok(&sign_in(&s, &app, &n, json!({})).await));
    let e = nc.recover(&n, &a, None).await.unwrap_err().to_string();
    assert!(e.contains("forbidden"), "{e}");
    let e = nc.recover(&n, &old, None).await.unwrap_err().to_string();
    assert!(e.contains("forbidden"), "{e}");

    // The device is lost. A new one signed in with a key of its own (an account
    // of its own) joins with the words: same session, now aal2 in the account.
    let tn = sign_in(&s, &app, &n, json!({})).await;
    assert_ne!(claims(&tn)["acct"], json!(acct));
    let mut nc = AccountClient::new(&s.http(), tok(&tn));
    let t = nc.recover(&n, &rec, Some("new phone")).await.unwrap();
    let c = keygate::token::decode_unverified(&t.token).unwrap();
    assert_eq!(c["acct"], json!(acct));
    assert_eq!(c["sub"], json!(id(&n)));
    assert_eq!(c["sid"], claims(&tn)["sid"]);
    assert_eq!(
        (c["acr"].as_str(), &c["amr"]),
        (Some("aal2"), &json!(["swk", "mfa"]))
    );

    // Every old session ended, the other new-device session too; the recovery
    // key is spent; the events say so.
    for old in [&ta, &ta2] {
        let (status, v) = get(&s, "/v1/whoami", tok(old)).await;
        assert_eq!(status, 401, "{v}");
    }
    let (_, keys) = get(&s, "/v1/account/keys", &t.token).await;
    let ids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["identity"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id(&a), id(&n)]);
    assert_eq!(keys["keys"][1]["label"], "new phone");
    let e = nc.recover(&n, &rec, None).await.unwrap_err().to_string();
    assert!(e.contains("forbidden"), "{e}");
    let (status, ev) = get(&s, "/v1/account/events", &t.token).await;
    assert_eq!(status, 200, "{ev}");
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"recovery_used") && kinds.contains(&"recovery_key_created"),
        "{kinds:?}"
    );
    let used = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "recovery_used" && e["outcome"].is_null())
        .unwrap();
    assert_eq!(used["identity"], json!(id(&n)));

    // aal2 lets the new device remove the lost key (another key needs it now).
    let (status, v) = delete(&s, &format!("/v1/account/keys/{}", id(&a)), &t.token).await;
    assert_eq!(status, 200, "{v}");

    // A key whose own account holds other keys cannot join that way.
    let rec2 = recovery::new_recovery_key();
    nc.create_recovery_key(&n, &rec2).await.unwrap();
    let tm = sign_in(&s, &app, &m, json!({})).await;
    link(&s, tok(&tm), &m, &m2).await;
    let mut mc = AccountClient::new(&s.http(), tok(&tm));
    let e = mc.recover(&m, &rec2, None).await.unwrap_err().to_string();
    assert!(e.contains("key_in_other_account"), "{e}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_a_recovery_key_and_a_new_device_uses_it() {
    use std::io::Write;
    let s = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, n) = (dir.path().join("a.pem"), dir.path().join("n.pem"));
    let (a, n) = (a.to_str().unwrap(), n.to_str().unwrap());
    keygate(&["id", "new", "--key", a], true);
    keygate(&["id", "new", "--key", n], true);
    let url = s.http();
    let out = keygate(
        &["account", "recovery-key", "--url", &url, "--key", a],
        true,
    );
    let words = out.lines().next().unwrap().to_owned();
    assert_eq!(words.split(' ').count(), 24, "{out}");
    assert!(out.contains("shown once"), "{out}");

    let use_words = |words: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args([
                "account",
                "use-recovery-key",
                "--url",
                &url,
                "--key",
                n,
                "--json",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{words}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = use_words(&words.to_uppercase());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims(&t)["acr"], "aal2");
    // Spent; and a phrase with a broken checksum never reaches the server, nor
    // is it repeated.
    let again = use_words(&words);
    assert!(!again.status.success());
    // 24 × "abandon" is the zero entropy with checksum 0 (its own is 0x66).
    let out = use_words(&"abandon ".repeat(24));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("checksum"), "{err}");
    assert!(!err.contains("abandon"), "{err}");
    let keys = keygate(&["account", "keys", "--url", &url, "--key", n], true);
    assert_eq!(keys.matches("bbaarei").count(), 2, "{keys}");
    s.stop().await;
}
