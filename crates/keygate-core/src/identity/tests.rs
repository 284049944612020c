use super::*;
use ed25519_dalek::SigningKey;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn b32(bytes: &[u8]) -> String {
    multibase::encode(multibase::Base::Base32Lower, bytes)
}

#[test]
fn canonical_form_starts_with_bbaarei_and_round_trips() {
    let id = Identity::from(&key(7));
    let s = id.to_string();
    assert!(s.starts_with("bbaarei"), "{s}");
    assert_eq!(Identity::parse(&s).unwrap(), id);
}

#[test]
fn matches_libp2p_encoders() {
    let sk = key(9);
    let id = Identity::from(&sk);
    let lp =
        libp2p_identity::ed25519::PublicKey::try_from_bytes(sk.verifying_key().as_bytes()).unwrap();
    let lp: libp2p_identity::PublicKey = lp.into();
    assert_eq!(lp.encode_protobuf(), id.to_protobuf());
    let peer = libp2p_identity::PeerId::from_public_key(&lp).to_base58();
    assert_eq!(id.peer_id(), peer);
    assert!(peer.starts_with("12D3KooW"));
    assert_eq!(Identity::parse(&peer).unwrap(), id);
    assert!(id.did_key().starts_with("did:key:z6Mk"));
    assert_eq!(Identity::parse(&id.did_key()).unwrap(), id);
}

#[test]
fn private_keys_are_refused_in_every_form() {
    let sk = key(3);
    let kp = libp2p_identity::ed25519::Keypair::try_from_bytes(&mut sk.to_keypair_bytes()).unwrap();
    let kp: libp2p_identity::Keypair = kp.into();
    let proto = kp.to_protobuf_encoding().unwrap();
    let s = b32(&proto);
    assert!(s.starts_with("bbaareq"), "{s}");
    assert_eq!(Identity::parse(&s), Err(IdentityError::PrivateKey));
    let msg = IdentityError::PrivateKey.to_string();
    assert!(msg.contains("never send a private key"));

    let mut did = vec![0x80, 0x26];
    did.extend_from_slice(&sk.to_bytes());
    let did = format!(
        "did:key:{}",
        multibase::encode(multibase::Base::Base58Btc, did)
    );
    assert_eq!(Identity::parse(&did), Err(IdentityError::PrivateKey));
}

#[test]
fn each_malformation_has_its_own_error() {
    let pk = *key(5).verifying_key().as_bytes();
    let with = |prefix: &[u8], tail: &[u8]| {
        let mut v = prefix.to_vec();
        v.extend_from_slice(tail);
        b32(&v)
    };
    use IdentityError::*;
    let cases: Vec<(String, IdentityError)> = vec![
        (String::new(), Empty),
        ("b".repeat(300), TooLong),
        (with(&[0x08, 0x02, 0x12, 0x20], &pk), UnsupportedKeyType),
        (with(&[0x08, 0x01, 0x12, 0x1f], &pk[..31]), WrongLength),
        (
            with(&[0x08, 0x01, 0x12, 0x21], &[pk.as_slice(), &[0]].concat()),
            WrongLength,
        ),
        (
            with(&[0x08, 0x01, 0x08, 0x01, 0x12, 0x20], &pk),
            DuplicateField,
        ),
        (
            with(
                &[0x08, 0x01, 0x12, 0x20],
                &[pk.as_slice(), &[0x12, 0x00]].concat(),
            ),
            DuplicateField,
        ),
        (
            with(
                &[0x08, 0x01, 0x12, 0x20],
                &[pk.as_slice(), &[0x18, 0x01]].concat(),
            ),
            UnknownField,
        ),
        (with(&[0x08, 0x01], &[]), MissingField),
        (
            with(
                &[0x08, 0x01, 0x12, 0x20],
                &[pk.as_slice(), &[0x08]].concat(),
            ),
            Malformed,
        ),
        (
            with(&[0x12, 0x20], &[pk.as_slice(), &[0x08, 0x01]].concat()),
            NonCanonicalEncoding,
        ),
        (
            with(&[0x08, 0x81, 0x00, 0x12, 0x20], &pk),
            NonCanonicalEncoding,
        ),
        (
            multibase::encode(
                multibase::Base::Base32Upper,
                [&PROTO_PREFIX[..], &pk].concat(),
            ),
            UnsupportedBase,
        ),
        (
            multibase::encode(
                multibase::Base::Base58Btc,
                [&PROTO_PREFIX[..], &pk].concat(),
            ),
            UnsupportedBase,
        ),
        ("bbaarei!!!".into(), BadCharacters),
        (
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N".into(),
            PeerIdWithoutKey,
        ),
        ("hello".into(), UnsupportedBase),
    ];
    for (input, want) in cases {
        assert_eq!(Identity::parse(&input), Err(want), "{input}");
    }
}

