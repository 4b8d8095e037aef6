//! Live config reload (SPEC §2, §6): on SIGHUP and when the config file changes
//! (polled, debounced), the file is parsed again. A valid config replaces routes and
//! policies atomically (the SSH side's registry swaps it in and re-checks every live
//! connection, ending now-denied ones through the revocation path); an invalid one
//! is refused with its error logged and the old config stays in force. Settings that
//! only take effect at start (listeners, keys, IdP, storage) are reported as needing
//! a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tether_core::audit::AuditEvent;
use tether_core::config::Config;
use tether_ssh::Registry;
use tokio_util::sync::CancellationToken;

/// How often the file is checked for changes.
const POLL: Duration = Duration::from_millis(500);

/// Settings a reload cannot apply, by name, when they differ.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("address", old.address != new.address);
    check(
        "insecure_server",
        old.insecure_server != new.insecure_server,
    );
    check(
        "certificate_file",
        old.certificate_file != new.certificate_file
            || old.certificate_key_file != new.certificate_key_file,
    );
    check(
        "authenticate_service_url",
        old.authenticate_service_url != new.authenticate_service_url,
    );
    check("idp_*", old.idp != new.idp);
    check(
        "cookie_*",
        old.cookie_secret != new.cookie_secret
            || old.cookie_secret_file != new.cookie_secret_file
            || old.cookie_name != new.cookie_name
            || old.cookie_expire != new.cookie_expire,
    );
    check("ssh_address", old.ssh_address != new.ssh_address);
    check(
        "ssh_host_keys",
        old.ssh_host_key_files != new.ssh_host_key_files || old.ssh_host_keys != new.ssh_host_keys,
    );
    check(
        "ssh_user_ca_key",
        old.ssh_user_ca_key_file != new.ssh_user_ca_key_file
            || old.ssh_user_ca_key != new.ssh_user_ca_key,
    );
    check(
        "databroker_storage_*",
        old.storage_type != new.storage_type
            || old.storage_connection_string != new.storage_connection_string,
    );
    check("data_dir", old.data_dir != new.data_dir);
    check(
        "metrics_address",
        old.metrics_address != new.metrics_address,
    );
    check("log_format", old.log_format != new.log_format);
    check("audit_log", old.audit_log != new.audit_log);
    check(
        "idp_session_refresh_interval / idp_session_refresh_grace",
        old.session_refresh != new.session_refresh,
    );
    check(
        "ssh_binding_max_ttl / ssh_sign_in_timeout",
        old.ssh_binding_max_ttl != new.ssh_binding_max_ttl
            || old.ssh_sign_in_timeout != new.ssh_sign_in_timeout,
    );
    changed
}

fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Watches `path` until `shutdown`; applies valid changes to `registry`.
pub async fn watch(
    path: PathBuf,
    initial: Arc<Config>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; reloading on file change only");
            None
        }
    };
    let name = path.display().to_string();
    let mut last_text = read(&path).ok();
    let mut current = initial;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let Ok(text) = read(&path) else {
            if forced {
                tracing::warn!(file = %name, "config reload refused: cannot read the file; old config stays");
            }
            continue;
        };
        if !forced && last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        if !forced {
            // Debounce: editors write in several steps; wait until the text settles.
            tokio::time::sleep(POLL).await;
            match read(&path) {
                Ok(again) if again == text => {}
                _ => continue,
            }
        }
        last_text = Some(text.clone());
        // The same environment as at start lies over the file (`crate::source`).
        match crate::source::parse(Some(&text), &name) {
            Err(e) => {
                tracing::error!("config reload refused: {e}; the old config stays in force");
            }
            Ok(parsed) => {
                // The start-up rule holds for a reload too: inline secrets in a
                // file others can read are refused (fail closed, old config stays).
                if let Err(line) = crate::perms::check_config_file(&path, &parsed) {
                    tracing::error!("config reload refused: {line}; the old config stays in force");
                    continue;
                }
                for w in &parsed.warnings {
                    tracing::warn!("{w}");
                }
                let new = parsed.config;
                for setting in restart_only_changes(&current, &new) {
                    tracing::warn!(
                        setting,
                        "config reload: {setting} changed; restart tether to apply it"
                    );
                }
                let ended = registry.recheck_policies(&new);
                tracing::info!(
                    routes = new.routes.len(),
                    connections_ended = ended,
                    "config reloaded"
                );
                AuditEvent::ConfigReloaded {
                    routes: new.routes.len(),
                    connections_ended: ended,
                }
                .emit();
                current = Arc::new(new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_core::config::parse_config;

    fn cfg(extra: &str) -> Config {
        parse_config(
            &format!(
                "authenticate_service_url: http://a\nidp_provider: oidc\nidp_provider_url: http://i\nidp_client_id: c\nidp_client_secret: s\n{extra}"
            ),
            "t.yaml",
        )
        .unwrap()
        .config
    }

    #[test]
    fn restart_only_settings_are_named() {
        let a = cfg("ssh_address: 127.0.0.1:2222\n");
        let b = cfg("ssh_address: 127.0.0.1:2223\nroutes:\n  - from: ssh://x\n    to: ssh://h\n    allow_any_authenticated_user: true\n");
        assert_eq!(restart_only_changes(&a, &b), vec!["ssh_address"]);
        assert!(restart_only_changes(&a, &a).is_empty());
    }
}
