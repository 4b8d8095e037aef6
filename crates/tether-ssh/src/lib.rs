//! tether-ssh
