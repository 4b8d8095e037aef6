//! The Verify page (SPEC §4): everything the user needs to tell a real sign-in
//! request from a phishing link, a live countdown, Remember me, Deny and Authorize.
//! The countdown's initial text is rendered by the server; a few lines of served
//! JavaScript (`assets/verify.js`) keep it ticking and disable the buttons at zero.

use tether_core::{BindingRequest, Timestamp};

use super::{esc, layout};

/// `MM:SS` for a number of seconds (minutes may exceed 59).
pub(crate) fn mm_ss(secs: u64) -> String {
    format!("{:02}:{:02}", secs / 60, secs % 60)
}

/// Renders the Verify page for `req`, signed in as `who`. `remembered_indirect`:
/// Remember me holds for this key but the link was not opened directly, so the
/// page explains why it asks anyway.
pub(crate) fn page(
    req: &BindingRequest,
    who: &str,
    csrf: &str,
    now: Timestamp,
    remembered_indirect: bool,
) -> String {
    let indirect = if remembered_indirect {
        "<p class=\"warn\" id=\"not-direct\">This key is remembered for you, but this link \
         was opened from another site or page rather than from your terminal, so confirm it \
         here.</p>"
    } else {
        ""
    };
    let left = now.until(req.expires_at).as_secs();
    let route = match &req.details.route {
        Some(r) => esc(r).into_owned(),
        None => "internal CLI".to_string(),
    };
    let body = format!(
        "<h1>Authorize SSH sign-in?</h1>\
         <p>An SSH client asked to sign in as you. Authorize only if you started it \
         yourself just now and the details below match.</p>{indirect}\
         <table>\
         <tr><th>Protocol</th><td id=\"protocol\">ssh</td></tr>\
         <tr><th>Key fingerprint</th><td><code id=\"fingerprint\">{fp}</code>\
         <div class=\"note\">compare with <code>ssh-keygen -l -f &lt;key&gt;</code></div></td></tr>\
         <tr><th>Key type</th><td id=\"key-type\">{kt}</td></tr>\
         <tr><th>Route</th><td id=\"route\">{route}</td></tr>\
         <tr><th>Login name</th><td id=\"login\">{login}</td></tr>\
         <tr><th>Source address</th><td id=\"source-address\" class=\"mono\">{src}</td></tr>\
         <tr><th>Client version</th><td id=\"client-version\" class=\"mono\">{ver}</td></tr>\
         <tr><th>Issued at</th><td id=\"issued-at\">{issued}</td></tr>\
         <tr><th>Expires</th><td><span id=\"countdown\" data-expires-at=\"{exp_ms}\" \
         data-now=\"{now_ms}\">expires in {mmss}</span></td></tr>\
         </table>\
         <form method=\"post\" action=\"/.pomerium/sign_in?user_code={code}\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <p><label><input type=\"checkbox\" id=\"remember\" name=\"create_id_binding\" value=\"true\"> \
         Remember me</label><br><span class=\"note\">Skip this page next time this key signs in \
         as you; revoke it on the bindings page.</span></p>\
         <div class=\"actions\">\
         <button type=\"submit\" id=\"deny\" name=\"confirm\" value=\"false\">Deny</button>\
         <button type=\"submit\" id=\"authorize\" class=\"primary\" name=\"confirm\" value=\"true\">Authorize</button>\
         </div></form>\
         <p class=\"note\">Not {who}? <a href=\"/.pomerium/sign_out\">Sign out</a> first.</p>\
         <script src=\"{js}\" defer></script>",
        fp = esc(&req.fingerprint),
        kt = esc(&req.key_type),
        login = esc(&req.details.login),
        src = esc(&req.details.source_addr),
        ver = esc(&req.details.client_version),
        issued = esc(&req.issued_at.rfc3339()),
        exp_ms = req.expires_at.millis(),
        now_ms = now.millis(),
        mmss = mm_ss(left),
        code = esc(req.code.as_str()),
        csrf = esc(csrf),
        who = esc(who),
        js = super::VERIFY_JS_PATH,
    );
    layout("Verify", Some(who), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mm_ss_formats() {
        assert_eq!(mm_ss(0), "00:00");
        assert_eq!(mm_ss(65), "01:05");
        assert_eq!(mm_ss(15 * 60), "15:00");
        assert_eq!(mm_ss(120 * 60 + 1), "120:01");
    }
}
