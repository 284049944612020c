//! User identities: Ed25519 public keys and their three accepted spellings.
//!
//! The canonical form is Textile-compatible: multibase base32-lower (`b…`) of the
//! libp2p protobuf encoding of the public key (`08 01 12 20 ‖ key`), so every
//! canonical identity starts with `bbaarei`. A libp2p PeerId (`12D3KooW…`) and a
//! `did:key:z6Mk…` are accepted as input and always answered in canonical form.
//!
//! Parsing is strict on purpose: one key has exactly one canonical spelling, and
//! anything that is not an honest, prime-order Ed25519 public key is refused with a
//! reason of its own. The protobuf decoder is hand-written because libp2p's own
//! decoder tolerates unknown and repeated fields, which the protocol forbids.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ed25519_dalek::{Signature, VerifyingKey};

/// Longest identity string we look at; the longest honest form (a did:key) is 56.
pub const MAX_IDENTITY_LEN: usize = 256;

const PROTO_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
const KEY_TYPE_ED25519: u64 = 1;
const MULTICODEC_ED25519_PUB: u64 = 0xed;
const MULTICODEC_ED25519_PRIV: u64 = 0x1300;
const MULTIHASH_IDENTITY: u64 = 0x00;

/// Why a string is not an acceptable identity. Every variant maps to the HTTP error
/// `invalid_identity`; [`IdentityError::reason`] tells them apart for logs and tests.
/// No variant carries the offending input, so nothing a user sent is ever echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity is empty")]
    Empty,
    #[error("identity is longer than {MAX_IDENTITY_LEN} characters")]
    TooLong,
    #[error(
        "this is a private key, not an identity: never send a private key to anyone; \
         if it has left your device, create a new identity"
    )]
    PrivateKey,
    #[error("only Ed25519 keys are accepted")]
    UnsupportedKeyType,
    #[error("an Ed25519 public key is 32 bytes long")]
    WrongLength,
    #[error("identity has bytes after the key")]
    TrailingBytes,
    #[error("identity has an unknown protobuf field")]
    UnknownField,
    #[error("identity repeats a protobuf field")]
    DuplicateField,
    #[error("identity lacks the key type or the key data")]
    MissingField,
    #[error("identity is malformed protobuf")]
    Malformed,
    #[error("identity is not in canonical encoding")]
    NonCanonicalEncoding,
    #[error(
        "unsupported encoding: send the canonical base32-lower form (b…), a PeerId (12D3KooW…) or a did:key"
    )]
    UnsupportedBase,
    #[error("identity has characters outside its base's alphabet")]
    BadCharacters,
    #[error("this PeerId does not embed its public key")]
    PeerIdWithoutKey,
    #[error("key is not a valid curve point")]
    InvalidPoint,
    #[error("key is a non-canonical point encoding")]
    NonCanonicalPoint,
    #[error("key is a small-order point")]
    SmallOrder,
    #[error("key has a small-order (torsion) component")]
    MixedOrder,
}

impl IdentityError {
    /// The HTTP/WebSocket error code for every identity error.
    pub const CODE: &'static str = "invalid_identity";

    /// A stable snake_case name for this particular failure.
    pub fn reason(self) -> &'static str {
        use IdentityError::*;
        match self {
            Empty => "empty",
            TooLong => "too_long",
            PrivateKey => "private_key",
            UnsupportedKeyType => "unsupported_key_type",
            WrongLength => "wrong_length",
            TrailingBytes => "trailing_bytes",
            UnknownField => "unknown_field",
            DuplicateField => "duplicate_field",
            MissingField => "missing_field",
            Malformed => "malformed",
            NonCanonicalEncoding => "non_canonical_encoding",
            UnsupportedBase => "unsupported_base",
            BadCharacters => "bad_characters",
            PeerIdWithoutKey => "peer_id_without_key",
            InvalidPoint => "invalid_point",
            NonCanonicalPoint => "non_canonical_point",
            SmallOrder => "small_order",
            MixedOrder => "mixed_order",
        }
    }
}

/// An Ed25519 public key that passed every check: canonical encoding, on the curve,
/// in the prime-order subgroup.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    key: VerifyingKey,
}

impl Identity {
    /// Parses any accepted spelling (canonical, PeerId, did:key).
    pub fn parse(input: &str) -> Result<Self, IdentityError> {
        Self::parse_with(input, &Self::from_bytes)
    }

