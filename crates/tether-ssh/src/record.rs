//! Session recording on recorded routes (docs/RECORDING.md): what the relay of a
//! session channel taps, and where it goes.
//!
//! - A shell (pty or not) is an asciicast v2 file (`tether_core::recording`):
//!   output, resizes, input only where the route records input.
//! - A command (`ssh host cmd`) is a `session_command` audit event when it ends
//!   (command line, exit status, bytes, duration); its output goes to a file when
//!   it has a terminal (`ssh -t host top` is interactive) or where the route sets
//!   `command_output`.
//! - The `sftp` subsystem is parsed (bounded, `tether_core::sftp`) into
//!   `sftp_operation` audit events; no file.
//!
//! The pump hands every relayed chunk to a [`Tap`], a bounded queue to one writer
//! task per recording: a client flooding output waits for the disk (backpressure)
//! instead of growing memory. The writer buffers at most [`WRITE_BUFFER`] bytes
//! and flushes every second, so a crash loses at most the last second. Files are
//! created `0600` (directory `0700`) and never overwritten. When the file cannot be
//! created or written, a `fail_closed` route refuses or ends the session with a
//! one-line reason; otherwise the session goes on unrecorded (audited either way).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_core::audit::AuditEvent;
use tether_core::config::RecordingSettings;
use tether_core::recording::{recording_id, CastHeader, CastKind, CastMeta, CastWriter};
use tether_core::sftp::SftpAudit;
use tether_core::Timestamp;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Chunks queued between a pump and its recording's writer.
const TAP_QUEUE: usize = 16;
/// The writer's buffer; flushed when full and every [`FLUSH_EVERY`].
const WRITE_BUFFER: usize = 16 * 1024;
/// What the client is told when its session ends because its recording failed.
pub(crate) const ENDED_UNRECORDED: &str =
    "tether: the session ended: its recording could not be written";

/// How often buffered events reach the file.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Who and what a connection's recordings are of (one per route connection).
#[derive(Clone, Debug)]
pub(crate) struct Recorder {
    pub(crate) settings: RecordingSettings,
    /// `None`: no directory was configured (fail closed refuses).
    pub(crate) directory: Option<PathBuf>,
    pub(crate) max_size: u64,
    pub(crate) conn: u64,
    pub(crate) session_id: String,
    pub(crate) route: String,
    pub(crate) login: String,
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) fingerprint: String,
}

/// What a session channel runs.
#[derive(Clone, Debug)]
pub(crate) enum Program {
    Shell,
    Exec(String),
    Subsystem(String),
}

/// The terminal a channel asked for.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pty {
    pub(crate) term: String,
    pub(crate) cols: u32,
    pub(crate) rows: u32,
}

/// A started recording: the tap the pump feeds, and what to say when it ends.
#[derive(Debug)]
pub(crate) struct Recording {
    /// What the pump feeds; `None` for a command whose output is not recorded.
    pub(crate) tap: Option<Tap>,
    /// The file's id, when there is a file.
    pub(crate) id: Option<String>,
    program: Program,
    started: Instant,
    recorder: Arc<Recorder>,
}

/// How a recorded channel ended (from its relay's report).
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) bytes_to_upstream: u64,
    pub(crate) bytes_to_client: u64,
    pub(crate) exit_status: Option<u32>,
    pub(crate) exit_signal: Option<String>,
}

/// What the pump sends.
#[derive(Debug)]
enum Chunk {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Resize(u32, u32),
    Exit(String),
}

/// The pump's side of a recording. Cloneable (the request forwarder sends resizes).
#[derive(Clone, Debug)]
pub(crate) struct Tap {
    tx: mpsc::Sender<Chunk>,
    input: bool,
    /// Set when the writer failed: a fail-closed session must end.
    failed: Arc<AtomicBool>,
    fail_closed: bool,
}

/// A recording that could not be written, on a fail-closed route: the session
/// must be refused or ended with this line.
#[derive(Debug)]
pub(crate) struct MustEnd;

impl Tap {
    async fn send(&self, chunk: Chunk) -> Result<(), MustEnd> {
        let lost = self.tx.send(chunk).await.is_err() || self.failed.load(Ordering::Relaxed);
        if lost && self.fail_closed {
            return Err(MustEnd);
        }
        Ok(())
    }

    /// Output from the upstream (stdout and stderr).
    pub(crate) async fn output(&self, bytes: &[u8]) -> Result<(), MustEnd> {
        self.send(Chunk::Output(bytes.to_vec())).await
    }

    /// Bytes from the client (recorded only where the route records input; the
    /// SFTP parser always reads them).
    pub(crate) async fn input(&self, bytes: &[u8]) -> Result<(), MustEnd> {
        if !self.input {
            return Ok(());
        }
        self.send(Chunk::Input(bytes.to_vec())).await
    }

