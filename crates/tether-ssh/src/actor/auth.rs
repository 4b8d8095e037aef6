//! Authentication, exactly as SPEC §3 describes it.
//!
//! `none` fails with `publickey` as the only method. A verified public key with a
//! valid client binding succeeds; without one it earns a partial success that
//! requires `keyboard-interactive`, which shows the sign-in URL (one INFO_REQUEST,
//! zero prompts) and then holds the connection until the browser decides (`wait`).
//! Store failures fail closed: the client is refused with `gateway store
//! unavailable; try again later (ref <id>)` (`internal error (ref <id>)` for data
//! the store cannot decode). The limits of §3.5 are counted here.
//!
//! A key that would be accepted is handed to `admit` (route policy, upstream).

use std::borrow::Cow;

use russh::keys::{Certificate, HashAlg, PublicKey};
use russh::server::Auth;
use russh::{MethodKind, MethodSet};
use tether_core::binding::binding_id;
use tether_core::policy::KeyInput;
use tether_core::username::{parse_wire_user, WireUser};
use tether_core::{BindingDetails, BindingRequest, RequestStatus, UserCode};

use tether_core::audit::{AuditEvent, Via};

use super::channels::AuthedInit;
use super::limits::{AuthLimits, LimitExceeded};
use super::{Actor, Phase};
use crate::access::key_input;
use crate::admission::Principal;
use crate::error::{internal, store_failure};
use crate::events::AuthRequest;
use crate::wait::{self, Decision};

/// The keyboard-interactive name (§3.4).
const SIGN_IN_NAME: &str = "Please sign in to continue";

/// Clients known to show a keyboard-interactive name and instruction to the user
/// even when the request has no prompts (identification string prefixes): OpenSSH,
/// PuTTY and the tools built on its code (plink, WinSCP), Dropbear.
const SHOWS_INSTRUCTIONS: &[&str] = &[
    "SSH-2.0-OpenSSH",
    "SSH-2.0-PuTTY",
    "SSH-2.0-WinSCP",
    "SSH-2.0-dropbear",
];

/// What a client is shown when it must sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SignInText {
    /// INFO_REQUEST name.
    name: String,
    /// INFO_REQUEST instruction.
    instruction: String,
    /// An SSH_MSG_USERAUTH_BANNER sent just before the INFO_REQUEST.
    banner: Option<String>,
}

/// The sign-in text for a client. OpenSSH prints name and instruction each on its
/// own line and adds the line break itself (a trailing `\n` would show as a blank
/// line); Dropbear runs them together unless each ends with `\n`, and other clients
/// cope with the newline, so everyone but OpenSSH gets one. Some clients (Node's
/// `ssh2`, many libraries) answer a zero-prompt INFO_REQUEST by themselves and never
/// show it: every client not known to show it also gets the text as a banner, which
/// RFC 4252 allows before authentication succeeds (so OpenSSH, PuTTY and Dropbear
/// users do not see it twice).
fn sign_in_text(client_version: &str, url: &str) -> SignInText {
    if client_version.starts_with("SSH-2.0-OpenSSH") {
        return SignInText {
            name: SIGN_IN_NAME.to_string(),
            instruction: url.to_string(),
            banner: None,
        };
    }
    let shows = SHOWS_INSTRUCTIONS
        .iter()
        .any(|prefix| client_version.starts_with(prefix));
    SignInText {
        name: format!("{SIGN_IN_NAME}\n"),
        instruction: format!("{url}\n"),
        banner: (!shows).then(|| format!("{SIGN_IN_NAME}\n{url}\n")),
    }
}

/// A key that proved ownership but has no valid binding yet.
#[derive(Debug, Clone)]
struct PendingKey {
    wire_user: String,
    user: WireUser,
    key: PublicKey,
    /// The policy's view of the key (and certificate).
    key_input: KeyInput,
    fingerprint: String,
}

/// Authentication progress of one connection.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    pub(super) limits: AuthLimits,
    pending: Option<PendingKey>,
    /// The sign-in request whose URL was shown.
    request: Option<BindingRequest>,
    /// A banner to send with the next verdict (taken by the actor's loop).
    pub(super) banner: Option<String>,
    /// An authentication request arrived (the key exchange is done).
    pub(super) started: bool,
}

