//! The keys that sign OpenID Connect ID tokens, and the JWS around them.
//!
//! A client picks its ID-token algorithm: `RS256` (RSA-2048, RSASSA-PKCS1-v1_5
//! with SHA-256), `ES256` (ECDSA P-256 with SHA-256), or `EdDSA` / `Ed25519` (the
//! same signature under its RFC 8037 and its RFC 9864 name), signed by the Hub's
//! current Ed25519 signing key. The RSA and EC keys are made on first start and
//! kept in the store's server secrets as PKCS#8 DER, so every node of a cluster
//! and every restart signs with the same keys.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use crate::error::Error;
use crate::store::Store;
use crate::time::UnixTime;
use crate::token::TokenSigner;

/// Server-secret names of the two keys (PKCS#8 DER).
pub const RS256_KEY_NAME: &str = "oidc_rs256_key";
pub const ES256_KEY_NAME: &str = "oidc_es256_key";

/// Bytes of an RSA-2048 modulus: the smallest key accepted from the store.
const RSA_MIN_MODULUS_LEN: usize = 256;
/// An uncompressed P-256 point: 0x04 || x (32 bytes) || y (32 bytes).
const P256_POINT_LEN: usize = 65;

/// The signature algorithm of a client's ID tokens (`id_token_signed_response_alg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdTokenAlg {
    Rs256,
    Es256,
    /// Ed25519 under its RFC 8037 name.
    EdDsa,
    /// Ed25519 under its fully specified RFC 9864 name: the same signature.
    Ed25519,
}

impl IdTokenAlg {
    /// Every algorithm, in the order discovery lists them.
    pub const ALL: [Self; 4] = [Self::Rs256, Self::Es256, Self::EdDsa, Self::Ed25519];

    /// The JOSE `alg` name; names are case-sensitive (RFC 7515 §4.1.1).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Ed25519 => "Ed25519",
        }
    }
}

/// The RSA and EC ID-token keys with their public JWKs.
pub struct OidcKeys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    rsa_kid: String,
    ec_kid: String,
    jwks: Vec<Value>,
}

impl std::fmt::Debug for OidcKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: nothing of the private keys.
        f.debug_struct("OidcKeys")
            .field("rsa_kid", &self.rsa_kid)
            .field("ec_kid", &self.ec_kid)
            .finish_non_exhaustive()
    }
}

impl OidcKeys {
    /// Loads the two keys from the store's server secrets (`oidc_rs256_key`,
    /// `oidc_es256_key`, PKCS#8 DER), creating them on first start with
    /// [`Store::secret_or_insert`]: the first writer wins, so the nodes of a
    /// cluster starting together agree on one pair.
    ///
    /// The store has no read-only lookup of a secret, so every start generates a
    /// fresh pair and throws it away when the store already holds one; RSA
    /// generation is CPU work (up to a fraction of a second, its time varies),
    /// done off the async threads.
    pub async fn open(store: &dyn Store, now: UnixTime) -> Result<Self, Error> {
        let (fresh_rsa, fresh_ec) = tokio::task::spawn_blocking(|| {
            Ok::<_, Error>((Self::generate_rs256()?, Self::generate_es256()?))
        })
        .await
        .map_err(|_| Error::Internal)??;
        let rs256 = store
            .secret_or_insert(RS256_KEY_NAME, fresh_rsa, now)
            .await?;
        let es256 = store
            .secret_or_insert(ES256_KEY_NAME, fresh_ec, now)
            .await?;
        Self::from_pkcs8(&rs256, &es256)
    }

    /// The keys from their PKCS#8 DER: an RSA key of at least 2048 bits and a
    /// P-256 key. Anything else is [`Error::Internal`] (a damaged store).
    pub fn from_pkcs8(rs256: &[u8], es256: &[u8]) -> Result<Self, Error> {
        let rsa = RsaKeyPair::from_pkcs8(rs256).map_err(|_| Error::Internal)?;
        if rsa.public_modulus_len() < RSA_MIN_MODULUS_LEN {
            return Err(Error::Internal);
        }
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, es256)
            .map_err(|_| Error::Internal)?;

