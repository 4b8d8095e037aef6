//! Admission: the one place that decides who reaches which upstream (SPEC §6, §8).
//!
//! A [`Principal`] is made once, when a connection's key proved to have a valid
//! client binding (or the browser just approved one), and passed on to everything
//! that acts for the connection. Every path that may reach a route goes through
//! here:
//!
//! | path                       | decision                 | connect              |
//! |----------------------------|--------------------------|----------------------|
//! | `login@route` (`actor`)    | [`authorize`] `Via::Route`  | [`connect`] `Via::Route` |
//! | the portal's choice        | [`authorize`] `Via::Portal` | [`connect`] `Via::Portal`|
//! | a jump-host pipe           | [`authorize`] `Via::Jump`   | `jump::pipe` (raw TCP)   |
//! | live re-check (`registry`) | [`authorize`] `Via::Recheck`| —                    |
//! | `routes` / portal listing  | [`listable`]             | —                    |
//!
//! [`authorize`] is the only producer of the `policy_denied` audit event, and the
//! only caller of [`crate::access::authorize`] (whose [`AccessGranted`] proof is what
//! [`connect`] and the jump pipe take). [`connect`] checks the upstream's host key
//! against the configuration in force, records the connect metrics and writes the
//! `upstream_connected` / `upstream_failed` audit event.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use russh::keys::PrivateKey;
use tether_core::audit::{AuditEvent, Via};
use tether_core::config::Config;
use tether_core::metrics::Metrics;
use tether_core::policy::KeyInput;
use tether_core::{ClientBinding, Identity, Session, Timestamp};
use tether_store::Store;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::access::{self, AccessDenied, AccessGranted, AccessRequest};
use crate::live::LiveConfig;
use crate::record::Recorder;
use crate::upstream::{self, HostKeyCheck, Upstream, UpstreamError, UpstreamEvent};

/// Who a connection acts for: made once at admission, shared (`Arc`) by the
/// connection's CLI, portal, relay and its registry entry.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    /// The connection id (the `conn` of its log span and audit events).
    pub(crate) conn: u64,
    /// The client binding the key authenticated with.
    pub(crate) binding: ClientBinding,
    /// The web session behind the binding (identity as of admission).
    pub(crate) session: Session,
    /// `SHA256:...` of the client's key.
    pub(crate) fingerprint: String,
    /// The policy's view of the client's key (and certificate).
    pub(crate) key: KeyInput,
    /// The client's address (the connection's peer; `source_ip`).
    pub(crate) source: IpAddr,
}

impl Principal {
    /// The signed-in identity.
    pub(crate) fn identity(&self) -> &Identity {
        &self.session.identity
    }

    fn request<'a>(&'a self, login: Option<&'a str>, now: Timestamp) -> AccessRequest<'a> {
        AccessRequest {
            identity: self.identity(),
            login,
            key: &self.key,
            source: Some(self.source),
            binding_expires_at: self.binding.expires_at,
            now,
        }
    }
}

/// Decides whether `principal` may reach `route` as `login` (`None`: a jump-host
/// pipe, which has no login) under `config`'s policy and the route's
/// `ssh_allowed_logins` in force. A denial is written to the audit log here, and
/// only here.
pub(crate) fn authorize(
    principal: &Principal,
    config: &Config,
    route: &str,
    login: Option<&str>,
    via: Via,
    now: Timestamp,
) -> Result<AccessGranted, AccessDenied> {
    let result = workload_limits(principal, config, route, login).and_then(|()| {
        access::authorize(
            config.route(route),
            &config.upstream_limits_of(route),
            route,
            &principal.request(login, now),
        )
    });
    if let Err(denied) = &result {
        AuditEvent::PolicyDenied {
            conn: principal.conn,
            via,
            route: route.to_string(),
            login: login.map(str::to_string),
            user_id: principal.binding.user_id.to_string(),
            email: principal.identity().email.clone(),
            fingerprint: principal.fingerprint.clone(),
            reason: denied.to_string(),
            key_specific: denied.key_specific(),
        }
        .emit();
    }
    result
}

