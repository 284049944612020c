//! The worked examples of docs/protocol.md, computed by keygate's own code: a
//! reader who checks their client against the page checks it against keygate.

use keygate_core::apikey::ApiSecret;
use keygate_core::identity::Identity;

use crate::{NOW, hex};

const DOC: &str = include_str!("../../../../docs/protocol.md");

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fails unless the page shows `value` (so the page and this test agree).
fn documented(value: &str) {
    assert!(
        DOC.contains(value),
        "docs/protocol.md no longer shows {value}"
    );
}

#[test]
fn identity_example() {
    // RFC 8032 §7.1, test 1.
    let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let key = ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap());
    assert_eq!(
        to_hex(key.verifying_key().as_bytes()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let id = Identity::from(&key);
    let canonical = "bbaareigxlkmadavrbk35ks762pewibz2b3qxf462uyrsllycdjupob2rdi";
    let peer = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
    let did = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw";
    assert_eq!(id.to_string(), canonical);
    assert_eq!(id.peer_id(), peer);
    assert_eq!(id.did_key(), did);
    for spelling in [canonical, peer, did] {
        assert_eq!(Identity::parse(spelling).unwrap(), id);
        documented(spelling);
    }

    // The challenge example and its signature, in both forms.
    let text = "keygate sign-in challenge v1\n\
                audience: http://localhost:8080\n\
                identity: bbaareigxlkmadavrbk35ks762pewibz2b3qxf462uyrsllycdjupob2rdi\n\
                nonce: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n\
                issued-at: 2026-11-23T10:50:49Z\n\
                expires-at: 2026-11-23T10:51:49Z";
    documented(&format!("```text\n{text}\n```"));
    let sig = keygate_core::challenge::sign(&key, text);
    assert_eq!(
        sig,
        "JmxTFC_iPoDWYtlQ8pS1q9hMQ66nyUfX5SYfm5tECaFm9r6veepPSg1zfFo2bAzp-wEUeqOWaHcnaE0JKK11CA"
    );
    documented(&sig);
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &sig).unwrap();
    let data: Vec<String> = bytes.iter().map(u8::to_string).collect();
    let buffer = format!(r#"{{"type":"Buffer","data":[{}]}}"#, data.join(","));
    documented(&buffer);
}

#[test]
fn api_signature_example() {
    let secret = ApiSecret::from_bytes(std::array::from_fn(|i| i as u8));
    let shown = secret.reveal();
    assert_eq!(
        shown,
        "baaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq"
    );
    // NOW is 2026-11-23T10:46:49Z: five minutes later.
    let (msg, sig) = secret.sign(NOW + 300);
    assert_eq!(msg, "2026-11-23T10:51:49Z");
    assert_eq!(sig, "bejehg2kwxh4pbci2eupbrrlitbi4eacumsrji7byemps66w2agpa");
    assert_eq!(secret.verify(&msg, &sig, NOW), Ok(()));
    let mac = multibase::decode(&sig).unwrap().1;
    assert_eq!(
        to_hex(&mac),
        "2248736956b9f8f0891a251e18c5689851c2005464a2947c38231f2f7ada019e"
    );
    for value in [
        shown.as_str(),
        msg.as_str(),
        sig.as_str(),
        "2248736956b9f8f0891a251e18c5689851c2005464a2947c38231f2f7ada019e",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    ] {
        documented(value);
    }
}
