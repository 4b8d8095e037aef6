//! Environment variables, the way Pomerium reads them: every top-level key `k` can be
//! set as the variable `K` (upper case), and a variable overrides the file (Pomerium
//! binds each option to its upper-case name with viper, whose order is explicit
//! value, environment, config file, default). An empty variable counts as unset.
//!
//! Values are written the way Pomerium accepts them: scalars as they are
//! (`INSECURE_SERVER=true`, also `1`/`TRUE`/`f`…), lists comma-separated
//! (`IDP_SCOPES=openid,email`), and structured keys (`ROUTES`, `POLICY`,
//! `RUNTIME_FLAGS`, …) as YAML or JSON text, or base64 of it (Pomerium's form for
//! `POLICY`).
//!
//! The variables become nodes of the same marked tree the file gives, so one parser
//! checks both. Their lines are moved past [`ENV_LINE`] — a band per variable — so an
//! error or a warning about them names the variable instead of a line of the file.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::config::yaml::{parse_yaml, Node, Value};
use crate::config::ConfigError;

/// Lines at or past this belong to environment variable number `line / ENV_LINE - 1`,
/// at line `line % ENV_LINE` of its own text (0 for a one-line value).
pub(super) const ENV_LINE: usize = 1 << 24;

/// Keys whose value is a mapping or a list of mappings: YAML/JSON (or base64 of it)
/// in the environment.
const STRUCTURED: &[&str] = &[
    "routes",
    "policy",
    "runtime_flags",
    "dev_idp",
    "administrators",
    "identity_providers",
];

/// Keys whose value is a list of strings: comma-separated in the environment.
const LISTS: &[&str] = &["idp_scopes", "ssh_host_key_files", "ssh_host_keys"];

/// The variable Pomerium reads for `key`.
pub(super) fn var_name(key: &str) -> String {
    key.to_ascii_uppercase()
}

/// The environment variables that were applied, in the order of their bands.
#[derive(Debug, Default)]
pub(super) struct Applied {
    /// Variable names; the one at index `i` owns the lines of band `i + 1`.
    pub names: Vec<String>,
    /// The keys they set.
    pub keys: Vec<String>,
}

impl Applied {
    /// Which variable a (moved) line belongs to, and its line inside that variable.
    pub(super) fn locate(&self, line: usize) -> Option<(&str, usize)> {
        let band = line / ENV_LINE;
        let name = self.names.get(band.checked_sub(1)?)?;
        Some((name.as_str(), line % ENV_LINE))
    }
}

/// Lays the variables set in `env` for `keys` over the file's top-level `entries`:
/// a variable replaces the file's entry for its key, or is added.
pub(super) fn overlay<'k>(
    entries: &mut Vec<(Node, Node)>,
    env: &BTreeMap<String, String>,
    keys: impl IntoIterator<Item = &'k str>,
) -> Result<Applied, ConfigError> {
    let mut applied = Applied::default();
    for key in keys {
        let name = var_name(key);
        let Some(text) = env.get(&name).filter(|v| !v.is_empty()) else {
            continue;
        };
        let base = ENV_LINE * (applied.names.len() + 1);
        let value = node_for(key, text, base).map_err(|(line, message)| ConfigError {
            file: format!("${name}"),
            line: (line > 0).then_some(line),
            message,
        })?;
        let key_node = Node {
            value: Value::Scalar {
                text: key.to_string(),
                plain: true,
            },
            line: base,
        };
        match entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            Some(entry) => *entry = (key_node, value),
            None => entries.push((key_node, value)),
        }
        applied.names.push(name);
        applied.keys.push(key.to_string());
    }
    Ok(applied)
}

/// The node for one variable's text; an error carries the line inside the text.
fn node_for(key: &str, text: &str, base: usize) -> Result<Node, (usize, String)> {
    if STRUCTURED.contains(&key) {
        let source = decode_base64(text).unwrap_or_else(|| text.to_string());
        let mut node = parse_yaml(&source).map_err(|e| {
            (
                e.line,
                format!("{key}: not valid YAML or JSON: {}", e.message),
            )
        })?;
        shift(&mut node, base);
        return Ok(node);
    }
    if LISTS.contains(&key) {
        let items = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| scalar(s, base))
            .collect();
        return Ok(Node {
            value: Value::Seq(items),
            line: base,
        });
    }
    Ok(scalar(text, base))
}

fn scalar(text: &str, line: usize) -> Node {
    Node {
        value: Value::Scalar {
            text: text.to_string(),
            plain: true,
        },
        line,
    }
}

/// `text` as base64 of UTF-8 text, if it is that (YAML and JSON documents of a
/// mapping or a list never are: `:` `{` `[` `-` and spaces are not base64).
fn decode_base64(text: &str) -> Option<String> {
    let compact: String = text.split_whitespace().collect();
    let bytes = STANDARD.decode(compact).ok()?;
    String::from_utf8(bytes).ok()
}

fn shift(node: &mut Node, base: usize) {
    node.line = base + node.line.min(ENV_LINE - 1);
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| shift(n, base)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            shift(k, base);
            shift(v, base);
        }),
        Value::Null | Value::Scalar { .. } => {}
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it (viper's weak decoding of an
/// environment variable).
pub(super) fn env_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
