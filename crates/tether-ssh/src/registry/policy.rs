//! Live policy re-checks (SPEC §6): every authenticated connection remembers what it
//! was authorized for ([`LiveAccess`]: its [`Principal`] and each route with its
//! login — `None` for a jump-host pipe). [`Registry::recheck_policies`] asks
//! admission ([`crate::admission::authorize`], `Via::Recheck`) about all of them
//! under a configuration and ends the ones it now denies through the revocation
//! path, with the reason `access denied: route "x": <why>`. The SSH server runs it
//! every minute with the configuration in force; the process calls it on config
//! reload, which also makes that configuration the one in force ([`LiveConfig`]).
//!
//! Identities are not frozen either: when the web side refreshed a session's
//! identity at the IdP (`SessionRefreshed` on the store's feed, or a changed identity
//! seen by the periodic store re-check), [`Registry::follow_identity`] gives that
//! session's connections a principal with the fresh claims and re-checks them at
//! once; routes a connection takes on later (the portal, jump pipes) are checked
//! with the fresh principal as they are recorded.

use std::sync::Arc;
use std::time::Duration;

use tether_core::audit::Via;
use tether_core::config::Config;
use tether_core::{Session, Timestamp};
use tokio_util::sync::CancellationToken;

use super::{Registry, Revoker};
use crate::access::AccessDenied;
use crate::admission::{authorize, Principal};
use crate::live::LiveConfig;

/// How often the SSH server re-evaluates live connections' policies.
pub(crate) const POLICY_RECHECK_EVERY: Duration = Duration::from_secs(60);

/// What one live connection was authorized for.
#[derive(Clone, Debug)]
pub(crate) struct LiveAccess {
    pub(crate) principal: Arc<Principal>,
    /// Routes in use, with the login (`None`: jump-host pipe).
    pub(crate) routes: Vec<(String, Option<String>)>,
}

impl LiveAccess {
    pub(crate) fn add_route(&mut self, route: &str, login: Option<&str>) {
        let entry = (route.to_string(), login.map(str::to_string));
        if !self.routes.contains(&entry) {
            self.routes.push(entry);
        }
    }

    /// The first denial under `config`, as the revocation reason.
    pub(super) fn denial(&self, config: &Config, now: Timestamp) -> Option<String> {
        self.routes.iter().find_map(|(name, login)| {
            match authorize(
                &self.principal,
                config,
                name,
                login.as_deref(),
                Via::Recheck,
                now,
            ) {
                Ok(_) => None,
                Err(AccessDenied::NoRoute(_)) => Some(format!(
                    "access denied: route {name:?}: the route was removed"
                )),
                Err(denied) => Some(denied.to_string()),
            }
        })
    }
}

impl Registry {
    /// The configuration in force, once the SSH server started (or a reload set one).
    pub fn config(&self) -> Option<Arc<Config>> {
        self.live.get().map(LiveConfig::get)
    }

    /// The handle on the configuration in force, made from `config` unless one
    /// exists already (server start).
    pub(crate) fn adopt_config(&self, config: Arc<Config>) -> LiveConfig {
        self.live.get_or_init(|| LiveConfig::new(config)).clone()
    }

    /// Re-evaluates every live connection against `config`'s route policies and ends
    /// the ones now denied (`tether: access revoked: access denied: route "x": ...`).
    /// `config` becomes the configuration in force: new connections resolve routes
    /// in it, and the minutely re-check uses it. Returns how many connections were
    /// ended. Call it on config reload.
    pub fn recheck_policies(&self, config: &Config) -> usize {
        let config = Arc::new(config.clone());
        if let Some(live) = self.live.get() {
            live.replace(config.clone());
        } else {
            self.adopt_config(config.clone()).replace(config.clone());
        }
        self.recheck_with(&config)
    }

    /// Re-evaluates against the configuration in force (the minutely re-check).
    pub(crate) fn recheck_current(&self) -> usize {
        match self.config() {
            Some(config) => self.recheck_with(&config),
            None => 0,
        }
    }