        let components = PublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
        let n = URL_SAFE_NO_PAD.encode(&components.n);
        let e = URL_SAFE_NO_PAD.encode(&components.e);
        let rsa_kid = rsa_thumbprint(&n, &e);

        let point = ec.public_key().as_ref();
        if point.len() != P256_POINT_LEN || point[0] != 0x04 {
            return Err(Error::Internal);
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let ec_kid = ec_thumbprint(&x, &y);

        let jwks = vec![
            json!({"kty": "RSA", "n": n, "e": e, "kid": rsa_kid, "alg": "RS256", "use": "sig"}),
            json!({
                "kty": "EC", "crv": "P-256", "x": x, "y": y,
                "kid": ec_kid, "alg": "ES256", "use": "sig",
            }),
        ];
        Ok(OidcKeys {
            rsa,
            ec,
            rsa_kid,
            ec_kid,
            jwks,
        })
    }

    /// A fresh RSA-2048 key as PKCS#8 DER. aws-lc-rs draws it from its own
    /// RNG (AWS-LC's, seeded by the OS): it takes no caller RNG, so unlike the
    /// Hub's other keys a [`SeededEntropy`](keygate_core::entropy::SeededEntropy)
    /// cannot fix it.
    pub fn generate_rs256() -> Result<Vec<u8>, Error> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| Error::Internal)?;
        let der = key.as_der().map_err(|_| Error::Internal)?;
        Ok(der.as_ref().to_vec())
    }

    /// A fresh P-256 key as PKCS#8 DER, from aws-lc-rs's own RNG (see
    /// [`generate_rs256`](Self::generate_rs256)).
    pub fn generate_es256() -> Result<Vec<u8>, Error> {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| Error::Internal)?;
        let der = key.to_pkcs8v1().map_err(|_| Error::Internal)?;
        Ok(der.as_ref().to_vec())
    }

    /// The public JWKs of the RSA and EC keys (for `/oauth/jwks`, beside the
    /// Ed25519 keys of the Hub's ring). Each `kid` is the key's RFC 7638
    /// thumbprint.
    pub fn public_jwks(&self) -> Vec<Value> {
        self.jwks.clone()
    }

    /// A compact JWS of `claims` with header `{"alg":…,"typ":"JWT","kid":…}`.
    /// `EdDsa` and `Ed25519` sign with `ed` (the Hub's current signing key, whose
    /// JWK the Hub publishes); `Rs256` and `Es256` with this pair.
    ///
    /// Fails ([`Error::Internal`]) only if the claims do not serialize or
    /// AWS-LC reports an internal failure; never panics.
    pub fn sign<C: serde::Serialize>(
        &self,
        alg: IdTokenAlg,
        ed: &TokenSigner,
        claims: &C,
    ) -> Result<String, Error> {
        let kid = match alg {
            IdTokenAlg::Rs256 => self.rsa_kid.as_str(),
            IdTokenAlg::Es256 => self.ec_kid.as_str(),
            IdTokenAlg::EdDsa | IdTokenAlg::Ed25519 => ed.kid(),
        };
        let header = json!({"alg": alg.as_str(), "typ": "JWT", "kid": kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        let payload = serde_json::to_vec(claims).map_err(|_| Error::Internal)?;
        let mut out = header_b64;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        // The AWS-LC signers ignore their RNG argument (AWS-LC draws its own;
        // RSASSA-PKCS1 needs none): it exists for *ring* compatibility.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = match alg {
            // Ed25519 signing cannot fail.
            IdTokenAlg::EdDsa | IdTokenAlg::Ed25519 => {
                ed25519_dalek::Signer::sign(ed.signing_key(), out.as_bytes())
                    .to_bytes()
                    .to_vec()
            }
            IdTokenAlg::Rs256 => {
                // `sign` copies AWS-LC's output into this buffer and panics on a
                // length mismatch; an RSA signature is always modulus-length.
                let mut sig = vec![0u8; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(&RSA_PKCS1_SHA256, &rng, out.as_bytes(), &mut sig)
                    .map_err(|_| Error::Internal)?;
                sig
            }
            IdTokenAlg::Es256 => self
                .ec
                .sign(&rng, out.as_bytes())
                .map_err(|_| Error::Internal)?
                .as_ref()
                .to_vec(),
        };
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&sig, &mut out);
        Ok(out)
    }
}

