//! The authorization proof (STYLE habit 6): [`authorize`] evaluates a route's policy
//! in force (`Route::effective_policy`, SPEC §6) for one signed-in identity, login
//! name and client key, and the route's hard limit on logins (`ssh_allowed_logins`,
//! which no policy lifts), and only an allow yields an [`AccessGranted`], carrying
//! what the route's `ssh_permit` allows upstream. Its fields are
//! private and it has no other constructor, so the upstream connector
//! ([`crate::upstream::connect`]) and the jump-host pipe, which take one, cannot be
//! reached without a policy decision.
//!
//! Pure: no I/O, no russh session state. The client's key arrives as a
//! [`KeyInput`] built by [`key_input`] from what russh verified, and its address as
//! the connection's peer.

use std::net::IpAddr;

use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Certificate, PublicKey};
use tether_core::config::{Permit, Route, UpstreamLimits};
use tether_core::policy::{evaluate, normalize_key_line, CertInput, Decision, Input, KeyInput};
use tether_core::{Identity, Timestamp};

/// Where to connect: a route and its upstream(s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// Route name (for messages and logs).
    pub route: String,
    /// Upstream `host:port` (`[v6]:port` for IPv6 literals); the first one tried.
    pub address: String,
    /// The route's further upstreams, tried in order when the ones before cannot be
    /// reached (`to:` with a list); usually empty.
    pub failover: Vec<String>,
}

impl UpstreamTarget {
    /// Every upstream address, in the order they are tried.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.address.as_str()).chain(self.failover.iter().map(String::as_str))
    }
}

/// Who logs in upstream, and for how long at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUser {
    /// The upstream login name (the certificate's only principal).
    pub login: String,
    /// The user's email (the certificate's key id; the upstream's auth log shows it).
    pub email: String,
    /// The client binding's expiry; the certificate never outlives it.
    pub binding_expires_at: Timestamp,
}

/// What a policy decision is asked about.
#[derive(Clone, Copy, Debug)]
pub struct AccessRequest<'a> {
    /// The signed-in identity (from the binding's web session).
    pub identity: &'a Identity,
    /// The requested upstream login; `None` in jump-host mode (§8), where there is
    /// none: the `ssh_username*` criteria (and `ssh_ca`'s principal check) cannot
    /// be evaluated there and deny (fail closed, issue 12).
    pub login: Option<&'a str>,
    /// The client's key (and certificate, if it authenticated with one).
    pub key: &'a KeyInput,
    /// The client's address (the SSH connection's peer), for `source_ip`.
    pub source: Option<IpAddr>,
    /// The client binding's expiry (upstream certificates never outlive it).
    pub binding_expires_at: Timestamp,
    /// Now.
    pub now: Timestamp,
}

/// Proof that a route's policy allowed this identity, login and key. Only
/// [`authorize`] makes one.
#[derive(Clone, Debug)]
pub struct AccessGranted {
    target: UpstreamTarget,
    email: String,
    login: Option<String>,
    binding_expires_at: Timestamp,
    reasons: Vec<String>,
    permit: Permit,
}

impl AccessGranted {
    /// The route and its upstream address.
    pub fn target(&self) -> &UpstreamTarget {
        &self.target
    }

    /// The login the decision was made for (`None`: jump-host mode).
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// Who logs in upstream: `None` in jump-host mode (no upstream login). Its
    /// `email` (the certificate's key id) is the verified email, or the IdP subject
    /// when there is none.
    pub fn upstream_user(&self) -> Option<UpstreamUser> {
        Some(UpstreamUser {
            login: self.login.clone()?,
            email: self.email.clone(),
            binding_expires_at: self.binding_expires_at,
        })
    }

    /// The reason codes that allowed access (for the audit log).
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// What the route's `ssh_permit` allowed when access was decided: the upstream
    /// certificate's `permit-*` extensions.
    pub fn permit(&self) -> Permit {
        self.permit
    }
}

/// Why access to a route was refused. `Display` is the one line the client sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    /// No route has that name.
    #[error("route {0:?} not found")]
    NoRoute(String),
    /// The policy denied.
    #[error("access denied: route {route:?}: {message}")]
    Policy {
        /// Route name.
        route: String,
        /// The decision's one plain sentence (`not in group sre`).
        message: String,
        /// Denied only on key-specific criteria: the client may try another key.
        key_specific: bool,
        /// The reason codes (for the audit log).
        codes: Vec<&'static str>,
    },
}

