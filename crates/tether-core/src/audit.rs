//! The audit trail: every security-relevant thing tether does is one [`AuditEvent`],
//! written by the web side and the SSH side alike. The set is closed (one enum),
//! each variant has fixed fields, and its JSON form is the schema documented in
//! `docs/AUDIT.md`: `{"event": "<name>", ...fields}`; the audit file adds `time`.
//!
//! [`AuditEvent::emit`] hands the event to `tracing` (target `audit`) as its one
//! JSON object, so it shows in the console log and reaches the `audit_log` file,
//! whose writer turns it into one JSON line.

use serde::Serialize;

/// Where a decision or action came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A `login@route` SSH connection.
    Route,
    /// The interactive portal of the internal CLI.
    Portal,
    /// A jump-host (`direct-tcpip`) pipe.
    Jump,
    /// The re-check of live connections (minutely, on config reload).
    Recheck,
    /// The web app (a browser).
    Web,
    /// The internal CLI over SSH (`ssh gateway logout`).
    Ssh,
    /// Remember me: an identity binding approved the code at once.
    RememberMe,
    /// A client binding that already existed for the key.
    Binding,
    /// A sign-in code approved in the browser during this connection.
    SignIn,
    /// The administrator command line (`tether bindings ...`).
    Admin,
}

