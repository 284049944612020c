//! Checking an `id_token_hint` (RP-initiated logout): an ID token this provider
//! signed, with any of its keys, expired or not.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::keys::OidcKeys;
use crate::token::Jwks;

/// What logout needs from a verified hint.
#[derive(Debug, Deserialize)]
pub(super) struct Hint {
    pub iss: String,
    pub aud: String,
    pub sid: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

fn member(jwk: &serde_json::Value, name: &str) -> Option<Vec<u8>> {
    jwk.get(name).and_then(|v| v.as_str()).and_then(b64)
}

/// The hint's claims if its signature is one of ours; `None` otherwise.
pub(super) fn verify_id_token(keys: &OidcKeys, ring: &Jwks, token: &str) -> Option<Hint> {
    use aws_lc_rs::signature::{self, UnparsedPublicKey};
    if token.len() > 8192 {
        return None;
    }
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Header = serde_json::from_slice(&b64(h)?).ok()?;
    let sig = b64(s)?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    let ok = match header.alg.as_str() {
        "RS256" | "ES256" => {
            let jwks = keys.public_jwks();
            let jwk = jwks
                .iter()
                .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(header.kid.as_str()))?;
            if header.alg == "RS256" {
                let n = member(jwk, "n")?;
                let e = member(jwk, "e")?;
                signature::RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig)
                    .is_ok()
            } else {
                let mut point = vec![4u8];
                point.extend(member(jwk, "x")?);
                point.extend(member(jwk, "y")?);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                    .verify(signed, &sig)
                    .is_ok()
            }
        }
        "EdDSA" | "Ed25519" => {
            let jwk = ring.keys.iter().find(|k| k.kid == header.kid)?;
            let x: [u8; 32] = b64(&jwk.x)?.try_into().ok()?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).ok()?;
            let sig = ed25519_dalek::Signature::from_slice(&sig).ok()?;
            key.verify_strict(signed, &sig).is_ok()
        }
        _ => false,
    };
    if !ok {
        return None;
    }
    serde_json::from_slice(&b64(p)?).ok()
}
