//! Session recordings in the browser (issue 14): the list, the player page and
//! the raw asciicast file.
//!
//! A recording is its owner's (the header's `user_id`) and the administrators'
//! (the `administrators` policy, evaluated per request like the console's):
//! everyone else gets 403 and a `recording_refused` audit event; each player page
//! load and each download is a `recording_viewed` event. An id that is not a
//! recording id, or names no recording, is 404 whoever asks.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tether_core::audit::AuditEvent;
use tether_core::recording::is_recording_id;
use tether_core::Session;
use tokio_util::io::ReaderStream;

use super::console::is_admin;
use super::sign_in::display_name;
use super::start_login;
use crate::error::WebError;
use crate::form::Fields;
use crate::pages::html;
use crate::pages::recordings::{self as page, FilterForm, RECORDINGS_PATH};
use crate::recordings::{self, Filter, Listed, Listing};
use crate::session::current;
use crate::AppState;

/// The longest filter value taken.
const MAX_FILTER: usize = 320;

/// `GET /.tether/recordings[?user=&route=&session=&from=&to=]`: the signed-in
/// user's recordings, or everyone's for an administrator; newest first.
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let query = query.unwrap_or_default();
    let Some(session) = current(&state, &headers).await? else {
        let back = if query.is_empty() {
            RECORDINGS_PATH.to_string()
        } else {
            format!("{RECORDINGS_PATH}?{query}")
        };
        return start_login(&state, &back, false).await;
    };
    let admin = is_admin(&state, &session);
    let fields = Fields::parse(query.as_bytes());
    let value = |name: &str| {
        fields
            .get(name)
            .map(str::trim)
            .filter(|v| v.len() <= MAX_FILTER)
            .unwrap_or_default()
    };
    let shown = FilterForm {
        user: value("user"),
        route: value("route"),
        session: value("session"),
        from: value("from"),
        to: value("to"),
    };
    let day = |v: &str| -> Result<Option<String>, WebError> {
        if v.is_empty() {
            return Ok(None);
        }
        recordings::compact_day(v)
            .map(Some)
            .ok_or(WebError::BadRequest("Dates are YYYY-MM-DD."))
    };
    let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
    let filter = Filter {
        // Everyone but an administrator sees only their own.
        owner: (!admin).then(|| session.user_id().to_string()),
        user: some(shown.user),
        route: some(shown.route),
        session: some(shown.session),
        from: day(shown.from)?,
        to: day(shown.to)?,
    };
    let listing = match &state.recordings_dir {
        Some(dir) => recordings::list(dir, filter)
            .await
            .map_err(|e| WebError::Internal(format!("listing {}: {e}", dir.display())))?,
        None => Listing::default(),
    };
    Ok(html(
        StatusCode::OK,
        page::list_page(
            &listing,
            admin,
            &shown,
            state.recordings_dir.is_some(),
            display_name(&session),
        ),
    ))
}

/// What a request for one recording gets.
enum Access {
    /// Not signed in: off to sign in.
    SignIn(Response),
    /// The viewer may see it.
    Granted(Box<Granted>),
}

/// A recording the viewer may see.
struct Granted {
    session: Session,
    found: Listed,
    path: std::path::PathBuf,
}

/// The recording `id` if the signed-in viewer may see it: 404 for a bad id or
/// no such recording, 403 (and `recording_refused`) for someone else's.
async fn access(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Access, WebError> {
    if !is_recording_id(id) {
        return Err(WebError::NotFound);
    }
    let Some(session) = current(state, headers).await? else {
        let res = start_login(state, &page::player_path(id), false).await?;
        return Ok(Access::SignIn(res));
    };
    let Some(dir) = &state.recordings_dir else {
        return Err(WebError::NotFound);
    };
    let found = recordings::open(dir, id)
        .await
        .map_err(|e| WebError::Internal(format!("opening recording {id}: {e}")))?
        .ok_or(WebError::NotFound)?;
    if found.header.tether.user_id != session.user_id() && !is_admin(state, &session) {
        AuditEvent::RecordingRefused {
            recording: id.to_string(),
            user_id: session.user_id().to_string(),
            email: session.identity.email.clone(),
            reason: "not the owner and not an administrator".to_string(),
        }
        .emit();
        return Err(WebError::Forbidden(
            "This recording belongs to another user.",
        ));
    }
    let path = recordings::path_of(dir, id).ok_or(WebError::NotFound)?;
    Ok(Access::Granted(Box::new(Granted {
        session,
        found,
        path,
    })))
}

fn viewed(session: &Session, found: &Listed) {
    let m = &found.header.tether;
    AuditEvent::RecordingViewed {
        recording: m.id.clone(),
        owner: if m.email.is_empty() {
            m.user_id.clone()
        } else {
            m.email.clone()
        },
        by: display_name(session).to_string(),
    }
    .emit();
}

/// `GET /.tether/recordings/{id}`: the player.
pub(crate) async fn player(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let Granted { session, found, .. } = match access(&state, &headers, &id).await? {
        Access::SignIn(res) => return Ok(res),
        Access::Granted(granted) => *granted,
    };
    viewed(&session, &found);
    let mut res = html(
        StatusCode::OK,
        page::player_page(&found.header, found.size, display_name(&session)),
    );
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::PLAYER_CSP),
    );
    Ok(res)
}

/// `GET /.tether/recordings/{id}/cast`: the asciicast file, streamed.
pub(crate) async fn cast(
    State(state): State<crate::State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let Granted {
        session,
        found,
        path,
    } = match access(&state, &headers, &id).await? {
        Access::SignIn(res) => return Ok(res),
        Access::Granted(granted) => *granted,
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        // Removed (retention) since its header was read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(WebError::NotFound),
        Err(e) => {
            return Err(WebError::Internal(format!(
                "opening {}: {e}",
                path.display()
            )))
        }
    };
    viewed(&session, &found);
    let mut res = Response::new(Body::from_stream(ReaderStream::new(file)));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-asciicast"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
