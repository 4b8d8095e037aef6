//! Session recordings (docs/RECORDING.md): the asciicast v2 files tether writes
//! for the recorded session channels of a route, and how they are named, found and
//! read back. Pure: the SSH side hands the bytes it relays to a [`CastWriter`]
//! and writes what it returns; the web app reads a file's first line with
//! [`CastHeader::parse`]. No I/O here.
//!
//! A recording is one file, `<directory>/<id>.cast`, where the id is
//! `<UTC start, YYYYMMDDTHHMMSSZ>-<live session id>-<channel>` ([`recording_id`]),
//! so file names sort by start time and any replica's web app can open any
//! replica's recording from a shared directory. The first line is the asciicast
//! v2 header; tether's own fields (who, which route and key, which session) are
//! under `"tether"`, which players ignore. Then one event per line:
//! `[seconds, "o", text]` output, `"i"` input (only where the route records
//! input), `"r"` `"COLSxROWS"` resizes, `"m"` markers (the end: exit status, or
//! "truncated" at the size cap).

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The longest header line read back (a file whose first line is longer is not
/// a tether recording).
pub const MAX_HEADER: usize = 16 * 1024;

/// What kind of session channel a recording is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CastKind {
    /// A shell (`ssh host`).
    Shell,
    /// A command (`ssh host cmd`).
    Exec,
    /// A subsystem (`sftp`); its file operations are audit events, not output.
    Subsystem,
}

/// tether's fields in the header (`"tether": {...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CastMeta {
    /// The recording id (the file name without `.cast`).
    pub id: String,
    /// The live session id (`<replica>-<connection>`), as the console shows it.
    pub session_id: String,
    /// The route (`from: ssh://NAME`).
    pub route: String,
    /// The upstream login.
    pub login: String,
    /// The owner (IdP subject, or `workload:...`): who may play it back.
    pub user_id: String,
    /// The owner's email, for display ("" for a workload).
    pub email: String,
    /// The client key's fingerprint (`SHA256:...`).
    pub fingerprint: String,
    /// Shell, command or subsystem.
    pub kind: CastKind,
    /// The command line or subsystem name ("" for a shell).
    #[serde(default)]
    pub command: String,
    /// Whether keystrokes are recorded (`"i"` events).
    #[serde(default)]
    pub input: bool,
    /// Start, milliseconds since the epoch.
    pub started_ms: i64,
}

/// The asciicast v2 header line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CastHeader {
    /// Always 2.
    pub version: u8,
    /// Terminal columns at the start (80 without a pty).
    pub width: u32,
    /// Terminal rows at the start (24 without a pty).
    pub height: u32,
    /// Start, seconds since the epoch.
    pub timestamp: i64,
    /// `TERM` of the pty, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<CastEnv>,
    /// `login@route (email)`.
    #[serde(default)]
    pub title: String,
    /// tether's fields.
    pub tether: CastMeta,
}

/// The header's `env`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CastEnv {
    /// The pty's terminal type.
    #[serde(rename = "TERM", default)]
    pub term: String,
}

impl CastHeader {
    /// The header of a recording starting at `started` with terminal size
    /// `width`×`height` (0 → 80×24) and terminal type `term` ("" without a pty).
    pub fn new(meta: CastMeta, width: u32, height: u32, term: &str) -> CastHeader {
        let (width, height) = if width == 0 || height == 0 {
            (80, 24)
        } else {
            (width.min(10_000), height.min(10_000))
        };
        CastHeader {
            version: 2,
            width,
            height,
            timestamp: meta.started_ms.div_euclid(1000),
            env: (!term.is_empty()).then(|| CastEnv {
                term: term.chars().take(64).collect(),
            }),
            title: if meta.email.is_empty() {
                format!("{}@{}", meta.login, meta.route)
            } else {
                format!("{}@{} ({})", meta.login, meta.route, meta.email)
            },
            tether: meta,
        }
    }

    /// The header as its file line (with the newline).
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Reads a file's first line back; `None` when it is not a tether recording's
    /// header (too long, not JSON, not version 2, no `tether` fields, or an id that
    /// is not a recording id).
    pub fn parse(first_line: &str) -> Option<CastHeader> {
        if first_line.len() > MAX_HEADER {
            return None;
        }
        let h: CastHeader = serde_json::from_str(first_line.trim_end()).ok()?;
        (h.version == 2 && is_recording_id(&h.tether.id)).then_some(h)
    }
}

