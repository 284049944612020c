//! The audit trail (docs/audit.md): every kind of security event is recorded
//! after the action that causes it, never with a token, signature or secret; a
//! user sees only their own account's events at `GET /v1/account/events`; old
//! events are purged; `keygate audit` reads and purges the table.

use ed25519_dalek::SigningKey;
use keygate::store::{AuditEvent, AuditKind, AuditQuery, AuditRecord, Store};
use keygate::time::Clock;
use serde_json::{Value, json};

use crate::support::*;

fn store(s: &TestServer) -> &std::sync::Arc<dyn Store> {
    s.running.store.as_ref().unwrap()
}

/// Every event in the table once the queue has been written, newest first.
async fn events(s: &TestServer) -> Vec<AuditRecord> {
    s.running.hub.as_ref().unwrap().audit().flush().await;
    let q = AuditQuery {
        limit: 100_000,
        ..AuditQuery::default()
    };
    store(s).audit_events(&q).await.unwrap()
}

fn of_kind(all: &[AuditRecord], kind: AuditKind) -> Vec<&AuditEvent> {
    all.iter()
        .map(|r| &r.event)
        .filter(|e| e.kind == kind)
        .collect()
}

async fn app_with(
    s: &TestServer,
    edit: impl FnOnce(keygate::store::ApiKeyRecord) -> keygate::store::ApiKeyRecord,
) -> App {
    let (id, secret) = s.api_key_with(edit).await;
    App { id, secret }
}

/// A challenge for `key` through `app` answered with `sig`; status and body.
async fn try_sign_in(s: &TestServer, app: &App, key: &SigningKey, bad: bool) -> (u16, Value) {
    let (status, c) = app
        .post(s, "/v1/challenge", json!({"pubkey": id(key)}))
        .await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    let sig = if bad {
        sign(&user(250), text)
    } else {
        sign(key, text)
    };
    app.post(
        s,
        "/v1/token",
        json!({"pubkey": id(key), "challenge": text, "sig": sig}),
    )
    .await
}

