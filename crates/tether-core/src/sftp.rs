//! The SFTP audit parser: reads the two byte streams of a relayed `sftp` subsystem
//! channel (client requests, server replies) and turns them into file-operation
//! audit events — a file closed with its path and the bytes read and written, a
//! failed open, remove, rename, mkdir, rmdir, setstat, symlink, hardlink — without
//! touching the stream: the relay forwards every byte as it is and only shows a
//! copy to an [`SftpAudit`]. Pure: no I/O, no tokio.
//!
//! The protocol is SFTP version 3 (draft-ietf-secsh-filexfer-02, what OpenSSH
//! speaks): each packet is a `uint32` length, a type byte, a `uint32` request id
//! (not in INIT/VERSION) and the type's fields.
//!
//! Either peer may be hostile, so everything is bounded whatever arrives:
//! - A packet is never buffered whole: only its first [`KEEP`] bytes are kept
//!   (enough for the header, a handle and two paths of `PATH_MAX`, the longest a
//!   kernel accepts); WRITE and DATA payloads are skipped by counting.
//! - A length over [`MAX_PACKET`], a field running past its packet, a HANDLE
//!   longer than [`MAX_HANDLE`] or a server speaking another version stops that
//!   direction for good with exactly one [`SftpOp::Unparsed`] event; the relay goes
//!   on untouched.
//! - Requests awaiting a reply and open files are tables of at most
//!   [`MAX_PENDING`] / [`MAX_FILES`] entries and [`MAX_TABLE_BYTES`] of paths and
//!   handles each; when full, the oldest entry is given up and its event, if it
//!   has one, is emitted at once with a status saying why.
//! - Work is O(bytes): per packet, O(the kept bytes) plus O(log n) table work.
//!
//! What is counted where: a file's `bytes_read` is the sum of the DATA replies to
//! READ requests on its handle; its `bytes_written` is the sum of the WRITE data
//! lengths the server answered with STATUS ok (a failed write does not count).
//!
//! Call [`SftpAudit::from_client`] with a chunk before (or as) it is forwarded
//! upstream, so a request is always seen before its reply.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The longest packet (its length field) parsed: OpenSSH's 256 KiB plus room for
/// headers. A longer one stops that direction.
pub const MAX_PACKET: u32 = 256 * 1024 + 1024;
/// How many bytes of a packet (after its length) are kept to read fields from: the
/// header, an extension name and two paths of 4096 bytes fit.
pub const KEEP: usize = 8 * 1024 + 256;
/// The most requests remembered while their reply is outstanding.
pub const MAX_PENDING: usize = 1024;
/// The most open files tracked.
pub const MAX_FILES: usize = 1024;
/// The most bytes of paths and handles each table holds.
pub const MAX_TABLE_BYTES: usize = 1024 * 1024;
/// The longest handle (the protocol's limit).
pub const MAX_HANDLE: usize = 256;
/// The longest path in an event, in characters (a longer one ends in `…`).
pub const MAX_PATH_CHARS: usize = 1024;

/// Status of files still open, and of requests without a reply, at [`SftpAudit::finish`].
pub const CHANNEL_CLOSED: &str = "channel closed";
/// Status of a request given up because [`MAX_PENDING`] were outstanding.
pub const TOO_MANY_REQUESTS: &str = "reply not seen (too many requests in flight)";
/// Status of a request whose id the client reused before its reply.
pub const ID_REUSED: &str = "reply not seen (request id reused)";
/// Status of a request whose reply can no longer be read (the server's stream stopped).
pub const REPLY_UNPARSED: &str = "reply not parsed";
/// Status of a request answered with a packet of the wrong type.
pub const UNEXPECTED_REPLY: &str = "unexpected reply";
/// Status of an open file no longer tracked because [`MAX_FILES`] were open.
pub const TOO_MANY_FILES: &str = "not tracked further (too many open files)";
/// Status of an open file whose handle the server handed out again.
pub const HANDLE_REUSED: &str = "not tracked further (handle reused)";

// Packet types (draft-ietf-secsh-filexfer-02 section 3).
const INIT: u8 = 1;
const VERSION: u8 = 2;
const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const SETSTAT: u8 = 9;
const FSETSTAT: u8 = 10;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const RMDIR: u8 = 15;
const RENAME: u8 = 18;
const SYMLINK: u8 = 20;
const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const NAME: u8 = 104;
const ATTRS: u8 = 105;
const EXTENDED: u8 = 200;
const EXTENDED_REPLY: u8 = 201;

// OPEN pflags.
const PF_READ: u32 = 0x01;
const PF_WRITE: u32 = 0x02;
const PF_APPEND: u32 = 0x04;

/// Extensions that change nothing: their requests make no event.
const READ_ONLY_EXTENSIONS: &[&[u8]] = &[
    b"statvfs@openssh.com",
    b"fstatvfs@openssh.com",
    b"fsync@openssh.com",
    b"limits@openssh.com",
    b"expand-path@openssh.com",
    b"home-directory",
    b"users-groups-by-id@openssh.com",
];

/// What an [`SftpEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SftpOp {
    /// An OPEN that failed (a successful one is reported at its close).
    Open,
    /// A file was closed: `path`, `mode`, `bytes_read`, `bytes_written`.
    Close,
    /// REMOVE.
    Remove,
    /// RENAME or `posix-rename@openssh.com`: `path` became `to`.
    Rename,
    /// MKDIR.
    Mkdir,
    /// RMDIR.
    Rmdir,
    /// SETSTAT, FSETSTAT (the file's path) or `lsetstat@openssh.com`.
    Setstat,
    /// SYMLINK: `to` is the new link, `path` what it points to.
    Symlink,
    /// `hardlink@openssh.com`: `to` is the new link to `path`.
    Hardlink,
    /// `copy-data`: bytes copied from the open file `path` into the open file `to`
    /// (`bytes_written`, none when the request said "to the end").
    CopyData,
    /// An extension this parser does not know: `path` is its name.
    Extended,
    /// One direction stopped being parsed; `status` says why.
    Unparsed,
}

impl SftpOp {
    /// The name in the audit event (`"op"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SftpOp::Open => "open",
            SftpOp::Close => "close",
            SftpOp::Remove => "remove",
            SftpOp::Rename => "rename",
            SftpOp::Mkdir => "mkdir",
            SftpOp::Rmdir => "rmdir",
            SftpOp::Setstat => "setstat",
            SftpOp::Symlink => "symlink",
            SftpOp::Hardlink => "hardlink",
            SftpOp::CopyData => "copy-data",
            SftpOp::Extended => "extended",
            SftpOp::Unparsed => "unparsed",
        }
    }
}

impl fmt::Display for SftpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a file was opened, from its OPEN pflags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// READ only (or no access flag, which OpenSSH opens read-only).
    Read,
    /// WRITE or APPEND without READ.
    Write,
    /// READ and WRITE (or APPEND).
    ReadWrite,
}

impl OpenMode {
    fn from_pflags(pflags: u32) -> OpenMode {
        let read = pflags & PF_READ != 0;
        let write = pflags & (PF_WRITE | PF_APPEND) != 0;
        match (read, write) {
            (_, false) => OpenMode::Read,
            (false, true) => OpenMode::Write,
            (true, true) => OpenMode::ReadWrite,
        }
    }

    /// `read`, `write` or `read-write`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenMode::Read => "read",
            OpenMode::Write => "write",
            OpenMode::ReadWrite => "read-write",
        }
    }
}

/// One audit event read from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftpEvent {
    /// What happened.
    pub op: SftpOp,
    /// The path (lossy UTF-8, control characters and `\` escaped, at most
    /// [`MAX_PATH_CHARS`]); empty for [`SftpOp::Unparsed`].
    pub path: String,
    /// The name that came into existence: a rename's new path, a symlink's or
    /// hardlink's new link, a copy's destination file.
    pub to: Option<String>,
    /// How the file was opened ([`SftpOp::Open`], [`SftpOp::Close`]); `None` when
    /// the flags lay beyond the kept bytes.
    pub mode: Option<OpenMode>,
    /// Bytes the server returned from the file ([`SftpOp::Close`]).
    pub bytes_read: Option<u64>,
    /// Bytes the server wrote to the file ([`SftpOp::Close`], [`SftpOp::CopyData`]).
    pub bytes_written: Option<u64>,
    /// The server's answer (`ok`, `no such file`, `permission denied`, ... see
    /// [`status_text`]), one of this module's status constants, or for
    /// [`SftpOp::Unparsed`] the reason.
    pub status: String,
}

