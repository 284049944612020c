//! keygate's servers: the Hub (the token authority and its routes), the Provider
//! (an app backend relaying sign-ins), the gateway (a reverse proxy that checks
//! tokens), the hardened listener they all run on, and the store (SQLite or
//! PostgreSQL).
//!
//! The protocol itself lives in `keygate-core` and the wire types in
//! `keygate-proto`; the Rust client in `keygate-client`. This crate sits above all
//! three, and none of them can import it.

// The protocol modules, under the names the servers have always used.
use keygate_client as client;
use keygate_core::{account, apikey, challenge, error, identity, session, time, token};

pub mod admin;
pub mod audit;
pub mod dpop;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod provider;
pub mod server;
pub mod signin;
pub mod store;

pub use keygate_core::{Error, Identity};