#[tokio::test]
async fn every_kind_is_recorded_after_its_action_and_no_secret_is() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let s = serve_with(dir, |o| o.dev = true).await;
    // Everything secret this test sees; none may appear in the table.
    let mut secrets: Vec<String> = Vec::new();
    let app = app_with(&s, |k| keygate::store::ApiKeyRecord {
        max_sessions: 2,
        ..k
    })
    .await;
    secrets.push(app.secret.reveal().to_string());
    let (a, b) = (user(201), user(202));

    // signin_failed (with its code), then signin_succeeded.
    let (status, e) = try_sign_in(&s, &app, &a, true).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    let ta = sign_in(
        &s,
        &app,
        &a,
        json!({"client_id": "cli", "access_type": "offline"}),
    )
    .await;
    let access = tok(&ta).to_owned();
    let refresh = ta["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([access.clone(), refresh.clone()]);
    let all = events(&s).await;
    let failed = of_kind(&all, AuditKind::SigninFailed);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].outcome.as_deref(), Some("invalid_signature"));
    assert_eq!(failed[0].identity.as_deref(), Some(id(&a).as_str()));
    assert_eq!(failed[0].app.as_deref(), Some(app.id.as_str()));
    // The Hub's HTTP API is called by the app's backend: no user's address.
    assert_eq!(failed[0].address, None);
    let ok = of_kind(&all, AuditKind::SigninSucceeded);
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].session.as_deref(), ta["session_id"].as_str());
    assert!(
        ok[0]
            .account
            .as_deref()
            .is_some_and(|a| a.starts_with("acct_"))
    );
    assert_eq!(ok[0].outcome, None);
    // A challenge refused before any signature is a failed sign-in too, without
    // the input.
    let (status, _) = app
        .post(&s, "/v1/challenge", json!({"pubkey": "not-a-key-xyz"}))
        .await;
    assert_eq!(status, 400);
    let all = events(&s).await;
    let failed = of_kind(&all, AuditKind::SigninFailed);
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0].detail.as_deref(), Some("challenge"));
    assert_eq!(failed[0].identity, None);
    assert!(failed[0].outcome.is_some());
    secrets.push("not-a-key-xyz".into());

    // token_refreshed, then refresh_reuse_detected (the old token again).
    let (status, r) = post(
        &s,
        "/v1/token/refresh",
        None,
        json!({"refresh_token": refresh, "client_id": "cli"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    secrets.extend([
        tok(&r).to_owned(),
        r["refresh_token"].as_str().unwrap().to_owned(),
    ]);
    let (status, _) = post(
        &s,
        "/v1/token/refresh",
        None,
        json!({"refresh_token": refresh, "client_id": "cli"}),
    )
    .await;
    assert_eq!(status, 401);
    // A refused refresh is a token_refreshed event with its code (here the
    // session is gone with the reuse).
    let next = r["refresh_token"].as_str().unwrap();
    let (status, _) = post(
        &s,
        "/v1/token/refresh",
        None,
        json!({"refresh_token": next, "client_id": "cli"}),
    )
    .await;
    assert_eq!(status, 401);
    let all = events(&s).await;
    let refreshed = of_kind(&all, AuditKind::TokenRefreshed);
    assert_eq!(refreshed.len(), 2);
    assert_eq!(refreshed[1].outcome, None);
    assert_eq!(refreshed[0].outcome.as_deref(), Some("session_revoked"));
    assert_eq!(refreshed[0].session.as_deref(), ta["session_id"].as_str());
    // Every event of a request carries its client's address.
    assert!(
        refreshed
            .iter()
            .all(|e| e.address.as_deref() == Some("127.0.0.1"))
    );
    let reuse = of_kind(&all, AuditKind::RefreshReuseDetected);
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0].session.as_deref(), ta["session_id"].as_str());
    assert_eq!(reuse[0].address.as_deref(), Some("127.0.0.1"));

    // account_key_linked, mfa_verified and mfa_failed (by key), mfa_enrolled.
    let ta = sign_in(&s, &app, &a, json!({})).await;
    secrets.push(tok(&ta).to_owned());
    let (status, c) = post(
        &s,
        "/v1/account/link/challenge",
        Some(tok(&ta)),
        json!({"identity": id(&b)}),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    let text = c["challenge"].as_str().unwrap();
    let (sig, new_sig) = (sign(&a, text), sign(&b, text));
    secrets.extend([text.to_owned(), sig.clone(), new_sig.clone()]);
    let (status, v) = post(
        &s,
        "/v1/account/link",
        None,
        json!({"challenge": text, "sig": sig, "new_sig": new_sig, "label": "laptop"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for good in [false, true] {
        let (status, c) = post(
            &s,
            "/v1/mfa/challenge",
            Some(tok(&ta)),
            json!({"identity": id(&b)}),
        )
        .await;
        assert_eq!(status, 200, "{c}");
        let text = c["challenge"].as_str().unwrap();
        let sig = if good { sign(&b, text) } else { sign(&a, text) };
        secrets.extend([text.to_owned(), sig.clone()]);
        let (status, v) = post(
            &s,
            "/v1/mfa/key",
            Some(tok(&ta)),
            json!({"challenge": text, "sig": sig}),
        )
        .await;
        assert_eq!(status, if good { 200 } else { 401 }, "{v}");
        if good {
            secrets.push(tok(&v).to_owned());
        }
    }
    let (status, t) = post(&s, "/v1/mfa/totp", Some(tok(&ta)), json!({})).await;
    assert_eq!(status, 200, "{t}");
    let totp = t["secret"].as_str().unwrap().to_owned();
    let bytes = totp_rs::Secret::try_from_base32(&totp)
        .unwrap()
        .as_ref()
        .to_vec();
    let code = keygate::account::totp_code(&bytes, s.clock.now());
    // (The six-digit code itself is left out of the search below: digits that
    // short can occur by chance in an id or a time.)
    secrets.extend([totp, t["otpauth_uri"].as_str().unwrap().to_owned()]);
    let (status, v) = post(
        &s,
        "/v1/mfa/totp/verify",
        Some(tok(&ta)),
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    secrets.push(tok(&v).to_owned());
    let all = events(&s).await;
    let linked = of_kind(&all, AuditKind::AccountKeyLinked);
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].identity.as_deref(), Some(id(&b).as_str()));
    assert_eq!(linked[0].detail.as_deref(), Some("laptop"));
    let verified: Vec<_> = of_kind(&all, AuditKind::MfaVerified)
        .iter()
        .map(|e| e.detail.clone().unwrap())
        .collect();
    assert_eq!(verified, ["totp", "key"]);
    let mfa_failed = of_kind(&all, AuditKind::MfaFailed);
    assert_eq!(mfa_failed.len(), 1);
    assert_eq!(mfa_failed[0].outcome.as_deref(), Some("invalid_signature"));
    assert_eq!(of_kind(&all, AuditKind::MfaEnrolled).len(), 1);

    // The cap (2 sessions of one identity with this app): a third sign-in of b
    // ends the oldest. Then removing b ends b's sessions (key_removed).
    for _ in 0..3 {
        let t = sign_in(&s, &app, &b, json!({})).await;
        secrets.push(tok(&t).to_owned());
    }
    let (status, v) = delete(&s, &format!("/v1/account/keys/{}", id(&b)), tok(&ta)).await;
    assert_eq!(status, 200, "{v}");
    // session_revoked by the user, and a logout.
    let t1 = sign_in(&s, &app, &a, json!({})).await;
    secrets.push(tok(&t1).to_owned());
    let sid = t1["session_id"].as_str().unwrap();
    let (status, _) = delete(&s, &format!("/v1/sessions/{sid}"), tok(&ta)).await;
    assert_eq!(status, 204);
    let (status, v) = post(&s, "/v1/logout", Some(tok(&ta)), json!({"scope": "local"})).await;
    assert_eq!(status, 200, "{v}");

    // The administrator's side: API keys, sessions, signing keys.
    let st = store(&s).as_ref();
    let clock = &s.clock;
    let created = keygate::admin::create_api_key(
        st,
        clock,
        &mut keygate::entropy::os_rng(),
        keygate::admin::KeySpec {
            dev: true,
            ..keygate::admin::KeySpec::new("audit dev")
        },
    )
    .await
    .unwrap();
    secrets.push(created.secret.reveal().to_string());
    keygate::admin::set_origins(st, clock, &created.id, &["https://a.example".into()])
        .await
        .unwrap();
    let a_id = keygate::Identity::from(&a);
    let t2 = sign_in(&s, &app, &a, json!({})).await;
    secrets.push(tok(&t2).to_owned());
    let n = keygate::admin::revoke_sessions(st, clock, &a_id, None)
        .await
        .unwrap();
    assert!(n >= 1);
    keygate::hub::rotate_signing_key(st, &keygate::entropy::OsEntropy, clock.now(), false)
        .await
        .unwrap();
    // dev_token_minted, then the dev key is revoked.
    let dev = App {
        id: created.id.clone(),
        secret: created.secret.clone(),
    };
    let (status, t) = dev
        .post(&s, "/v1/dev/token", json!({"pubkey": id(&a)}))
        .await;
    assert_eq!(status, 200, "{t}");
    secrets.push(tok(&t).to_owned());
    keygate::admin::revoke_api_key(st, clock, &created.id)
        .await
        .unwrap();

    let all = events(&s).await;
    let by: Vec<String> = of_kind(&all, AuditKind::SessionRevoked)
        .iter()
        .rev()
        .map(|e| e.detail.clone().unwrap())
        .collect();
    assert_eq!(by, ["cap", "key_removed", "user", "admin"]);
    let removed = of_kind(&all, AuditKind::AccountKeyRemoved);
    assert_eq!(removed[0].identity.as_deref(), Some(id(&b).as_str()));
    for kind in [
        AuditKind::AccountKeyRemoved,
        AuditKind::AccountKeyLinked,
        AuditKind::Logout,
        AuditKind::MfaVerified,
        AuditKind::MfaEnrolled,
    ] {
        let e = of_kind(&all, kind)[0];
        assert_eq!(e.address.as_deref(), Some("127.0.0.1"), "{kind}");
    }
    assert_eq!(
        of_kind(&all, AuditKind::Logout)[0].detail.as_deref(),
        Some("local")
    );
    assert_eq!(
        of_kind(&all, AuditKind::ApiKeyCreated)[0].app.as_deref(),
        Some(created.id.as_str())
    );
    assert_eq!(
        of_kind(&all, AuditKind::ApiKeyPolicyChanged)[0]
            .detail
            .as_deref(),
        Some("origins")
    );
    assert_eq!(of_kind(&all, AuditKind::ApiKeyRevoked).len(), 1);
    assert_eq!(of_kind(&all, AuditKind::SigningKeyRotated).len(), 1);
    let minted = of_kind(&all, AuditKind::DevTokenMinted);
    assert_eq!(minted[0].identity.as_deref(), Some(id(&a).as_str()));
    // recovery_key_created, then recovery_used (and the sessions it ended).
    let (c, rec, d) = (user(203), user(204), user(205));
    let tc = sign_in(&s, &app, &c, json!({})).await;
    let client = keygate::client::account::AccountClient::new(&s.http(), tok(&tc));
    client.create_recovery_key(&c, &rec).await.unwrap();
    let td = sign_in(&s, &app, &d, json!({})).await;
    let mut dc = keygate::client::account::AccountClient::new(&s.http(), tok(&td));
    let t = dc.recover(&d, &rec, None).await.unwrap();
    let words = keygate::client::recovery::words_of(&rec);
    secrets.extend([tok(&tc).to_owned(), tok(&td).to_owned(), t.token.clone()]);
    // The phrase as a whole (single words are ordinary English: "account" is one).
    secrets.push(words);
    let all = events(&s).await;
    let used = of_kind(&all, AuditKind::RecoveryUsed);
    assert_eq!(used[0].identity.as_deref(), Some(id(&d).as_str()));
    let acct = keygate::token::decode_unverified(tok(&tc)).unwrap()["acct"].clone();
    assert_eq!(used[0].account.as_deref(), acct.as_str());
    assert_eq!(used[0].detail.as_deref(), Some("revoked 1"));
    assert_eq!(
        of_kind(&all, AuditKind::SessionRevoked)[0]
            .detail
            .as_deref(),
        Some("recovery")
    );
    assert_eq!(
        of_kind(&all, AuditKind::RecoveryKeyCreated)[0]
            .identity
            .as_deref(),
        Some(id(&rec).as_str())
    );
    for kind in AuditKind::ALL {
        if kind == AuditKind::AccountRecovered {
            continue; // the operator's command: its own test below
        }
        assert!(!of_kind(&all, kind).is_empty(), "no {kind} event");
    }
    // Ids grow with time.
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));

    // The whole table, every column, holds none of the secrets seen.
    let table: Vec<String> = all
        .iter()
        .map(|r| keygate::audit::to_json(Some(r.id), &r.event).to_string())
        .collect();
    let table = table.join("\n");
    assert!(secrets.len() > 20);
    for secret in &secrets {
        assert!(secret.len() >= 6, "{secret}");
        assert!(
            !table.contains(secret.as_str()),
            "the audit table holds a secret"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_user_sees_only_their_own_accounts_events() {
    let s = serve().await;
    let app = app_with(&s, |k| k).await;
    let (a, c) = (user(211), user(212));
    // A failed sign-in names only the key: it is shown to that key's account.
    let (status, _) = try_sign_in(&s, &app, &a, true).await;
    assert_eq!(status, 401);
    let ta = sign_in(&s, &app, &a, json!({})).await;
    let ta2 = sign_in(&s, &app, &a, json!({})).await;
    let tc = sign_in(&s, &app, &c, json!({})).await;
    s.running.hub.as_ref().unwrap().audit().flush().await;

    let (status, mine) = get(&s, "/v1/account/events", tok(&ta)).await;
    assert_eq!(status, 200, "{mine}");
    let list = mine["events"].as_array().unwrap();
    let kinds: Vec<&str> = list.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["signin_succeeded", "signin_succeeded", "signin_failed"]
    );
    assert!(list.iter().all(|e| e["identity"] == id(&a)));
    assert_eq!(list[0]["session_id"], ta2["session_id"]);
    assert_eq!(list[2]["outcome"], "invalid_signature");
    assert!(mine["next_before"].is_null());
    let (status, theirs) = get(&s, "/v1/account/events", tok(&tc)).await;
    assert_eq!(status, 200);
    let list = theirs["events"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["identity"], id(&c));

    // Pages, newest first.
    let (status, p1) = get(&s, "/v1/account/events?limit=2", tok(&ta)).await;
    assert_eq!(status, 200);
    assert_eq!(p1["events"].as_array().unwrap().len(), 2);
    let next = p1["next_before"].as_i64().unwrap();
    assert_eq!(Some(next), p1["events"][1]["id"].as_i64());
    let (status, p2) = get(
        &s,
        &format!("/v1/account/events?limit=2&before={next}"),
        tok(&ta),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(p2["events"].as_array().unwrap().len(), 1);
    assert_eq!(p2["events"][0]["kind"], "signin_failed");
    // Another account's cursor shows nothing of that account.
    let (_, none) = get(
        &s,
        &format!("/v1/account/events?before={}", next + 100),
        tok(&tc),
    )
    .await;
    assert!(
        none["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["identity"] == id(&c))
    );

    // Bad parameters are named, not echoed; no token is a 401 first.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("before=x%3Cb", "before"),
    ] {
        let (status, e) = get(&s, &format!("/v1/account/events?{query}"), tok(&ta)).await;
        assert_eq!(status, 400, "{e}");
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
        assert!(!e.to_string().contains("<b"), "{e}");
    }
    let res = http()
        .get(format!("{}/v1/account/events?limit=0", s.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    s.stop().await;
}

/// A sign-in's event, and its cap's, are written in the sign-in's own
/// transaction: in the table when its token is issued, with no flush of the
/// audit queue, and in order (the cap's before the sign-in's).
#[tokio::test]
async fn a_sign_in_is_in_the_trail_as_soon_as_its_token_is_issued() {
    let s = serve().await;
    let app = app_with(&s, |k| keygate::store::ApiKeyRecord {
        max_sessions: 1,
        ..k
    })
    .await;
    let a = user(232);
    let first = sign_in(&s, &app, &a, json!({})).await;
    let second = sign_in(&s, &app, &a, json!({})).await;
    // The table as it is, without `events()`'s flush.
    let q = AuditQuery {
        limit: 100,
        ..AuditQuery::default()
    };
    let all = store(&s).audit_events(&q).await.unwrap();
    let trail: Vec<(AuditKind, Option<&str>, Option<&str>)> = all
        .iter()
        .rev()
        .map(|r| &r.event)
        .filter(|e| e.identity.as_deref() == Some(id(&a).as_str()))
        .map(|e| (e.kind, e.session.as_deref(), e.detail.as_deref()))
        .collect();
    assert_eq!(
        trail,
        [
            (
                AuditKind::SigninSucceeded,
                first["session_id"].as_str(),
                Some("new")
            ),
            (AuditKind::SessionRevoked, None, Some("cap")),
            (
                AuditKind::SigninSucceeded,
                second["session_id"].as_str(),
                Some("new")
            ),
        ]
    );
    let signed: Vec<&AuditEvent> = of_kind(&all, AuditKind::SigninSucceeded);
    assert_eq!(signed[0].account, signed[1].account);
    assert!(
        signed[0]
            .account
            .as_deref()
            .is_some_and(|a| a.starts_with("acct_"))
    );
    assert!(
        signed
            .iter()
            .all(|e| e.app.as_deref() == Some(app.id.as_str()))
    );
    s.stop().await;
}

#[tokio::test]
async fn old_events_are_purged_and_the_cli_reads_and_purges() {
    // The server's own purger (first round at start) would race this test's
    // 100-day-old events; with retention off only the calls below purge.
    let s = serve_with(std::sync::Arc::new(tempfile::tempdir().unwrap()), |o| {
        o.audit_retention_days = 0
    })
    .await;
    let app = app_with(&s, |k| k).await;
    let a = user(221);
    let now = s.clock.now();
    let old = AuditEvent::new(AuditKind::Logout, now - 100 * 86_400).identity(id(&a));
    store(&s).append_audit(&[old.clone(), old]).await.unwrap();
    sign_in(&s, &app, &a, json!({})).await;
    assert_eq!(events(&s).await.len(), 2 + 1);
    let gone = keygate::store::audit::purge_audit(
        store(&s).as_ref(),
        now - 90 * 86_400,
        1,
        10,
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(gone, 2);
    let left = events(&s).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event.kind, AuditKind::SigninSucceeded);

    if !on_sqlite("keygate audit reads the SQLite file of a stopped server") {
        s.stop().await;
        return;
    }
    let dir = s.stop().await;
    let db = db_url(&dir);
    let out = keygate(
        &[
            "audit",
            "--database",
            &db,
            "--json",
            "--kind",
            "signin_succeeded",
        ],
        true,
    );
    let line: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line["kind"], "signin_succeeded");
    assert_eq!(line["identity"], id(&a));
    assert_eq!(line["app"], app.id);
    let out = keygate(
        &[
            "audit",
            "--database",
            &db,
            "--identity",
            &id(&a),
            "--since",
            "1h",
        ],
        true,
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("signin_succeeded"), "{out}");
    let out = keygate(&["audit", "--database", &db, "--kind", "nonsense"], false);
    assert!(out.contains("--kind must be one of"), "{out}");
    let out = keygate(
        &[
            "audit",
            "purge",
            "--database",
            &db,
            "--before",
            "2999-01-01T00:00:00Z",
        ],
        true,
    );
    assert!(out.contains("purged 1 audit event"), "{out}");
    let out = keygate(&["audit", "--database", &db], true);
    assert_eq!(out.trim(), "");
}

#[tokio::test]
async fn audit_stdout_streams_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Keygate::start_with(
        &db_url(&dir),
        &["--audit-stdout"],
        // Logs (stderr) as busy as they get, to show the stream stays apart.
        &[("RUST_LOG", "debug")],
    );
    let stdout = server.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut out).unwrap();
        out
    });
    let origin = format!("http://127.0.0.1:{}", server.addr.port());
    let ws_url = format!("ws://{}/ws/userauth", server.addr);
    let key = user(231);
    for _ in 0..3 {
        ws_login(&ws_url, Some(&origin), &key, json!({})).await;
    }
    // A stop writes what is queued; the pipe then ends.
    let log = server.stop().await;
    assert!(!log.is_empty());
    let out = reader.join().unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is one JSON object"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    for e in &lines {
        assert_eq!(e["kind"], "signin_succeeded");
        assert_eq!(e["identity"], id(&key));
        // Written in the sign-in's transaction, printed with its account.
        assert!(
            e["account_id"]
                .as_str()
                .is_some_and(|a| a.starts_with("acct_")),
            "{e}"
        );
        // The Provider's socket saw the user's own address.
        assert_eq!(e["address"], "127.0.0.1");
        assert!(e["at"].is_string() && e["at_unix"].is_i64(), "{e}");
    }
}

