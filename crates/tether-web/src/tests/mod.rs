//! Crate tests that need the crate's internals (sealing cookies, CSRF tokens) to
//! forge browser state: handlers through `Router::oneshot` with the memory store,
//! the OIDC callback against a scripted IdP, and the full login on a loopback port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod add_key;
mod callback;
mod console;
mod handlers;
mod login;
mod recordings;
pub(crate) mod support;
