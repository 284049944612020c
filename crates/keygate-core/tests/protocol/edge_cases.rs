//! Hand-built Ed25519 edge cases and the choice keygate makes on each.
//!
//! Each case is built from first principles (the torsion points of curve25519-dalek,
//! the field prime p and the group order L) rather than copied from elsewhere, and
//! where a lenient verifier would accept the input the test shows it, so the value of
//! the strict check is visible and not just asserted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use keygate_core::challenge::{self, ChallengeError};
use keygate_core::identity::{Identity, IdentityError};
use sha2::{Digest, Sha512};

use crate::{APP, AUDIENCE, NOW, nonce_key, signed_challenge, user_key};

/// The group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The field prime p = 2^255 - 19, little-endian.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// Little-endian 256-bit addition; the callers stay below 2^256.
fn add(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "overflow");
    out
}

fn small(n: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[0] = n;
    out
}

/// A canonical-slot identity string for arbitrary key bytes (no point checks).
fn canonical_string(key: &[u8; 32]) -> String {
    let mut proto = vec![0x08, 0x01, 0x12, 0x20];
    proto.extend_from_slice(key);
    multibase::encode(multibase::Base::Base32Lower, proto)
}

/// The constants above are what they claim to be, checked with the curve library.
#[test]
fn constants_are_l_and_p() {
    assert_eq!(Scalar::from_bytes_mod_order(L), Scalar::ZERO);
    assert!(bool::from(Scalar::from_canonical_bytes(L).is_none()));
    let mut l_minus_1 = L;
    l_minus_1[0] -= 1;
    assert_eq!(
        Option::<Scalar>::from(Scalar::from_canonical_bytes(l_minus_1)),
        Some(-Scalar::ONE)
    );
    // p encodes y = 0 (mod p), the same as the all-zero encoding; p - 1 is y = -1.
    let p_point = CompressedEdwardsY(P)
        .decompress()
        .expect("y = 0 is on the curve");
    let zero_point = CompressedEdwardsY([0; 32]).decompress().expect("y = 0");
    assert_eq!(p_point, zero_point);
    assert_eq!(p_point.compress().to_bytes(), [0; 32]);
}

#[test]
fn small_order_public_keys_are_refused() {
    for (i, t) in EIGHT_TORSION.iter().enumerate() {
        assert!(t.is_small_order());
        let bytes = t.compress().to_bytes();
        assert_eq!(
            Identity::from_bytes(&bytes),
            Err(IdentityError::SmallOrder),
            "torsion point {i}"
        );
        assert_eq!(
            Identity::parse(&canonical_string(&bytes)),
            Err(IdentityError::SmallOrder),
            "torsion point {i} in canonical form"
        );
    }
    // Why it matters: the identity point as a key makes (R = [s]B, S = s) a signature
    // of every message under the cofactorless, non-strict check. ed25519-dalek builds
    // such a key without complaint and its legacy `verify` accepts the forgery.
    let weak = VerifyingKey::from_bytes(&EIGHT_TORSION[0].compress().to_bytes())
        .expect("dalek accepts the weak key at construction");
    let s = Scalar::from_bytes_mod_order([9; 32]);
    let mut forged = [0u8; 64];
    forged[..32].copy_from_slice((ED25519_BASEPOINT_POINT * s).compress().as_bytes());
    forged[32..].copy_from_slice(s.as_bytes());
    let forged = Signature::from_bytes(&forged);
    for msg in [&b"any"[..], b"message at all"] {
        assert!(weak.verify(msg, &forged).is_ok());
        assert!(weak.verify_strict(msg, &forged).is_err());
    }
}

#[test]
fn mixed_order_public_keys_are_refused() {
    let honest = user_key().verifying_key().to_edwards();
    let honest_id = Identity::from(&user_key());
    for (i, t) in EIGHT_TORSION.iter().enumerate() {
        let bytes = (honest + t).compress().to_bytes();
        let got = Identity::from_bytes(&bytes);
        if i == 0 {
            // The 0th torsion point is the identity: the honest key itself.
            assert_eq!(got, Ok(honest_id));
        } else {
            assert_eq!(got, Err(IdentityError::MixedOrder), "honest + torsion {i}");
            assert_eq!(
                Identity::parse(&canonical_string(&bytes)),
                Err(IdentityError::MixedOrder)
            );
            // ed25519-dalek's own strict check looks only for small order.
            let vk = VerifyingKey::from_bytes(&bytes).expect("dalek builds it");
            assert!(!vk.is_weak());
        }
    }
}

/// y in [p, 2^255): the 19 encodings of y mod p that are not reduced, with either sign
/// bit, plus y = 1 and y = -1 (x = 0) spelled with the sign bit set.
#[test]
fn non_canonical_point_encodings_are_refused() {
    let mut reasons = std::collections::BTreeMap::new();
    let mut encodings = Vec::new();
    for k in 0..19u8 {
        let y = add(&P, &small(k));
        let mut negative = y;
        negative[31] |= 0x80;
        encodings.extend([y, negative]);
    }
    let mut one_negative = small(1);
    one_negative[31] |= 0x80;
    let mut minus_one_negative = P;
    minus_one_negative[0] -= 1;
    minus_one_negative[31] |= 0x80;
    encodings.extend([one_negative, minus_one_negative]);
    for bytes in &encodings {
        let err = Identity::from_bytes(bytes).expect_err("non-canonical encoding accepted");
        *reasons.entry(err.reason()).or_insert(0) += 1;
        // Whatever the reason, the canonical-string parser says the same.
        assert_eq!(Identity::parse(&canonical_string(bytes)), Err(err));
    }
    assert_eq!(encodings.len(), 40);
    // y = p + k spells y = k, a point when (k^2 - 1) / (d k^2 + 1) is a square: for
    // k in {0, 1, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18} (checked independently), twice
    // each for the sign bit, plus the two x = 0 spellings with the sign bit set. Those
    // 26 decompress and fail the re-encoding check; the other 14 are not points.
    let expected: std::collections::BTreeMap<_, _> =
        [("invalid_point", 14), ("non_canonical_point", 26)].into();
    assert_eq!(reasons, expected);
}