/// A workload binding (`workload:<issuer>#<sub>`, made by a CI job's token) may use
/// only its issuer's `routes` and `logins`, and no jump-host pipe (which has no
/// login to check); an issuer no longer configured admits nothing. A person's
/// binding passes.
fn workload_limits(
    principal: &Principal,
    config: &Config,
    route: &str,
    login: Option<&str>,
) -> Result<(), AccessDenied> {
    let user = principal.binding.user_id.as_str();
    if !user.starts_with(tether_core::config::WORKLOAD_PREFIX) {
        return Ok(());
    }
    let deny = |message: String| AccessDenied::Policy {
        route: route.to_string(),
        message,
        key_specific: false,
        codes: vec!["workload-limits"],
    };
    let Some(issuer) = config.workload_issuer_of(user) else {
        return Err(deny("the workload's issuer is no longer trusted".into()));
    };
    if !issuer.routes.iter().any(|r| r == route) {
        return Err(deny(format!(
            "this workload may use only {}",
            issuer.routes.join(", ")
        )));
    }
    match login {
        Some(l) if issuer.logins.iter().any(|x| x == l) => Ok(()),
        Some(l) => Err(deny(format!(
            "this workload may not log in as {l:?} (only {})",
            issuer.logins.join(", ")
        ))),
        None => Err(deny("a workload may not open a jump-host pipe".into())),
    }
}

/// The names of the routes `principal` may use, in configuration order (the
/// `routes` command and the portal's list; see [`access::may_list`]).
pub(crate) fn listable(principal: &Principal, config: &Config, now: Timestamp) -> Vec<String> {
    let request = principal.request(None, now);
    config
        .routes
        .iter()
        .filter(|r| access::may_list(r, &request))
        .map(|r| r.name.clone())
        .collect()
}

/// What connecting an upstream needs: the user CA, the host-key trust (from the
/// configuration in force and the store's pins) and the metrics.
pub(crate) struct Upstreams {
    pub(crate) user_ca: Arc<PrivateKey>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: LiveConfig,
    pub(crate) metrics: Arc<Metrics>,
}

/// Connects `grant`'s upstream for `principal`: host key checked, certificate
/// login, metrics and the audit event. Upstream channels and its disconnect arrive
/// on `events`.
pub(crate) async fn connect(
    upstreams: &Upstreams,
    principal: &Principal,
    grant: &AccessGranted,
    via: Via,
    events: mpsc::Sender<UpstreamEvent>,
) -> Result<Upstream, UpstreamError> {
    let host_keys = HostKeyCheck::from_config(&upstreams.config.get(), upstreams.store.clone());
    let started = Instant::now();
    let result = upstream::connect(grant, &upstreams.user_ca, &host_keys, events).await;
    record(
        upstreams,
        principal,
        grant,
        via,
        started,
        result.as_ref().map(|up| up.target().address.as_str()),
    );
    result
}

/// The metrics and the audit event of one connect attempt.
fn record(
    upstreams: &Upstreams,
    principal: &Principal,
    grant: &AccessGranted,
    via: Via,
    started: Instant,
    result: Result<&str, &UpstreamError>,
) {
    let elapsed = started.elapsed();
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let target = grant.target();
    let route = target.route.clone();
    // The upstream reached (with several, maybe not the first), else the first.
    let address = result.map_or_else(|_| target.address.clone(), str::to_string);
    let login = grant.login().unwrap_or_default().to_string();
    let email = principal.identity().email.clone();
    let conn = principal.conn;
    match result {
        Ok(_) => {
            upstreams.metrics.upstream_connect.observe(elapsed);
            AuditEvent::UpstreamConnected {
                conn,
                via,
                route,
                address,
                login,
                email,
                elapsed_ms,
                policy: grant.reasons().to_vec(),
            }
            .emit();
        }
        Err(e) => {
            upstreams
                .metrics
                .upstream_connect_failures
                .fetch_add(1, Ordering::Relaxed);
            let detail = std::error::Error::source(e)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            AuditEvent::UpstreamFailed {
                conn,
                via,
                route,
                address,
                login,
                email,
                elapsed_ms,
                error: format!("{e}{detail}"),
            }
            .emit();
        }
    }
}

/// A principal for unit tests: `alice@example.com` (subject `u`) in `groups`, with
/// a binding valid for a long time and an empty key.
#[cfg(test)]
pub(crate) fn test_principal(groups: &[&str]) -> Principal {
    use std::collections::BTreeMap;
    let mut claims = BTreeMap::new();
    claims.insert("groups".to_string(), serde_json::json!(groups));
    let far = Timestamp(i64::MAX / 2);
    Principal {
        conn: 1,
        binding: ClientBinding {
            id: "sshkey-SHA256:test".into(),
            fingerprint: "SHA256:test".into(),
            key_type: "ssh-ed25519".into(),
            user_id: "u".into(),
            email: "alice@example.com".into(),
            session_id: "s".into(),
            issued_at: Timestamp(0),
            expires_at: far,
            details: Default::default(),
            last_used: None,
        },
        session: Session {
            id: "s".into(),
            identity: Identity {
                subject: "u".into(),
                email: "alice@example.com".into(),
                name: None,
                claims,
            },
            issued_at: Timestamp(0),
            expires_at: far,
        },
        fingerprint: "SHA256:test".into(),
        key: KeyInput::default(),
        source: IpAddr::from([127, 0, 0, 1]),
    }
}

