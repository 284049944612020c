//! A single flipped bit in the message, the signature or the public key makes
//! verification fail.
//!
//! For the fixed challenge every bit is flipped in turn (the text is a few hundred
//! bytes, so that is cheap and leaves nothing to chance); proptest then varies the
//! challenge itself, and raw messages under random keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey};
use keygate_core::challenge::{self, ChallengeError};
use keygate_core::identity::Identity;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::{APP, AUDIENCE, NOW, flip, nonce_key, proptest_config, signed_challenge, user_key};

/// Verifies at [`NOW`] with the fixed nonce key, as the Hub would.
fn hub_verify(text: &str, id: &Identity, sig: &str) -> Result<(), ChallengeError> {
    challenge::verify(
        &nonce_key(),
        APP,
        challenge::Flow::HubHttp,
        text,
        id,
        Some(AUDIENCE),
        sig,
        NOW,
    )
    .map(|_| ())
}

/// Flips one bit of a challenge text; a flip that breaks UTF-8 is kept lossily, as a
/// JSON decoder upstream would have refused or replaced it.
fn flipped_text(text: &str, bit: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    flip(&mut bytes, bit);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn fixture_verifies_unflipped() {
    let (issued, sig) = signed_challenge();
    assert_eq!(
        hub_verify(&issued.text, &Identity::from(&user_key()), &sig),
        Ok(())
    );
}

#[test]
fn every_bit_of_the_challenge_text() {
    let (issued, sig) = signed_challenge();
    let id = Identity::from(&user_key());
    let (mut malformed, mut not_issued) = (0, 0);
    for bit in 0..issued.text.len() * 8 {
        let text = flipped_text(&issued.text, bit);
        match hub_verify(&text, &id, &sig) {
            Err(ChallengeError::Malformed) => malformed += 1,
            Err(ChallengeError::NotIssuedHere) => not_issued += 1,
            other => panic!("bit {bit}: {other:?} for {text:?}"),
        }
    }
    // The MAC in the nonce catches every change to a field before the signature is
    // even looked at; the rest break the fixed format.
    assert_eq!(malformed + not_issued, issued.text.len() * 8);
    assert!(malformed > 0 && not_issued > 0);
}

#[test]
fn every_bit_of_the_signature() {
    let (issued, wire) = signed_challenge();
    let id = Identity::from(&user_key());
    let raw = user_key().sign(issued.text.as_bytes()).to_bytes();
    for bit in 0..512 {
        let mut bad = raw;
        flip(&mut bad, bit);
        assert!(!id.verify_strict(issued.text.as_bytes(), &Signature::from_bytes(&bad)));
        assert_eq!(
            hub_verify(&issued.text, &id, &URL_SAFE_NO_PAD.encode(bad)),
            Err(ChallengeError::BadSignature),
            "raw bit {bit}"
        );
    }
    // Flips in the base64url text: other characters, other bits, or (in the last
    // character) non-zero padding bits, which the strict decoder refuses too.
    for bit in 0..wire.len() * 8 {
        let mut bytes = wire.clone().into_bytes();
        flip(&mut bytes, bit);
        let text = String::from_utf8_lossy(&bytes);
        let got = hub_verify(&issued.text, &id, &text);
        assert!(
            matches!(
                got,
                Err(ChallengeError::MalformedSignature | ChallengeError::BadSignature)
            ),
            "wire bit {bit}: {got:?}"
        );
    }
}

#[test]
fn every_bit_of_the_public_key() {
    let (issued, sig) = signed_challenge();
    let pk = user_key().verifying_key().to_bytes();
    let raw = Signature::from_bytes(&URL_SAFE_NO_PAD.decode(&sig).unwrap().try_into().unwrap());
    let mut refused_by_parser = 0;
    for bit in 0..256 {
        let mut bad = pk;
        flip(&mut bad, bit);
        let Ok(other) = Identity::from_bytes(&bad) else {
            refused_by_parser += 1;
            continue;
        };
        assert!(
            !other.verify_strict(issued.text.as_bytes(), &raw),
            "bit {bit}"
        );
        assert_eq!(
            hub_verify(&issued.text, &other, &sig),
            Err(ChallengeError::WrongIdentity),
            "bit {bit}"
        );
    }
    // About half of all 32-byte strings are not points, and 7 in 8 points have a
    // torsion component; flipping the sign bit (bit 255) always gives -A, which is
    // prime-order. For this key 14 of the 256 neighbours are honest keys.
    assert_eq!(refused_by_parser, 242);
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Message,
    Signature,
    PublicKey,
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn issued_challenge_with_a_flipped_bit_fails(
        random in any::<[u8; 16]>(),
        audience in "[!-~]{1,80}",
        ttl in 1i64..=600,
        bit in any::<prop::sample::Index>(),
    ) {
        let sk = user_key();
        let id = Identity::from(&sk);
        let key = nonce_key();
        let issued = challenge::issue(&key, APP, challenge::Flow::HubHttp, &audience, &id, NOW, ttl, random)
            .expect("visible ASCII audience");
        let sig = challenge::sign(&sk, &issued.text);
        prop_assert!(challenge::verify(&key, APP, challenge::Flow::HubHttp, &issued.text, &id, None, &sig, NOW).is_ok());
        let text = flipped_text(&issued.text, bit.index(issued.text.len() * 8));
        let got = challenge::verify(&key, APP, challenge::Flow::HubHttp, &text, &id, None, &sig, NOW);
        prop_assert!(
            matches!(got, Err(ChallengeError::Malformed | ChallengeError::NotIssuedHere)),
            "{:?} for {:?}", got, text
        );
    }

    #[test]
    fn raw_signature_with_a_flipped_bit_fails(
        seed in any::<[u8; 32]>(),
        msg in vec(any::<u8>(), 1..512),
        target in prop_oneof![
            Just(Target::Message),
            Just(Target::Signature),
            Just(Target::PublicKey),
        ],
        bit in any::<prop::sample::Index>(),
    ) {
        let sk = SigningKey::from_bytes(&seed);
        let id = Identity::from(&sk);
        let sig = sk.sign(&msg);
        prop_assert!(id.verify_strict(&msg, &sig));
        match target {
            Target::Message => {
                let mut m = msg.clone();
                let at = bit.index(m.len() * 8);
                flip(&mut m, at);
                prop_assert!(!id.verify_strict(&m, &sig));
            }
            Target::Signature => {
                let mut s = sig.to_bytes();
                flip(&mut s, bit.index(512));
                prop_assert!(!id.verify_strict(&msg, &Signature::from_bytes(&s)));
            }
            Target::PublicKey => {
                let mut pk = id.as_bytes().to_owned();
                flip(&mut pk, bit.index(256));
                if let Ok(other) = Identity::from_bytes(&pk) {
                    prop_assert!(!other.verify_strict(&msg, &sig));
                }
            }
        }
    }
}