    /// The client's terminal changed size.
    pub(crate) async fn resize(&self, cols: u32, rows: u32) {
        let _ = self.send(Chunk::Resize(cols, rows)).await;
    }
}

impl Recorder {
    /// Starts recording a session channel that is about to run `program`;
    /// `Err(line)` when it cannot be recorded and the route fails closed.
    pub(crate) async fn start(
        self: &Arc<Self>,
        channel: u32,
        program: &Program,
        pty: Option<&Pty>,
        now: Timestamp,
    ) -> Result<Option<Recording>, String> {
        let (kind, command) = match program {
            Program::Shell => (CastKind::Shell, String::new()),
            Program::Exec(c) => (CastKind::Exec, c.clone()),
            Program::Subsystem(s) => (CastKind::Subsystem, s.clone()),
        };
        let failed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        let wants_file = match program {
            Program::Shell => true,
            // A command in a terminal (`ssh -t host top`) is interactive.
            Program::Exec(_) => pty.is_some() || self.settings.command_output,
            Program::Subsystem(_) => false,
        };
        let tap = |input: bool| Tap {
            tx: tx.clone(),
            input,
            failed: failed.clone(),
            fail_closed: self.settings.fail_closed,
        };
        let recording = |tap: Option<Tap>, id: Option<String>| Recording {
            tap,
            id,
            program: program.clone(),
            started: Instant::now(),
            recorder: self.clone(),
        };
        if !wants_file {
            if let Program::Subsystem(name) = program {
                if name == "sftp" {
                    tokio::spawn(audit_sftp(rx, self.clone()));
                    return Ok(Some(recording(Some(tap(true)), None)));
                }
            }
            // Nothing to write; the command is audited at its end.
            return Ok(Some(recording(None, None)));
        }
        let id = recording_id(now, &self.session_id, channel);
        let opened = match &self.directory {
            Some(dir) => create(dir, &id).await,
            None => Err("no recording directory is configured".to_string()),
        };
        let (file, id) = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                AuditEvent::RecordingFailed {
                    conn: self.conn,
                    route: self.route.clone(),
                    user_id: self.user_id.clone(),
                    email: self.email.clone(),
                    reason: reason.clone(),
                    refused: self.settings.fail_closed,
                }
                .emit();
                if self.settings.fail_closed {
                    return Err(format!(
                        "tether: session refused: route {:?} is recorded and the recording \
                         cannot be written ({reason})",
                        self.route
                    ));
                }
                return Ok(None);
            }
        };
        let meta = CastMeta {
            id: id.clone(),
            session_id: self.session_id.clone(),
            route: self.route.clone(),
            login: self.login.clone(),
            user_id: self.user_id.clone(),
            email: self.email.clone(),
            fingerprint: self.fingerprint.clone(),
            kind,
            command: command.clone(),
            input: self.settings.input,
            started_ms: now.millis(),
        };
        let (cols, rows, term) = pty.map_or((0, 0, ""), |p| (p.cols, p.rows, p.term.as_str()));
        let header = CastHeader::new(meta, cols, rows, term).line();
        AuditEvent::RecordingStarted {
            conn: self.conn,
            recording: id.clone(),
            route: self.route.clone(),
            login: self.login.clone(),
            user_id: self.user_id.clone(),
            email: self.email.clone(),
            kind: format!("{kind:?}").to_lowercase(),
            command,
        }
        .emit();
        tokio::spawn(write_cast(
            file,
            header,
            rx,
            failed.clone(),
            self.clone(),
            id.clone(),
        ));
        Ok(Some(recording(Some(tap(self.settings.input)), Some(id))))
    }
}

impl Recording {
    /// The channel ended: the exit marker, and the command's audit event.
    pub(crate) async fn finish(self, ended: Ended) {
        let Ended {
            bytes_to_upstream,
            bytes_to_client,
            exit_status,
            exit_signal,
        } = ended;
        let label = match (&exit_status, &exit_signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "closed".to_string(),
        };
        if let Some(tap) = &self.tap {
            let _ = tap.send(Chunk::Exit(label)).await;
        }
        let r = &self.recorder;
        if let Program::Exec(command) = &self.program {
            AuditEvent::SessionCommand {
                conn: r.conn,
                route: r.route.clone(),
                login: r.login.clone(),
                user_id: r.user_id.clone(),
                email: r.email.clone(),
                command: command.clone(),
                exit_status,
                exit_signal,
                bytes_to_upstream,
                bytes_to_client,
                duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(0),
                recording: self.id.clone(),
            }
            .emit();
        }
    }
}

