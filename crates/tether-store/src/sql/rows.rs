//! Turning SQL rows into domain values and back, and the outbox encoding of
//! [`StoreEvent`]s. A row that does not decode is [`StoreError::Corrupt`], never a
//! panic. Column lists are macros so every query selects the same shape.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;
use tether_core::{
    BindingDetails, BindingRequest, ClientBinding, Identity, IdentityBinding, RequestStatus,
    Session, Timestamp, UserCode,
};

use crate::{StoreError, StoreEvent};

/// Columns of `sessions`, in the order [`session`] reads them.
macro_rules! session_cols {
    () => {
        "id, identity_json, issued_at, expires_at"
    };
}

/// Columns of `binding_requests`.
macro_rules! request_cols {
    () => {
        "code, fingerprint, key_type, public_key, details_json, issued_at, expires_at, \
         status, decided_by, binding_id"
    };
}

/// `client_bindings b LEFT JOIN sessions s`: the binding and its session, if any.
macro_rules! binding_select {
    () => {
        "SELECT b.id, b.fingerprint, b.user_id, b.email, b.key_type, b.session_id, \
         b.issued_at, b.expires_at, b.details_json, b.last_used, \
         s.id AS s_id, s.identity_json AS s_identity_json, s.issued_at AS s_issued_at, \
         s.expires_at AS s_expires_at \
         FROM client_bindings b LEFT JOIN sessions s ON s.id = b.session_id "
    };
}

/// Columns of `identity_bindings`.
macro_rules! identity_cols {
    () => {
        "fingerprint, user_id, email, key_type, created_at"
    };
}

pub(crate) use {binding_select, identity_cols, request_cols, session_cols};

/// Maps a driver error: decoding problems are corruption, everything else means the
/// database could not answer.
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::AnyDriverError(_) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Whether the error is a UNIQUE / PRIMARY KEY violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

fn json<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// JSON text of a value we own the shape of (cannot fail for these types, but a
/// failure is reported rather than panicking).
pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("encode: {e}")))
}

/// A `sessions` row selected with [`session_cols`].
pub(crate) fn session(row: &AnyRow) -> Result<Session, StoreError> {
    let identity: Identity = json(&get::<String>(row, "identity_json")?, "identity_json")?;
    Ok(Session {
        id: get(row, "id")?,
        identity,
        issued_at: Timestamp(get(row, "issued_at")?),
        expires_at: Timestamp(get(row, "expires_at")?),
    })
}

/// A `binding_requests` row selected with [`request_cols`].
pub(crate) fn request(row: &AnyRow) -> Result<BindingRequest, StoreError> {
    let code: String = get(row, "code")?;
    let code = UserCode::parse(&code)
        .map_err(|_| StoreError::Corrupt("binding_requests.code malformed".into()))?;
    let status: String = get(row, "status")?;
    let decided_by: Option<String> = get(row, "decided_by")?;
    let binding_id: Option<String> = get(row, "binding_id")?;
    let status = match (status.as_str(), decided_by, binding_id) {
        ("pending", _, _) => RequestStatus::Pending,
        ("approved", Some(user_id), Some(binding_id)) => RequestStatus::Approved {
            user_id,
            binding_id,
        },
        ("denied", Some(user_id), _) => RequestStatus::Denied { user_id },
        (s, _, _) => {
            return Err(StoreError::Corrupt(format!(
                "binding_requests.status {s:?} inconsistent"
            )))
        }
    };
    let details: BindingDetails = json(&get::<String>(row, "details_json")?, "details_json")?;
    Ok(BindingRequest {
        code,
        fingerprint: get(row, "fingerprint")?,
        key_type: get(row, "key_type")?,
        public_key: get(row, "public_key")?,
        details,
        issued_at: Timestamp(get(row, "issued_at")?),
        expires_at: Timestamp(get(row, "expires_at")?),
        status,
    })
}

/// The `status`, `decided_by`, `binding_id` columns for a request status.
pub(crate) fn status_columns(
    status: &RequestStatus,
) -> (&'static str, Option<String>, Option<String>) {
    match status {
        RequestStatus::Pending => ("pending", None, None),
        RequestStatus::Approved {
            user_id,
            binding_id,
        } => ("approved", Some(user_id.clone()), Some(binding_id.clone())),
        RequestStatus::Denied { user_id } => ("denied", Some(user_id.clone()), None),
    }
}

/// A row selected with [`binding_select`]: the binding and its session, if it exists.
pub(crate) fn binding(row: &AnyRow) -> Result<(ClientBinding, Option<Session>), StoreError> {
    let details: BindingDetails = json(&get::<String>(row, "details_json")?, "details_json")?;
    let binding = ClientBinding {
        id: get(row, "id")?,
        fingerprint: get(row, "fingerprint")?,
        key_type: get(row, "key_type")?,
        user_id: get(row, "user_id")?,
        email: get(row, "email")?,
        session_id: get(row, "session_id")?,
        issued_at: Timestamp(get(row, "issued_at")?),
        expires_at: Timestamp(get(row, "expires_at")?),
        details,
        last_used: get::<Option<i64>>(row, "last_used")?.map(Timestamp),
    };
    let session = match get::<Option<String>>(row, "s_id")? {
        None => None,
        Some(id) => Some(Session {
            id,
            identity: json(&get::<String>(row, "s_identity_json")?, "identity_json")?,
            issued_at: Timestamp(get(row, "s_issued_at")?),
            expires_at: Timestamp(get(row, "s_expires_at")?),
        }),
    };
    Ok((binding, session))
}