impl SftpEvent {
    fn new(op: SftpOp, path: String, status: &str) -> SftpEvent {
        SftpEvent {
            op,
            path,
            to: None,
            mode: None,
            bytes_read: None,
            bytes_written: None,
            status: status.to_owned(),
        }
    }
}

/// The word for an SFTP status code (0–8 of version 3; others `status N`).
pub fn status_text(code: u32) -> String {
    let word = match code {
        0 => "ok",
        1 => "eof",
        2 => "no such file",
        3 => "permission denied",
        4 => "failure",
        5 => "bad message",
        6 => "no connection",
        7 => "connection lost",
        8 => "op unsupported",
        _ => return format!("status {code}"),
    };
    word.to_owned()
}

/// How full the tables are (for tests, fuzzing and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Requests awaiting a reply (≤ [`MAX_PENDING`]).
    pub pending: usize,
    /// Path bytes they hold (≤ [`MAX_TABLE_BYTES`]).
    pub pending_bytes: usize,
    /// Open files tracked (≤ [`MAX_FILES`]).
    pub files: usize,
    /// Path and handle bytes they hold (≤ [`MAX_TABLE_BYTES`]).
    pub file_bytes: usize,
    /// Bytes kept of the packets being read, both directions (≤ 2 × [`KEEP`]).
    pub kept: usize,
}

/// The audit parser of one SFTP channel; see the module docs.
#[derive(Debug, Default)]
pub struct SftpAudit {
    client: Framer,
    server: Framer,
    pending: Pending,
    files: Files,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

impl SftpAudit {
    /// A parser for a new channel.
    pub fn new() -> SftpAudit {
        SftpAudit::default()
    }

    /// Bytes the client sent (requests), in order, in any chunks.
    pub fn from_client(&mut self, bytes: &[u8]) -> Vec<SftpEvent> {
        self.feed(Side::Client, bytes)
    }

    /// Bytes the server sent (replies), in order, in any chunks.
    pub fn from_server(&mut self, bytes: &[u8]) -> Vec<SftpEvent> {
        self.feed(Side::Server, bytes)
    }

    /// The channel ended: requests without a reply and files still open are
    /// reported with status [`CHANNEL_CLOSED`]; later bytes are ignored.
    pub fn finish(&mut self) -> Vec<SftpEvent> {
        let mut out = Vec::new();
        self.client.stopped = true;
        self.server.stopped = true;
        while let Some(request) = self.pending.pop_oldest() {
            self.give_up(request, CHANNEL_CLOSED, &mut out);
        }
        while let Some(file) = self.files.pop_oldest() {
            out.push(file.closed(CHANNEL_CLOSED));
        }
        out
    }

    /// How full the tables are.
    pub fn usage(&self) -> Usage {
        Usage {
            pending: self.pending.by_id.len(),
            pending_bytes: self.pending.bytes,
            files: self.files.by_serial.len(),
            file_bytes: self.files.bytes,
            kept: self
                .client
                .head
                .len()
                .saturating_add(self.server.head.len()),
        }
    }

    fn framer(&mut self, side: Side) -> &mut Framer {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    fn feed(&mut self, side: Side, mut bytes: &[u8]) -> Vec<SftpEvent> {
        let mut out = Vec::new();
        while !bytes.is_empty() && !self.framer(side).stopped {
            let (used, step) = self.framer(side).advance(bytes);
            bytes = bytes.get(used..).unwrap_or_default();
            match step {
                Step::More => {}
                Step::Bad(reason) => self.stop(side, &reason, &mut out),
                Step::Packet => {
                    let framer = self.framer(side);
                    let mut head = std::mem::take(&mut framer.head);
                    let len = framer.body_len;
                    let fields = Fields::new(&head, len);
                    let result = match side {
                        Side::Client => self.request(fields, &mut out),
                        Side::Server => self.reply(fields, &mut out),
                    };
                    match result {
                        Ok(()) | Err(Stop::Beyond) => {}
                        Err(Stop::Malformed(what)) => {
                            let reason = format!("malformed {what}");
                            self.stop(side, &reason, &mut out);
                        }
                        Err(Stop::Version(version)) => {
                            // The fields of other versions differ: neither
                            // direction is read further (one event for both).
                            self.client.stopped = true;
                            let reason = format!(
                                "the server speaks SFTP version {version}; only version 3 is parsed"
                            );
                            self.stop(Side::Server, &reason, &mut out);
                        }
                    }
                    head.clear();
                    self.framer(side).head = head;
                }
            }
        }
        out
    }

    /// Stops `side` for good with its one `unparsed` event; when the server's
    /// stream stops, the requests awaiting a reply are given up.
    fn stop(&mut self, side: Side, reason: &str, out: &mut Vec<SftpEvent>) {
        let framer = self.framer(side);
        framer.stopped = true;
        framer.head = Vec::new();
        let who = match side {
            Side::Client => "client",
            Side::Server => "server",
        };
        out.push(SftpEvent::new(
            SftpOp::Unparsed,
            String::new(),
            &format!("{who}: {reason}"),
        ));
        if side == Side::Server {
            while let Some(request) = self.pending.pop_oldest() {
                self.give_up(request, REPLY_UNPARSED, out);
            }
        }
    }

    /// One complete request packet.
    fn request(&mut self, mut f: Fields<'_>, out: &mut Vec<SftpEvent>) -> Result<(), Stop> {
        let kind = f.u8().map_err(|e| e.at("request"))?;
        let name = match kind {
            OPEN => "OPEN",
            CLOSE => "CLOSE",
            READ => "READ",
            WRITE => "WRITE",
            SETSTAT => "SETSTAT",
            FSETSTAT => "FSETSTAT",
            REMOVE => "REMOVE",
            MKDIR => "MKDIR",
            RMDIR => "RMDIR",
            RENAME => "RENAME",
            SYMLINK => "SYMLINK",
            EXTENDED => "EXTENDED",
            // The version that counts is the server's (VERSION).
            INIT => return Ok(()),
            // The reading requests and unknown types change nothing.
            _ => return Ok(()),
        };
        let id = f.u32().map_err(|e| e.at(name))?;
        let request = self.read_request(kind, &mut f).map_err(|e| e.at(name))?;
        if let Some(request) = request {
            self.remember(id, request, out);
        }
        Ok(())
    }

    fn read_request(&self, kind: u8, f: &mut Fields<'_>) -> Result<Option<Request>, Short> {
        let op = |op, path: Str<'_>, to: Option<Str<'_>>| {
            Some(Request::Op {
                op,
                path: clean(path),
                to: to.map(clean),
                written: None,
            })
        };
        Ok(match kind {
            OPEN => {
                let path = f.string()?;
                let mode = optional(f.u32())?.map(OpenMode::from_pflags);
                Some(Request::Open {
                    path: clean(path),
                    mode,
                })
            }
            CLOSE => self
                .file(f.string()?)
                .map(|serial| Request::Close { serial }),
            READ => self
                .file(f.string()?)
                .map(|serial| Request::Read { serial }),
            WRITE => match self.file(f.string()?) {
                Some(serial) => {
                    f.u64()?;
                    let len = f.skip_string()?;
                    Some(Request::Write { serial, len })
                }
                None => None,
            },
            FSETSTAT => self.file(f.string()?).and_then(|serial| {
                let path = self.files.by_serial.get(&serial)?.path.clone();
                Some(Request::Op {
                    op: SftpOp::Setstat,
                    path,
                    to: None,
                    written: None,
                })
            }),
            SETSTAT => op(SftpOp::Setstat, f.string()?, None),
            REMOVE => op(SftpOp::Remove, f.string()?, None),
            MKDIR => op(SftpOp::Mkdir, f.string()?, None),
            RMDIR => op(SftpOp::Rmdir, f.string()?, None),
            RENAME => {
                let old = f.string()?;
                op(SftpOp::Rename, old, Some(f.string()?))
            }
            SYMLINK => {
                // The draft says (linkpath, targetpath); OpenSSH sends (and its
                // sftp-server reads) the target first, the new link second. We
                // follow OpenSSH: `path` is the target, `to` the new link.
                let target = f.string()?;
                op(SftpOp::Symlink, target, Some(f.string()?))
            }
            EXTENDED => self.read_extended(f)?,
            _ => None,
        })
    }

    fn read_extended(&self, f: &mut Fields<'_>) -> Result<Option<Request>, Short> {
        let name = f.string()?;
        let two = |f: &mut Fields<'_>, op| -> Result<Option<Request>, Short> {
            let path = clean(f.string()?);
            let to = Some(clean(f.string()?));
            Ok(Some(Request::Op {
                op,
                path,
                to,
                written: None,
            }))
        };
        match name.bytes {
            b"posix-rename@openssh.com" => two(f, SftpOp::Rename),
            b"hardlink@openssh.com" => two(f, SftpOp::Hardlink),
            b"lsetstat@openssh.com" => Ok(Some(Request::Op {
                op: SftpOp::Setstat,
                path: clean(f.string()?),
                to: None,
                written: None,
            })),
            b"copy-data" => {
                // read-handle, read-offset, length (0: to the end), write-handle, write-offset
                let from = self.file(f.string()?);
                f.u64()?;
                let len = f.u64()?;
                let to = self.file(f.string()?);
                let path_of = |serial: Option<u64>| {
                    serial
                        .and_then(|s| self.files.by_serial.get(&s))
                        .map_or_else(|| "(unknown handle)".to_owned(), |file| file.path.clone())
                };
                Ok(Some(Request::Op {
                    op: SftpOp::CopyData,
                    path: path_of(from),
                    to: Some(path_of(to)),
                    written: (len != 0).then_some(len),
                }))
            }
            known if READ_ONLY_EXTENSIONS.contains(&known) => Ok(None),
            _ => Ok(Some(Request::Op {
                op: SftpOp::Extended,
                path: clean(name),
                to: None,
                written: None,
            })),
        }
    }