impl AuthState {
    /// Whether the client has been shown a sign-in link.
    pub(super) fn signing_in(&self) -> bool {
        self.request.is_some()
    }
}

fn keyboard_interactive() -> MethodSet {
    MethodSet::from(&[MethodKind::KeyboardInteractive][..])
}

pub(super) fn reject() -> Auth {
    Auth::Reject {
        proceed_with_methods: None,
        partial_success: false,
    }
}

impl Actor {
    pub(super) fn auth_state(&mut self) -> Option<&mut AuthState> {
        match &mut self.phase {
            Phase::Auth(s) => Some(s),
            Phase::Authed(_) => None,
        }
    }

    /// Answers one authentication request.
    pub(super) async fn on_auth(&mut self, user: &str, request: AuthRequest) -> Auth {
        if self.closing {
            return reject();
        }
        let Some(state) = self.auth_state() else {
            return reject();
        };
        if let Err(e) = state.limits.request() {
            return self.refuse(&e.to_string()).await;
        }
        match request {
            AuthRequest::None | AuthRequest::Password => self.fail().await,
            // PK_OK for every key russh can verify.
            AuthRequest::Offered(key) => {
                tracing::debug!(algorithm = %key.algorithm(), "key offered");
                Auth::Accept
            }
            AuthRequest::Verified { key, cert } => self.auth_key(user, key, cert.as_deref()).await,
            AuthRequest::Keyboard { responded: false } => self.start_sign_in(user).await,
            AuthRequest::Keyboard { responded: true } => self.finish_sign_in(user).await,
        }
    }

    /// A failure; the last one allowed also closes the connection.
    async fn fail(&mut self) -> Auth {
        let limit = self.auth_state().map(|s| s.limits.failure());
        if let Some(Err(e @ LimitExceeded::Failures)) = limit {
            return self.refuse(&e.to_string()).await;
        }
        reject()
    }

    /// Refuses and closes the connection with `text`.
    ///
    /// The DISCONNECT carrying `text` goes out right behind the failure. A client
    /// left without a method it can try gives up on the failure alone ("Permission
    /// denied") and never reads the DISCONNECT, so the failure names
    /// `keyboard-interactive`: OpenSSH (unless in batch mode) answers with one more
    /// request, reads the DISCONNECT, and prints `Received disconnect ...: <text>`.
    pub(super) async fn refuse(&mut self, text: &str) -> Auth {
        tracing::info!(reason = text, "authentication refused");
        self.disconnect_now(text).await;
        Auth::Reject {
            proceed_with_methods: Some(keyboard_interactive()),
            partial_success: false,
        }
    }

