//! `workload_identity:` — the OIDC issuers whose tokens may bind a key without a
//! person (CI jobs, scripts): each with its audience, a policy over the token's
//! claims, the routes and logins it may use and the longest binding it may get.

use std::time::Duration;

use super::Ctx;
use crate::config::yaml::Node;
use crate::config::{Route, WorkloadIssuer};

/// Keys of one `workload_identity` entry.
const KEYS: &[&str] = &[
    "issuer",
    "audience",
    "policy",
    "routes",
    "logins",
    "max_lifetime",
];

/// The default and the ceiling of `max_lifetime`.
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);
pub(crate) const LONGEST_LIFETIME: Duration = Duration::from_secs(3600);

pub(super) fn parse(
    ctx: &Ctx,
    node: &Node,
    routes: &[Route],
) -> Result<Vec<WorkloadIssuer>, super::ConfigError> {
    let Some(items) = node.as_seq() else {
        return Err(ctx.err(
            node.line,
            "workload_identity: expected a list of issuers (issuer, audience, policy, routes, logins)",
        ));
    };
    let mut out: Vec<WorkloadIssuer> = Vec::new();
    for item in items {
        let Some(entries) = item.as_map() else {
            return Err(ctx.err(
                item.line,
                "workload_identity: expected a mapping with issuer",
            ));
        };
        for (k, _) in entries {
            let key = k.as_str().unwrap_or_default();
            if !KEYS.contains(&key) {
                return Err(ctx.err(
                    k.line,
                    format!(
                        "workload_identity: unknown key {key:?}; expected one of {}",
                        KEYS.join(", ")
                    ),
                ));
            }
        }
        let required = |key: &str| {
            item.get(key)
                .ok_or_else(|| ctx.err(item.line, format!("workload_identity: missing {key}")))
        };
        let issuer_node = required("issuer")?;
        let issuer = ctx
            .string("issuer", issuer_node)?
            .trim_end_matches('/')
            .to_string();
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            return Err(ctx.err(
                issuer_node.line,
                "workload_identity: issuer: expected an https:// URL",
            ));
        }
        if out.iter().any(|w| w.issuer == issuer) {
            return Err(ctx.err(
                issuer_node.line,
                format!("workload_identity: issuer {issuer} is listed twice"),
            ));
        }
        let audience = ctx.string("audience", required("audience")?)?;
        if audience.trim().is_empty() {
            return Err(ctx.err(item.line, "workload_identity: audience must not be empty"));
        }
        let policy = crate::policy::parse_policy(required("policy")?)
            .map_err(|e| ctx.err(e.line, e.message))?;
        let routes_node = required("routes")?;
        let allowed_routes = ctx.string_list("routes", routes_node)?;
        if allowed_routes.is_empty() {
            return Err(ctx.err(
                routes_node.line,
                "workload_identity: routes must not be empty",
            ));
        }
        for r in &allowed_routes {
            if !routes.iter().any(|route| &route.name == r) {
                return Err(ctx.err(
                    routes_node.line,
                    format!("workload_identity: routes: no route ssh://{r}"),
                ));
            }
        }
        let logins_node = required("logins")?;
        let logins = ctx.string_list("logins", logins_node)?;
        if logins.is_empty() {
            return Err(ctx.err(
                logins_node.line,
                "workload_identity: logins must not be empty",
            ));
        }
        let max_lifetime = match item.get("max_lifetime") {
            None => DEFAULT_LIFETIME,
            Some(n) => {
                let d = ctx.duration("max_lifetime", n)?;
                if d.is_zero() || d > LONGEST_LIFETIME {
                    return Err(ctx.err(
                        n.line,
                        "workload_identity: max_lifetime must be greater than zero and at most 1h",
                    ));
                }
                d
            }
        };
        out.push(WorkloadIssuer {
            issuer,
            audience,
            policy,
            routes: allowed_routes,
            logins,
            max_lifetime,
        });
    }
    Ok(out)
}
