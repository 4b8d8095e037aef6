//! `session_recording` (Pomerium's route key, and tether's top-level default with
//! the storage settings); see [`crate::config::RecordingSettings`]. Every malformed
//! value is one error naming the line.

use std::time::Duration;

use super::Ctx;
use crate::config::yaml::Node;
use crate::config::{ConfigError, RecordingSettings, RecordingStorage};

/// The key, on a route and at the top level.
pub(super) const KEY: &str = "session_recording";

/// A `session_recording` mapping as written: what it sets.
#[derive(Clone, Debug, Default)]
pub(super) struct Written {
    enabled: Option<bool>,
    input: Option<bool>,
    command_output: Option<bool>,
    fail_closed: Option<bool>,
}

impl Written {
    /// The route's settings over the top-level default; `None`: not recorded.
    pub(super) fn over(&self, default: &Written) -> Option<RecordingSettings> {
        let pick =
            |mine: Option<bool>, theirs: Option<bool>, dflt: bool| mine.or(theirs).unwrap_or(dflt);
        pick(self.enabled, default.enabled, false).then(|| RecordingSettings {
            input: pick(self.input, default.input, false),
            command_output: pick(self.command_output, default.command_output, false),
            fail_closed: pick(self.fail_closed, default.fail_closed, true),
        })
    }
}

const ROUTE_FIELDS: &str = "enabled, input, command_output, fail_closed";
const TOP_FIELDS: &str =
    "enabled, input, command_output, fail_closed, directory, retention, max_size";

/// A route's `session_recording`.
pub(super) fn route(ctx: &Ctx, node: &Node) -> Result<Written, ConfigError> {
    let mut storage = RecordingStorage::default();
    settings(ctx, node, false, &mut storage)
}

/// The top-level `session_recording`: the default of every route, and storage.
pub(super) fn top(ctx: &Ctx, node: &Node) -> Result<(Written, RecordingStorage), ConfigError> {
    let mut storage = RecordingStorage::default();
    let written = settings(ctx, node, true, &mut storage)?;
    Ok((written, storage))
}

fn settings(
    ctx: &Ctx,
    node: &Node,
    top: bool,
    storage: &mut RecordingStorage,
) -> Result<Written, ConfigError> {
    let fields = if top { TOP_FIELDS } else { ROUTE_FIELDS };
    let Some(entries) = node.as_map() else {
        return Err(ctx.err(
            node.line,
            format!("{KEY}: expected a mapping of {fields}, e.g. {{enabled: true}}"),
        ));
    };
    let mut w = Written::default();
    for (k, v) in entries {
        let name = ctx.string("session_recording key", k)?;
        let full = format!("{KEY}.{name}");
        match name.as_str() {
            "enabled" => w.enabled = Some(ctx.bool(&full, v)?),
            "input" => w.input = Some(ctx.bool(&full, v)?),
            "command_output" => w.command_output = Some(ctx.bool(&full, v)?),
            "fail_closed" => w.fail_closed = Some(ctx.bool(&full, v)?),
            "directory" if top => {
                let dir = ctx.string(&full, v)?;
                if dir.trim().is_empty() {
                    return Err(ctx.err(v.line, format!("{full}: expected a directory path")));
                }
                storage.directory = Some(dir);
            }
            "retention" if top => {
                let d = ctx.duration(&full, v)?;
                if d < Duration::from_secs(3600) {
                    return Err(ctx.err(
                        v.line,
                        format!("{full}: at least 1h (recordings older than it are deleted)"),
                    ));
                }
                storage.retention = d;
            }
            "max_size" if top => {
                let text = ctx.string(&full, v)?;
                storage.max_size = parse_size(&text).filter(|n| *n >= 4096).ok_or_else(|| {
                    ctx.err(
                        v.line,
                        format!(
                            "{full}: {text:?} is not a size of at least 4KiB \
                                 (e.g. 100MiB, 1GiB, 65536)"
                        ),
                    )
                })?;
            }
            _ => return Err(ctx.err(k.line, format!("{full}: unknown key (expected {fields})"))),
        }
    }
    Ok(w)
}

/// `65536`, `64KiB`, `100MiB`, `1GiB` (also KB/MB/GB, as powers of 1000).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("100MiB"), Some(100 << 20));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("2MB"), Some(2_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5TiB"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }
}
