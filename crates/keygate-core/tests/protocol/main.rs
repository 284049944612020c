//! Conformance tests for the protocol core (identity, challenge, token, apikey, time).
//!
//! One test binary with modules inside, so the crate is linked once. Everything here
//! is deterministic: fixed keys, fixed times, and proptest runs with a fixed seed
//! and no failure-persistence files, so a run today and a run next year see the
//! same inputs.
//!
//! - `vectors`: Wycheproof Ed25519 vectors and RFC 8032 section 7.1, vendored under
//!   `tests/vectors/` (see its README for source and licence).
//! - `edge_cases`: hand-built curve edge cases and the choice keygate makes on each.
//! - `bitflips`: a single flipped bit anywhere makes verification fail.
//! - `fuzz`: every parser on random input: no panic, only typed errors.
//! - `jwt`: what keygate mints against the stock `jsonwebtoken` crate.
//! - `strictness`: one spelling per value in the parsers that take encodings.
//! - `doc_examples`: the worked examples of docs/protocol.md, computed by keygate.

mod bitflips;
mod doc_examples;
mod edge_cases;
mod fuzz;
mod jwt;
mod regressions;
mod strictness;
mod vectors;

use ed25519_dalek::SigningKey;
use keygate_core::challenge::{self, IssuedChallenge, NonceKey};
use keygate_core::identity::Identity;
use keygate_core::time::UnixTime;
use proptest::test_runner::{Config, RngSeed};

/// The fixed "now" of every test: 2026-11-23T10:46:49Z.
pub const NOW: UnixTime = 1_795_430_809;
pub const APP: &str = "kgk_protocoltests";
pub const AUDIENCE: &str = "http://localhost:8080";

/// Proptest settings: a fixed seed, no files written, a bounded number of cases.
pub fn proptest_config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x6b65_7967_6174_6531),
        failure_persistence: None,
        ..Config::default()
    }
}

/// The user key of the fixed fixtures.
pub fn user_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// The Hub's nonce key of the fixed fixtures.
pub fn nonce_key() -> NonceKey {
    NonceKey::from_bytes([42; 32])
}

/// A real challenge issued at [`NOW`] for [`user_key`], and its signature.
pub fn signed_challenge() -> (IssuedChallenge, String) {
    let id = Identity::from(&user_key());
    let issued = challenge::issue(
        &nonce_key(),
        APP,
        challenge::Flow::HubHttp,
        AUDIENCE,
        &id,
        NOW,
        60,
        [1; 16],
    )
    .expect("the fixed audience is valid");
    let sig = challenge::sign(&user_key(), &issued.text);
    (issued, sig)
}

/// Decodes lower- or upper-case hex; the vector files are trusted test data.
pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Flips bit `bit` (0 = least significant bit of byte 0) of `bytes`.
pub fn flip(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}
