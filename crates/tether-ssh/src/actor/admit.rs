//! Admission of an authenticated key (SPEC §3.3, §6, §8): for a route connection,
//! the route's policy decides ([`crate::access::authorize`]), then the upstream is
//! connected ([`crate::relay`]) while the client still waits in authentication;
//! only then is the connection accepted and registered as live.
//!
//! Outcomes the client sees: allow → success; a denial on a key-specific criterion
//! (`ssh_publickey`, `ssh_ca`) → failure with `publickey` still offered, so the
//! client tries its next key; any other denial, an unknown route or a failed
//! upstream connection → the one-line reason as the DISCONNECT message right after
//! USERAUTH_SUCCESS (see [`Actor::deny`]). Route-less connections (internal CLI)
//! admit any signed-in user.

use std::sync::Arc;

use russh::server::Auth;
use russh::{MethodKind, MethodSet};

use super::auth::reject;
use super::channels::{Authed, AuthedInit};
use super::limits::LimitExceeded;
use super::{Actor, Phase};
use crate::access::{authorize, AccessGranted, AccessRequest};
use crate::registry::{LiveAccess, Revoker};
use crate::relay::{self, Relay};
use crate::upstream::{HostKeyCheck, UpstreamEvent};

fn publickey() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey][..])
}

/// How connecting the upstream during authentication ended badly.
enum NotConnected {
    /// Refuse the client with this line.
    Refuse(String),
    /// The client left; nothing to tell.
    PeerGone,
}

impl Actor {
    /// Ends an authenticated client's connection with `text` (unknown route, policy
    /// denial, upstream failure): the DISCONNECT carrying it is queued, then the
    /// request is *accepted*, so it reaches the client right behind
    /// USERAUTH_SUCCESS. A failure would do for interactive OpenSSH (see
    /// [`Actor::refuse`]), but in BatchMode (scp, rsync, git, scripts) OpenSSH gives
    /// up on the failure with `Permission denied (keyboard-interactive)` and never
    /// reads the reason; after a success every client reads the DISCONNECT and
    /// prints `Received disconnect from ...: <text>`. Nothing is granted: the
    /// connection stays in the authentication phase (every channel is refused)
    /// and closes.
    pub(super) async fn deny(&mut self, text: &str) -> Auth {
        tracing::info!(reason = text, "access refused after authentication");
        self.disconnect_now(text).await;
        Auth::Accept
    }

    /// A valid binding for the key: decide the route's policy, activate the registry
    /// entry, connect the upstream, and switch to the authenticated phase.
    pub(super) async fn accept(&mut self, mut init: AuthedInit, via: &'static str) -> Auth {
        let grant = match self.decide(&init) {
            Ok(grant) => grant,
            Err(verdict) => return verdict.apply(self).await,
        };
        let registration = &init.registration;
        registration.activate(&init.session.id);
        registration.set_access(LiveAccess {
            identity: init.session.identity.clone(),
            key: init.key.clone(),
            binding_expires_at: init.binding.expires_at,
            routes: init
                .user
                .route
                .iter()
                .map(|r| (r.clone(), Some(init.user.login.clone())))
                .collect(),
        });
        let revoker = registration.revoker();
        if revoker.is_revoked() {
            let reason = revoker.revoked().await;
            return self.deny(&format!("access revoked: {reason}")).await;
        }
        if let Some(grant) = &grant {
            match self.connect_upstream(grant, revoker).await {
                Ok((relay, events)) => {
                    init.relay = Some(relay);
                    self.upstream_events = Some(events);
                }
                Err(NotConnected::Refuse(text)) => return self.deny(&text).await,
                Err(NotConnected::PeerGone) => {
                    self.closing = true;
                    self.ended_by = Some("client left while connecting upstream".to_string());
                    return reject();
                }
            }
        }
        if let Err(e) = self
            .ctx
            .store
            .touch_binding(&init.binding.id, self.ctx.clock.now())
            .await
        {
            tracing::warn!("recording the binding's use failed: {e}");
        }
        self.span
            .record("user", init.session.identity.email.as_str());
        tracing::info!(
            target: "audit",
            event = "ssh_authenticated",
            via,
            user_id = %init.binding.user_id,
            email = %init.session.identity.email,
            binding = %init.binding.id,
            login = %init.user.login,
            route = init.user.route.as_deref().unwrap_or("-"),
            policy = ?grant.as_ref().map(AccessGranted::reasons),
        );
        self.phase = Phase::Authed(Box::new(Authed::new(init)));
        // Authenticated: no longer counted among the unauthenticated.
        self.slot = None;
        Auth::Accept
    }

