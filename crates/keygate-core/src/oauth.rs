//! OAuth 2.0 / OpenID Connect building blocks that need no IO: PKCE (RFC 7636),
//! OIDC client ids and secrets, and the user codes of the device grant
//! (RFC 8628).
//!
//! Randomness comes in as an argument, like everywhere in this crate; every
//! comparison of a secret against a presented value is constant-time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of an OIDC client id.
pub const CLIENT_ID_PREFIX: &str = "kgc_";
/// Prefix of an OIDC client secret.
pub const CLIENT_SECRET_PREFIX: &str = "kgcs_";
/// The letters of a device-grant user code: consonants only (no vowels, so no
/// words; RFC 8628 §6.1), upper case.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a user code (shown as two groups of four): 20^8 ≈ 2^34.6 codes.
pub const USER_CODE_LEN: usize = 8;

/// Shortest and longest PKCE code verifier (RFC 7636 §4.1).
const VERIFIER_MIN: usize = 43;
const VERIFIER_MAX: usize = 128;
/// Length of an S256 code challenge: base64url of 32 bytes, unpadded.
const CHALLENGE_LEN: usize = 43;

/// A well-formed PKCE `code_verifier`: 43 to 128 characters, each one of
/// `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
pub fn valid_verifier(verifier: &str) -> bool {
    (VERIFIER_MIN..=VERIFIER_MAX).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A well-formed S256 `code_challenge`: exactly 43 base64url characters (the
/// unpadded encoding of a SHA-256 digest).
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == CHALLENGE_LEN && challenge.bytes().all(is_base64url)
}

/// Whether `verifier` is well formed and `BASE64URL(SHA256(verifier))` equals
/// `challenge` (RFC 7636 §4.6, method S256). The comparison is constant-time.
pub fn s256_matches(verifier: &str, challenge: &str) -> bool {
    if !valid_verifier(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    // `ct_eq` on slices of different lengths is false (and says only the length).
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// A new OIDC client id: `kgc_` + 22 base64url characters (16 random bytes).
pub fn new_client_id<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    format!("{CLIENT_ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(b))
}

/// A new client secret for a confidential client: `kgcs_` + 43 base64url
/// characters (32 random bytes). Shown once; only [`hash_client_secret`] of it
/// is stored.
pub fn new_client_secret<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    format!("{CLIENT_SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(b))
}

/// What is stored of a client secret: SHA-256 of the whole string. A fast hash
/// is right here: the secret is 256 random bits, not a password, so there is
/// nothing for a slow hash to protect against guessing.
pub fn hash_client_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a presented client secret hashes to `stored`, compared in constant time.
pub fn client_secret_matches(presented: &str, stored: &[u8; 32]) -> bool {
    bool::from(hash_client_secret(presented).ct_eq(stored))
}

/// A new device-grant user code, shown as `XXXX-XXXX` (RFC 8628 §6.1): eight
/// letters of [`USER_CODE_ALPHABET`]. Store and look it up by
/// [`normalize_user_code`] of it (the eight letters without the dash).
pub fn new_user_code<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut out = String::with_capacity(USER_CODE_LEN + 1);
    for i in 0..USER_CODE_LEN {
        if i == USER_CODE_LEN / 2 {
            out.push('-');
        }
        // 64 random bits per letter: the modulo bias (2^64 mod 20 of 2^64) is
        // below 2^-60, and the loop needs no rejection step.
        let mut b = [0u8; 8];
        rng.fill_bytes(&mut b);
        let i = (u64::from_le_bytes(b) % USER_CODE_ALPHABET.len() as u64) as usize;
        out.push(char::from(USER_CODE_ALPHABET[i]));
    }
    out
}

/// The canonical form of a user code as typed by a person: upper case, without
/// dashes and spaces; `None` unless that leaves exactly eight letters of
/// [`USER_CODE_ALPHABET`].
pub fn normalize_user_code(typed: &str) -> Option<String> {
    // Anything this long is no user code, however many separators it holds.
    if typed.len() > 4 * USER_CODE_LEN {
        return None;
    }
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
    ok.then_some(code)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::{Entropy, SeededEntropy};

    /// RFC 7636 Appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn pkce_s256_matches_the_rfc_7636_vector() {
        assert!(valid_verifier(RFC_VERIFIER));
        assert!(valid_challenge(RFC_CHALLENGE));
        assert!(s256_matches(RFC_VERIFIER, RFC_CHALLENGE));
    }

    #[test]
    fn pkce_refuses_another_verifier_or_challenge() {
        let mut other = RFC_VERIFIER.to_owned();
        other.replace_range(0..1, "e");
        assert!(!s256_matches(&other, RFC_CHALLENGE));
        let mut challenge = RFC_CHALLENGE.to_owned();
        challenge.replace_range(42..43, "N");
        assert!(!s256_matches(RFC_VERIFIER, &challenge));
        // The plain method is not S256: the verifier itself is no challenge.
        assert!(!s256_matches(RFC_VERIFIER, RFC_VERIFIER));
        // A truncated or padded challenge does not match either.
        assert!(!s256_matches(RFC_VERIFIER, &RFC_CHALLENGE[..42]));
        assert!(!s256_matches(RFC_VERIFIER, &format!("{RFC_CHALLENGE}=")));
        // A malformed verifier never matches, even against its own hash.
        let short = &RFC_VERIFIER[..42];
        let own = URL_SAFE_NO_PAD.encode(Sha256::digest(short.as_bytes()));
        assert!(!s256_matches(short, &own));
    }

    #[test]
    fn verifier_shape() {
        assert!(valid_verifier(&"a".repeat(43)));
        assert!(valid_verifier(&"~._-Az09".repeat(16)));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(42))));
        assert!(!valid_verifier(&format!("{}=", "a".repeat(42))));
        assert!(!valid_verifier(&format!("{} ", "a".repeat(42))));
        // 43 bytes but not 43 ASCII characters.
        assert!(!valid_verifier(&format!("{}é", "a".repeat(41))));
    }

    #[test]
    fn challenge_shape() {
        assert!(!valid_challenge(&RFC_CHALLENGE[..42]));
        assert!(!valid_challenge(&format!("{RFC_CHALLENGE}A")));
        assert!(!valid_challenge(&format!("{}+", &RFC_CHALLENGE[..42])));
        assert!(!valid_challenge(&format!("{}.", &RFC_CHALLENGE[..42])));
        assert!(!valid_challenge(""));
    }

    #[test]
    fn client_ids_and_secrets_have_their_shape_and_follow_the_seed() {
        let e: &dyn Entropy = &SeededEntropy::new(17);
        let id = new_client_id(&mut e.rng());
        assert_eq!(id.len(), 4 + 22);
        assert!(id.starts_with("kgc_"));
        assert!(id[4..].bytes().all(is_base64url));
        let secret = new_client_secret(&mut e.rng());
        assert_eq!(secret.len(), 5 + 43);
        assert!(secret.starts_with("kgcs_"));
        assert!(secret[5..].bytes().all(is_base64url));

        let again: &dyn Entropy = &SeededEntropy::new(17);
        assert_eq!(new_client_id(&mut again.rng()), id);
        assert_eq!(new_client_secret(&mut again.rng()), secret);
        assert_ne!(new_client_secret(&mut again.rng()), secret);
    }

    #[test]
    fn a_client_secret_matches_its_hash_only() {
        let e: &dyn Entropy = &SeededEntropy::new(3);
        let secret = new_client_secret(&mut e.rng());
        let stored = hash_client_secret(&secret);
        assert_eq!(stored, <[u8; 32]>::from(Sha256::digest(secret.as_bytes())));
        assert!(client_secret_matches(&secret, &stored));
        assert!(!client_secret_matches(&secret[..secret.len() - 1], &stored));
        assert!(!client_secret_matches(&format!("{secret}x"), &stored));
        assert!(!client_secret_matches("", &stored));
        let other = new_client_secret(&mut e.rng());
        assert!(!client_secret_matches(&other, &stored));
    }

    #[test]
    fn user_codes_have_their_shape_and_follow_the_seed() {
        let e: &dyn Entropy = &SeededEntropy::new(5);
        let again: &dyn Entropy = &SeededEntropy::new(5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let code = new_user_code(&mut e.rng());
            assert_eq!(code, new_user_code(&mut again.rng()));
            assert_eq!(code.len(), 9);
            assert_eq!(&code[4..5], "-");
            let letters: Vec<u8> = code.bytes().filter(|&b| b != b'-').collect();
            assert_eq!(letters.len(), 8);
            assert!(letters.iter().all(|b| USER_CODE_ALPHABET.contains(b)));
            assert_eq!(
                normalize_user_code(&code).as_deref(),
                Some(std::str::from_utf8(&letters).unwrap())
            );
            seen.insert(code);
        }
        // 200 draws from 20^8 codes: a repeat would mean the letters are not random.
        assert_eq!(seen.len(), 200);
        // Every letter of the alphabet turns up somewhere in 1600 draws.
        let all: std::collections::HashSet<u8> = seen.iter().flat_map(|c| c.bytes()).collect();
        assert!(USER_CODE_ALPHABET.iter().all(|b| all.contains(b)));
    }

    #[test]
    fn user_codes_normalize_as_typed() {
        assert_eq!(
            normalize_user_code("BCDF-GHJK").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code("bcdf ghjk").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(
            normalize_user_code(" bc-df gh-jk ").as_deref(),
            Some("BCDFGHJK")
        );
        assert_eq!(normalize_user_code("BCDFGHJK").as_deref(), Some("BCDFGHJK"));
        // A vowel, a digit, one letter too few or too many, other separators.
        assert_eq!(normalize_user_code("BCDF-GHJA"), None);
        assert_eq!(normalize_user_code("BCDF-GHJ1"), None);
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(normalize_user_code("BCDF-GHJKL"), None);
        assert_eq!(normalize_user_code("BCDF_GHJK"), None);
        assert_eq!(normalize_user_code("BCDF\tGHJK"), None);
        assert_eq!(normalize_user_code(""), None);
        // Non-ASCII letters whose upper case is not in the alphabet.
        assert_eq!(normalize_user_code("BCDF-GHJß"), None);
        assert_eq!(
            normalize_user_code(&format!("BCDFGHJK{}", "-".repeat(100))),
            None
        );
    }
}
