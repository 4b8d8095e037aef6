//! Logging set-up, and the one escaping rule every log line passes (issue 12).
//!
//! Clients and the IdP hand tether plenty of text that ends up in logs: usernames,
//! client version strings, CLI commands, `direct-tcpip` hosts, IdP `error` and
//! `error_description`, dev IdP usernames, error chains quoting any of those. Written
//! raw, a newline in one forges a whole log line and an ANSI escape rewrites the
//! operator's terminal. Rather than trust every call site to wrap its fields,
//! tether escapes at the sink: [`Escaping`] wraps the writer of each log layer and
//! rewrites each formatted event before it reaches stderr or the audit file.
//!
//! - Text format: every control character (C0 incl. CR, LF, TAB, ESC; DEL; C1) and
//!   the Unicode line/paragraph separators and bidirectional overrides become
//!   visible escapes (`\n`, `\r`, `\t`, `\u{1b}`, `\u{202e}`); only the newline
//!   that ends the event stays. One event is one line, whatever its fields hold.
//! - JSON format: `serde_json` already escapes C0; DEL, C1, the separators and the
//!   bidi overrides (legal raw inside JSON strings, and the only place they can
//!   appear) become `\uXXXX` escapes, so the line stays valid JSON that decodes to
//!   the same text.
//!
//! The text layer has ANSI colours off: the escaping would show its codes anyway.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result};
use tether_core::config::{Config, LogFormat};
use tracing_subscriber::fmt::MakeWriter;

/// Which escaping a log sink gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Characters that are not control characters but still reorder or break what a
/// reader sees: line/paragraph separators, bidi embeddings, overrides, isolates
/// and marks.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' | '\u{061c}'
    )
}

/// Escapes one formatted event (see the module docs); the event's own final
/// newline, if any, is kept.
pub fn escape_event(event: &str, format: Format) -> String {
    let (body, end) = match event.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (event, ""),
    };
    let mut out = String::with_capacity(event.len() + 8);
    for c in body.chars() {
        match (format, c) {
            (_, '\n') => out.push_str("\\n"),
            (_, '\r') => out.push_str("\\r"),
            (Format::Text, '\t') => out.push_str("\\t"),
            (Format::Text, c) if c.is_control() || is_invisible_format(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            (Format::Json, c) if c.is_control() || is_invisible_format(c) => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            (_, c) => out.push(c),
        }
    }
    out.push_str(end);
    out
}

/// A [`MakeWriter`] whose writers escape each event (module docs).
pub struct Escaping<M> {
    inner: M,
    format: Format,
}

impl<M> Escaping<M> {
    /// Wraps `inner`, escaping for `format`.
    pub fn new(inner: M, format: Format) -> Self {
        Self { inner, format }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.inner.make_writer(),
            format: self.format,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        EscapingWriter {
            inner: self.inner.make_writer_for(meta),
            format: self.format,
        }
    }
}

/// The writer of one event: `tracing-subscriber` formats the whole event into a
/// buffer and writes it in one `write_all`, which this turns into one `write`
/// (it always takes the whole buffer), so the event is escaped as a unit.
pub struct EscapingWriter<W> {
    inner: W,
    format: Format,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(escape_event(&text, self.format).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Sets up `tracing` per `log_format` (`RUST_LOG` overrides the level), plus the
/// audit JSON-lines file when `audit_log` is set ([`AuditFile`]: every
/// `tether_core::AuditEvent`, schema in docs/AUDIT.md).
/// Every sink escapes what clients and the IdP control (module docs).
pub fn init_logging(config: &Config) -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let console = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(Escaping::new(std::io::stderr, Format::Json))
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Escaping::new(std::io::stderr, Format::Text))
            .with_filter(filter)
            .boxed(),
    };
    let audit = match &config.audit_log {
        Some(path) => Some(AuditFile::open(path)?),
        None => None,
    };
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(audit)
        .try_init();
    Ok(())
}

/// The `audit_log` file: one JSON object per line for each event of the `audit`
/// target — the `tether_core::AuditEvent` as it serializes (its message), with
/// `time` (RFC 3339, UTC) added first; the schema is docs/AUDIT.md. Written with
/// the same JSON escaping as the console ([`escape_event`]). A message that is not
/// an event object (nothing in tether logs one) is kept as `{"event": "log",
/// "message": ...}` rather than dropped.
pub struct AuditFile {
    file: std::sync::Mutex<std::fs::File>,
}

