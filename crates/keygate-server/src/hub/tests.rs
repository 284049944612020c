//! The Hub's unit tests, against a SQLite store in a temporary directory and a
//! fixed clock.

use std::sync::Arc;

use super::{Hub, HubConfig};
use crate::apikey::work::{self, Step};
use crate::apikey::{self, ApiKeyError};
use crate::error::Error;
use crate::store::ApiKeyRecord;
use crate::time::ManualClock;
use crate::time::UnixTime;

const NOW: UnixTime = 1_795_430_809;

async fn hub(dir: &std::path::Path) -> Hub {
    let store = crate::store::sqlite::SqliteStore::open(&dir.join("t.db").display().to_string())
        .await
        .unwrap();
    let config = HubConfig {
        issuer: "http://127.0.0.1:1".into(),
        challenge_ttl: 60,
        limits: Default::default(),
        dev: false,
    };
    Hub::open(Arc::new(store), Arc::new(ManualClock::new(NOW)), config)
        .await
        .unwrap()
}

/// Timing must not tell a known API key id from an unknown one: both paths do
/// the same steps (a lookup that unseals a secret, found or dummy, and one
/// MAC), counted through the `apikey::work` seam rather than timed.
#[tokio::test]
async fn known_and_unknown_key_ids_cost_the_same_work() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path()).await;
    let mut ids = Vec::new();
    for revoked_at in [None, Some(NOW - 5)] {
        let key = apikey::generate(&mut rand::rng());
        hub.store()
            .insert_api_key(ApiKeyRecord {
                revoked_at,
                ..ApiKeyRecord::new(key.id.clone(), "app".into(), key.secret.clone(), NOW - 10)
            })
            .await
            .unwrap();
        ids.push((key.id, key.secret));
    }
    let (live, revoked) = (ids[0].0.clone(), ids[1].0.clone());
    let unknown = apikey::generate(&mut rand::rng()).id;
    // A well-formed signature by a secret that is not the key's.
    let stranger = apikey::generate(&mut rand::rng()).secret;
    let (msg, sig) = stranger.sign(NOW + 60);
    work::take();
    let mut traces = Vec::new();
    for id in [&live, &unknown, &revoked] {
        let got = hub.authenticate_app(Some(id), Some(&msg), Some(&sig)).await;
        assert_eq!(got.unwrap_err(), Error::from(ApiKeyError));
        traces.push(work::take());
    }
    assert_eq!(traces[0], [Step::Unseal, Step::Lookup, Step::Mac]);
    assert_eq!(traces[1], traces[0], "unknown key id");
    assert_eq!(traces[2], traces[0], "revoked key id");
    // And a malformed signature is refused alike by all three, before the MAC.
    for id in [&live, &unknown] {
        let got = hub
            .authenticate_app(Some(id), Some(&msg), Some("xyz"))
            .await;
        assert!(got.is_err());
        assert_eq!(work::take(), [Step::Unseal, Step::Lookup]);
    }
    // The right secret still gets in, with the same steps.
    let (msg, sig) = ids[0].1.sign(NOW + 60);
    work::take(); // signing is a MAC too
    let got = hub
        .authenticate_app(Some(&live), Some(&msg), Some(&sig))
        .await;
    assert_eq!(got.unwrap().id, live);
    assert_eq!(work::take(), [Step::Unseal, Step::Lookup, Step::Mac]);
}
