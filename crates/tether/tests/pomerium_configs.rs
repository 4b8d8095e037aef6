//! The corpus of Pomerium-shaped configs (`tests/pomerium-configs/`, issue 15): the
//! real binary's `tether check` accepts every one, with the environment its sidecar
//! `.env` file declares and nothing else, and prints what each file's `# expect:`
//! lines say (effective settings, warnings, the variables used). See the corpus's
//! README for the format.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tether_testkit::*;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pomerium-configs")
}

/// One corpus entry: a config file and/or an environment file.
struct Case {
    name: String,
    yaml: Option<String>,
    env: Vec<(String, String)>,
    expect: Vec<String>,
    files: Vec<(String, String)>,
}

fn directives(text: &str, case: &mut Case) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# expect: ") {
            case.expect.push(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("# file: ") {
            let (name, content) = rest.split_once(": ").expect("# file: NAME: CONTENT");
            case.files.push((name.to_string(), content.to_string()));
        }
    }
}

fn cases() -> Vec<Case> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let ext = path.extension()?.to_str()?;
            (ext == "yaml" || ext == "env").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let dir = corpus_dir();
            let mut case = Case {
                name: name.clone(),
                yaml: std::fs::read_to_string(dir.join(format!("{name}.yaml"))).ok(),
                env: Vec::new(),
                expect: Vec::new(),
                files: Vec::new(),
            };
            if let Some(yaml) = case.yaml.clone() {
                directives(&yaml, &mut case);
            }
            if let Ok(env) = std::fs::read_to_string(dir.join(format!("{name}.env"))) {
                directives(&env, &mut case);
                for line in env.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
                    let (k, v) = line.split_once('=').expect("KEY=VALUE");
                    case.env.push((k.to_string(), v.to_string()));
                }
            }
            case
        })
        .collect()
}

/// `tether check` on `case` in a fresh private directory: (exit status, output).
fn check(case: &Case) -> (Option<i32>, String) {
    let dir = private_tempdir("tether-corpus-");
    let at = |s: &str| s.replace("@DIR@", dir.path().to_str().unwrap());
    let private = |path: &Path, text: &str| {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    for (name, content) in &case.files {
        private(&dir.path().join(name), &format!("{}\n", at(content)));
    }
    let mut cmd = Command::new(tether_bin());
    cmd.current_dir(dir.path()).env_clear().arg("check");
    if let Some(yaml) = &case.yaml {
        private(&dir.path().join("config.yaml"), &at(yaml));
        cmd.args(["-c", "config.yaml"]);
    }
    for (k, v) in &case.env {
        cmd.env(k, at(v));
    }
    let out = run_command(cmd, None, Duration::from_secs(30));
    (out.status, format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn every_corpus_config_passes_tether_check() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let cases = cases();
    assert!(cases.len() >= 8, "corpus has {} configs", cases.len());
    assert!(
        cases.iter().any(|c| c.yaml.is_none()),
        "an environment-only config is in the corpus"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let (status, output) = check(case);
        if status != Some(0) || !output.contains(": OK") {
            failures.push(format!("{}: exit {status:?}\n{output}", case.name));
            continue;
        }
        for expected in &case.expect {
            if !output.contains(expected.as_str()) {
                failures.push(format!(
                    "{}: output lacks {expected:?}\n{output}",
                    case.name
                ));
            }
        }
        // Warnings only where the file says so.
        let warned = output
            .lines()
            .filter(|l| l.starts_with("warning: "))
            .count();
        let expected = case
            .expect
            .iter()
            .filter(|e| e.starts_with("warning: "))
            .count();
        if warned != expected {
            failures.push(format!(
                "{}: {warned} warnings, {expected} expected\n{output}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The harness can fail: an environment-only run missing a required variable, a
/// broken inline key, and a variable that overrides the file with a bad value are
/// refused by `tether check`, each with a line naming the cause.
#[test]
fn corpus_harness_sees_refusals() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let all = cases();
    let env_only = all.iter().find(|c| c.name == "env-only").unwrap();
    let mut missing = Case {
        name: "env-only without AUTHENTICATE_SERVICE_URL".into(),
        yaml: None,
        env: env_only
            .env
            .iter()
            .filter(|(k, _)| k != "AUTHENTICATE_SERVICE_URL")
            .cloned()
            .collect(),
        expect: Vec::new(),
        files: Vec::new(),
    };
    let (status, out) = check(&missing);
    assert_eq!(status, Some(2), "{out}");
    assert!(
        out.contains("missing required key authenticate_service_url")
            && out.contains("AUTHENTICATE_SERVICE_URL"),
        "{out}"
    );

    missing
        .env
        .push(("AUTHENTICATE_SERVICE_URL".into(), "ftp://x".into()));
    let (status, out) = check(&missing);
    assert_eq!(status, Some(2), "{out}");
    assert!(
        out.contains("$AUTHENTICATE_SERVICE_URL: authenticate_service_url: expected an http"),
        "{out}"
    );

    let inline = all.iter().find(|c| c.name == "inline-keys").unwrap();
    let broken = Case {
        name: "inline-keys, damaged".into(),
        yaml: inline
            .yaml
            .as_ref()
            .map(|y| y.replacen("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ", "AAAA", 1)),
        env: Vec::new(),
        expect: Vec::new(),
        files: Vec::new(),
    };
    let (status, out) = check(&broken);
    assert_eq!(status, Some(2), "{out}");
    assert!(
        out.contains("ssh_host_keys[0]: not an OpenSSH private key"),
        "{out}"
    );
}

/// `serve` reads the same sources: without `-c` and without `./config.yaml` the
/// environment alone (a missing key is named with its variable, exit 2, before any
/// port is bound), while a `-c` file that does not exist is an error even when the
/// environment holds a whole config — never a silent fall-back.
#[test]
fn serve_without_a_file_uses_the_environment_and_a_missing_c_file_is_an_error() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let env_only = cases().into_iter().find(|c| c.name == "env-only").unwrap();
    let run = |args: &[&str], drop: Option<&str>| {
        let dir = private_tempdir("tether-corpus-serve-");
        let mut cmd = Command::new(tether_bin());
        cmd.current_dir(dir.path()).env_clear().args(args);
        for (k, v) in env_only
            .env
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != drop)
        {
            cmd.env(k, v);
        }
        let out = run_command(cmd, None, Duration::from_secs(30));
        (out.status, format!("{}{}", out.stdout, out.stderr))
    };
    let (status, out) = run(&["serve"], Some("IDP_CLIENT_ID"));
    assert_eq!(status, Some(2), "{out}");
    assert!(
        out.contains(
            "environment (no -c given and no ./config.yaml): missing required key idp_client_id"
        ) && out.contains("IDP_CLIENT_ID"),
        "{out}"
    );
    let (status, out) = run(&["serve", "-c", "missing.yaml"], None);
    assert_eq!(status, Some(2), "{out}");
    assert!(out.contains("missing.yaml: cannot read config"), "{out}");
}
