//! Server-rendered HTML: one small layout with inline CSS, every dynamic value
//! escaped, readable without JavaScript. Pages take plain data and return markup;
//! they never touch the store or the request.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub(crate) mod bindings;
pub(crate) mod verify;

/// Escapes text for an HTML text node or a double-quoted attribute.
pub(crate) fn esc(s: &str) -> Cow<'_, str> {
    html_escape::encode_double_quoted_attribute(s)
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:76rem;margin:2rem auto;\
padding:0 1rem;color:#1d2330;line-height:1.45}\
header{display:flex;justify-content:space-between;align-items:baseline;border-bottom:1px solid #dde;\
margin-bottom:1.5rem;padding-bottom:.5rem}\
header .brand{font-weight:700;font-size:1.2rem;text-decoration:none;color:#1d2330}\
header .who{color:#556;font-size:.9rem}\
h1{font-size:1.4rem}\
table{border-collapse:collapse;width:100%;font-size:.92rem}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e6e8ee;vertical-align:top}\
th{color:#556;font-weight:600;white-space:nowrap}\
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}\
button{font:inherit;padding:.45rem 1.1rem;border-radius:6px;border:1px solid #99a;background:#fff;\
cursor:pointer}\
button.primary{background:#1f5fd1;border-color:#1f5fd1;color:#fff}\
button.small{padding:.2rem .6rem;font-size:.85rem}\
button:disabled{opacity:.45;cursor:not-allowed}\
.actions{display:flex;gap:.75rem;margin-top:1rem}\
.note{color:#556;font-size:.9rem}\
.warn{color:#9a1c1c}\
.dev{background:#fff3cd;border:1px solid #e0c36a;padding:.4rem .7rem;border-radius:6px}\
form.inline{display:inline}\
td.buttons{white-space:nowrap}td.buttons form{display:block;margin:0 0 .3rem}\
td.nowrap{white-space:nowrap}code.fingerprint{font-size:.85rem;word-break:break-all;min-width:16ch;display:inline-block}table#bindings th{white-space:normal}\
";

/// Wraps a body in the common layout. `who` is the signed-in user, if any.
pub(crate) fn layout(title: &str, who: Option<&str>, body: &str) -> String {
    let who = who
        .map(|w| format!("<span class=\"who\">signed in as <b>{}</b></span>", esc(w)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · tether</title><style>{CSS}</style></head><body>\
         <header><a class=\"brand\" href=\"/.pomerium/\">tether</a>{who}</header>\
         <main>{body}</main></body></html>\n",
        esc(title)
    )
}

/// An HTML response with the given status.
pub(crate) fn html(status: StatusCode, markup: String) -> Response {
    let mut res = (status, markup).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// A page with a heading and one sentence.
pub(crate) fn message_page(status: StatusCode, heading: &str, sentence: &str) -> Response {
    let body = format!("<h1>{}</h1><p>{}</p>", esc(heading), esc(sentence));
    html(status, layout(heading, None, &body))
}

/// "Sign in successful — you may close this page".
pub(crate) fn success(who: &str, remembered_key: bool) -> String {
    let extra = if remembered_key {
        "<p class=\"note\">This key is remembered for you, so the Verify page was skipped.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Sign in successful — you may close this page</h1>{extra}\
         <p>Your SSH connection will continue. \
         <a href=\"/.pomerium/session_binding_info\">Manage your bindings</a>.</p>"
    );
    layout("Sign in successful", Some(who), &body)
}

/// "Request denied".
pub(crate) fn denied(who: &str) -> String {
    let body = "<h1>Request denied</h1><p>The SSH connection has been refused. \
                <a href=\"/.pomerium/session_binding_info\">Manage your bindings</a>.</p>";
    layout("Request denied", Some(who), body)
}

/// The sign-out confirmation form.
pub(crate) fn sign_out_confirm(who: &str, csrf: &str) -> String {
    let body = format!(
        "<h1>Sign out</h1><p>Signing out ends this web session, revokes all your SSH \
         bindings and closes their connections. Remembered keys stay until you remove them.</p>\
         <form method=\"post\" action=\"/.pomerium/sign_out\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
         <div class=\"actions\"><button class=\"primary\" id=\"sign-out\" type=\"submit\">Sign out</button></div>\
         </form>",
        esc(csrf)
    );
    layout("Sign out", Some(who), &body)
}

/// "Signed out".
pub(crate) fn signed_out(revoked: usize) -> String {
    let body = format!(
        "<h1>Signed out</h1><p>Your session has ended; {revoked} SSH binding(s) were revoked.</p>"
    );
    layout("Signed out", None, &body)
}

/// "Not signed in" (GET sign_out without a session).
pub(crate) fn not_signed_in() -> String {
    layout(
        "Signed out",
        None,
        "<h1>Signed out</h1><p>You are not signed in.</p>",
    )
}

/// Who am I: user id, email, session expiry, sorted claims.
pub(crate) fn whoami(
    user_id: &str,
    email: &str,
    name: Option<&str>,
    expires: &str,
    expires_in: &str,
    claims: &[(String, String)],
) -> String {
    let mut rows = String::new();
    for (k, v) in claims {
        rows.push_str(&format!(
            "<tr><th>{}</th><td class=\"mono\">{}</td></tr>",
            esc(k),
            esc(v)
        ));
    }
    let name = name
        .map(|n| format!("<tr><th>Name</th><td id=\"name\">{}</td></tr>", esc(n)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Who am I</h1><table>\
         <tr><th>User id</th><td id=\"user-id\" class=\"mono\">{}</td></tr>\
         <tr><th>Email</th><td id=\"email\">{}</td></tr>{name}\
         <tr><th>Session expires</th><td id=\"session-expires\">{} (in {})</td></tr></table>\
         <h2>Claims</h2><table id=\"claims\">{rows}</table>\
         <p><a href=\"/.pomerium/session_binding_info\">Bindings</a> · \
         <a href=\"/.pomerium/sign_out\">Sign out</a></p>",
        esc(user_id),
        esc(email),
        esc(expires),
        esc(expires_in),
    );
    layout("Who am I", Some(email), &body)
}
