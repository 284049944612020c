//! The revocation feed: polled, pushed, and followed across nodes.

use std::sync::Arc;

use super::{Hub, RevocationFeed};
use crate::error::Error;
use crate::store::RevocationEvent;
use crate::token::Jwks;

impl Hub {
    /// The revocation feed after `since`: events and the cursor to ask from next.
    pub async fn revocation_feed(&self, since: i64) -> Result<RevocationFeed, Error> {
        let revocations = self.store.revocations_since(since.max(0), 1000).await?;
        let cursor = revocations.last().map_or(since.max(0), |r| r.seq);
        Ok(RevocationFeed {
            revocations,
            cursor,
        })
    }

    /// Subscribes to revocations as they happen (any node, any process writing the
    /// store), for the push feed.
    pub fn subscribe_revocations(&self) -> tokio::sync::broadcast::Receiver<RevocationEvent> {
        self.revocations.subscribe()
    }

    /// Polls the store's revocation feed and broadcasts new entries, so push
    /// subscribers learn of a revocation made anywhere within about `every`.
    pub async fn follow_revocations(self: Arc<Self>, every: std::time::Duration) {
        let mut cursor = loop {
            match self.store.revocation_cursor().await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(every).await,
            }
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.store.revocations_since(cursor, 1000).await {
                Ok(events) => {
                    crate::metrics::metrics().feed_read(self.now());
                    for e in events {
                        cursor = e.seq;
                        let _ = self.revocations.send(e);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "revocation feed poll failed"),
            }
        }
    }
}

/// What an in-process [`crate::client::OfflineVerifier`] needs of the Hub.
impl crate::client::TokenAuthority for Hub {
    fn issuer(&self) -> &str {
        Hub::issuer(self)
    }

    fn jwks(&self) -> Jwks {
        Hub::jwks(self)
    }

    fn subscribe_revocations(&self) -> tokio::sync::broadcast::Receiver<RevocationEvent> {
        Hub::subscribe_revocations(self)
    }

    fn revocation_feed(
        &self,
        since: i64,
    ) -> futures_util::future::BoxFuture<'_, Result<RevocationFeed, Error>> {
        Box::pin(Hub::revocation_feed(self, since))
    }
}
