//! Accounts and second factors, the protocol part (no IO, no clock, no RNG).
//!
//! - **Link and step-up challenges**: texts a key signs to join an account or to
//!   serve as another session's second factor. Like sign-in challenges
//!   ([`crate::challenge`]) they carry a stateless MAC'd nonce (random ‖ HMAC of
//!   every field), are audience-bound and single-use (the store records the nonce
//!   at redemption); their first line and MAC domain differ, so no text of one kind
//!   verifies as another.
//! - **TOTP** (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step) through `totp-rs`.
//! - **Assurance levels**: the `acr`/`amr` claims a session's state maps to.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

use crate::challenge::{self, ChallengeError, IssuedChallenge, NonceKey};
use crate::identity::Identity;
use crate::time::{UnixTime, format_rfc3339, parse_rfc3339};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How long a step-up (an `aal1` session raised to `aal2`) lasts.
pub const STEP_UP_TTL: i64 = 15 * 60;
/// Prefix of account ids.
pub const ACCOUNT_PREFIX: &str = "acct_";
/// Longest key label.
pub const MAX_LABEL_LEN: usize = 64;
/// TOTP step, in seconds.
pub const TOTP_STEP: u64 = 30;
/// Bytes of a TOTP secret (160 bits, RFC 4226's recommendation).
pub const TOTP_SECRET_LEN: usize = 20;
/// The label that makes a linked key the account's recovery key: it cannot sign
/// in or raise a session; it only authorizes, once, linking a new device.
pub const RECOVERY_LABEL: &str = "recovery";

/// The kinds of signed statement beside the sign-in challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `account`, `identity` (the signed-in key), `new-identity` (the key to add).
    Link,
    /// `account`, `identity` (the second key), `session` (the session it raises).
    StepUp,
    /// `account`, `identity` (the account's recovery key), `new-identity` (the
    /// signed-in key that joins the account), `session` (its session, raised).
    Recovery,
}

impl Kind {
    fn header(self) -> &'static str {
        match self {
            Kind::Link => "keygate link challenge v1",
            Kind::StepUp => "keygate step-up challenge v1",
            Kind::Recovery => "keygate recovery challenge v1",
        }
    }

    fn labels(self) -> &'static [&'static str] {
        match self {
            Kind::Link => &["audience", "account", "identity", "new-identity"],
            Kind::StepUp => &["audience", "account", "identity", "session"],
            Kind::Recovery => &["audience", "account", "identity", "new-identity", "session"],
        }
    }
}

/// A link or step-up challenge that this Hub issued and that has not expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The field values, in the order of the kind's labels (audience first).
    pub values: Vec<String>,
    pub nonce_id: [u8; 16],
    pub expires_at: UnixTime,
}

impl Statement {
    /// The value of field `i` (0 is the audience).
    pub fn value(&self, i: usize) -> &str {
        self.values.get(i).map_or("", String::as_str)
    }
}

fn tag(
    key: &NonceKey,
    kind: Kind,
    values: &[&str],
    times: [UnixTime; 2],
    random: &[u8],
) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(kind.header().as_bytes());
    mac.update(b"\0");
    for v in values {
        mac.update(&(v.len() as u32).to_be_bytes());
        mac.update(v.as_bytes());
    }
    for t in times {
        mac.update(&t.to_be_bytes());
    }
    mac.update(random);
    mac.finalize().into_bytes().into()
}

fn render(kind: Kind, values: &[&str], nonce: &str, times: [UnixTime; 2]) -> String {
    let mut s = String::from(kind.header());
    for (label, value) in kind.labels().iter().zip(values) {
        s.push_str(&format!("\n{label}: {value}"));
    }
    s.push_str(&format!(
        "\nnonce: {nonce}\nissued-at: {}\nexpires-at: {}",
        format_rfc3339(times[0]),
        format_rfc3339(times[1])
    ));
    s
}

