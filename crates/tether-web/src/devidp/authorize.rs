//! The dev IdP's `/authorize`: validates the authorization request exactly (code
//! flow, our client id and redirect URI, state, nonce, PKCE S256), shows a username
//! and password form, and on success redirects back with a single-use code.

use axum::body::Bytes;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tether_core::config::Config;
use tether_core::{Clock, SystemClock};

use super::{DevState, IssuedCode};
use crate::form::Fields;
use crate::pages::{esc, html, layout};

/// How long an authorization code may wait for `/token`.
const CODE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The parameters of a valid authorization request.
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    code_challenge: String,
    scope: String,
}

fn validate(f: &Fields, config: &Config) -> Result<AuthRequest, &'static str> {
    if f.get("response_type") != Some("code") {
        return Err("response_type must be code");
    }
    let client_id = f.get("client_id").unwrap_or_default();
    if client_id != config.idp.client_id {
        return Err("unknown client_id");
    }
    let redirect_uri = f.get("redirect_uri").unwrap_or_default();
    if redirect_uri != config.redirect_uri() {
        return Err("redirect_uri is not registered for this client");
    }
    let scope = f.get("scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err("scope must include openid");
    }
    let state = f.get("state").unwrap_or_default();
    let nonce = f.get("nonce").unwrap_or_default();
    if state.is_empty() || nonce.is_empty() {
        return Err("state and nonce are required");
    }
    let challenge = f.get("code_challenge").unwrap_or_default();
    if f.get("code_challenge_method") != Some("S256")
        || URL_SAFE_NO_PAD.decode(challenge).map(|b| b.len()) != Ok(32)
    {
        return Err("PKCE with code_challenge_method S256 is required");
    }
    Ok(AuthRequest {
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        state: state.to_string(),
        nonce: nonce.to_string(),
        code_challenge: challenge.to_string(),
        scope: scope.to_string(),
    })
}

const BANNER: &str = "<p class=\"dev\"><b>development only</b> — tether's built-in test \
                      identity provider. Never use it in production.</p>";

fn error_page(msg: &str) -> Response {
    let body = format!(
        "{BANNER}<h1>Invalid sign-in request</h1><p>{}.</p>",
        esc(msg)
    );
    html(
        StatusCode::BAD_REQUEST,
        layout("Dev IdP (development only)", None, &body),
    )
}

fn login_form(req: &AuthRequest, error: Option<&str>, username: &str) -> String {
    let error = error
        .map(|e| format!("<p class=\"warn\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let hidden = [
        ("response_type", "code"),
        ("client_id", req.client_id.as_str()),
        ("redirect_uri", req.redirect_uri.as_str()),
        ("scope", req.scope.as_str()),
        ("state", req.state.as_str()),
        ("nonce", req.nonce.as_str()),
        ("code_challenge", req.code_challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
    .collect::<String>();
    let body = format!(
        "{BANNER}<h1>Sign in (dev IdP)</h1>{error}\
         <form method=\"post\" action=\"authorize\">{hidden}\
         <p><label>Username<br><input id=\"username\" name=\"username\" value=\"{}\" \
         autocomplete=\"username\" autofocus></label></p>\
         <p><label>Password<br><input id=\"password\" name=\"password\" type=\"password\" \
         autocomplete=\"current-password\"></label></p>\
         <div class=\"actions\"><button class=\"primary\" id=\"login\" type=\"submit\">Sign in</button></div>\
         </form>",
        esc(username)
    );
    layout("Dev IdP sign-in (development only)", None, &body)
}

/// `GET /dev-idp/authorize?…`: the login form.
pub(super) async fn form(State(s): State<DevState>, RawQuery(q): RawQuery) -> Response {
    let f = Fields::query(q.as_deref());
    match validate(&f, &s.config) {
        Ok(req) => html(StatusCode::OK, login_form(&req, None, "")),
        Err(msg) => error_page(msg),
    }
}

/// `POST /dev-idp/authorize`: checks the password, issues a code, redirects back.
pub(super) async fn submit(
    State(s): State<DevState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    // Without a peer (in-process tests) every request shares one bucket.
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(a))| {
        a.ip()
    });
    if !s.idp.inner.throttle.allow(ip, std::time::Instant::now()) {
        tracing::warn!(source = %ip, "dev IdP: too many sign-in attempts, refused");
        let body =
            format!("{BANNER}<h1>Too many attempts</h1><p>Wait a few seconds and try again.</p>");
        let mut res = html(
            StatusCode::TOO_MANY_REQUESTS,
            layout("Dev IdP (development only)", None, &body),
        );
        res.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("6"),
        );
        return res;
    }
    let f = Fields::parse(&body);
    let req = match validate(&f, &s.config) {
        Ok(r) => r,
        Err(msg) => return error_page(msg),
    };
    let username = f.get("username").unwrap_or_default();
    let password = f.get("password").unwrap_or_default();
    let Some(user) = s.idp.user(username, password) else {
        tracing::info!(user = %username, "dev IdP: wrong username or password");
        return html(
            StatusCode::UNAUTHORIZED,
            login_form(&req, Some("Wrong username or password."), username),
        );
    };

    let mut raw = [0u8; 32];
    if getrandom::getrandom(&mut raw).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "random source unavailable",
        )
            .into_response();
    }
    let code = URL_SAFE_NO_PAD.encode(raw);
    let now = SystemClock.now();
    match s.idp.inner.codes.lock() {
        Ok(mut codes) => {
            codes.retain(|_, c| c.expires > now);
            codes.insert(
                code.clone(),
                IssuedCode {
                    username: user.username.clone(),
                    client_id: req.client_id.clone(),
                    redirect_uri: req.redirect_uri.clone(),
                    nonce: req.nonce.clone(),
                    code_challenge: req.code_challenge.clone(),
                    expires: now.plus(CODE_TTL),
                },
            );
        }
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "dev IdP state poisoned").into_response()
        }
    }

    let Ok(mut back) = url::Url::parse(&req.redirect_uri) else {
        return error_page("redirect_uri is not a URL");
    };
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &req.state)
        .append_pair("iss", s.idp.issuer());
    tracing::info!(user = %user.username, "dev IdP: signed in, code issued");
    match axum::http::HeaderValue::from_str(back.as_str()) {
        Ok(loc) => {
            let mut res = StatusCode::SEE_OTHER.into_response();
            res.headers_mut().insert(axum::http::header::LOCATION, loc);
            res
        }
        Err(_) => error_page("redirect_uri is not a valid header value"),
    }
}
