//! Log filtering. Secrets and tokens never reach the logs: keygate's own code never
//! logs them, and the libraries that would (WebSocket and HTTP stacks print frame
//! and header contents at trace level) are capped whatever `RUST_LOG` says.

use tracing_subscriber::EnvFilter;

/// Crates that log payloads or headers at debug/trace, and the most they may say.
const CAPS: &[&str] = &[
    "tungstenite=info",
    "tokio_tungstenite=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "reqwest=info",
    "rustls=info",
    "warp=info",
    "sqlx=warn",
];

/// The filter for `spec` (a `RUST_LOG` value), with the caps applied on top.
pub fn filter(spec: &str) -> EnvFilter {
    let mut f = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    for cap in CAPS {
        if let Ok(d) = cap.parse() {
            f = f.add_directive(d);
        }
    }
    f
}
