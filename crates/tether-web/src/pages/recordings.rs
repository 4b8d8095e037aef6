//! The session recordings pages (issue 14): the list (a user's own recordings, or
//! everyone's with filters for an administrator) and the player, which plays the
//! asciicast file with the vendored asciinema-player (`assets/asciinema-player/`,
//! embedded here and served by tether, no CDN) driven by our `play.js`.

use tether_core::recording::{CastHeader, CastKind};
use tether_core::Timestamp;

use super::bindings::when;
use super::console::bytes;
use super::{esc, layout, layout_with_head};
use crate::recordings::{Listing, MAX_ROWS};

/// The list page.
pub(crate) const RECORDINGS_PATH: &str = "/.tether/recordings";

/// The vendored asciinema-player's version (in its assets' URLs, so an update
/// reaches browsers that cached the old files for a year).
pub(crate) const PLAYER_VERSION: &str = "3.18.0";
/// asciinema-player's script.
pub(crate) const PLAYER_JS: &str =
    include_str!("../../assets/asciinema-player/asciinema-player.min.js");
/// Where it is served.
pub(crate) const PLAYER_JS_PATH: &str = "/.tether/assets/asciinema-player.min.js";
/// asciinema-player's stylesheet.
pub(crate) const PLAYER_CSS: &str =
    include_str!("../../assets/asciinema-player/asciinema-player.css");
/// Where it is served.
pub(crate) const PLAYER_CSS_PATH: &str = "/.tether/assets/asciinema-player.css";
/// Our script: makes the player from `data-cast`, and the speed selector.
pub(crate) const PLAY_JS: &str = include_str!("assets/play.js");
/// Where it is served.
pub(crate) const PLAY_JS_PATH: &str = "/.tether/assets/play.js";

/// The player page of recording `id`.
pub(crate) fn player_path(id: &str) -> String {
    format!("{RECORDINGS_PATH}/{id}")
}

/// The raw asciicast file of recording `id`.
pub(crate) fn cast_path(id: &str) -> String {
    format!("{RECORDINGS_PATH}/{id}/cast")
}

/// The list of recordings of one live session (the console's link).
pub(crate) fn of_session(session_id: &str) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("session", session_id)
        .finish();
    format!("{RECORDINGS_PATH}?{q}")
}

/// `shell`, or the command (`exec: make deploy`, `subsystem: sftp`).
fn kind_and_command(h: &CastHeader) -> String {
    let m = &h.tether;
    match m.kind {
        CastKind::Shell => "shell".to_string(),
        CastKind::Exec => format!("exec: <code>{}</code>", esc(&m.command)),
        CastKind::Subsystem => format!("subsystem: <code>{}</code>", esc(&m.command)),
    }
}

/// The owner as shown: the email, or the user id of a workload.
fn owner(h: &CastHeader) -> &str {
    if h.tether.email.is_empty() {
        &h.tether.user_id
    } else {
        &h.tether.email
    }
}

/// The filter values as entered (shown back in the administrator's form).
#[derive(Clone, Debug, Default)]
pub(crate) struct FilterForm<'a> {
    pub(crate) user: &'a str,
    pub(crate) route: &'a str,
    pub(crate) session: &'a str,
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
}

impl FilterForm<'_> {
    fn any(&self) -> bool {
        [self.user, self.route, self.session, self.from, self.to]
            .iter()
            .any(|v| !v.is_empty())
    }
}

fn filter_form(f: &FilterForm<'_>) -> String {
    let input = |name: &str, value: &str, placeholder: &str, kind: &str| {
        format!(
            "<input type=\"{kind}\" name=\"{name}\" id=\"filter-{name}\" \
             placeholder=\"{placeholder}\" value=\"{}\">",
            esc(value)
        )
    };
    let clear = if f.any() {
        format!(" <a href=\"{RECORDINGS_PATH}\" id=\"filter-clear\">everyone's</a>")
    } else {
        String::new()
    };
    format!(
        "<form method=\"get\" action=\"{RECORDINGS_PATH}\" class=\"filter\" id=\"recordings-filter\">\
         {} {} {} <label>from {}</label> <label>to {}</label> \
         <button class=\"small\" type=\"submit\">Filter</button>{clear}</form>",
        input("user", f.user, "email or user id", "text"),
        input("route", f.route, "route", "text"),
        input("session", f.session, "live session id", "text"),
        input("from", f.from, "YYYY-MM-DD", "date"),
        input("to", f.to, "YYYY-MM-DD", "date"),
    )
}