/// Issues a statement of `kind` with `values` (one per label, audience first).
/// `random` must come from a CSPRNG.
pub fn issue(
    key: &NonceKey,
    kind: Kind,
    values: &[&str],
    now: UnixTime,
    ttl: i64,
    random: [u8; 16],
) -> Result<IssuedChallenge, ChallengeError> {
    if values.len() != kind.labels().len() || !values.iter().all(|v| challenge::valid_audience(v)) {
        return Err(ChallengeError::BadAudience);
    }
    let times = [now, now + ttl.clamp(1, challenge::MAX_TTL)];
    let t = tag(key, kind, values, times, &random);
    let mut raw = [0u8; 32];
    raw[..16].copy_from_slice(&random);
    raw[16..].copy_from_slice(&t[..16]);
    Ok(IssuedChallenge {
        text: render(kind, values, &URL_SAFE_NO_PAD.encode(raw), times),
        expires_at: times[1],
    })
}

/// Checks that `text` is a statement of `kind` this Hub issued and that it has not
/// expired. Signatures are the caller's to check ([`verify_signature`]).
pub fn verify(
    key: &NonceKey,
    kind: Kind,
    text: &str,
    now: UnixTime,
) -> Result<Statement, ChallengeError> {
    if text.len() > challenge::MAX_TEXT_LEN {
        return Err(ChallengeError::Malformed);
    }
    let mut lines = text.split('\n');
    if lines.next() != Some(kind.header()) {
        return Err(ChallengeError::Malformed);
    }
    let mut field = |label: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(label))
            .and_then(|l| l.strip_prefix(": "))
            .ok_or(ChallengeError::Malformed)
    };
    let mut values = Vec::with_capacity(kind.labels().len());
    for label in kind.labels() {
        values.push(field(label)?);
    }
    let nonce = field("nonce")?;
    let issued = parse_rfc3339(field("issued-at")?).ok_or(ChallengeError::Malformed)?;
    let expires = parse_rfc3339(field("expires-at")?).ok_or(ChallengeError::Malformed)?;
    if lines.next().is_some() || render(kind, &values, nonce, [issued, expires]) != text {
        return Err(ChallengeError::Malformed);
    }
    let mut raw = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
        Ok(32) if nonce.len() == 43 => {}
        _ => return Err(ChallengeError::NotIssuedHere),
    }
    let expected = tag(key, kind, &values, [issued, expires], &raw[..16]);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..16], &raw[16..])) {
        return Err(ChallengeError::NotIssuedHere);
    }
    if now >= expires {
        return Err(ChallengeError::Expired);
    }
    let mut nonce_id = [0u8; 16];
    nonce_id.copy_from_slice(&raw[..16]);
    Ok(Statement {
        values: values.into_iter().map(str::to_owned).collect(),
        nonce_id,
        expires_at: expires,
    })
}

/// Checks a strict Ed25519 signature by `identity` over the exact text.
pub fn verify_signature(identity: &Identity, text: &str, sig: &str) -> Result<(), ChallengeError> {
    let sig = challenge::decode_signature(sig)?;
    if identity.verify_strict(text.as_bytes(), &sig) {
        Ok(())
    } else {
        Err(ChallengeError::BadSignature)
    }
}

/// A fresh account id: `acct_` and 128 random bits.
pub fn new_account_id<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> String {
    format!("{ACCOUNT_PREFIX}{}", crate::session::random_id(rng))
}

/// Whether `s` has the shape of an account id.
pub fn valid_account_id(s: &str) -> bool {
    s.strip_prefix(ACCOUNT_PREFIX)
        .is_some_and(crate::session::valid_id)
}

/// A key label: 1 to 64 printable characters, no control characters.
pub fn valid_label(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= MAX_LABEL_LEN && !s.chars().any(char::is_control)
}

/// The TOTP generator for a secret (RFC 6238 defaults every authenticator app
/// supports). `issuer` and `account` only label the `otpauth://` URI.
pub fn totp(secret: &[u8], issuer: &str, account: &str) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .with_step_duration(TOTP_STEP)
        .with_skew(1)
        .with_issuer(Some(issuer.replace(':', "")))
        .with_account_name(account.replace(':', ""))
        .build_noncompliant()
}

