//! Tests of the admin operations on a real SQLite store with a fixed clock.

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::{NewSession, OAuthStore, RedeemOutcome, Redemption};
use crate::time::ManualClock;
use rand::SeedableRng;

const NOW: i64 = 1_795_430_809;

/// A fresh SQLite store (in a directory that lives as long as the first value),
/// a clock stopped at `NOW` and a seeded RNG.
async fn setup() -> (
    tempfile::TempDir,
    SqliteStore,
    ManualClock,
    rand::rngs::StdRng,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db").display().to_string())
        .await
        .unwrap();
    let rng = rand::rngs::StdRng::seed_from_u64(14);
    (dir, store, ManualClock::new(NOW), rng)
}

/// A sign-in at `NOW` of `subject` with `app` (through `client_id`), creating
/// session `id` that ends at `expires_at`.
fn sign_in_at(
    nonce: u8,
    id: &str,
    subject: &str,
    app: &str,
    client_id: Option<&str>,
    expires_at: i64,
) -> Redemption {
    Redemption {
        nonce_id: [nonce; 16],
        nonce_expires_at: NOW + 60,
        session: NewSession {
            id: id.into(),
            subject: subject.into(),
            api_key: app.into(),
            client_id: client_id.map(str::to_owned),
            scope: String::new(),
            created_at: NOW,
            expires_at,
            idle_timeout: 3600,
            user_agent: None,
            address: None,
            jkt: None,
        },
        refresh: None,
        renew: None,
        new_account: format!("kga_{nonce}"),
        event: None,
        keep: None,
    }
}

async fn mfa_of(store: &SqliteStore, key: &str) -> bool {
    use crate::store::AccountStore;
    store
        .sign_in_context("bbaareisubject", key)
        .await
        .unwrap()
        .mfa_required
}

#[tokio::test]
async fn a_created_key_is_stored_as_specified_at_the_clock_time() {
    let (_dir, store, clock, mut rng) = setup().await;
    let spec = KeySpec {
        scopes: parse_scopes("read, write,,admin"),
        can_broker: true,
        policy: SessionPolicy {
            access_ttl: 600,
            session_ttl: 7200,
            idle_timeout: 900,
        },
        mfa: MfaPolicy::Required,
        origins: vec!["https://app.example".into()],
        introspect_any: true,
        max_sessions: 7,
        dev: true,
        ..KeySpec::new("app")
    };
    let created = create_api_key(&store, &clock, &mut rng, spec.clone())
        .await
        .unwrap();
    assert!(apikey::valid_key_id(&created.id));
    let keys = list_api_keys(&store).await.unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k.id, created.id);
    assert_eq!(k.name, "app");
    assert!(
        k.secret == created.secret,
        "the secret shown is the one stored"
    );
    assert_eq!(k.scopes, ["read", "write", "admin"]);
    assert!(k.can_broker && k.introspect_any && k.dev);
    assert_eq!(k.policy, spec.policy);
    assert_eq!(k.origins, spec.origins);
    assert_eq!(k.max_sessions, 7);
    assert_eq!((k.created_at, k.revoked_at), (NOW, None));
    assert!(mfa_of(&store, &k.id).await);

    // The defaults: no MFA.
    let plain = create_api_key(&store, &clock, &mut rng, KeySpec::new("plain"))
        .await
        .unwrap();
    assert!(!mfa_of(&store, &plain.id).await);
}

