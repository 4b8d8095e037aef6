//! tether-core: the pure domain of the gateway.
//!
//! Config model and validation, identities, client and identity bindings with their
//! expiry rules, sign-in user codes, SSH username parsing and (later) the policy
//! language. Nothing here performs network or disk I/O beyond reading a string that
//! the caller hands in, and nothing here may depend on tokio, russh, axum or sqlx:
//! the rules must be testable as plain functions of their inputs and a clock.

pub mod audit;
pub mod binding;
pub mod code;
pub mod config;
pub mod connection;
pub mod duration;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod pubkey;
pub mod recording;
pub mod secret;
pub mod sftp;
pub mod time;
pub mod username;

pub use audit::AuditEvent;
pub use binding::{
    BindingDetails, BindingRequest, ClientBinding, IdentityBinding, RequestStatus, Session,
};
pub use code::UserCode;
pub use identity::Identity;
pub use secret::Secret;
pub use time::{Clock, SystemClock, Timestamp};
