//! DPoP (RFC 9449): proofs of possession that bind an access token to a key.
//!
//! A proof is a JWS compact `dpop+jwt` whose header carries the public key (`jwk`)
//! and whose payload names one HTTP request (`htm`, `htu`), a time (`iat`), a unique
//! id (`jti`), and, when a token goes with it, the token's hash (`ath`). keygate binds
//! a token to the RFC 7638 thumbprint of that key (`cnf.jkt`); for a key sign-in the
//! key is the identity's own Ed25519 key, so the token is good only in the hands of
//! whoever holds the identity. Everything here is pure: the caller passes the time,
//! keeps the [`ReplayCache`] and, when it wants them, the [`NonceKey`] of its nonces.

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::identity::Identity;
use crate::time::UnixTime;

/// The `typ` of a proof's header.
pub const PROOF_TYPE: &str = "dpop+jwt";
/// The token type of a key-bound token (`token_type`, the `Authorization` scheme).
pub const TOKEN_TYPE: &str = "DPoP";
/// What `WWW-Authenticate: DPoP algs="…"` and discovery announce.
pub const ALGS: &str = "EdDSA Ed25519 ES256";
/// Proofs longer than this are refused before any parsing.
pub const MAX_PROOF_LEN: usize = 4096;
/// The longest `jti` taken.
pub const MAX_JTI_LEN: usize = 128;
/// A proof is taken until `iat` + this many seconds.
pub const MAX_AGE: i64 = 60;
/// ... and from `iat` − this many seconds (a client clock a little ahead).
pub const MAX_AHEAD: i64 = 5;
/// Entries a verifier's replay cache holds by default: one per proof accepted in
/// the last [`MAX_AGE`] + [`MAX_AHEAD`] seconds, about 80 bytes each.
pub const DEFAULT_REPLAY_CAPACITY: usize = 262_144;
/// How long a server nonce stays good, in seconds (two windows of this length).
pub const NONCE_WINDOW: i64 = 60;

/// Why a proof was refused. The server answers every one of them the same way
/// (`invalid_dpop_proof`) but for [`DpopError::UseNonce`] and [`DpopError::Busy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("this needs a DPoP proof in the DPoP header")]
    Missing,
    #[error("the DPoP proof is not a well-formed dpop+jwt")]
    Malformed,
    #[error("the DPoP proof's algorithm or key is not one this server takes")]
    UnsupportedKey,
    #[error("the DPoP proof's signature is invalid")]
    BadSignature,
    #[error("the DPoP proof is for another method or URL")]
    WrongRequest,
    #[error("the DPoP proof is too old or from the future")]
    Stale,
    #[error("the DPoP proof is not for this access token")]
    WrongToken,
    #[error("the DPoP proof was made with another key")]
    WrongKey,
    #[error("the DPoP proof was already used")]
    Replayed,
    #[error("the DPoP proof must carry the server's nonce")]
    UseNonce,
    #[error("too many DPoP proofs at once; try again shortly")]
    Busy,
}

/// Which keys a verifier takes for proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Ed25519 only (`EdDSA`/`Ed25519`): keygate's user keys.
    Ed25519,
    /// Ed25519 or P-256 (`ES256`): OIDC clients that bring a key of their own.
    Any,
}

/// What the request a proof goes with looks like.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The request's method, upper case.
    pub htm: &'a str,
    /// The URLs the request may have been sent to (one per public origin the
    /// verifier answers on); the proof's `htu` must equal one after normalisation.
    pub htu: &'a [&'a str],
    /// The access token sent with the proof (its hash must be `ath`), if any.
    pub token: Option<&'a str>,
    pub keys: Keys,
    /// When set, the proof must carry a nonce this key made and that is still good.
    pub nonces: Option<&'a NonceKey>,
}

/// A proof that passed every check but replay (see [`ReplayCache::insert`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key (base64url SHA-256).
    pub jkt: String,
    pub jti: String,
    pub iat: UnixTime,
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: String,
    jwk: Jwk,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    ath: Option<String>,
    nonce: Option<String>,
}

/// The public key of a proof, checked.
enum Key {
    Ed25519(VerifyingKey),
    P256 { x: String, y: String },
}

