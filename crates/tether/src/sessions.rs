//! `tether sessions list|kill` and the identity side of `tether bindings revoke`
//! (`--remembered`, `--all-for`): the operator console's actions from a shell,
//! through the configured store — so they reach the gateway processes that publish
//! their live connections there (SQLite or PostgreSQL; not the `memory` store).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tether_core::audit::{AuditEvent, Via};
use tether_core::connection::{is_session_id, LiveSession};
use tether_core::time::human_duration;
use tether_core::{Clock, SystemClock};
use tether_store::Store;

/// How recent a replica's publication must be to count as live (the same window
/// the gateway's own pages use).
const FRESH_FOR: Duration = tether_ssh::LIVE_COUNTS_FRESH_FOR;

/// Who acts, for the audit log: the operating-system user running the command.
fn by(command: &str) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{user} ({command})")
}

async fn live(store: &dyn Store) -> anyhow::Result<Vec<LiveSession>> {
    let since = SystemClock.now().minus(FRESH_FOR);
    Ok(store.live_sessions(since).await?)
}

fn json_line(s: &LiveSession, now: tether_core::Timestamp) -> String {
    serde_json::json!({
        "id": s.id,
        "user_id": s.user_id,
        "email": s.email,
        "fingerprint": s.fingerprint,
        "binding_id": s.binding_id,
        "route": s.route,
        "login": s.login,
        "source": s.source,
        "client_version": s.client_version,
        "replica": s.replica,
        "started_at": s.started_at.rfc3339(),
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "idle_seconds": s.idle(now).as_secs(),
    })
    .to_string()
}

/// `tether sessions list [--user EMAIL] [--json]`: one line per live session,
/// its id first.
pub async fn list(store: &dyn Store, user: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    let sessions: Vec<LiveSession> = live(store)
        .await?
        .into_iter()
        .filter(|s| user.is_none_or(|u| u == s.user_id || u.eq_ignore_ascii_case(&s.email)))
        .collect();
    if json {
        for s in &sessions {
            println!("{}", json_line(s, now));
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<28} {:<22} {:<22} {:<24} {:<10} {:>10} {:>10} IDLE",
        "ID", "USER", "ROUTE AS LOGIN", "FROM", "CLIENT", "REPLICA", "IN", "OUT"
    );
    for s in &sessions {
        let route = match &s.route {
            Some(r) => format!("{r} as {}", s.login),
            None => format!("(cli) as {}", s.login),
        };
        println!(
            "{:<20} {:<28} {:<22} {:<22} {:<24} {:<10} {:>10} {:>10} {}",
            s.id,
            s.email,
            route,
            s.source,
            s.client_version,
            s.replica,
            s.bytes_in,
            s.bytes_out,
            human_duration(s.idle(now)),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tether sessions kill ID`: the replica holding it ends it (the client is told
/// `session ended by an administrator`).
pub async fn kill(store: &dyn Store, id: &str) -> anyhow::Result<ExitCode> {
    if !is_session_id(id) {
        eprintln!("tether: {id:?} is not a session id (see tether sessions list)");
        return Ok(ExitCode::FAILURE);
    }
    let Some(target) = live(store).await?.into_iter().find(|s| s.id == id) else {
        eprintln!("tether: no live session {id}");
        return Ok(ExitCode::FAILURE);
    };
    let by = by("tether sessions kill");
    let reason = format!("session ended by an administrator ({by})");
    store.end_live_session(id, &reason).await?;
    AuditEvent::LiveSessionEnded {
        via: Via::Admin,
        session: id.to_string(),
        user: target.email.clone(),
        by,
    }
    .emit();
    println!("ended {id} ({})", target.email);
    Ok(ExitCode::SUCCESS)
}

/// `tether bindings revoke --remembered FINGERPRINT`: forgets a remembered key.
pub async fn forget(store: &dyn Store, fingerprint: &str) -> anyhow::Result<ExitCode> {
    let fingerprint = tether_core::binding::fingerprint_of(fingerprint).unwrap_or(fingerprint);
    match store.revoke_identity_binding(fingerprint, None).await {
        Ok(ib) => {
            AuditEvent::IdentityBindingRemoved {
                user_id: ib.user_id.clone(),
                email: ib.email.clone(),
                fingerprint: ib.fingerprint.clone(),
                by: by("tether bindings revoke --remembered"),
            }
            .emit();
            println!("forgot {} ({})", ib.fingerprint, ib.email);
            Ok(ExitCode::SUCCESS)
        }
        Err(tether_store::RevokeError::NotFound) => {
            eprintln!("tether: no remembered key {fingerprint}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// The user id behind `who` (an email or a user id), from whatever names them.
async fn user_id_of(store: &dyn Store, who: &str) -> anyhow::Result<Option<(String, String)>> {
    let is = |id: &str, email: &str| id == who || email.eq_ignore_ascii_case(who);
    if let Some(b) = store
        .list_bindings(None)
        .await?
        .into_iter()
        .find(|b| is(&b.user_id, &b.email))
    {
        return Ok(Some((b.user_id, b.email)));
    }
    if let Some(i) = store
        .list_identity_bindings(None)
        .await?
        .into_iter()
        .find(|i| is(&i.user_id, &i.email))
    {
        return Ok(Some((i.user_id, i.email)));
    }
    Ok(live(store)
        .await?
        .into_iter()
        .find(|s| is(&s.user_id, &s.email))
        .map(|s| (s.user_id, s.email)))
}

/// `tether bindings revoke --all-for EMAIL`: cuts the user off — every client
/// binding, remembered key and web session, so every live connection ends.
pub async fn cut_off(store: Arc<dyn Store>, who: &str) -> anyhow::Result<ExitCode> {
    let Some((user_id, email)) = user_id_of(store.as_ref(), who).await? else {
        eprintln!("tether: no bindings, remembered keys or live sessions for {who}");
        return Ok(ExitCode::FAILURE);
    };
    let by = by("tether bindings revoke --all-for");
    let reason = format!("cut off by an administrator ({by})");
    let cut = store.cut_off_user(&user_id, &reason).await?;
    AuditEvent::UserCutOff {
        via: Via::Admin,
        user_id: user_id.clone(),
        user: email.clone(),
        by,
        client_bindings: cut.client_bindings.len(),
        identity_bindings: cut.identity_bindings.len(),
        sessions: cut.sessions.len(),
    }
    .emit();
    println!(
        "cut off {email}: {} client binding(s), {} remembered key(s), {} web session(s)",
        cut.client_bindings.len(),
        cut.identity_bindings.len(),
        cut.sessions.len()
    );
    Ok(ExitCode::SUCCESS)
}