    /// The open file a request's handle names, if tracked.
    fn file(&self, handle: Str<'_>) -> Option<u64> {
        if handle.cut {
            return None;
        }
        self.files.by_handle.get(handle.bytes).copied()
    }

    /// Remembers a request until its reply, making room if the table is full.
    fn remember(&mut self, id: u32, request: Request, out: &mut Vec<SftpEvent>) {
        if self.server.stopped {
            self.give_up(request, REPLY_UNPARSED, out);
            return;
        }
        if let Some(old) = self.pending.remove(id) {
            self.give_up(old, ID_REUSED, out);
        }
        let size = request.size();
        while self.pending.by_id.len() >= MAX_PENDING
            || self.pending.bytes.saturating_add(size) > MAX_TABLE_BYTES
        {
            match self.pending.pop_oldest() {
                Some(old) => self.give_up(old, TOO_MANY_REQUESTS, out),
                None => break,
            }
        }
        self.pending.insert(id, request);
    }

    /// Reports a request that will get no (readable) reply.
    fn give_up(&mut self, request: Request, status: &str, out: &mut Vec<SftpEvent>) {
        match request {
            Request::Open { path, mode } => {
                let mut event = SftpEvent::new(SftpOp::Open, path, status);
                event.mode = mode;
                out.push(event);
            }
            Request::Close { serial } => {
                if let Some(file) = self.files.remove(serial) {
                    out.push(file.closed(status));
                }
            }
            Request::Op {
                op,
                path,
                to,
                written,
            } => {
                let mut event = SftpEvent::new(op, path, status);
                event.to = to;
                event.bytes_written = written;
                out.push(event);
            }
            Request::Read { .. } | Request::Write { .. } => {}
        }
    }

    /// One complete reply packet.
    fn reply(&mut self, mut f: Fields<'_>, out: &mut Vec<SftpEvent>) -> Result<(), Stop> {
        let kind = f.u8().map_err(|e| e.at("reply"))?;
        let name = match kind {
            VERSION => {
                let version = f.u32().map_err(|e| e.at("VERSION"))?;
                return if version == 3 {
                    Ok(())
                } else {
                    Err(Stop::Version(version))
                };
            }
            STATUS => "STATUS",
            HANDLE => "HANDLE",
            DATA => "DATA",
            NAME | ATTRS | EXTENDED_REPLY => "reply",
            _ => return Ok(()),
        };
        let id = f.u32().map_err(|e| e.at(name))?;
        let Some(request) = self.pending.remove(id) else {
            return Ok(());
        };
        self.answer(request, kind, &mut f, out)
            .map_err(|e| e.at(name))
    }

    fn answer(
        &mut self,
        request: Request,
        kind: u8,
        f: &mut Fields<'_>,
        out: &mut Vec<SftpEvent>,
    ) -> Result<(), Short> {
        let status = if kind == STATUS { Some(f.u32()?) } else { None };
        match (request, kind) {
            (Request::Read { serial }, DATA) => {
                let len = f.skip_string()?;
                if let Some(file) = self.files.by_serial.get_mut(&serial) {
                    file.read = file.read.saturating_add(len);
                }
            }
            (Request::Write { serial, len }, STATUS) => {
                if status == Some(0) {
                    if let Some(file) = self.files.by_serial.get_mut(&serial) {
                        file.written = file.written.saturating_add(len);
                    }
                }
            }
            (Request::Open { path, mode }, HANDLE) => {
                let handle = f.string()?;
                if handle.cut || handle.bytes.len() > MAX_HANDLE {
                    self.give_up(Request::Open { path, mode }, REPLY_UNPARSED, out);
                    return Err(Short::Malformed);
                }
                let file = OpenFile {
                    handle: handle.bytes.to_vec(),
                    path,
                    mode,
                    read: 0,
                    written: 0,
                };
                self.open(file, out);
            }
            (Request::Close { serial }, STATUS) => {
                if let Some(file) = self.files.remove(serial) {
                    out.push(file.closed(&status_text(status.unwrap_or_default())));
                }
            }
            (request @ (Request::Open { .. } | Request::Op { .. }), STATUS) => {
                self.give_up(request, &status_text(status.unwrap_or_default()), out);
            }
            (
                request @ Request::Op {
                    op: SftpOp::Extended,
                    ..
                },
                _,
            ) => {
                self.give_up(request, "ok", out);
            }
            (request, _) => self.give_up(request, UNEXPECTED_REPLY, out),
        }
        Ok(())
    }

    /// Tracks a newly opened file, making room if the table is full.
    fn open(&mut self, file: OpenFile, out: &mut Vec<SftpEvent>) {
        if let Some(serial) = self.files.by_handle.get(&file.handle).copied() {
            if let Some(old) = self.files.remove(serial) {
                out.push(old.closed(HANDLE_REUSED));
            }
        }
        let size = file.size();
        while self.files.by_serial.len() >= MAX_FILES
            || self.files.bytes.saturating_add(size) > MAX_TABLE_BYTES
        {
            match self.files.pop_oldest() {
                Some(old) => out.push(old.closed(TOO_MANY_FILES)),
                None => break,
            }
        }
        self.files.insert(file);
    }
}

/// Why a packet ended parsing.
enum Stop {
    /// A field lay beyond the kept bytes: the rest of the packet is not read.
    Beyond,
    /// The packet contradicts its own length.
    Malformed(String),
    /// The server's VERSION is not 3.
    Version(u32),
}

/// A field could not be read.
#[derive(Debug, PartialEq, Eq)]
enum Short {
    /// It lies past the end of the packet.
    Malformed,
    /// It lies inside the packet but past the kept bytes.
    Beyond,
}

impl Short {
    fn at(self, what: &str) -> Stop {
        match self {
            Short::Malformed => Stop::Malformed(format!("{what} packet")),
            Short::Beyond => Stop::Beyond,
        }
    }
}

/// A field that may be missing because it lay beyond the kept bytes.
fn optional<T>(field: Result<T, Short>) -> Result<Option<T>, Short> {
    match field {
        Ok(value) => Ok(Some(value)),
        Err(Short::Beyond) => Ok(None),
        Err(Short::Malformed) => Err(Short::Malformed),
    }
}

/// The kept bytes of one packet and its whole length, read field by field.
struct Fields<'a> {
    kept: &'a [u8],
    len: usize,
    pos: usize,
}

/// A string field: the part of it that was kept.
#[derive(Clone, Copy)]
struct Str<'a> {
    bytes: &'a [u8],
    /// Part of it lay beyond the kept bytes.
    cut: bool,
}

