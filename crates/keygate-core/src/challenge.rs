//! Sign-in challenges: the text a user signs, and the stateless nonce inside it.
//!
//! The nonce is `base64url(random(16) ‖ HMAC-SHA256(nonce key, binding)[..16])`,
//! where the binding covers the app (API key id), the [`Flow`] that issued it,
//! audience, identity and both times. The flow is in the MAC only, not in the
//! text: a challenge handed out by one flow is redeemed by that flow alone.
//! The Hub can therefore tell that it issued a returned challenge, to whom and until
//! when, without storing anything per challenge: unanswered challenges cost nothing.
//! Single use is the store's job; [`VerifiedChallenge::nonce_id`] is what it records.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signature;
use hmac::{KeyInit, Mac};

use crate::identity::Identity;
use crate::time::{UnixTime, format_rfc3339, parse_rfc3339};
pub use keygate_proto::sig::{WireSignature, de_optional_signature, de_signature};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const HEADER: &str = "keygate sign-in challenge v1";
/// Default lifetime of a challenge.
pub const DEFAULT_TTL: i64 = 60;
/// Longest lifetime a challenge may be given.
pub const MAX_TTL: i64 = 600;
/// Longest challenge text we look at (an honest one is well under 400 bytes).
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest audience (an origin or an API key id).
pub const MAX_AUDIENCE_LEN: usize = 256;

const NONCE_RANDOM_LEN: usize = 16;
const NONCE_TAG_LEN: usize = 16;
const NONCE_LEN: usize = NONCE_RANDOM_LEN + NONCE_TAG_LEN;
const MAC_DOMAIN: &[u8] = b"keygate challenge nonce v1\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("challenge is not in the keygate v1 format")]
    Malformed,
    #[error("audience must be 1 to 256 visible ASCII characters")]
    BadAudience,
    /// Not issued by this server, for this app and flow. Told to the client as a
    /// bad signature (same code, same message): which of the two failed is no
    /// business of someone who forged a nonce.
    #[error("signature does not verify for this identity and challenge")]
    NotIssuedHere,
    #[error("challenge was issued for another identity")]
    WrongIdentity,
    #[error("challenge was issued for another audience")]
    WrongAudience,
    #[error("challenge has expired; ask for a new one")]
    Expired,
    #[error("signature must be 64 bytes in base64url without padding")]
    MalformedSignature,
    #[error("signature does not verify for this identity and challenge")]
    BadSignature,
}

impl ChallengeError {
    /// The stable error code sent to clients.
    pub fn code(self) -> &'static str {
        match self {
            ChallengeError::Expired => "challenge_expired",
            ChallengeError::MalformedSignature
            | ChallengeError::BadSignature
            | ChallengeError::NotIssuedHere => "invalid_signature",
            ChallengeError::BadAudience => "bad_request",
            _ => "invalid_challenge",
        }
    }
}

/// The sign-in flow a challenge belongs to. It is bound into the nonce MAC, so a
/// challenge issued on one flow (say `/ws/userauth`) is refused by another (say
/// `POST /api/token`). The text the user signs does not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The Provider's `/ws/userauth`.
    ProviderWs,
    /// The Provider's `GET`/`POST /api/token`.
    ProviderHttp,
    /// The Hub's `/v1/ws/token`.
    HubWs,
    /// The Hub's `POST /v1/challenge` and `POST /v1/token`.
    HubHttp,
    /// The OpenID Provider's sign-in page and device approval (`/oauth/*`).
    Oidc,
}

impl Flow {
    fn tag(self) -> u8 {
        match self {
            Flow::ProviderWs => 1,
            Flow::ProviderHttp => 2,
            Flow::HubWs => 3,
            Flow::HubHttp => 4,
            Flow::Oidc => 5,
        }
    }
}

/// The server secret that keys challenge nonces.
#[derive(Clone)]
pub struct NonceKey([u8; 32]);