#[tokio::test]
async fn a_key_out_of_policy_is_refused_and_nothing_is_written() {
    let (_dir, store, clock, mut rng) = setup().await;
    let policy = |access_ttl, session_ttl, idle_timeout| KeySpec {
        policy: SessionPolicy {
            access_ttl,
            session_ttl,
            idle_timeout,
        },
        ..KeySpec::new("app")
    };
    let refused = [
        (policy(59, 3600, 60), AdminError::InvalidPolicy),
        (policy(86_401, 90_000, 60), AdminError::InvalidPolicy),
        (policy(3600, 3599, 60), AdminError::InvalidPolicy),
        (policy(3600, 3600, 0), AdminError::InvalidPolicy),
        (
            KeySpec {
                origins: vec!["https://ok.example".into(), "app.example".into()],
                ..KeySpec::new("app")
            },
            AdminError::InvalidOrigin,
        ),
        (
            KeySpec {
                max_sessions: 0,
                ..KeySpec::new("app")
            },
            AdminError::InvalidMaxSessions,
        ),
        (
            KeySpec {
                max_sessions: MAX_SESSIONS_LIMIT + 1,
                ..KeySpec::new("app")
            },
            AdminError::InvalidMaxSessions,
        ),
    ];
    for (spec, want) in refused {
        let got = create_api_key(&store, &clock, &mut rng, spec.clone()).await;
        assert_eq!(got.unwrap_err(), want, "{spec:?}");
    }
    assert!(list_api_keys(&store).await.unwrap().is_empty());
    // The bounds themselves pass.
    for spec in [policy(60, 60, 1), policy(86_400, 86_400, 1)] {
        create_api_key(&store, &clock, &mut rng, spec)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_mfa_policy_of_an_unknown_key_is_refused_and_not_recorded() {
    let (_dir, store, clock, mut rng) = setup().await;
    let got = set_mfa_policy(&store, &clock, "kgk_later", MfaPolicy::Required).await;
    assert_eq!(got, Err(AdminError::NoSuchKey));
    // A key that gets this id afterwards does not inherit a policy.
    let secret = apikey::generate(&mut rng).secret;
    store
        .insert_api_key(ApiKeyRecord::new(
            "kgk_later".into(),
            "later".into(),
            secret,
            NOW,
        ))
        .await
        .unwrap();
    assert!(!mfa_of(&store, "kgk_later").await);

    set_mfa_policy(&store, &clock, "kgk_later", MfaPolicy::Required)
        .await
        .unwrap();
    assert!(mfa_of(&store, "kgk_later").await);
    set_mfa_policy(&store, &clock, "kgk_later", MfaPolicy::Off)
        .await
        .unwrap();
    assert!(!mfa_of(&store, "kgk_later").await);
    // A revoked key is still a key: its policy may change.
    revoke_api_key(&store, &clock, "kgk_later").await.unwrap();
    set_mfa_policy(&store, &clock, "kgk_later", MfaPolicy::Required)
        .await
        .unwrap();
    assert!(mfa_of(&store, "kgk_later").await);
}

#[test]
fn mfa_policies_by_name() {
    for p in [MfaPolicy::Off, MfaPolicy::Required] {
        assert_eq!(MfaPolicy::from_name(p.as_str()), Some(p));
    }
    assert_eq!(MfaPolicy::from_name("Required"), None);
    assert_eq!(MfaPolicy::from_name(""), None);
}

async fn origins_of(store: &SqliteStore, id: &str) -> Vec<String> {
    store.api_key(id).await.unwrap().unwrap().origins
}

#[tokio::test]
async fn origins_are_checked_and_replaced() {
    let (_dir, store, clock, mut rng) = setup().await;
    let spec = KeySpec {
        origins: vec!["https://a.example".into()],
        ..KeySpec::new("app")
    };
    let id = create_api_key(&store, &clock, &mut rng, spec)
        .await
        .unwrap()
        .id;
    let bad = vec!["https://b.example".into(), "b.example".into()];
    assert_eq!(
        set_origins(&store, &clock, &id, &bad).await,
        Err(AdminError::InvalidOrigin)
    );
    assert_eq!(origins_of(&store, &id).await, ["https://a.example"]);
    let unknown = set_origins(&store, &clock, "kgk_none", &["https://c.example".into()]).await;
    assert_eq!(unknown, Err(AdminError::NoSuchKey));
    let two = vec!["https://b.example".into(), "http://localhost:8080".into()];
    set_origins(&store, &clock, &id, &two).await.unwrap();
    assert_eq!(origins_of(&store, &id).await, two);
    set_origins(&store, &clock, &id, &[]).await.unwrap();
    assert!(origins_of(&store, &id).await.is_empty());
}

#[tokio::test]
async fn revocation_takes_the_clock_time_and_happens_once() {
    let (_dir, store, clock, mut rng) = setup().await;
    let id = create_api_key(&store, &clock, &mut rng, KeySpec::new("app"))
        .await
        .unwrap()
        .id;
    clock.advance(90);
    revoke_api_key(&store, &clock, &id).await.unwrap();
    let k = store.api_key(&id).await.unwrap().unwrap();
    assert_eq!(k.revoked_at, Some(NOW + 90));
    clock.advance(10);
    assert_eq!(
        revoke_api_key(&store, &clock, &id).await,
        Err(AdminError::NoLiveKey)
    );
    let k = store.api_key(&id).await.unwrap().unwrap();
    assert_eq!(k.revoked_at, Some(NOW + 90), "the first revocation stands");
    assert_eq!(
        revoke_api_key(&store, &clock, "kgk_none").await,
        Err(AdminError::NoLiveKey)
    );
}

#[tokio::test]
async fn sessions_are_listed_with_their_state_and_revoked_by_the_clock() {
    let (_dir, store, clock, mut rng) = setup().await;
    let app = create_api_key(&store, &clock, &mut rng, KeySpec::new("app"))
        .await
        .unwrap()
        .id;
    let user = Identity::from(&ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
    let other = Identity::from(&ed25519_dalek::SigningKey::from_bytes(&[4; 32]));
    let sign_in = |nonce: u8, id: &str, subject: &Identity, expires_at| {
        sign_in_at(nonce, id, &subject.to_string(), &app, None, expires_at)
    };
    for r in [
        sign_in(1, "s_short", &user, NOW + 100),
        sign_in(2, "s_one", &user, NOW + 1000),
        sign_in(3, "s_two", &user, NOW + 1000),
        sign_in(4, "s_other", &other, NOW + 1000),
    ] {
        assert!(matches!(
            store.redeem(r).await,
            Ok(RedeemOutcome::Created(_))
        ));
    }
    clock.advance(100);
    let state = |views: Vec<SessionView>| {
        let mut v: Vec<(String, Option<crate::Error>)> =
            views.into_iter().map(|v| (v.session.id, v.ended)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let listed = state(sessions_of(&store, &clock, &user).await.unwrap());
    assert_eq!(
        listed,
        [
            ("s_one".into(), None),
            ("s_short".into(), Some(crate::Error::SessionExpired)),
            ("s_two".into(), None),
        ]
    );
    let one = revoke_sessions(&store, &clock, &user, Some("s_one")).await;
    assert_eq!(one, Ok(1));
    let all = revoke_sessions(&store, &clock, &user, None).await;
    assert_eq!(all, Ok(2), "s_two and the expired s_short: not yet revoked");
    let listed = state(sessions_of(&store, &clock, &user).await.unwrap());
    assert_eq!(listed[0].1, Some(crate::Error::SessionRevoked));
    assert_eq!(listed[2].1, Some(crate::Error::SessionRevoked));
    let theirs = sessions_of(&store, &clock, &other).await.unwrap();
    assert_eq!(theirs[0].ended, None, "another identity's session stays");
    // Another identity's session id revokes nothing.
    let foreign = revoke_sessions(&store, &clock, &user, Some("s_other")).await;
    assert_eq!(foreign, Ok(0));
}

const CB: &str = "https://app.example/cb";

#[tokio::test]
async fn a_client_is_stored_with_only_the_hash_of_its_secret_shown_once() {
    let (_dir, store, clock, mut rng) = setup().await;
    let spec = NewClient {
        post_logout_redirect_uris: vec!["https://app.example/bye".into()],
        first_party: true,
        alg: "ES256".into(),
        ..NewClient::new("Notes", CB)
    };
    let created = create_client(&store, &clock, &mut rng, spec).await.unwrap();
    let secret = created
        .secret
        .clone()
        .expect("a confidential client has a secret");
    let c = &created.record;
    assert!(c.id.starts_with("kgc_") && c.id.len() == 26, "{}", c.id);
    assert!(crate::session::valid_id(&c.id[4..]));
    assert!(secret.starts_with("kgcs_") && secret.len() == 48);
    assert!(crate::session::valid_id(&secret[5..27]));
    let stored = store.oauth_client(&c.id).await.unwrap().unwrap();
    assert_eq!(&stored, c);
    assert_eq!(
        stored.secret_hash,
        Some(crate::session::hash_secret(&secret))
    );
    assert_eq!(stored.scopes, DEFAULT_CLIENT_SCOPES);
    assert_eq!(stored.redirect_uris, [CB]);
    assert_eq!(
        stored.post_logout_redirect_uris,
        ["https://app.example/bye"]
    );
    assert_eq!((stored.alg.as_str(), stored.first_party), ("ES256", true));
    assert_eq!((stored.created_at, stored.revoked_at), (NOW, None));
    // Its own app: a live key named after it that may carry its scopes.
    let app = store.api_key(&stored.app).await.unwrap().unwrap();
    assert_eq!(app.name, "oidc:Notes");
    assert_eq!(app.scopes, DEFAULT_CLIENT_SCOPES);
    assert_eq!(app.revoked_at, None);
    // Neither the secret nor its hash is in what a log would print.
    let hash_bytes = format!("{:?}", stored.secret_hash.unwrap());
    for printed in [format!("{created:?}"), format!("{stored:?}")] {
        assert!(!printed.contains(&secret) && !printed.contains(&hash_bytes[1..20]));
        assert!(printed.contains(&c.id), "{printed}");
    }
    // A second client gets other values.
    let again = create_client(&store, &clock, &mut rng, NewClient::new("Notes", CB))
        .await
        .unwrap();
    assert_ne!(again.record.id, c.id);
    assert_ne!(again.secret.as_deref(), Some(secret.as_str()));
    assert_ne!(again.record.app, c.app);
    assert_eq!(list_clients(&store).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_public_client_has_no_secret_and_may_use_an_existing_app() {
    let (_dir, store, clock, mut rng) = setup().await;
    let app = create_api_key(&store, &clock, &mut rng, KeySpec::new("web"))
        .await
        .unwrap()
        .id;
    let spec = NewClient {
        public: true,
        app: Some(app.clone()),
        scopes: parse_scopes("openid read,read"),
        redirect_uris: vec![
            "http://127.0.0.1:8080/cb".into(),
            "http://[::1]/cb".into(),
            "http://localhost:3000/cb?x=1".into(),
        ],
        ..NewClient::new("Desk app", CB)
    };
    let created = create_client(&store, &clock, &mut rng, spec.clone())
        .await
        .unwrap();
    assert_eq!(created.secret, None);
    let stored = store
        .oauth_client(&created.record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secret_hash, None);
    assert_eq!(stored.app, app);
    assert_eq!(stored.scopes, ["openid", "read"], "duplicates dropped");
    assert_eq!(
        stored.redirect_uris, spec.redirect_uris,
        "stored as written"
    );
    assert_eq!(list_api_keys(&store).await.unwrap().len(), 1, "no new key");
}

#[tokio::test]
async fn a_client_out_of_bounds_is_refused_and_nothing_is_written() {
    let (_dir, store, clock, mut rng) = setup().await;
    let revoked = create_api_key(&store, &clock, &mut rng, KeySpec::new("old"))
        .await
        .unwrap()
        .id;
    revoke_api_key(&store, &clock, &revoked).await.unwrap();
    let named = |name: &str| NewClient::new(name, CB);
    let redirect = |uri: &str| NewClient::new("app", uri);
    let long = format!("https://app.example/{}", "a".repeat(2029));
    assert_eq!(long.len(), MAX_CLIENT_URI_LEN + 1);
    let mut refused = vec![
        (named(""), AdminError::InvalidClientName),
        (named(&"n".repeat(65)), AdminError::InvalidClientName),
        (named(" Notes"), AdminError::InvalidClientName),
        (named("No\u{202E}tes"), AdminError::InvalidClientName),
        (named("No\ntes"), AdminError::InvalidClientName),
        (
            NewClient {
                redirect_uris: Vec::new(),
                ..named("app")
            },
            AdminError::NoRedirectUri,
        ),
        (redirect(&long), AdminError::InvalidRedirectUri),
    ];
    for bad in [
        "http://app.example/cb",
        "http://127.0.0.2/cb",
        "http://localhost.example/cb",
        "https://app.example/cb#top",
        "https://app.example/cb#",
        "https://user:pw@app.example/cb",
        "https://app.example/a b",
        " https://app.example/cb",
        "/cb",
        "app.example/cb",
        "ftp://app.example/cb",
        "javascript:alert(1)",
        "https://app.example/\u{e9}",
    ] {
        refused.push((redirect(bad), AdminError::InvalidRedirectUri));
    }
    refused.extend([
        (
            NewClient {
                post_logout_redirect_uris: vec!["http://app.example/bye".into()],
                ..named("app")
            },
            AdminError::InvalidPostLogoutRedirectUri,
        ),
        (
            NewClient {
                alg: "HS256".into(),
                ..named("app")
            },
            AdminError::InvalidAlg,
        ),
        (
            NewClient {
                alg: "rs256".into(),
                ..named("app")
            },
            AdminError::InvalidAlg,
        ),
        (
            NewClient {
                scopes: vec!["openid".into(), "a\"b".into()],
                ..named("app")
            },
            AdminError::InvalidScope,
        ),
        (
            NewClient {
                scopes: vec!["open id".into()],
                ..named("app")
            },
            AdminError::InvalidScope,
        ),
        (
            NewClient {
                scopes: vec![String::new()],
                ..named("app")
            },
            AdminError::InvalidScope,
        ),
        (
            NewClient {
                scopes: vec!["profile".into(), "read".into()],
                ..named("app")
            },
            AdminError::NoOpenidScope,
        ),
        (
            NewClient {
                app: Some("kgk_none".into()),
                ..named("app")
            },
            AdminError::NoLiveKey,
        ),
        (
            NewClient {
                app: Some(revoked.clone()),
                ..named("app")
            },
            AdminError::NoLiveKey,
        ),
    ]);
    for (spec, want) in refused {
        let got = create_client(&store, &clock, &mut rng, spec.clone()).await;
        assert_eq!(got.unwrap_err(), want, "{spec:?}");
    }
    assert!(list_clients(&store).await.unwrap().is_empty());
    assert_eq!(list_api_keys(&store).await.unwrap().len(), 1, "no app made");
    // The bounds themselves pass.
    let longest = format!("https://app.example/{}", "a".repeat(2028));
    for spec in [
        named(&"n".repeat(64)),
        named("N"),
        named("Notes für Käthe"),
        redirect(&longest),
        NewClient {
            alg: "Ed25519".into(),
            ..named("app")
        },
    ] {
        create_client(&store, &clock, &mut rng, spec).await.unwrap();
    }
}

#[tokio::test]
async fn revoking_a_client_ends_its_sessions_into_the_feed_once() {
    let (_dir, store, clock, mut rng) = setup().await;
    let client = create_client(&store, &clock, &mut rng, NewClient::new("Notes", CB))
        .await
        .unwrap()
        .record;
    let other_app = create_api_key(&store, &clock, &mut rng, KeySpec::new("other"))
        .await
        .unwrap()
        .id;
    let sign_in = |nonce: u8, id: &str, app: &str, client_id: &str| {
        sign_in_at(
            nonce,
            id,
            "bbaareisubject",
            app,
            Some(client_id),
            NOW + 1000,
        )
    };
    for r in [
        sign_in(1, "s_one", &client.app, &client.id),
        sign_in(2, "s_two", &client.app, &client.id),
        // The app's session through another client, and another app's session
        // that names this client: neither is the client's.
        sign_in(3, "s_app", &client.app, "kgc_other"),
        sign_in(4, "s_foreign", &other_app, &client.id),
    ] {
        assert!(matches!(
            store.redeem(r).await,
            Ok(RedeemOutcome::Created(_))
        ));
    }
    clock.advance(30);
    revoke_client(&store, &clock, &client.id).await.unwrap();
    let stored = store.oauth_client(&client.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(NOW + 30));
    let feed = store.revocations_since(0, 10).await.unwrap();
    let mut ended: Vec<(&str, i64)> = feed
        .iter()
        .map(|e| (e.session_id.as_str(), e.revoked_at))
        .collect();
    ended.sort_unstable();
    assert_eq!(ended, [("s_one", NOW + 30), ("s_two", NOW + 30)]);
    for (id, revoked) in [
        ("s_one", true),
        ("s_two", true),
        ("s_app", false),
        ("s_foreign", false),
    ] {
        let s = store.session(id).await.unwrap().unwrap();
        assert_eq!(s.revoked_at.is_some(), revoked, "{id}");
    }
    // The app stays; a second revocation and an unknown client are refused.
    let app = store.api_key(&client.app).await.unwrap().unwrap();
    assert_eq!(app.revoked_at, None);
    clock.advance(5);
    assert_eq!(
        revoke_client(&store, &clock, &client.id).await,
        Err(AdminError::NoLiveClient)
    );
    assert_eq!(
        revoke_client(&store, &clock, "kgc_none").await,
        Err(AdminError::NoLiveClient)
    );
    let stored = store.oauth_client(&client.id).await.unwrap().unwrap();
    assert_eq!(
        stored.revoked_at,
        Some(NOW + 30),
        "the first revocation stands"
    );
    assert_eq!(store.revocations_since(0, 10).await.unwrap().len(), 2);
}
