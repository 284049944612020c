//! Abuse limits: what an unauthenticated peer may cost the server.
//!
//! - Connections: a global cap and a per-address cap on open TCP connections
//!   (an IPv6 peer counts by its /64), and deadlines for a request's head, its
//!   body, a stalled write and a keep-alive idle connection (enforced by the
//!   listener, which also lets the oldest connection that is waiting for a
//!   request head give way to a new one when the global cap is reached).
//! - Sign-in sockets: a global and per-address cap on open sign-in WebSockets; each
//!   holds a [`HandshakeSlot`] until it closes, and must finish within the handshake
//!   deadline.
//! - Rates: token buckets (governor) per address on the sign-in endpoints and per
//!   identity on challenge issue and redemption; over the rate is `429` with
//!   `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::Error;

/// The limits a server runs with. `0` in a rate or cap means "no limit".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_handshakes: usize,
    pub max_handshakes_per_ip: usize,
    pub handshake_timeout: Duration,
    /// From accept (or from the first byte of a later request) to a complete
    /// request head.
    pub header_timeout: Duration,
    /// From a request's head to the end of its body.
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request, and how long a write
    /// may stall (a peer that does not read).
    pub idle_timeout: Duration,
    /// Sign-in requests (challenges, token redemptions, refreshes) per second per
    /// address, sustained; bursts up to twice that.
    pub rate_per_ip: u32,
    /// Challenges and redemptions per minute per identity; bursts up to 10.
    pub rate_per_identity_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            max_connections_per_ip: 512,
            max_handshakes: 10_000,
            max_handshakes_per_ip: 64,
            handshake_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            rate_per_ip: 50,
            rate_per_identity_per_minute: 60,
        }
    }
}

impl Limits {
    /// No caps and no rates (benchmarks, trusted load tests).
    pub fn unlimited() -> Self {
        Limits {
            max_connections: 0,
            max_connections_per_ip: 0,
            max_handshakes: 0,
            max_handshakes_per_ip: 0,
            rate_per_ip: 0,
            rate_per_identity_per_minute: 0,
            ..Limits::default()
        }
    }
}

/// The address a peer is counted under: an IPv4 address as it is (also when
/// written as IPv4-mapped IPv6), an IPv6 address by its /64 prefix, since one
/// host is commonly given a whole /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Counts open things (sign-in sockets) globally and per address
/// ([`client_key`]).
pub struct Gauge {
    max: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One counted thing; released on drop.
pub struct Slot {
    gauge: Arc<Gauge>,
    ip: IpAddr,
}

pub type HandshakeSlot = Slot;

impl Gauge {
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Gauge {
            max,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a slot for `ip`, or `None` when a cap is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let per_ip = open.1.get(&ip).copied().unwrap_or(0);
        if (self.max != 0 && open.0 >= self.max)
            || (self.max_per_ip != 0 && per_ip >= self.max_per_ip)
        {
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(Slot {
            gauge: self.clone(),
            ip,
        })
    }

    /// How many are open (globally).
    pub fn open(&self) -> usize {
        self.open.lock().map(|o| o.0).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gauge.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// TOTP attempts per account: a burst of this many, then one per
/// [`TOTP_REFILL_SECS`]. Always on (even with [`Limits::unlimited`]): it is what
/// makes six digits enough. A guesser gets about 1,445 tries a day, each with
/// three codes in a million valid: about 0.4% a day, against an account whose
/// first factor (a key) they must already hold.
pub const TOTP_BURST: u32 = 5;
pub const TOTP_REFILL_SECS: u64 = 60;

/// The rate limiters and the sign-in socket gauge of one server.
pub struct Guard {
    pub limits: Limits,
    pub handshakes: Arc<Gauge>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_identity: Option<DefaultKeyedRateLimiter<String>>,
    per_account_totp: DefaultKeyedRateLimiter<String>,
}

impl Guard {
    pub fn new(limits: Limits) -> Arc<Self> {
        let per_ip = NonZeroU32::new(limits.rate_per_ip).map(|r| {
            let burst = r.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            governor::RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
        });
        let per_identity = NonZeroU32::new(limits.rate_per_identity_per_minute).map(|r| {
            let burst = NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN);
            governor::RateLimiter::keyed(Quota::per_minute(r).allow_burst(burst))
        });
        Arc::new(Guard {
            handshakes: Gauge::new(limits.max_handshakes, limits.max_handshakes_per_ip),
            limits,
            per_ip,
            per_identity,
            per_account_totp: governor::RateLimiter::keyed(
                Quota::with_period(Duration::from_secs(TOTP_REFILL_SECS))
                    .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(TOTP_BURST).unwrap_or(NonZeroU32::MIN)),
            ),
        })
    }

    /// Counts one TOTP attempt for `account`.
    pub fn check_totp(&self, account: &str) -> Result<(), Error> {
        self.per_account_totp
            .check_key(&account.to_owned())
            .map_err(|n| refused("totp_rate", n))
    }

    /// Counts one sign-in request from `ip`.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        match (&self.per_ip, ip) {
            (Some(l), Some(ip)) => l
                .check_key(&client_key(ip))
                .map_err(|n| refused("ip_rate", n)),
            _ => Ok(()),
        }
    }

