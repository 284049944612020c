use super::*;
use ed25519_dalek::SigningKey;

const NOW: UnixTime = 1_795_430_809; // 2026-11-23T10:46:49Z
const APP: &str = "kgk_testapp";
const AUD: &str = "http://localhost:8080";

fn setup() -> (NonceKey, SigningKey, Identity) {
    let key = NonceKey::from_bytes([42; 32]);
    let sk = SigningKey::from_bytes(&[7; 32]);
    let id = Identity::from(&sk);
    (key, sk, id)
}

fn issued() -> (NonceKey, SigningKey, Identity, IssuedChallenge) {
    let (key, sk, id) = setup();
    let c = issue(
        &key,
        APP,
        Flow::HubHttp,
        AUD,
        &id,
        NOW,
        DEFAULT_TTL,
        [1; 16],
    )
    .unwrap();
    (key, sk, id, c)
}

#[test]
fn text_is_exactly_the_protocol_format() {
    let (_, _, id, c) = issued();
    let lines: Vec<&str> = c.text.split('\n').collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0], "keygate sign-in challenge v1");
    assert_eq!(lines[1], "audience: http://localhost:8080");
    assert_eq!(lines[2], format!("identity: {id}"));
    let nonce = lines[3].strip_prefix("nonce: ").unwrap();
    assert_eq!(nonce.len(), 43);
    assert!(
        nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(lines[4], "issued-at: 2026-11-23T10:46:49Z");
    assert_eq!(lines[5], "expires-at: 2026-11-23T10:47:49Z");
    assert!(!c.text.ends_with('\n'));
    assert_eq!(c.expires_at, NOW + 60);
}

#[test]
fn signed_challenge_verifies_once_per_nonce_id() {
    let (key, sk, id, c) = issued();
    let sig = sign(&sk, &c.text);
    let v = verify(
        &key,
        APP,
        Flow::HubHttp,
        &c.text,
        &id,
        Some(AUD),
        &sig,
        NOW + 59,
    )
    .unwrap();
    assert_eq!(v.nonce_id, [1; 16]);
    assert_eq!(v.audience, AUD);
    // Same random, different identity: a different tag, so a different nonce.
    let other = Identity::from(&SigningKey::from_bytes(&[8; 32]));
    let c2 = issue(&key, APP, Flow::HubHttp, AUD, &other, NOW, 60, [1; 16]).unwrap();
    assert_ne!(c2.text.split('\n').nth(3), c.text.split('\n').nth(3));
}

