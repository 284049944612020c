//! Secrets at rest: API secrets, signing keys and server secrets are sealed with
//! AES-256-GCM under a master key before they reach the database, so a copy of the
//! database file alone gives none of them away.
//!
//! The master key comes from `KEYGATE_MASTER_KEY` (base64url of 32 bytes) or the
//! key file `KEYGATE_MASTER_KEY_FILE` names (which must exist); for an SQLite store
//! without either, a key file is created beside the database (`<db>.key`, mode
//! 0600) on first start, keeping `keygate serve` free of setup. A PostgreSQL store
//! has no such place and needs one of the two. Keep the key out of database backups.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::entropy::{Entropy, OsEntropy};

use super::{StoreError, StoreResult};

const VERSION: u8 = 1;

/// The key that seals secrets at rest, and a sealed dummy secret to open when a
/// lookup finds nothing (see [`MasterKey::open_dummy`]).
pub struct MasterKey(LessSafeKey, Vec<u8>);

/// The context of the dummy: shaped like an API key's.
const DUMMY_CONTEXT: &str = "api_keys:kgk_aaaaaaaaaaaaaaaa";

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        // A 32-byte key is always a valid AES-256 key.
        let key = UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256 key");
        let mut k = MasterKey(LessSafeKey::new(key), Vec::new());
        k.1 = k.seal(DUMMY_CONTEXT, &[0; 32]);
        k
    }

    /// Opens a sealed 32-byte dummy: what a lookup of an unknown API key does in
    /// place of opening the secret it did not find, so that an unknown key id
    /// costs the same work as a known one.
    pub fn open_dummy(&self) {
        let _ = self.open(DUMMY_CONTEXT, &self.1);
    }

    /// Parses the base64url (no padding) form used in `KEYGATE_MASTER_KEY` and key files.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        Some(Self::from_bytes(&bytes.try_into().ok()?))
    }

    /// Resolves the master key for a database: `KEYGATE_MASTER_KEY`, then the file
    /// `KEYGATE_MASTER_KEY_FILE`, then (for a database file) `<db>.key`, created
    /// when absent.
    pub fn for_database(db_path: Option<&std::path::Path>) -> StoreResult<Self> {
        if let Ok(text) = std::env::var("KEYGATE_MASTER_KEY") {
            return Self::parse(&text).ok_or_else(|| {
                StoreError::Internal("KEYGATE_MASTER_KEY is not base64url of 32 bytes".into())
            });
        }
        if let Some(file) = std::env::var_os("KEYGATE_MASTER_KEY_FILE") {
            let file = std::path::PathBuf::from(file);
            let text = std::fs::read_to_string(&file).map_err(|e| {
                StoreError::Internal(format!("KEYGATE_MASTER_KEY_FILE {}: {e}", file.display()))
            })?;
            return Self::parse(&text).ok_or_else(|| {
                StoreError::Internal(format!("{} is not a keygate master key", file.display()))
            });
        }
        let Some(db) = db_path else {
            return Err(StoreError::Internal(
                "a shared database needs the master key that seals its secrets: set \
                 KEYGATE_MASTER_KEY (base64url of 32 random bytes) or KEYGATE_MASTER_KEY_FILE \
                 (a file holding it), the same on every node"
                    .into(),
            ));
        };
        let mut file = db.as_os_str().to_owned();
        file.push(".key");
        let file = std::path::PathBuf::from(file);
        match std::fs::read_to_string(&file) {
            Ok(text) => Self::parse(&text).ok_or_else(|| {
                StoreError::Internal(format!("{} is not a keygate master key", file.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                OsEntropy.fill(&mut key);
                write_new_private(&file, URL_SAFE_NO_PAD.encode(key).as_bytes())?;
                tracing::info!(file = %file.display(), "created the master key that seals secrets at rest");
                Ok(Self::from_bytes(&key))
            }
            Err(e) => Err(StoreError::Internal(format!(
                "cannot read {}: {e}",
                file.display()
            ))),
        }
    }

    /// `version ‖ nonce ‖ ciphertext ‖ tag`, bound to `context` (table and row).
    /// The nonce always comes from the OS RNG, never from an injected source: a
    /// seeded one would repeat nonces under the same key, which breaks AES-GCM.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsEntropy.fill(&mut nonce);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        // Sealing with a valid key and a fresh nonce cannot fail.
        let _ = self.0.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut body,
        );
        out.extend_from_slice(&body);
        out
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> StoreResult<Vec<u8>> {
        crate::apikey::work::note(crate::apikey::work::Step::Unseal);
        let fail = || {
            StoreError::Internal(format!(
                "cannot unseal {context}: wrong master key or damaged data"
            ))
        };
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(fail());
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().map_err(|_| fail())?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

fn write_new_private(path: &std::path::Path, bytes: &[u8]) -> StoreResult<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| StoreError::Internal(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::Internal(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let k = MasterKey::from_bytes(&[7; 32]);
        let sealed = k.seal("api_keys:kgk_a", b"secret bytes");
        assert!(!sealed.windows(12).any(|w| w == b"secret bytes"));
        assert_eq!(k.open("api_keys:kgk_a", &sealed).unwrap(), b"secret bytes");
        assert!(
            k.open("api_keys:kgk_b", &sealed).is_err(),
            "bound to its row"
        );
        assert!(
            MasterKey::from_bytes(&[8; 32])
                .open("api_keys:kgk_a", &sealed)
                .is_err()
        );
        let mut damaged = sealed.clone();
        damaged[20] ^= 1;
        assert!(k.open("api_keys:kgk_a", &damaged).is_err());
        assert!(MasterKey::parse(&URL_SAFE_NO_PAD.encode([1u8; 32])).is_some());
        assert!(MasterKey::parse("short").is_none());
    }
}
