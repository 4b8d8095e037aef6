//! `POST /.tether/api/v1/workload-bindings`: a job (CI pipeline, script) binds an
//! SSH key with its OIDC token instead of a person's browser sign-in. The token is
//! verified against `workload_identity` (`crate::workload`), its `jti` may be used
//! once (the store keeps a sign-in request under a code derived from it until the
//! token expires, on every replica), the issuer's policy is evaluated on its
//! claims, and the key becomes a client binding of `workload:<issuer>#<sub>` for at
//! most the issuer's `max_lifetime`, through the same approving transaction as an
//! Authorize. Answers are JSON; the token is never logged.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tether_core::audit::AuditEvent;
use tether_core::config::WORKLOAD_PREFIX;
use tether_core::policy::{evaluate, Input, KeyInput};
use tether_core::pubkey::{parse_public_key, PublicKeyLine};
use tether_core::{
    BindingDetails, BindingRequest, ClientBinding, Identity, RequestStatus, Session, UserCode,
};
use tether_store::DecideError;

use crate::workload::{TokenError, Verified, PER_ISSUER_PER_MINUTE, PER_SOURCE_PER_MINUTE};

/// The endpoint's path.
pub(crate) const PATH: &str = "/.tether/api/v1/workload-bindings";

/// Largest JSON body read.
const MAX_BODY: usize = 16 * 1024;

/// A JSON error: `{"error": code, "reason": one line}`.
fn error(status: StatusCode, code: &str, reason: &str) -> Response {
    (status, Json(json!({"error": code, "reason": reason}))).into_response()
}

fn refused(source: &str, issuer: &str, subject: &str, reason: &str) {
    AuditEvent::WorkloadBindingRefused {
        source: source.to_string(),
        issuer: issuer.to_string(),
        subject: subject.to_string(),
        reason: reason.to_string(),
    }
    .emit();
}

/// The handler.
pub(crate) async fn create(
    State(state): State<crate::State>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = peer.map_or("in-process".to_string(), |Extension(ConnectInfo(a))| {
        a.ip().to_string()
    });
    let now = state.clock.now();
    let minute = u64::try_from(now.unix_seconds() / 60).unwrap_or(0);
    if !state
        .workload_limits
        .allow(&format!("source:{source}"), minute, PER_SOURCE_PER_MINUTE)
    {
        refused(&source, "", "", "too many requests from this address");
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address; wait a minute",
        );
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        refused(&source, "", "", "no bearer token");
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "send the job's OIDC token as Authorization: Bearer <jwt>",
        );
    };
    let verified = match state
        .workload
        .verify(&state.config, token, now.unix_seconds())
        .await
    {
        Ok(v) => v,
        Err(TokenError::Invalid(reason)) => {
            refused(&source, "", "", &reason);
            return error(StatusCode::UNAUTHORIZED, "invalid_token", &reason);
        }
        Err(e @ TokenError::IssuerUnreachable(_)) => {
            tracing::error!(error = %e, "workload binding refused: issuer unreachable");
            refused(&source, "", "", "issuer unreachable");
            return error(
                StatusCode::BAD_GATEWAY,
                "issuer_unreachable",
                "the token's issuer could not be reached; nothing was bound",
            );
        }
    };
    let issuer = verified.issuer;
    if !state.workload_limits.allow(
        &format!("issuer:{}", issuer.issuer),
        minute,
        PER_ISSUER_PER_MINUTE,
    ) {
        refused(
            &source,
            &issuer.issuer,
            &verified.subject,
            "too many requests for this issuer",
        );
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this issuer; wait a minute",
        );
    }
    let user_id = format!("{WORKLOAD_PREFIX}{}#{}", issuer.issuer, verified.subject);
    let bound = match read_body(&body, issuer.max_lifetime) {
        Ok((key, ttl)) => bind_key(&state, &source, &verified, &user_id, key, ttl, now).await,
        Err(refusal) => Err(refusal),
    };
    match bound {
        Ok(b) => {
            AuditEvent::WorkloadBindingCreated {
                source,
                user_id: user_id.clone(),
                issuer: issuer.issuer.clone(),
                subject: verified.subject.clone(),
                fingerprint: b.fingerprint.clone(),
                binding_id: b.id.clone(),
                expires_at: b.expires_at.unix_seconds(),
            }
            .emit();
            (
                StatusCode::CREATED,
                Json(json!({
                    "binding_id": b.id,
                    "fingerprint": b.fingerprint,
                    "identity": user_id,
                    "expires_at": b.expires_at.rfc3339(),
                    "routes": issuer.routes,
                    "logins": issuer.logins,
                })),
            )
                .into_response()
        }
        Err(Refusal::Refused(status, code, reason)) => {
            refused(&source, &issuer.issuer, &verified.subject, &reason);
            error(status, code, &reason)
        }
        Err(Refusal::StoreDown(e)) => {
            tracing::error!(error = %e, "workload binding refused: store unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; nothing was bound",
            )
        }
    }
}