#[test]
fn did_key_and_peer_id_trailing_bytes() {
    let pk = *key(5).verifying_key().as_bytes();
    let did = format!(
        "did:key:{}",
        multibase::encode(
            multibase::Base::Base58Btc,
            [&[0xed, 0x01][..], &pk, &[1]].concat()
        )
    );
    assert_eq!(Identity::parse(&did), Err(IdentityError::TrailingBytes));
    let mut mh = vec![0x00, 36];
    mh.extend_from_slice(&PROTO_PREFIX);
    mh.extend_from_slice(&pk);
    mh.push(0);
    let peer = multibase::Base::Base58Btc.encode(mh);
    assert_eq!(Identity::parse(&peer), Err(IdentityError::TrailingBytes));
    let secp = format!(
        "did:key:{}",
        multibase::encode(
            multibase::Base::Base58Btc,
            [&[0xe7, 0x01][..], &pk, &[2]].concat()
        )
    );
    assert_eq!(
        Identity::parse(&secp),
        Err(IdentityError::UnsupportedKeyType)
    );
}

#[test]
fn point_checks() {
    // The identity point (order 1) and a point of order 2 are small-order.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    assert_eq!(
        Identity::from_bytes(&identity_point),
        Err(IdentityError::SmallOrder)
    );
    let mut order2 = [0xffu8; 32];
    order2[0] = 0xec;
    order2[31] = 0x7f;
    assert_eq!(
        Identity::from_bytes(&order2),
        Err(IdentityError::SmallOrder)
    );
    // y = p + 1 encodes the same point as y = 1 but non-canonically.
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    assert_eq!(
        Identity::from_bytes(&non_canonical),
        Err(IdentityError::NonCanonicalPoint)
    );
    // An honest key plus a point of order 8 has a torsion component.
    let honest = key(11).verifying_key().to_edwards();
    let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
    let mixed = (honest + torsion).compress().to_bytes();
    assert_eq!(Identity::from_bytes(&mixed), Err(IdentityError::MixedOrder));
    // y = 2 is not on the curve.
    let mut off = [0u8; 32];
    off[0] = 2;
    assert_eq!(Identity::from_bytes(&off), Err(IdentityError::InvalidPoint));
}

#[test]
fn fast_torsion_check_agrees_with_dalek() {
    for seed in 0..8u8 {
        let honest = key(seed).verifying_key().to_edwards();
        for (i, t) in curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .enumerate()
        {
            for p in [honest + t, *t] {
                assert_eq!(
                    torsion_free(&p),
                    p.is_torsion_free(),
                    "seed {seed}, torsion {i}"
                );
            }
            assert_eq!(torsion_free(&(honest + t)), i == 0);
        }
    }
}

/// Every spelling of a key as the canonical base32 text of its protobuf form.
fn spelled(key: &[u8; 32]) -> String {
    let mut proto = PROTO_PREFIX.to_vec();
    proto.extend_from_slice(key);
    b32(&proto)
}

#[test]
fn the_cache_accepts_and_refuses_exactly_what_parse_does() {
    let honest = key(11).verifying_key().to_edwards();
    let mixed = (honest + curve25519_dalek::constants::EIGHT_TORSION[1])
        .compress()
        .to_bytes();
    let mut small = [0u8; 32];
    small[0] = 1;
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    let mut off = [0u8; 32];
    off[0] = 2;
    let good = Identity::from(&key(12));
    let mut inputs = vec![
        good.to_string(),
        good.peer_id(),
        good.did_key(),
        String::new(),
        "bbaareinotbase32!".into(),
        format!("{}x", good),
        good.to_string().to_uppercase(),
    ];
    for bad in [mixed, small, non_canonical, off] {
        inputs.push(spelled(&bad));
    }
    let cache = IdentityCache::new(2);
    // Twice over, so that the second round reads what the first remembered;
    // then a key pushed out by others parses the same again.
    for round in 0..2 {
        for input in &inputs {
            assert_eq!(
                cache.parse(input),
                Identity::parse(input),
                "round {round}: {input:?}"
            );
        }
    }
    assert_eq!(cache.len(), 1, "only the key that passed is kept");
    for seed in 20..30 {
        let other = Identity::from(&key(seed)).to_string();
        assert_eq!(cache.parse(&other), Identity::parse(&other));
    }
    assert!(cache.len() <= 2 + 1, "bounded: {}", cache.len());
    assert_eq!(cache.parse(&inputs[0]), Ok(good));
}