impl<'a> Fields<'a> {
    fn new(kept: &'a [u8], len: usize) -> Fields<'a> {
        Fields { kept, len, pos: 0 }
    }

    /// Moves past `n` bytes, which must lie inside the packet.
    fn advance(&mut self, n: usize) -> Result<(usize, usize), Short> {
        let start = self.pos;
        let end = start.checked_add(n).ok_or(Short::Malformed)?;
        if end > self.len {
            return Err(Short::Malformed);
        }
        self.pos = end;
        Ok((start, end))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let (start, end) = self.advance(N)?;
        match self.kept.get(start..end).and_then(|b| b.try_into().ok()) {
            Some(bytes) => Ok(bytes),
            None => {
                // Stay put: every later field is beyond too, and none is
                // taken for malformed because of this one.
                self.pos = start;
                Err(Short::Beyond)
            }
        }
    }

    fn u8(&mut self) -> Result<u8, Short> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A string's length, then moves past its bytes without reading them.
    fn skip_string(&mut self) -> Result<u64, Short> {
        let n = self.u32()?;
        self.advance(usize::try_from(n).map_err(|_| Short::Malformed)?)?;
        Ok(u64::from(n))
    }

    /// A string: whatever of it was kept (nothing, cut, when even its length
    /// lay beyond the kept bytes).
    fn string(&mut self) -> Result<Str<'a>, Short> {
        let n = match self.u32() {
            Ok(n) => n,
            Err(Short::Beyond) => {
                return Ok(Str {
                    bytes: &[],
                    cut: true,
                })
            }
            Err(Short::Malformed) => return Err(Short::Malformed),
        };
        let (start, end) = self.advance(usize::try_from(n).map_err(|_| Short::Malformed)?)?;
        let kept_end = end.min(self.kept.len());
        Ok(Str {
            bytes: self.kept.get(start..kept_end).unwrap_or_default(),
            cut: kept_end < end,
        })
    }
}

/// A path for an event: lossy UTF-8; control characters, bidirectional
/// formatting characters and `\` escaped (`\x1b`, `\u{202e}`, `\\`); at most
/// [`MAX_PATH_CHARS`] characters, ending in `…` when cut.
fn clean(s: Str<'_>) -> String {
    let text = String::from_utf8_lossy(s.bytes);
    let mut out = String::new();
    let mut chars = 0usize;
    let mut cut = s.cut;
    let room = MAX_PATH_CHARS.saturating_sub(1);
    for c in text.chars() {
        let escaped;
        let piece: &str = if c == '\\' {
            "\\\\"
        } else if c.is_ascii_control() {
            escaped = format!("\\x{:02x}", u32::from(c));
            &escaped
        } else if c.is_control() || is_bidi(c) {
            escaped = c.escape_unicode().to_string();
            &escaped
        } else {
            if chars >= room {
                cut = true;
                break;
            }
            chars = chars.saturating_add(1);
            out.push(c);
            continue;
        };
        // Escapes are ASCII: their length in bytes is their length in chars.
        let n = piece.len();
        if chars.saturating_add(n) > room {
            cut = true;
            break;
        }
        chars = chars.saturating_add(n);
        out.push_str(piece);
    }
    if cut {
        out.push('…');
    }
    out
}

/// Characters that reorder how a log line displays.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// What a framer found in a chunk.
enum Step {
    /// Nothing complete yet.
    More,
    /// A packet is complete: its kept bytes are in `head`, its length `body_len`.
    Packet,
    /// The length is nonsense.
    Bad(String),
}

/// Splits one direction's bytes into packets, keeping the first [`KEEP`] bytes
/// of each.
#[derive(Debug, Default)]
struct Framer {
    len_buf: [u8; 4],
    len_have: usize,
    in_body: bool,
    body_len: usize,
    body_seen: usize,
    head: Vec<u8>,
    stopped: bool,
}

impl Framer {
    /// Consumes a prefix of `bytes` (never nothing, given something).
    fn advance(&mut self, bytes: &[u8]) -> (usize, Step) {
        if !self.in_body {
            let need = self.len_buf.len().saturating_sub(self.len_have);
            let n = need.min(bytes.len());
            let slots = self.len_buf.iter_mut().skip(self.len_have);
            for (slot, b) in slots.zip(bytes.iter().take(n)) {
                *slot = *b;
            }
            self.len_have = self.len_have.saturating_add(n);
            if self.len_have < self.len_buf.len() {
                return (n, Step::More);
            }
            self.len_have = 0;
            let len = u32::from_be_bytes(self.len_buf);
            if len == 0 || len > MAX_PACKET {
                return (
                    n,
                    Step::Bad(format!(
                        "packet length {len} (the limit is {MAX_PACKET}, at least 1)"
                    )),
                );
            }
            self.in_body = true;
            self.body_len = usize::try_from(len).unwrap_or(usize::MAX);
            self.body_seen = 0;
            self.head.clear();
            return (n, Step::More);
        }
        let n = self
            .body_len
            .saturating_sub(self.body_seen)
            .min(bytes.len());
        let room = KEEP.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(bytes.get(..n.min(room)).unwrap_or_default());
        self.body_seen = self.body_seen.saturating_add(n);
        if self.body_seen >= self.body_len {
            self.in_body = false;
            return (n, Step::Packet);
        }
        (n, Step::More)
    }
}

/// A request awaiting its reply.
#[derive(Debug)]
enum Request {
    Open {
        path: String,
        mode: Option<OpenMode>,
    },
    Close {
        serial: u64,
    },
    Read {
        serial: u64,
    },
    Write {
        serial: u64,
        len: u64,
    },
    Op {
        op: SftpOp,
        path: String,
        to: Option<String>,
        written: Option<u64>,
    },
}

impl Request {
    /// The bytes it holds, against [`MAX_TABLE_BYTES`].
    fn size(&self) -> usize {
        match self {
            Request::Open { path, .. } => path.len(),
            Request::Op { path, to, .. } => path
                .len()
                .saturating_add(to.as_ref().map_or(0, String::len)),
            Request::Close { .. } | Request::Read { .. } | Request::Write { .. } => 0,
        }
    }
}

/// Requests by id, and their order (oldest first) for eviction.
#[derive(Debug, Default)]
struct Pending {
    by_id: HashMap<u32, (u64, Request)>,
    order: BTreeMap<u64, u32>,
    next: u64,
    bytes: usize,
}

impl Pending {
    fn insert(&mut self, id: u32, request: Request) {
        let seq = self.next;
        self.next = self.next.saturating_add(1);
        self.bytes = self.bytes.saturating_add(request.size());
        self.order.insert(seq, id);
        self.by_id.insert(id, (seq, request));
    }

    fn remove(&mut self, id: u32) -> Option<Request> {
        let (seq, request) = self.by_id.remove(&id)?;
        self.order.remove(&seq);
        self.bytes = self.bytes.saturating_sub(request.size());
        Some(request)
    }

    fn pop_oldest(&mut self) -> Option<Request> {
        let (_, id) = self.order.pop_first()?;
        let (_, request) = self.by_id.remove(&id)?;
        self.bytes = self.bytes.saturating_sub(request.size());
        Some(request)
    }
}

/// A file opened by a successful OPEN.
#[derive(Debug)]
struct OpenFile {
    handle: Vec<u8>,
    path: String,
    mode: Option<OpenMode>,
    read: u64,
    written: u64,
}

impl OpenFile {
    fn size(&self) -> usize {
        self.handle.len().saturating_add(self.path.len())
    }

    fn closed(self, status: &str) -> SftpEvent {
        SftpEvent {
            op: SftpOp::Close,
            path: self.path,
            to: None,
            mode: self.mode,
            bytes_read: Some(self.read),
            bytes_written: Some(self.written),
            status: status.to_owned(),
        }
    }
}

/// Open files by serial number (oldest first) and by handle.
#[derive(Debug, Default)]
struct Files {
    by_serial: BTreeMap<u64, OpenFile>,
    by_handle: HashMap<Vec<u8>, u64>,
    next: u64,
    bytes: usize,
}

impl Files {
    fn insert(&mut self, file: OpenFile) {
        let serial = self.next;
        self.next = self.next.saturating_add(1);
        self.bytes = self.bytes.saturating_add(file.size());
        self.by_handle.insert(file.handle.clone(), serial);
        self.by_serial.insert(serial, file);
    }

