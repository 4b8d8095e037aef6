//! A route connection's `ssh_permit` in tether's own channel handling (SPEC §8):
//! a `pty-req`, `auth-agent-req`, `x11-req`, `direct-tcpip` channel (`-L`, `-D`,
//! `-W`) or `tcpip-forward` (`-R`) the route does not permit is refused here, before
//! anything reaches the upstream, with a log line and a `permit_refused` audit
//! event. The upstream certificate lacks the matching `permit-*` extension too, so
//! the upstream would refuse it as well; refusing here gives the client a clear
//! answer and keeps the relay from ever learning the client asked (the relay opens
//! agent, X11 and `forwarded-tcpip` channels towards the client only after a
//! request it forwarded).
//!
//! What is in force is what *both* allow: the permit the connection was admitted
//! with (the certificate's extensions) and the route's permit in the live
//! configuration. A reload that turns a switch off refuses the next request on
//! connections already open; one that turns it on applies to new connections (the
//! open ones' certificates lack it).
//!
//! Route-less connections (the internal CLI, jump-host pipes) have rules of their
//! own and are not limited here.

use tether_core::audit::AuditEvent;
use tether_core::config::Permit;

use super::channels::Mode;
use super::{Actor, Phase};
use crate::events::ChannelRequest;

/// Something a route connection asks for that a `ssh_permit` switch governs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Asked {
    /// `pty-req`.
    Pty,
    /// `auth-agent-req@openssh.com` (`ssh -A`).
    Agent,
    /// `x11-req` (`ssh -X`).
    X11,
    /// A `direct-tcpip` channel (`ssh -L`, `-D`, `-W`).
    DirectTcpip,
    /// `tcpip-forward` (`ssh -R`).
    TcpipForward,
}

impl Asked {
    /// The switch a channel request needs, if any.
    pub(super) fn of(request: &ChannelRequest) -> Option<Asked> {
        match request {
            ChannelRequest::Pty { .. } => Some(Asked::Pty),
            ChannelRequest::Agent => Some(Asked::Agent),
            ChannelRequest::X11 { .. } => Some(Asked::X11),
            _ => None,
        }
    }

    /// The request as the SSH protocol names it.
    fn request(self) -> &'static str {
        match self {
            Asked::Pty => "pty-req",
            Asked::Agent => "auth-agent-req",
            Asked::X11 => "x11-req",
            Asked::DirectTcpip => "direct-tcpip",
            Asked::TcpipForward => "tcpip-forward",
        }
    }

    /// The `ssh_permit` switch that governs it.
    fn switch(self) -> &'static str {
        match self {
            Asked::Pty => "pty",
            Asked::Agent => "agent_forwarding",
            Asked::X11 => "x11_forwarding",
            Asked::DirectTcpip | Asked::TcpipForward => "port_forwarding",
        }
    }

    fn allowed(self, permit: Permit) -> bool {
        match self {
            Asked::Pty => permit.pty,
            Asked::Agent => permit.agent_forwarding,
            Asked::X11 => permit.x11_forwarding,
            Asked::DirectTcpip | Asked::TcpipForward => permit.port_forwarding,
        }
    }
}

/// The one line a client is given for a refused channel open.
pub(super) fn refusal(asked: Asked, route: &str) -> String {
    let what = match asked {
        Asked::Pty => "a terminal",
        Asked::Agent => "agent forwarding",
        Asked::X11 => "X11 forwarding",
        Asked::DirectTcpip | Asked::TcpipForward => "port forwarding",
    };
    format!("{what} is not permitted on route {route:?}")
}

impl Actor {
    /// Whether this connection may do `asked`: `Err(route)` when it is a route
    /// connection whose permit in force (see the module docs) says no — logged and
    /// audited here. Anything else (not yet authenticated, the internal CLI) is
    /// `Ok`: other rules decide there.
    pub(super) fn permits(&self, asked: Asked) -> Result<(), String> {
        let Phase::Authed(authed) = &self.phase else {
            return Ok(());
        };
        let Mode::Route { name, login } = &authed.mode else {
            return Ok(());
        };
        let live = self.ctx.config().upstream_limits_of(name).permit;
        if asked.allowed(authed.permit.and(live)) {
            return Ok(());
        }
        tracing::info!(route = %name, login = %login, request = asked.request(),
            "refused: ssh_permit.{} is off for the route", asked.switch());
        AuditEvent::PermitRefused {
            conn: authed.principal.conn,
            route: name.clone(),
            login: login.clone(),
            request: asked.request().to_string(),
            permit: asked.switch().to_string(),
        }
        .emit();
        Err(name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_has_its_switch() {
        let none = Permit {
            pty: false,
            ..Permit::default()
        };
        for asked in [
            Asked::Pty,
            Asked::Agent,
            Asked::X11,
            Asked::DirectTcpip,
            Asked::TcpipForward,
        ] {
            assert!(asked.allowed(Permit::ALL), "{asked:?}");
            assert!(!asked.allowed(none), "{asked:?}");
        }
        let defaults = Permit::default();
        assert!(Asked::Pty.allowed(defaults));
        assert!(!Asked::Agent.allowed(defaults));
        assert!(!Asked::DirectTcpip.allowed(defaults));
        assert_eq!(
            refusal(Asked::DirectTcpip, "prod"),
            "port forwarding is not permitted on route \"prod\""
        );
    }
}
