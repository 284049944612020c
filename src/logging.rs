//! Log filtering. Secrets and tokens never reach the logs: keygate's own code never
//! logs them, and the libraries that would (WebSocket and HTTP stacks print frame
//! and header contents at trace level) are capped whatever `RUST_LOG` says.
//!
//! The caps are a second filter that every event must pass besides `RUST_LOG`'s, so
//! no directive can lift them: not `tungstenite=trace`, not a more specific
//! `tungstenite::protocol=trace`, not a span filter such as `[request]=trace`.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Crates that log payloads or headers at debug/trace, and the most they may say
/// (a target and everything under it).
const CAPS: &[(&str, LevelFilter)] = &[
    ("tungstenite", LevelFilter::INFO),
    ("tokio_tungstenite", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("reqwest", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("warp", LevelFilter::INFO),
    ("sqlx", LevelFilter::WARN),
];

/// The caps alone: everything else passes.
fn caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CAPS.iter().copied())
}

/// The filter for `spec` (a `RUST_LOG` value; `info` if it does not parse), with
/// the caps applied on top.
pub fn filter<S>(spec: &str) -> impl Filter<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let env = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    env.and(caps())
}

/// Installs the process's logger: `RUST_LOG` (default `info`) with the caps, to
/// stderr. What the `keygate` binary runs first.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter(&spec));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a subscriber built from `spec` writes for a fixed set of events.
    fn logged(spec: &str) -> String {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(filter(spec)),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            let _g = span.enter();
            tracing::trace!(target: "tungstenite::protocol", "frame payload SECRET-1");
            tracing::debug!(target: "hyper::proto::h1", "headers SECRET-2");
            tracing::info!(target: "sqlx::query", "query SECRET-3");
            tracing::warn!(target: "tungstenite", "a warning that stays");
            tracing::trace!(target: "keygate::hub", "keygate's own trace");
        });
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn no_directive_lifts_the_caps() {
        for spec in [
            "trace",
            "warn,tungstenite=trace,hyper=trace,sqlx=trace",
            "warn,tungstenite::protocol=trace,hyper::proto=trace,sqlx::query=trace",
            "[request]=trace",
            "not a valid spec ===",
        ] {
            let out = logged(spec);
            assert!(!out.contains("SECRET"), "{spec}: {out}");
            assert!(out.contains("a warning that stays"), "{spec}: {out}");
        }
        assert!(logged("trace").contains("keygate's own trace"));
        assert!(!logged("info").contains("keygate's own trace"));
    }
}