/// Checks `proof` against `expect` at `now`: form, key, signature, method and URL,
/// time, token hash and nonce. Replay is the caller's [`ReplayCache`]'s.
pub fn verify(proof: &str, expect: &Expect<'_>, now: UnixTime) -> Result<Proof, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(DpopError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopError::Malformed);
    };
    let header: Header = decode_part(h64)?;
    if header.typ.as_deref() != Some(PROOF_TYPE) {
        return Err(DpopError::Malformed);
    }
    let (key, jkt) = public_key(&header, expect.keys)?;
    let signed = &proof[..h64.len() + 1 + p64.len()];
    let good = match &key {
        Key::Ed25519(vk) => {
            let sig = URL_SAFE_NO_PAD
                .decode(s64)
                .ok()
                .and_then(|b| Signature::from_slice(&b).ok())
                .ok_or(DpopError::BadSignature)?;
            vk.verify_strict(signed.as_bytes(), &sig).is_ok()
        }
        Key::P256 { x, y } => {
            let key = jsonwebtoken::DecodingKey::from_ec_components(x, y)
                .map_err(|_| DpopError::UnsupportedKey)?;
            jsonwebtoken::crypto::verify(
                s64,
                signed.as_bytes(),
                &key,
                jsonwebtoken::Algorithm::ES256,
            )
            .unwrap_or(false)
        }
    };
    if !good {
        return Err(DpopError::BadSignature);
    }
    let claims: Claims = decode_part(p64)?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
        return Err(DpopError::Malformed);
    }
    if claims.htm != expect.htm {
        return Err(DpopError::WrongRequest);
    }
    let htu = normalize_htu(&claims.htu).ok_or(DpopError::WrongRequest)?;
    if !expect
        .htu
        .iter()
        .any(|u| normalize_htu(u).is_some_and(|u| u == htu))
    {
        return Err(DpopError::WrongRequest);
    }
    if claims.iat < now - MAX_AGE || claims.iat > now + MAX_AHEAD {
        return Err(DpopError::Stale);
    }
    match (expect.token, claims.ath.as_deref()) {
        (None, _) => {}
        (Some(t), Some(ath)) if ath == token_hash(t) => {}
        (Some(_), _) => return Err(DpopError::WrongToken),
    }
    if let Some(nonces) = expect.nonces
        && !claims
            .nonce
            .as_deref()
            .is_some_and(|n| nonces.check(n, now))
    {
        return Err(DpopError::UseNonce);
    }
    Ok(Proof {
        jkt,
        jti: claims.jti,
        iat: claims.iat,
    })
}

/// The normalised `htu` a proof claims, read without checking anything (to pick
/// the URLs to hold it to); [`verify`] is what checks it.
pub fn claimed_htu(proof: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Htu {
        htu: String,
    }
    if proof.len() > MAX_PROOF_LEN {
        return None;
    }
    let payload = proof.split('.').nth(1)?;
    let c: Htu = decode_part(payload).ok()?;
    normalize_htu(&c.htu)
}

fn decode_part<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, DpopError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| DpopError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| DpopError::Malformed)
}

/// The proof's key, checked against its `alg`, and its thumbprint.
fn public_key(header: &Header, keys: Keys) -> Result<(Key, String), DpopError> {
    let jwk = &header.jwk;
    if jwk.d.is_some() {
        // A private key in a proof: never used, never echoed.
        return Err(DpopError::UnsupportedKey);
    }
    match (header.alg.as_str(), jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("EdDSA" | "Ed25519", "OKP", Some("Ed25519")) => {
            let x = canonical_b64::<32>(jwk.x.as_deref())?;
            let vk = VerifyingKey::from_bytes(&x).map_err(|_| DpopError::UnsupportedKey)?;
            if vk.is_weak() {
                return Err(DpopError::UnsupportedKey);
            }
            Ok((Key::Ed25519(vk), ed25519_thumbprint(&x)))
        }
        ("ES256", "EC", Some("P-256")) if keys == Keys::Any => {
            let x = canonical_b64::<32>(jwk.x.as_deref())?;
            let y = canonical_b64::<32>(jwk.y.as_deref())?;
            let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
            let jkt = thumbprint(&format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
            ));
            Ok((Key::P256 { x, y }, jkt))
        }
        _ => Err(DpopError::UnsupportedKey),
    }
}

/// `N` bytes from base64url that re-encodes to exactly the same text (so one key
/// has one thumbprint).
fn canonical_b64<const N: usize>(field: Option<&str>) -> Result<[u8; N], DpopError> {
    let s = field.ok_or(DpopError::UnsupportedKey)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| DpopError::UnsupportedKey)?;
    let out: [u8; N] = bytes.try_into().map_err(|_| DpopError::UnsupportedKey)?;
    if URL_SAFE_NO_PAD.encode(out) != s {
        return Err(DpopError::UnsupportedKey);
    }
    Ok(out)
}

fn thumbprint(canonical_jwk: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical_jwk.as_bytes()))
}

fn ed25519_thumbprint(x: &[u8; 32]) -> String {
    let x = URL_SAFE_NO_PAD.encode(x);
    thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#))
}

/// The `cnf.jkt` of tokens bound to `identity`'s own key.
pub fn identity_jkt(identity: &Identity) -> String {
    ed25519_thumbprint(identity.as_bytes())
}