    fn recheck_with(&self, config: &Config) -> usize {
        let live: Vec<(Arc<Revoker>, LiveAccess)> = self
            .lock()
            .values()
            .filter(|e| e.session_id.is_some() && !e.revoker.is_revoked())
            .filter_map(|e| Some((e.revoker.clone(), e.access.clone()?)))
            .collect();
        let now = self.clock.now();
        let mut ended = 0;
        for (revoker, access) in live {
            if let Some(reason) = access.denial(config, now) {
                tracing::info!(reason = %reason, "live connection no longer allowed");
                revoker.revoke(&reason);
                ended += 1;
            }
        }
        ended
    }

    /// Gives the live connections of `session` (its id) a principal with
    /// `session`'s identity when it differs from the one they hold (a refresh at the
    /// IdP), and ends those the configuration in force now denies. Returns how many
    /// connections were ended.
    pub(crate) fn follow_identity(&self, session: &Session) -> usize {
        let changed: Vec<(Arc<Revoker>, LiveAccess)> = {
            let mut entries = self.lock();
            entries
                .values_mut()
                .filter(|e| {
                    e.session_id.as_deref() == Some(session.id.as_str()) && !e.revoker.is_revoked()
                })
                .filter_map(|e| {
                    let access = e.access.as_mut()?;
                    if access.principal.session.identity == session.identity {
                        return None;
                    }
                    let mut principal = (*access.principal).clone();
                    principal.session.identity = session.identity.clone();
                    access.principal = Arc::new(principal);
                    Some((e.revoker.clone(), access.clone()))
                })
                .collect()
        };
        if changed.is_empty() {
            return 0;
        }
        tracing::info!(
            connections = changed.len(),
            user = %session.user_id(),
            "identity refreshed: re-checking live connections"
        );
        let Some(config) = self.config() else {
            return 0;
        };
        let now = self.clock.now();
        let mut ended = 0;
        for (revoker, access) in changed {
            if let Some(reason) = access.denial(&config, now) {
                tracing::info!(reason = %reason, "live connection no longer allowed");
                revoker.revoke(&reason);
                ended += 1;
            }
        }
        ended
    }

