//! The Hub: the token authority. This module is the service itself (no HTTP);
//! `routes` puts it on the wire.
//!
//! It owns the nonce key and the signing keys (both created on first start and kept
//! in the store, so tokens stay valid across restarts), authenticates apps by their
//! API-key signatures, issues challenges, and turns a signed challenge into a
//! durable session and an access token.

use std::sync::{Arc, RwLock};

use crate::apikey::ApiSecret;
use crate::challenge::NonceKey;
use crate::error::Error;
use crate::store::{RevocationEvent, Store};
use crate::time::{Clock, UnixTime};
use keygate_core::entropy::Entropy;

pub use keygate_proto::{
    AccountEvent, AccountEvents, AccountKeyView, AccountView, BrokerToken, IssuedToken, Linked,
    RevocationFeed, SessionView, TokenOptions, TotpEnrolment, WhoAmI,
};

mod accounts;
mod apps;
mod broker;
mod introspect;
mod keyring;
mod mint;
pub mod mux;
pub mod oidc;
mod revocation;
pub mod routes;
mod sessions;
mod signin;
#[cfg(all(test, feature = "sqlite"))]
mod tests;

pub use accounts::{DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE};
pub use broker::{BROKER_DEFAULT_TTL, BROKER_MAX_TTL};
pub use keyring::{new_signing_key, rotate_signing_key};

use keyring::{KeyRing, retention};
use mint::Grant;

const NONCE_KEY_NAME: &str = "challenge_nonce_key";
/// Longest client id and scope string accepted in a token request.
const MAX_CLIENT_ID_LEN: usize = 128;
const MAX_SCOPE_LEN: usize = 1024;

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The `iss` of every token: the Hub's public URL.
    pub issuer: String,
    /// Lifetime of a challenge, in seconds.
    pub challenge_ttl: i64,
    pub limits: crate::limits::Limits,
    /// Accept development keys and their tokens (docs/dev-mode.md).
    pub dev: bool,
    pub dpop: DpopConfig,
    /// The audit trail's queue and SIEM stream (docs/audit.md).
    pub audit: crate::audit::AuditConfig,
}

/// How the Hub checks DPoP proofs (docs/dpop.md).
#[derive(Debug, Clone)]
pub struct DpopConfig {
    /// Public origins a proof's `htu` may name besides the issuer's (a Provider
    /// in the same process answers the user endpoints on its origins).
    pub origins: Vec<String>,
    /// Ask for server nonces (`DPoP-Nonce`, RFC 9449 §8).
    pub nonces: bool,
    /// Entries of the replay cache.
    pub replay_capacity: usize,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            origins: Vec::new(),
            nonces: false,
            replay_capacity: keygate_core::dpop::DEFAULT_REPLAY_CAPACITY,
        }
    }
}

/// What the user's side of a sign-in brings back: identity, challenge, signature.
#[derive(Debug, Clone)]
pub struct SignedChallenge<'a> {
    pub pubkey: &'a str,
    pub challenge: &'a str,
    pub sig: &'a str,
}

/// Where a request came from, recorded on the session when known.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub user_agent: Option<String>,
    pub address: Option<String>,
}

