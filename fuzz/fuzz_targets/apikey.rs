//! API-signature headers: `ApiSecret::verify` with a fixed secret on an arbitrary
//! `x-keygate-api-sig-msg` and `x-keygate-api-sig`, the same message with the
//! correct signature (so the fuzzer reaches the time-window checks on any
//! message), `ApiSecret::parse`, `valid_key_id`, and `http::header_str` reading the
//! three headers back.
//!
//! Input: `msg \0 sig \0 secret \0 key_id` (missing fields are empty).
//!
//! Asserts: no panic; a signature is accepted only if it is exactly the
//! base32-lower HMAC of the message (no second spelling) and the message's time
//! lies in `(now, now + MAX_SIG_AHEAD]`; with the correct signature, that window is
//! the only reason to refuse; a secret that parses reveals to the same string; a
//! valid key id is `kgk_` and base32-lower, at most 64 bytes.
#![no_main]

use hmac::{KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use keygate::apikey::{self, ApiSecret, MAX_SIG_AHEAD};
use keygate::time::parse_rfc3339;
use keygate_fuzz::{NOW, api_secret, fields, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [msg_f, sig_f, secret_f, key_id_f] = fields::<4>(data);
    let secret = api_secret();

    if let (Some(msg), Some(sig)) = (text(msg_f), text(sig_f)) {
        let in_window = parse_rfc3339(msg).is_some_and(|t| t > NOW && t <= NOW + MAX_SIG_AHEAD);
        let good = expected_sig(secret.as_bytes(), msg);
        if secret.verify(msg, sig, NOW).is_ok() {
            assert!(in_window, "accepted a message outside the window: {msg:?}");
            assert_eq!(sig, good, "accepted a second spelling of a signature");
        }
        assert_eq!(secret.verify(msg, &good, NOW).is_ok(), in_window, "{msg:?}");
        if let Some(t) = parse_rfc3339(msg) {
            // What an honest app sends for that time verifies exactly when in the window.
            let (m, s) = secret.sign(t);
            assert_eq!(secret.verify(&m, &s, NOW).is_ok(), in_window, "{m:?}");
        }
    }

    if let Some(s) = text(secret_f)
        && let Some(parsed) = ApiSecret::parse(s)
    {
        assert_eq!(parsed.reveal(), s, "a secret has one spelling");
    }

    if let Some(id) = text(key_id_f)
        && apikey::valid_key_id(id)
    {
        assert!(id.len() <= 64);
        let rest = id.strip_prefix("kgk_").expect("kgk_ prefix");
        assert!(!rest.is_empty());
        assert!(rest.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')));
    }

    // The headers as the Hub reads them: a value that is not visible ASCII is absent.
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (apikey::HEADER_MSG, msg_f),
        (apikey::HEADER_SIG, sig_f),
        (apikey::HEADER_KEY, key_id_f),
    ] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
        if let Some(read) = keygate::http::header_str(&headers, name) {
            assert_eq!(read.as_bytes(), value);
        }
    }
});

/// The documented signature: multibase base32-lower of HMAC-SHA256(secret, msg).
fn expected_sig(secret: &[u8; 32], msg: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(msg.as_bytes());
    multibase::encode(multibase::Base::Base32Lower, mac.finalize().into_bytes())
}
