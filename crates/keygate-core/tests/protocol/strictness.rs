//! One spelling per value: the parsers that take encoded input must not accept a
//! second spelling of the same key, signature or MAC.
//!
//! A second spelling is not a forgery, but it defeats anything that compares or
//! deduplicates the text (caches, logs, replay lists, rate limits keyed on a header),
//! and the protocol (docs/protocol.md) asks for strict parsing throughout.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_core::apikey::ApiSecret;
use keygate_core::challenge::{self, ChallengeError};
use keygate_core::identity::{Identity, IdentityError};

use crate::{NOW, user_key};

fn base58(bytes: &[u8]) -> String {
    multibase::Base::Base58Btc.encode(bytes)
}

#[test]
fn canonical_identity_has_one_spelling() {
    let id = Identity::from(&user_key());
    let s = id.to_string();
    // The base32 decoder folds case; the re-encoding check catches it.
    let upper = format!("b{}", s[1..].to_uppercase());
    assert_eq!(
        Identity::parse(&upper),
        Err(IdentityError::NonCanonicalEncoding)
    );
    let mut mixed = s.clone().into_bytes();
    mixed[10] = mixed[10].to_ascii_uppercase();
    let mixed = String::from_utf8(mixed).unwrap();
    assert_ne!(mixed, s);
    assert_eq!(
        Identity::parse(&mixed),
        Err(IdentityError::NonCanonicalEncoding)
    );
    // Field order swapped and a non-minimal varint: same key, refused.
    let pk = id.as_bytes();
    let swapped = [&[0x12, 0x20][..], pk, &[0x08, 0x01]].concat();
    let swapped = multibase::encode(multibase::Base::Base32Lower, swapped);
    assert_eq!(
        Identity::parse(&swapped),
        Err(IdentityError::NonCanonicalEncoding)
    );
}

/// The PeerId form accepts a non-minimal multihash length varint (`a4 00` for 36),
/// which libp2p itself refuses (unsigned-varint requires minimal encoding), and
/// protobuf fields in swapped order, which libp2p reads as a different PeerId. Both
/// name the same key as the canonical PeerId, so keygate has two spellings for one
/// identity in the PeerId slot.
#[test]
fn peer_id_has_one_spelling() {
    let id = Identity::from(&user_key());
    let proto = id.to_protobuf();
    let non_minimal_len = base58(&[&[0x00, 0xa4, 0x00][..], &proto].concat());
    let swapped_fields =
        base58(&[&[0x00, 36, 0x12, 0x20][..], id.as_bytes(), &[0x08, 0x01]].concat());
    let accepted: Vec<String> = [non_minimal_len, swapped_fields]
        .into_iter()
        .filter(|s| Identity::parse(s).is_ok())
        .collect();
    assert_eq!(accepted, Vec::<String>::new());
}

/// What libp2p makes of the two spellings above, for the record: the first is not a
/// PeerId at all, the second is a PeerId other than the key's own.
#[test]
fn libp2p_reads_the_peer_id_spellings_differently() {
    use std::str::FromStr;
    let id = Identity::from(&user_key());
    let proto = id.to_protobuf();
    let non_minimal_len = base58(&[&[0x00, 0xa4, 0x00][..], &proto].concat());
    assert!(libp2p_identity::PeerId::from_str(&non_minimal_len).is_err());
    let swapped_fields =
        base58(&[&[0x00, 36, 0x12, 0x20][..], id.as_bytes(), &[0x08, 0x01]].concat());
    let theirs = libp2p_identity::PeerId::from_str(&swapped_fields).expect("a PeerId to libp2p");
    let own = libp2p_identity::PeerId::from_str(&id.peer_id()).expect("the key's PeerId");
    assert_ne!(theirs, own);
}

/// The did:key form accepts a non-minimal multicodec varint (`ed 81 00` for 0xed).
#[test]
fn did_key_has_one_spelling() {
    let id = Identity::from(&user_key());
    let raw = [&[0xed, 0x81, 0x00][..], id.as_bytes()].concat();
    let spelling = format!(
        "did:key:{}",
        multibase::encode(multibase::Base::Base58Btc, raw)
    );
    assert_ne!(spelling, id.did_key());
    assert!(Identity::parse(&spelling).is_err(), "{spelling} accepted");
}

#[test]
fn signature_has_one_spelling() {
    let (issued, sig) = crate::signed_challenge();
    let id = Identity::from(&user_key());
    // The last of 86 characters carries 2 bits and 4 zero bits; any other character
    // with the same 2 bits decodes to the same 64 bytes under a lenient decoder.
    let last = sig.as_bytes()[85];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = alphabet.iter().position(|&c| c == last).unwrap();
    assert_eq!(value & 0x0f, 0);
    let mut refused = 0;
    for v in (value..value + 16).skip(1) {
        let mut other = sig.clone().into_bytes();
        other[85] = alphabet[v];
        let other = String::from_utf8(other).unwrap();
        assert_eq!(
            challenge::decode_signature(&other),
            Err(ChallengeError::MalformedSignature)
        );
        assert!(
            challenge::verify(
                &crate::nonce_key(),
                crate::APP,
                challenge::Flow::HubHttp,
                &issued.text,
                &id,
                None,
                &other,
                NOW
            )
            .is_err()
        );
        refused += 1;
    }
    assert_eq!(refused, 15);
    // Padding and the standard alphabet are refused as well.
    assert!(challenge::decode_signature(&format!("{sig}==")).is_err());
    let standard = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(URL_SAFE_NO_PAD.decode(&sig).unwrap());
    if standard != sig {
        assert!(challenge::decode_signature(&standard).is_err());
    }
}

/// The API signature header is "multibase base32-lower"; the decoder folds case, so
/// `b` followed by upper-case letters decodes to the same MAC and verifies.
#[test]
fn api_signature_has_one_spelling() {
    let secret = ApiSecret::from_bytes([5; 32]);
    let (msg, sig) = secret.sign(NOW + 60);
    assert_eq!(secret.verify(&msg, &sig, NOW), Ok(()));
    let upper_body = format!("b{}", sig[1..].to_uppercase());
    assert_ne!(upper_body, sig);
    assert!(
        secret.verify(&msg, &upper_body, NOW).is_err(),
        "{upper_body} accepted"
    );
}

/// Same case folding in the secret itself.
#[test]
fn api_secret_has_one_spelling() {
    let secret = ApiSecret::from_bytes([5; 32]);
    let s = secret.reveal();
    let upper_body = format!("b{}", s[1..].to_uppercase());
    assert_eq!(ApiSecret::parse(&s), Some(secret));
    assert_eq!(ApiSecret::parse(&upper_body), None, "{upper_body} accepted");
}
