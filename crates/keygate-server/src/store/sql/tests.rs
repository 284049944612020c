use super::*;

#[test]
fn batches_are_cut_into_few_fixed_shapes() {
    let sizes = |n: usize| -> Vec<usize> { chunks(&vec![0; n]).map(<[_]>::len).collect() };
    assert!(sizes(0).is_empty());
    assert_eq!(sizes(1), [1]);
    assert_eq!(sizes(87), [64, 16, 4, 1, 1, 1]);
    assert_eq!(sizes(MAX_BATCH).iter().sum::<usize>(), MAX_BATCH);
    let rows: Vec<usize> = (0..87).collect();
    assert_eq!(chunks(&rows).flatten().copied().collect::<Vec<_>>(), rows);
    #[cfg(feature = "postgres")]
    assert_eq!(
        values_sql::<sqlx::Postgres>("INSERT INTO t (a, b)", 2, 2, " RETURNING a"),
        "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) RETURNING a"
    );
    #[cfg(feature = "sqlite")]
    assert_eq!(
        values_sql::<sqlx::Sqlite>("UPDATE t SET a = $5 WHERE b IN (", 2, 2, ")"),
        "UPDATE t SET a = $5 WHERE b IN ( VALUES (?, ?), (?, ?))"
    );
}

fn redemption(nonce: u8, sid: &str, api_key: &str) -> Redemption {
    Redemption {
        nonce_id: [nonce; 16],
        nonce_expires_at: 2_000_000_000,
        session: NewSession {
            id: sid.into(),
            subject: "bbaareisubject".into(),
            api_key: api_key.into(),
            client_id: Some("cli".into()),
            scope: String::new(),
            created_at: 1_000,
            expires_at: 50_000,
            idle_timeout: 10_000,
            user_agent: None,
            address: None,
            jkt: None,
        },
        refresh: Some(([nonce; 32], "cli".into())),
        renew: None,
        new_account: format!("kga_{nonce}"),
        event: None,
        keep: None,
    }
}

/// A new session's outcome, in account `account`, nothing capped.
fn created(account: &str) -> RedeemOutcome {
    RedeemOutcome::Created(SignedIn {
        account: account.into(),
        mfa_required: false,
        capped: 0,
    })
}

