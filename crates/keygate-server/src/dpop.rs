//! DPoP where keygate's services meet requests (docs/dpop.md): the replay cache
//! and nonces one verifier keeps, and the checks of a proof that goes with a
//! sign-in (the key must be the identity's) or with a bound token (the key must be
//! the token's `cnf.jkt`). The proof itself is checked by `keygate_core::dpop`.

use std::sync::Mutex;

use keygate_core::dpop::{self, DpopError, Expect, Keys, NonceKey, Proof, ReplayCache};

use crate::error::Error;
use crate::http::Credential;
use crate::time::UnixTime;

/// One verifier's DPoP state: the `jti`s seen (bounded) and, when the operator
/// wants them, the key of its nonces.
pub struct DpopGuard {
    seen: Mutex<ReplayCache>,
    nonces: Option<NonceKey>,
}

impl DpopGuard {
    pub fn new(capacity: usize, nonce_secret: Option<[u8; 32]>) -> Self {
        DpopGuard {
            seen: Mutex::new(ReplayCache::new(capacity)),
            nonces: nonce_secret.map(NonceKey::new),
        }
    }

    /// A fresh nonce, when this verifier asks for them.
    pub fn nonce(&self, now: UnixTime) -> Option<String> {
        self.nonces.as_ref().map(|n| n.issue(now))
    }

    /// Whether proofs must carry this verifier's nonce.
    pub fn wants_nonces(&self) -> bool {
        self.nonces.is_some()
    }

    /// Checks `proof` for a request `htm` to one of `htu`, records its `jti`, and
    /// returns it. `at_issue` picks the status of a refusal (400 where a token is
    /// issued, 401 where one is used).
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        proof: Option<&str>,
        htm: &str,
        htu: &[&str],
        token: Option<&str>,
        keys: Keys,
        now: UnixTime,
        at_issue: bool,
    ) -> Result<Proof, Error> {
        let refuse = |error: DpopError| match error {
            DpopError::Busy => Error::RateLimited { retry_after: 1 },
            DpopError::UseNonce => Error::UseDpopNonce {
                nonce: self
                    .nonces
                    .as_ref()
                    .map_or_else(String::new, |n| n.issue(now)),
                at_issue,
            },
            error => Error::Dpop { error, at_issue },
        };
        let proof = proof.ok_or(refuse(DpopError::Missing))?;
        let expect = Expect {
            htm,
            htu,
            token,
            keys,
            nonces: self.nonces.as_ref(),
        };
        let checked = dpop::verify(proof, &expect, now).map_err(|e| {
            tracing::debug!(reason = ?e, "DPoP proof refused");
            refuse(e)
        })?;
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&checked, now)
            .map_err(refuse)?;
        Ok(checked)
    }

    /// Checks the proof that goes with the bound token `token` (whose `cnf.jkt` is
    /// `jkt`) on a request presented as `cred`, sent to one of `htu`.
    pub fn check_use(
        &self,
        cred: &Credential<'_>,
        token: &str,
        jkt: &str,
        htu: &[&str],
        now: UnixTime,
    ) -> Result<(), Error> {
        if cred.proofs_repeated {
            return Err(Error::Dpop {
                error: DpopError::Malformed,
                at_issue: false,
            });
        }
        let proof = self.check(
            cred.proof,
            cred.method,
            htu,
            Some(token),
            Keys::Any,
            now,
            false,
        )?;
        if proof.jkt != jkt {
            return Err(Error::Dpop {
                error: DpopError::WrongKey,
                at_issue: false,
            });
        }
        Ok(())
    }
}

/// `<origin><path>` for each origin: the URLs a request to `path` may name.
pub fn urls(origins: &[String], path: &str) -> Vec<String> {
    origins.iter().map(|o| format!("{o}{path}")).collect()
}

/// The origin (`scheme://host[:port]`) of a URL, if it has one.
pub fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    match u.origin() {
        url::Origin::Tuple(..) => Some(u.origin().ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}