/// Creates `<dir>/<id>.cast` (0600, never an existing file: a taken id gets a
/// `-2`, `-3`... suffix; the directory 0700 when tether makes it). The id used.
async fn create(dir: &Path, id: &str) -> Result<(tokio::fs::File, String), String> {
    let dir = dir.to_path_buf();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut last = String::new();
        for attempt in 1..=5 {
            let name = if attempt == 1 {
                id.clone()
            } else {
                format!("{id}-{attempt}")
            };
            let path = dir.join(format!("{name}.cast"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => return Ok((tokio::fs::File::from_std(f), name)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    last = format!("{}: {e}", path.display());
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Err(last)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The writer of one asciicast file; see the module docs.
async fn write_cast(
    file: tokio::fs::File,
    header: String,
    mut rx: mpsc::Receiver<Chunk>,
    failed: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
    id: String,
) {
    let started = Instant::now();
    let header_len = u64::try_from(header.len()).unwrap_or(0);
    let mut cast = CastWriter::new(recorder.max_size, header_len);
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut result = out.write_all(header.as_bytes()).await;
    while result.is_ok() {
        tokio::select! {
            chunk = rx.recv() => {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let append = match chunk {
                    Some(Chunk::Output(b)) => cast.data(ms, false, &b),
                    Some(Chunk::Input(b)) => cast.data(ms, true, &b),
                    Some(Chunk::Resize(c, r)) => cast.resize(ms, c, r),
                    Some(Chunk::Exit(label)) => cast.marker(ms, &label),
                    None => break,
                };
                if !append.text.is_empty() {
                    result = out.write_all(append.text.as_bytes()).await;
                }
                if append.truncated_now {
                    tracing::info!(recording = %id, "recording reached its size cap; the session goes on unrecorded");
                }
            }
            _ = tick.tick() => result = out.flush().await,
        }
    }
    if result.is_ok() {
        result = out.flush().await;
    }
    if let Err(e) = result {
        failed.store(true, Ordering::Relaxed);
        tracing::error!(recording = %id, error = %e, "recording could not be written");
        AuditEvent::RecordingFailed {
            conn: recorder.conn,
            route: recorder.route.clone(),
            user_id: recorder.user_id.clone(),
            email: recorder.email.clone(),
            reason: e.to_string(),
            refused: recorder.settings.fail_closed,
        }
        .emit();
        return;
    }
    let _ = out.get_mut().sync_data().await;
    AuditEvent::RecordingEnded {
        conn: recorder.conn,
        recording: id,
        bytes: cast.written(),
        truncated: cast.truncated(),
    }
    .emit();
}

/// Reads an SFTP channel's both directions into `sftp_operation` events.
async fn audit_sftp(mut rx: mpsc::Receiver<Chunk>, recorder: Arc<Recorder>) {
    let mut parser = SftpAudit::new();
    while let Some(chunk) = rx.recv().await {
        let events = match chunk {
            Chunk::Input(b) => parser.from_client(&b),
            Chunk::Output(b) => parser.from_server(&b),
            Chunk::Resize(..) => continue,
            Chunk::Exit(_) => parser.finish(),
        };
        for e in events {
            emit_sftp(&recorder, e);
        }
    }
    for e in parser.finish() {
        emit_sftp(&recorder, e);
    }
}

fn emit_sftp(r: &Recorder, e: tether_core::sftp::SftpEvent) {
    AuditEvent::SftpOperation {
        conn: r.conn,
        route: r.route.clone(),
        login: r.login.clone(),
        user_id: r.user_id.clone(),
        email: r.email.clone(),
        op: e.op.to_string(),
        path: e.path,
        to: e.to,
        mode: e.mode.map(|m| m.as_str().to_string()),
        bytes_read: e.bytes_read,
        bytes_written: e.bytes_written,
        status: e.status,
    }
    .emit();
}

/// Deletes recordings older than `retention` in `dir`, now and every hour.
pub async fn sweep(dir: PathBuf, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let dir = dir.clone();
        let removed = tokio::task::spawn_blocking(move || sweep_once(&dir, retention))
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "recordings past their retention deleted");
        }
    }
}

/// One pass of [`sweep`]: the number of files deleted.
pub fn sweep_once(dir: &Path, retention: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".cast")) else {
            continue;
        };
        if !tether_core::recording::is_recording_id(stem) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > retention);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retention_deletes_only_old_recordings() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let old = dir.join("20250101T000000Z-r1-1-0.cast");
        let new = dir.join("20261208T000000Z-r1-2-0.cast");
        let other = dir.join("notes.cast");
        for p in [&old, &new, &other] {
            std::fs::write(p, "{}\n").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(40 * 86400);
        for p in [&old, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        assert_eq!(sweep_once(&dir, Duration::from_secs(30 * 86400)), 1);
        assert!(!old.exists(), "past retention");
        assert!(new.exists(), "within retention");
        assert!(other.exists(), "not a recording: left alone");
        assert_eq!(sweep_once(&dir.join("missing"), Duration::from_secs(1)), 0);
    }
}
