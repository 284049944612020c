//! The signing keys: the ring the Hub signs and verifies with, rotation, reload.

use std::sync::Arc;

use super::Hub;
use crate::error::Error;
use crate::store::{SigningKeyRecord, Store};
use crate::time::UnixTime;
use crate::token::{Jwks, TokenSigner, TokenVerifier};
use keygate_core::entropy::Entropy;

/// The signing keys in use: the current key signs; it and the retired keys whose
/// tokens may still be live are published and verify.
pub(super) struct KeyRing {
    pub(super) signer: Arc<TokenSigner>,
    pub(super) verifier: TokenVerifier,
    pub(super) jwks: Jwks,
}

impl Hub {
    pub(super) fn ring(&self) -> Arc<KeyRing> {
        // A poisoned lock only means a panic elsewhere; the ring itself is immutable.
        match self.keys.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn jwks(&self) -> Jwks {
        self.ring().jwks.clone()
    }

    /// The key id new tokens are signed with.
    pub fn signing_kid(&self) -> String {
        self.ring().signer.kid().to_owned()
    }

    /// Re-reads the signing keys from the store: picks up a rotation made by the
    /// CLI or another node, and stops publishing retired keys whose tokens have
    /// all expired. Returns whether the published set or the signer changed.
    pub async fn reload_signing_keys(&self) -> Result<bool, Error> {
        let records = self.store.signing_keys().await?;
        let retention = retention(self.store.as_ref(), &records).await?;
        let now = self.now();
        let current = self.ring();
        if let Some(k) = current_key(&records) {
            crate::metrics::metrics().signing_key(k.created_at);
        }
        let published = published(&records, now, retention);
        let unchanged = published.len() == current.jwks.keys.len()
            && published
                .iter()
                .zip(&current.jwks.keys)
                .all(|(r, k)| r.kid == k.kid)
            && current_key(&records).is_some_and(|r| r.kid == current.signer.kid());
        if unchanged {
            return Ok(false);
        }
        let ring =
            KeyRing::new(&records, &self.config.issuer, now, retention).ok_or(Error::Internal)?;
        tracing::info!(kid = %ring.signer.kid(), published = ring.jwks.keys.len(), "signing keys reloaded");
        match self.keys.write() {
            Ok(mut g) => *g = Arc::new(ring),
            Err(p) => *p.into_inner() = Arc::new(ring),
        }
        Ok(true)
    }

    /// Reloads the signing keys every `every`, so that every node follows a
    /// rotation without a restart.
    pub async fn follow_signing_keys(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self.reload_signing_keys().await {
                tracing::warn!(error = %e, "signing key reload failed");
            }
        }
    }
}

/// A fresh Ed25519 signing key from `entropy`, created at `now`.
pub fn new_signing_key(entropy: &dyn Entropy, now: UnixTime) -> SigningKeyRecord {
    let sk = ed25519_dalek::SigningKey::generate(&mut entropy.rng());
    SigningKeyRecord {
        kid: TokenSigner::new(sk.clone()).kid().to_owned(),
        secret: sk.to_bytes(),
        created_at: now,
        retired_at: None,
    }
}

/// `keygate keys rotate-signing`: adds a new current signing key and retires the
/// old one. Running nodes pick it up within a second ([`Hub::follow_signing_keys`]);
/// the retired key stays published while tokens it signed may be live, unless
/// `drop_old` (a leaked key): then it leaves every JWKS at the next reload and its
/// tokens stop verifying. Returns the new key id and the retired ones.
pub async fn rotate_signing_key(
    store: &dyn Store,
    entropy: &dyn Entropy,
    now: UnixTime,
    drop_old: bool,
) -> Result<(String, Vec<String>), Error> {
    let record = new_signing_key(entropy, now);
    let kid = record.kid.clone();
    // Retired at the epoch: long past any token lifetime, so never published.
    let retired_at = if drop_old { 0 } else { now };
    let retired = store.rotate_signing_key(record, retired_at).await?;
    let detail = if drop_old { "drop_old" } else { "retire_old" };
    let event = crate::store::AuditEvent::new(crate::store::AuditKind::SigningKeyRotated, now)
        .detail(format!("{detail} kid={kid}"));
    crate::audit::record_now(store, event).await;
    Ok((kid, retired))
}

/// The key that signs: the newest one not retired.
fn current_key(records: &[SigningKeyRecord]) -> Option<&SigningKeyRecord> {
    records
        .iter()
        .filter(|r| r.retired_at.is_none())
        .max_by_key(|r| r.created_at)
}

/// The keys to publish at `now`: every key not retired, and every retired key
/// whose last tokens may still be live (retired less than `retention` ago).
fn published(
    records: &[SigningKeyRecord],
    now: UnixTime,
    retention: i64,
) -> Vec<&SigningKeyRecord> {
    records
        .iter()
        .filter(|r| r.retired_at.is_none_or(|t| now < t + retention))
        .collect()
}

/// How long a retired key stays published: the longest access-token lifetime any
/// app may get, plus the leeway verifiers allow (which also covers nodes that
/// sign with the old key for a moment before they reload).
pub(super) async fn retention(
    store: &dyn Store,
    records: &[SigningKeyRecord],
) -> Result<i64, Error> {
    if records.iter().all(|r| r.retired_at.is_none()) {
        return Ok(0);
    }
    let longest = store
        .longest_access_ttl()
        .await?
        .unwrap_or(crate::session::DEFAULT_ACCESS_TTL);
    Ok(longest + crate::token::MAX_LEEWAY)
}

impl KeyRing {
    pub(super) fn new(
        records: &[SigningKeyRecord],
        issuer: &str,
        now: UnixTime,
        retention: i64,
    ) -> Option<Self> {
        let current = current_key(records)?.kid.clone();
        let signers: Vec<TokenSigner> = published(records, now, retention)
            .into_iter()
            .map(|r| TokenSigner::new(ed25519_dalek::SigningKey::from_bytes(&r.secret)))
            .collect();
        let jwks = Jwks {
            keys: signers.iter().map(|s| s.jwk().clone()).collect(),
        };
        // The Hub is the issuer: its tokens end at `exp`, without the leeway
        // offline verifiers allow.
        let verifier = TokenVerifier::new(&jwks, issuer).at_issuer();
        let signer = signers.into_iter().find(|s| s.kid() == current)?;
        Some(KeyRing {
            signer: Arc::new(signer),
            verifier,
            jwks,
        })
    }
}