/// RFC 7638 thumbprint of an RSA key: base64url SHA-256 of its required members
/// in lexicographic order, without whitespace.
fn rsa_thumbprint(n: &str, e: &str) -> String {
    thumbprint(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#))
}

/// RFC 7638 thumbprint of a P-256 key.
fn ec_thumbprint(x: &str, y: &str) -> String {
    thumbprint(&format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
    ))
}

fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// An ID token's `at_hash` / `c_hash` of `value` (OIDC Core §3.1.3.6, §3.3.2.11):
/// base64url of the left half of the hash of its ASCII octets, the hash being
/// the one of the token's `alg`: SHA-256 for RS256 and ES256.
///
/// `EdDSA` names no hash. For Ed25519 (keygate's only EdDSA curve) the OpenID
/// Connect working group settled on SHA-512, the hash Ed25519 uses inside
/// (openid/connect issue 1125, now the OpenID Connect Token Hash Algorithms
/// guide); panva's oidc-token-hash and node-oidc-provider do the same, and so do
/// they for the fully specified `Ed25519`. So both take the left 256 bits of
/// SHA-512.
pub fn half_hash(alg: IdTokenAlg, value: &str) -> String {
    match alg {
        IdTokenAlg::Rs256 | IdTokenAlg::Es256 => {
            URL_SAFE_NO_PAD.encode(&Sha256::digest(value.as_bytes())[..16])
        }
        IdTokenAlg::EdDsa | IdTokenAlg::Ed25519 => {
            URL_SAFE_NO_PAD.encode(&Sha512::digest(value.as_bytes())[..32])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
        VerificationAlgorithm,
    };
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::Value;

    use super::*;

    const NOW: UnixTime = 1_795_430_809;

    /// One pair for the whole module: RSA generation is the slow part.
    fn keys() -> &'static OidcKeys {
        static KEYS: OnceLock<OidcKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            OidcKeys::from_pkcs8(
                &OidcKeys::generate_rs256().unwrap(),
                &OidcKeys::generate_es256().unwrap(),
            )
            .unwrap()
        })
    }

    fn ed() -> TokenSigner {
        TokenSigner::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]))
    }

    fn claims() -> Value {
        json!({
            "iss": "http://127.0.0.1:1",
            "sub": "acct_1",
            "aud": "kgc_client",
            "iat": NOW,
            "exp": NOW + 300,
            "nonce": "n-0S6_WzA2Mj",
        })
    }

    fn jwk(alg: &str) -> Value {
        keys()
            .public_jwks()
            .into_iter()
            .find(|k| k["alg"] == alg)
            .unwrap()
    }

    fn b64(s: &Value) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s.as_str().unwrap()).unwrap()
    }

    fn parts(token: &str) -> (Value, &str, Vec<u8>) {
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let header = signed.split('.').next().unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        (header, signed, URL_SAFE_NO_PAD.decode(sig).unwrap())
    }

    /// Checks `token` with jsonwebtoken (claims compared, no time checks: the
    /// fixed `NOW` is not the wall clock).
    fn jwt_verify(token: &str, key: &DecodingKey, alg: Algorithm) -> bool {
        let mut v = Validation::new(alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        match jsonwebtoken::decode::<Value>(token, key, &v) {
            Ok(data) => {
                assert_eq!(data.claims, claims());
                true
            }
            Err(_) => false,
        }
    }

    /// Checks `token` with aws-lc-rs directly.
    fn raw_verify(token: &str, alg: &'static dyn VerificationAlgorithm, public: &[u8]) -> bool {
        let (_, signed, sig) = parts(token);
        UnparsedPublicKey::new(alg, public)
            .verify(signed.as_bytes(), &sig)
            .is_ok()
    }

    /// The token with one character of its payload changed.
    fn tampered(token: &str) -> String {
        let mut t = token.to_owned();
        let i = t.find('.').unwrap() + 5;
        let c = if &t[i..=i] == "A" { "B" } else { "A" };
        t.replace_range(i..=i, c);
        t
    }

    fn rsa_der(n: &[u8], e: &[u8]) -> Vec<u8> {
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
        fn int(v: &[u8]) -> Vec<u8> {
            let mut body = Vec::new();
            if v[0] & 0x80 != 0 {
                body.push(0);
            }
            body.extend_from_slice(v);
            let mut out = vec![0x02];
            out.extend(len(body.len()));
            out.extend(body);
            out
        }
        fn len(l: usize) -> Vec<u8> {
            match l {
                0..0x80 => vec![l as u8],
                0x80..0x100 => vec![0x81, l as u8],
                _ => vec![0x82, (l >> 8) as u8, l as u8],
            }
        }
        let body = [int(n), int(e)].concat();
        let mut out = vec![0x30];
        out.extend(len(body.len()));
        out.extend(body);
        out
    }

    #[test]
    fn rs256_verifies_with_the_published_jwk() {
        let token = keys().sign(IdTokenAlg::Rs256, &ed(), &claims()).unwrap();
        let jwk = jwk("RS256");
        let (header, _, sig) = parts(&token);
        assert_eq!(
            header,
            json!({"alg": "RS256", "typ": "JWT", "kid": jwk["kid"]})
        );
        assert_eq!(sig.len(), 256);
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(b64(&jwk["n"]).len(), 256);

        let key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        assert!(jwt_verify(&token, &key, Algorithm::RS256));
        let der = rsa_der(&b64(&jwk["n"]), &b64(&jwk["e"]));
        assert!(raw_verify(&token, &RSA_PKCS1_2048_8192_SHA256, &der));

        let bad = tampered(&token);
        assert!(!jwt_verify(&bad, &key, Algorithm::RS256));
        assert!(!raw_verify(&bad, &RSA_PKCS1_2048_8192_SHA256, &der));
    }

    #[test]
    fn es256_verifies_with_the_published_jwk() {
        let token = keys().sign(IdTokenAlg::Es256, &ed(), &claims()).unwrap();
        let jwk = jwk("ES256");
        let (header, _, sig) = parts(&token);
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "JWT", "kid": jwk["kid"]})
        );
        // The fixed JWS form r || s, not DER.
        assert_eq!(sig.len(), 64);
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert_eq!(jwk["use"], "sig");

        let key =
            DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
                .unwrap();
        assert!(jwt_verify(&token, &key, Algorithm::ES256));
        let point = [vec![0x04], b64(&jwk["x"]), b64(&jwk["y"])].concat();
        assert!(raw_verify(&token, &ECDSA_P256_SHA256_FIXED, &point));

        let bad = tampered(&token);
        assert!(!jwt_verify(&bad, &key, Algorithm::ES256));
        assert!(!raw_verify(&bad, &ECDSA_P256_SHA256_FIXED, &point));
    }

    #[test]
    fn eddsa_and_ed25519_sign_with_the_hub_key() {
        let ed = ed();
        let x = ed.jwk().x.clone();
        let key = DecodingKey::from_ed_components(&x).unwrap();
        let public = URL_SAFE_NO_PAD.decode(&x).unwrap();
        for alg in [IdTokenAlg::EdDsa, IdTokenAlg::Ed25519] {
            let token = keys().sign(alg, &ed, &claims()).unwrap();
            let (header, signed, sig) = parts(&token);
            assert_eq!(
                header,
                json!({"alg": alg.as_str(), "typ": "JWT", "kid": ed.kid()})
            );
            assert!(raw_verify(&token, &ED25519, &public));
            let sig_b64 = URL_SAFE_NO_PAD.encode(&sig);
            assert!(
                jsonwebtoken::crypto::verify(&sig_b64, signed.as_bytes(), &key, Algorithm::EdDSA)
                    .unwrap()
            );
            let bad = tampered(&token);
            assert!(!raw_verify(&bad, &ED25519, &public));
        }
        // jsonwebtoken knows `EdDSA` only (not RFC 9864's `Ed25519`): a full decode
        // of the former.
        let token = keys().sign(IdTokenAlg::EdDsa, &ed, &claims()).unwrap();
        assert!(jwt_verify(&token, &key, Algorithm::EdDSA));
        assert!(!jwt_verify(&tampered(&token), &key, Algorithm::EdDSA));
    }

    #[test]
    fn a_token_does_not_verify_under_another_key() {
        let token = keys().sign(IdTokenAlg::Rs256, &ed(), &claims()).unwrap();
        let other = OidcKeys::from_pkcs8(
            &OidcKeys::generate_rs256().unwrap(),
            &OidcKeys::generate_es256().unwrap(),
        )
        .unwrap();
        let jwk = other.public_jwks()[0].clone();
        let key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        assert!(!jwt_verify(&token, &key, Algorithm::RS256));
        let es = keys().sign(IdTokenAlg::Es256, &ed(), &claims()).unwrap();
        let jwk = other.public_jwks()[1].clone();
        let point = [vec![0x04], b64(&jwk["x"]), b64(&jwk["y"])].concat();
        assert!(!raw_verify(&es, &ECDSA_P256_SHA256_FIXED, &point));
        assert_ne!(other.rsa_kid, keys().rsa_kid);
        assert_ne!(other.ec_kid, keys().ec_kid);
    }

    /// RFC 7638 §3.1: the example RSA key and its thumbprint.
    #[test]
    fn rsa_thumbprint_matches_rfc_7638() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            rsa_thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    /// Each published `kid` is the thumbprint of the members published beside it,
    /// recomputed here from a canonical object serde_json builds (its maps sort
    /// their keys).
    #[test]
    fn kids_are_thumbprints_of_the_published_members() {
        for jwk in keys().public_jwks() {
            let required: &[&str] = match jwk["kty"].as_str().unwrap() {
                "RSA" => &["e", "kty", "n"],
                "EC" => &["crv", "kty", "x", "y"],
                other => panic!("unexpected kty {other}"),
            };
            let canonical: serde_json::Map<String, Value> = required
                .iter()
                .map(|m| ((*m).to_owned(), jwk[*m].clone()))
                .collect();
            let canonical = serde_json::to_string(&canonical).unwrap();
            assert!(canonical.starts_with(&format!(r#"{{"{}":"#, required[0])));
            let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
            assert_eq!(jwk["kid"], expected);
        }
    }

    #[test]
    fn algs_parse_by_their_exact_names() {
        for alg in IdTokenAlg::ALL {
            assert_eq!(IdTokenAlg::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(IdTokenAlg::parse("RS256"), Some(IdTokenAlg::Rs256));
        assert_eq!(IdTokenAlg::parse("Ed25519"), Some(IdTokenAlg::Ed25519));
        for bad in ["rs256", "none", "HS256", "EDDSA", "", "RS256 "] {
            assert_eq!(IdTokenAlg::parse(bad), None, "{bad}");
        }
    }

    /// OIDC Core 1.0 A.4's `c_hash` (RS256), and oidc-token-hash's published
    /// pair for one access token (RS256 and EdDSA over Ed25519).
    #[test]
    fn half_hash_vectors() {
        let code = "Qcb0Orv1zh30vL1MPRsbm-diHiMwcLyZvn1arpZv-Jxf_11jnpEX3Tgfvk";
        assert_eq!(half_hash(IdTokenAlg::Rs256, code), "LDktKdoQak3Pk0cnXxCltA");
        let at = "YmJiZTAwYmYtMzgyOC00NzhkLTkyOTItNjJjNDM3MGYzOWIy9sFhvH8K_x8UIHj1osisS57f5DduL-ar_qw5jl3lthwpMjm283aVMQXDmoqqqydDSqJfbhptzw8rUVwkuQbolw";
        assert_eq!(half_hash(IdTokenAlg::Rs256, at), "x7vk7f6BvQj0jQHYFIk4ag");
        assert_eq!(half_hash(IdTokenAlg::Es256, at), "x7vk7f6BvQj0jQHYFIk4ag");
        let ed = "EGEAhGYyfuwDaVTifvrWSoD5MSy_5hZPy6I7Vm-7pTQ";
        assert_eq!(half_hash(IdTokenAlg::EdDsa, at), ed);
        assert_eq!(half_hash(IdTokenAlg::Ed25519, at), ed);
    }

    #[test]
    fn damaged_or_wrong_keys_are_refused() {
        let rsa = OidcKeys::generate_rs256().unwrap();
        let ec = OidcKeys::generate_es256().unwrap();
        assert!(OidcKeys::from_pkcs8(&rsa, &ec).is_ok());
        assert_eq!(OidcKeys::from_pkcs8(&ec, &ec).unwrap_err(), Error::Internal);
        assert_eq!(
            OidcKeys::from_pkcs8(&rsa, &rsa).unwrap_err(),
            Error::Internal
        );
        assert_eq!(
            OidcKeys::from_pkcs8(&rsa[..100], &ec).unwrap_err(),
            Error::Internal
        );
        assert_eq!(
            OidcKeys::from_pkcs8(&rsa, b"").unwrap_err(),
            Error::Internal
        );
        // A P-384 key is no ES256 key.
        let p384 = EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING)
            .unwrap()
            .to_pkcs8v1()
            .unwrap();
        assert_eq!(
            OidcKeys::from_pkcs8(&rsa, p384.as_ref()).unwrap_err(),
            Error::Internal
        );
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn open_keeps_one_pair_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("t.db").display().to_string();
        let store = crate::store::sqlite::SqliteStore::open(&url).await.unwrap();
        let a = OidcKeys::open(&store, NOW).await.unwrap();
        let b = OidcKeys::open(&store, NOW + 10).await.unwrap();
        assert_eq!(a.public_jwks(), b.public_jwks());
        // A token signed by one verifies under the other's JWK.
        let token = a.sign(IdTokenAlg::Es256, &ed(), &claims()).unwrap();
        let jwk = b.public_jwks()[1].clone();
        let point = [vec![0x04], b64(&jwk["x"]), b64(&jwk["y"])].concat();
        assert!(raw_verify(&token, &ECDSA_P256_SHA256_FIXED, &point));
        drop(store);

        // Reopened from disk: still the same pair. Another store: another pair.
        let store = crate::store::sqlite::SqliteStore::open(&url).await.unwrap();
        let c = OidcKeys::open(&store, NOW + 20).await.unwrap();
        assert_eq!(a.public_jwks(), c.public_jwks());
        let other_dir = tempfile::tempdir().unwrap();
        let other_url = other_dir.path().join("t.db").display().to_string();
        let other = crate::store::sqlite::SqliteStore::open(&other_url)
            .await
            .unwrap();
        let d = OidcKeys::open(&other, NOW).await.unwrap();
        assert_ne!(a.public_jwks(), d.public_jwks());
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_damaged_stored_key_is_an_internal_error() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("t.db").display().to_string();
        let store = crate::store::sqlite::SqliteStore::open(&url).await.unwrap();
        store
            .secret_or_insert(RS256_KEY_NAME, b"not a key".to_vec(), NOW)
            .await
            .unwrap();
        assert_eq!(
            OidcKeys::open(&store, NOW).await.unwrap_err(),
            Error::Internal
        );
    }
}
