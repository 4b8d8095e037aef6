//! What a route lets tether do upstream on a user's behalf (tether's route keys
//! `ssh_allowed_logins` and `ssh_permit`, SPEC §2 and §8): which login names the
//! upstream certificate may carry, and which of pty, agent forwarding, port
//! forwarding and X11 forwarding the certificate permits and tether relays.
//!
//! These are hard limits beside the route's policy: the policy decides *who* may use
//! the route, these decide *what* anyone may do through it, and an allow from the
//! policy never lifts them. Pure data; no I/O.

/// The one login a route refuses when it lists none: uid 0 on every Unix.
pub const ROOT: &str = "root";

/// Which upstream logins a route's certificates may name (`ssh_allowed_logins`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedLogins {
    /// No `ssh_allowed_logins`: any login except `root`. A route that should let
    /// people in as root has to say so by listing it.
    #[default]
    AnyButRoot,
    /// `ssh_allowed_logins: [deploy, app]`: only these (never empty).
    Only(Vec<String>),
    /// `ssh_allowed_logins: any`: no limit, root included — the route's policy
    /// alone decides (for a policy that checks `ssh_username` itself).
    Any,
}

impl AllowedLogins {
    /// Whether `login` may be the upstream certificate's principal.
    pub fn allows(&self, login: &str) -> bool {
        match self {
            AllowedLogins::AnyButRoot => login != ROOT,
            AllowedLogins::Only(names) => names.iter().any(|n| n == login),
            AllowedLogins::Any => true,
        }
    }

    /// Whether the route names its logins (a jump-host pipe, whose login tether
    /// never sees, cannot be checked against a list and is refused).
    pub fn is_list(&self) -> bool {
        matches!(self, AllowedLogins::Only(_))
    }

    /// The one-line refusal for `login` (after `access denied: route "NAME": `).
    pub fn refusal(&self, login: &str) -> String {
        match self {
            AllowedLogins::AnyButRoot => format!(
                "login {login:?} is not allowed (the route does not list it in ssh_allowed_logins)"
            ),
            AllowedLogins::Only(names) => format!(
                "login {login:?} is not allowed (allowed: {})",
                names.join(", ")
            ),
            AllowedLogins::Any => format!("login {login:?} is not allowed"),
        }
    }

    /// How `tether check` shows it.
    pub fn describe(&self) -> String {
        match self {
            AllowedLogins::AnyButRoot => "any but root".to_string(),
            AllowedLogins::Only(names) => names.join(","),
            AllowedLogins::Any => "any (root included)".to_string(),
        }
    }
}

/// What a route lets a connection do upstream (`ssh_permit`). Each switch sets the
/// matching `permit-*` extension of the upstream certificate and whether tether
/// relays the client's request for it at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permit {
    /// `pty-req` (`permit-pty`); on by default: interactive shells need it.
    pub pty: bool,
    /// `auth-agent-req@openssh.com`, `ssh -A` (`permit-agent-forwarding`); off by
    /// default: whoever is root upstream can use a forwarded agent.
    pub agent_forwarding: bool,
    /// `direct-tcpip` (`-L`, `-D`, `-W`) and `tcpip-forward` (`-R`)
    /// (`permit-port-forwarding`); off by default.
    pub port_forwarding: bool,
    /// `x11-req`, `ssh -X` (`permit-X11-forwarding`); off by default.
    pub x11_forwarding: bool,
}

impl Default for Permit {
    fn default() -> Self {
        Permit {
            pty: true,
            agent_forwarding: false,
            port_forwarding: false,
            x11_forwarding: false,
        }
    }
}

impl Permit {
    /// Everything on (what every certificate carried before `ssh_permit`).
    pub const ALL: Permit = Permit {
        pty: true,
        agent_forwarding: true,
        port_forwarding: true,
        x11_forwarding: true,
    };

    /// What both allow.
    #[must_use]
    pub fn and(self, other: Permit) -> Permit {
        Permit {
            pty: self.pty && other.pty,
            agent_forwarding: self.agent_forwarding && other.agent_forwarding,
            port_forwarding: self.port_forwarding && other.port_forwarding,
            x11_forwarding: self.x11_forwarding && other.x11_forwarding,
        }
    }

    /// How `tether check` shows it: the switches that are on, or `none`.
    pub fn describe(&self) -> String {
        let on: Vec<&str> = [
            (self.pty, "pty"),
            (self.agent_forwarding, "agent_forwarding"),
            (self.port_forwarding, "port_forwarding"),
            (self.x11_forwarding, "x11_forwarding"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if on.is_empty() {
            "none".to_string()
        } else {
            on.join(",")
        }
    }
}

/// A route's upstream limits; a route without the keys has the defaults (any login
/// but root; pty only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// `ssh_allowed_logins`.
    pub logins: AllowedLogins,
    /// `ssh_permit`.
    pub permit: Permit,
}

/// Whether `name` can be an upstream login in `ssh_allowed_logins`: what
/// `useradd` accepts in practice (ASCII letters, digits, `.`, `_`, `-`, not
/// starting with `-`, at most 32 bytes).
pub fn valid_login(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_refuses_only_root() {
        let d = AllowedLogins::default();
        assert!(d.allows("alice"));
        assert!(d.allows("deploy"));
        assert!(!d.allows("root"));
        assert!(!d.is_list());
    }

    #[test]
    fn a_list_allows_only_its_names() {
        let l = AllowedLogins::Only(vec!["deploy".into(), "app".into()]);
        assert!(l.allows("deploy"));
        assert!(l.allows("app"));
        assert!(!l.allows("root"));
        assert!(!l.allows("Deploy"));
        assert!(!l.allows(""));
        assert!(l.is_list());
        assert_eq!(
            l.refusal("root"),
            "login \"root\" is not allowed (allowed: deploy, app)"
        );
    }

    #[test]
    fn any_is_no_limit() {
        assert!(AllowedLogins::Any.allows("root"));
        assert!(AllowedLogins::Any.allows("alice"));
        assert!(!AllowedLogins::Any.is_list());
    }

    #[test]
    fn permit_defaults_are_pty_only() {
        let p = Permit::default();
        assert_eq!(p.describe(), "pty");
        assert_eq!(Permit::ALL.and(p), p);
        assert_eq!(
            Permit {
                pty: false,
                ..Permit::default()
            }
            .describe(),
            "none"
        );
    }

    #[test]
    fn login_names() {
        for ok in ["deploy", "app-1", "a.b", "_svc", "root"] {
            assert!(valid_login(ok), "{ok}");
        }
        for bad in ["", "-x", "a b", "a@b", "*", "a,b", &"x".repeat(33)] {
            assert!(!valid_login(bad), "{bad}");
        }
    }
}
