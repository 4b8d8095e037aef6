//! The bindings management page (SPEC §5): one row per key the user has bound —
//! a client binding, an identity binding ("Remember me"), or both — with the two
//! revoke buttons.

use std::time::Duration;
use tether_core::time::human_duration;
use tether_core::Timestamp;

use super::{esc, layout};

/// One key on the management page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// `sshkey-SHA256:…` (the form value of both buttons).
    pub(crate) id: String,
    /// `SHA256:…`.
    pub(crate) fingerprint: String,
    /// Key algorithm.
    pub(crate) key_type: String,
    /// Source address of the first connection (client bindings only).
    pub(crate) initiated_from: Option<String>,
    /// Route of the first connection (`None`: internal CLI).
    pub(crate) route: Option<String>,
    /// Login name of the first connection.
    pub(crate) login: Option<String>,
    /// When the binding was issued (or the key remembered).
    pub(crate) issued_at: Timestamp,
    /// Client binding expiry (`None` when there is no client binding).
    pub(crate) expires_at: Option<Timestamp>,
    /// Live SSH connections made with it.
    pub(crate) live: usize,
    /// A valid client binding exists.
    pub(crate) has_client: bool,
    /// An identity binding exists.
    pub(crate) remembered: bool,
}

/// A compact UTC time (`2026-11-27 23:52 UTC`) with the exact instant as a tooltip.
pub(crate) fn when(t: Timestamp) -> String {
    let full = t.rfc3339();
    let short = full
        .get(..16)
        .map(|s| format!("{} UTC", s.replace('T', " ")))
        .unwrap_or_else(|| full.clone());
    format!("<time datetime=\"{full}\" title=\"{full}\">{short}</time>")
}

fn revoke_form(action: &str, id: &str, csrf: &str, label: &str, enabled: bool) -> String {
    let disabled = if enabled { "" } else { " disabled" };
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
         <input type=\"hidden\" name=\"sessionBindingID\" value=\"{}\">\
         <button class=\"small\" type=\"submit\"{disabled}>{label}</button></form>",
        esc(csrf),
        esc(id),
    )
}

/// `1 hour`, `48 hours`; other lengths as `1h30m`.
fn lifetime_label(d: Duration) -> String {
    match d.as_secs() {
        3600 => "1 hour".into(),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        _ => human_duration(d),
    }
}

/// The "Add a key" form: a pasted public key, bound to the user for a lifetime
/// chosen from `lifetimes` (the last is the longest allowed).
fn add_key_form(csrf: &str, lifetimes: &[Duration]) -> String {
    let options: String = lifetimes
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let selected = if i == 0 { " selected" } else { "" };
            format!(
                "<option value=\"{}\"{selected}>{}</option>",
                d.as_secs(),
                esc(&lifetime_label(*d))
            )
        })
        .collect();
    format!(
        "<h2>Add a key</h2>\
         <p class=\"note\">Bind a public key to yourself without connecting first — for a \
         script or a first Ansible run. Paste the <code>.pub</code> file (one line, \
         <code>ssh-ed25519 AAAA…</code>). It is bound to you like a key you authorized, and \
         ends when its lifetime is over or you sign out.</p>\
         <form id=\"add-key\" method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <p><textarea name=\"public_key\" id=\"public-key\" rows=\"3\" cols=\"70\" \
         maxlength=\"{max}\" required spellcheck=\"false\" \
         placeholder=\"ssh-ed25519 AAAA… you@laptop\"></textarea></p>\
         <p><label>Lifetime <select name=\"ttl\" id=\"ttl\">{options}</select></label> \
         <button type=\"submit\" id=\"add-key-submit\">Add key</button></p></form>",
        action = crate::handlers::bindings::ADD_KEY_PATH,
        csrf = esc(csrf),
        max = tether_core::pubkey::MAX_LINE,
    )
}

/// Renders the page: the user's bindings, then `sessions` (the live-sessions
/// table); `admin` adds a link to the operator console.
pub(crate) fn page(
    rows: &[Row],
    sessions: &str,
    who: &str,
    csrf: &str,
    admin: bool,
    lifetimes: &[Duration],
) -> String {
    let mut body = String::from(
        "<h1>Your SSH bindings</h1>\
         <p class=\"note\">Each SSH key you authorized is bound to you until it expires or you \
         revoke it. Revoking closes its live connections at once. Compare fingerprints with \
         <code>ssh-keygen -l -f &lt;key&gt;</code>.</p>",
    );
    if rows.is_empty() {
        body.push_str("<p id=\"no-bindings\">You have no bindings.</p>");
    } else {
        body.push_str(
            "<table id=\"bindings\"><tr><th>Protocol</th><th>Fingerprint</th><th>Key type</th>\
             <th>Initiated from</th><th>Route and login</th><th>Issued at</th><th>Expires at</th>\
             <th>Live connections</th><th></th></tr>",
        );
        for r in rows {
            let route_login = match (&r.route, &r.login) {
                (_, None) => "—".to_string(),
                (Some(route), Some(login)) => format!("{} as {}", esc(route), esc(login)),
                (None, Some(login)) => format!("internal CLI as {}", esc(login)),
            };
            let expires = if r.remembered {
                "until revoked".to_string()
            } else {
                r.expires_at.map(when).unwrap_or_else(|| "—".into())
            };
            body.push_str(&format!(
                "<tr class=\"binding\" data-binding-id=\"{id}\"><td>ssh</td>\
                 <td><code class=\"fingerprint\">{fp}</code></td><td class=\"nowrap\">{kt}</td>\
                 <td class=\"mono\">{from}</td><td>{route_login}</td><td>{issued}</td>\
                 <td class=\"expires\">{expires}</td><td class=\"live\">{live}</td>\
                 <td class=\"buttons\">{b1}{b2}</td></tr>",
                id = esc(&r.id),
                fp = esc(&r.fingerprint),
                kt = esc(&r.key_type),
                from = esc(r.initiated_from.as_deref().unwrap_or("—")),
                issued = when(r.issued_at),
                live = r.live,
                b1 = revoke_form(
                    "/.pomerium/session_binding/revoke",
                    &r.id,
                    csrf,
                    "Revoke",
                    r.has_client
                ),
                b2 = revoke_form(
                    "/.pomerium/identity_binding/revoke",
                    &r.id,
                    csrf,
                    "Remember me: revoke",
                    r.remembered
                ),
            ));
        }
        body.push_str("</table>");
    }
    body.push_str(&add_key_form(csrf, lifetimes));
    body.push_str("<h2>Your live sessions</h2>");
    body.push_str(sessions);
    let console = if admin {
        format!(
            "<a href=\"{}\" id=\"console-link\">Operator console</a> · ",
            super::console::CONSOLE_PATH
        )
    } else {
        String::new()
    };
    body.push_str(&format!(
        "<p>{console}<a href=\"{recordings}\" id=\"recordings-link\">Your recordings</a> · \
         <a href=\"/.pomerium/\">Who am I</a> · \
         <a href=\"/.pomerium/sign_out\">Sign out</a></p>",
        recordings = super::recordings::RECORDINGS_PATH,
    ));
    layout("Bindings", Some(who), &body)
}