    /// [`Identity::parse`] with the point checks of the decoded key bytes done by
    /// `checked`, which must answer exactly as [`Identity::from_bytes`] does
    /// ([`IdentityCache`] remembers its answers).
    fn parse_with(input: &str, checked: &CheckBytes<'_>) -> Result<Self, IdentityError> {
        if input.is_empty() {
            return Err(IdentityError::Empty);
        }
        if input.len() > MAX_IDENTITY_LEN {
            return Err(IdentityError::TooLong);
        }
        if let Some(rest) = input.strip_prefix("did:key:") {
            let id = Self::parse_did_key(rest, checked)?;
            if id.did_key() != input {
                return Err(IdentityError::NonCanonicalEncoding);
            }
            return Ok(id);
        }
        match input.as_bytes()[0] {
            b'b' => Self::parse_canonical(input, checked),
            b'1' | b'Q' => Self::parse_peer_id(input, checked).and_then(|id| {
                // One key, one spelling (non-minimal varints, reordered fields).
                if id.peer_id() == input {
                    Ok(id)
                } else {
                    Err(IdentityError::NonCanonicalEncoding)
                }
            }),
            // Other multibase bases (base32 upper, base58btc, base64, hex…) and the rest.
            _ => Err(IdentityError::UnsupportedBase),
        }
    }

    /// Builds an identity from raw key bytes, applying the point checks.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, IdentityError> {
        let point = CompressedEdwardsY(*bytes)
            .decompress()
            .ok_or(IdentityError::InvalidPoint)?;
        // One decompression and one compression in all: the key keeps both.
        let key = VerifyingKey::from(point);
        if key.as_bytes() != bytes {
            return Err(IdentityError::NonCanonicalPoint);
        }
        if point.is_small_order() {
            return Err(IdentityError::SmallOrder);
        }
        if !torsion_free(&point) {
            return Err(IdentityError::MixedOrder);
        }
        Ok(Identity { key })
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Strict Ed25519 verification (RFC 8032 with S < L, canonical R, no small-order R).
    pub fn verify_strict(&self, message: &[u8], signature: &Signature) -> bool {
        self.key.verify_strict(message, signature).is_ok()
    }

    /// The libp2p protobuf encoding of the key.
    pub fn to_protobuf(&self) -> [u8; 36] {
        let mut out = [0u8; 36];
        out[..4].copy_from_slice(&PROTO_PREFIX);
        out[4..].copy_from_slice(self.key.as_bytes());
        out
    }

    /// The libp2p PeerId (identity multihash of the protobuf key, base58btc).
    pub fn peer_id(&self) -> String {
        let mut mh = Vec::with_capacity(38);
        mh.extend_from_slice(&[0x00, 36]);
        mh.extend_from_slice(&self.to_protobuf());
        multibase::Base::Base58Btc.encode(mh)
    }

    /// The `did:key` spelling.
    pub fn did_key(&self) -> String {
        let mut raw = Vec::with_capacity(34);
        raw.extend_from_slice(&[0xed, 0x01]);
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "did:key:{}",
            multibase::encode(multibase::Base::Base58Btc, raw)
        )
    }

    fn parse_canonical(input: &str, checked: &CheckBytes<'_>) -> Result<Self, IdentityError> {
        let bytes = multibase::Base::Base32Lower
            .decode(&input[1..])
            .map_err(|_| IdentityError::BadCharacters)?;
        let key = decode_protobuf_key(&bytes)?;
        let identity = checked(&key)?;
        // One key, one spelling: the decoder above is strict, and this catches what
        // it lets through (non-minimal varints, field order, base32 trailing bits).
        if identity.to_string() != input {
            return Err(IdentityError::NonCanonicalEncoding);
        }
        Ok(identity)
    }

    fn parse_peer_id(input: &str, checked: &CheckBytes<'_>) -> Result<Self, IdentityError> {
        let bytes = multibase::Base::Base58Btc
            .decode(input)
            .map_err(|_| IdentityError::BadCharacters)?;
        let mut cur = Cursor::new(&bytes);
        let code = cur.varint()?;
        if code != MULTIHASH_IDENTITY {
            return Err(IdentityError::PeerIdWithoutKey);
        }
        let len = cur.varint()?;
        let rest = cur.rest();
        match usize::try_from(len) {
            Ok(len) if len == rest.len() => checked(&decode_protobuf_key(rest)?),
            Ok(len) if len < rest.len() => Err(IdentityError::TrailingBytes),
            _ => Err(IdentityError::Malformed),
        }
    }

    fn parse_did_key(rest: &str, checked: &CheckBytes<'_>) -> Result<Self, IdentityError> {
        let Some(b58) = rest.strip_prefix('z') else {
            return Err(IdentityError::UnsupportedBase);
        };
        let bytes = multibase::Base::Base58Btc
            .decode(b58)
            .map_err(|_| IdentityError::BadCharacters)?;
        let mut cur = Cursor::new(&bytes);
        match cur.varint()? {
            MULTICODEC_ED25519_PUB => {}
            MULTICODEC_ED25519_PRIV => return Err(IdentityError::PrivateKey),
            _ => return Err(IdentityError::UnsupportedKeyType),
        }
        let key = cur.rest();
        match key.len() {
            32 => {}
            64 => return Err(IdentityError::PrivateKey),
            n if n > 32 => return Err(IdentityError::TrailingBytes),
            _ => return Err(IdentityError::WrongLength),
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(key);
        checked(&k)
    }
}

