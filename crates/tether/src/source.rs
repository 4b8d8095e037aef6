//! Where `serve`, `check`, `bindings` and the reload watcher read the config from:
//! the file (optional), with the process environment laid over it the way Pomerium
//! does it (a variable such as `COOKIE_SECRET` overrides the file's key).
//!
//! Which file: `-c FILE` names one, and then it must exist — a mistyped path never
//! silently falls back to the environment. Without `-c`, `./config.yaml` is read
//! when it exists; when it does not, the environment alone is the config (as a
//! Pomerium container is usually run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tether_core::config::{load_config, Parsed, Sources};

/// The file read when `-c` is not given, if it exists.
pub const DEFAULT_FILE: &str = "config.yaml";

/// How errors name a config that has no file.
pub const ENVIRONMENT: &str = "environment (no -c given and no ./config.yaml)";

/// The config file to read: the one given, else `./config.yaml` if present, else
/// none (environment only).
pub fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let default = PathBuf::from(DEFAULT_FILE);
        default.exists().then_some(default)
    })
}

/// The process environment (variables whose name or value is not UTF-8 are left
/// out: no config key has such a name).
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Reads a file a `*_file` key names; the error is one line.
fn read_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Parses `text` (the file's, or `None` without a file) under the environment.
pub fn parse(text: Option<&str>, name: &str) -> Result<Parsed, String> {
    let env = environment();
    load_config(
        text,
        name,
        &Sources {
            env: &env,
            read_file: &read_file,
        },
    )
    .map_err(|e| e.to_string())
}

/// Reads and parses the config at `path` (or the environment alone for `None`).
/// The error is one line.
pub fn load(path: Option<&Path>) -> Result<Parsed, String> {
    match path {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{name}: cannot read config: {e}"))?;
            parse(Some(&text), &name)
        }
        None => parse(None, ENVIRONMENT),
    }
}
