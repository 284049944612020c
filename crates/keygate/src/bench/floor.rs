//! The crypto floor: what one sign-in must cost the server however well the rest
//! is written. One strict Ed25519 verification of the signed challenge and one
//! token mint (an Ed25519 signature over the JWS), timed in this process on one
//! thread, in CPU time.

use std::hint::black_box;
use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};

use super::procfs;
use crate::challenge::{self, NonceKey};
use crate::identity::Identity;
use crate::session;
use crate::token::{AccessClaims, TokenSigner};

/// Seconds of CPU per operation.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub verify: f64,
    pub mint: f64,
    /// [`Identity::parse`] of a canonical identity: not part of the floor, but
    /// what the server must add once per sign-in (twice in the HTTP flow).
    pub parse: f64,
    /// Whether the figures are CPU time (else wall time: no `/proc`).
    pub cpu_time: bool,
}

impl Floor {
    /// One sign-in's worth: a verification and a mint.
    pub fn per_sign_in(&self) -> f64 {
        self.verify + self.mint
    }
}

/// Measures on the calling thread, spending about `budget` seconds on each of
/// the two operations. Inputs have the sizes of a real sign-in.
pub fn measure(budget: f64) -> Result<Floor, String> {
    let mut rng = crate::entropy::os_rng();
    let user = SigningKey::generate(&mut rng);
    let identity = Identity::from(&user);
    let app = crate::apikey::generate(&mut rng).id;
    let issued = challenge::issue(
        &NonceKey::generate(&mut rng),
        &app,
        challenge::Flow::HubWs,
        "http://127.0.0.1:8080",
        &identity,
        1_795_430_809,
        60,
        [7; 16],
    )
    .map_err(|e| e.to_string())?;
    let sig = user.sign(issued.text.as_bytes());
    let signer = TokenSigner::new(SigningKey::generate(&mut rng));
    let claims = AccessClaims {
        iss: "http://localhost:8080".into(),
        sub: identity.to_string(),
        aud: app,
        iat: 1_795_430_809,
        nbf: 1_795_430_809,
        exp: 1_795_434_409,
        jti: session::random_id(&mut rng),
        sid: session::random_id(&mut rng),
        scope: String::new(),
        client_id: None,
        role: None,
        acct: None,
        acr: None,
        amr: None,
        cnf: None,
    };
    let (verify, cpu_a) = per_op(budget, || {
        black_box(identity.verify_strict(black_box(issued.text.as_bytes()), black_box(&sig)));
    });
    let (mint, cpu_b) = per_op(budget, || {
        black_box(signer.mint(black_box(&claims)));
    });
    let text = identity.to_string();
    let (parse, cpu_c) = per_op(budget / 2.0, || {
        black_box(Identity::parse(black_box(&text)).is_ok());
    });
    Ok(Floor {
        verify,
        mint,
        parse,
        cpu_time: cpu_a && cpu_b && cpu_c,
    })
}

/// Seconds per call of `f`, in thread CPU time when `/proc` has it (the counters
/// tick every 10 ms, so `budget` should be a second or more).
fn per_op(budget: f64, mut f: impl FnMut()) -> (f64, bool) {
    for _ in 0..256 {
        f();
    }
    let (c0, t0) = (procfs::thread_cpu(), Instant::now());
    let mut n = 0u64;
    loop {
        for _ in 0..256 {
            f();
        }
        n += 256;
        let spent = match (c0, procfs::thread_cpu()) {
            (Some(a), Some(b)) => b - a,
            _ => t0.elapsed().as_secs_f64(),
        };
        if spent >= budget {
            let cpu = c0.is_some();
            return (spent / n as f64, cpu);
        }
    }
}