    /// Runs [`Registry::recheck_current`] every minute until `shutdown`.
    pub(crate) async fn recheck_policies_periodically(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) {
        let start = tokio::time::Instant::now() + POLICY_RECHECK_EVERY;
        let mut tick = tokio::time::interval_at(start, POLICY_RECHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let ended = self.recheck_current();
                    if ended > 0 {
                        tracing::info!(ended, "policy re-check ended connections");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tether_core::config::Route;
    use tether_core::policy::{Block, Criterion, Op, Policy, Rule};

    fn config(policy: Option<Criterion>, any: bool) -> Config {
        let mut c = crate::test_config();
        c.routes = vec![Route {
            name: "prod".into(),
            to: "127.0.0.1:22".into(),
            failover: Vec::new(),
            allow_any_authenticated_user: any,
            policy: policy.map(|c| Policy {
                rules: vec![Rule {
                    allow: Some(Block {
                        op: Op::And,
                        criteria: vec![c],
                    }),
                    deny: None,
                }],
            }),
            line: 1,
        }];
        c
    }

    fn access(login: Option<&str>) -> LiveAccess {
        LiveAccess {
            principal: Arc::new(crate::admission::test_principal(&["dev"])),
            routes: vec![("prod".into(), login.map(str::to_string))],
        }
    }

    #[tokio::test]
    async fn denied_connections_are_revoked_with_the_reason() {
        let reg = Arc::new(Registry::new());
        let a = reg.register("sshkey-A");
        a.activate("s1");
        a.set_access(access(Some("alice")));
        let root = reg.register("sshkey-B");
        root.activate("s2");
        root.set_access(access(Some("root")));
        let jump = reg.register("sshkey-C");
        jump.activate("s3");
        jump.set_access(access(None));
        let cli = reg.register("sshkey-D");
        cli.activate("s4");
        cli.set_access(LiveAccess {
            routes: vec![],
            ..access(None)
        });

        assert_eq!(reg.recheck_policies(&config(None, true)), 0);
        assert!(reg.config().is_some());
        let ended = reg.recheck_policies(&config(Some(Criterion::SshUsernameMatchesEmail), false));
        assert_eq!(ended, 2, "root, and the jump pipe (no login to check)");
        assert_eq!(
            root.revoker().revoked().await,
            format!("access denied: route \"prod\": {}", root_reason())
        );
        assert!(!a.revoker().is_revoked());
        assert_eq!(
            jump.revoker().revoked().await,
            "access denied: route \"prod\": the route's policy checks the login name, \
             which a jump-host connection does not have",
            "a login criterion cannot be evaluated on a jump pipe: it denies (issue 12)"
        );

        let ended =
            reg.recheck_policies(&config(Some(Criterion::Groups(vec!["sre".into()])), false));
        assert_eq!(ended, 1, "alice; root and the jump pipe are already ending");
        assert_eq!(
            a.revoker().revoked().await,
            "access denied: route \"prod\": not in group sre"
        );
        assert!(!cli.revoker().is_revoked(), "route-less connections stay");

        let mut gone = config(None, true);
        gone.routes.clear();
        let other = reg.register("sshkey-E");
        other.activate("s5");
        other.set_access(access(Some("alice")));
        assert_eq!(reg.recheck_policies(&gone), 1);
        assert_eq!(
            other.revoker().revoked().await,
            "access denied: route \"prod\": the route was removed"
        );
    }

    #[tokio::test]
    async fn refreshed_identities_are_followed_and_rechecked() {
        use tether_store::{MemoryStore, Store};
        let store = Arc::new(MemoryStore::new());
        let reg = Arc::new(Registry::new());
        reg.recheck_policies(&config(Some(Criterion::Groups(vec!["sre".into()])), false));
        let mut principal = crate::admission::test_principal(&["sre"]);
        principal.session.expires_at = reg.clock.now().plus(Duration::from_secs(3600));
        store.create_session(&principal.session).await.unwrap();
        let a = reg.register("sshkey-A");
        a.activate("s");
        a.set_access(LiveAccess {
            principal: Arc::new(principal.clone()),
            routes: vec![("prod".into(), Some("alice".into()))],
        });
        let other = reg.register("sshkey-B");
        other.activate("s-other");
        other.set_access(access(Some("alice")));
        let shutdown = CancellationToken::new();
        let watch = tokio::spawn(reg.clone().watch(store.clone(), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Same identity: nothing to do.
        assert_eq!(reg.follow_identity(&principal.session), 0);
        // Still in sre after the refresh: kept, and the entry holds the new claims.
        let mut fresh = principal.session.identity.clone();
        fresh
            .claims
            .insert("groups".into(), serde_json::json!(["sre", "ops"]));
        store
            .session_refreshed("s", &fresh, None, Timestamp(0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!a.revoker().is_revoked());
        // Removed from sre at the IdP: the refresh event ends the connection.
        fresh
            .claims
            .insert("groups".into(), serde_json::json!(["dev"]));
        store
            .session_refreshed("s", &fresh, None, Timestamp(0))
            .await
            .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(2), a.revoker().revoked())
            .await
            .unwrap();
        assert_eq!(reason, "access denied: route \"prod\": not in group sre");
        assert!(
            !other.revoker().is_revoked(),
            "another session's connection stays"
        );

        // A route recorded later is checked with the refreshed principal.
        let b = reg.register("sshkey-C");
        b.activate("s");
        b.set_access(LiveAccess {
            principal: Arc::new(principal.clone()),
            routes: vec![],
        });
        let mut s = principal.session.clone();
        s.identity = fresh.clone();
        reg.follow_identity(&s);
        assert!(!b.revoker().is_revoked(), "no route yet");
        b.routes().add("prod", Some("alice"));
        assert_eq!(
            b.revoker().revoked().await,
            "access denied: route \"prod\": not in group sre"
        );
        shutdown.cancel();
        watch.await.unwrap();
    }

    fn root_reason() -> String {
        let principal = access(None).principal;
        let c = config(Some(Criterion::SshUsernameMatchesEmail), false);
        match authorize(
            &principal,
            &c,
            "prod",
            Some("root"),
            Via::Recheck,
            Timestamp(0),
        ) {
            Err(AccessDenied::Policy { message, .. }) => message,
            other => panic!("{other:?}"),
        }
    }
}
