//! API keys of apps: an id, a secret shown once, and HMAC-signed requests.
//!
//! A request from an app backend carries three headers: the key id, an RFC 3339
//! time at which the signature expires (`msg`), and the multibase base32-lower
//! HMAC-SHA256 of that time keyed with the secret's bytes. The secret string is
//! itself multibase base32-lower (`b…`) of 32 random bytes; the HMAC key is the
//! decoded bytes, as in Textile's Hub.

use hmac::{KeyInit, Mac};

use crate::time::{UnixTime, format_rfc3339, parse_rfc3339};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const HEADER_KEY: &str = "x-keygate-api-key";
pub const HEADER_MSG: &str = "x-keygate-api-sig-msg";
pub const HEADER_SIG: &str = "x-keygate-api-sig";
/// How far ahead a signature's expiry may lie.
pub const MAX_SIG_AHEAD: i64 = 3600;
const KEY_ID_PREFIX: &str = "kgk_";

/// The steps of checking an app's request, counted on the current thread only
/// with the `work-trace` feature (the server's tests turn it on; nothing else
/// does): a test holds a known and an unknown key id to the same work, which is
/// what keeps their timing alike.
#[doc(hidden)]
pub mod work {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Step {
        Lookup,
        Unseal,
        Mac,
    }

    #[cfg(any(test, feature = "work-trace"))]
    thread_local! {
        static STEPS: std::cell::RefCell<Vec<Step>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[inline(always)]
    pub fn note(_step: Step) {
        #[cfg(any(test, feature = "work-trace"))]
        STEPS.with(|s| s.borrow_mut().push(_step));
    }

    /// The steps noted on this thread since the last call.
    #[cfg(any(test, feature = "work-trace"))]
    pub fn take() -> Vec<Step> {
        STEPS.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}

/// Every failure is the same to the caller: `401 invalid_api_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown or revoked API key, or a bad or expired API signature")]
pub struct ApiKeyError;

impl ApiKeyError {
    pub const CODE: &'static str = "invalid_api_key";
}

/// A new key's id and secret; the secret is shown to the operator once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: String,
    pub secret: ApiSecret,
}

pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> NewApiKey {
    let mut id = [0u8; 10];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    NewApiKey {
        id: format!(
            "{KEY_ID_PREFIX}{}",
            &multibase::encode(multibase::Base::Base32Lower, id)[1..]
        ),
        secret: ApiSecret(secret),
    }
}

/// Whether a string has the shape of a key id (checked before any store lookup).
pub fn valid_key_id(id: &str) -> bool {
    id.len() <= 64
        && id.strip_prefix(KEY_ID_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        })
}

/// An API secret: 32 bytes, spelled as multibase base32-lower.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiSecret([u8; 32]);

impl ApiSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ApiSecret(bytes)
    }

    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > 128 || !is_base32_lower(s) {
            return None;
        }
        let (base, bytes) = multibase::decode(s).ok()?;
        if base != multibase::Base::Base32Lower {
            return None;
        }
        Some(ApiSecret(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The string to hand to the operator (once).
    pub fn reveal(&self) -> String {
        multibase::encode(multibase::Base::Base32Lower, self.0)
    }

    fn mac(&self, msg: &str) -> [u8; 32] {
        work::note(work::Step::Mac);
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(msg.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The `(msg, sig)` header values for a signature that expires at `expires_at`.
    pub fn sign(&self, expires_at: UnixTime) -> (String, String) {
        let msg = format_rfc3339(expires_at);
        let sig = multibase::encode(multibase::Base::Base32Lower, self.mac(&msg));
        (msg, sig)
    }

    /// Checks the `msg` and `sig` header values at time `now`.
    pub fn verify(&self, msg: &str, sig: &str, now: UnixTime) -> Result<(), ApiKeyError> {
        let expires_at = parse_rfc3339(msg).ok_or(ApiKeyError)?;
        if expires_at <= now || expires_at > now + MAX_SIG_AHEAD {
            return Err(ApiKeyError);
        }
        if sig.len() > 128 || !is_base32_lower(sig) {
            return Err(ApiKeyError);
        }
        let (base, given) = multibase::decode(sig).map_err(|_| ApiKeyError)?;
        if base != multibase::Base::Base32Lower {
            return Err(ApiKeyError);
        }
        let expected = self.mac(msg);
        if bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &given[..])) {
            Ok(())
        } else {
            Err(ApiKeyError)
        }
    }
}

/// `b` followed by RFC 4648 base32 lower case only: the multibase decoder folds
/// case, and a secret or signature must have exactly one spelling.
fn is_base32_lower(s: &str) -> bool {
    s.strip_prefix('b').is_some_and(|rest| {
        rest.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

impl std::fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const NOW: UnixTime = 1_795_430_809;

    fn key() -> NewApiKey {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        generate(&mut rng)
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = key();
        assert!(valid_key_id(&k.id), "{}", k.id);
        assert_eq!(k.id.len(), 4 + 16);
        let s = k.secret.reveal();
        assert!(s.starts_with('b'));
        assert_eq!(ApiSecret::parse(&s), Some(k.secret.clone()));
        assert_eq!(format!("{:?}", k.secret), "ApiSecret(..)");
        assert!(!valid_key_id("kgk_"));
        assert!(!valid_key_id("kgk_ABC"));
        assert!(!valid_key_id("bbaarei"));
    }

    #[test]
    fn signature_window() {
        let k = key();
        let (msg, sig) = k.secret.sign(NOW + 300);
        assert_eq!(msg, "2026-11-23T10:51:49Z");
        assert_eq!(k.secret.verify(&msg, &sig, NOW), Ok(()));
        assert_eq!(k.secret.verify(&msg, &sig, NOW + 300), Err(ApiKeyError));
        let (far, far_sig) = k.secret.sign(NOW + 3601);
        assert_eq!(k.secret.verify(&far, &far_sig, NOW), Err(ApiKeyError));
        let (edge, edge_sig) = k.secret.sign(NOW + 3600);
        assert_eq!(k.secret.verify(&edge, &edge_sig, NOW), Ok(()));
    }

    #[test]
    fn wrong_mac_or_encoding() {
        let k = key();
        let other = generate(&mut rand::rngs::StdRng::seed_from_u64(2));
        let (msg, sig) = k.secret.sign(NOW + 60);
        assert_eq!(other.secret.verify(&msg, &sig, NOW), Err(ApiKeyError));
        let upper = multibase::encode(
            multibase::Base::Base32Upper,
            multibase::decode(&sig).unwrap().1,
        );
        assert_eq!(k.secret.verify(&msg, &upper, NOW), Err(ApiKeyError));
        assert_eq!(
            k.secret.verify(&msg, &sig[..sig.len() - 2], NOW),
            Err(ApiKeyError)
        );
        assert_eq!(k.secret.verify("soon", &sig, NOW), Err(ApiKeyError));
        assert_eq!(k.secret.verify(&msg, "", NOW), Err(ApiKeyError));
        // The same instant spelled with an offset is another message: another MAC.
        assert_eq!(
            k.secret.verify("2026-11-23T11:47:49+01:00", &sig, NOW),
            Err(ApiKeyError)
        );
    }
}
