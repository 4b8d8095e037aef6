//! Debian's chromium, headless, driven by `tests/browser/flow.js` (playwright-core):
//! a test hands over a list of steps as JSON and reads back `FLOW_OK` / `FLOW_FAIL`,
//! extracted texts and statuses. See flow.js for the step vocabulary.

use crate::process::{ensure_node_modules, run_command, tail};
use crate::repo_root;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// What one flow.js run reported.
#[derive(Debug, Clone)]
pub struct FlowResult {
    /// `FLOW_OK` was printed and the script exited 0.
    pub ok: bool,
    /// The whole stdout (the protocol lines).
    pub stdout: String,
    /// The script's diagnostics (each step, page console, errors).
    pub stderr: String,
    /// `TEXT <name> <json>` lines, decoded.
    pub texts: HashMap<String, String>,
    /// `STATUS <code>` lines (from `post` steps), in order.
    pub statuses: Vec<u16>,
    /// The `FLOW_FAIL <index> <message>` line's index and message, on failure.
    pub failure: Option<(i64, String)>,
}

impl FlowResult {
    /// Panics with the failure and the script's diagnostics unless the flow passed.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok,
            "browser flow failed: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.failure,
            self.stdout,
            tail(&self.stderr, 6000)
        );
        self
    }

    /// The extracted text `name`, panicking if the flow did not produce it.
    pub fn text(&self, name: &str) -> &str {
        self.texts
            .get(name)
            .unwrap_or_else(|| panic!("flow produced no TEXT {name}: {}", self.stdout))
    }
}

/// `<repo>/target/e2e-screenshots/<test_name>/`, created.
pub fn screenshot_dir(test_name: &str) -> PathBuf {
    let dir = repo_root().join("target/e2e-screenshots").join(test_name);
    std::fs::create_dir_all(&dir).expect("create screenshot dir");
    dir
}

/// Runs browser flows.
pub struct Browser;

impl Browser {
    /// Runs `node tests/browser/flow.js <json>` with `json` =
    /// `{"steps": [...], "screenshotDir": "...", "storageState": "..."}` (a missing
    /// `screenshotDir` becomes `target/e2e-screenshots/unnamed`). Bounded by 90 s.
    pub fn run(mut json: Value) -> FlowResult {
        let dir = repo_root().join("tests/browser");
        ensure_node_modules(&dir, "playwright-core");
        if json.get("screenshotDir").is_none() {
            json["screenshotDir"] = json!(screenshot_dir("unnamed").to_string_lossy());
        }
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("flow.js"))
            .arg(json.to_string())
            .current_dir(&dir);
        let out = run_command(cmd, None, Duration::from_secs(90));
        parse(out.status, out.stdout, out.stderr)
    }
}

fn parse(status: Option<i32>, stdout: String, stderr: String) -> FlowResult {
    let mut texts = HashMap::new();
    let mut statuses = Vec::new();
    let mut failure = None;
    let mut flow_ok = false;
    for line in stdout.lines() {
        if line == "FLOW_OK" {
            flow_ok = true;
        } else if let Some(rest) = line.strip_prefix("TEXT ") {
            if let Some((name, value)) = rest.split_once(' ') {
                if let Ok(Value::String(s)) = serde_json::from_str(value) {
                    texts.insert(name.to_string(), s);
                }
            }
        } else if let Some(code) = line.strip_prefix("STATUS ") {
            if let Ok(code) = code.trim().parse() {
                statuses.push(code);
            }
        } else if let Some(rest) = line.strip_prefix("FLOW_FAIL ") {
            let (index, message) = rest.split_once(' ').unwrap_or((rest, ""));
            failure = Some((index.parse().unwrap_or(-1), message.to_string()));
        }
    }
    if status.is_none() && failure.is_none() {
        failure = Some((-1, "flow.js killed after 90 s".to_string()));
    }
    FlowResult {
        ok: flow_ok && status == Some(0) && failure.is_none(),
        stdout,
        stderr,
        texts,
        statuses,
        failure,
    }
}

/// One browser profile for a test: its screenshot directory and a cookie jar that
/// persists between [`BrowserProfile::run`] calls, as one user's browser would.
pub struct BrowserProfile {
    /// Where screenshots (and `fail-<n>.png`) go.
    pub screenshot_dir: PathBuf,
    /// The Playwright storage state (cookies) file.
    pub storage_state: PathBuf,
    _dir: TempDir,
}

impl BrowserProfile {
    /// A fresh profile (no cookies) whose screenshots go to [`screenshot_dir`]`(test_name)`.
    pub fn new(test_name: &str) -> BrowserProfile {
        let dir = tempfile::Builder::new()
            .prefix("tether-browser-")
            .tempdir()
            .expect("tempdir");
        BrowserProfile {
            screenshot_dir: screenshot_dir(test_name),
            storage_state: dir.path().join("state.json"),
            _dir: dir,
        }
    }

    /// Runs `steps` (a JSON array) in this profile.
    pub fn run(&self, steps: Value) -> FlowResult {
        Browser::run(json!({
            "steps": steps,
            "screenshotDir": self.screenshot_dir.to_string_lossy(),
            "storageState": self.storage_state.to_string_lossy(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol() {
        let r = parse(
            Some(0),
            "TEXT code \"abc\\ndef\"\nSTATUS 403\nFLOW_OK\n".into(),
            String::new(),
        );
        assert!(r.ok);
        assert_eq!(r.text("code"), "abc\ndef");
        assert_eq!(r.statuses, vec![403]);
        let r = parse(
            Some(1),
            "FLOW_FAIL 2 text \"x\" not found\n".into(),
            String::new(),
        );
        assert!(!r.ok);
        assert_eq!(r.failure, Some((2, "text \"x\" not found".into())));
    }
}