/// The step a TOTP code is valid for at `now` (current step ±1), if any. The code
/// must be exactly six ASCII digits.
pub fn check_totp(secret: &[u8], code: &str, now: UnixTime) -> Option<i64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = totp(secret, "", "").check(code, u64::try_from(now).ok()?)?;
    i64::try_from(step).ok()
}

/// The code for `now` (tests and the CLI's own checks).
pub fn totp_code(secret: &[u8], now: UnixTime) -> String {
    totp(secret, "", "")
        .generate(u64::try_from(now).unwrap_or(0))
        .to_string()
}

/// The second factor a session was raised with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// A signature by another key of the same account.
    Key,
    /// A TOTP code.
    Totp,
    /// The account's recovery key, authorizing this key's joining the account.
    Recovery,
}

impl Factor {
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Key => "key",
            Factor::Totp => "totp",
            Factor::Recovery => "recovery",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Factor::Key),
            "totp" => Some(Factor::Totp),
            "recovery" => Some(Factor::Recovery),
            _ => None,
        }
    }
}

/// What a session's token asserts about how its holder authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assurance {
    /// Signed in with one key; the app requires a second factor first.
    Pending,
    /// One key.
    Aal1,
    /// One key and a second factor, until `until`.
    Aal2 { factor: Factor, until: UnixTime },
    /// Minted by a development key without any signature (docs/dev-mode.md).
    Dev,
}

/// Whether a token was minted in development mode (`acr` or `amr` says `dev`):
/// verifiers refuse such tokens unless configured to accept them.
pub fn is_dev_token(claims: &crate::token::AccessClaims) -> bool {
    claims.acr.as_deref() == Some(Assurance::Dev.acr())
        || claims
            .amr
            .as_ref()
            .is_some_and(|m| m.iter().any(|x| x == "dev"))
}

/// Why a verifier that does not accept development tokens refused one.
pub const DEV_TOKEN_REFUSED: &str = "development tokens are not accepted here (docs/dev-mode.md)";

