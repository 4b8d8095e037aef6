//! Reading the recordings directory back for playback (issue 14): the files the
//! SSH side writes, `<dir>/<id>.cast` (`tether_core::recording`), listed newest
//! first from their header lines, and one opened by id.
//!
//! Only file names whose stem passes `is_recording_id` are touched (so an id from
//! a URL can never name a path outside the directory), only the first line of a
//! file is read (at most `MAX_HEADER` bytes), and files that are not tether
//! recordings are skipped. The directory scan runs on the blocking pool, never on
//! the async runtime. Who may see what is the handlers' business, not this one's;
//! this module knows nothing of HTTP.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use tether_core::recording::{is_recording_id, CastHeader, MAX_HEADER};

/// The most rows one listing returns.
pub(crate) const MAX_ROWS: usize = 200;

/// The most headers one listing reads (a huge directory is searched this far
/// back from the newest and no further).
pub(crate) const MAX_SCANNED: usize = 20_000;

/// One recording as listed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Listed {
    /// Its header line.
    pub(crate) header: CastHeader,
    /// The file's size in bytes.
    pub(crate) size: u64,
}

/// What a listing keeps. Every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Only this owner's (`user_id`, exact): everyone but an administrator.
    pub(crate) owner: Option<String>,
    /// A case-insensitive substring of the owner's email or user id.
    pub(crate) user: Option<String>,
    /// The route, exactly.
    pub(crate) route: Option<String>,
    /// The live session id, exactly.
    pub(crate) session: Option<String>,
    /// Started on or after this UTC day, `YYYYMMDD`.
    pub(crate) from: Option<String>,
    /// Started on or before this UTC day, `YYYYMMDD`.
    pub(crate) to: Option<String>,
}

impl Filter {
    /// Whether an id's start day (its first 8 characters) is in range; checked
    /// before the file is opened.
    fn day_in_range(&self, id: &str) -> bool {
        let Some(day) = id.get(..8) else {
            return false;
        };
        self.from.as_deref().is_none_or(|f| day >= f) && self.to.as_deref().is_none_or(|t| day <= t)
    }

    fn keeps(&self, h: &CastHeader) -> bool {
        let m = &h.tether;
        let user_ok = self.user.as_deref().is_none_or(|u| {
            let u = u.to_lowercase();
            m.email.to_lowercase().contains(&u) || m.user_id.to_lowercase().contains(&u)
        });
        self.owner.as_deref().is_none_or(|o| m.user_id == o)
            && user_ok
            && self.route.as_deref().is_none_or(|r| m.route == r)
            && self.session.as_deref().is_none_or(|s| m.session_id == s)
    }
}

/// A listing: newest first, at most [`MAX_ROWS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Listing {
    pub(crate) rows: Vec<Listed>,
    /// More matched than [`MAX_ROWS`].
    pub(crate) capped: bool,
    /// [`MAX_SCANNED`] headers were read before the end of the directory.
    pub(crate) scan_limited: bool,
}

/// The recordings in `dir` that `filter` keeps, newest first. A missing
/// directory is an empty listing.
pub(crate) async fn list(dir: &Path, filter: Filter) -> std::io::Result<Listing> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || list_blocking(&dir, &filter))
        .await
        .map_err(std::io::Error::other)?
}

fn list_blocking(dir: &Path, filter: &Filter) -> std::io::Result<Listing> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(e),
    };
    let mut ids: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry?;
        // Not a regular file (a directory, a symlink): not a recording.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".cast")) else {
            continue;
        };
        if is_recording_id(id) && filter.day_in_range(id) {
            ids.push(id.to_string());
        }
    }
    // Ids start with the UTC start time: a reverse sort is newest first.
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = Listing::default();
    for (scanned, id) in ids.iter().enumerate() {
        if scanned >= MAX_SCANNED {
            out.scan_limited = true;
            break;
        }
        let Ok(Some(found)) = read_header(&file_of(dir, id)) else {
            continue;
        };
        if found.header.tether.id != *id || !filter.keeps(&found.header) {
            continue;
        }
        if out.rows.len() == MAX_ROWS {
            out.capped = true;
            break;
        }
        out.rows.push(found);
    }
    Ok(out)
}

/// The path of recording `id` in `dir`; `None` unless `id` is a recording id.
pub(crate) fn path_of(dir: &Path, id: &str) -> Option<PathBuf> {
    is_recording_id(id).then(|| file_of(dir, id))
}

fn file_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.cast"))
}

/// Recording `id` in `dir`: its header and size, or `None` when the id is not a
/// recording id, there is no such file, or it is not a tether recording (or not
/// this id's).
pub(crate) async fn open(dir: &Path, id: &str) -> std::io::Result<Option<Listed>> {
    let Some(path) = path_of(dir, id) else {
        return Ok(None);
    };
    let id = id.to_string();
    let found = tokio::task::spawn_blocking(move || read_header(&path))
        .await
        .map_err(std::io::Error::other)??;
    Ok(found.filter(|f| f.header.tether.id == id))
}

/// A file's header (its first line, at most [`MAX_HEADER`] bytes) and size;
/// `None` when it is missing, not a regular file or not a tether recording.
fn read_header(path: &Path) -> std::io::Result<Option<Listed>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let limit = u64::try_from(MAX_HEADER)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut line = Vec::new();
    BufReader::new(file.take(limit)).read_until(b'\n', &mut line)?;
    if line.len() > MAX_HEADER {
        return Ok(None);
    }
    let Ok(text) = std::str::from_utf8(&line) else {
        return Ok(None);
    };
    Ok(CastHeader::parse(text).map(|header| Listed {
        header,
        size: meta.len(),
    }))
}

/// `YYYY-MM-DD` as `YYYYMMDD` (how ids begin); `None` when not shaped so.
pub(crate) fn compact_day(date: &str) -> Option<String> {
    let b = date.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    shaped.then(|| date.replace('-', ""))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn days_are_yyyy_mm_dd() {
        assert_eq!(compact_day("2026-12-08").as_deref(), Some("20261208"));
        for bad in ["", "2026-1-08", "2026/12/08", "20261208", "2026-12-08x"] {
            assert_eq!(compact_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn day_ranges_are_inclusive() {
        let f = Filter {
            from: Some("20261207".into()),
            to: Some("20261208".into()),
            ..Filter::default()
        };
        assert!(f.day_in_range("20261208T235959Z-r1-1-0"));
        assert!(f.day_in_range("20261207T000000Z-r1-1-0"));
        assert!(!f.day_in_range("20261209T000000Z-r1-1-0"));
        assert!(!f.day_in_range("20261206T235959Z-r1-1-0"));
    }

    #[test]
    fn only_recording_ids_make_paths() {
        let dir = Path::new("/srv/rec");
        assert!(path_of(dir, "../../etc/passwd").is_none());
        assert!(path_of(dir, "x").is_none());
        assert_eq!(
            path_of(dir, "20261208T010203Z-r1-7-0").unwrap(),
            Path::new("/srv/rec/20261208T010203Z-r1-7-0.cast")
        );
    }
}