/// One audit event; see the module docs and `docs/AUDIT.md`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A person signed in at the IdP: a web session exists.
    SignIn {
        user_id: String,
        email: String,
        session_expires: String,
    },
    /// A web session ended (sign-out page or `ssh gateway logout`), with every
    /// client binding made through it.
    SignOut {
        via: Via,
        user_id: String,
        email: String,
        revoked_bindings: usize,
    },
    /// A sign-in code was shown to an SSH client for a key with no binding.
    CodeIssued {
        conn: u64,
        peer: String,
        fingerprint: String,
        expires_at: String,
    },
    /// A sign-in code was decided: approved or denied in the browser, or it
    /// expired or was abandoned while the SSH client waited.
    CodeDecided {
        via: Via,
        outcome: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        binding_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        remembered: Option<bool>,
    },
    /// A decision on a code was refused (not the code's owner, expired, …).
    CodeDecisionRefused {
        outcome: String,
        user_id: String,
        reason: String,
    },
    /// A signed-in user bound a pasted public key to themselves on the bindings
    /// page (no SSH connection), or was refused.
    KeyPreAuthorized {
        user_id: String,
        email: String,
        fingerprint: String,
        /// `sshkey-SHA256:…`; empty when refused.
        binding_id: String,
        /// Unix seconds; 0 when refused.
        expires_at: i64,
        /// `bound`, or why not.
        outcome: String,
    },
    /// A job's OIDC token bound a key (`POST /.tether/api/v1/workload-bindings`).
    WorkloadBindingCreated {
        source: String,
        /// `workload:<issuer>#<sub>`.
        user_id: String,
        issuer: String,
        subject: String,
        fingerprint: String,
        binding_id: String,
        /// Unix seconds.
        expires_at: i64,
    },
    /// A workload binding request was refused (the token itself is never logged).
    WorkloadBindingRefused {
        source: String,
        /// Empty when the token did not verify.
        issuer: String,
        subject: String,
        reason: String,
    },
    /// A client binding was revoked (its connections end).
    BindingRevoked {
        via: Via,
        binding_id: String,
        /// Whose binding it was.
        user: String,
        /// Who revoked it.
        by: String,
        reason: String,
    },
    /// A revoke was refused (not the owner, unknown binding).
    BindingRevokeRefused {
        user_id: String,
        binding_id: String,
        reason: String,
    },
    /// An identity binding (Remember me) was removed.
    IdentityBindingRemoved {
        user_id: String,
        email: String,
        fingerprint: String,
        /// Who removed it (the owner, or an administrator).
        by: String,
    },
    /// Removing an identity binding was refused.
    IdentityBindingRevokeRefused {
        user_id: String,
        fingerprint: String,
        reason: String,
    },
    /// A TCP connection finished the SSH handshake.
    ConnectionOpened {
        conn: u64,
        peer: String,
        client_version: String,
    },
    /// An SSH connection ended.
    ConnectionClosed {
        conn: u64,
        peer: String,
        duration_ms: u64,
        bytes_in: u64,
        bytes_out: u64,
        authenticated: bool,
        ended_by: String,
    },
    /// An SSH connection authenticated (a valid binding, then the route's policy).
    SshAuthenticated {
        conn: u64,
        via: Via,
        user_id: String,
        email: String,
        binding_id: String,
        fingerprint: String,
        login: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        route: Option<String>,
        /// The reason codes that allowed the route (empty: route-less CLI).
        policy: Vec<String>,
    },
    /// A route's policy denied (the one place: admission's `authorize`).
    PolicyDenied {
        conn: u64,
        via: Via,
        route: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        login: Option<String>,
        user_id: String,
        email: String,
        fingerprint: String,
        reason: String,
        key_specific: bool,
    },
    /// tether logged in to a route's upstream.
    UpstreamConnected {
        conn: u64,
        via: Via,
        route: String,
        address: String,
        login: String,
        email: String,
        elapsed_ms: u64,
        policy: Vec<String>,
    },
    /// Connecting a route's upstream failed.
    UpstreamFailed {
        conn: u64,
        via: Via,
        route: String,
        address: String,
        login: String,
        email: String,
        elapsed_ms: u64,
        error: String,
    },
    /// A route connection asked for something its route's `ssh_permit` does not
    /// allow (a pty, agent, X11 or port forwarding), and tether refused it.
    PermitRefused {
        conn: u64,
        route: String,
        login: String,
        /// The SSH request or channel type (`pty-req`, `auth-agent-req`,
        /// `x11-req`, `direct-tcpip`, `tcpip-forward`).
        request: String,
        /// The `ssh_permit` switch that is off (`pty`, `agent_forwarding`, ...).
        permit: String,
    },
    /// A jump-host pipe to a route was opened.
    JumpOpened {
        conn: u64,
        route: String,
        email: String,
    },
    /// A jump-host pipe ended.
    JumpClosed {
        conn: u64,
        route: String,
        bytes_to_upstream: u64,
        bytes_to_client: u64,
    },
    /// A session the portal relayed ended.
    PortalSessionEnded {
        conn: u64,
        route: String,
        end: String,
        bytes_to_upstream: u64,
        bytes_to_client: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
    },
    /// Someone ended one live SSH connection (operator console, bindings page,
    /// `tether sessions kill`).
    LiveSessionEnded {
        via: Via,
        /// The live session id.
        session: String,
        /// Whose connection it was.
        user: String,
        /// Who ended it.
        by: String,
    },
    /// An administrator cut a user off: every binding, remembered key and web
    /// session removed.
    UserCutOff {
        via: Via,
        user_id: String,
        /// Who was cut off.
        user: String,
        /// Who cut them off.
        by: String,
        client_bindings: usize,
        identity_bindings: usize,
        sessions: usize,
    },
    /// Someone who is not an administrator asked for the operator console or one
    /// of its actions.
    ConsoleRefused {
        user_id: String,
        email: String,
        action: String,
    },
    /// Live connections were ended by a revocation, sign-out or policy change.
    ConnectionsRevoked { count: usize, reason: String },
    /// A recorded session channel started: its recording file is being written.
    RecordingStarted {
        conn: u64,
        recording: String,
        route: String,
        login: String,
        user_id: String,
        email: String,
        /// shell, exec or subsystem.
        kind: String,
        /// The command line or subsystem name.
        command: String,
    },
    /// A recording could not be written; `refused`: the session was refused or
    /// ended for it (`fail_closed`).
    RecordingFailed {
        conn: u64,
        route: String,
        user_id: String,
        email: String,
        reason: String,
        refused: bool,
    },
    /// A recording ended with its channel.
    RecordingEnded {
        conn: u64,
        recording: String,
        bytes: u64,
        /// It reached the size cap and stopped early.
        truncated: bool,
    },
    /// A command (`ssh host cmd`) ended on a recorded route.
    SessionCommand {
        conn: u64,
        route: String,
        login: String,
        user_id: String,
        email: String,
        command: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_signal: Option<String>,
        bytes_to_upstream: u64,
        bytes_to_client: u64,
        duration_ms: u64,
        /// Its recording, when the route records command output.
        #[serde(skip_serializing_if = "Option::is_none")]
        recording: Option<String>,
    },
    /// An SFTP file operation on a recorded route (read from the relayed stream).
    SftpOperation {
        conn: u64,
        route: String,
        login: String,
        user_id: String,
        email: String,
        /// open (failed), close, remove, rename, mkdir, rmdir, setstat, symlink,
        /// hardlink, copy-data, extended, unparsed.
        op: String,
        path: String,
        /// The new path of a rename or symlink.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// How a file was opened (`read`, `write`, `read-write`).
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        /// Bytes read from the file (close).
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes_read: Option<u64>,
        /// Bytes written to the file (close).
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes_written: Option<u64>,
        /// The server's answer: ok, or the SFTP status (no such file, permission
        /// denied, ...).
        status: String,
    },
    /// A recording was played back or downloaded.
    RecordingViewed {
        recording: String,
        /// Whose session it was.
        owner: String,
        /// Who watched it.
        by: String,
    },
    /// Someone asked for a recording they may not see.
    RecordingRefused {
        recording: String,
        user_id: String,
        email: String,
        reason: String,
    },
    /// The configuration was reloaded.
    ConfigReloaded {
        routes: usize,
        connections_ended: usize,
    },
}

