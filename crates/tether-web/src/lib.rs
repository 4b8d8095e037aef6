//! tether-web: the browser side of tether (SPEC §4, §5).
//!
//! An axum [`router`] serving the sign-in link the SSH side prints
//! (`/.pomerium/sign_in?user_code=…`), the OpenID Connect login and callback, the
//! Verify page where the user authorizes or denies a key, the bindings management
//! page, sign-out and a "who am I" page, plus `/ping` and `/healthz`. Sessions and
//! bindings live in the [`Store`]; the browser only holds an encrypted, authenticated
//! cookie naming its session. Session recordings the SSH side wrote are listed and
//! played back under `/.tether/recordings` (read from the directory, never written). The optional development identity provider
//! ([`DevIdp`], demo only) is a real minimal OIDC issuer mounted under `/dev-idp`.
//!
//! This crate owns HTTP only: the binding rules come from `tether-core` and the
//! transactions from `tether-store`; it must not depend on russh or on the SSH crate.
//! Live connection counts reach it through the [`LiveConnections`] trait.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tether_core::config::Config;
use tether_core::Clock;
use tether_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

mod cookies;
mod csrf;
pub mod devidp;
mod error;
mod form;
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod idp;
mod metrics;
mod oidc;
mod pages;
mod recordings;
mod refresh;
pub mod serve;
mod session;
#[cfg(test)]
mod tests;
pub mod tls;
mod workload;

pub use devidp::{DevIdp, DevIdpError};
pub use metrics::metrics_router;
pub use refresh::Refresher;
pub use serve::WebLimits;
use tether_core::metrics::Metrics;

/// Everything the web app needs, handed in by the binary.
pub struct WebDeps {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Sessions, requests and bindings.
    pub store: Arc<dyn Store>,
    /// The decoded `cookie_secret` (32 bytes); encrypts cookies, keys CSRF tokens.
    pub cookie_key: [u8; 32],
    /// The time source for expiry decisions.
    pub clock: Arc<dyn Clock>,
    /// Live SSH connection counts per binding, shown on the bindings page.
    pub live: Arc<dyn LiveConnections>,
    /// The development identity provider (demo only); mounted under `/dev-idp`.
    pub dev_idp: Option<DevIdp>,
    /// Where the SSH side writes session recordings (`<id>.cast`); `None`: the
    /// recordings pages list none.
    pub recordings_dir: Option<PathBuf>,
}

/// The live SSH connections: how many each client binding has, and each one as
/// the operator console lists it.
#[async_trait::async_trait]
pub trait LiveConnections: Send + Sync + 'static {
    /// Live connections made with each of `binding_ids` (`sshkey-SHA256:…`), on
    /// every replica it can see; ids without any may be left out.
    async fn live_counts(&self, binding_ids: &[String]) -> HashMap<String, usize>;
    /// Every live connection on every replica it can see, oldest first. Fails
    /// when other replicas' connections cannot be read (the store is down).
    async fn sessions(&self) -> Result<Vec<tether_core::connection::LiveSession>, StoreError>;
}

/// Shared state of every handler.
pub(crate) struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) live: Arc<dyn LiveConnections>,
    pub(crate) sealer: cookies::Sealer,
    pub(crate) csrf: csrf::CsrfKey,
    pub(crate) oidc: oidc::Oidc,
    /// Whether cookies get the `Secure` attribute (https service URL).
    pub(crate) secure_cookies: bool,
    /// The session cookie's name: `cookie_name`, with the `__Host-` prefix over
    /// HTTPS (the login-state and "opened directly" cookies derive from it).
    pub(crate) cookie_name: String,
    /// Workload tokens' issuers (JWKS cache) and the endpoint's rate limits.
    pub(crate) workload: workload::Verifier,
    pub(crate) workload_limits: workload::Limiter,
    /// The session recordings directory, read for playback.
    pub(crate) recordings_dir: Option<PathBuf>,
}

/// `cookie_name` as sent: over HTTPS with the `__Host-` prefix (browsers then keep
/// it only if Secure, Path=/ and without Domain, so a sibling subdomain cannot plant
/// or shadow it); over plain HTTP unchanged (`_pomerium`, as Pomerium names it).
pub(crate) fn effective_cookie_name(configured: &str, secure: bool) -> String {
    if secure && !configured.starts_with("__Host-") {
        format!("__Host-{configured}")
    } else {
        configured.to_string()
    }
}

/// The shared state as handlers receive it.
pub(crate) type State = Arc<AppState>;

