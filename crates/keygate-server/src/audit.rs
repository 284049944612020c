//! The audit trail's writer (docs/audit.md): security events go through a bounded
//! channel to one task that appends them in batches, one transaction per batch,
//! so the hot path never waits for a commit and never pays an fsync per event.
//! A sign-in's own event is not among them: it is written in the sign-in's
//! group-committed transaction ([`crate::store::Redemption::event`]), and only
//! printed here.
//!
//! When the channel is full (the store is slow or down, or a flood of failed
//! sign-ins), an event is dropped and counted ([`AuditSink::dropped`]): a request
//! never blocks on the audit trail, and an unauthenticated peer can grow neither
//! memory nor the table without bound (the table is also purged past its
//! retention). Administrative commands that run once (`keygate keys create`,
//! key rotation, recovery) write directly ([`crate::store::AuditStore::append_audit`]).
//!
//! With `--audit-stdout` the writer also prints each event as one JSON object per
//! line on stdout (for a SIEM), written with a single locked `write_all` so that
//! a line is never split by another writer of stdout (tracing logs to stderr).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditEvent, AuditStore};
use crate::time::format_rfc3339;

/// Events waiting for the writer at most; past it they are dropped and counted.
pub const CAPACITY: usize = 4096;
/// Events appended in one transaction at most.
pub const BATCH: usize = 256;

/// How the Hub records its audit trail.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Events waiting at most (see [`CAPACITY`]).
    pub capacity: usize,
    /// Also print every event as a JSON line on stdout (`--audit-stdout`).
    pub stdout: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            capacity: CAPACITY,
            stdout: false,
        }
    }
}

enum Message {
    Event(Box<AuditEvent>),
    /// Written already (a sign-in's own event, in its transaction): printed
    /// for `--audit-stdout` only.
    Print(Box<AuditEvent>),
    /// Answered once every event sent before it has been written (or failed).
    Flush(oneshot::Sender<()>),
}

/// The sending side of the audit trail. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stdout: bool,
}