/// One batch holding every case at once has the outcomes of running its jobs
/// one by one; then the session cap revokes the oldest into the feed.
/// `commit` runs a batch on `store`'s database.
async fn batch_then_cap(
    store: &dyn Store,
    commit: impl AsyncFn(&[Job]) -> StoreResult<Vec<RedeemOutcome>>,
) {
    for (id, revoked_at) in [
        ("kgk_live", None),
        ("kgk_gone", Some(5)),
        ("kgk_other", None),
    ] {
        let key = crate::apikey::generate(&mut keygate_core::entropy::os_rng());
        store
            .insert_api_key(ApiKeyRecord {
                revoked_at,
                ..ApiKeyRecord::new(id.into(), id.into(), key.secret, 1)
            })
            .await
            .unwrap();
    }
    // A nonce spent by an earlier batch.
    // (It is the key's first sign-in: it makes the key's account.)
    let first = store.redeem(redemption(9, "s0", "kgk_live")).await;
    assert_eq!(first, Ok(created("kga_9")));
    let jobs: Vec<Job> = [
        redemption(1, "s1", "kgk_live"),
        redemption(1, "s2", "kgk_live"),
        redemption(9, "s3", "kgk_live"),
        redemption(2, "s4", "kgk_gone"),
        redemption(3, "s5", "kgk_live"),
    ]
    .into_iter()
    .map(|redemption| Job {
        redemption,
        reply: oneshot::channel().0,
    })
    .collect();
    use RedeemOutcome::*;
    assert_eq!(
        commit(&jobs).await.unwrap(),
        [
            created("kga_9"),
            ChallengeUsed,
            ChallengeUsed,
            ApiKeyRevoked,
            created("kga_9")
        ]
    );
    let sessions = store.sessions_of("bbaareisubject").await.unwrap();
    let mut ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["s0", "s1", "s5"]);
    for (nonce, session) in [(9, Some("s0")), (1, Some("s1")), (2, None), (3, Some("s5"))] {
        let found = store.refresh_session_id([nonce; 32]).await.unwrap();
        assert_eq!(found.as_deref(), session, "refresh token {nonce}");
    }
    // The revoked key's nonce is spent all the same.
    let again = store.redeem(redemption(2, "s6", "kgk_live")).await;
    assert_eq!(again, Ok(ChallengeUsed));

    // A cap of one keeps the newest (created together: the greatest id).
    assert_eq!(store.revocation_cursor().await.unwrap(), 0);
    let cap = Revoke::Beyond {
        subject: "bbaareisubject",
        api_key: "kgk_live",
        keep: 1,
    };
    assert_eq!(store.revoke_sessions(cap, 1_500).await.unwrap(), 2);
    let n = store
        .live_session_count("bbaareisubject", "kgk_live", 1_500)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        store
            .session("s5")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    let feed = store.revocations_since(0, 10).await.unwrap();
    let mut revoked: Vec<&str> = feed.iter().map(|e| e.session_id.as_str()).collect();
    revoked.sort_unstable();
    assert_eq!(revoked, ["s0", "s1"]);
    assert_eq!(store.revocation_cursor().await.unwrap(), feed[1].seq);

    // Two first sign-ins of one new key in one batch share the account the
    // first drew; its cap of one, applied in the batch, keeps the newest
    // and puts the other in the feed, counted on the first sign-in.
    let jobs: Vec<Job> = [(20, "t1"), (21, "t2")]
        .into_iter()
        .map(|(nonce, sid)| {
            let mut r = redemption(nonce, sid, "kgk_live");
            r.session.subject = "bbaarenewkey".into();
            r.keep = Some(1);
            Job {
                redemption: r,
                reply: oneshot::channel().0,
            }
        })
        .collect();
    let capped = RedeemOutcome::Created(SignedIn {
        account: "kga_20".into(),
        mfa_required: false,
        capped: 1,
    });
    assert_eq!(commit(&jobs).await.unwrap(), [capped, created("kga_20")]);
    let n = store
        .live_session_count("bbaarenewkey", "kgk_live", 1_500)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        store
            .session("t1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    let feed = store.revocations_since(0, 10).await.unwrap();
    assert_eq!(feed.last().map(|e| e.session_id.as_str()), Some("t1"));
    // Under its cap, a sign-in ends nothing.
    let mut r = redemption(22, "t3", "kgk_live");
    r.keep = Some(10);
    assert_eq!(store.redeem(r).await, Ok(created("kga_9")));
    assert_eq!(store.revocations_since(0, 10).await.unwrap().len(), 3);

    // One batch, many identities with two apps: each identity and app keeps its
    // own newest two; the ones under their cap, and the other app's sessions of
    // an identity over it, are untouched; every ended session is in the feed.
    let subjects = ["bbaarecapa", "bbaarecapb", "bbaarecapc"];
    let job = |nonce: u8, subject: &str, app: &str, at: UnixTime| {
        let mut r = redemption(nonce, &format!("c{nonce}"), app);
        r.session.subject = subject.into();
        r.session.created_at = at;
        r.keep = Some(2);
        Job {
            redemption: r,
            reply: oneshot::channel().0,
        }
    };
    // a: three with kgk_live, and one with kgk_other; b: two; c: one.
    let first: Vec<Job> = vec![
        job(30, subjects[0], "kgk_live", 1_000),
        job(31, subjects[0], "kgk_live", 1_001),
        job(32, subjects[1], "kgk_live", 1_000),
        job(33, subjects[0], "kgk_other", 1_000),
    ];
    commit(&first).await.unwrap();
    let second: Vec<Job> = vec![
        job(34, subjects[2], "kgk_live", 1_002),
        job(35, subjects[0], "kgk_live", 1_002),
        job(36, subjects[1], "kgk_live", 1_002),
        job(37, subjects[0], "kgk_live", 1_003),
    ];
    let outcomes = commit(&second).await.unwrap();
    let capped: Vec<u64> = outcomes
        .iter()
        .map(|o| match o {
            RedeemOutcome::Created(s) => s.capped,
            other => panic!("{other:?}"),
        })
        .collect();
    // Told once per identity and app, on its first sign-in in the batch.
    assert_eq!(capped, [0, 2, 0, 0]);
    let live = |subject: &'static str, app: &'static str| async move {
        let mut ids: Vec<String> = store
            .sessions_of(subject)
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.api_key == app && s.revoked_at.is_none())
            .map(|s| s.id)
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(live(subjects[0], "kgk_live").await, ["c35", "c37"]);
    assert_eq!(live(subjects[0], "kgk_other").await, ["c33"]);
    assert_eq!(live(subjects[1], "kgk_live").await, ["c32", "c36"]);
    assert_eq!(live(subjects[2], "kgk_live").await, ["c34"]);
    let feed = store.revocations_since(0, 10).await.unwrap();
    let mut last: Vec<&str> = feed[3..].iter().map(|e| e.session_id.as_str()).collect();
    last.sort_unstable();
    assert_eq!(last, ["c30", "c31"]);

    // Only live sessions hold a place: a newer session past its idle timeout
    // neither counts toward the cap nor is ended by it.
    let d = "bbaarecapd";
    let mut idle = job(41, d, "kgk_live", 1_001);
    idle.redemption.session.idle_timeout = 1;
    commit(&[job(40, d, "kgk_live", 1_000), idle])
        .await
        .unwrap();
    let outcomes = commit(&[job(42, d, "kgk_live", 1_003)]).await.unwrap();
    assert!(matches!(&outcomes[0], RedeemOutcome::Created(s) if s.capped == 0));
    assert_eq!(live(d, "kgk_live").await, ["c40", "c41", "c42"]);
    let outcomes = commit(&[job(43, d, "kgk_live", 1_004)]).await.unwrap();
    assert!(matches!(&outcomes[0], RedeemOutcome::Created(s) if s.capped == 1));
    assert_eq!(live(d, "kgk_live").await, ["c41", "c42", "c43"]);
    let feed = store.revocations_since(0, 10).await.unwrap();
    assert_eq!(feed.last().map(|e| e.session_id.as_str()), Some("c40"));
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_batch_has_the_outcomes_of_its_jobs_in_order_on_sqlite() {
    use crate::store::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db").display().to_string())
        .await
        .unwrap();
    batch_then_cap(&store, async |jobs| {
        SqliteStore::commit_batch(&store.write, jobs).await
    })
    .await;
}

/// SQLite's writer never checkpoints by itself: once asked (`wal_due`, which a
/// background pass sets), it copies the WAL after its next batch, so the batch
/// after that starts the WAL again from its beginning.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_writer_finishes_a_checkpoint_so_the_wal_starts_over() {
    use crate::store::SqliteStore;
    use crate::store::sqlite::background_pass;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("w.db").display().to_string())
        .await
        .unwrap();
    let key = crate::apikey::generate(&mut keygate_core::entropy::os_rng());
    store
        .insert_api_key(ApiKeyRecord::new(
            "kgk_live".into(),
            "app".into(),
            key.secret,
            1,
        ))
        .await
        .unwrap();
    // One batch per sign-in, none checkpointed: the WAL only grows.
    for n in 1..=40u8 {
        let r = redemption(n, &format!("s{n}"), "kgk_live");
        assert!(matches!(
            store.redeem(r).await,
            Ok(RedeemOutcome::Created(_))
        ));
    }
    // Asked to finish while frames are still uncopied: the next batch appends,
    // then the writer copies everything and the batch after it starts over.
    store.wal_due.store(true, Ordering::Release);
    for n in 41..=42u8 {
        let r = redemption(n, &format!("s{n}"), "kgk_live");
        assert!(matches!(
            store.redeem(r).await,
            Ok(RedeemOutcome::Created(_))
        ));
    }
    assert!(!store.wal_due.load(Ordering::Acquire));
    // The WAL holds the last batch's frames only (without the writer's pass it
    // would hold all 42 batches'). A background pass asks for a finish only
    // when the WAL is as long as it is told.
    let frames = background_pass(&store.read, &store.wal_due, 1000)
        .await
        .unwrap();
    assert!((1..20).contains(&frames), "{frames} frames in the WAL");
    assert!(!store.wal_due.load(Ordering::Acquire));
    assert_eq!(
        background_pass(&store.read, &store.wal_due, frames).await,
        Ok(frames)
    );
    assert!(store.wal_due.load(Ordering::Acquire));
}