#[tokio::test]
async fn an_operator_recovery_links_the_new_key_and_ends_every_session() {
    let s = serve().await;
    let app = app_with(&s, |k| k).await;
    let (a, b, fresh, other) = (user(241), user(242), user(243), user(244));
    let ta = sign_in(&s, &app, &a, json!({})).await;
    let acct = keygate::token::decode_unverified(tok(&ta)).unwrap()["acct"]
        .as_str()
        .unwrap()
        .to_owned();
    // The new device signed in once already: a lone key, it may move.
    sign_in(&s, &app, &fresh, json!({})).await;
    let st = store(&s).as_ref();
    let clock = &s.clock;
    let n = keygate::admin::recover_account(st, clock, &acct, &keygate::Identity::from(&fresh))
        .await
        .unwrap();
    assert_eq!(n, 2, "a's session and the new key's own");
    let (status, _) = get(&s, "/v1/whoami", tok(&ta)).await;
    assert_eq!(status, 401);
    let tf = sign_in(&s, &app, &fresh, json!({})).await;
    let c = keygate::token::decode_unverified(tok(&tf)).unwrap();
    assert_eq!(c["acct"], acct);
    let all = events(&s).await;
    let rec = of_kind(&all, AuditKind::AccountRecovered);
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].account.as_deref(), Some(acct.as_str()));
    assert_eq!(rec[0].identity.as_deref(), Some(id(&fresh).as_str()));
    // The account's own event list shows it to the new key.
    let (status, v) = get(&s, "/v1/account/events?limit=5", tok(&tf)).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "account_recovered")
    );

    // Refused: an unknown account; a key in another account with other keys.
    let unknown =
        keygate::admin::recover_account(st, clock, "acct_none", &keygate::Identity::from(&other))
            .await;
    assert_eq!(unknown, Err(keygate::admin::AdminError::NoSuchAccount));
    let tb = sign_in(&s, &app, &b, json!({})).await;
    let tb_acct = keygate::token::decode_unverified(tok(&tb)).unwrap()["acct"]
        .as_str()
        .unwrap()
        .to_owned();
    keygate::admin::recover_account(st, clock, &tb_acct, &keygate::Identity::from(&other))
        .await
        .unwrap();
    let taken =
        keygate::admin::recover_account(st, clock, &acct, &keygate::Identity::from(&other)).await;
    assert_eq!(taken, Err(keygate::admin::AdminError::KeyInOtherAccount));

    if on_sqlite("keygate account recover runs on the SQLite file") {
        let dir = s.stop().await;
        let db = db_url(&dir);
        let out = keygate(
            &[
                "account",
                "recover",
                "--database",
                &db,
                "--account",
                &acct,
                "--new-identity",
                &id(&a),
            ],
            true,
        );
        assert!(
            out.contains(&format!("linked {} to account {acct}", id(&a))),
            "{out}"
        );
        let out = keygate(
            &[
                "account",
                "recover",
                "--database",
                &db,
                "--account",
                "acct_x",
                "--new-identity",
                &id(&a),
            ],
            false,
        );
        assert!(out.contains("no account acct_x"), "{out}");
    } else {
        s.stop().await;
    }
}