impl Assurance {
    /// `acr` claim.
    pub fn acr(self) -> &'static str {
        match self {
            Assurance::Pending | Assurance::Aal1 => "aal1",
            Assurance::Aal2 { .. } => "aal2",
            Assurance::Dev => "dev",
        }
    }

    /// `amr` claim (RFC 8176): `swk` is a software-held key (browser WebCrypto,
    /// key file); `otp` a one-time code; `mfa` that two factors were shown.
    pub fn amr(self) -> Vec<String> {
        let v: &[&str] = match self {
            Assurance::Pending | Assurance::Aal1 => &["swk"],
            Assurance::Aal2 {
                factor: Factor::Totp,
                ..
            } => &["swk", "otp", "mfa"],
            Assurance::Aal2 {
                factor: Factor::Key | Factor::Recovery,
                ..
            } => &["swk", "mfa"],
            Assurance::Dev => &["dev"],
        };
        v.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NOW: UnixTime = 1_795_430_809;

    fn key() -> NonceKey {
        NonceKey::from_bytes([3; 32])
    }

    #[test]
    fn link_statement_round_trip_and_tampering() {
        let a = Identity::from(&SigningKey::from_bytes(&[1; 32])).to_string();
        let b = Identity::from(&SigningKey::from_bytes(&[2; 32])).to_string();
        let values = ["kgk_app", "acct_AAAAAAAAAAAAAAAAAAAAAA", &a, &b];
        let c = issue(&key(), Kind::Link, &values, NOW, 300, [9; 16]).unwrap();
        assert!(
            c.text
                .starts_with("keygate link challenge v1\naudience: kgk_app\n")
        );
        let s = verify(&key(), Kind::Link, &c.text, NOW + 10).unwrap();
        assert_eq!(s.values, values);
        assert_eq!(s.nonce_id, [9; 16]);
        assert_eq!(
            verify(&key(), Kind::Link, &c.text, NOW + 300),
            Err(ChallengeError::Expired)
        );
        // Not a step-up text, not another Hub's, not with a field swapped.
        assert_eq!(
            verify(&key(), Kind::StepUp, &c.text, NOW),
            Err(ChallengeError::Malformed)
        );
        assert_eq!(
            verify(&NonceKey::from_bytes([4; 32]), Kind::Link, &c.text, NOW),
            Err(ChallengeError::NotIssuedHere)
        );
        let swapped = c.text.replace(&b, &a);
        assert_eq!(
            verify(&key(), Kind::Link, &swapped, NOW),
            Err(ChallengeError::NotIssuedHere)
        );
        assert_eq!(
            verify(&key(), Kind::Link, &format!("{}\n", c.text), NOW),
            Err(ChallengeError::Malformed)
        );
        // A sign-in challenge is never a link challenge.
        let signin = challenge::issue(
            &key(),
            "kgk_app",
            challenge::Flow::HubHttp,
            "kgk_app",
            &Identity::parse(&a).unwrap(),
            NOW,
            60,
            [9; 16],
        )
        .unwrap();
        assert_eq!(
            verify(&key(), Kind::Link, &signin.text, NOW),
            Err(ChallengeError::Malformed)
        );
    }

    #[test]
    fn a_recovery_statement_is_no_link_or_step_up_statement() {
        let a = Identity::from(&SigningKey::from_bytes(&[1; 32])).to_string();
        let b = Identity::from(&SigningKey::from_bytes(&[2; 32])).to_string();
        let values = ["kgk_app", "acct_AAAAAAAAAAAAAAAAAAAAAA", &a, &b, "sid1"];
        let c = issue(&key(), Kind::Recovery, &values, NOW, 300, [5; 16]).unwrap();
        assert!(c.text.starts_with("keygate recovery challenge v1\n"));
        assert_eq!(c.text.lines().count(), 9);
        assert_eq!(
            verify(&key(), Kind::Recovery, &c.text, NOW).unwrap().values,
            values
        );
        for other in [Kind::Link, Kind::StepUp] {
            assert_eq!(
                verify(&key(), other, &c.text, NOW),
                Err(ChallengeError::Malformed)
            );
        }
        // The link text of the same keys, relabelled, is not one either.
        let link = issue(&key(), Kind::Link, &values[..4], NOW, 300, [5; 16]).unwrap();
        let relabelled = link.text.replace("link challenge", "recovery challenge");
        assert!(verify(&key(), Kind::Recovery, &relabelled, NOW).is_err());
        assert_eq!(
            Assurance::Aal2 {
                factor: Factor::Recovery,
                until: NOW
            }
            .amr(),
            ["swk", "mfa"]
        );
        assert_eq!(Factor::parse("recovery"), Some(Factor::Recovery));
    }

    #[test]
    fn totp_matches_rfc6238_vectors() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", 8 digits there;
        // the last six digits are the 6-digit code.
        let secret = b"12345678901234567890";
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(totp_code(secret, t), code);
            assert_eq!(check_totp(secret, code, t), Some(t / 30));
        }
        assert_eq!(
            check_totp(secret, "287082", 59 + 30),
            Some(1),
            "one step late"
        );
        assert_eq!(
            check_totp(secret, "287082", 59 + 90),
            None,
            "three steps late"
        );
        for bad in ["", "28708", "2870822", "28708a", "２８７０８２"] {
            assert_eq!(check_totp(secret, bad, 59), None, "{bad:?}");
        }
        let uri = totp(secret, "keygate", "acct_x").to_url().unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
    }

    #[test]
    fn claims_of_each_level() {
        assert_eq!(Assurance::Pending.acr(), "aal1");
        let two = Assurance::Aal2 {
            factor: Factor::Totp,
            until: NOW,
        };
        assert_eq!(two.acr(), "aal2");
        assert_eq!(two.amr(), ["swk", "otp", "mfa"]);
        assert!(valid_account_id(&new_account_id(
            &mut crate::entropy::os_rng()
        )));
        assert!(!valid_account_id("acct_../x"));
        assert!(valid_label("my laptop") && !valid_label("a\nb") && !valid_label(" "));
    }
}
