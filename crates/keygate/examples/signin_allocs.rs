//! Heap allocations per sign-in (BENCHMARKS.md): a counting global allocator
//! around the system one, and the Hub's sign-in (challenge, signed challenge
//! verified, session committed to SQLite, token minted) run in this process,
//! without the network, for a fixed count after a warm-up. Every thread counts
//! (the store's worker and committer included).
//!
//! ```sh
//! cargo run --release -p keygate --example signin_allocs -- [COUNT] [KEYS]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keygate_core::challenge::{self, Flow};
use keygate_core::entropy::{OsEntropy, os_rng};
use keygate_core::time::SystemClock;
use keygate_server::hub::{ClientMeta, Hub, HubConfig, SignedChallenge, TokenOptions};
use keygate_server::store::ApiKeyRecord;
use keygate_server::store::sqlite::SqliteStore;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let keys: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("a.db").display().to_string())
        .await
        .expect("the store opens");
    let config = HubConfig {
        issuer: "http://127.0.0.1:1".into(),
        challenge_ttl: 60,
        // One process signing in many times: the abuse limits would refuse it.
        limits: keygate_server::limits::Limits::unlimited(),
        dev: false,
        dpop: Default::default(),
        audit: Default::default(),
    };
    let clock = Arc::new(SystemClock);
    let hub = Hub::open(Arc::new(store), clock, Arc::new(OsEntropy), config)
        .await
        .expect("the Hub opens");
    let key = keygate_core::apikey::generate(&mut os_rng());
    let app = ApiKeyRecord::new(key.id, "allocs".into(), key.secret, 0);
    hub.store()
        .insert_api_key(app.clone())
        .await
        .expect("the app key is stored");
    let users: Vec<_> = (0..keys)
        .map(|_| ed25519_dalek::SigningKey::generate(&mut os_rng()))
        .collect();
    let ids: Vec<String> = users
        .iter()
        .map(|k| keygate_server::Identity::from(k).to_string())
        .collect();
    let sign_in = async |i: usize| {
        let who = i % keys;
        let identity = keygate_server::signin::parse_identity(&ids[who]).expect("a valid key");
        let c = hub
            .challenge_for(&app, Flow::HubWs, &identity, None)
            .expect("a challenge");
        let sig = challenge::sign(&users[who], &c.text);
        let signed = SignedChallenge {
            pubkey: "",
            challenge: &c.text,
            sig: &sig,
        };
        hub.redeem_for(
            &app,
            Flow::HubWs,
            &identity,
            signed,
            &TokenOptions::default(),
            None,
            ClientMeta::default(),
        )
        .await
        .expect("a token");
    };
    // Warm-up: every key's first sign-in (its account), caches, prepared statements.
    for i in 0..keys * 2 {
        sign_in(i).await;
    }
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for i in 0..count as usize {
        sign_in(i).await;
    }
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    println!(
        "{count} sign-ins by {keys} keys (returning): {:.1} allocations and {:.0} bytes \
         allocated per sign-in",
        (a1 - a0) as f64 / count as f64,
        (b1 - b0) as f64 / count as f64
    );
}
