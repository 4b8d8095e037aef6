//! tether-ssh
pub mod cert;
pub mod upstream;