    /// `publickey` with a verified signature.
    async fn auth_key(
        &mut self,
        wire_user: &str,
        key: PublicKey,
        cert: Option<&Certificate>,
    ) -> Auth {
        let user = match parse_wire_user(wire_user) {
            Ok(u) => u,
            Err(e) => return self.refuse(&e.to_string()).await,
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let key_input = key_input(&key, cert);
        self.span.record("user", wire_user);
        self.span.record("fingerprint", fingerprint.as_str());
        if let Some(route) = &user.route {
            self.span.record("route", route.as_str());
        }
        // Register before reading, so a revocation committed after the read is seen.
        let registration = self.ctx.registry.register(&binding_id(&fingerprint));
        let now = self.ctx.clock.now();
        match self.ctx.store.binding_for_key(&fingerprint).await {
            Err(e) => {
                let text = store_failure("binding lookup failed", &e);
                return self.refuse(&text).await;
            }
            Ok(Some((binding, Some(session)))) if binding.is_valid(now, Some(&session)) => {
                let init = AuthedInit {
                    user,
                    principal: Principal {
                        conn: self.conn.id,
                        binding,
                        session,
                        fingerprint,
                        key: key_input,
                        source: self.peer.ip(),
                    },
                    registration,
                };
                return self.accept(init, Via::Binding).await;
            }
            Ok(_) => {}
        }
        drop(registration);
        if let Some(state) = self.auth_state() {
            let same_key = state
                .pending
                .as_ref()
                .is_some_and(|p| p.fingerprint == fingerprint && p.wire_user == wire_user);
            if !same_key {
                state.request = None;
            }
            state.pending = Some(PendingKey {
                wire_user: wire_user.to_string(),
                user,
                key,
                key_input,
                fingerprint,
            });
        }
        Auth::Reject {
            proceed_with_methods: Some(keyboard_interactive()),
            partial_success: true,
        }
    }

    /// First `keyboard-interactive` request: open (or reuse) the sign-in request and
    /// show its URL.
    async fn start_sign_in(&mut self, wire_user: &str) -> Auth {
        let pending = self
            .auth_state()
            .and_then(|s| s.pending.clone())
            .filter(|p| p.wire_user == wire_user);
        let Some(pending) = pending else {
            // Only after a publickey partial success.
            return self.fail().await;
        };
        // One connection holds at most one pending sign-in request: a client that
        // presents another key after a sign-in link was shown drops the first.
        self.abandon_sign_in().await;
        if !self
            .ctx
            .codes
            .take(self.peer.ip(), tokio::time::Instant::now())
        {
            self.ctx
                .registry
                .metrics()
                .connections_shed
                .inc("sign_in_codes");
            // `deny`, not `refuse`: OpenSSH gives up on a failed keyboard-interactive
            // without reading the DISCONNECT that carries the reason.
            return self
                .deny("too many sign-in requests from your address; try again later")
                .await;
        }
        let code = match UserCode::generate() {
            Ok(c) => c,
            Err(e) => return self.refuse(&internal("code generation failed", &e)).await,
        };
        let now = self.ctx.clock.now();
        let fresh = BindingRequest {
            code,
            fingerprint: pending.fingerprint.clone(),
            key_type: pending.key.algorithm().to_string(),
            public_key: pending
                .key
                .to_openssh()
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default(),
            details: BindingDetails {
                source_addr: self.peer.to_string(),
                client_version: self.conn.probe.client_version().unwrap_or_default(),
                route: pending.user.route.clone(),
                login: pending.user.login.clone(),
            },
            issued_at: now,
            expires_at: now.plus(self.ctx.config().ssh_sign_in_timeout),
            status: RequestStatus::Pending,
        };
        let request = match self.ctx.store.open_request(fresh, now).await {
            Ok(r) => r,
            Err(e) => {
                return self
                    .refuse(&store_failure("opening sign-in request failed", &e))
                    .await
            }
        };
        self.ctx
            .metrics
            .codes_issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        AuditEvent::CodeIssued {
            conn: self.conn.id,
            peer: self.peer.to_string(),
            fingerprint: request.fingerprint.clone(),
            expires_at: request.expires_at.rfc3339(),
        }
        .emit();
        let url = self.ctx.config().sign_in_url(request.code.as_str());
        let text = sign_in_text(&self.conn.probe.client_version().unwrap_or_default(), &url);
        if let Some(state) = self.auth_state() {
            state.request = Some(request);
            state.banner = text.banner;
        }
        if let Some(slot) = &self.slot {
            slot.signing_in();
        }
        Auth::Partial {
            name: Cow::Owned(text.name),
            instructions: Cow::Owned(text.instruction),
            prompts: Cow::Borrowed(&[]),
        }
    }

    /// The client answered the INFO_REQUEST: wait for the browser's decision.
    async fn finish_sign_in(&mut self, wire_user: &str) -> Auth {
        let (pending, request) = match self.auth_state() {
            Some(AuthState {
                pending: Some(p),
                request: Some(r),
                ..
            }) if p.wire_user == wire_user => (p.clone(), r.clone()),
            _ => return self.fail().await,
        };
        let code = request.code.as_str().to_string();
        let deadline = self.instant_at(request.expires_at).min(self.auth_deadline);
        let ctx = self.ctx.clone();
        let probe = self.conn.probe.clone();
        let guard = ctx.waiters.enter(&code);
        let decision = wait::decision(&*ctx.store, &code, deadline, &probe, &self.shutdown).await;
        let metrics = &self.ctx.metrics;
        let outcome = match &decision {
            Decision::Approved { .. } => "approved",
            Decision::Denied => "denied",
            Decision::Expired => "expired",
            Decision::PeerGone | Decision::Shutdown => "abandoned",
        };
        // Approvals and denials are audited where they are made (the web app).
        if matches!(outcome, "expired" | "abandoned") {
            AuditEvent::CodeDecided {
                via: Via::Ssh,
                outcome: outcome.to_string(),
                user_id: None,
                email: None,
                fingerprint: Some(pending.fingerprint.clone()),
                binding_id: None,
                remembered: None,
            }
            .emit();
        }
        metrics.codes_decided.inc(outcome);
        metrics
            .code_decision
            .observe(request.issued_at.until(self.ctx.clock.now()));
        match decision {
            Decision::Approved { binding_id } => self.accept_approved(pending, &binding_id).await,
            Decision::Denied => self.refuse("user has denied this code").await,
            Decision::Expired => {
                // Keep the expired request: its link then says "expired" rather than
                // "code invalid"; housekeeping purges it later.
                if let Some(state) = self.auth_state() {
                    state.request = None;
                }
                self.refuse("authentication request timeout").await
            }
            Decision::Shutdown => {
                self.drop_request(&code, guard.is_last()).await;
                self.refuse("server shutting down").await
            }
            Decision::PeerGone => {
                self.drop_request(&code, guard.is_last()).await;
                if let Some(state) = self.auth_state() {
                    state.request = None;
                }
                self.closing = true;
                self.ended_by = Some("client left during sign-in".to_string());
                reject()
            }
        }
    }

    /// The connection ended before its sign-in was decided: drop the pending
    /// request (unless another connection here still waits on the same code).
    pub(super) async fn abandon_sign_in(&mut self) {
        let code = match self.auth_state().and_then(|s| s.request.take()) {
            Some(r) => r.code.as_str().to_string(),
            None => return,
        };
        let ctx = self.ctx.clone();
        let guard = ctx.waiters.enter(&code);
        self.drop_request(&code, guard.is_last()).await;
    }

    async fn drop_request(&self, code: &str, last: bool) {
        if !last {
            return;
        }
        if let Err(e) = self.ctx.store.drop_request(code).await {
            tracing::warn!("dropping the sign-in request failed: {e}");
        }
    }

    /// The browser authorized: load the new binding and accept if it holds up.
    async fn accept_approved(&mut self, pending: PendingKey, binding_id: &str) -> Auth {
        let registration = self.ctx.registry.register(binding_id);
        let binding = match self.ctx.store.get_binding(binding_id).await {
            Ok(Some(b)) if b.fingerprint == pending.fingerprint => b,
            Ok(_) => return self.refuse("the sign-in is no longer valid").await,
            Err(e) => {
                return self
                    .refuse(&store_failure("loading the new binding failed", &e))
                    .await
            }
        };
        let session = match self.ctx.store.get_session(&binding.session_id).await {
            Ok(Some(s)) if binding.is_valid(self.ctx.clock.now(), Some(&s)) => s,
            Ok(_) => return self.refuse("the sign-in is no longer valid").await,
            Err(e) => {
                return self
                    .refuse(&store_failure("loading the web session failed", &e))
                    .await
            }
        };
        let init = AuthedInit {
            user: pending.user,
            principal: Principal {
                conn: self.conn.id,
                binding,
                session,
                fingerprint: pending.fingerprint,
                key: pending.key_input,
                source: self.peer.ip(),
            },
            registration,
        };
        self.accept(init, Via::SignIn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_text_per_client() {
        let url = "https://auth.example.com/.pomerium/sign_in?user_code=x";
        assert_eq!(
            sign_in_text("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", url),
            SignInText {
                name: "Please sign in to continue".to_string(),
                instruction: url.to_string(),
                banner: None,
            }
        );
        let dropbear = sign_in_text("SSH-2.0-dropbear_2022.83", url);
        assert_eq!(dropbear.name, "Please sign in to continue\n");
        assert_eq!(dropbear.instruction, format!("{url}\n"));
        assert_eq!(dropbear.banner, None, "Dropbear shows the instruction");
        assert_eq!(sign_in_text("SSH-2.0-PuTTY_Release_0.78", url).banner, None);
        for quiet in ["SSH-2.0-ssh2js1.16.0", "SSH-2.0-paramiko_5.1", ""] {
            let text = sign_in_text(quiet, url);
            assert_eq!(text.name, "Please sign in to continue\n");
            let banner = text.banner.unwrap_or_default();
            assert!(banner.contains(url), "{quiet}: {banner}");
        }
    }
}