impl AccessDenied {
    /// Whether another key might be allowed (`ssh_publickey`, `ssh_ca`).
    pub fn key_specific(&self) -> bool {
        matches!(
            self,
            AccessDenied::Policy {
                key_specific: true,
                ..
            }
        )
    }
}

/// Why a jump-host pipe is refused a route that lists its logins.
pub const JUMP_LOGIN_UNKNOWN: &str =
    "the route allows only the logins in ssh_allowed_logins, which a jump-host connection does not show";

/// Evaluates `route`'s login limit and policy in force for `request`; see the
/// module docs. `limits` are the route's (`Config::upstream_limits_of`).
pub fn authorize(
    route: Option<&Route>,
    limits: &UpstreamLimits,
    name: &str,
    request: &AccessRequest<'_>,
) -> Result<AccessGranted, AccessDenied> {
    let route = route.ok_or_else(|| AccessDenied::NoRoute(name.to_string()))?;
    let decision: Decision = evaluate(
        &route.effective_policy(),
        &Input {
            identity: Some(request.identity),
            login: request.login,
            key: request.key,
            source: request.source,
            now: request.now,
        },
    );
    if !decision.allow {
        return Err(AccessDenied::Policy {
            route: route.name.clone(),
            message: decision.message(),
            key_specific: decision.key_specific,
            codes: decision.reasons.iter().map(|r| r.code).collect(),
        });
    }
    // Then the hard limit, fail closed: a login the route does not allow, or no
    // login to check against a list (a jump pipe), is refused whatever the policy
    // said. After the policy, so the allowed names are told only to people the
    // policy admits.
    let refusal = match request.login {
        Some(login) if !limits.logins.allows(login) => Some(limits.logins.refusal(login)),
        None if limits.logins.is_list() => Some(JUMP_LOGIN_UNKNOWN.to_string()),
        _ => None,
    };
    if let Some(message) = refusal {
        return Err(AccessDenied::Policy {
            route: route.name.clone(),
            message,
            key_specific: false,
            codes: vec!["login_not_allowed"],
        });
    }
    Ok(AccessGranted {
        target: UpstreamTarget {
            route: route.name.clone(),
            address: route.to.clone(),
            failover: route.failover.clone(),
        },
        // The certificate's key id names the person in the upstream's auth log:
        // the verified email, else the IdP subject (never an unverified address).
        email: request
            .identity
            .verified_email()
            .unwrap_or(&request.identity.subject)
            .to_string(),
        login: request.login.map(str::to_string),
        binding_expires_at: request.binding_expires_at,
        reasons: decision
            .reasons
            .iter()
            .map(|r| r.code.to_string())
            .collect(),
        permit: limits.permit,
    })
}

/// Whether `route` belongs in a list of the routes `request`'s user may use: the
/// policy allows, or (with no login in `request`) denies only on login-name
/// criteria that some login might pass. For the `routes` listing only — access
/// always goes through [`authorize`].
pub fn may_list(route: &Route, request: &AccessRequest<'_>) -> bool {
    let decision = evaluate(
        &route.effective_policy(),
        &Input {
            identity: Some(request.identity),
            login: request.login,
            key: request.key,
            source: request.source,
            now: request.now,
        },
    );
    decision.allow || decision.login_undetermined
}

/// `type base64` of a public key (no comment).
fn key_line(key: &KeyData) -> String {
    PublicKey::new(key.clone(), "")
        .to_openssh()
        .ok()
        .and_then(|s| normalize_key_line(&s))
        .unwrap_or_default()
}

