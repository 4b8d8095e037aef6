//! tether-web