pub struct Hub {
    guard: Arc<crate::limits::Guard>,
    /// Live revocations for push subscribers, fed by [`Hub::follow_revocations`].
    revocations: tokio::sync::broadcast::Sender<RevocationEvent>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Every random byte the Hub uses: keys, nonces, ids, secrets.
    entropy: Arc<dyn Entropy>,
    config: HubConfig,
    nonce_key: NonceKey,
    keys: RwLock<Arc<KeyRing>>,
    /// A random secret that requests naming an unknown API key are checked
    /// against (see [`Hub::authenticate_app`]).
    dummy_secret: ApiSecret,
    /// The OpenID Provider's keys, loaded on first use.
    oidc: tokio::sync::OnceCell<oidc::OidcState>,
    /// Replay cache and nonces of the DPoP proofs this Hub checks.
    dpop: Arc<crate::dpop::DpopGuard>,
    /// The origins a proof's `htu` may name: the issuer's and `config.dpop.origins`.
    dpop_origins: Vec<String>,
    /// Where security events go (docs/audit.md).
    audit: crate::audit::AuditSink,
    /// Turns `true` when the Hub stops: its long-lived `/v1/ws/mux` links close.
    links: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    /// Opens the Hub on `store`, creating the nonce key and the first signing key
    /// on first start. Every random byte it uses comes from `entropy`
    /// ([`OsEntropy`](keygate_core::entropy::OsEntropy) in service, a
    /// [`SeededEntropy`](keygate_core::entropy::SeededEntropy) in tests that want
    /// fixed keys and ids).
    pub async fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        config: HubConfig,
    ) -> Result<Self, Error> {
        let now = clock.now();
        let fresh = entropy.bytes::<32>();
        let nonce_key = store
            .secret_or_insert(NONCE_KEY_NAME, fresh.to_vec(), now)
            .await?;
        let nonce_key: [u8; 32] = nonce_key.try_into().map_err(|_| Error::Internal)?;
        let mut records = store.signing_keys().await?;
        if records.is_empty() {
            let record = new_signing_key(entropy.as_ref(), now);
            store.insert_signing_key(record.clone()).await?;
            records.push(record);
        }
        let retention = retention(store.as_ref(), &records).await?;
        let ring = KeyRing::new(&records, &config.issuer, now, retention).ok_or(Error::Internal)?;
        let nonce_secret = config.dpop.nonces.then(|| entropy.bytes::<32>());
        let dpop = Arc::new(crate::dpop::DpopGuard::new(
            config.dpop.replay_capacity,
            nonce_secret,
        ));
        let mut dpop_origins: Vec<String> =
            crate::dpop::origin_of(&config.issuer).into_iter().collect();
        for o in &config.dpop.origins {
            if !dpop_origins.contains(o) {
                dpop_origins.push(o.clone());
            }
        }
        let audit = crate::audit::AuditSink::start(store.clone(), config.audit.clone());
        Ok(Hub {
            audit,
            links: tokio::sync::watch::Sender::new(false),
            dpop,
            dpop_origins,
            guard: crate::limits::Guard::new(config.limits.clone()),
            revocations: tokio::sync::broadcast::channel(1024).0,
            store,
            clock,
            config,
            nonce_key: NonceKey::from_bytes(nonce_key),
            keys: RwLock::new(Arc::new(ring)),
            dummy_secret: ApiSecret::from_bytes(entropy.bytes::<32>()),
            entropy,
            oidc: tokio::sync::OnceCell::new(),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The Hub's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Closes every `/v1/ws/mux` link (1001) and refuses none: called when the
    /// server stops, so that Providers move to a fresh link at once.
    pub fn close_links(&self) {
        self.links.send_replace(true);
    }

    /// Turns `true` when [`Hub::close_links`] is called.
    pub(crate) fn links_closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.links.subscribe()
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The Hub's source of randomness.
    pub fn entropy(&self) -> &dyn Entropy {
        self.entropy.as_ref()
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The abuse limits this Hub (and a Provider in the same process) enforce.
    pub fn guard(&self) -> &Arc<crate::limits::Guard> {
        &self.guard
    }

    /// The DPoP replay cache and nonces of this Hub (shared with a Provider in
    /// the same process).
    pub fn dpop(&self) -> &Arc<crate::dpop::DpopGuard> {
        &self.dpop
    }

    /// The audit trail's sink: [`AuditSink::dropped`](crate::audit::AuditSink::dropped)
    /// for metrics, [`AuditSink::flush`](crate::audit::AuditSink::flush) for tests
    /// and shutdown.
    pub fn audit(&self) -> &crate::audit::AuditSink {
        &self.audit
    }

    /// A new event of `kind` at the Hub's present.
    pub(crate) fn event(&self, kind: crate::store::AuditKind) -> crate::store::AuditEvent {
        crate::store::AuditEvent::new(kind, self.now())
    }

    /// Queues `event` for the audit trail (never waits).
    pub(crate) fn record(&self, event: crate::store::AuditEvent) {
        self.audit.record(event);
    }

    /// Whether this Hub accepts development keys and tokens (`--dev`).
    pub fn dev_mode(&self) -> bool {
        self.config.dev
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
