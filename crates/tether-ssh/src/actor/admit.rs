//! Admission of an authenticated key (SPEC §3.3, §6, §8): the connection's
//! [`Principal`] is made, and for a route connection the route's policy decides
//! ([`admission::authorize`]), then the upstream is connected
//! ([`admission::connect`]) while the client still waits in authentication; only
//! then is the connection accepted and registered as live.
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
use tether_core::audit::{AuditEvent, Via};
use tether_core::username::WireUser;
use tokio::sync::mpsc;

use super::auth::reject;
use super::channels::{Authed, AuthedInit};
use super::limits::LimitExceeded;
use super::{Actor, Phase};
use crate::access::AccessGranted;
use crate::admission::{self, Principal};
use crate::registry::{LiveAccess, Revoker, Shown};
use crate::relay::{Relay, UPSTREAM_EVENTS};
use crate::upstream::UpstreamEvent;

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

    /// A valid binding for the key: make the connection's [`Principal`], decide the
    /// route's policy, activate the registry entry, connect the upstream, and switch
    /// to the authenticated phase.
    pub(super) async fn accept(&mut self, init: AuthedInit, via: Via) -> Auth {
        let AuthedInit {
            user,
            principal,
            registration,
        } = init;
        let principal = Arc::new(principal);
        let grant = match self.decide(&principal, &user) {
            Ok(grant) => grant,
            Err(verdict) => return verdict.apply(self).await,
        };
        registration.activate(&principal.session.id);
        registration.set_access(LiveAccess {
            principal: principal.clone(),
            routes: user
                .route
                .iter()
                .map(|r| (r.clone(), Some(user.login.clone())))
                .collect(),
        });
        registration.show(Shown {
            conn: principal.conn,
            user_id: principal.binding.user_id.clone(),
            email: principal.identity().email.clone(),
            fingerprint: principal.fingerprint.clone(),
            route: user.route.clone(),
            login: user.login.clone(),
            source: self.peer.to_string(),
            started_at: self.ctx.clock.now(),
            probe: self.conn.probe.clone(),
        });
        let revoker = registration.revoker();
        if revoker.is_revoked() {
            let reason = revoker.revoked().await;
            return self.deny(&format!("access revoked: {reason}")).await;
        }
        let mut relay = None;
        if let Some(grant) = &grant {
            match self.connect_upstream(&principal, grant, revoker).await {
                Ok((connected, events)) => {
                    relay = Some(connected);
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
            .touch_binding(&principal.binding.id, self.ctx.clock.now())
            .await
        {
            tracing::warn!("recording the binding's use failed: {e}");
        }
        self.span
            .record("user", principal.identity().email.as_str());
        AuditEvent::SshAuthenticated {
            conn: principal.conn,
            via,
            user_id: principal.binding.user_id.clone(),
            email: principal.identity().email.clone(),
            binding_id: principal.binding.id.clone(),
            fingerprint: principal.fingerprint.clone(),
            login: user.login.clone(),
            route: user.route.clone(),
            policy: grant
                .as_ref()
                .map(|g| g.reasons().to_vec())
                .unwrap_or_default(),
        }
        .emit();
        let permit = grant
            .as_ref()
            .map(AccessGranted::permit)
            .unwrap_or_default();
        self.phase = Phase::Authed(Box::new(Authed::new(
            user,
            principal,
            registration,
            relay,
            permit,
        )));
        // Authenticated: no longer counted among the unauthenticated.
        self.slot = None;
        Auth::Accept
    }

    /// The route's policy for a connection about to be accepted: `Ok(None)` for a
    /// route-less connection (any signed-in user), `Ok(Some)` when allowed.
    fn decide(
        &self,
        principal: &Principal,
        user: &WireUser,
    ) -> Result<Option<AccessGranted>, Verdict> {
        let Some(route) = &user.route else {
            return Ok(None);
        };
        let config = self.ctx.config();
        let now = self.ctx.clock.now();
        match admission::authorize(
            principal,
            &config,
            route,
            Some(&user.login),
            Via::Route,
            now,
        ) {
            Ok(grant) => Ok(Some(grant)),
            Err(denied) if denied.key_specific() => Err(Verdict::NextKey),
            Err(denied) => Err(Verdict::Refuse(denied.to_string())),
        }
    }

    /// Connects the route's upstream while the client waits in authentication; a
    /// revocation, shutdown or the client leaving cuts the wait short.
    async fn connect_upstream(
        &mut self,
        principal: &Principal,
        grant: &AccessGranted,
        revoker: Arc<Revoker>,
    ) -> Result<(Relay, mpsc::Receiver<UpstreamEvent>), NotConnected> {
        let (tx, events) = mpsc::channel(UPSTREAM_EVENTS);
        let probe = self.conn.probe.clone();
        let ctx = self.ctx.clone();
        let connect = admission::connect(&ctx.upstreams, principal, grant, Via::Route, tx);
        let upstream = tokio::select! {
            r = connect => r.map_err(|e| NotConnected::Refuse(e.to_string()))?,
            reason = revoker.revoked() => {
                return Err(NotConnected::Refuse(format!("access revoked: {reason}")))
            }
            () = self.shutdown.cancelled() => {
                return Err(NotConnected::Refuse("server shutting down".to_string()))
            }
            () = probe.peer_closed() => return Err(NotConnected::PeerGone),
        };
        let mut relay = Relay::new(upstream, ctx.metrics.clone());
        let login = grant.login().unwrap_or_default();
        if let Some(recorder) = admission::recorder(
            &ctx.config(),
            ctx.recordings_dir.as_deref(),
            ctx.registry.replica(),
            principal,
            &grant.target().route,
            login,
        ) {
            relay.record(recorder);
        }
        Ok((relay, events))
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
