//! Challenge texts and signatures: `challenge::verify` with a fixed nonce key, app
//! and identity on an arbitrary text and signature; `check_before_signing` (the
//! client's check) on the same text; `decode_signature`; and `issue` → `verify` on
//! an arbitrary audience and app.
//!
//! Input: `text \0 sig \0 audience \0 app` (missing fields are empty).
//!
//! Asserts: no panic; a text that verifies also passes the client's checks, names
//! the audience that verify returned and has not expired; a signature that decodes
//! re-encodes to the same string (one spelling); every challenge `issue` accepts
//! verifies with the user's signature, and with nothing else changed, fails for
//! another app, audience or identity, or once expired.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use keygate::challenge::{self, ChallengeError, MAX_TTL};
use keygate::identity::Identity;
use keygate_fuzz::{APP, AUDIENCE, NOW, fields, nonce_key, text, user_identity, user_key};
use libfuzzer_sys::fuzz_target;

/// A second identity, for the "issued for someone else" check.
static OTHER: LazyLock<Identity> =
    LazyLock::new(|| Identity::from(&SigningKey::from_bytes(&[8; 32])));

fuzz_target!(|data: &[u8]| {
    let [text_f, sig_f, audience_f, app_f] = fields::<4>(data);
    let (Some(text_s), Some(sig)) = (text(text_f), text(sig_f)) else {
        return;
    };
    verify_arbitrary(text_s, sig);
    if let (Some(audience), Some(app)) = (text(audience_f), text(app_f)) {
        issue_then_verify(audience, app, sig_f);
    }
});

fn verify_arbitrary(text: &str, sig: &str) {
    let key = nonce_key();
    let id = user_identity();
    let pinned = challenge::verify(
        &key,
        APP,
        challenge::Flow::HubHttp,
        text,
        &id,
        Some(AUDIENCE),
        sig,
        NOW,
    );
    let open = challenge::verify(
        &key,
        APP,
        challenge::Flow::HubHttp,
        text,
        &id,
        None,
        sig,
        NOW,
    );
    if let Ok(v) = &pinned {
        assert_eq!(v.audience, AUDIENCE);
        assert_eq!(
            open.as_ref(),
            Ok(v),
            "pinning the audience may only refuse more"
        );
    }
    if let Ok(v) = &open {
        assert!(v.expires_at > NOW);
        assert_eq!(
            challenge::check_addressed_to(text, &v.audience, &id),
            Ok(v.expires_at)
        );
        assert_eq!(
            challenge::check_before_signing(text, &v.audience, &id, NOW),
            Ok(())
        );
    }
    if let Err(e) = open {
        assert!(!e.code().is_empty());
    }

    match challenge::check_before_signing(text, AUDIENCE, &id, NOW) {
        Ok(()) => {
            let exp = challenge::check_addressed_to(text, AUDIENCE, &id)
                .expect("check_before_signing accepted it");
            assert!(exp > NOW);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    if let Ok(s) = challenge::decode_signature(sig) {
        assert_eq!(
            URL_SAFE_NO_PAD.encode(s.to_bytes()),
            sig,
            "a signature has one spelling"
        );
    }
}

fn issue_then_verify(audience: &str, app: &str, random_src: &[u8]) {
    let key = nonce_key();
    let id = user_identity();
    let mut random = [0u8; 16];
    for (i, b) in random_src.iter().take(16).enumerate() {
        random[i] = *b;
    }
    let ttl = 60;
    let issued = challenge::issue(
        &key,
        app,
        challenge::Flow::HubHttp,
        audience,
        &id,
        NOW,
        ttl,
        random,
    );
    let Ok(c) = issued else {
        assert_eq!(issued, Err(ChallengeError::BadAudience));
        assert!(!challenge::valid_audience(audience));
        return;
    };
    assert!(challenge::valid_audience(audience));
    assert_eq!(c.expires_at, NOW + ttl.clamp(1, MAX_TTL));
    assert!(
        c.text.len() <= challenge::MAX_TEXT_LEN,
        "{} bytes",
        c.text.len()
    );
    let sig = challenge::sign(user_key(), &c.text);

    let v = challenge::verify(
        &key,
        app,
        challenge::Flow::HubHttp,
        &c.text,
        &id,
        Some(audience),
        &sig,
        NOW,
    )
    .expect("a challenge we issued verifies");
    assert_eq!(v.nonce_id, random);
    assert_eq!(v.audience, audience);
    assert_eq!(v.expires_at, c.expires_at);
    assert_eq!(
        challenge::check_before_signing(&c.text, audience, &id, NOW),
        Ok(())
    );

    let verify_as = |app: &str, id: &Identity, aud: &str, now| {
        challenge::verify(
            &key,
            app,
            challenge::Flow::HubHttp,
            &c.text,
            id,
            Some(aud),
            &sig,
            now,
        )
    };
    let other_app = format!("{app}x");
    assert_eq!(
        verify_as(&other_app, &id, audience, NOW),
        Err(ChallengeError::NotIssuedHere)
    );
    let other_audience = format!("{audience}x");
    assert_eq!(
        verify_as(app, &id, &other_audience, NOW),
        Err(ChallengeError::WrongAudience)
    );
    assert_eq!(
        verify_as(app, &OTHER, audience, NOW),
        Err(ChallengeError::WrongIdentity)
    );
    assert_eq!(
        verify_as(app, &id, audience, c.expires_at),
        Err(ChallengeError::Expired)
    );
}