/// `<YYYYMMDDTHHMMSSZ>-<session id>-<channel>`: a file name that sorts by start
/// time. `session_id` is a live session id (`<replica>-<conn>`); characters other
/// than ASCII letters, digits, `-` and `_` become `_`.
pub fn recording_id(started: Timestamp, session_id: &str, channel: u32) -> String {
    let stamp = started.rfc3339(); // 2026-12-08T01:02:03Z
    let compact: String = stamp
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T' || *c == 'Z')
        .collect();
    let session: String = session_id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{compact}-{session}-{channel}")
}

/// Whether `id` is shaped like a [`recording_id`] (so it is safe as a file name:
/// no `/`, no `..`).
pub fn is_recording_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    if bytes.len() < 18 || bytes.len() > 100 {
        return false;
    }
    let (stamp, rest) = bytes.split_at(16);
    let stamp_ok = stamp.iter().enumerate().all(|(i, b)| match i {
        8 => *b == b'T',
        15 => *b == b'Z',
        _ => b.is_ascii_digit(),
    });
    stamp_ok
        && rest.first() == Some(&b'-')
        && rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// One asciicast event line: `[seconds, "o", text]` and a newline.
pub fn event_line(elapsed_ms: u64, code: char, data: &str) -> String {
    let secs = elapsed_ms / 1000;
    let millis = elapsed_ms % 1000;
    let text = serde_json::to_string(data).unwrap_or_else(|_| "\"\"".into());
    format!("[{secs}.{millis:03}, \"{code}\", {text}]\n")
}

/// Turns the bytes of a stream into event lines: output split anywhere (in the
/// middle of a UTF-8 character too) comes out as whole characters, invalid bytes
/// as U+FFFD, and the file stops growing at a size cap with one "truncated"
/// marker.
#[derive(Debug)]
pub struct CastWriter {
    /// Up to 3 bytes of a character split across writes, per direction
    /// (0 output, 1 input).
    carry: [Vec<u8>; 2],
    written: u64,
    cap: u64,
    truncated: bool,
}

/// What [`CastWriter`] returns: the text to append (maybe empty) and whether the
/// recording just hit its cap.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Append {
    /// Lines to write.
    pub text: String,
    /// The cap was reached with this append (the marker is in `text`).
    pub truncated_now: bool,
}

impl CastWriter {
    /// A writer whose file may grow to `cap` bytes, `header_len` of which the
    /// header already took.
    pub fn new(cap: u64, header_len: u64) -> CastWriter {
        CastWriter {
            carry: [Vec::new(), Vec::new()],
            written: header_len,
            cap,
            truncated: false,
        }
    }

    /// Whether the cap was reached (nothing more is recorded).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes the file holds so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Output (`input == false`) or input bytes at `elapsed_ms`.
    pub fn data(&mut self, elapsed_ms: u64, input: bool, bytes: &[u8]) -> Append {
        let [output_carry, input_carry] = &mut self.carry;
        let carry = if input { input_carry } else { output_carry };
        let mut buf = std::mem::take(carry);
        buf.extend_from_slice(bytes);
        // Keep an incomplete character at the end for the next write.
        let keep = incomplete_tail(&buf);
        *carry = buf.split_off(buf.len() - keep);
        if buf.is_empty() {
            return Append::default();
        }
        let text = String::from_utf8_lossy(&buf);
        self.push(event_line(elapsed_ms, if input { 'i' } else { 'o' }, &text))
    }

    /// A terminal resize.
    pub fn resize(&mut self, elapsed_ms: u64, cols: u32, rows: u32) -> Append {
        self.push(event_line(elapsed_ms, 'r', &format!("{cols}x{rows}")))
    }

    /// A marker (the player shows it on its timeline).
    pub fn marker(&mut self, elapsed_ms: u64, label: &str) -> Append {
        let label: String = label.chars().take(200).collect();
        self.push(event_line(elapsed_ms, 'm', &label))
    }