    fn remove(&mut self, serial: u64) -> Option<OpenFile> {
        let file = self.by_serial.remove(&serial)?;
        if self.by_handle.get(&file.handle) == Some(&serial) {
            self.by_handle.remove(&file.handle);
        }
        self.bytes = self.bytes.saturating_sub(file.size());
        Some(file)
    }

    fn pop_oldest(&mut self) -> Option<OpenFile> {
        let serial = *self.by_serial.keys().next()?;
        self.remove(serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds one packet: `P::new(OPEN).u32(1).s("/x").done()`.
    struct P(Vec<u8>);

    impl P {
        fn new(kind: u8) -> P {
            P(vec![kind])
        }
        fn u32(mut self, v: u32) -> P {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> P {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn s(self, bytes: impl AsRef<[u8]>) -> P {
            let bytes = bytes.as_ref();
            let mut p = self.u32(u32::try_from(bytes.len()).unwrap());
            p.0.extend_from_slice(bytes);
            p
        }
        fn done(self) -> Vec<u8> {
            let mut out = u32::try_from(self.0.len()).unwrap().to_be_bytes().to_vec();
            out.extend(self.0);
            out
        }
    }

    use Side::{Client as C, Server as S};
    type Transcript = Vec<(Side, Vec<u8>)>;

    const OPENDIR: u8 = 11;
    const READDIR: u8 = 12;
    const FSTAT: u8 = 8;
    const STAT: u8 = 17;
    const REALPATH: u8 = 16;
    const PF_CREAT: u32 = 0x08;
    const PF_TRUNC: u32 = 0x10;
    const H: &[u8] = b"\0\0\0\x01";

    fn status(id: u32, code: u32) -> Vec<u8> {
        P::new(STATUS).u32(id).u32(code).s("msg").s("").done()
    }

    fn handshake() -> Transcript {
        vec![
            (C, P::new(INIT).u32(3).done()),
            (
                S,
                P::new(VERSION)
                    .u32(3)
                    .s("posix-rename@openssh.com")
                    .s("1")
                    .done(),
            ),
        ]
    }

    fn open(id: u32, path: &str, pflags: u32) -> Vec<u8> {
        P::new(OPEN).u32(id).s(path).u32(pflags).u32(0).done()
    }

    fn handle(id: u32, h: &[u8]) -> Vec<u8> {
        P::new(HANDLE).u32(id).s(h).done()
    }

    fn write(id: u32, h: &[u8], offset: u64, len: usize) -> Vec<u8> {
        P::new(WRITE)
            .u32(id)
            .s(h)
            .u64(offset)
            .s(vec![7u8; len])
            .done()
    }

    fn put() -> Transcript {
        let mut t = handshake();
        t.extend([
            (C, P::new(REALPATH).u32(1).s(".").done()),
            (
                S,
                P::new(NAME).u32(1).u32(1).s("/tmp").s("/tmp").u32(0).done(),
            ),
            (C, P::new(STAT).u32(2).s("/tmp/up.bin").done()),
            (S, status(2, 2)),
            (C, open(3, "/tmp/up.bin", PF_WRITE | PF_CREAT | PF_TRUNC)),
            (S, handle(3, H)),
            (C, [write(4, H, 0, 3000), write(5, H, 3000, 2000)].concat()),
            (S, [status(4, 0), status(5, 0)].concat()),
            (C, P::new(FSETSTAT).u32(6).s(H).u32(0).done()),
            (S, status(6, 0)),
            (C, P::new(CLOSE).u32(7).s(H).done()),
            (S, status(7, 0)),
        ]);
        t
    }

    fn get() -> Transcript {
        let mut t = handshake();
        t.extend([
            (C, open(1, "/tmp/up.bin", PF_READ)),
            (S, handle(1, b"h2")),
            (C, P::new(FSTAT).u32(2).s(b"h2").done()),
            (S, P::new(ATTRS).u32(2).u32(0).done()),
            (
                C,
                [
                    P::new(READ).u32(3).s(b"h2").u64(0).u32(32768).done(),
                    P::new(READ).u32(4).s(b"h2").u64(32768).u32(32768).done(),
                ]
                .concat(),
            ),
            (S, P::new(DATA).u32(3).s(vec![1u8; 5000]).done()),
            (S, status(4, 1)),
            (C, P::new(CLOSE).u32(5).s(b"h2").done()),
            (S, status(5, 0)),
        ]);
        t
    }

    fn ops() -> Transcript {
        let mut t = handshake();
        t.extend([
            (C, P::new(REMOVE).u32(1).s("/tmp/up.bin").done()),
            (S, status(1, 0)),
            (C, P::new(RENAME).u32(2).s("/tmp/a").s("/tmp/b").done()),
            (S, status(2, 4)),
            (
                C,
                P::new(EXTENDED)
                    .u32(3)
                    .s("posix-rename@openssh.com")
                    .s("/tmp/a")
                    .s("/tmp/c")
                    .done(),
            ),
            (S, status(3, 0)),
            (C, P::new(MKDIR).u32(4).s("/tmp/d").u32(0).done()),
            (S, status(4, 0)),
            (C, P::new(RMDIR).u32(5).s("/tmp/d").done()),
            (S, status(5, 3)),
            (C, P::new(SETSTAT).u32(6).s("/tmp/c").u32(0).done()),
            (S, status(6, 0)),
            (
                C,
                P::new(SYMLINK)
                    .u32(7)
                    .s("/tmp/target")
                    .s("/tmp/link")
                    .done(),
            ),
            (S, status(7, 0)),
            (
                C,
                P::new(EXTENDED)
                    .u32(8)
                    .s("hardlink@openssh.com")
                    .s("/tmp/c")
                    .s("/tmp/hard")
                    .done(),
            ),
            (S, status(8, 0)),
            (C, open(9, "/etc/shadow", PF_READ)),
            (S, status(9, 3)),
            (C, P::new(OPENDIR).u32(10).s("/tmp").done()),
            (S, handle(10, b"dir")),
            (C, P::new(READDIR).u32(11).s(b"dir").done()),
            (S, P::new(NAME).u32(11).u32(0).done()),
            (C, P::new(CLOSE).u32(12).s(b"dir").done()),
            (S, status(12, 0)),
            (
                C,
                P::new(EXTENDED)
                    .u32(13)
                    .s("statvfs@openssh.com")
                    .s("/")
                    .done(),
            ),
            (S, P::new(EXTENDED_REPLY).u32(13).u64(0).done()),
            (
                C,
                P::new(EXTENDED).u32(14).s("frobnicate@example.com").done(),
            ),
            (S, P::new(EXTENDED_REPLY).u32(14).done()),
        ]);
        t
    }

    /// Feeds `t` in chunks of the sizes `chunk(remaining)` says, then finishes.
    fn run_with(t: &Transcript, chunk: &mut dyn FnMut(usize) -> usize) -> Vec<SftpEvent> {
        let mut audit = SftpAudit::new();
        let mut events = Vec::new();
        for (side, bytes) in t {
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let n = chunk(rest.len()).clamp(1, rest.len());
                let (now, later) = rest.split_at(n);
                events.extend(match side {
                    C => audit.from_client(now),
                    S => audit.from_server(now),
                });
                check_bounds(&audit);
                rest = later;
            }
        }
        events.extend(audit.finish());
        events
    }

    fn run(t: &Transcript) -> Vec<SftpEvent> {
        run_with(t, &mut |n| n)
    }

    fn check_bounds(audit: &SftpAudit) {
        let u = audit.usage();
        assert!(u.pending <= MAX_PENDING, "{u:?}");
        assert!(u.pending_bytes <= MAX_TABLE_BYTES, "{u:?}");
        assert!(u.files <= MAX_FILES, "{u:?}");
        assert!(u.file_bytes <= MAX_TABLE_BYTES, "{u:?}");
        assert!(u.kept <= 2 * KEEP, "{u:?}");
    }

    /// A small deterministic generator for random splits.
    fn splitter(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % 97).unwrap() % n + 1
        }
    }

    fn event(op: SftpOp, path: &str, status: &str) -> SftpEvent {
        SftpEvent::new(op, path.to_owned(), status)
    }

    fn close(path: &str, mode: OpenMode, read: u64, written: u64, status: &str) -> SftpEvent {
        SftpEvent {
            mode: Some(mode),
            bytes_read: Some(read),
            bytes_written: Some(written),
            ..event(SftpOp::Close, path, status)
        }
    }

    fn with_to(mut e: SftpEvent, to: &str) -> SftpEvent {
        e.to = Some(to.to_owned());
        e
    }

    #[test]
    fn sftp_put_reports_the_bytes_written_at_close() {
        assert_eq!(
            run(&put()),
            vec![
                event(SftpOp::Setstat, "/tmp/up.bin", "ok"),
                close("/tmp/up.bin", OpenMode::Write, 0, 5000, "ok"),
            ]
        );
    }

    #[test]
    fn sftp_get_reports_the_bytes_read_at_close() {
        assert_eq!(
            run(&get()),
            vec![close("/tmp/up.bin", OpenMode::Read, 5000, 0, "ok")]
        );
    }

    #[test]
    fn file_operations_are_reported_with_the_servers_status() {
        let failed_open = SftpEvent {
            mode: Some(OpenMode::Read),
            ..event(SftpOp::Open, "/etc/shadow", "permission denied")
        };
        assert_eq!(
            run(&ops()),
            vec![
                event(SftpOp::Remove, "/tmp/up.bin", "ok"),
                with_to(event(SftpOp::Rename, "/tmp/a", "failure"), "/tmp/b"),
                with_to(event(SftpOp::Rename, "/tmp/a", "ok"), "/tmp/c"),
                event(SftpOp::Mkdir, "/tmp/d", "ok"),
                event(SftpOp::Rmdir, "/tmp/d", "permission denied"),
                event(SftpOp::Setstat, "/tmp/c", "ok"),
                with_to(event(SftpOp::Symlink, "/tmp/target", "ok"), "/tmp/link"),
                with_to(event(SftpOp::Hardlink, "/tmp/c", "ok"), "/tmp/hard"),
                failed_open,
                event(SftpOp::Extended, "frobnicate@example.com", "ok"),
            ]
        );
    }

    #[test]
    fn a_failed_write_is_not_counted() {
        let mut t = handshake();
        t.extend([
            (C, open(1, "/f", PF_READ | PF_WRITE)),
            (S, handle(1, H)),
            (C, [write(2, H, 0, 10), write(3, H, 10, 20)].concat()),
            (S, [status(2, 0), status(3, 4)].concat()),
            (C, P::new(CLOSE).u32(4).s(H).done()),
            (S, status(4, 0)),
        ]);
        assert_eq!(run(&t), vec![close("/f", OpenMode::ReadWrite, 0, 10, "ok")]);
    }

    #[test]
    fn the_end_of_the_channel_reports_what_is_open_and_unanswered() {
        let mut t = handshake();
        t.extend([
            (C, open(1, "/f", PF_WRITE)),
            (S, handle(1, H)),
            (C, write(2, H, 0, 10)),
            (S, status(2, 0)),
            (C, P::new(REMOVE).u32(3).s("/g").done()),
        ]);
        assert_eq!(
            run(&t),
            vec![
                event(SftpOp::Remove, "/g", CHANNEL_CLOSED),
                close("/f", OpenMode::Write, 0, 10, CHANNEL_CLOSED),
            ]
        );
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_events() {
        for t in [put(), get(), ops()] {
            let whole = run(&t);
            assert_eq!(run_with(&t, &mut |_| 1), whole);
            for seed in 1..20 {
                assert_eq!(run_with(&t, &mut splitter(seed)), whole, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_huge_length_stops_that_direction_with_one_event() {
        let mut audit = SftpAudit::new();
        let events = audit.from_client(&[0xff, 0xff, 0xff, 0xff, 3, 0, 0]);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].op, SftpOp::Unparsed);
        assert!(
            events[0]
                .status
                .starts_with("client: packet length 4294967295"),
            "{events:?}"
        );
        assert!(audit
            .from_client(&P::new(REMOVE).u32(1).s("/x").done())
            .is_empty());
        assert!(audit.from_client(&[0; 100]).is_empty());
        // The other direction goes on; nothing is pending, so nothing to report.
        assert!(audit.from_server(&status(1, 0)).is_empty());
        assert!(audit.finish().is_empty());

        let mut audit = SftpAudit::new();
        let events = audit.from_server(&(MAX_PACKET + 1).to_be_bytes());
        assert_eq!(events.len(), 1);
        assert!(events[0].status.starts_with("server: "), "{events:?}");
        assert_eq!(audit.from_server(&[0u8; 4]), vec![]);
    }

    #[test]
    fn a_field_past_its_packet_stops_that_direction() {
        let mut audit = SftpAudit::new();
        let bad = P::new(REMOVE).u32(1).u32(1000).done();
        let events = audit.from_client(&bad);
        assert_eq!(
            events,
            vec![event(
                SftpOp::Unparsed,
                "",
                "client: malformed REMOVE packet"
            )]
        );
        assert_eq!(audit.from_client(&bad), vec![]);
    }

    #[test]
    fn a_server_stopping_gives_up_the_pending_requests() {
        let mut audit = SftpAudit::new();
        assert!(audit.from_client(&open(1, "/f", PF_READ)).is_empty());
        assert!(audit
            .from_client(&P::new(REMOVE).u32(2).s("/g").done())
            .is_empty());
        let events = audit.from_server(&handle(1, &[b'h'; 300]));
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(
            (events[0].op, events[0].status.as_str()),
            (SftpOp::Open, REPLY_UNPARSED)
        );
        assert_eq!(events[1].op, SftpOp::Unparsed);
        assert_eq!(events[2], event(SftpOp::Remove, "/g", REPLY_UNPARSED));
        // Later requests are reported at once.
        assert_eq!(
            audit.from_client(&P::new(RMDIR).u32(3).s("/d").done()),
            vec![event(SftpOp::Rmdir, "/d", REPLY_UNPARSED)]
        );
    }

    #[test]
    fn another_version_stops_both_directions() {
        let mut audit = SftpAudit::new();
        let events = audit.from_server(&P::new(VERSION).u32(6).done());
        assert_eq!(events.len(), 1);
        assert!(events[0].status.contains("version 6"), "{events:?}");
        assert_eq!(
            audit.from_client(&P::new(REMOVE).u32(2).s("/g").done()),
            vec![]
        );
        assert_eq!(audit.finish(), vec![]);
    }

    #[test]
    fn the_request_table_is_capped_and_reports_what_it_drops() {
        let mut audit = SftpAudit::new();
        let mut dropped = 0;
        for id in 0..2000 {
            for e in audit.from_client(&open(id, "/f", PF_READ)) {
                assert_eq!(e.status, TOO_MANY_REQUESTS);
                dropped += 1;
            }
            check_bounds(&audit);
        }
        assert_eq!(dropped, 2000 - MAX_PENDING);
        assert_eq!(audit.usage().pending, MAX_PENDING);
        // The oldest went first: the newest are still answered.
        assert_eq!(audit.from_server(&status(1999, 2)).len(), 1);
        assert_eq!(audit.from_server(&status(0, 2)), vec![]);

        // Long paths hit the byte budget before the count.
        let mut audit = SftpAudit::new();
        let long = "€".repeat(4000);
        for id in 0..1000 {
            audit.from_client(&P::new(REMOVE).u32(id).s(&long).done());
            check_bounds(&audit);
        }
        let usage = audit.usage();
        assert!(usage.pending < 400, "{usage:?}");
        assert!(
            usage.pending_bytes > MAX_TABLE_BYTES - 4 * MAX_PATH_CHARS,
            "{usage:?}"
        );
    }

    #[test]
    fn a_reused_request_id_gives_up_the_first() {
        let mut audit = SftpAudit::new();
        audit.from_client(&P::new(REMOVE).u32(1).s("/a").done());
        let events = audit.from_client(&P::new(REMOVE).u32(1).s("/b").done());
        assert_eq!(events, vec![event(SftpOp::Remove, "/a", ID_REUSED)]);
        assert_eq!(
            audit.from_server(&status(1, 0)),
            vec![event(SftpOp::Remove, "/b", "ok")]
        );
    }

    #[test]
    fn the_file_table_is_capped_and_reports_what_it_drops() {
        let mut audit = SftpAudit::new();
        let mut dropped = 0;
        for id in 0..1100u32 {
            audit.from_client(&open(id, "/f", PF_READ));
            for e in audit.from_server(&handle(id, &id.to_be_bytes())) {
                assert_eq!((e.op, e.status.as_str()), (SftpOp::Close, TOO_MANY_FILES));
                dropped += 1;
            }
            check_bounds(&audit);
        }
        assert_eq!(dropped, 1100 - MAX_FILES);
        assert_eq!(audit.usage().files, MAX_FILES);
        assert_eq!(audit.finish().len(), MAX_FILES);
        assert_eq!(audit.usage().files, 0);
    }

    #[test]
    fn big_payloads_are_counted_not_kept() {
        let mut audit = SftpAudit::new();
        audit.from_client(&open(1, "/f", PF_WRITE));
        audit.from_server(&handle(1, H));
        let big = write(2, H, 0, 256 * 1024);
        for piece in big.chunks(1000) {
            audit.from_client(piece);
            assert!(audit.usage().kept <= KEEP);
        }
        audit.from_server(&status(2, 0));
        assert_eq!(
            audit.finish(),
            vec![close("/f", OpenMode::Write, 0, 256 * 1024, CHANNEL_CLOSED)]
        );
    }

    #[test]
    fn paths_are_escaped_and_cut() {
        let s = |b: &[u8]| {
            clean(Str {
                bytes: b,
                cut: false,
            })
        };
        assert_eq!(
            s("a\x1bb\\c\u{202e}d\u{85}".as_bytes()),
            "a\\x1bb\\\\c\\u{202e}d\\u{85}"
        );
        assert_eq!(s(b"caf\xff"), "caf\u{fffd}");
        let long = s(&[b'a'; 5000]);
        assert_eq!(long.chars().count(), MAX_PATH_CHARS);
        assert!(long.ends_with('…'));
        assert_eq!(
            s(&[b'a'; MAX_PATH_CHARS - 1]).chars().count(),
            MAX_PATH_CHARS - 1
        );
        let escapes = s(&[0x1b; 2000]);
        assert!(escapes.chars().count() <= MAX_PATH_CHARS);
        assert_eq!(
            clean(Str {
                bytes: b"ab",
                cut: true
            }),
            "ab…"
        );
    }

    #[test]
    fn a_path_beyond_the_kept_bytes_is_cut_not_misread() {
        // A rename whose old path fills the kept bytes: the new path is cut.
        let old = "o".repeat(KEEP);
        let mut audit = SftpAudit::new();
        audit.from_client(&P::new(RENAME).u32(1).s(&old).s("/new").done());
        let events = audit.from_server(&status(1, 0));
        assert_eq!(events.len(), 1);
        assert!(events[0].path.ends_with('…'));
        assert_eq!(events[0].to.as_deref(), Some("…"));
        // An OPEN whose flags lie beyond: mode unknown.
        let mut audit = SftpAudit::new();
        audit.from_client(&open(1, &"p".repeat(KEEP), PF_WRITE));
        let events = audit.from_server(&status(1, 2));
        assert_eq!(events[0].mode, None);
    }

    /// A real session, captured through a tee between OpenSSH 9.2's `sftp -b` and
    /// `/usr/lib/openssh/sftp-server -e`: put and get of a 100-byte file, a get of a
    /// missing file, a put into a missing directory, rename, mkdir, rmdir, symlink,
    /// ln, chmod, ls and three rm. In the fuzz target's input format (also its seed
    /// `seed-openssh-session`): chunks of one control byte `c` (bit 0: 0 client,
    /// 1 server; `c >> 1`: the length) and that many bytes.
    const OPENSSH_SESSION: &str = concat!(
        "12000000050100000003ff0000013e020000000300000018706f7369782d72656e616d65406f70656e737368",
        "2e636f6d00000001310000001373746174766673406f70656e7373682e636f6d000000013200000014667374",
        "6174766673406f70656e7373682e636f6d000000013200000014686172646c696e6b406f70656e7373682e63",
        "6f6d00000001ff31000000116673796e63406f70656e7373682e636f6d0000000131000000146c7365747374",
        "6174406f70656e7373682e636f6d0000000131000000126c696d697473406f70656e7373682e636f6d000000",
        "013100000017657870616e642d70617468406f70656e7373682e636f6d000000013100000009636f70792d64",
        "6174896100000001310000000e686f6d652d6469726563746f727900000001310000001e75736572732d6772",
        "6f7570732d62792d6964406f70656e7373682e636f6d00000001313e0000001bc800000001000000126c696d",
        "697473406f70656e7373682e636f6d5300000025c9000000010000000000040000000000000003fc00000000",
        "000003fc000000000000004e1b1c0000000a1000000002000000012e630000002d6800000002000000010000",
        "000c2f746d702f736674706361700000000c2f746d702f7366747063617000000000440000001e1100000003",
        "000000152f746d702f736674706361702f722f75702e62696e430000001d6500000003000000020000000c4e",
        "6f20737563682066696c65000000005c0000002a0300000004000000152f746d702f736674706361702f722f",
        "75702e62696e0000001a00000004000001a4230000000d66000000040000000400000000fe0000007d060000",
        "0006000000040000000000000000000000000000006443534848a9e3b43c9ffc0975da5db4c1b5a5fbac69be",
        "013d1030fc1933f9ef560202dbdbb854930a45feda00a08cb3c15d52941f88e4d85728ac0f59f29515c61d1d",
        "9d3137b1b4d3ee3740304e0b54a7e9c9ec3f2073cbf1ef3da57b7bff077ec65c042323390000001865000000",
        "0600000000000000075375636365737300000000220000000d04000000050000000400000000390000001865",
        "0000000500000000000000075375636365737300000000440000001e0700000006000000152f746d702f7366",
        "74706361702f722f75702e62696e530000002569000000060000000f00000000000000640000000000000000",
        "000081a46b176fb06b176fb0440000001e1100000007000000152f746d702f736674706361702f722f75702e",
        "62696e530000002569000000070000000f00000000000000640000000000000000000081a46b176fb06b176f",
        "b054000000260300000008000000152f746d702f736674706361702f722f75702e62696e0000000100000000",
        "230000000d660000000800000004000000003a00000019050000000900000004000000000000000000000000",
        "0003fc00e30000006d67000000090000006443534848a9e3b43c9ffc0975da5db4c1b5a5fbac69be013d1030",
        "fc1933f9ef560202dbdbb854930a45feda00a08cb3c15d52941f88e4d85728ac0f59f29515c61d1d9d3137b1",
        "b4d3ee3740304e0b54a7e9c9ec3f2073cbf1ef3da57b7bff077ec65c23233a00000019050000000a00000004",
        "0000000000000000000000640003fb9c410000001c650000000a000000010000000b456e64206f662066696c",
        "6500000000220000000d040000000b00000004000000003900000018650000000b0000000000000007537563",
        "63657373000000004e00000023070000000c0000001a2f746d702f736674706361702f722f6d697373696e67",
        "2e62696e430000001d650000000c000000020000000c4e6f20737563682066696c65000000004a0000002111",
        "0000000d000000182f746d702f736674706361702f6e6f6469722f782e62696e430000001d650000000d0000",
        "00020000000c4e6f20737563682066696c6500000000620000002d030000000e000000182f746d702f736674",
        "706361702f6e6f6469722f782e62696e0000001a00000004000001a4430000001d650000000e000000020000",
        "000c4e6f20737563682066696c6500000000b400000056c80000000f00000018706f7369782d72656e616d65",
        "406f70656e7373682e636f6d000000152f746d702f736674706361702f722f75702e62696e000000182f746d",
        "702f736674706361702f722f6d6f7665642e62696e3900000018650000000f00000000000000075375636365",
        "7373000000004a000000210e00000010000000102f746d702f736674706361702f722f6400000004000001ff",
        "39000000186500000010000000000000000753756363657373000000003a000000190f00000011000000102f",
        "746d702f736674706361702f722f643900000018650000001100000000000000075375636365737300000000",
        "78000000381400000012000000182f746d702f736674706361702f722f6d6f7665642e62696e000000132f74",
        "6d702f736674706361702f722f6c696e6b390000001865000000120000000000000007537563636573730000",
        "0000a800000050c80000001300000014686172646c696e6b406f70656e7373682e636f6d000000182f746d70",
        "2f736674706361702f722f6d6f7665642e62696e000000132f746d702f736674706361702f722f6861726439",
        "000000186500000013000000000000000753756363657373000000004a000000210700000014000000182f74",
        "6d702f736674706361702f722f6d6f7665642e62696e530000002569000000140000000f0000000000000064",
        "0000000000000000000081a46b176fb06b176fb05a000000290900000015000000182f746d702f7366747063",
        "61702f722f6d6f7665642e62696e000000040000018039000000186500000015000000000000000753756363",
        "65737300000000360000001707000000160000000e2f746d702f736674706361702f72530000002569000000",
        "160000000f00000000000010000000000000000000000041ed6b176fb06b176fb038000000180b0000001700",
        "00000f2f746d702f736674706361702f722f230000000d66000000170000000400000000220000000d0c0000",
        "00180000000400000000ff00000211680000001800000005000000012e0000003964727778722d78722d7820",
        "2020203220726f6f742020202020726f6f7420202020202020202034303936204465632020382030323a3437",
        "202e0000000f00000000000010000000000000000000000041ed6b176fb06b176fb0000000096d6f7665642e",
        "62696e000000ff412d72772d2d2d2d2d2d2d202020203220726f6f742020202020726f6f7420202020202020",
        "202020313030204465632020382030323a3437206d6f7665642e62696e0000000f0000000000000064000000",
        "0000000000000081806b176fb06b176fb0000000046c696e6b0000003c6c7277787277787277782020202031",
        "2072ff6f6f742020202020726f6f7420202020202020202020203234204465632020382030323a3437206c69",
        "6e6b0000000f000000000000001800000000000000000000a1ff6b176fb06b176fb0000000022e2e0000003a",
        "64727778722d78722d78202020203320726f6f742020202020726f6f7420202020202020202034303936ff20",
        "4465632020382030323a3437202e2e0000000f00000000000010000000000000000000000041ed6b176fb06b",
        "176fb000000004686172640000003c2d72772d2d2d2d2d2d2d202020203220726f6f742020202020726f6f74",
        "20202020202020202020313030204465632020382030323a343720686172640000000f000000330000000064",
        "0000000000000000000081806b176fb06b176fb0220000000d0c000000190000000400000000410000001c65",
        "00000019000000010000000b456e64206f662066696c6500000000220000000d040000001a00000004000000",
        "003900000018650000001a000000000000000753756363657373000000007600000037c80000001b0000001e",
        "75736572732d67726f7570732d62792d6964406f70656e7373682e636f6d0000000400000000000000040000",
        "0000430000001dc90000001b0000000800000004726f6f740000000800000004726f6f74400000001c070000",
        "001c000000132f746d702f736674706361702f722f6c696e6b5300000025690000001c0000000f0000000000",
        "00001800000000000000000000a1ff6b176fb06b176fb0400000001c0d0000001d000000132f746d702f7366",
        "74706361702f722f6c696e6b3900000018650000001d00000000000000075375636365737300000000400000",
        "001c070000001e000000132f746d702f736674706361702f722f686172645300000025690000001e0000000f",
        "00000000000000640000000000000000000081806b176fb06b176fb0400000001c0d0000001f000000132f74",
        "6d702f736674706361702f722f686172643900000018650000001f0000000000000007537563636573730000",
        "00004a000000210700000020000000182f746d702f736674706361702f722f6d6f7665642e62696e53000000",
        "2569000000200000000f00000000000000640000000000000000000081806b176fb06b176fb04a000000210d",
        "00000021000000182f746d702f736674706361702f722f6d6f7665642e62696e390000001865000000210000",
        "0000000000075375636365737300000000",
    );

    /// Decodes the fuzz target's input format into a transcript.
    fn chunks(data: &[u8]) -> Transcript {
        let mut t = Vec::new();
        let mut rest = data;
        while let Some((&c, tail)) = rest.split_first() {
            let n = usize::from(c >> 1).min(tail.len());
            let (bytes, tail) = tail.split_at(n);
            t.push((if c & 1 == 0 { C } else { S }, bytes.to_vec()));
            rest = tail;
        }
        t
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_real_openssh_session_gives_the_expected_events() {
        let t = chunks(&unhex(OPENSSH_SESSION));
        let events = run(&t);
        let r = |name: &str| format!("/tmp/sftpcap/r/{name}");
        let failed_put = SftpEvent {
            mode: Some(OpenMode::Write),
            ..event(SftpOp::Open, "/tmp/sftpcap/nodir/x.bin", "no such file")
        };
        assert_eq!(
            events,
            vec![
                close(&r("up.bin"), OpenMode::Write, 0, 100, "ok"),
                close(&r("up.bin"), OpenMode::Read, 100, 0, "ok"),
                failed_put,
                with_to(event(SftpOp::Rename, &r("up.bin"), "ok"), &r("moved.bin")),
                event(SftpOp::Mkdir, &r("d"), "ok"),
                event(SftpOp::Rmdir, &r("d"), "ok"),
                // OpenSSH's argument order: target first, then the new link.
                with_to(event(SftpOp::Symlink, &r("moved.bin"), "ok"), &r("link")),
                with_to(event(SftpOp::Hardlink, &r("moved.bin"), "ok"), &r("hard")),
                event(SftpOp::Setstat, &r("moved.bin"), "ok"),
                event(SftpOp::Remove, &r("link"), "ok"),
                event(SftpOp::Remove, &r("hard"), "ok"),
                event(SftpOp::Remove, &r("moved.bin"), "ok"),
            ]
        );
        assert_eq!(run_with(&t, &mut |_| 1), events);
    }

    fn arb_packet() -> impl Strategy<Value = (Side, Vec<u8>)> {
        let id = 0u32..1500;
        let h = prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), H.to_vec(), vec![]]);
        let path = "[/a-c\\x00-\\x1f]{0,12}";
        prop_oneof![
            (id.clone(), path, any::<u32>()).prop_map(|(i, p, f)| (C, open(i, &p, f))),
            (id.clone(), h.clone()).prop_map(|(i, h)| (S, handle(i, &h))),
            (id.clone(), h.clone(), 0usize..600).prop_map(|(i, h, n)| (C, write(i, &h, 0, n))),
            (id.clone(), h.clone())
                .prop_map(|(i, h)| (C, P::new(READ).u32(i).s(h).u64(0).u32(9).done())),
            (id.clone(), 0usize..600)
                .prop_map(|(i, n)| (S, P::new(DATA).u32(i).s(vec![0; n]).done())),
            (id.clone(), h).prop_map(|(i, h)| (C, P::new(CLOSE).u32(i).s(h).done())),
            (id.clone(), 0u32..10).prop_map(|(i, c)| (S, status(i, c))),
            (id.clone(), "[a-c]{0,3}", "[a-c]{0,3}")
                .prop_map(|(i, a, b)| (C, P::new(RENAME).u32(i).s(a).s(b).done())),
            (
                id,
                prop::sample::select(vec![
                    REMOVE, MKDIR, RMDIR, SETSTAT, SYMLINK, FSETSTAT, EXTENDED
                ]),
                "[a-c]{0,3}"
            )
                .prop_map(|(i, k, p)| (C, P::new(k).u32(i).s(&p).s(&p).done())),
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(c, b)| (if c { C } else { S }, b)),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_chunks_never_panic_and_stay_bounded(
            chunks in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)), 0..64)
        ) {
            let mut audit = SftpAudit::new();
            let mut unparsed = 0;
            for (client, bytes) in &chunks {
                let events = if *client { audit.from_client(bytes) } else { audit.from_server(bytes) };
                unparsed += events.iter().filter(|e| e.op == SftpOp::Unparsed).count();
                check_bounds(&audit);
            }
            audit.finish();
            prop_assert!(unparsed <= 2);
        }

        #[test]
        fn packet_sequences_split_anywhere_give_the_same_events(
            packets in prop::collection::vec(arb_packet(), 0..300),
            seed in 1u64..u64::MAX,
        ) {
            let mut t = handshake();
            t.extend(packets);
            let whole = run(&t);
            prop_assert_eq!(run_with(&t, &mut splitter(seed)), whole.clone());
            for e in &whole {
                prop_assert!(e.path.chars().count() <= MAX_PATH_CHARS);
                prop_assert!(!e.path.chars().any(char::is_control), "{:?}", e);
            }
        }
    }
}
