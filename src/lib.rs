//! keygate: identity tokens for users who hold their own Ed25519 keys.
//!
//! A user proves who they are by signing a server challenge with a key that never
//! leaves their device; keygate verifies the signature strictly and issues a
//! short-lived EdDSA access token bound to a session.
//!
//! The protocol modules ([`identity`], [`challenge`], [`token`], [`apikey`],
//! [`session`]) are pure: no IO, no clock, no RNG inside; time and randomness come
//! in as arguments. The servers are built around them.
//!
//! ```
//! use keygate::{challenge, identity::Identity};
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
pub mod admin;
pub mod apikey;
pub mod bench;
pub mod challenge;
pub mod client;
pub mod error;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod identity;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod provider;
pub mod server;
pub mod session;
pub mod signin;
pub mod store;
pub mod time;
pub mod token;

pub use error::Error;
pub use identity::Identity;