    /// Counts one challenge or redemption for `identity` (canonical form).
    pub fn check_identity(&self, identity: &str) -> Result<(), Error> {
        match &self.per_identity {
            Some(l) => l
                .check_key(&identity.to_owned())
                .map_err(|n| refused("identity_rate", n)),
            None => Ok(()),
        }
    }

    /// A sign-in socket slot for `ip`, or `429` when the caps are reached.
    pub fn handshake(&self, ip: Option<IpAddr>) -> Result<Option<HandshakeSlot>, Error> {
        let Some(ip) = ip else { return Ok(None) };
        match self.handshakes.acquire(ip) {
            Some(slot) => Ok(Some(slot)),
            None => {
                crate::metrics::metrics().refused("handshake_cap");
                Err(Error::RateLimited { retry_after: 1 })
            }
        }
    }

    /// Forgets rate-limit state that no longer matters, so that memory stays
    /// bounded by the peers of the last moments.
    pub fn shrink(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_identity {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.per_account_totp.retain_recent();
        self.per_account_totp.shrink_to_fit();
    }
}

/// A limiter's refusal (counted in metrics as `kind`), with when to retry.
fn refused(
    kind: &'static str,
    not_until: governor::NotUntil<<DefaultClock as governor::clock::Clock>::Instant>,
) -> Error {
    crate::metrics::metrics().refused(kind);
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    Error::RateLimited {
        retry_after: wait.as_secs().max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_caps_globally_and_per_address() {
        let g = Gauge::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = g.acquire(a).unwrap();
        let _s2 = g.acquire(a).unwrap();
        assert!(g.acquire(a).is_none(), "per-address cap");
        let _s3 = g.acquire(b).unwrap();
        assert!(g.acquire(b).is_none(), "global cap");
        drop(s1);
        assert!(g.acquire(a).is_some(), "released on drop");
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff::9"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_eq!(key("10.0.0.1"), "10.0.0.1".parse::<IpAddr>().unwrap());
        let g = Gauge::new(0, 2);
        let _a = g.acquire("2001:db8::1".parse().unwrap()).unwrap();
        let _b = g.acquire("2001:db8::2".parse().unwrap()).unwrap();
        assert!(
            g.acquire("2001:db8::3".parse().unwrap()).is_none(),
            "same /64"
        );
        assert!(g.acquire("2001:db8:0:1::3".parse().unwrap()).is_some());
    }

    #[test]
    fn rates_answer_429_with_retry_after() {
        let guard = Guard::new(Limits {
            rate_per_ip: 1,
            rate_per_identity_per_minute: 1,
            ..Limits::default()
        });
        let ip = Some("127.0.0.9".parse().unwrap());
        assert!(guard.check_ip(ip).is_ok());
        assert!(guard.check_ip(ip).is_ok(), "burst of two");
        match guard.check_ip(ip) {
            Err(Error::RateLimited { retry_after }) => assert!(retry_after >= 1),
            other => panic!("{other:?}"),
        }
        for _ in 0..10 {
            assert!(guard.check_identity("bbaareia").is_ok());
        }
        assert!(guard.check_identity("bbaareia").is_err());
        assert!(guard.check_identity("bbaareib").is_ok(), "per identity");
        let off = Guard::new(Limits::unlimited());
        for _ in 0..1000 {
            assert!(off.check_ip(ip).is_ok());
        }
    }
}