    /// The route's policy for a connection about to be accepted: `Ok(None)` for a
    /// route-less connection (any signed-in user), `Ok(Some)` when allowed.
    fn decide(&self, init: &AuthedInit) -> Result<Option<AccessGranted>, Verdict> {
        let Some(route) = &init.user.route else {
            return Ok(None);
        };
        let config = self.ctx.current_config();
        let request = AccessRequest {
            identity: &init.session.identity,
            login: Some(&init.user.login),
            key: &init.key,
            binding_expires_at: init.binding.expires_at,
            now: self.ctx.clock.now(),
        };
        match authorize(config.route(route), route, &request) {
            Ok(grant) => Ok(Some(grant)),
            Err(denied) => {
                tracing::info!(
                    target: "audit",
                    event = "policy_denied",
                    route = %route,
                    login = %init.user.login,
                    email = %init.session.identity.email,
                    fingerprint = %init.fingerprint,
                    reason = %denied,
                    key_specific = denied.key_specific(),
                );
                if denied.key_specific() {
                    Err(Verdict::NextKey)
                } else {
                    Err(Verdict::Refuse(denied.to_string()))
                }
            }
        }
    }

    /// Connects the route's upstream while the client waits in authentication; a
    /// revocation, shutdown or the client leaving cuts the wait short.
    async fn connect_upstream(
        &mut self,
        grant: &AccessGranted,
        revoker: Arc<Revoker>,
    ) -> Result<(Relay, tokio::sync::mpsc::Receiver<UpstreamEvent>), NotConnected> {
        let config = self.ctx.current_config();
        let host_keys = HostKeyCheck::from_config(&config, self.ctx.store.clone());
        let ca = self.ctx.user_ca.clone();
        let probe = self.conn.probe.clone();
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            r = relay::connect(grant, &ca, &host_keys, self.ctx.registry.metrics().clone()) => r,
            reason = revoker.revoked() => {
                return Err(NotConnected::Refuse(format!("access revoked: {reason}")))
            }
            () = self.shutdown.cancelled() => {
                return Err(NotConnected::Refuse("server shutting down".to_string()))
            }
            () = probe.peer_closed() => return Err(NotConnected::PeerGone),
        };
        let metrics = self.ctx.registry.metrics();
        crate::upstream::record_connect(
            metrics,
            grant,
            "route",
            started,
            result.as_ref().map(|_| ()),
        );
        result.map_err(|e| NotConnected::Refuse(e.to_string()))
    }
}

/// A verdict other than success, decided before the upstream is connected.
enum Verdict {
    /// Failure with `publickey` still offered: the client may try its next key.
    NextKey,
    /// Refuse and disconnect with this line.
    Refuse(String),
}

impl Verdict {
    async fn apply(self, actor: &mut Actor) -> Auth {
        match self {
            Verdict::Refuse(text) => actor.deny(&text).await,
            Verdict::NextKey => {
                let limit = actor.auth_state().map(|s| s.limits.failure());
                if let Some(Err(e @ LimitExceeded::Failures)) = limit {
                    return actor.refuse(&e.to_string()).await;
                }
                Auth::Reject {
                    proceed_with_methods: Some(publickey()),
                    partial_success: false,
                }
            }
        }
    }
}
