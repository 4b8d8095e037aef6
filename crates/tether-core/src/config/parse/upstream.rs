//! A route's `ssh_allowed_logins` and `ssh_permit` (see [`crate::config::upstream`]).
//! Every malformed value is one error naming the line.

use super::Ctx;
use crate::config::upstream::{valid_login, AllowedLogins, Permit, UpstreamLimits};
use crate::config::yaml::{Node, Value};
use crate::config::ConfigError;

/// The route keys this module reads.
pub(super) const KEYS: &[&str] = &["ssh_allowed_logins", "ssh_permit"];

/// The limits of the route mapping `item`.
pub(super) fn parse(ctx: &Ctx, item: &Node) -> Result<UpstreamLimits, ConfigError> {
    let logins = match item.get("ssh_allowed_logins") {
        Some(n) if n.as_str() == Some("any") => AllowedLogins::Any,
        Some(n) => AllowedLogins::Only(logins(ctx, n)?),
        None => AllowedLogins::AnyButRoot,
    };
    let permit = match item.get("ssh_permit") {
        Some(n) => permit(ctx, n)?,
        None => Permit::default(),
    };
    Ok(UpstreamLimits { logins, permit })
}

fn logins(ctx: &Ctx, node: &Node) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "ssh_allowed_logins";
    let Value::Seq(items) = &node.value else {
        return Err(ctx.err(
            node.line,
            format!("{KEY}: expected a list of login names, e.g. [deploy, app], or any"),
        ));
    };
    if items.is_empty() {
        return Err(ctx.err(
            node.line,
            format!("{KEY}: expected at least one login name (remove the route to allow none)"),
        ));
    }
    let mut names: Vec<String> = Vec::new();
    for item in items {
        let name = ctx.string(KEY, item)?;
        if !valid_login(&name) {
            return Err(ctx.err(
                item.line,
                format!(
                    "{KEY}: {name:?} is not a login name (letters, digits, '.', '_', '-'; \
                     at most 32)"
                ),
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

fn permit(ctx: &Ctx, node: &Node) -> Result<Permit, ConfigError> {
    const KEY: &str = "ssh_permit";
    let Some(entries) = node.as_map() else {
        return Err(ctx.err(
            node.line,
            format!(
                "{KEY}: expected a mapping of pty, agent_forwarding, port_forwarding, \
                 x11_forwarding: true|false"
            ),
        ));
    };
    let mut permit = Permit::default();
    for (k, v) in entries {
        let name = ctx.string("ssh_permit key", k)?;
        let full = format!("{KEY}.{name}");
        let slot = match name.as_str() {
            "pty" => &mut permit.pty,
            "agent_forwarding" => &mut permit.agent_forwarding,
            "port_forwarding" => &mut permit.port_forwarding,
            "x11_forwarding" => &mut permit.x11_forwarding,
            _ => {
                return Err(ctx.err(
                    k.line,
                    format!(
                        "unknown {full} (expected pty, agent_forwarding, port_forwarding, \
                         x11_forwarding)"
                    ),
                ))
            }
        };
        *slot = ctx.bool(&full, v)?;
    }
    Ok(permit)
}
