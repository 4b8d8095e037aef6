//! The operator console (SPEC §5, `administrators`) and the live-sessions table it
//! shares with the bindings page: every live SSH connection with an End button,
//! every user's client and identity bindings with their revoke buttons, and one
//! "Cut off" button per user. Plain forms (no JavaScript), each with the CSRF token.

use tether_core::connection::LiveSession;
use tether_core::time::human_duration;
use tether_core::Timestamp;

use super::bindings::when;
use super::{esc, layout};

/// Where the console lives.
pub(crate) const CONSOLE_PATH: &str = "/.tether/console";
/// Where ending a live session is posted (the console and the bindings page).
pub(crate) const END_SESSION_PATH: &str = "/.tether/sessions/end";
/// Where an administrator's revoke is posted.
pub(crate) const ADMIN_REVOKE_PATH: &str = "/.tether/console/bindings/revoke";
/// Where cutting a user off is posted.
pub(crate) const CUT_OFF_PATH: &str = "/.tether/console/users/cut-off";

/// One binding as the console lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AdminBinding {
    /// `client` or `identity` (remembered key).
    pub(crate) kind: &'static str,
    /// `sshkey-SHA256:…` for client bindings, `SHA256:…` for identity bindings.
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) fingerprint: String,
    pub(crate) key_type: String,
    /// `route as login`, or `—`.
    pub(crate) route_login: String,
    pub(crate) issued_at: Timestamp,
    /// `None`: until revoked (identity bindings).
    pub(crate) expires_at: Option<Timestamp>,
}

/// One user as the console lists them (everyone with a binding or a session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AdminUser {
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) bindings: usize,
    pub(crate) remembered: usize,
    pub(crate) live: usize,
}

/// Bytes as people read them: `512 B`, `3.4 KiB`, `12.0 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in UNITS.iter().skip(1) {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
        esc(value)
    )
}

fn button_form(action: &str, fields: &[(&str, &str)], csrf: &str, label: &str, id: &str) -> String {
    let inputs: String = fields.iter().map(|(k, v)| hidden(k, v)).collect();
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{action}\">{}{inputs}\
         <button class=\"small\" type=\"submit\" id=\"{}\">{}</button></form>",
        hidden("csrf_token", csrf),
        esc(id),
        esc(label),
    )
}

/// The live-sessions table. `everyone`: the console (a User column); otherwise
/// one user's own sessions. `back` is where the End button returns to.
pub(crate) fn sessions_table(
    sessions: &[LiveSession],
    csrf: &str,
    now: Timestamp,
    everyone: bool,
    back: &str,
) -> String {
    if sessions.is_empty() {
        return "<p id=\"no-sessions\">No live SSH sessions.</p>".to_string();
    }
    let user_th = if everyone { "<th>User</th>" } else { "" };
    let mut t = format!(
        "<table id=\"sessions\"><tr><th>Session</th>{user_th}<th>Key</th><th>Route and login</th>\
         <th>From</th><th>Client</th><th>Replica</th><th>Started</th><th>In / out</th>\
         <th>Idle</th><th></th></tr>"
    );
    for s in sessions {
        let user_td = if everyone {
            format!("<td class=\"user\">{}</td>", esc(&s.email))
        } else {
            String::new()
        };
        let route_login = match &s.route {
            Some(r) => format!("{} as {}", esc(r), esc(&s.login)),
            None => format!("internal CLI as {}", esc(&s.login)),
        };
        let label = if everyone { "End" } else { "Disconnect" };
        // The console links each session's recordings (none if not recorded).
        let recordings = if everyone {
            format!(
                "<a class=\"recordings-link\" href=\"{}\">Recordings</a>",
                esc(&super::recordings::of_session(&s.id))
            )
        } else {
            String::new()
        };
        t.push_str(&format!(
            "<tr class=\"session\" data-session-id=\"{id}\"><td class=\"mono\">{id}</td>{user_td}\
             <td><code class=\"fingerprint\">{fp}</code></td><td>{route_login}</td>\
             <td class=\"mono\">{from}</td><td class=\"mono\">{client}</td>\
             <td class=\"mono\">{replica}</td><td>{started}</td>\
             <td class=\"nowrap\">{bin} / {bout}</td><td class=\"idle\">{idle}</td>\
             <td class=\"buttons\">{end}{recordings}</td></tr>",
            id = esc(&s.id),
            fp = esc(&s.fingerprint),
            from = esc(&s.source),
            client = esc(&s.client_version),
            replica = esc(&s.replica),
            started = when(s.started_at),
            bin = bytes(s.bytes_in),
            bout = bytes(s.bytes_out),
            idle = human_duration(s.idle(now)),
            end = button_form(
                END_SESSION_PATH,
                &[("session_id", &s.id), ("back", back)],
                csrf,
                label,
                &format!("end-{}", s.id),
            ),
        ));
    }
    t.push_str("</table>");
    t
}

