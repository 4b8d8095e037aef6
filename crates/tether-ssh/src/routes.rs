//! Which routes a signed-in user may use, and the `ssh` command that reaches each
//! (the internal CLI's `routes` and `portal`, SPEC §7).
//!
//! A route is listed ([`crate::admission::listable`]) when its policy in force allows
//! the identity and key **for some login**: the `ssh_username*` criteria, which
//! cannot be evaluated without a login, do not hide a route, because the login is
//! the user's to choose on the command line (access itself never skips them). The command shows the login the user connected
//! to the gateway with (`alice` in `ssh alice@gateway routes`); choosing a route in
//! the portal decides with that login, so a login rule can still refuse there.
//!
//! The gateway does not know the host name the client typed, so the command names
//! the host of `authenticate_service_url` (operators usually serve both under one
//! name) and the port this connection reached (the SSH listener's port; `-p` is left
//! out for 22). Pure: no I/O.

use std::fmt::Write as _;

use tether_core::config::Config;

/// Longest route name the listing pads others to (longer names still print whole).
const NAME_COLUMN: usize = 32;
/// Shown when `authenticate_service_url` has no usable host.
const UNKNOWN_HOST: &str = "GATEWAY";

/// Where the printed commands point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Gateway {
    /// Host name (or address) to connect to.
    pub(crate) host: String,
    /// SSH port (`None`: unknown, `-p` left out).
    pub(crate) port: Option<u16>,
}

impl Gateway {
    /// The gateway as seen by a connection that reached `port`.
    pub(crate) fn new(config: &Config, port: Option<u16>) -> Self {
        Gateway {
            host: url_host(&config.authenticate_service_url)
                .unwrap_or_else(|| UNKNOWN_HOST.to_string()),
            port,
        }
    }

    /// `ssh -p 2222 alice@prod@gateway.example.com`.
    pub(crate) fn command(&self, login: &str, route: &str) -> String {
        let port = match self.port {
            Some(p) if p != 22 => format!("-p {p} "),
            _ => String::new(),
        };
        format!(
            "ssh {port}{}@{}@{}",
            printable(login),
            printable(route),
            self.host
        )
    }
}

/// The `routes` listing: one line per route, `name  command`, or the one line
/// telling there is none.
pub(crate) fn listing(names: &[String], gateway: &Gateway, login: &str) -> String {
    if names.is_empty() {
        return "no routes available to you\n".to_string();
    }
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .filter(|&n| n <= NAME_COLUMN)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for name in names {
        let shown = printable(name);
        let _ = writeln!(
            out,
            "{shown:<width$}  {}",
            gateway.command(login, name),
            width = width
        );
    }
    out
}

/// Control characters never reach the terminal.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The host of a URL (`https://user@host:port/path` → `host`; brackets of an IPv6
/// literal dropped).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        hostport.split(':').next().unwrap_or_default()
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    ok.then(|| host.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_name_the_service_host_and_the_port() {
        let mut config = crate::test_config();
        config.authenticate_service_url = "https://auth.example.com".into();
        let gw = Gateway::new(&config, Some(2222));
        assert_eq!(
            gw.command("alice", "prod"),
            "ssh -p 2222 alice@prod@auth.example.com"
        );
        assert_eq!(
            Gateway::new(&config, Some(22)).command("bob", "db"),
            "ssh bob@db@auth.example.com"
        );
        assert_eq!(
            gw.command("a\x1b[2J", "prod"),
            "ssh -p 2222 a?[2J@prod@auth.example.com"
        );
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://auth.example.com").unwrap(),
            "auth.example.com"
        );
        assert_eq!(url_host("http://127.0.0.1:8080/x?y").unwrap(), "127.0.0.1");
        assert_eq!(
            url_host("https://u:p@gw.example.com:443/").unwrap(),
            "gw.example.com"
        );
        assert_eq!(url_host("https://[::1]:8443").unwrap(), "::1");
        assert_eq!(url_host("https://"), None);
        assert_eq!(url_host("https://a b/"), None);
    }

    #[test]
    fn listing_aligns_names() {
        let gw = Gateway {
            host: "gw".into(),
            port: Some(2222),
        };
        let names = vec!["prod".to_string(), "staging".to_string()];
        assert_eq!(
            listing(&names, &gw, "alice"),
            "prod     ssh -p 2222 alice@prod@gw\nstaging  ssh -p 2222 alice@staging@gw\n"
        );
        assert_eq!(listing(&[], &gw, "alice"), "no routes available to you\n");
    }
}
