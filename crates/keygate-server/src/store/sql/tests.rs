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
    assert_eq!(
        values_sql("INSERT INTO t (a, b)", 2, 2, " RETURNING a"),
        "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) RETURNING a"
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
        },
        refresh: Some(([nonce; 32], "cli".into())),
        renew: None,
    }
}

/// One batch holding every case at once has the outcomes of running its jobs
/// one by one; then the session cap revokes the oldest into the feed.
/// `commit` runs a batch on `store`'s database.
async fn batch_then_cap(
    store: &dyn Store,
    commit: impl AsyncFnOnce(&[Job]) -> StoreResult<Vec<RedeemOutcome>>,
) {
    for (id, revoked_at) in [("kgk_live", None), ("kgk_gone", Some(5))] {
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
    let first = store.redeem(redemption(9, "s0", "kgk_live")).await;
    assert_eq!(first, Ok(RedeemOutcome::Created));
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
            Created,
            ChallengeUsed,
            ChallengeUsed,
            ApiKeyRevoked,
            Created
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

/// The same on PostgreSQL, in a database of its own, when
/// `KEYGATE_TEST_POSTGRES` (with `KEYGATE_MASTER_KEY`) names a server.
#[cfg(feature = "postgres")]
#[tokio::test]
#[ignore = "needs KEYGATE_TEST_POSTGRES"]
async fn a_batch_has_the_outcomes_of_its_jobs_in_order_on_postgres() {
    use crate::store::PostgresStore;
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
        "{server}/keygate_batch_{}_{run}{params}",
        std::process::id()
    );
    let store = PostgresStore::open(&url).await.unwrap();
    batch_then_cap(&store, async |jobs| {
        PostgresStore::commit_batch(&store.write, jobs).await
    })
    .await;
    store.close().await;
}
