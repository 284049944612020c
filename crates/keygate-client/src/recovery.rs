//! A user's recovery key (docs/accounts.md, "Recovery key"): an Ed25519 key whose
//! 32-byte seed is the entropy of 24 BIP-39 words (English list), shown to the
//! user once and kept nowhere else. Linked to the account with the label
//! `recovery`, it cannot sign in; it does one thing, once: authorize a new
//! device's key to join the account ([`AccountClient::recover`]).

use ed25519_dalek::SigningKey;

use super::ClientError;
use super::account::AccountClient;
use keygate_core::account::RECOVERY_LABEL;
use keygate_core::identity::Identity;
use keygate_proto::{ChallengeBody, IssuedToken, Linked};

/// Words in a recovery phrase (256 bits of entropy and an 8-bit checksum).
pub const WORDS: usize = 24;

/// A fresh recovery key from the operating system's CSPRNG.
pub fn new_recovery_key() -> SigningKey {
    SigningKey::generate(&mut keygate_core::entropy::os_rng())
}

/// The key's seed as 24 words, separated by single spaces.
pub fn words_of(key: &SigningKey) -> String {
    bip39::Mnemonic::from_entropy(key.as_bytes())
        .expect("32 bytes is a valid BIP-39 entropy length")
        .to_string()
}

/// The recovery key of a phrase: 24 words of the English list with a valid
/// checksum, in any case and spacing. The error never repeats the words.
pub fn key_from_words(words: &str) -> Result<SigningKey, ClientError> {
    let phrase = words
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ");
    let refused = || {
        ClientError::Protocol(format!(
            "not a recovery phrase: {WORDS} words of the BIP-39 English list with a valid checksum"
        ))
    };
    let m = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &phrase)
        .map_err(|_| refused())?;
    let (entropy, len) = m.to_entropy_array();
    let seed: [u8; 32] = entropy[..len].try_into().map_err(|_| refused())?;
    Ok(SigningKey::from_bytes(&seed))
}

impl AccountClient {
    /// Links `recovery` to the signed-in account (as the signed-in `key`) with
    /// the label `recovery`, replacing the account's previous recovery key.
    pub async fn create_recovery_key(
        &self,
        key: &SigningKey,
        recovery: &SigningKey,
    ) -> Result<Linked, ClientError> {
        let code = self
            .invite(key, &Identity::from(recovery).to_string())
            .await?;
        super::account::accept_link(self.base(), &code, recovery, Some(RECOVERY_LABEL)).await
    }

    /// On a new device signed in with `key`: joins the account whose recovery
    /// key is `recovery`. Every other session of the account ends, the recovery
    /// key is spent, and this session, raised to `aal2`, gets the returned token
    /// (kept for the next calls).
    pub async fn recover(
        &mut self,
        key: &SigningKey,
        recovery: &SigningKey,
        label: Option<&str>,
    ) -> Result<IssuedToken, ClientError> {
        let rec = Identity::from(recovery).to_string();
        let body = serde_json::json!({ "identity": rec });
        let c: ChallengeBody = self
            .call(
                reqwest::Method::POST,
                "/v1/account/recover/challenge",
                Some(body),
            )
            .await?;
        let names = |field: &str, id: &str| c.challenge.contains(&format!("\n{field}: {id}\n"));
        if !c.challenge.starts_with("keygate recovery challenge v1\n")
            || !names("identity", &rec)
            || !names("new-identity", &Identity::from(key).to_string())
        {
            return Err(ClientError::Protocol(
                "the recovery challenge does not name these keys".into(),
            ));
        }
        let sign = |k: &SigningKey| keygate_core::challenge::sign(k, &c.challenge);
        let body = serde_json::json!({
            "challenge": c.challenge,
            "sig": sign(recovery),
            "new_sig": sign(key),
            "label": label,
        });
        let t: IssuedToken = self
            .call(reqwest::Method::POST, "/v1/account/recover", Some(body))
            .await?;
        self.set_token(&t.token);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed vector docs/accounts.md gives (and the JavaScript package's
    /// tests check): the all-zero seed.
    #[test]
    fn zero_seed_is_abandon_art() {
        let key = SigningKey::from_bytes(&[0; 32]);
        let words = words_of(&key);
        assert_eq!(words, format!("{}art", "abandon ".repeat(23)));
        let id = "bbaareib3nit3ztvwuqwwfi5i2avg6dltmuzbk5y54jb2mowajcqywwo2fe";
        assert_eq!(Identity::from(&key).to_string(), id);
        assert_eq!(
            Identity::from(&key_from_words(&words).unwrap()).to_string(),
            id
        );
    }

    #[test]
    fn words_round_trip_in_any_case_and_spacing() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let words = words_of(&key);
        assert_eq!(words.split(' ').count(), WORDS);
        let messy = format!("  {}\n", words.to_uppercase().replace(' ', " \t "));
        assert_eq!(key_from_words(&messy).unwrap().as_bytes(), key.as_bytes());
    }

    #[test]
    fn a_wrong_word_or_count_is_refused_without_echo() {
        let words = words_of(&SigningKey::from_bytes(&[7; 32]));
        let mut w: Vec<&str> = words.split(' ').collect();
        // The last word's low 8 bits are the checksum: flipping one keeps the
        // entropy and breaks the checksum.
        let list = bip39::Language::English.word_list();
        let last = list.iter().position(|x| *x == w[23]).unwrap();
        w[23] = list[last ^ 1];
        let e = key_from_words(&w.join(" ")).unwrap_err().to_string();
        assert!(!e.contains(w[23]) && e.contains("checksum"), "{e}");
        assert!(key_from_words(&w[..12].join(" ")).is_err());
        assert!(key_from_words("").is_err());
        assert!(key_from_words(&words.replace(w[0], "notaword")).is_err());
    }
}