/// The point checks of decoded key bytes, as [`Identity::from_bytes`] does them.
type CheckBytes<'a> = dyn Fn(&[u8; 32]) -> Result<Identity, IdentityError> + 'a;

/// A bounded cache of the keys that passed [`Identity::from_bytes`]: parsing a
/// key seen before skips its point decompression and torsion check (most of the
/// cost of a parse, as much as a signature check), and nothing else. Every other
/// check of [`Identity::parse`] (spelling, encoding, canonical form) runs each
/// time, and a key that failed is never remembered, so a parse through the cache
/// accepts and refuses exactly what [`Identity::parse`] does.
///
/// The cache holds at most its capacity of keys (about 200 bytes each), evicting
/// by a scan-resistant policy (S3-FIFO): a flood of new keys does not push out
/// the ones that keep coming back.
pub struct IdentityCache {
    keys: quick_cache::sync::Cache<[u8; 32], Identity>,
}

impl IdentityCache {
    pub fn new(capacity: usize) -> Self {
        IdentityCache {
            keys: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// [`Identity::parse`], remembering the keys that pass.
    pub fn parse(&self, input: &str) -> Result<Identity, IdentityError> {
        Identity::parse_with(input, &|bytes| {
            if let Some(known) = self.keys.get(bytes) {
                return Ok(known);
            }
            let identity = Identity::from_bytes(bytes)?;
            self.keys.insert(*bytes, identity);
            Ok(identity)
        })
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Decodes a libp2p `PublicKey` protobuf message strictly: field 1 (varint key type)
/// and field 2 (bytes), each exactly once, nothing else.
fn decode_protobuf_key(bytes: &[u8]) -> Result<[u8; 32], IdentityError> {
    let mut cur = Cursor::new(bytes);
    let mut key_type: Option<u64> = None;
    let mut data: Option<&[u8]> = None;
    while !cur.is_empty() {
        let tag = cur.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 0) => {
                if key_type.replace(cur.varint()?).is_some() {
                    return Err(IdentityError::DuplicateField);
                }
            }
            (2, 2) => {
                let len = usize::try_from(cur.varint()?).map_err(|_| IdentityError::Malformed)?;
                let field = cur.take(len)?;
                if data.replace(field).is_some() {
                    return Err(IdentityError::DuplicateField);
                }
            }
            // Field numbers 1 and 2 with another wire type are malformed, not unknown.
            (1, _) | (2, _) => return Err(IdentityError::Malformed),
            _ => return Err(IdentityError::UnknownField),
        }
    }
    let (Some(key_type), Some(data)) = (key_type, data) else {
        return Err(IdentityError::MissingField);
    };
    if key_type != KEY_TYPE_ED25519 {
        return Err(IdentityError::UnsupportedKeyType);
    }
    match data.len() {
        32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(data);
            Ok(k)
        }
        // libp2p's PrivateKey message has the same shape with the 64-byte keypair.
        64 => Err(IdentityError::PrivateKey),
        _ => Err(IdentityError::WrongLength),
    }
}

/// A bounds-checked reader over untrusted bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], IdentityError> {
        if n > self.bytes.len() {
            return Err(IdentityError::WrongLength);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// An unsigned LEB128 varint of at most 9 bytes (enough for every value used here).
    fn varint(&mut self) -> Result<u64, IdentityError> {
        let mut value: u64 = 0;
        for i in 0..9 {
            let (&b, tail) = self.bytes.split_first().ok_or(IdentityError::Malformed)?;
            self.bytes = tail;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(IdentityError::Malformed)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&multibase::encode(
            multibase::Base::Base32Lower,
            self.to_protobuf(),
        ))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

impl FromStr for Identity {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Identity::parse(s)
    }
}

impl From<&ed25519_dalek::SigningKey> for Identity {
    /// A key we generated ourselves is always prime-order, so no checks are needed.
    fn from(sk: &ed25519_dalek::SigningKey) -> Self {
        Identity {
            key: sk.verifying_key(),
        }
    }
}

/// Whether `[ℓ]P` is the identity, i.e. `P` has no torsion component. The same
/// answer as `EdwardsPoint::is_torsion_free`, computed as `[ℓ-1]P + P` with the
/// variable-time multiplication (the point is a public key, nothing secret): a
/// quarter cheaper, and this check is most of the cost of parsing an identity.
fn torsion_free(point: &EdwardsPoint) -> bool {
    let l_minus_one = -Scalar::ONE;
    (EdwardsPoint::vartime_double_scalar_mul_basepoint(&l_minus_one, point, &Scalar::ZERO) + point)
        .is_identity()
}

#[cfg(test)]
mod tests;
