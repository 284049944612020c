//! End-to-end tests: real servers on 127.0.0.1:0, real clients, real SQLite files
//! (or, with `KEYGATE_TEST_POSTGRES`, a real PostgreSQL server: see support.rs).
//! One test binary with modules inside keeps link time down.

mod support;

mod accounts;
mod audit;
mod dev_mode;
mod dpop;
mod errors;
mod examples;
mod flows;
mod gateway;
mod hardening;
mod lifecycle;
mod mux;
mod oidc;
mod ops;
mod scale;
mod split;
mod tenancy;
mod wire;
