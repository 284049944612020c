//! Time in keygate: unix seconds as plain integers, RFC 3339 text at the edges.
//!
//! The protocol modules never read the clock; they take `now` as an argument. The
//! one place that reads the wall clock is [`SystemClock`], handed to the servers as a
//! [`Clock`] so that tests can inject a fixed or moving one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix time in whole seconds.
pub type UnixTime = i64;

/// Formats as RFC 3339 UTC with whole seconds, e.g. `2026-11-23T10:46:49Z`.
pub fn format_rfc3339(t: UnixTime) -> String {
    match OffsetDateTime::from_unix_timestamp(t) {
        Ok(dt) => {
            let (y, mo, d) = (dt.year(), u8::from(dt.month()), dt.day());
            let (h, mi, s) = (dt.hour(), dt.minute(), dt.second());
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
        }
        // Out of range only for absurd inputs; clamp rather than panic.
        Err(_) => "9999-12-31T23:59:59Z".to_owned(),
    }
}

/// Parses any RFC 3339 timestamp (any offset, optional fraction, truncated to seconds).
pub fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    if s.len() > 64 {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|dt| dt.unix_timestamp())
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixTime;
}

/// The wall clock: the only reader of system time in the crate.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one reader of the wall clock
    fn now(&self) -> UnixTime {
        OffsetDateTime::now_utc().unix_timestamp()
    }
}

/// A clock tests can set and advance.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(t: UnixTime) -> Self {
        ManualClock(Arc::new(AtomicI64::new(t)))
    }
    pub fn set(&self, t: UnixTime) {
        self.0.store(t, Ordering::SeqCst)
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_430_809), "2026-11-23T10:46:49Z");
        assert_eq!(parse_rfc3339("2026-11-23T10:46:49Z"), Some(1_795_430_809));
        assert_eq!(
            parse_rfc3339("2026-11-23T11:46:49+01:00"),
            Some(1_795_430_809)
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T10:46:49.999Z"),
            Some(1_795_430_809)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-11-24 10:46:49"), None);
    }
}
