//! Fixed keys, times and names shared by the fuzz targets, and the small helpers
//! they use to split one input into several fields.
//!
//! The seed corpus in `fuzz/corpus/` is made against these same values by
//! `fuzz/make_seeds.py`: change one, and regenerate the seeds.

use std::sync::LazyLock;

use ed25519_dalek::SigningKey;
use keygate::apikey::ApiSecret;
use keygate::challenge::NonceKey;
use keygate::identity::Identity;
use keygate::time::UnixTime;
use keygate::token::{Jwks, TokenSigner, TokenVerifier};

/// The fixed "now": 2026-11-23T10:46:49Z.
pub const NOW: UnixTime = 1_795_430_809;
/// The app (API key id) the challenges are bound to.
pub const APP: &str = "kgk_fuzzapp";
/// The audience the challenges name (a Provider's origin).
pub const AUDIENCE: &str = "http://localhost:8080";
/// The `iss` of the tokens.
pub const ISSUER: &str = "http://127.0.0.1:8080";

/// The user's key: seed `[7; 32]`.
pub fn user_key() -> &'static SigningKey {
    static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[7; 32]));
    &KEY
}

pub fn user_identity() -> Identity {
    Identity::from(user_key())
}

/// The Hub's challenge nonce key.
pub fn nonce_key() -> NonceKey {
    NonceKey::from_bytes([42; 32])
}

/// The Hub's token signing key: seed `[3; 32]`.
pub fn token_signer() -> &'static TokenSigner {
    static SIGNER: LazyLock<TokenSigner> =
        LazyLock::new(|| TokenSigner::new(SigningKey::from_bytes(&[3; 32])));
    &SIGNER
}

/// The JWKS holding [`token_signer`]'s public key.
pub fn jwks() -> Jwks {
    Jwks {
        keys: vec![token_signer().jwk().clone()],
    }
}

/// A verifier of [`ISSUER`]'s tokens from [`jwks`], any audience, default leeway.
pub fn token_verifier() -> &'static TokenVerifier {
    static VERIFIER: LazyLock<TokenVerifier> =
        LazyLock::new(|| TokenVerifier::new(&jwks(), ISSUER));
    &VERIFIER
}

/// The app's API secret: `[5; 32]`.
pub fn api_secret() -> ApiSecret {
    ApiSecret::from_bytes([5; 32])
}

/// Splits an input into at most `N` fields at NUL bytes; missing fields are empty.
/// The seeds are plain text fields joined by `\0`, so they stay readable.
pub fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut rest = data;
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = rest;
            break;
        }
        match rest.iter().position(|&b| b == 0) {
            Some(p) => {
                *slot = &rest[..p];
                rest = &rest[p + 1..];
            }
            None => {
                *slot = rest;
                rest = &[];
            }
        }
    }
    out
}

/// A field as text, if it is UTF-8 (every keygate parser takes `&str`).
pub fn text(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok()
}
