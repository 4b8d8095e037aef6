//! Server-rendered HTML: one small layout with one served stylesheet (no inline
//! style or script: the CSP forbids both), every dynamic value escaped, readable
//! without JavaScript. Pages take plain data and return markup;
//! they never touch the store or the request.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub(crate) mod bindings;
pub(crate) mod console;
pub(crate) mod recordings;
pub(crate) mod verify;

/// Escapes text for an HTML text node or a double-quoted attribute.
pub(crate) fn esc(s: &str) -> Cow<'_, str> {
    html_escape::encode_double_quoted_attribute(s)
}

/// The one stylesheet, served at [`CSS_PATH`] (the CSP allows no inline style).
pub(crate) const CSS: &str = include_str!("assets/tether.css");
/// Where the stylesheet is served.
pub(crate) const CSS_PATH: &str = "/.pomerium/assets/tether.css";
/// The Verify page's countdown, served at [`VERIFY_JS_PATH`] (no inline script).
pub(crate) const VERIFY_JS: &str = include_str!("assets/verify.js");
/// Where the countdown script is served.
pub(crate) const VERIFY_JS_PATH: &str = "/.pomerium/assets/verify.js";

/// Wraps a body in the common layout. `who` is the signed-in user, if any.
pub(crate) fn layout(title: &str, who: Option<&str>, body: &str) -> String {
    layout_with_head(title, who, "", body)
}

/// [`layout`] with more in `<head>` (`head`: trusted markup, the player's files).
pub(crate) fn layout_with_head(title: &str, who: Option<&str>, head: &str, body: &str) -> String {
    let who = who
        .map(|w| format!("<span class=\"who\">signed in as <b>{}</b></span>", esc(w)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · tether</title><link rel=\"stylesheet\" href=\"{CSS_PATH}\">{head}</head><body>\
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