/// An `identity_bindings` row selected with [`identity_cols`].
pub(crate) fn identity(row: &AnyRow) -> Result<IdentityBinding, StoreError> {
    Ok(IdentityBinding {
        fingerprint: get(row, "fingerprint")?,
        key_type: get(row, "key_type")?,
        user_id: get(row, "user_id")?,
        email: get(row, "email")?,
        created_at: Timestamp(get(row, "created_at")?),
    })
}

/// An `i64` column by name (ids, counts, versions).
pub(crate) fn int(row: &AnyRow, col: &str) -> Result<i64, StoreError> {
    get(row, col)
}

/// A text column by name.
pub(crate) fn text(row: &AnyRow, col: &str) -> Result<String, StoreError> {
    get(row, col)
}

/// The outbox encoding of an event (`kind` column + `payload_json`). `Resync` is a
/// local signal and is never stored.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EventRecord {
    RequestDecided {
        code: String,
    },
    BindingCreated {
        binding_id: String,
        user_id: String,
    },
    BindingRevoked {
        binding_id: String,
        reason: String,
    },
    SessionEnded {
        session_id: String,
        reason: String,
    },
    SessionRefreshed {
        session_id: String,
    },
    IdentityBindingRemoved {
        fingerprint: String,
    },
    ConnectionEnded {
        connection_id: String,
        reason: String,
    },
}

/// `(kind, payload_json)` for the outbox, or `None` for events that are not stored.
pub(crate) fn encode_event(ev: &StoreEvent) -> Result<Option<(&'static str, String)>, StoreError> {
    let (kind, rec) = match ev.clone() {
        StoreEvent::RequestDecided { code } => {
            ("request_decided", EventRecord::RequestDecided { code })
        }
        StoreEvent::BindingCreated {
            binding_id,
            user_id,
        } => (
            "binding_created",
            EventRecord::BindingCreated {
                binding_id,
                user_id,
            },
        ),
        StoreEvent::BindingRevoked { binding_id, reason } => (
            "binding_revoked",
            EventRecord::BindingRevoked { binding_id, reason },
        ),
        StoreEvent::SessionEnded { session_id, reason } => (
            "session_ended",
            EventRecord::SessionEnded { session_id, reason },
        ),
        StoreEvent::SessionRefreshed { session_id } => (
            "session_refreshed",
            EventRecord::SessionRefreshed { session_id },
        ),
        StoreEvent::IdentityBindingRemoved { fingerprint } => (
            "identity_binding_removed",
            EventRecord::IdentityBindingRemoved { fingerprint },
        ),
        StoreEvent::ConnectionEnded {
            connection_id,
            reason,
        } => (
            "connection_ended",
            EventRecord::ConnectionEnded {
                connection_id,
                reason,
            },
        ),
        StoreEvent::Resync => return Ok(None),
    };
    Ok(Some((kind, to_json(&rec)?)))
}

/// The event stored in an outbox row. An event this version does not understand
/// (written by a newer replica) is `Corrupt`; the tailer turns that into `Resync`.
pub(crate) fn decode_event(payload_json: &str) -> Result<StoreEvent, StoreError> {
    let rec: EventRecord = json(payload_json, "events.payload_json")?;
    Ok(match rec {
        EventRecord::RequestDecided { code } => StoreEvent::RequestDecided { code },
        EventRecord::BindingCreated {
            binding_id,
            user_id,
        } => StoreEvent::BindingCreated {
            binding_id,
            user_id,
        },
        EventRecord::BindingRevoked { binding_id, reason } => {
            StoreEvent::BindingRevoked { binding_id, reason }
        }
        EventRecord::SessionEnded { session_id, reason } => {
            StoreEvent::SessionEnded { session_id, reason }
        }
        EventRecord::SessionRefreshed { session_id } => StoreEvent::SessionRefreshed { session_id },
        EventRecord::IdentityBindingRemoved { fingerprint } => {
            StoreEvent::IdentityBindingRemoved { fingerprint }
        }
        EventRecord::ConnectionEnded {
            connection_id,
            reason,
        } => StoreEvent::ConnectionEnded {
            connection_id,
            reason,
        },
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_outbox_encoding() {
        let evs = [
            StoreEvent::RequestDecided { code: "c".into() },
            StoreEvent::BindingCreated {
                binding_id: "sshkey-SHA256:a".into(),
                user_id: "u".into(),
            },
            StoreEvent::BindingRevoked {
                binding_id: "sshkey-SHA256:a".into(),
                reason: "r".into(),
            },
            StoreEvent::SessionEnded {
                session_id: "s".into(),
                reason: "r".into(),
            },
            StoreEvent::SessionRefreshed {
                session_id: "s".into(),
            },
            StoreEvent::IdentityBindingRemoved {
                fingerprint: "SHA256:a".into(),
            },
            StoreEvent::ConnectionEnded {
                connection_id: "a1b2-7".into(),
                reason: "r".into(),
            },
        ];
        for ev in evs {
            let (kind, payload) = encode_event(&ev).unwrap().unwrap();
            assert!(payload.contains(kind), "{payload} names its kind {kind}");
            assert_eq!(decode_event(&payload).unwrap(), ev);
        }
        assert!(encode_event(&StoreEvent::Resync).unwrap().is_none());
        assert!(matches!(
            decode_event("{\"kind\":\"from_the_future\"}"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