    fn push(&mut self, line: String) -> Append {
        if self.truncated {
            return Append::default();
        }
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if self.written.saturating_add(len) <= self.cap {
            self.written += len;
            return Append {
                text: line,
                truncated_now: false,
            };
        }
        self.truncated = true;
        let marker = event_line(0, 'm', "recording truncated: size cap reached");
        // The marker's time is the cut's: reuse the line's own stamp.
        let stamp = line.split(',').next().unwrap_or("[0.000");
        let marker = marker.replacen("[0.000", stamp, 1);
        self.written = self
            .written
            .saturating_add(u64::try_from(marker.len()).unwrap_or(0));
        Append {
            text: marker,
            truncated_now: true,
        }
    }
}

/// How many bytes at the end of `buf` start a UTF-8 character that is not
/// complete yet (0 to 3).
fn incomplete_tail(buf: &[u8]) -> usize {
    for back in 1..=3.min(buf.len()) {
        let Some(&b) = buf.get(buf.len() - back) else {
            return 0;
        };
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back
        }
        let need = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if back < need { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn meta() -> CastMeta {
        CastMeta {
            id: recording_id(Timestamp(1_796_000_000_123), "r1-7", 0),
            session_id: "r1-7".into(),
            route: "prod".into(),
            login: "alice".into(),
            user_id: "alice-sub".into(),
            email: "alice@example.com".into(),
            fingerprint: "SHA256:abc".into(),
            kind: CastKind::Shell,
            command: String::new(),
            input: false,
            started_ms: 1_796_000_000_123,
        }
    }

    #[test]
    fn ids_sort_by_time_and_are_safe_file_names() {
        let id = recording_id(Timestamp(1_796_000_000_123), "r1-7", 3);
        let stamp = Timestamp(1_796_000_000_123)
            .rfc3339()
            .replace(['-', ':'], "");
        assert!(id.starts_with(&stamp), "{id} vs {stamp}");
        assert!(id.ends_with("-r1-7-3"), "{id}");
        assert!(is_recording_id(&id), "{id}");
        assert_eq!(&id[8..9], "T");
        let odd = recording_id(Timestamp(0), "a/../b", 0);
        assert!(is_recording_id(&odd), "{odd}");
        assert!(!odd.contains('/'));
        for bad in [
            "",
            "../../etc/passwd",
            "20261208T010203Z",
            "20261208T010203Z-a/b",
            "x0261208T010203Z-a",
        ] {
            assert!(!is_recording_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_header_round_trips_and_players_see_version_2() {
        let h = CastHeader::new(meta(), 120, 40, "xterm-256color");
        let line = h.line();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["width"], 120);
        assert_eq!(v["env"]["TERM"], "xterm-256color");
        assert_eq!(v["timestamp"], 1_796_000_000);
        assert_eq!(CastHeader::parse(&line), Some(h));
        assert_eq!(CastHeader::parse("{\"version\":1}"), None);
        assert_eq!(CastHeader::parse("not json"), None);
        let no_pty = CastHeader::new(meta(), 0, 0, "");
        assert_eq!((no_pty.width, no_pty.height, no_pty.env), (80, 24, None));
    }

    #[test]
    fn events_keep_split_characters_whole() {
        let mut w = CastWriter::new(1 << 20, 0);
        let euro = "€".as_bytes(); // 3 bytes
        let a = w.data(1500, false, &[b'a', euro[0], euro[1]]);
        assert_eq!(a.text, "[1.500, \"o\", \"a\"]\n");
        let b = w.data(1600, false, &[euro[2], b'\n']);
        assert_eq!(b.text, "[1.600, \"o\", \"€\\n\"]\n");
        let bad = w.data(1700, false, &[0xff, b'x']);
        assert_eq!(bad.text, "[1.700, \"o\", \"\u{fffd}x\"]\n");
        assert_eq!(w.resize(2000, 100, 30).text, "[2.000, \"r\", \"100x30\"]\n");
        assert_eq!(
            w.data(2100, true, b"ls\r").text,
            "[2.100, \"i\", \"ls\\r\"]\n"
        );
    }

    #[test]
    fn the_cap_truncates_once_with_a_marker() {
        let mut w = CastWriter::new(60, 20);
        assert!(!w.data(0, false, b"hello").text.is_empty());
        let cut = w.data(10, false, b"a long line that does not fit any more");
        assert!(cut.truncated_now);
        assert!(cut.text.contains("truncated"), "{}", cut.text);
        assert!(cut.text.starts_with("[0.010"), "{}", cut.text);
        assert!(w.truncated());
        assert_eq!(w.data(20, false, b"more"), Append::default());
    }
}
