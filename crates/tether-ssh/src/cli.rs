//! The internal CLI (SPEC §7): what `ssh alice@gateway [command]` runs when the
//! username names no route.
//!
//! Commands are parsed and their text rendered by plain functions; [`execute`] adds
//! the store calls. Output uses `\n`; the caller converts for a pty. This module
//! knows nothing about russh channels. The one interactive command, `portal`, is
//! not run here: when [`starts_portal`] says so, the connection runs
//! [`crate::portal`] on the channel instead; [`execute`] only answers the cases where
//! it cannot start (disabled, no terminal).

use std::fmt::Write as _;
use std::sync::Arc;

use tether_core::audit::{AuditEvent, Via};
use tether_core::config::Config;
use tether_core::time::human_duration;
use tether_core::{Clock, Session, Timestamp};
use tether_store::Store;

use crate::admission::{self, Principal};
use crate::error::internal;
use crate::routes::{self, Gateway};

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `whoami`.
    Whoami,
    /// `logout`.
    Logout,
    /// `routes`.
    Routes,
    /// `portal`.
    Portal,
    /// `help`, `--help`, `-h`, or no command at all.
    Help,
    /// Anything else (the first word).
    Unknown(String),
}

/// Parses an `exec` command line (`None`: a shell request).
pub(crate) fn parse(command: Option<&str>) -> Command {
    let mut words = command.unwrap_or_default().split_whitespace();
    let Some(first) = words.next() else {
        return Command::Help;
    };
    let extra = words.next().is_some();
    match first {
        "help" | "--help" | "-h" => Command::Help,
        _ if extra => Command::Unknown(command.unwrap_or_default().trim().to_string()),
        "whoami" => Command::Whoami,
        "logout" => Command::Logout,
        "routes" => Command::Routes,
        "portal" => Command::Portal,
        other => Command::Unknown(other.to_string()),
    }
}

/// Whether a command line (`None`: a shell request) runs the interactive portal:
/// `portal`, or no command at all, when the portal is enabled and the channel has a
/// terminal. Otherwise [`execute`] answers (help, or why `portal` cannot run).
pub(crate) fn starts_portal(command: Option<&str>, portal_enabled: bool, pty: bool) -> bool {
    portal_enabled && pty && (command.is_none() || parse(command) == Command::Portal)
}

/// The usage text.
pub(crate) fn usage(portal_enabled: bool) -> String {
    let portal = if portal_enabled {
        "pick a route interactively (needs a terminal: ssh -t)"
    } else {
        "pick a route interactively (not enabled on this gateway)"
    };
    format!(
        "Usage: ssh [-p PORT] USER@GATEWAY COMMAND\n\
         \n\
         Commands:\n\
         \x20 whoami   show who you are signed in as\n\
         \x20 logout   sign out: end your web session and all your key bindings\n\
         \x20 routes   list the routes you may use\n\
         \x20 portal   {portal}\n\
         \x20 help     show this text\n\
         \n\
         To reach a route: ssh -p PORT LOGIN@ROUTE@GATEWAY\n"
    )
}

/// Renders `whoami`.
pub(crate) fn whoami(session: &Session, fingerprint: &str, now: Timestamp) -> String {
    let id = &session.identity;
    let mut out = String::new();
    let _ = writeln!(out, "User ID:         {}", id.subject);
    let email = match (id.verified_email(), id.claim_values("email").first()) {
        (Some(verified), _) => one_line(verified),
        (None, Some(claimed)) => format!(
            "{} (not verified by the identity provider)",
            one_line(claimed)
        ),
        (None, None) => "(none)".to_string(),
    };
    let _ = writeln!(out, "Email:           {email}");
    if let Some(name) = &id.name {
        let _ = writeln!(out, "Name:            {name}");
    }
    let expiry = if session.is_live(now) {
        format!("in {}", human_duration(now.until(session.expires_at)))
    } else {
        "expired".to_string()
    };
    let _ = writeln!(
        out,
        "Session expires: {expiry} ({})",
        session.expires_at.rfc3339()
    );
    let _ = writeln!(out, "Key fingerprint: {fingerprint}");
    if !id.claims.is_empty() {
        let _ = writeln!(out, "Claims:");
        // BTreeMap: already sorted by name.
        for (name, value) in &id.claims {
            let _ = writeln!(out, "  {name}: {}", claim_text(value));
        }
    }
    out
}