impl AuditEvent {
    /// The event's name (the `event` field).
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::SignIn { .. } => "sign_in",
            AuditEvent::SignOut { .. } => "sign_out",
            AuditEvent::CodeIssued { .. } => "code_issued",
            AuditEvent::CodeDecided { .. } => "code_decided",
            AuditEvent::CodeDecisionRefused { .. } => "code_decision_refused",
            AuditEvent::KeyPreAuthorized { .. } => "key_pre_authorized",
            AuditEvent::WorkloadBindingCreated { .. } => "workload_binding_created",
            AuditEvent::WorkloadBindingRefused { .. } => "workload_binding_refused",
            AuditEvent::BindingRevoked { .. } => "binding_revoked",
            AuditEvent::BindingRevokeRefused { .. } => "binding_revoke_refused",
            AuditEvent::IdentityBindingRemoved { .. } => "identity_binding_removed",
            AuditEvent::IdentityBindingRevokeRefused { .. } => "identity_binding_revoke_refused",
            AuditEvent::ConnectionOpened { .. } => "connection_opened",
            AuditEvent::ConnectionClosed { .. } => "connection_closed",
            AuditEvent::SshAuthenticated { .. } => "ssh_authenticated",
            AuditEvent::PolicyDenied { .. } => "policy_denied",
            AuditEvent::UpstreamConnected { .. } => "upstream_connected",
            AuditEvent::UpstreamFailed { .. } => "upstream_failed",
            AuditEvent::PermitRefused { .. } => "permit_refused",
            AuditEvent::JumpOpened { .. } => "jump_opened",
            AuditEvent::JumpClosed { .. } => "jump_closed",
            AuditEvent::PortalSessionEnded { .. } => "portal_session_ended",
            AuditEvent::LiveSessionEnded { .. } => "live_session_ended",
            AuditEvent::UserCutOff { .. } => "user_cut_off",
            AuditEvent::ConsoleRefused { .. } => "console_refused",
            AuditEvent::ConnectionsRevoked { .. } => "connections_revoked",
            AuditEvent::RecordingStarted { .. } => "recording_started",
            AuditEvent::RecordingFailed { .. } => "recording_failed",
            AuditEvent::RecordingEnded { .. } => "recording_ended",
            AuditEvent::SessionCommand { .. } => "session_command",
            AuditEvent::SftpOperation { .. } => "sftp_operation",
            AuditEvent::RecordingViewed { .. } => "recording_viewed",
            AuditEvent::RecordingRefused { .. } => "recording_refused",
            AuditEvent::ConfigReloaded { .. } => "config_reloaded",
        }
    }

    /// The event as one JSON object.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and booleans cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"event\":\"{}\"}}", self.name()))
    }

    /// Writes the event to the log (target `audit`; see the module docs).
    pub fn emit(&self) {
        let line = self.to_json();
        match self {
            AuditEvent::UpstreamFailed { .. }
            | AuditEvent::BindingRevokeRefused { .. }
            | AuditEvent::WorkloadBindingRefused { .. }
            | AuditEvent::IdentityBindingRevokeRefused { .. }
            | AuditEvent::CodeDecisionRefused { .. }
            | AuditEvent::ConsoleRefused { .. }
            | AuditEvent::RecordingFailed { .. }
            | AuditEvent::RecordingRefused { .. }
            | AuditEvent::PermitRefused { .. } => tracing::warn!(target: "audit", "{line}"),
            _ => tracing::info!(target: "audit", "{line}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_flat_with_the_event_name_first() {
        let e = AuditEvent::PolicyDenied {
            conn: 7,
            via: Via::Jump,
            route: "prod".into(),
            login: None,
            user_id: "u1".into(),
            email: "a@example.com".into(),
            fingerprint: "SHA256:x".into(),
            reason: "no".into(),
            key_specific: false,
        };
        let json = e.to_json();
        assert!(json.starts_with("{\"event\":\"policy_denied\""), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["via"], "jump");
        assert_eq!(v["conn"], 7);
        assert!(v.get("login").is_none(), "absent, not null");
        assert_eq!(v["event"], e.name());
    }
}