/// Why a verified token bound nothing.
enum Refusal {
    /// The request's fault: answered with this status, code and reason, audited.
    Refused(StatusCode, &'static str, String),
    /// The store failed: 503, logged.
    StoreDown(String),
}

fn refusal(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal::Refused(status, code, reason.into())
}

fn store_down(e: impl std::fmt::Display) -> Refusal {
    Refusal::StoreDown(e.to_string())
}

/// The body, `{"public_key": "...", "ttl_seconds": N}`: the key and the lifetime
/// (at most `max`, which is also the default).
fn read_body(body: &[u8], max: Duration) -> Result<(PublicKeyLine, Duration), Refusal> {
    if body.len() > MAX_BODY {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is too large",
        ));
    }
    let request = serde_json::from_slice::<Value>(body).map_err(|_| {
        refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body must be JSON: {\"public_key\": \"ssh-ed25519 AAAA...\", \"ttl_seconds\": 600}",
        )
    })?;
    let key = parse_public_key(
        request
            .get("public_key")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    )
    .map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!("public_key: {e}"),
        )
    })?;
    let ttl = match request.get("ttl_seconds") {
        None | Some(Value::Null) => max,
        Some(v) => match v.as_u64().filter(|s| *s > 0) {
            Some(s) if Duration::from_secs(s) <= max => Duration::from_secs(s),
            _ => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "ttl_seconds must be between 1 and {} for this issuer",
                        max.as_secs()
                    ),
                ))
            }
        },
    };
    Ok((key, ttl))
}

/// The issuer's policy on the token's claims, the `jti` spent, then `key` bound to
/// `user_id` for `ttl` through the approving transaction.
async fn bind_key(
    state: &crate::AppState,
    source: &str,
    verified: &Verified<'_>,
    user_id: &str,
    key: PublicKeyLine,
    ttl: Duration,
    now: tether_core::Timestamp,
) -> Result<ClientBinding, Refusal> {
    let issuer = verified.issuer;
    let mut claims = verified.claims.clone();
    for registered in ["iss", "aud", "exp", "nbf", "iat", "jti"] {
        claims.remove(registered);
    }
    let identity = Identity {
        subject: user_id.to_string(),
        email: String::new(),
        name: Some(format!("workload {}", verified.subject)),
        claims: claims.into_iter().collect(),
    };
    let no_key = KeyInput::default();
    let decision = evaluate(
        &issuer.policy,
        &Input {
            identity: Some(&identity),
            login: None,
            key: &no_key,
            source: None,
            now,
        },
    );
    if !decision.allow {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the issuer's policy denies this token: {}",
                decision.message()
            ),
        ));
    }

    // The jti, once: a request row under a code derived from it, kept until the
    // token expires, on every replica sharing the store.
    let replayed = || {
        refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token was already used (jti replayed)",
        )
    };
    let digest = Sha256::digest(format!("{}#{}", issuer.issuer, verified.jti).as_bytes());
    let code = digest
        .get(..16)
        .and_then(|b| UserCode::parse(&URL_SAFE_NO_PAD.encode(b)).ok())
        .ok_or_else(|| store_down("cannot derive the replay key"))?;
    if state
        .store
        .get_request(code.as_str())
        .await
        .map_err(store_down)?
        .is_some()
    {
        return Err(replayed());
    }
    let token_expiry = tether_core::Timestamp(verified.expires_at.saturating_mul(1000));
    let pending = BindingRequest {
        code: code.clone(),
        fingerprint: key.fingerprint.clone(),
        key_type: key.key_type.clone(),
        public_key: key.public_key.clone(),
        details: BindingDetails {
            source_addr: format!("workload token from {source}"),
            client_version: String::new(),
            route: None,
            login: String::new(),
        },
        issued_at: now,
        expires_at: token_expiry.max(now.plus(Duration::from_secs(60))),
        status: RequestStatus::Pending,
    };
    let opened = state
        .store
        .open_request(pending, now)
        .await
        .map_err(store_down)?;
    if opened.code != code {
        return Err(refusal(
            StatusCode::CONFLICT,
            "key_busy",
            "an SSH connection with this key is waiting for a sign-in",
        ));
    }
    let session = Session {
        id: format!(
            "workload-{}",
            UserCode::generate()
                .map(|c| c.as_str().to_string())
                .unwrap_or_default()
        ),
        identity,
        issued_at: now,
        // A minute past the binding, so the binding's own expiry ends it (and its
        // connections are told "binding expired").
        expires_at: now.plus(ttl + Duration::from_secs(60)),
    };
    state
        .store
        .create_session(&session)
        .await
        .map_err(store_down)?;
    match state
        .store
        .approve_request(code.as_str(), &session, false, ttl, now)
        .await
    {
        Ok(approval) => Ok(approval.binding),
        Err(DecideError::KeyBoundToOtherUser) => {
            // Decided (the jti stays used), so the key's own sign-ins are not held up.
            let _ = state.store.deny_request(code.as_str(), user_id, now).await;
            Err(refusal(
                StatusCode::CONFLICT,
                "key_bound_to_other_user",
                "this key is bound to another user; that user must revoke it first",
            ))
        }
        Err(DecideError::AlreadyDecided) => Err(replayed()),
        Err(e) => Err(store_down(e)),
    }
}
