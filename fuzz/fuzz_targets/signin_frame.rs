//! WebSocket sign-in frames: `serde_json::from_str::<ClientFrame>` (with its
//! flattened `TokenOptions`) and `ServerFrame` on arbitrary text, then the sign-in
//! steps a frame sequence drives, as far as they run without IO.
//!
//! The `(type, pending)` dispatch itself lives in `signin::serve`, inside the
//! socket loop, so it cannot be called here; `dispatch` below mirrors it and calls
//! the real pure functions the Hub runs for each frame (`Identity::parse`,
//! `challenge::issue`, `challenge::verify`). Each line of the input is one frame.
//!
//! Asserts: no panic; a parsed frame survives serialize → parse unchanged, and so
//! do its `TokenOptions` and any `ServerFrame`; an error frame for any failure
//! serializes; a challenge issued for a frame's pubkey and audience passes the
//! client's own checks and verifies with the user's signature.
#![no_main]

use keygate::Error;
use keygate::challenge::{self, IssuedChallenge};
use keygate::hub::TokenOptions;
use keygate::identity::Identity;
use keygate::signin::{ClientFrame, MAX_FRAME, ServerFrame};
use keygate_fuzz::{APP, NOW, nonce_key, user_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_FRAME {
        return; // tungstenite closes the socket (1009) before serde sees it.
    }
    let Ok(input) = std::str::from_utf8(data) else {
        return; // a Text message is UTF-8 by construction.
    };
    round_trip(input);
    if input.contains('\n') {
        for line in input.split('\n') {
            round_trip(line);
        }
    }
    let mut pending = None;
    for line in input.split('\n') {
        match dispatch(line, &mut pending) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let frame = keygate::signin::error_frame(&e);
                let json = serde_json::to_string(&frame).expect("frames serialize");
                assert_eq!(serde_json::from_str::<ServerFrame>(&json).ok(), Some(frame));
                break;
            }
        }
    }
});

fn round_trip(text: &str) {
    if let Ok(frame) = serde_json::from_str::<ClientFrame>(text) {
        let json = serde_json::to_string(&frame).expect("frames serialize");
        let again: ClientFrame = serde_json::from_str(&json).expect("our own JSON parses");
        assert_eq!(again.kind, frame.kind);
        assert_eq!(again.pubkey, frame.pubkey);
        assert_eq!(again.sig, frame.sig);
        assert_eq!(again.audience, frame.audience);
        assert_eq!(again.options, frame.options);
        assert_eq!(serde_json::to_string(&again).ok(), Some(json));

        let opts = serde_json::to_string(&frame.options).expect("options serialize");
        let opts_again: TokenOptions = serde_json::from_str(&opts).expect("options parse");
        assert_eq!(opts_again, frame.options);
    }
    if let Ok(frame) = serde_json::from_str::<ServerFrame>(text) {
        let json = serde_json::to_string(&frame).expect("frames serialize");
        assert_eq!(serde_json::from_str::<ServerFrame>(&json).ok(), Some(frame));
    }
}

/// What the Hub holds between the two frames of a sign-in.
struct Pending {
    identity: Identity,
    audience: String,
    challenge: IssuedChallenge,
}

/// One frame of `signin::serve` with a `LocalSignIn` backend whose app is [`APP`]
/// and whose audience the frame may choose. `Ok(false)`: the flow is over.
fn dispatch(line: &str, pending: &mut Option<Pending>) -> Result<bool, Error> {
    let frame: ClientFrame =
        serde_json::from_str(line).map_err(|_| Error::bad_request("malformed JSON frame"))?;
    match (frame.kind.as_str(), pending.is_some()) {
        ("token", false) => {
            let pubkey = frame
                .pubkey
                .ok_or_else(|| Error::bad_request("a token request needs a pubkey"))?;
            let audience = frame.audience.unwrap_or_else(|| APP.to_owned());
            let identity = Identity::parse(&pubkey)?;
            let challenge = challenge::issue(
                &nonce_key(),
                APP,
                challenge::Flow::HubWs,
                &audience,
                &identity,
                NOW,
                60,
                [7; 16],
            )?;
            assert_eq!(
                challenge::check_before_signing(&challenge.text, &audience, &identity, NOW),
                Ok(())
            );
            let sent = keygate::signin::challenge_frame(&challenge);
            assert!(serde_json::to_string(&sent).is_ok());
            *pending = Some(Pending {
                identity,
                audience,
                challenge,
            });
            Ok(true)
        }
        ("token", true) => Err(Error::bad_request("one challenge at a time")),
        ("challenge", false) => Err(Error::bad_request("no challenge is pending")),
        ("challenge", true) => {
            let sig = frame
                .sig
                .ok_or_else(|| Error::bad_request("a challenge reply needs a sig"))?;
            let p = pending.take().expect("pending was checked");
            let text = &p.challenge.text;
            let verify = |sig: &str| {
                challenge::verify(
                    &nonce_key(),
                    APP,
                    challenge::Flow::HubWs,
                    text,
                    &p.identity,
                    Some(&p.audience),
                    sig,
                    NOW,
                )
            };
            // The user's own signature, when the pubkey was the fixed user's.
            if p.identity == Identity::from(user_key()) {
                let good = challenge::sign(user_key(), text);
                assert!(verify(&good).is_ok());
            }
            verify(&sig)?;
            Ok(false)
        }
        _ => Err(Error::bad_request("unknown message type")),
    }
}