/// The recorder of `principal`'s connection to `route` as `login`, when the route
/// is recorded (`session_recording`); `replica` names this replica in the
/// recordings' live session ids.
pub(crate) fn recorder(
    config: &Config,
    directory: Option<&std::path::Path>,
    replica: &str,
    principal: &Principal,
    route: &str,
    login: &str,
) -> Option<Recorder> {
    let settings = *config.recording_of(route)?;
    let identity = principal.identity();
    Some(Recorder {
        settings,
        directory: directory.map(std::path::Path::to_path_buf),
        max_size: config.recording_storage.max_size,
        conn: principal.conn,
        session_id: tether_core::connection::session_id(replica, principal.conn),
        route: route.to_string(),
        login: login.to_string(),
        user_id: identity.subject.clone(),
        email: identity.email.clone(),
        fingerprint: principal.fingerprint.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tether_core::config::Route;
    use tether_core::policy::{Block, Criterion, Op, Policy, Rule};

    fn route(name: &str, criteria: Option<Vec<Criterion>>, any: bool) -> Route {
        Route {
            name: name.into(),
            to: "10.0.0.5:22".into(),
            failover: Vec::new(),
            allow_any_authenticated_user: any,
            policy: criteria.map(|criteria| Policy {
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

    #[test]
    fn lists_allowed_routes_without_login_rules() {
        let mut config = crate::test_config();
        config.routes = vec![
            route("prod", None, true),
            route(
                "sre",
                Some(vec![Criterion::Groups(vec!["sre".into()])]),
                false,
            ),
            route("locked", None, false),
            route(
                "mine",
                Some(vec![Criterion::SshUsernameMatchesEmail]),
                false,
            ),
            route(
                "dev",
                Some(vec![Criterion::Groups(vec!["dev".into()])]),
                false,
            ),
        ];
        let principal = test_principal(&["dev"]);
        assert_eq!(
            listable(&principal, &config, Timestamp(1_000)),
            vec!["prod", "mine", "dev"]
        );
    }

    /// `source_ip` is decided on the connection's peer address, whichever path
    /// asks (the re-check included), and the `routes` list follows it.
    #[test]
    fn source_ip_uses_the_connection_peer() {
        let mut config = crate::test_config();
        let only_local = tether_core::policy::Cidr::parse("127.0.0.1/32").unwrap();
        config.routes = vec![route(
            "local",
            Some(vec![
                Criterion::AuthenticatedUser,
                Criterion::SourceIp(vec![only_local]),
            ]),
            false,
        )];
        let now = Timestamp(1_000);
        let mut principal = test_principal(&[]);
        for via in [Via::Route, Via::Portal, Via::Jump, Via::Recheck] {
            assert!(authorize(&principal, &config, "local", Some("alice"), via, now).is_ok());
        }
        assert_eq!(listable(&principal, &config, now), vec!["local"]);
        principal.source = std::net::IpAddr::from([127, 0, 0, 2]);
        for via in [Via::Route, Via::Portal, Via::Jump, Via::Recheck] {
            let err = authorize(&principal, &config, "local", Some("alice"), via, now).unwrap_err();
            assert_eq!(
                err.to_string(),
                "access denied: route \"local\": source address 127.0.0.2 is not allowed"
            );
        }
        assert!(listable(&principal, &config, now).is_empty());
    }

    /// Every path decides through the same function: the same principal, route and
    /// login get the same answer whichever path asks, and a jump pipe (no login) is
    /// denied a login-restricted route that the route path allows.
    #[test]
    fn one_decision_for_every_path() {
        let mut config = crate::test_config();
        config.routes = vec![route(
            "mine",
            Some(vec![Criterion::SshUsernameMatchesEmail]),
            false,
        )];
        let principal = test_principal(&[]);
        let now = Timestamp(1_000);
        for via in [Via::Route, Via::Portal, Via::Recheck] {
            assert!(authorize(&principal, &config, "mine", Some("alice"), via, now).is_ok());
            let err = authorize(&principal, &config, "mine", Some("root"), via, now).unwrap_err();
            assert!(
                err.to_string().starts_with("access denied: route \"mine\""),
                "{err}"
            );
        }
        assert!(authorize(&principal, &config, "mine", None, Via::Jump, now).is_err());
        assert_eq!(
            authorize(&principal, &config, "nope", Some("alice"), Via::Route, now)
                .unwrap_err()
                .to_string(),
            "route \"nope\" not found"
        );
    }
}