impl NonceKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NonceKey(bytes)
    }

    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        NonceKey(k)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn tag(&self, random: &[u8], app: &str, flow: Flow, challenge: &Fields<'_>) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(MAC_DOMAIN);
        mac.update(&[flow.tag()]);
        for part in [app, challenge.audience, challenge.identity] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(&challenge.issued_at.to_be_bytes());
        mac.update(&challenge.expires_at.to_be_bytes());
        mac.update(random);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// A challenge as handed to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedChallenge {
    pub text: String,
    pub expires_at: UnixTime,
}

/// A challenge that the server issued, is unexpired, and that the identity signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChallenge {
    /// The random part of the nonce: record it to make the challenge single-use.
    pub nonce_id: [u8; NONCE_RANDOM_LEN],
    pub audience: String,
    pub expires_at: UnixTime,
}

/// The fields of a challenge text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields<'a> {
    audience: &'a str,
    identity: &'a str,
    nonce: &'a str,
    issued_at: UnixTime,
    expires_at: UnixTime,
}

/// Whether `audience` may appear in a challenge: visible ASCII, no spaces, bounded.
pub fn valid_audience(audience: &str) -> bool {
    !audience.is_empty()
        && audience.len() <= MAX_AUDIENCE_LEN
        && audience.bytes().all(|b| b.is_ascii_graphic())
}

/// Issues a challenge for `identity` to sign, bound to the app `app` (API key id),
/// the `flow` and `audience`. `random` must come from a CSPRNG.
#[allow(clippy::too_many_arguments)]
pub fn issue(
    key: &NonceKey,
    app: &str,
    flow: Flow,
    audience: &str,
    identity: &Identity,
    now: UnixTime,
    ttl: i64,
    random: [u8; NONCE_RANDOM_LEN],
) -> Result<IssuedChallenge, ChallengeError> {
    if !valid_audience(audience) {
        return Err(ChallengeError::BadAudience);
    }
    let identity = identity.to_string();
    let expires_at = now + ttl.clamp(1, MAX_TTL);
    let mut fields = Fields {
        audience,
        identity: &identity,
        nonce: "",
        issued_at: now,
        expires_at,
    };
    let tag = key.tag(&random, app, flow, &fields);
    let mut raw = [0u8; NONCE_LEN];
    raw[..NONCE_RANDOM_LEN].copy_from_slice(&random);
    raw[NONCE_RANDOM_LEN..].copy_from_slice(&tag[..NONCE_TAG_LEN]);
    let nonce = URL_SAFE_NO_PAD.encode(raw);
    fields.nonce = &nonce;
    Ok(IssuedChallenge {
        text: render(&fields),
        expires_at,
    })
}

fn render(f: &Fields<'_>) -> String {
    let issued = format_rfc3339(f.issued_at);
    let expires = format_rfc3339(f.expires_at);
    let mut s = String::with_capacity(
        HEADER.len() + f.audience.len() + f.identity.len() + f.nonce.len() + 110,
    );
    s.push_str(HEADER);
    for (label, value) in [
        ("audience: ", f.audience),
        ("identity: ", f.identity),
        ("nonce: ", f.nonce),
        ("issued-at: ", &issued),
        ("expires-at: ", &expires),
    ] {
        s.push('\n');
        s.push_str(label);
        s.push_str(value);
    }
    s
}

/// Parses a challenge text strictly: exactly the six lines of the v1 format, and
/// byte-for-byte what [`issue`] would have rendered for the same fields.
fn parse(text: &str) -> Result<Fields<'_>, ChallengeError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(ChallengeError::Malformed);
    }
    let mut lines = text.split('\n');
    let mut field = |label: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(label))
            .ok_or(ChallengeError::Malformed)
    };
    if !field(HEADER)?.is_empty() {
        return Err(ChallengeError::Malformed);
    }
    let audience = field("audience: ")?;
    let identity = field("identity: ")?;
    let nonce = field("nonce: ")?;
    let issued_at = parse_rfc3339(field("issued-at: ")?).ok_or(ChallengeError::Malformed)?;
    let expires_at = parse_rfc3339(field("expires-at: ")?).ok_or(ChallengeError::Malformed)?;
    if lines.next().is_some() {
        return Err(ChallengeError::Malformed);
    }
    let fields = Fields {
        audience,
        identity,
        nonce,
        issued_at,
        expires_at,
    };
    if render(&fields) != text {
        return Err(ChallengeError::Malformed);
    }
    Ok(fields)
}