/// Hash of R, A and M reduced mod L: the challenge scalar of RFC 8032.
fn challenge_scalar(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
    let h: [u8; 64] = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(msg)
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&h)
}

/// A signature with R = `r` and S = H(R, A, M) * a, which satisfies the cofactored
/// equation for every small-order R and the cofactorless one for R = identity.
fn sign_with_small_order_r(sk: &SigningKey, r: &EdwardsPoint, msg: &[u8]) -> Signature {
    let r = r.compress().to_bytes();
    let k = challenge_scalar(&r, sk.verifying_key().as_bytes(), msg);
    let s = k * sk.to_scalar();
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(s.as_bytes());
    Signature::from_bytes(&sig)
}

#[test]
fn small_order_r_is_refused() {
    let sk = user_key();
    let id = Identity::from(&sk);
    let (issued, _) = signed_challenge();
    let text = issued.text.as_bytes();
    let mut legacy_accepts = 0;
    for (i, t) in EIGHT_TORSION.iter().enumerate() {
        let sig = sign_with_small_order_r(&sk, t, text);
        assert!(!id.verify_strict(text, &sig), "small-order R {i}");
        if sk.verifying_key().verify(text, &sig).is_ok() {
            legacy_accepts += 1;
        }
        let wire = URL_SAFE_NO_PAD.encode(sig.to_bytes());
        assert_eq!(
            challenge::verify(
                &nonce_key(),
                APP,
                challenge::Flow::HubHttp,
                &issued.text,
                &id,
                None,
                &wire,
                NOW
            ),
            Err(ChallengeError::BadSignature),
            "small-order R {i} through challenge::verify"
        );
    }
    // R = identity satisfies the cofactorless equation exactly, so the non-strict
    // check accepts it; the other seven fail it by a torsion point.
    assert_eq!(legacy_accepts, 1);
}

#[test]
fn non_canonical_s_is_refused() {
    let sk = user_key();
    let id = Identity::from(&sk);
    let (issued, wire) = signed_challenge();
    let text = issued.text.as_bytes();
    let good = sk.sign(text).to_bytes();
    assert!(id.verify_strict(text, &Signature::from_bytes(&good)));
    let s: [u8; 32] = good[32..].try_into().expect("32 bytes");
    let mut s_plus = Vec::new();
    let mut acc = s;
    for _ in 0..15 {
        acc = add(&acc, &L);
        s_plus.push(acc); // S + L, S + 2L, ..., S + 15L: all below 2^256
    }
    for (n, s_big) in s_plus.iter().enumerate() {
        let mut bad = good;
        bad[32..].copy_from_slice(s_big);
        let sig = Signature::from_bytes(&bad);
        // Same value mod L, so only the range check stands between it and acceptance.
        assert_eq!(
            Scalar::from_bytes_mod_order(*s_big),
            Scalar::from_bytes_mod_order(s)
        );
        assert!(!id.verify_strict(text, &sig), "S + {}L", n + 1);
        assert!(
            sk.verifying_key().verify(text, &sig).is_err(),
            "S + {}L",
            n + 1
        );
        let bad_wire = URL_SAFE_NO_PAD.encode(bad);
        assert_ne!(bad_wire, wire);
        assert_eq!(
            challenge::verify(
                &nonce_key(),
                APP,
                challenge::Flow::HubHttp,
                &issued.text,
                &id,
                None,
                &bad_wire,
                NOW
            ),
            Err(ChallengeError::BadSignature)
        );
    }
    // And the original goes through.
    assert!(
        challenge::verify(
            &nonce_key(),
            APP,
            challenge::Flow::HubHttp,
            &issued.text,
            &id,
            Some(AUDIENCE),
            &wire,
            NOW
        )
        .is_ok()
    );
}

#[test]
fn honest_keys_from_fixed_seeds_verify() {
    for n in [0u8, 1, 7, 42, 128, 255] {
        let sk = SigningKey::from_bytes(&[n; 32]);
        let pk = sk.verifying_key().to_bytes();
        let id = Identity::from_bytes(&pk).expect("an honest key passes the point checks");
        assert_eq!(id, Identity::from(&sk));
        for msg in [&b""[..], b"keygate", &[n; 1000]] {
            let sig = sk.sign(msg);
            assert!(id.verify_strict(msg, &sig), "seed {n}");
            assert!(!id.verify_strict(b"something else", &sig), "seed {n}");
        }
        let parsed = Identity::parse(&id.to_string()).expect("canonical form parses");
        assert_eq!(parsed.as_bytes(), &pk);
    }
}