/// Builds the web app: every route of SPEC §4, and the dev IdP when configured.
pub fn router(deps: WebDeps) -> Router {
    let secure_cookies = deps.config.authenticate_service_url.starts_with("https://");
    let deps_insecure = deps.config.insecure_server;
    let state: State = Arc::new(AppState {
        oidc: oidc::Oidc::new(&deps.config),
        sealer: cookies::Sealer::new(&deps.cookie_key),
        csrf: csrf::CsrfKey::new(&deps.cookie_key),
        config: deps.config.clone(),
        store: deps.store,
        clock: deps.clock,
        live: deps.live,
        secure_cookies,
        cookie_name: effective_cookie_name(&deps.config.cookie_name, secure_cookies),
        workload: workload::Verifier::new(),
        workload_limits: workload::Limiter::default(),
        recordings_dir: deps.recordings_dir,
    });

    let mut app = Router::new()
        .route(
            "/.pomerium/sign_in",
            get(handlers::sign_in::show).post(handlers::sign_in::decide),
        )
        .route("/oauth2/callback", get(handlers::callback::callback))
        .route(
            "/.pomerium/session_binding_info",
            get(handlers::bindings::list),
        )
        .route(
            "/.pomerium/session_binding/revoke",
            post(handlers::bindings::revoke_client),
        )
        .route(
            "/.pomerium/identity_binding/revoke",
            post(handlers::bindings::revoke_identity),
        )
        .route(
            handlers::bindings::ADD_KEY_PATH,
            post(handlers::bindings::add_key),
        )
        .route(handlers::workload::PATH, post(handlers::workload::create))
        .route(
            "/.pomerium/sign_out",
            get(handlers::sign_out::confirm).post(handlers::sign_out::sign_out),
        )
        .route(pages::console::CONSOLE_PATH, get(handlers::console::show))
        .route(
            pages::console::END_SESSION_PATH,
            post(handlers::console::end_session),
        )
        .route(
            pages::console::ADMIN_REVOKE_PATH,
            post(handlers::console::revoke),
        )
        .route(
            pages::console::CUT_OFF_PATH,
            post(handlers::console::cut_off),
        )
        .route(
            pages::recordings::RECORDINGS_PATH,
            get(handlers::recordings::list),
        )
        .route(
            "/.tether/recordings/{id}",
            get(handlers::recordings::player),
        )
        .route(
            "/.tether/recordings/{id}/cast",
            get(handlers::recordings::cast),
        )
        .route("/.pomerium/", get(handlers::misc::whoami))
        .route("/.pomerium", get(handlers::misc::whoami))
        .route("/ping", get(handlers::misc::ping))
        .route("/healthz", get(handlers::misc::healthz))
        .route(pages::CSS_PATH, get(asset_css))
        .route(pages::VERIFY_JS_PATH, get(asset_verify_js))
        .route(pages::recordings::PLAYER_JS_PATH, get(asset_player_js))
        .route(pages::recordings::PLAYER_CSS_PATH, get(asset_player_css))
        .route(pages::recordings::PLAY_JS_PATH, get(asset_play_js))
        .with_state(state);

    if let Some(idp) = deps.dev_idp {
        app = app.nest("/dev-idp", devidp::routes(idp, deps.config));
    }

    // HSTS only where tether itself serves TLS: behind a TLS-terminating proxy
    // (`insecure_server`) that proxy owns the policy for its host name.
    let hsts = !deps_insecure;
    app.fallback(handlers::misc::not_found)
        .layer(axum::middleware::map_response(move |res: Response| {
            security_headers(res, hsts)
        }))
}

/// A static asset with its content type.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = Response::new(axum::body::Body::from(body));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

async fn asset_css() -> Response {
    asset("text/css; charset=utf-8", pages::CSS)
}

async fn asset_verify_js() -> Response {
    asset("text/javascript; charset=utf-8", pages::VERIFY_JS)
}

async fn asset_play_js() -> Response {
    asset("text/javascript; charset=utf-8", pages::recordings::PLAY_JS)
}

/// A vendored file that only changes with its version (which is in the URLs the
/// pages use): cached for a year.
fn versioned_asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = asset(content_type, body);
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    res
}

async fn asset_player_js() -> Response {
    versioned_asset(
        "text/javascript; charset=utf-8",
        pages::recordings::PLAYER_JS,
    )
}

async fn asset_player_css() -> Response {
    versioned_asset("text/css; charset=utf-8", pages::recordings::PLAYER_CSS)
}

/// The Content-Security-Policy of every response: nothing inline (scripts and
/// styles come only from tether's own files), forms submit only to tether, no
/// framing, no `<base>`.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// [`CSP`] with one more origin forms may submit to: the sign-out form's POST
/// answers with a redirect to `signout_redirect_url`, and browsers check
/// `form-action` on the redirect's target too.
pub(crate) fn csp_with_form_target(origin: &str) -> String {
    CSP.replace(
        "form-action 'self'",
        &format!("form-action 'self' {origin}"),
    )
}

/// The recording player page's policy: [`CSP`] plus what asciinema-player needs,
/// and no more (checked in Chromium: without either the player stays blank) —
/// fetching the recording from tether (`connect-src 'self'`) and compiling the
/// WebAssembly terminal emulator inside its script (`'wasm-unsafe-eval'`: Wasm
/// compilation only, JavaScript `eval` stays forbidden). Still no inline script or
/// style: the player sets its styles through the DOM, which CSP does not restrict.
pub(crate) const PLAYER_CSP: &str = "default-src 'none'; \
     script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `Strict-Transport-Security` when tether serves HTTPS itself: a year.
pub(crate) const HSTS: &str = "max-age=31536000";

/// Headers every response gets: no caching (pages carry codes and CSRF tokens;
/// only the versioned player files say otherwise), no
/// framing (clickjacking the Authorize button), no referrer (the URL holds a code),
/// the CSP above, and HSTS when serving TLS.
async fn security_headers(mut res: Response, hsts: bool) -> Response {
    let h = res.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A handler may have set a narrower variant (the sign-out form's).
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    if hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    res
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting
/// and lets in-flight requests finish; `limits` bound what clients can hold
/// (`serve.rs`), refusals are counted in `metrics`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: WebLimits,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve::serve_with(listener, app, limits, metrics, shutdown).await
}

/// Serves `app` over HTTPS on `listener` until `shutdown`, like [`serve`].
pub async fn serve_tls(
    listener: tls::TlsListener,
    app: Router,
    limits: WebLimits,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve::serve_with(listener, app, limits, metrics, shutdown).await
}