impl AuditFile {
    /// Opens (creating, appending) `path`.
    pub fn open(path: &str) -> Result<Self> {
        // Owner-only, like the rest of tether's state: the trail names people.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("audit_log: cannot open {path}"))?;
        Ok(AuditFile {
            file: std::sync::Mutex::new(file),
        })
    }

    /// The file line for an event whose message is `message`.
    fn line(message: &str, time: &str) -> String {
        let mut out = serde_json::Map::new();
        out.insert("time".into(), serde_json::Value::String(time.to_string()));
        match serde_json::from_str::<serde_json::Value>(message) {
            Ok(serde_json::Value::Object(fields)) => out.extend(fields),
            _ => {
                out.insert("event".into(), "log".into());
                out.insert("message".into(), message.into());
            }
        }
        let text = serde_json::Value::Object(out).to_string();
        escape_event(&format!("{text}\n"), Format::Json)
    }
}

/// Collects an event's `message` field.
#[derive(Default)]
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditFile {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() != "audit" {
            return;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let time = tether_core::Clock::now(&tether_core::SystemClock).rfc3339();
        let line = AuditFile::line(&message.0, &time);
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            // Not through tracing: that would come back here.
            eprintln!("tether: audit_log: write failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const HOSTILE: &str =
        "eve\nINFO forged: admin signed in\r\x1b[31mred\x1b[0m\u{9b}1m\u{202e}txt\x07";

    #[test]
    fn text_events_stay_one_line_without_escapes() {
        let out = escape_event(&format!("INFO user={HOSTILE} tab\there\n"), Format::Text);
        assert_eq!(
            out,
            "INFO user=eve\\nINFO forged: admin signed in\\r\\u{1b}[31mred\\u{1b}[0m\\u{9b}1m\\u{202e}txt\\u{7} tab\\there\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'));
        assert_eq!(escape_event("plain é ✓", Format::Text), "plain é ✓");
    }

    #[test]
    fn json_events_stay_valid_and_decode_to_the_same_text() {
        let line = format!("{}\n", serde_json::json!({ "fields": { "user": HOSTILE } }));
        let out = escape_event(&line, Format::Json);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(
            !out.chars()
                .any(|c| (c.is_control() && c != '\n') || is_invisible_format(c)),
            "{out:?}"
        );
        let back: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(back["fields"]["user"], HOSTILE);
    }

    #[test]
    fn audit_lines_are_the_event_with_its_time() {
        let event = tether_core::AuditEvent::ConfigReloaded {
            routes: 2,
            connections_ended: 0,
        };
        let line = AuditFile::line(&event.to_json(), "2026-12-03T21:00:00Z");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["time"], "2026-12-03T21:00:00Z");
        assert_eq!(v["event"], "config_reloaded");
        assert_eq!(v["routes"], 2);
        let odd: serde_json::Value =
            serde_json::from_str(AuditFile::line("not json", "t").trim_end()).unwrap();
        assert_eq!(
            (odd["event"].as_str(), odd["message"].as_str()),
            (Some("log"), Some("not json"))
        );
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Through the real `tracing-subscriber` formatters, with values as call sites
    /// log them (`%` Display and `?` Debug, in fields, spans and the message).
    #[test]
    fn real_formatters_cannot_be_forged() {
        for format in [Format::Text, Format::Json] {
            let buf = Buf::default();
            let writer = {
                let buf = buf.clone();
                move || buf.clone()
            };
            let layer = tracing_subscriber::fmt::layer().with_ansi(false);
            let dispatch = match format {
                Format::Text => {
                    tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
                        tracing_subscriber::registry(),
                        layer.with_writer(Escaping::new(writer, format)),
                    ))
                }
                Format::Json => {
                    tracing::Dispatch::new(tracing_subscriber::layer::SubscriberExt::with(
                        tracing_subscriber::registry(),
                        layer.json().with_writer(Escaping::new(writer, format)),
                    ))
                }
            };
            tracing::dispatcher::with_default(&dispatch, || {
                let span = tracing::info_span!("conn", user = %HOSTILE);
                let _g = span.enter();
                tracing::info!(host = %HOSTILE, version = ?HOSTILE, "command {HOSTILE}");
            });
            let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert_eq!(out.matches('\n').count(), 1, "{format:?}: {out}");
            assert!(out.ends_with('\n'));
            assert!(
                !out.chars()
                    .any(|c| (c.is_control() && c != '\n') || is_invisible_format(c)),
                "{format:?}: {out:?}"
            );
            assert!(
                out.contains("forged: admin signed in"),
                "kept, visibly: {out}"
            );
            if format == Format::Json {
                let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
                assert_eq!(v["fields"]["host"], HOSTILE);
            }
        }
    }
}
