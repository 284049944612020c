//! keygate's protocol: Ed25519 identities, server challenges, EdDSA access tokens,
//! API-key request signatures, sessions and accounts.
//!
//! Every module here is pure: no IO, no clock, no RNG inside; time and randomness
//! come in as arguments (see [`time::Clock`]). The servers (`keygate-server`) and
//! the client (`keygate-client`) are built around them.
//!
//! ```
//! use keygate_core::{challenge, identity::Identity};
//! use ed25519_dalek::SigningKey;
//!
//! let user = SigningKey::from_bytes(&[7; 32]);
//! let id = Identity::from(&user);
//! let key = challenge::NonceKey::from_bytes([1; 32]);
//! let now = 1_795_430_809;
//! let flow = challenge::Flow::HubHttp;
//! let c = challenge::issue(&key, "kgk_app", flow, "http://localhost:8080", &id, now, 60, [9; 16])
//!     .unwrap();
//! let sig = challenge::sign(&user, &c.text);
//! let ok = challenge::verify(&key, "kgk_app", flow, &c.text, &id, None, &sig, now + 5).unwrap();
//! assert_eq!(ok.nonce_id, [9; 16]);
//! ```

pub mod account;
pub mod apikey;
pub mod challenge;
pub mod dpop;
pub mod entropy;
pub mod error;
pub mod identity;
pub mod oauth;
pub mod session;
pub mod time;
pub mod token;

pub use error::Error;
pub use identity::Identity;
