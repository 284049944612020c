//! `Identity::parse` on arbitrary text, and on arbitrary bytes wrapped in each of
//! the three accepted spellings (so the fuzzer reaches the protobuf and varint
//! decoders directly instead of first having to find valid base32 or base58).
//!
//! Asserts: no panic; an accepted input is exactly one of the three spellings of
//! the key it names (one key, one spelling); every spelling of an accepted key
//! parses back to the same key; the canonical form starts with `bbaarei`.
#![no_main]

use keygate::identity::{Identity, MAX_IDENTITY_LEN};
use libfuzzer_sys::fuzz_target;
use multibase::Base;

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = std::str::from_utf8(data) {
        check(input);
    }
    if data.len() <= 64 {
        // The decoded payload of each spelling, chosen by the fuzzer.
        check(&multibase::encode(Base::Base32Lower, data));
        check(&Base::Base58Btc.encode(data));
        check(&format!(
            "did:key:{}",
            multibase::encode(Base::Base58Btc, data)
        ));
    }
    if let Ok(raw) = <[u8; 32]>::try_from(data)
        && let Ok(id) = Identity::from_bytes(&raw)
    {
        assert_eq!(id.as_bytes(), &raw);
        spellings_round_trip(&id);
    }
});

fn check(input: &str) {
    match Identity::parse(input) {
        Ok(id) => {
            let canonical = id.to_string();
            assert!(
                input == canonical || input == id.peer_id() || input == id.did_key(),
                "accepted a second spelling {input:?} of {canonical}"
            );
            spellings_round_trip(&id);
        }
        Err(e) => {
            // Every error has its stable reason and a message; neither may panic.
            assert!(!e.reason().is_empty());
            assert!(!e.to_string().is_empty());
            if input.len() > MAX_IDENTITY_LEN {
                assert_eq!(e.reason(), "too_long");
            }
        }
    }
}

fn spellings_round_trip(id: &Identity) {
    let canonical = id.to_string();
    assert!(canonical.starts_with("bbaarei"), "{canonical}");
    assert!(canonical.len() <= MAX_IDENTITY_LEN);
    for spelling in [canonical.clone(), id.peer_id(), id.did_key()] {
        assert_eq!(Identity::parse(&spelling), Ok(*id), "{spelling}");
    }
    assert_eq!(Identity::from_bytes(id.as_bytes()), Ok(*id));
    assert_eq!(&id.to_protobuf()[4..], id.as_bytes());
}