/// The policy's view of the client's key: the verified public key, plus the
/// certificate's CA and principals when the client authenticated with a user
/// certificate whose signature and validity window russh verified.
pub fn key_input(key: &PublicKey, cert: Option<&Certificate>) -> KeyInput {
    KeyInput {
        public_key: key_line(key.key_data()),
        cert: cert.map(|c| CertInput {
            ca_key: key_line(c.signature_key()),
            principals: c.valid_principals().to_vec(),
            valid: c.cert_type().is_user(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use russh::keys::ssh_key::certificate::{Builder, CertType};
    use tether_core::policy::{Block, Criterion, Op, Policy, Rule};

    fn identity(groups: &[&str]) -> Identity {
        let mut claims = BTreeMap::new();
        claims.insert("groups".to_string(), serde_json::json!(groups));
        Identity {
            subject: "u-alice".into(),
            email: "alice@example.com".into(),
            name: None,
            claims,
        }
    }

    fn route(policy: Option<Vec<Criterion>>, any: bool) -> Route {
        Route {
            name: "prod".into(),
            to: "10.0.0.5:22".into(),
            failover: Vec::new(),
            allow_any_authenticated_user: any,
            policy: policy.map(|criteria| Policy {
                rules: vec![Rule {
                    allow: Some(Block {
                        op: Op::And,
                        criteria,
                    }),
                    deny: None,
                }],
            }),
            line: 1,
        }
    }

    fn ask<'a>(id: &'a Identity, login: Option<&'a str>, key: &'a KeyInput) -> AccessRequest<'a> {
        AccessRequest {
            identity: id,
            login,
            key,
            source: None,
            binding_expires_at: Timestamp(10_000_000),
            now: Timestamp(1_000),
        }
    }

    #[test]
    fn grants_carry_the_target_and_login() {
        let id = identity(&[]);
        let key = KeyInput::default();
        let r = route(None, true);
        let g = authorize(
            Some(&r),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, Some("alice"), &key),
        )
        .unwrap();
        assert_eq!(g.target().address, "10.0.0.5:22");
        assert_eq!(g.target().route, "prod");
        let u = g.upstream_user().unwrap();
        assert_eq!(
            (u.login.as_str(), u.email.as_str()),
            ("alice", "alice@example.com")
        );
        let jump = authorize(
            Some(&r),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, None, &key),
        )
        .unwrap();
        assert!(jump.upstream_user().is_none());

        // No verified email: the key id falls back to the IdP subject.
        let mut unverified = identity(&[]);
        unverified.email.clear();
        unverified
            .claims
            .insert("email".into(), serde_json::json!("alice@example.com"));
        let g = authorize(
            Some(&r),
            &UpstreamLimits::default(),
            "prod",
            &ask(&unverified, Some("alice"), &key),
        )
        .unwrap();
        assert_eq!(g.upstream_user().unwrap().email, "u-alice");
    }

    #[test]
    fn denials_are_one_line() {
        let id = identity(&["dev"]);
        let key = KeyInput::default();
        let err = authorize(
            None,
            &UpstreamLimits::default(),
            "nope",
            &ask(&id, Some("a"), &key),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "route \"nope\" not found");
        let r = route(None, false);
        let err = authorize(
            Some(&r),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, Some("a"), &key),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "access denied: route \"prod\": no policy allows access"
        );
        let r = route(Some(vec![Criterion::Groups(vec!["sre".into()])]), false);
        let err = authorize(
            Some(&r),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, Some("a"), &key),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "access denied: route \"prod\": not in group sre"
        );
        assert!(!err.key_specific());
    }

    #[test]
    fn key_specific_denial_and_username_skip() {
        let id = identity(&[]);
        let key = KeyInput {
            public_key: "ssh-ed25519 AAAAother".into(),
            cert: None,
        };
        let r = route(
            Some(vec![Criterion::SshPublickey(vec![
                "ssh-ed25519 AAAAlisted".into(),
            ])]),
            false,
        );
        let err = authorize(
            Some(&r),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, Some("a"), &key),
        )
        .unwrap_err();
        assert!(err.key_specific(), "{err:?}");
        let r = route(Some(vec![Criterion::SshUsernameMatchesEmail]), false);
        assert!(authorize(
            Some(&r),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, Some("root"), &key)
        )
        .is_err());
        assert!(authorize(
            Some(&r),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, Some("alice"), &key)
        )
        .is_ok());
    }

    /// Issue 12 item 4: a jump-host pipe has no login, so a route whose policy
    /// checks the login is refused there (it used to skip the check and allow),
    /// while `routes` still lists it.
    #[test]
    fn jump_mode_refuses_login_restricted_routes() {
        let id = identity(&["sre"]);
        let key = KeyInput::default();
        let deploy_only = route(
            Some(vec![
                Criterion::AuthenticatedUser,
                Criterion::SshUsername(tether_core::policy::StringMatcher::Is("deploy".into())),
            ]),
            false,
        );
        let err = authorize(
            Some(&deploy_only),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, None, &key),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "access denied: route \"prod\": the route's policy checks the login name, \
             which a jump-host connection does not have"
        );
        assert!(authorize(
            Some(&deploy_only),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, Some("deploy"), &key)
        )
        .is_ok());
        assert!(may_list(&deploy_only, &ask(&id, None, &key)), "listed");
        // No login criteria: the pipe is allowed as before.
        let sre = route(Some(vec![Criterion::Groups(vec!["sre".into()])]), false);
        assert!(authorize(
            Some(&sre),
            &UpstreamLimits::default(),
            "prod",
            &ask(&id, None, &key)
        )
        .is_ok());
        let ops = route(Some(vec![Criterion::Groups(vec!["ops".into()])]), false);
        assert!(!may_list(&ops, &ask(&id, None, &key)), "not listed");
    }

    /// `ssh_allowed_logins` is a hard limit beside the policy: a login outside it
    /// is refused even where the policy admits everyone, without the key no one
    /// is root, a jump pipe (no login) is refused a route with a list, and the
    /// grant carries the route's `ssh_permit`.
    #[test]
    fn allowed_logins_limit_every_policy() {
        use tether_core::config::AllowedLogins;
        let id = identity(&[]);
        let key = KeyInput::default();
        let open = route(None, true);
        let listed = UpstreamLimits {
            logins: AllowedLogins::Only(vec!["deploy".into(), "app".into()]),
            permit: Permit {
                agent_forwarding: true,
                ..Permit::default()
            },
        };
        let g = authorize(
            Some(&open),
            &listed,
            "prod",
            &ask(&id, Some("deploy"), &key),
        )
        .unwrap();
        assert!(g.permit().agent_forwarding && g.permit().pty);
        assert!(!g.permit().port_forwarding);
        let err =
            authorize(Some(&open), &listed, "prod", &ask(&id, Some("root"), &key)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "access denied: route \"prod\": login \"root\" is not allowed (allowed: deploy, app)"
        );
        assert!(!err.key_specific());
        let err = authorize(Some(&open), &listed, "prod", &ask(&id, None, &key)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("access denied: route \"prod\": {JUMP_LOGIN_UNKNOWN}")
        );

        let default = UpstreamLimits::default();
        assert!(authorize(
            Some(&open),
            &default,
            "prod",
            &ask(&id, Some("alice"), &key)
        )
        .is_ok());
        let err =
            authorize(Some(&open), &default, "prod", &ask(&id, Some("root"), &key)).unwrap_err();
        assert!(
            err.to_string().contains("login \"root\" is not allowed"),
            "{err}"
        );
        assert!(authorize(Some(&open), &default, "prod", &ask(&id, None, &key)).is_ok());

        // The policy is decided first: someone it refuses is not told the names.
        let sre = route(Some(vec![Criterion::Groups(vec!["sre".into()])]), false);
        let err =
            authorize(Some(&sre), &listed, "prod", &ask(&id, Some("root"), &key)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "access denied: route \"prod\": not in group sre"
        );
    }

    #[test]
    fn key_input_of_plain_keys_and_certificates() {
        let ca = crate::cert::ephemeral_ed25519().unwrap();
        let user = crate::cert::ephemeral_ed25519().unwrap();
        let plain = key_input(user.public_key(), None);
        let expected = user.public_key().to_openssh().unwrap();
        assert_eq!(
            plain.public_key,
            normalize_key_line(&expected).unwrap(),
            "no comment"
        );
        assert!(plain.public_key.starts_with("ssh-ed25519 AAAA"));
        assert!(plain.cert.is_none());

        let mut b = Builder::new(
            vec![1u8; 32],
            user.public_key().key_data().clone(),
            0,
            u64::MAX,
        )
        .unwrap();
        b.serial(1).unwrap();
        b.key_id("k").unwrap();
        b.cert_type(CertType::User).unwrap();
        b.valid_principal("alice").unwrap();
        let cert = b.sign(&ca).unwrap();
        let with_cert = key_input(user.public_key(), Some(&cert));
        let c = with_cert.cert.unwrap();
        assert_eq!(
            c.ca_key,
            normalize_key_line(&ca.public_key().to_openssh().unwrap()).unwrap()
        );
        assert_eq!(c.principals, vec!["alice".to_string()]);
        assert!(c.valid);
    }
}