/// A claim value as one line: strings bare, lists of strings comma-separated,
/// anything else as compact JSON.
fn claim_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => one_line(s),
        serde_json::Value::Array(items) if items.iter().all(|v| v.is_string()) => items
            .iter()
            .filter_map(|v| v.as_str())
            .map(one_line)
            .collect::<Vec<_>>()
            .join(", "),
        other => one_line(&other.to_string()),
    }
}

/// Control characters from an IdP never reach the terminal.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What a command printed and how it exited.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) status: u32,
    /// The web session was ended (the connection's revocation follows).
    pub(crate) logged_out: bool,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Outcome {
            stdout,
            ..Outcome::default()
        }
    }

    fn err(stderr: String) -> Self {
        Outcome {
            stderr,
            status: 1,
            ..Outcome::default()
        }
    }
}

/// What a command may use.
#[derive(Clone)]
pub(crate) struct CliContext {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The configuration in force (routes, policies, runtime flags).
    pub(crate) config: Arc<Config>,
    pub(crate) portal_enabled: bool,
    /// Who the connection acts for (the web session as of admission).
    pub(crate) principal: Arc<Principal>,
    /// The login the client connected with (`alice` in `alice@gateway`).
    pub(crate) login: String,
    /// The gateway port this connection reached.
    pub(crate) port: Option<u16>,
    /// Whether the channel has a terminal.
    pub(crate) pty: bool,
}

impl CliContext {
    /// The `routes` listing for this user.
    fn routes(&self) -> String {
        let names = admission::listable(&self.principal, &self.config, self.clock.now());
        let gateway = Gateway::new(&self.config, self.port);
        routes::listing(&names, &gateway, &self.login)
    }
}

