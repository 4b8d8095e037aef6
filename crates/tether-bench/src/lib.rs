//! Benchmarks for tether that drive the real, built `tether` binary from the outside,
//! exactly as users do: the web sign-in through the development IdP, SSH clients
//! (russh, in process) that authenticate through publickey + keyboard-interactive and
//! the Verify page, the revoke button's POST, and the real OpenSSH client against
//! throwaway OpenSSH servers (`revocation`, `throughput` and `recording` in `src/bin/`), and load
//! runs with many connections at once (`flood`, `idle`, `churn`): many loopback
//! source addresses, raised descriptor limits, `/proc` memory readings, and a light
//! russh upstream server in its own process.
//!
//! A development tool: nothing in the product may depend on this crate, and it talks
//! to tether only over its public surfaces (HTTP, SSH, the command line). Benchmarks
//! print figures; they never assert on timings (STYLE.md habit 14).

// A dev tool that stops with a message on any surprise: unwrap/expect/panic and
// indexing are allowed here, unlike in the product crates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod flood;
pub mod gateway;
pub mod html;
pub mod loopback;
pub mod machine;
pub mod memory;
pub mod openssh;
pub mod procstat;
pub mod rig;
pub mod sshc;
pub mod stats;
pub mod sysenv;
pub mod upstream;
pub mod web;