/// What the scheme a token came with must be (RFC 9449 §7): the key a bound token
/// (`cnf`) needs a proof by when it came as `DPoP`; none for a bearer token that
/// came as `Bearer`; `invalid_token` for either in the other scheme.
pub fn bound_key(
    cnf: Option<&crate::token::Confirmation>,
    dpop_scheme: bool,
) -> Result<Option<&str>, crate::error::Error> {
    match (cnf, dpop_scheme) {
        (None, false) => Ok(None),
        (None, true) => Err(crate::error::Error::DpopUnboundToken),
        (Some(_), false) => Err(crate::error::Error::DpopBoundToken),
        (Some(c), true) => Ok(Some(&c.jkt)),
    }
}

/// `ath`: base64url SHA-256 of the token's ASCII.
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// `htu` compared as RFC 9449 §4.3 says (RFC 3986 §6.2.2/§6.2.3 normalisation,
/// without query and fragment): scheme and host lower case, the default port
/// dropped, dot segments resolved, an empty path as `/`. The WebSocket schemes
/// count as their HTTP ones (a socket opens with an HTTP request). None for
/// anything that is not an absolute http(s)/ws(s) URL.
pub fn normalize_htu(raw: &str) -> Option<String> {
    let mut url = url::Url::parse(raw).ok()?;
    let scheme = match url.scheme() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        _ => return None,
    };
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    let port = url.port_or_known_default();
    let default = if scheme == "http" { 80 } else { 443 };
    let host = url.host_str()?.to_owned();
    let port = match port {
        Some(p) if p != default => format!(":{p}"),
        _ => String::new(),
    };
    Some(format!("{scheme}://{host}{port}{}", url.path()))
}

/// The `jti`s of proofs seen, for as long as a proof with them could still be taken;
/// bounded: when full of live entries a new proof is refused ([`DpopError::Busy`])
/// rather than an old one forgotten.
pub struct ReplayCache {
    seen: HashMap<[u8; 16], i64>,
    order: VecDeque<([u8; 16], i64)>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `proof`; `Replayed` if its key already used its `jti`.
    pub fn insert(&mut self, proof: &Proof, now: UnixTime) -> Result<(), DpopError> {
        while let Some(&(k, until)) = self.order.front() {
            if until >= now {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&k);
        }
        let mut h = Sha256::new();
        h.update(proof.jkt.as_bytes());
        h.update([0]);
        h.update(proof.jti.as_bytes());
        let digest = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&digest[..16]);
        if self.seen.contains_key(&k) {
            return Err(DpopError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(DpopError::Busy);
        }
        let until = proof.iat + MAX_AGE;
        self.seen.insert(k, until);
        self.order.push_back((k, until));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Server nonces (`DPoP-Nonce`, RFC 9449 §8): made without state, from the time
/// window and an HMAC, and good for the window they were made in and the next.
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

impl NonceKey {
    pub fn new(secret: [u8; 32]) -> Self {
        NonceKey(secret)
    }

    fn mac(&self, window: i64) -> [u8; 16] {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("any key length");
        m.update(b"keygate dpop nonce\0");
        m.update(&window.to_be_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&m.finalize().into_bytes()[..16]);
        out
    }

    /// The nonce to hand out at `now`.
    pub fn issue(&self, now: UnixTime) -> String {
        let window = now.div_euclid(NONCE_WINDOW);
        let mut raw = [0u8; 24];
        raw[..8].copy_from_slice(&window.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(window));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was made by this key in this window or the one before.
    pub fn check(&self, nonce: &str, now: UnixTime) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Ok(raw) = <[u8; 24]>::try_from(raw.as_slice()) else {
            return false;
        };
        let window = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let current = now.div_euclid(NONCE_WINDOW);
        if window != current && window != current - 1 {
            return false;
        }
        use subtle::ConstantTimeEq;
        bool::from(self.mac(window).ct_eq(&raw[8..]))
    }
}

/// A proof made with an Ed25519 key (`EdDSA`), for clients: for the request
/// `htm` `htu`, with `ath` when `token` is given and `nonce` when the server asked.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    key: &ed25519_dalek::SigningKey,
    htm: &str,
    htu: &str,
    token: Option<&str>,
    nonce: Option<&str>,
    iat: UnixTime,
    jti: &str,
) -> String {
    use ed25519_dalek::Signer;
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    let header = serde_json::json!({
        "typ": PROOF_TYPE,
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x},
    });
    let mut claims = serde_json::json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat});
    if let Some(t) = token {
        claims["ath"] = token_hash(t).into();
    }
    if let Some(n) = nonce {
        claims["nonce"] = n.into();
    }
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()).to_bytes());
    format!("{signed}.{sig}")
}

#[cfg(test)]
mod tests;
