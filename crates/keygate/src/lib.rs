//! keygate: identity tokens for users who hold their own Ed25519 keys.
//!
//! A user proves who they are by signing a server challenge with a key that never
//! leaves their device; keygate verifies the signature strictly and issues a
//! short-lived EdDSA access token bound to a session.
//!
//! This crate is the `keygate` binary and a facade over the layered crates, under
//! the module names they have always had:
//!
//! - [`proto`] (`keygate-proto`): wire types;
//! - [`identity`], [`challenge`], [`token`], [`apikey`], [`session`], [`account`],
//!   [`time`], [`entropy`], [`error`] (`keygate-core`): the protocol, pure;
//! - [`client`] (`keygate-client`): Hub client, user sign-in, offline verifier;
//! - [`hub`], [`provider`], [`gateway`], [`store`], … (`keygate-server`).
//!
//! A program that only verifies tokens or signs users in should depend on
//! `keygate-client` alone.

pub use keygate_client as client;
pub use keygate_core::{Error, Identity};
pub use keygate_core::{
    account, apikey, challenge, dpop, entropy, error, identity, oauth, session, time, token,
};
pub use keygate_proto as proto;
pub use keygate_server::{
    admin, audit, gateway, http, hub, limits, listener, logging, metrics, openapi, provider,
    server, signin, store,
};

pub mod bench;
