//! The SFTP audit parser (the bytes of a relayed `sftp` channel, which either peer
//! controls): whatever arrives in either direction, in any chunks, it never
//! panics, its tables and kept bytes stay within their caps, each direction stops
//! with at most one `unparsed` event, every path is short and free of control
//! characters, and feeding the same bytes one at a time gives the same events.
//!
//! Input: chunks of one control byte `c` (bit 0: 0 from the client, 1 from the
//! server; `c >> 1`: the chunk's length, 0–127) and that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::sftp::{
    SftpAudit, SftpEvent, SftpOp, KEEP, MAX_FILES, MAX_PATH_CHARS, MAX_PENDING, MAX_TABLE_BYTES,
};

fn chunks(data: &[u8]) -> Vec<(bool, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&c, tail)) = rest.split_first() {
        let n = usize::from(c >> 1).min(tail.len());
        let (bytes, tail) = tail.split_at(n);
        out.push((c & 1 == 0, bytes));
        rest = tail;
    }
    out
}

fn check(audit: &SftpAudit) {
    let u = audit.usage();
    assert!(u.pending <= MAX_PENDING, "{u:?}");
    assert!(u.pending_bytes <= MAX_TABLE_BYTES, "{u:?}");
    assert!(u.files <= MAX_FILES, "{u:?}");
    assert!(u.file_bytes <= MAX_TABLE_BYTES, "{u:?}");
    assert!(u.kept <= 2 * KEEP, "{u:?}");
}

fn check_event(e: &SftpEvent) {
    for path in std::iter::once(&e.path).chain(e.to.as_ref()) {
        assert!(path.chars().count() <= MAX_PATH_CHARS, "{e:?}");
        assert!(!path.chars().any(char::is_control), "{e:?}");
    }
    if e.op == SftpOp::Unparsed {
        assert!(
            e.path.is_empty() && e.status.starts_with(['c', 's']),
            "{e:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let chunks = chunks(data);

    let mut whole = SftpAudit::new();
    let mut events = Vec::new();
    for (client, bytes) in &chunks {
        events.extend(if *client {
            whole.from_client(bytes)
        } else {
            whole.from_server(bytes)
        });
        check(&whole);
    }
    events.extend(whole.finish());
    let u = whole.usage();
    assert_eq!(
        (u.pending, u.files, u.pending_bytes, u.file_bytes),
        (0, 0, 0, 0)
    );
    assert!(whole.from_client(data).is_empty() && whole.from_server(data).is_empty());

    let unparsed = |side: &str| {
        events
            .iter()
            .filter(|e| e.op == SftpOp::Unparsed && e.status.starts_with(side))
            .count()
    };
    assert!(
        unparsed("client:") <= 1 && unparsed("server:") <= 1,
        "{events:#?}"
    );
    events.iter().for_each(check_event);

    let mut bytewise = SftpAudit::new();
    let mut again = Vec::new();
    for (client, bytes) in &chunks {
        for byte in bytes.chunks(1) {
            again.extend(if *client {
                bytewise.from_client(byte)
            } else {
                bytewise.from_server(byte)
            });
        }
    }
    again.extend(bytewise.finish());
    assert_eq!(events, again);
});