/// Runs a command line.
pub(crate) async fn execute(command: Option<&str>, cx: &CliContext) -> Outcome {
    match parse(command) {
        Command::Whoami => {
            // Fresh from the store: the session may have changed since sign-in.
            let session = match cx.store.get_session(&cx.principal.session.id).await {
                Ok(Some(s)) => s,
                Ok(None) => return Outcome::err("your session has ended\n".to_string()),
                Err(e) => return Outcome::err(format!("{}\n", internal("whoami", &e))),
            };
            Outcome::ok(whoami(&session, &cx.principal.fingerprint, cx.clock.now()))
        }
        Command::Logout => match cx
            .store
            .sign_out(&cx.principal.session.id, "logged out")
            .await
        {
            Ok(out) => {
                AuditEvent::SignOut {
                    via: Via::Ssh,
                    user_id: cx.principal.binding.user_id.clone(),
                    email: cx.principal.identity().email.clone(),
                    revoked_bindings: out.revoked_bindings.len(),
                }
                .emit();
                Outcome {
                    logged_out: true,
                    ..Outcome::ok("Logged out successfully\n".to_string())
                }
            }
            Err(e) => Outcome::err(format!("{}\n", internal("logout", &e))),
        },
        Command::Routes => Outcome::ok(cx.routes()),
        Command::Portal if !cx.portal_enabled => {
            Outcome::err("'portal' is not enabled on this gateway\n".to_string())
        }
        Command::Portal if !cx.pty => Outcome::err(
            "'portal' is an interactive command and requires a TTY (try passing '-t' to ssh)\n"
                .to_string(),
        ),
        // The connection runs the portal itself in this case (`starts_portal`).
        Command::Portal => Outcome::err("'portal' could not be started\n".to_string()),
        Command::Help => Outcome {
            status: 1,
            ..Outcome::ok(usage(cx.portal_enabled))
        },
        Command::Unknown(word) => Outcome::err(format!(
            "unknown command {:?}\n\n{}",
            one_line(&word),
            usage(cx.portal_enabled)
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;
    use tether_core::Identity;

    fn session() -> Session {
        let mut claims = BTreeMap::new();
        claims.insert("groups".to_string(), serde_json::json!(["sre", "dev"]));
        claims.insert("email".to_string(), serde_json::json!("alice@example.com"));
        claims.insert("age".to_string(), serde_json::json!(42));
        Session {
            id: "sess-1".into(),
            identity: Identity {
                subject: "u-alice".into(),
                email: "alice@example.com".into(),
                name: None,
                claims,
            },
            issued_at: Timestamp(0),
            expires_at: Timestamp(0).plus(Duration::from_secs(14 * 3600)),
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(Some("whoami")), Command::Whoami);
        assert_eq!(parse(Some("  logout \n")), Command::Logout);
        assert_eq!(parse(Some("routes")), Command::Routes);
        assert_eq!(parse(Some("portal")), Command::Portal);
        assert_eq!(parse(None), Command::Help);
        assert_eq!(parse(Some("")), Command::Help);
        assert_eq!(parse(Some("--help")), Command::Help);
        assert_eq!(parse(Some("help me")), Command::Help);
        assert_eq!(parse(Some("rm -rf /")), Command::Unknown("rm -rf /".into()));
        assert_eq!(
            parse(Some("whoami --json")),
            Command::Unknown("whoami --json".into())
        );
        assert_eq!(parse(Some("ls")), Command::Unknown("ls".into()));
    }

    #[test]
    fn portal_starts_on_portal_or_a_shell_with_a_terminal_only() {
        assert!(starts_portal(Some("portal"), true, true));
        assert!(starts_portal(None, true, true), "shell");
        assert!(!starts_portal(Some("portal"), true, false), "no tty");
        assert!(!starts_portal(Some("portal"), false, true), "disabled");
        assert!(!starts_portal(None, false, true));
        assert!(!starts_portal(Some("routes"), true, true));
        assert!(!starts_portal(Some("portal now"), true, true));
    }

    #[test]
    fn usage_lists_every_command() {
        let u = usage(false);
        for c in ["whoami", "logout", "routes", "portal", "help"] {
            assert!(u.contains(&format!("  {c} ")), "{c} missing:\n{u}");
        }
        assert!(u.contains("not enabled"));
        assert!(!usage(true).contains("not enabled"));
    }

    #[test]
    fn whoami_shows_identity_expiry_key_and_sorted_claims() {
        let now = Timestamp(0).plus(Duration::from_secs(18 * 60));
        let text = whoami(&session(), "SHA256:abc", now);
        assert!(text.contains("User ID:         u-alice\n"), "{text}");
        assert!(text.contains("Email:           alice@example.com\n"));
        assert!(!text.contains("sess-1"), "no web session id: {text}");
        assert!(text.contains("Session expires: in 13h42m ("), "{text}");
        assert!(text.contains("Key fingerprint: SHA256:abc\n"));
        let claims = text.split("Claims:\n").nth(1).unwrap();
        assert_eq!(
            claims,
            "  age: 42\n  email: alice@example.com\n  groups: sre, dev\n"
        );
    }

    #[test]
    fn whoami_marks_an_unverified_email() {
        let mut s = session();
        s.identity.email.clear();
        let text = whoami(&s, "SHA256:abc", Timestamp(0));
        assert!(
            text.contains(
                "Email:           alice@example.com (not verified by the identity provider)\n"
            ),
            "{text}"
        );
        s.identity.claims.remove("email");
        let text = whoami(&s, "SHA256:abc", Timestamp(0));
        assert!(text.contains("Email:           (none)\n"), "{text}");
    }

    #[test]
    fn claim_values_stay_on_one_line() {
        assert_eq!(claim_text(&serde_json::json!("a\nb\x1b")), "a b ");
        assert_eq!(claim_text(&serde_json::json!({"k": 1})), "{\"k\":1}");
        assert_eq!(claim_text(&serde_json::json!([1, "x"])), "[1,\"x\"]");
    }
}