impl AuditSink {
    /// Starts the writer task on `store` (it ends when every sink is dropped).
    pub fn start(store: Arc<dyn AuditStore>, config: AuditConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let failed = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer(store, rx, config.stdout, failed.clone()));
        AuditSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            failed,
            stdout: config.stdout,
        }
    }

    /// Queues `event` without waiting: dropped (and counted) when the queue is
    /// full or the writer has stopped.
    pub fn record(&self, event: AuditEvent) {
        if self
            .tx
            .try_send(Message::Event(Box::new(event.cleaned())))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().audit_dropped(1);
        }
    }

    /// Whether events are also printed on stdout (`--audit-stdout`).
    pub fn prints(&self) -> bool {
        self.stdout
    }

    /// Prints, in its turn, an event the store has written itself (a sign-in's,
    /// in the sign-in's transaction), when events go to stdout too; else
    /// nothing. Dropped and counted like [`AuditSink::record`] when the queue
    /// is full.
    pub fn print(&self, event: AuditEvent) {
        if self.stdout
            && self
                .tx
                .try_send(Message::Print(Box::new(event.cleaned())))
                .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().audit_dropped(1);
        }
    }

    /// Events dropped because the queue was full (or the writer gone) since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events lost because their batch could not be written (store errors).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until every event queued before this call has been written (or its
    /// batch has failed). For tests and for a clean shutdown.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(
    store: Arc<dyn AuditStore>,
    mut rx: mpsc::Receiver<Message>,
    stdout: bool,
    failed: Arc<AtomicU64>,
) {
    let mut messages = Vec::with_capacity(BATCH);
    loop {
        messages.clear();
        if rx.recv_many(&mut messages, BATCH).await == 0 {
            return;
        }
        let mut events = Vec::with_capacity(messages.len());
        // Every event in arrival order, stored here or not, for stdout.
        let mut lines = Vec::new();
        let mut flushes = Vec::new();
        for m in messages.drain(..) {
            match m {
                Message::Event(e) => {
                    if stdout {
                        lines.push((*e).clone());
                    }
                    events.push(*e);
                }
                Message::Print(e) => lines.push(*e),
                Message::Flush(f) => flushes.push(f),
            }
        }
        if !events.is_empty()
            && let Err(e) = store.append_audit(&events).await
        {
            failed.fetch_add(events.len() as u64, Ordering::Relaxed);
            crate::metrics::metrics().audit_dropped(events.len() as u64);
            tracing::warn!(error = %e, lost = events.len(), "audit events not written");
        }
        if !lines.is_empty() {
            print_lines(&lines);
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// Writes one event directly (administrative commands, which run once): a
/// failure is logged, never undoes the action.
pub async fn record_now(store: &dyn AuditStore, event: AuditEvent) {
    if let Err(e) = store.append_audit(&[event.cleaned()]).await {
        tracing::warn!(error = %e, "audit event not written");
    }
}

/// Prints `events` as JSON lines, all in one locked write.
fn print_lines(events: &[AuditEvent]) {
    let mut out = Vec::with_capacity(events.len() * 256);
    for e in events {
        if serde_json::to_writer(&mut out, &to_json(None, e)).is_ok() {
            out.push(b'\n');
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&out);
    let _ = stdout.flush();
}

/// An event as JSON: the fields of docs/audit.md (`id` when stored; `at` both
/// as RFC 3339 and as unix seconds), absent fields as null.
pub fn to_json(id: Option<i64>, e: &AuditEvent) -> serde_json::Value {
    let mut v = serde_json::json!({
        "at": format_rfc3339(e.at),
        "at_unix": e.at,
        "kind": e.kind.as_str(),
        "outcome": e.outcome,
        "app": e.app,
        "account_id": e.account,
        "identity": e.identity,
        "session_id": e.session,
        "address": e.address,
        "user_agent": e.user_agent,
        "detail": e.detail,
    });
    if let Some(id) = id {
        v["id"] = id.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditKind, AuditQuery, AuditRecord, StoreResult};
    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;
    use std::sync::Mutex;

    /// A store whose appends wait for a gate, to fill the queue.
    struct Gated {
        gate: tokio::sync::Semaphore,
        rows: Mutex<Vec<AuditEvent>>,
    }

    impl AuditStore for Gated {
        fn append_audit<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, StoreResult<()>> {
            async move {
                self.gate.acquire().await.unwrap().forget();
                self.rows.lock().unwrap().extend_from_slice(events);
                Ok(())
            }
            .boxed()
        }
        fn audit_events<'a>(
            &'a self,
            _: &'a AuditQuery,
        ) -> BoxFuture<'a, StoreResult<Vec<AuditRecord>>> {
            async { Ok(Vec::new()) }.boxed()
        }
        fn purge_audit(&self, _: i64, _: u32) -> BoxFuture<'_, StoreResult<u64>> {
            async { Ok(0) }.boxed()
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_never_blocks() {
        let store = Arc::new(Gated {
            gate: tokio::sync::Semaphore::new(0),
            rows: Mutex::new(Vec::new()),
        });
        let sink = AuditSink::start(
            store.clone(),
            AuditConfig {
                capacity: 4,
                stdout: false,
            },
        );
        // The first event reaches the writer, which then waits at the gate with
        // it; 4 more fill the queue; the rest are dropped.
        sink.record(AuditEvent::new(AuditKind::Logout, 0));
        for _ in 0..200 {
            if sink.tx.capacity() == 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        for i in 1..=10 {
            sink.record(AuditEvent::new(AuditKind::Logout, i));
        }
        assert_eq!(sink.dropped(), 6);
        store.gate.add_permits(100);
        sink.flush().await;
        let rows = store.rows.lock().unwrap();
        let at: Vec<i64> = rows.iter().map(|e| e.at).collect();
        assert_eq!(at, [0, 1, 2, 3, 4]);
        assert_eq!(sink.failed(), 0);
    }

    #[test]
    fn json_has_every_field() {
        let e = AuditEvent::new(AuditKind::SigninFailed, 1_700_000_000)
            .outcome("invalid_signature")
            .identity("did:key:z6Mk")
            .client(Some("127.0.0.1"), Some("curl/8\u{7}"));
        let v = to_json(Some(7), &e.cleaned());
        assert_eq!(v["id"], 7);
        assert_eq!(v["kind"], "signin_failed");
        assert_eq!(v["outcome"], "invalid_signature");
        assert_eq!(v["user_agent"], "curl/8");
        assert_eq!(v["at"], "2023-11-14T22:13:20Z");
        assert!(v["account_id"].is_null());
    }
}