#[test]
fn rejections() {
    let (key, sk, id, c) = issued();
    let sig = sign(&sk, &c.text);
    let other_sk = SigningKey::from_bytes(&[8; 32]);
    let other = Identity::from(&other_sk);
    use ChallengeError::*;
    let v =
        |k: &NonceKey, app: &str, text: &str, id: &Identity, aud: Option<&str>, sig: &str, now| {
            verify(k, app, Flow::HubHttp, text, id, aud, sig, now).map(|_| ())
        };
    assert_eq!(
        v(&key, APP, &c.text, &id, None, &sig, NOW + 60),
        Err(Expired)
    );
    assert_eq!(
        v(&key, "kgk_other", &c.text, &id, None, &sig, NOW),
        Err(NotIssuedHere)
    );
    assert_eq!(
        v(
            &NonceKey::from_bytes([0; 32]),
            APP,
            &c.text,
            &id,
            None,
            &sig,
            NOW
        ),
        Err(NotIssuedHere)
    );
    assert_eq!(
        v(&key, APP, &c.text, &other, None, &sig, NOW),
        Err(WrongIdentity)
    );
    assert_eq!(
        v(&key, APP, &c.text, &id, Some("http://evil"), &sig, NOW),
        Err(WrongAudience)
    );
    let other_sig = sign(&other_sk, &c.text);
    assert_eq!(
        v(&key, APP, &c.text, &id, None, &other_sig, NOW),
        Err(BadSignature)
    );
    assert_eq!(
        v(&key, APP, &c.text, &id, None, "abc", NOW),
        Err(MalformedSignature)
    );
    assert_eq!(
        v(&key, APP, &c.text, &id, None, &format!("{sig}=="), NOW),
        Err(MalformedSignature)
    );
    // Tampering with any field breaks the MAC (or the format).
    let later = c.text.replace("10:47:49Z", "10:57:49Z");
    assert_eq!(
        v(&key, APP, &later, &id, None, &sign(&sk, &later), NOW),
        Err(NotIssuedHere)
    );
    let aud = c.text.replace(AUD, "http://localhost:9090");
    assert_eq!(
        v(&key, APP, &aud, &id, None, &sign(&sk, &aud), NOW),
        Err(NotIssuedHere)
    );
    for bad in [
        format!("{}\n", c.text),
        c.text.replace('\n', "\r\n"),
        c.text.replace("v1", "v2"),
        c.text.replace("T10:46:49Z", "T10:46:49+00:00"),
        String::new(),
        "x".repeat(2000),
    ] {
        assert_eq!(
            v(&key, APP, &bad, &id, None, &sig, NOW),
            Err(Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn a_challenge_is_redeemed_only_by_the_flow_that_issued_it() {
    let (key, sk, id) = setup();
    let flows = [
        Flow::ProviderWs,
        Flow::ProviderHttp,
        Flow::HubWs,
        Flow::HubHttp,
        Flow::Oidc,
    ];
    for issued_on in flows {
        let c = issue(&key, APP, issued_on, AUD, &id, NOW, 60, [3; 16]).unwrap();
        let sig = sign(&sk, &c.text);
        for redeemed_on in flows {
            let got = verify(&key, APP, redeemed_on, &c.text, &id, None, &sig, NOW);
            if redeemed_on == issued_on {
                assert!(got.is_ok(), "{issued_on:?}");
            } else {
                assert_eq!(
                    got,
                    Err(ChallengeError::NotIssuedHere),
                    "{issued_on:?} -> {redeemed_on:?}"
                );
            }
        }
        // The text is the protocol's: only the nonce differs between flows.
        let other = issue(&key, APP, Flow::HubHttp, AUD, &id, NOW, 60, [3; 16]).unwrap();
        let strip = |t: &str| {
            t.split('\n')
                .filter(|l| !l.starts_with("nonce: "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&c.text), strip(&other.text));
    }
}

#[test]
fn a_forged_nonce_reads_as_a_bad_signature() {
    assert_eq!(ChallengeError::NotIssuedHere.code(), "invalid_signature");
    assert_eq!(
        ChallengeError::NotIssuedHere.to_string(),
        ChallengeError::BadSignature.to_string()
    );
}

#[test]
fn signature_as_a_node_buffer() {
    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[serde(deserialize_with = "de_signature")]
        sig: String,
    }
    let read = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.sig);
    let (_, sk, id, c) = issued();
    let text_form = sign(&sk, &c.text);
    let bytes = decode_signature(&text_form).unwrap().to_bytes();
    let list = |b: &[u8]| {
        b.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    // The documented form passes through unchanged.
    assert_eq!(
        read(&format!(r#"{{"sig":"{text_form}"}}"#)).unwrap(),
        text_form
    );
    // A Buffer of the same 64 bytes reads as the same signature, in either key order.
    let buffer = format!(r#"{{"sig":{{"type":"Buffer","data":[{}]}}}}"#, list(&bytes));
    assert_eq!(read(&buffer).unwrap(), text_form);
    let swapped = format!(r#"{{"sig":{{"data":[{}],"type":"Buffer"}}}}"#, list(&bytes));
    assert_eq!(read(&swapped).unwrap(), text_form);
    let sig = decode_signature(&read(&buffer).unwrap()).unwrap();
    assert!(id.verify_strict(c.text.as_bytes(), &sig));
    // Anything else is refused.
    let mut high = list(&bytes[..63]);
    high.push_str(",256");
    let mut negative = list(&bytes[..63]);
    negative.push_str(",-1");
    let mut fraction = list(&bytes[..63]);
    fraction.push_str(",1.5");
    let mut quoted = list(&bytes[..63]);
    quoted.push_str(",\"1\"");
    let long = format!("{},0", list(&bytes));
    for data in [
        list(&bytes[..63]),
        long,
        high,
        negative,
        fraction,
        quoted,
        String::new(),
    ] {
        let json = format!(r#"{{"sig":{{"type":"Buffer","data":[{data}]}}}}"#);
        assert!(read(&json).is_err(), "{json}");
    }
    for json in [
        format!(
            r#"{{"sig":{{"type":"Uint8Array","data":[{}]}}}}"#,
            list(&bytes)
        ),
        format!(r#"{{"sig":{{"data":[{}]}}}}"#, list(&bytes)),
        format!(
            r#"{{"sig":{{"type":"Buffer","data":[{}],"x":1}}}}"#,
            list(&bytes)
        ),
        format!(
            r#"{{"sig":{{"type":"Buffer","type":"Buffer","data":[{}]}}}}"#,
            list(&bytes)
        ),
        r#"{"sig":{"type":"Buffer","data":"AAAA"}}"#.to_owned(),
        r#"{"sig":{"type":"Buffer"}}"#.to_owned(),
        format!(r#"{{"sig":[{}]}}"#, list(&bytes)),
        r#"{"sig":64}"#.to_owned(),
        r#"{"sig":null}"#.to_owned(),
    ] {
        assert!(read(&json).is_err(), "{json}");
    }
    // Error messages never quote the input.
    let e = read(r#"{"sig":{"type":"\u202eBuffer","data":[]}}"#).unwrap_err();
    assert!(!e.to_string().contains('\u{202e}'), "{e}");
}

#[test]
fn audience_rules() {
    let (key, _, id) = setup();
    for bad in ["", "has space", "new\nline", &"a".repeat(257)] {
        assert_eq!(
            issue(&key, APP, Flow::HubHttp, bad, &id, NOW, 60, [0; 16]),
            Err(ChallengeError::BadAudience)
        );
    }
}

#[test]
fn client_side_check() {
    let (_, _, id, c) = issued();
    assert_eq!(check_before_signing(&c.text, AUD, &id, NOW), Ok(()));
    assert_eq!(
        check_before_signing(&c.text, "https://bank.example", &id, NOW),
        Err(ChallengeError::WrongAudience)
    );
    let other = Identity::from(&SigningKey::from_bytes(&[8; 32]));
    assert_eq!(
        check_before_signing(&c.text, AUD, &other, NOW),
        Err(ChallengeError::WrongIdentity)
    );
    assert_eq!(
        check_before_signing(&c.text, AUD, &id, NOW + 60),
        Err(ChallengeError::Expired)
    );
}