/// A PostgreSQL store in a database of its own (named after `what`), on the
/// server `KEYGATE_TEST_POSTGRES` (with `KEYGATE_MASTER_KEY`) names.
#[cfg(feature = "postgres")]
async fn postgres_store(what: &str) -> crate::store::PostgresStore {
    let base = std::env::var("KEYGATE_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
        .expect("KEYGATE_TEST_POSTGRES names no PostgreSQL server (scripts/test.sh starts one)");
    // postgres://user@host:port[/db][?params], with a database of our own.
    let (base, params) = base
        .split_once('?')
        .map_or((&base[..], String::new()), |(b, p)| (b, format!("?{p}")));
    let host_end = base.find("://").map_or(0, |i| i + 3);
    let server = base[host_end..]
        .find('/')
        .map_or(base, |i| &base[..host_end + i]);
    // A database name no earlier run used.
    let entropy: &dyn keygate_core::entropy::Entropy = &keygate_core::entropy::OsEntropy;
    let run = u64::from_le_bytes(entropy.bytes());
    let url = format!(
        "{server}/keygate_{what}_{}_{run}{params}",
        std::process::id()
    );
    crate::store::PostgresStore::open(&url).await.unwrap()
}

/// The same on PostgreSQL, in a database of its own, when
/// `KEYGATE_TEST_POSTGRES` (with `KEYGATE_MASTER_KEY`) names a server.
#[cfg(feature = "postgres")]
#[tokio::test]
#[ignore = "needs KEYGATE_TEST_POSTGRES"]
async fn a_batch_has_the_outcomes_of_its_jobs_in_order_on_postgres() {
    use crate::store::PostgresStore;
    let store = postgres_store("batch").await;
    batch_then_cap(&store, async |jobs| {
        PostgresStore::commit_batch(&store.write, jobs).await
    })
    .await;
    store.close().await;
}

fn client(id: &str, app: &str, secret_hash: Option<[u8; 32]>) -> OAuthClientRecord {
    OAuthClientRecord {
        id: id.into(),
        name: format!("client {id}"),
        secret_hash,
        redirect_uris: vec![
            "https://app.example/cb".into(),
            "http://127.0.0.1:9/cb?a=b c".into(),
        ],
        post_logout_redirect_uris: Vec::new(),
        alg: "RS256".into(),
        scopes: vec!["openid".into(), "profile".into()],
        first_party: secret_hash.is_none(),
        app: app.into(),
        created_at: 900,
        revoked_at: None,
    }
}

fn code(n: u8, expires_at: UnixTime) -> CodeRecord {
    CodeRecord {
        hash: [n; 32],
        client_id: "kgc_one".into(),
        grant: format!(r#"{{"code":{n}}}"#),
        expires_at,
    }
}

fn device(n: u8, user_code: &str, expires_at: UnixTime) -> DeviceRecord {
    DeviceRecord {
        device_hash: [n; 32],
        user_code: user_code.into(),
        client_id: "kgc_one".into(),
        scope: "openid offline_access".into(),
        expires_at,
        interval: 5,
    }
}

/// Everything the OpenID Provider keeps, on `store`'s database: clients (and
/// their revocation), codes spent once, consents, refresh tokens added to a
/// session, device grants through each state, and the purge of expired rows.
async fn oauth_state(store: &dyn Store) {
    use crate::store::DevicePoll::{self, Approved, Denied, Expired, Pending};
    use crate::store::TakeCode::{self, Fresh, Replayed};
    let key = crate::apikey::generate(&mut keygate_core::entropy::os_rng());
    store
        .insert_api_key(ApiKeyRecord::new(
            "kgk_app".into(),
            "app".into(),
            key.secret,
            1,
        ))
        .await
        .unwrap();

    // Clients: stored as given, public ones without a hash; ids are unique.
    let confidential = client("kgc_one", "kgk_app", Some([7; 32]));
    let public = client("kgc_two", "kgk_app", None);
    store.insert_client(confidential.clone()).await.unwrap();
    store.insert_client(public.clone()).await.unwrap();
    let dup = store
        .insert_client(client("kgc_one", "kgk_app", None))
        .await;
    assert_eq!(dup, Err(StoreError::Conflict));
    assert_eq!(
        store.oauth_client("kgc_one").await.unwrap(),
        Some(confidential.clone())
    );
    assert_eq!(
        store.oauth_client("kgc_two").await.unwrap(),
        Some(public.clone())
    );
    assert_eq!(store.oauth_client("kgc_none").await.unwrap(), None);
    assert_eq!(store.oauth_clients().await.unwrap(), [confidential, public]);

    // A code is spent once; a replay names the session its use produced.
    store.insert_code(code(1, 1_100)).await.unwrap();
    store.insert_code(code(2, 1_000)).await.unwrap();
    assert_eq!(
        store.insert_code(code(1, 1_200)).await,
        Err(StoreError::Conflict)
    );
    assert_eq!(
        store.take_code([1; 32], 1_000).await.unwrap(),
        Fresh(code(1, 1_100))
    );
    let replay = store.take_code([1; 32], 1_001).await.unwrap();
    assert_eq!(replay, Replayed { session_id: None });
    store.set_code_session([1; 32], "s_code").await.unwrap();
    for now in [1_002, 1_100, 5_000] {
        let replay = store.take_code([1; 32], now).await.unwrap();
        assert_eq!(
            replay,
            Replayed {
                session_id: Some("s_code".into())
            },
            "at {now}"
        );
    }
    // Expired unused, or never issued: unknown, and spent by no attempt.
    assert_eq!(
        store.take_code([2; 32], 1_000).await.unwrap(),
        TakeCode::Unknown
    );
    assert_eq!(
        store.take_code([2; 32], 1_000).await.unwrap(),
        TakeCode::Unknown
    );
    assert_eq!(
        store.take_code([3; 32], 1_000).await.unwrap(),
        TakeCode::Unknown
    );

    // Consent: none, then granted, then replaced; per account and client.
    assert_eq!(store.consent("acct", "kgc_one").await.unwrap(), None);
    store
        .save_consent("acct", "kgc_one", "openid", 1_000)
        .await
        .unwrap();
    store
        .save_consent("acct", "kgc_one", "openid profile", 1_010)
        .await
        .unwrap();
    store
        .save_consent("acct", "kgc_two", "openid", 1_010)
        .await
        .unwrap();
    let granted = store.consent("acct", "kgc_one").await.unwrap();
    assert_eq!(granted.as_deref(), Some("openid profile"));
    assert_eq!(store.consent("other", "kgc_one").await.unwrap(), None);

    // Refresh tokens join a live session only, bound to their client.
    let mut sign_in = redemption(40, "s_oidc", "kgk_app");
    sign_in.refresh = None;
    sign_in.session.client_id = Some("kgc_one".into());
    assert!(matches!(
        store.redeem(sign_in).await,
        Ok(RedeemOutcome::Created(_))
    ));
    store
        .add_refresh_token("s_oidc", [41; 32], "kgc_one", 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.refresh_session_id([41; 32]).await.unwrap().as_deref(),
        Some("s_oidc")
    );
    let wrong = store
        .rotate_refresh_token([41; 32], "kgc_two", [42; 32], 1_001)
        .await;
    assert_eq!(wrong, Ok(RefreshOutcome::Invalid), "bound to its client");
    let rotated = store
        .rotate_refresh_token([41; 32], "kgc_one", [42; 32], 1_001)
        .await;
    assert!(matches!(rotated, Ok(RefreshOutcome::Rotated(s)) if s.id == "s_oidc"));
    for (sid, now) in [("s_oidc", 60_000), ("s_none", 1_002)] {
        let late = store.add_refresh_token(sid, [43; 32], "kgc_one", now).await;
        assert_eq!(late, Err(StoreError::Conflict), "{sid} at {now}");
    }
    assert_eq!(store.refresh_session_id([43; 32]).await.unwrap(), None);

    // Device grants. Another client's poll spends the grant whatever its state,
    // tells nothing of it, and hands back an approval's grant (its session to end).
    let (stolen, stolen_approved) = (
        device(56, "GHJK-LMNP", 1_600),
        device(57, "QRST-VWXZ", 1_600),
    );
    for d in [&stolen, &stolen_approved] {
        store.insert_device(d.clone()).await.unwrap();
    }
    assert!(
        store
            .decide_device("QRST-VWXZ", Some("{\"b\":2}".into()), 1_000)
            .await
            .unwrap()
    );
    for (n, grant) in [(56, None), (57, Some("{\"b\":2}".to_owned()))] {
        let poll = store.poll_device([n; 32], "kgc_two", 1_000).await.unwrap();
        assert_eq!(poll, DevicePoll::OtherClient { grant }, "grant {n}");
        let after = store.poll_device([n; 32], "kgc_one", 1_001).await.unwrap();
        assert_eq!(after, DevicePoll::Unknown, "grant {n} is spent");
    }
    assert_eq!(
        store.device_by_user_code("GHJK-LMNP", 1_001).await.unwrap(),
        None
    );
    // Pending: polled too soon is slow_down.
    let (pending, denied, late) = (
        device(51, "BCDF-GHJK", 1_600),
        device(52, "LMNP-QRST", 1_600),
        device(53, "VWXZ-BCDF", 1_100),
    );
    for d in [&pending, &denied, &late] {
        store.insert_device(d.clone()).await.unwrap();
    }
    let taken = store.insert_device(device(54, "BCDF-GHJK", 1_600)).await;
    assert_eq!(taken, Err(StoreError::Conflict), "user codes are unique");
    let found = store.device_by_user_code("BCDF-GHJK", 1_000).await.unwrap();
    assert_eq!(found.as_ref(), Some(&pending));
    assert_eq!(
        store.device_by_user_code("BCDF-GHJX", 1_000).await.unwrap(),
        None
    );
    for (now, slow_down) in [(1_000, false), (1_003, true), (1_007, true), (1_012, false)] {
        let poll = store.poll_device([51; 32], "kgc_one", now).await.unwrap();
        assert_eq!(poll, Pending { slow_down }, "at {now}");
    }
    // Approved: answered once, then gone (so is the user code).
    assert!(
        store
            .decide_device("BCDF-GHJK", Some("{\"a\":1}".into()), 1_013)
            .await
            .unwrap()
    );
    assert!(
        !store.decide_device("BCDF-GHJK", None, 1_013).await.unwrap(),
        "decided once"
    );
    assert_eq!(
        store.device_by_user_code("BCDF-GHJK", 1_013).await.unwrap(),
        None
    );
    let approved = Approved {
        grant: "{\"a\":1}".into(),
    };
    assert_eq!(
        store.poll_device([51; 32], "kgc_one", 1_014).await.unwrap(),
        approved
    );
    assert_eq!(
        store.poll_device([51; 32], "kgc_one", 1_030).await.unwrap(),
        DevicePoll::Unknown
    );
    assert_eq!(
        store.poll_device([55; 32], "kgc_one", 1_030).await.unwrap(),
        DevicePoll::Unknown
    );
    // Approved, but collected at or after its expiry: expired, and no grant.
    store
        .insert_device(device(58, "CDFG-HJKL", 1_600))
        .await
        .unwrap();
    assert!(
        store
            .decide_device("CDFG-HJKL", Some("{}".into()), 1_500)
            .await
            .unwrap()
    );
    let late = store.poll_device([58; 32], "kgc_one", 1_600).await.unwrap();
    assert_eq!(late, Expired, "approved too late");
    // Denied: says so at every poll.
    assert!(store.decide_device("LMNP-QRST", None, 1_013).await.unwrap());
    assert!(
        !store
            .decide_device("LMNP-QRST", Some("{}".into()), 1_014)
            .await
            .unwrap()
    );
    assert_eq!(
        store.poll_device([52; 32], "kgc_one", 1_014).await.unwrap(),
        Denied
    );
    assert_eq!(
        store.poll_device([52; 32], "kgc_one", 1_030).await.unwrap(),
        Denied
    );
    // Expired: undecidable, not found by its user code, expired to a poll.
    assert_eq!(
        store.device_by_user_code("VWXZ-BCDF", 1_100).await.unwrap(),
        None
    );
    assert!(
        !store
            .decide_device("VWXZ-BCDF", Some("{}".into()), 1_100)
            .await
            .unwrap()
    );
    assert_eq!(
        store.poll_device([53; 32], "kgc_one", 1_100).await.unwrap(),
        Expired
    );
    assert_eq!(
        store.poll_device([53; 32], "kgc_one", 1_099).await.unwrap(),
        Pending { slow_down: false }
    );

    // Revoking a client ends its sessions into the feed, once.
    let before = store.revocation_cursor().await.unwrap();
    assert!(store.revoke_oauth_client("kgc_one", 1_050).await.unwrap());
    assert!(!store.revoke_oauth_client("kgc_one", 1_060).await.unwrap());
    assert!(!store.revoke_oauth_client("kgc_none", 1_060).await.unwrap());
    let stored = store.oauth_client("kgc_one").await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(1_050));
    let feed = store.revocations_since(before, 10).await.unwrap();
    let ended: Vec<(&str, i64)> = feed
        .iter()
        .map(|e| (e.session_id.as_str(), e.revoked_at))
        .collect();
    assert_eq!(ended, [("s_oidc", 1_050)]);
    assert!(
        store
            .session("s_oidc")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );

    // The purge takes expired codes and device grants, oldest first, bounded.
    let purged = store.purge_expired(1_200, 1).await.unwrap();
    assert_eq!((purged.oauth_codes, purged.oauth_devices), (1, 1));
    assert_eq!(
        store.take_code([2; 32], 900).await.unwrap(),
        TakeCode::Unknown,
        "the older code went"
    );
    assert_eq!(
        store.take_code([1; 32], 900).await.unwrap(),
        Replayed {
            session_id: Some("s_code".into())
        }
    );
    assert_eq!(
        store.poll_device([53; 32], "kgc_one", 1_050).await.unwrap(),
        DevicePoll::Unknown,
        "the older grant went"
    );
    let purged = store.purge_expired(1_200, 10).await.unwrap();
    assert_eq!((purged.oauth_codes, purged.oauth_devices), (1, 0));
    let purged = store.purge_expired(1_700, 10).await.unwrap();
    assert_eq!((purged.oauth_codes, purged.oauth_devices), (0, 2));
    assert_eq!(
        store.poll_device([52; 32], "kgc_one", 1_000).await.unwrap(),
        DevicePoll::Unknown
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn oauth_state_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::SqliteStore::open(&dir.path().join("t.db").display().to_string())
        .await
        .unwrap();
    oauth_state(&store).await;
}

/// The same on PostgreSQL, when `KEYGATE_TEST_POSTGRES` names a server.
#[cfg(feature = "postgres")]
#[tokio::test]
#[ignore = "needs KEYGATE_TEST_POSTGRES"]
async fn oauth_state_on_postgres() {
    let store = postgres_store("oauth").await;
    oauth_state(&store).await;
    store.close().await;
}