/// The list page. `admin`: everyone's recordings, with the filter form.
/// `enabled`: whether a recordings directory is configured at all.
pub(crate) fn list_page(
    listing: &Listing,
    admin: bool,
    filters: &FilterForm<'_>,
    enabled: bool,
    who: &str,
) -> String {
    let mut body = String::from(if admin {
        "<h1>Session recordings</h1><p class=\"note\">Recorded SSH sessions of every user \
         (routes with <code>recording</code> set). Playing one is an audit event.</p>"
    } else {
        "<h1>Your session recordings</h1><p class=\"note\">Your recorded SSH sessions \
         (routes with <code>recording</code> set). Administrators can play them too.</p>"
    });
    if admin {
        body.push_str(&filter_form(filters));
    }
    if !enabled || listing.rows.is_empty() {
        body.push_str("<p id=\"no-recordings\">No recordings.</p>");
    } else {
        let user_th = if admin { "<th>User</th>" } else { "" };
        body.push_str(&format!(
            "<table id=\"recordings\"><tr><th>Started</th>{user_th}<th>Route</th><th>Login</th>\
             <th>Kind</th><th>Session</th><th>Size</th><th></th></tr>"
        ));
        for r in &listing.rows {
            let h = &r.header;
            let m = &h.tether;
            let user_td = if admin {
                format!("<td class=\"user\">{}</td>", esc(owner(h)))
            } else {
                String::new()
            };
            body.push_str(&format!(
                "<tr class=\"recording\" data-recording-id=\"{id}\"><td>{started}</td>{user_td}\
                 <td>{route}</td><td>{login}</td><td>{kind}</td><td class=\"mono\">{session}</td>\
                 <td class=\"nowrap\">{size}</td>\
                 <td class=\"buttons\"><a href=\"{play}\" id=\"play-{id}\">Play</a></td></tr>",
                id = esc(&m.id),
                started = when(Timestamp(m.started_ms)),
                route = esc(&m.route),
                login = esc(&m.login),
                kind = kind_and_command(h),
                session = esc(&m.session_id),
                size = bytes(r.size),
                play = esc(&player_path(&m.id)),
            ));
        }
        body.push_str("</table>");
        if listing.capped {
            body.push_str(&format!(
                "<p class=\"note\" id=\"recordings-capped\">Showing the newest {MAX_ROWS} only; \
                 narrow the search to see older ones.</p>"
            ));
        }
    }
    if listing.scan_limited {
        body.push_str(
            "<p class=\"note\" id=\"recordings-scan-limited\">The directory holds more \
             recordings than one page searches; the oldest were not searched.</p>",
        );
    }
    let console = if admin {
        format!(
            "<a href=\"{}\">Operator console</a> · ",
            super::console::CONSOLE_PATH
        )
    } else {
        String::new()
    };
    body.push_str(&format!(
        "<p>{console}<a href=\"/.pomerium/session_binding_info\">Your bindings</a> · \
         <a href=\"/.pomerium/\">Who am I</a></p>"
    ));
    layout("Recordings", Some(who), &body)
}

/// The player page of one recording of `size` bytes.
pub(crate) fn player_page(h: &CastHeader, size: u64, who: &str) -> String {
    let m = &h.tether;
    let head = format!(
        "<link rel=\"stylesheet\" href=\"{PLAYER_CSS_PATH}?v={PLAYER_VERSION}\">\
         <script defer src=\"{PLAYER_JS_PATH}?v={PLAYER_VERSION}\"></script>\
         <script defer src=\"{PLAY_JS_PATH}\"></script>"
    );
    let input = if m.input {
        "<p class=\"note\">This recording includes keystrokes.</p>"
    } else {
        ""
    };
    let options: String = ["0.5", "1", "2", "4"]
        .iter()
        .map(|s| {
            let selected = if *s == "1" { " selected" } else { "" };
            format!("<option value=\"{s}\"{selected}>{s}×</option>")
        })
        .collect();
    let body = format!(
        "<h1>Recording</h1>\
         <table id=\"recording\">\
         <tr><th>User</th><td id=\"recording-user\">{user}</td></tr>\
         <tr><th>Route and login</th><td>{route} as {login}</td></tr>\
         <tr><th>Kind</th><td>{kind}</td></tr>\
         <tr><th>Started</th><td>{started}</td></tr>\
         <tr><th>Session</th><td class=\"mono\">{session}</td></tr>\
         <tr><th>Key</th><td><code class=\"fingerprint\">{fp}</code></td></tr>\
         <tr><th>Size</th><td>{size}</td></tr></table>{input}\
         <p class=\"player-controls\"><label>Speed <select id=\"speed\">{options}</select></label> \
         <a href=\"{cast}\" id=\"download\" download=\"{id}.cast\">Download .cast</a></p>\
         <div id=\"player\" class=\"player\" data-cast=\"{cast}\">\
         <noscript><p>The player needs JavaScript; the recording can be downloaded \
         and played with <code>asciinema play</code>.</p></noscript></div>\
         <p><a href=\"{RECORDINGS_PATH}\">All recordings</a> · \
         <a href=\"/.pomerium/session_binding_info\">Your bindings</a></p>",
        user = esc(owner(h)),
        route = esc(&m.route),
        login = esc(&m.login),
        kind = kind_and_command(h),
        started = when(Timestamp(m.started_ms)),
        session = esc(&m.session_id),
        fp = esc(&m.fingerprint),
        size = bytes(size),
        cast = esc(&cast_path(&m.id)),
        id = esc(&m.id),
    );
    layout_with_head("Recording", Some(who), &head, &body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::recordings::Listed;
    use tether_core::recording::CastMeta;

    fn header(email: &str, command: &str) -> CastHeader {
        CastHeader::new(
            CastMeta {
                id: "20261208T010203Z-r1-7-0".into(),
                session_id: "r1-7".into(),
                route: "prod".into(),
                login: "deploy".into(),
                user_id: "alice".into(),
                email: email.into(),
                fingerprint: "SHA256:k".into(),
                kind: CastKind::Exec,
                command: command.into(),
                input: false,
                started_ms: 1_796_000_000_000,
            },
            80,
            24,
            "",
        )
    }

    #[test]
    fn values_are_escaped() {
        let listing = Listing {
            rows: vec![Listed {
                header: header("<b>@x", "rm -rf <script>"),
                size: 10,
            }],
            capped: true,
            scan_limited: false,
        };
        let html = list_page(&listing, true, &FilterForm::default(), true, "a");
        assert!(
            !html.contains("<script>") && !html.contains("<b>@x"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;") && html.contains("recordings-capped"));
        let html = player_page(&header("<b>@x", "<script>"), 10, "a");
        assert!(
            !html.contains("<script>") && !html.contains("<b>@x"),
            "{html}"
        );
    }

    #[test]
    fn session_links_are_encoded() {
        assert_eq!(of_session("r1-7"), "/.tether/recordings?session=r1-7");
        assert_eq!(of_session("a&b"), "/.tether/recordings?session=a%26b");
    }
}