/// Decodes a base64url signature strictly (no padding, canonical trailing bits).
pub fn decode_signature(sig: &str) -> Result<Signature, ChallengeError> {
    if sig.len() != 86 {
        return Err(ChallengeError::MalformedSignature);
    }
    let mut bytes = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(sig, &mut bytes) {
        Ok(64) => Ok(Signature::from_bytes(&bytes)),
        _ => Err(ChallengeError::MalformedSignature),
    }
}

/// Checks a returned challenge: that this server issued it for `app` on `flow`,
/// for this identity (and `expected_audience`, when the caller knows it), that it has not
/// expired, and that `signature` is a strict Ed25519 signature of its exact text.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    key: &NonceKey,
    app: &str,
    flow: Flow,
    text: &str,
    identity: &Identity,
    expected_audience: Option<&str>,
    signature: &str,
    now: UnixTime,
) -> Result<VerifiedChallenge, ChallengeError> {
    let fields = parse(text)?;
    let mut raw = [0u8; NONCE_LEN];
    match URL_SAFE_NO_PAD.decode_slice(fields.nonce, &mut raw) {
        Ok(NONCE_LEN) if fields.nonce.len() == 43 => {}
        _ => return Err(ChallengeError::NotIssuedHere),
    }
    let (random, tag) = raw.split_at(NONCE_RANDOM_LEN);
    let expected = key.tag(random, app, flow, &fields);
    // Constant-time comparison of the truncated tag.
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        &expected[..NONCE_TAG_LEN],
        tag,
    )) {
        return Err(ChallengeError::NotIssuedHere);
    }
    if fields.identity != identity.to_string() {
        return Err(ChallengeError::WrongIdentity);
    }
    if expected_audience.is_some_and(|a| a != fields.audience) {
        return Err(ChallengeError::WrongAudience);
    }
    if now >= fields.expires_at {
        return Err(ChallengeError::Expired);
    }
    let sig = decode_signature(signature)?;
    if !identity.verify_strict(text.as_bytes(), &sig) {
        return Err(ChallengeError::BadSignature);
    }
    let mut nonce_id = [0u8; NONCE_RANDOM_LEN];
    nonce_id.copy_from_slice(random);
    Ok(VerifiedChallenge {
        nonce_id,
        audience: fields.audience.to_owned(),
        expires_at: fields.expires_at,
    })
}

/// Checks that a challenge is well-formed and names `audience` and `identity`;
/// returns when it expires. A Provider relaying a signed challenge uses this to
/// check that it was issued for its own origin.
pub fn check_addressed_to(
    text: &str,
    audience: &str,
    identity: &Identity,
) -> Result<UnixTime, ChallengeError> {
    let f = parse(text)?;
    if f.audience != audience {
        return Err(ChallengeError::WrongAudience);
    }
    if f.identity != identity.to_string() {
        return Err(ChallengeError::WrongIdentity);
    }
    Ok(f.expires_at)
}

/// What a client checks before signing: the challenge is well-formed, names the
/// audience it expects and its own identity, and has not expired. This is what
/// stops a phishing site from relaying another site's challenge.
pub fn check_before_signing(
    text: &str,
    expected_audience: &str,
    identity: &Identity,
    now: UnixTime,
) -> Result<(), ChallengeError> {
    if now >= check_addressed_to(text, expected_audience, identity)? {
        return Err(ChallengeError::Expired);
    }
    Ok(())
}

/// Signs a challenge text (client side): base64url of the 64-byte signature.
pub fn sign(key: &ed25519_dalek::SigningKey, text: &str) -> String {
    use ed25519_dalek::Signer;
    URL_SAFE_NO_PAD.encode(key.sign(text.as_bytes()).to_bytes())
}

#[cfg(test)]
mod tests;
