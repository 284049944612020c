//! Log filtering. Secrets and tokens never reach the logs: keygate's own code never
//! logs them, and the libraries that would (WebSocket and HTTP stacks print frame
//! and header contents at trace level) are capped whatever `RUST_LOG` says.
//!
//! The caps are a second filter that every event must pass besides `RUST_LOG`'s, so
//! no directive can lift them: not `tungstenite=trace`, not a more specific
//! `tungstenite::protocol=trace`, not a span filter such as `[request]=trace`.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
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

/// The process's subscriber: the caps as a global filter (no event of a capped
/// crate above its cap reaches any layer), then `RUST_LOG`'s filter (`spec`;
/// `info` if it does not parse) on the output layer. Two separate filters rather
/// than one combined per-layer filter: a combined one (`EnvFilter::and`) lost
/// keygate's own events once another crate's spans were enabled (seen with
/// `RUST_LOG=debug` on PostgreSQL, where the gateway's start-up line vanished).
pub fn subscriber<W>(spec: &str, writer: W, ansi: bool) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let env = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry().with(caps()).with(
        fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(env),
    )
}

/// Installs the process's logger: `RUST_LOG` (default `info`) with the caps, to
/// stderr. What the `keygate` binary runs first.
pub fn init() {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    // Colours unless NO_COLOR is set (https://no-color.org), as fmt's default does.
    let ansi = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = subscriber(&spec, std::io::stderr, ansi).try_init();
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
        let subscriber = subscriber(spec, move || writer.clone(), false);
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
