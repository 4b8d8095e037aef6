//! Errors of the SSH front end, and the rule for what a client may see of them.
//!
//! A client sees one short sentence. Anything internal (a store failure, a broken
//! invariant) is logged with its detail under a fresh reference id, and the client
//! sees only `internal error (ref <id>)`.

use std::fmt::Write as _;

/// Why a russh callback failed; russh ends the connection when a handler errs.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// russh reported a protocol or I/O error.
    #[error(transparent)]
    Russh(#[from] russh::Error),
    /// The connection's actor has stopped, so the connection is ending.
    #[error("connection actor stopped")]
    ActorGone,
}

/// A short random reference id tying a client-visible message to a log line.
pub(crate) fn new_ref() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Not secret, only a correlation id: fall back to the clock.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes = nanos.to_be_bytes();
    }
    bytes.iter().fold(String::with_capacity(8), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Logs `detail` under a fresh reference id and returns the client-safe text.
pub(crate) fn internal(context: &str, detail: &dyn std::fmt::Display) -> String {
    let id = new_ref();
    tracing::error!(error_ref = %id, "{context}: {detail}");
    format!("internal error (ref {id})")
}

/// As [`internal`] for a failed store call: when the store cannot be reached
/// (SPEC §9: new connections are refused) the client is told so, since that is
/// the operator's outage and not the client's fault, and retrying later helps.
pub(crate) fn store_failure(context: &str, error: &tether_store::StoreError) -> String {
    match error {
        tether_store::StoreError::Unavailable(_) => {
            let id = new_ref();
            tracing::error!(error_ref = %id, "{context}: {error}");
            format!("gateway store unavailable; try again later (ref {id})")
        }
        tether_store::StoreError::Corrupt(_) => internal(context, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_eight_hex_chars() {
        let r = new_ref();
        assert_eq!(r.len(), 8);
        assert!(r.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn internal_text_names_only_the_ref() {
        let text = internal("store", &"connection refused to 10.0.0.1");
        assert!(text.starts_with("internal error (ref "), "{text}");
        assert!(!text.contains("10.0.0.1"));
    }

    #[test]
    fn an_unreachable_store_is_named_without_its_detail() {
        let e = tether_store::StoreError::Unavailable("connection refused to 10.0.0.1".into());
        let text = store_failure("binding lookup", &e);
        assert!(
            text.starts_with("gateway store unavailable; try again later (ref "),
            "{text}"
        );
        assert!(!text.contains("10.0.0.1"));
        let e = tether_store::StoreError::Corrupt("bad row".into());
        assert!(store_failure("x", &e).starts_with("internal error (ref "));
    }
}
