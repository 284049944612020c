//! Randomness in keygate: the one place that reads the operating system's RNG.
//!
//! The protocol modules take randomness as an argument (a `&mut impl CryptoRng`
//! or plain bytes). The servers hold an [`Entropy`] beside their
//! [`Clock`](crate::time::Clock): [`OsEntropy`] in production, [`SeededEntropy`]
//! in tests that want fixed ids and keys. `clippy.toml` refuses `rand::rng`,
//! `rand::fill` and `rand::random` everywhere but here.

use std::convert::Infallible;
use std::sync::Mutex;

use rand::{SeedableRng, TryCryptoRng, TryRng};

/// A source of unpredictable bytes.
pub trait Entropy: Send + Sync + 'static {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

impl dyn Entropy {
    /// `N` random bytes.
    pub fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }

    /// This source as a `CryptoRng`, for APIs that take one (key generation, ids).
    pub fn rng(&self) -> EntropyRng<'_> {
        EntropyRng(self)
    }
}

/// The operating system's cryptographic RNG (through `rand`'s thread RNG, seeded
/// and reseeded from the OS).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    #[allow(clippy::disallowed_methods)] // the one reader of the OS RNG
    fn fill(&self, dest: &mut [u8]) {
        rand::fill(dest)
    }
}

/// The OS RNG as a `CryptoRng`, for tools and tests that need one directly.
pub fn os_rng() -> EntropyRng<'static> {
    EntropyRng(&OsEntropy)
}

/// A deterministic source for tests: the same seed gives the same bytes.
#[derive(Debug)]
pub struct SeededEntropy(Mutex<rand::rngs::StdRng>);

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        SeededEntropy(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, dest: &mut [u8]) {
        let mut rng = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        rand::Rng::fill_bytes(&mut *rng, dest);
    }
}

/// An [`Entropy`] seen as a `CryptoRng`.
pub struct EntropyRng<'a>(&'a dyn Entropy);

impl TryRng for EntropyRng<'_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

impl TryCryptoRng for EntropyRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_bytes_and_keys() {
        let a: &dyn Entropy = &SeededEntropy::new(7);
        let b: &dyn Entropy = &SeededEntropy::new(7);
        assert_eq!(a.bytes::<32>(), b.bytes::<32>());
        let ka = ed25519_dalek::SigningKey::generate(&mut a.rng());
        let kb = ed25519_dalek::SigningKey::generate(&mut b.rng());
        assert_eq!(ka.to_bytes(), kb.to_bytes());
        let other: &dyn Entropy = &SeededEntropy::new(8);
        assert_ne!(a.bytes::<32>(), other.bytes::<32>());
    }

    #[test]
    fn the_os_source_is_not_constant() {
        let e: &dyn Entropy = &OsEntropy;
        assert_ne!(e.bytes::<32>(), e.bytes::<32>());
        let _ = crate::session::random_id(&mut os_rng());
    }
}
