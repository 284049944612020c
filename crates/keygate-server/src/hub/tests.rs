//! The Hub's unit tests, against a SQLite store in a temporary directory and a
//! fixed clock.

use std::sync::Arc;

use super::{Hub, HubConfig};
use crate::apikey::work::{self, Step};
use crate::apikey::{self, ApiKeyError};
use crate::challenge::Flow;
use crate::error::Error;
use crate::identity::Identity;
use crate::store::ApiKeyRecord;
use crate::time::ManualClock;
use crate::time::UnixTime;
use keygate_core::entropy::{Entropy, OsEntropy, SeededEntropy, os_rng};

const NOW: UnixTime = 1_795_430_809;

async fn hub(dir: &std::path::Path) -> Hub {
    hub_with(dir, Arc::new(OsEntropy)).await
}

async fn hub_with(dir: &std::path::Path, entropy: Arc<dyn Entropy>) -> Hub {
    let store = crate::store::sqlite::SqliteStore::open(&dir.join("t.db").display().to_string())
        .await
        .unwrap();
    let config = HubConfig {
        issuer: "http://127.0.0.1:1".into(),
        challenge_ttl: 60,
        limits: Default::default(),
        dev: false,
        dpop: Default::default(),
        audit: Default::default(),
    };
    let clock = Arc::new(ManualClock::new(NOW));
    Hub::open(Arc::new(store), clock, entropy, config)
        .await
        .unwrap()
}

/// A Hub opened on a seeded source draws the same keys and nonces every time:
/// the same signing key, the same nonce key and challenge randomness (so the
/// same challenge text), the same token ids; another seed draws others.
#[tokio::test]
async fn a_seeded_hub_is_reproducible() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut hubs = Vec::new();
    for (dir, seed) in dirs.iter().zip([7, 7, 8]) {
        hubs.push(hub_with(dir.path(), Arc::new(SeededEntropy::new(seed))).await);
    }
    let key = apikey::generate(&mut os_rng());
    let app = ApiKeyRecord::new(key.id, "app".into(), key.secret, NOW - 10);
    let user = ed25519_dalek::SigningKey::generate(&mut os_rng());
    let identity = Identity::from_bytes(user.verifying_key().as_bytes()).unwrap();
    let drawn: Vec<_> = hubs
        .iter()
        .map(|h| {
            let c = h
                .challenge_for(&app, Flow::HubHttp, &identity, None)
                .unwrap();
            (h.signing_kid(), c.text)
        })
        .collect();
    assert_eq!(drawn[0], drawn[1], "same seed");
    assert_ne!(drawn[0].0, drawn[2].0, "another seed, another signing key");
    assert_ne!(drawn[0].1, drawn[2].1, "another seed, another challenge");
    // And the next draws still agree (ids come from the same stream).
    let next: Vec<_> = hubs.iter().map(|h| h.entropy().bytes::<16>()).collect();
    assert_eq!(next[0], next[1]);
    assert_ne!(next[0], next[2]);
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
        let key = apikey::generate(&mut os_rng());
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
    let unknown = apikey::generate(&mut os_rng()).id;
    // A well-formed signature by a secret that is not the key's.
    let stranger = apikey::generate(&mut os_rng()).secret;
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