fn bindings_table(bindings: &[AdminBinding], csrf: &str) -> String {
    if bindings.is_empty() {
        return "<p id=\"no-bindings\">No bindings.</p>".to_string();
    }
    let mut t = String::from(
        "<table id=\"all-bindings\"><tr><th>User</th><th>Kind</th><th>Fingerprint</th>\
         <th>Key type</th><th>Route and login</th><th>Issued at</th><th>Expires at</th><th></th></tr>",
    );
    for b in bindings {
        let (kind, label) = match b.kind {
            "identity" => ("remembered key", "Forget key"),
            _ => ("client binding", "Revoke"),
        };
        t.push_str(&format!(
            "<tr class=\"admin-binding\" data-kind=\"{k}\" data-id=\"{id}\" data-user=\"{email}\">\
             <td>{email}</td><td>{kind}</td><td><code class=\"fingerprint\">{fp}</code></td>\
             <td class=\"nowrap\">{kt}</td><td>{rl}</td><td>{issued}</td><td>{expires}</td>\
             <td class=\"buttons\">{button}</td></tr>",
            k = b.kind,
            id = esc(&b.id),
            email = esc(&b.email),
            fp = esc(&b.fingerprint),
            kt = esc(&b.key_type),
            rl = esc(&b.route_login),
            issued = when(b.issued_at),
            expires = b
                .expires_at
                .map(when)
                .unwrap_or_else(|| "until revoked".into()),
            button = button_form(
                ADMIN_REVOKE_PATH,
                &[("kind", b.kind), ("id", &b.id)],
                csrf,
                label,
                &format!("revoke-{}-{}", b.kind, b.fingerprint),
            ),
        ));
    }
    t.push_str("</table>");
    t
}

fn users_table(users: &[AdminUser], csrf: &str) -> String {
    if users.is_empty() {
        return String::new();
    }
    let mut t = String::from(
        "<table id=\"users\"><tr><th>User</th><th>User id</th><th>Client bindings</th>\
         <th>Remembered keys</th><th>Live sessions</th><th></th></tr>",
    );
    for u in users {
        t.push_str(&format!(
            "<tr class=\"user\" data-user=\"{email}\"><td>{email}</td><td class=\"mono\">{uid}</td>\
             <td>{b}</td><td>{r}</td><td>{l}</td><td class=\"buttons\">{button}</td></tr>",
            email = esc(&u.email),
            uid = esc(&u.user_id),
            b = u.bindings,
            r = u.remembered,
            l = u.live,
            button = button_form(
                CUT_OFF_PATH,
                &[("user_id", &u.user_id)],
                csrf,
                "Cut off",
                &format!("cut-off-{}", u.email),
            ),
        ));
    }
    t.push_str("</table>");
    t
}

/// What the console shows.
pub(crate) struct Console<'a> {
    pub(crate) sessions: &'a [LiveSession],
    pub(crate) bindings: &'a [AdminBinding],
    pub(crate) users: &'a [AdminUser],
    /// The `?user=` filter in force.
    pub(crate) filter: Option<&'a str>,
    pub(crate) now: Timestamp,
}

/// Renders the console.
pub(crate) fn page(c: &Console<'_>, who: &str, csrf: &str) -> String {
    let filter = c.filter.unwrap_or_default();
    let shown = if filter.is_empty() {
        String::new()
    } else {
        format!(
            " <span class=\"note\">showing {} only · <a href=\"{CONSOLE_PATH}\">everyone</a></span>",
            esc(filter)
        )
    };
    let body = format!(
        "<h1>Operator console</h1>\
         <form method=\"get\" action=\"{CONSOLE_PATH}\" class=\"filter\">\
         <input type=\"text\" name=\"user\" placeholder=\"email or user id\" value=\"{f}\">\
         <button class=\"small\" type=\"submit\">Filter</button>{shown}</form>\
         <h2>Live sessions</h2>{sessions}\
         <h2>Users</h2><p class=\"note\">Cut off: revokes every binding and remembered key \
         of the user, ends their web sessions and closes their connections on every replica.</p>\
         {users}<h2>Bindings</h2>{bindings}\
         <p><a href=\"{recordings}\" id=\"recordings-link\">Recordings</a> · \
         <a href=\"/.pomerium/session_binding_info\">Your bindings</a> · \
         <a href=\"/.pomerium/\">Who am I</a></p>",
        recordings = super::recordings::RECORDINGS_PATH,
        f = esc(filter),
        sessions = sessions_table(c.sessions, csrf, c.now, true, "console"),
        users = users_table(c.users, csrf),
        bindings = bindings_table(c.bindings, csrf),
    );
    layout("Operator console", Some(who), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_read_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn values_are_escaped() {
        let b = AdminBinding {
            kind: "client",
            id: "sshkey-SHA256:x".into(),
            user_id: "u".into(),
            email: "<script>@x".into(),
            fingerprint: "SHA256:x".into(),
            key_type: "ssh-ed25519".into(),
            route_login: "—".into(),
            issued_at: Timestamp(0),
            expires_at: None,
        };
        let html = bindings_table(&[b], "tok\"en");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;@x"));
        assert!(html.contains("value=\"tok&quot;en\""));
    }
}
