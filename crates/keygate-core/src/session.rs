//! Sessions and their secrets: ids, refresh tokens, lifetimes.
//!
//! A session is what a sign-in creates; every access token names one (`sid`).
//! Refresh tokens are opaque 256-bit secrets stored only as SHA-256 hashes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::time::UnixTime;

/// Default lifetime of an access token.
pub const DEFAULT_ACCESS_TTL: i64 = 3600;
/// Default absolute lifetime of a session.
pub const DEFAULT_SESSION_TTL: i64 = 10 * 3600;
/// Default idle timeout: a session unused (no refresh, no sign-in renewal) for this
/// long ends.
pub const DEFAULT_IDLE_TIMEOUT: i64 = 4 * 3600;
/// Shortest access token lifetime a request may ask for.
pub const MIN_ACCESS_TTL: i64 = 60;
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "kgr_";
/// Prefix of brokered token ids.
pub const BROKER_PREFIX: &str = "kgb_";

/// Lifetimes that an API key sets for the sessions made through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionPolicy {
    /// Access token lifetime when a request asks for none, and the most it may ask.
    pub access_ttl: i64,
    /// Absolute session lifetime.
    pub session_ttl: i64,
    /// Idle timeout.
    pub idle_timeout: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            access_ttl: DEFAULT_ACCESS_TTL,
            session_ttl: DEFAULT_SESSION_TTL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl SessionPolicy {
    /// When an access token minted now expires: the requested `expiration` (seconds)
    /// honoured up to the key's maximum, and never past the session's end.
    pub fn access_expiry(
        &self,
        requested: Option<i64>,
        now: UnixTime,
        session_expires_at: UnixTime,
    ) -> UnixTime {
        let ttl = requested.unwrap_or(self.access_ttl).clamp(
            MIN_ACCESS_TTL,
            self.access_ttl
                .clamp(MIN_ACCESS_TTL, crate::token::MAX_LIFETIME),
        );
        (now + ttl).min(session_expires_at)
    }
}

/// A fresh random identifier (session id, token id): 128 bits, base64url.
pub fn random_id<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A new session id: the creation second (32 bits, big-endian) then 96 random
/// bits, base64url: the same shape as [`random_id`]. Ids made in the same second
/// share a prefix, so a batch of new sessions lands on neighbouring pages of the
/// store's primary-key index instead of one random page each. The creation time
/// is no secret (the token's `iat` says it), and a session id is not a credential.
pub fn session_id<R: rand::CryptoRng + ?Sized>(now: UnixTime, rng: &mut R) -> String {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&u32::try_from(now.max(0)).unwrap_or(u32::MAX).to_be_bytes());
    rng.fill_bytes(&mut b[4..]);
    URL_SAFE_NO_PAD.encode(b)
}

/// Whether a string has the shape of an id made by [`random_id`] or [`session_id`].
pub fn valid_id(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new opaque bearer secret (refresh token, brokered token id): 256 bits.
pub fn new_secret_token<R: rand::CryptoRng + ?Sized>(rng: &mut R, prefix: &str) -> String {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    let mut s = String::with_capacity(prefix.len() + 43);
    s.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(b, &mut s);
    s
}

/// The only form in which bearer secrets are stored.
pub fn hash_secret(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The scope a refresh asks for (RFC 6749 §6), narrowed from the one the session
/// was granted: every token of `requested` must be granted, and the answer names
/// them in the grant's order, once each. `None` when one is not granted or none
/// is named.
pub fn narrow_scope(granted: &str, requested: &str) -> Option<String> {
    let want: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
    if want.is_empty() || want.iter().any(|w| !granted.split(' ').any(|g| g == *w)) {
        return None;
    }
    let kept: Vec<&str> = granted.split(' ').filter(|g| want.contains(g)).collect();
    Some(kept.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn access_expiry_is_bounded_by_key_and_session() {
        let p = SessionPolicy::default();
        let now = 1_000_000;
        assert_eq!(p.access_expiry(None, now, now + 36_000), now + 3600);
        assert_eq!(p.access_expiry(Some(600), now, now + 36_000), now + 600);
        assert_eq!(
            p.access_expiry(Some(1_000_000), now, now + 36_000),
            now + 3600
        );
        assert_eq!(p.access_expiry(Some(1), now, now + 36_000), now + 60);
        assert_eq!(p.access_expiry(None, now, now + 100), now + 100);
    }

    #[test]
    fn secrets_and_ids() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let id = random_id(&mut rng);
        assert!(valid_id(&id));
        let a = session_id(1_795_430_809, &mut rng);
        let b = session_id(1_795_430_809, &mut rng);
        assert!(valid_id(&a) && valid_id(&b) && a != b);
        assert_eq!(a[..5], b[..5], "one second, one prefix");
        assert_ne!(a[..5], session_id(1_795_530_809, &mut rng)[..5]);
        assert!(!valid_id("short"));
        let t = new_secret_token(&mut rng, REFRESH_PREFIX);
        assert!(t.starts_with("kgr_") && t.len() == 47);
        assert_ne!(t, new_secret_token(&mut rng, REFRESH_PREFIX));
        assert_eq!(hash_secret(&t), hash_secret(&t.clone()));
    }

    #[test]
    fn a_refresh_narrows_the_granted_scope_and_never_widens_it() {
        let granted = "openid profile offline_access";
        assert_eq!(narrow_scope(granted, "openid").as_deref(), Some("openid"));
        assert_eq!(
            narrow_scope(granted, "offline_access openid openid").as_deref(),
            Some("openid offline_access")
        );
        assert_eq!(narrow_scope(granted, granted).as_deref(), Some(granted));
        assert_eq!(narrow_scope(granted, "openid email"), None);
        assert_eq!(narrow_scope(granted, "openid profil"), None);
        assert_eq!(narrow_scope(granted, " "), None);
        assert_eq!(narrow_scope("", "openid"), None);
    }
}
