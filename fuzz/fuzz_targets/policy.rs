//! Route policies (PPL, SPEC §6): a policy's YAML never panics the parser or the
//! evaluator, parsing is deterministic, and evaluation keeps its fail-closed
//! promises on every input tried: a denial always has a reason, `key_specific` and
//! `login_undetermined` only come with a denial, and the three-valued login rule is
//! sound — allowed without a login (jump host) means allowed for every login, and
//! allowed for some login means a route listing without a login shows the route.
//!
//! Input: the policy YAML, optionally followed by a NUL byte and bytes that pick an
//! extra identity, login, key and time (so plain YAML files are the seeds).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tether_core::config::yaml::parse_yaml;
use tether_core::policy::{evaluate, parse_policy, CertInput, Decision, Input, KeyInput, Policy};
use tether_core::{Identity, Timestamp};

const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const CA_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB";

fn identity(subject: &str, email: &str, verified: Option<bool>, groups: &[&str]) -> Identity {
    let mut claims = BTreeMap::new();
    claims.insert("groups".to_string(), serde_json::json!(groups));
    claims.insert("department".to_string(), serde_json::json!("ops"));
    claims.insert("email".to_string(), serde_json::json!(email));
    claims.insert(
        "unix_user".to_string(),
        serde_json::json!(["alice", "deploy"]),
    );
    if let Some(v) = verified {
        claims.insert("email_verified".to_string(), serde_json::json!(v));
    }
    Identity {
        subject: subject.to_string(),
        email: if verified == Some(false) {
            String::new()
        } else {
            email.to_string()
        },
        name: None,
        claims,
    }
}

fn decide(
    p: &Policy,
    id: Option<&Identity>,
    login: Option<&str>,
    key: &KeyInput,
    now: i64,
) -> Decision {
    let input = Input {
        identity: id,
        login,
        key,
        source: None,
        now: Timestamp(now),
    };
    let d = evaluate(p, &input);
    assert_eq!(d, evaluate(p, &input), "evaluation is deterministic");
    if !d.allow {
        assert!(!d.reasons.is_empty(), "a denial has a reason");
        assert!(!d.message().is_empty());
    }
    if d.key_specific || d.login_undetermined {
        assert!(!d.allow, "{d:?}");
    }
    if d.login_undetermined {
        assert!(login.is_none());
    }
    d
}

fuzz_target!(|data: &[u8]| {
    let (yaml, extra) = match data.iter().position(|b| *b == 0) {
        Some(i) => (
            data.get(..i).unwrap_or_default(),
            data.get(i + 1..).unwrap_or_default(),
        ),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(yaml) else {
        return;
    };
    let Ok(node) = parse_yaml(text) else {
        return;
    };
    let parsed = parse_policy(&node);
    assert_eq!(parsed, parse_policy(&node), "parsing is deterministic");
    let policy = match parsed {
        Ok(p) => p,
        Err(e) => {
            assert!(e.line >= 1, "{e}");
            return;
        }
    };

    let mut u = Unstructured::new(extra);
    let extra_login = String::arbitrary(&mut u).unwrap_or_default();
    let extra_email = String::arbitrary(&mut u).unwrap_or_default();
    let extra_group = String::arbitrary(&mut u).unwrap_or_default();
    let extra_now = i64::arbitrary(&mut u).unwrap_or_default();
    let extra_key = String::arbitrary(&mut u).unwrap_or_default();

    let identities = [
        None,
        Some(identity(
            "alice-sub",
            "alice@example.com",
            Some(true),
            &["sre", "dev"],
        )),
        Some(identity("bob-sub", "bob@corp.example", Some(false), &[])),
        Some(identity("carol-sub", "carol@example.com", None, &["ops"])),
        Some(identity(
            &extra_login,
            &extra_email,
            Some(true),
            &[extra_group.as_str()],
        )),
    ];
    let logins = ["alice", "root", "deploy", "", extra_login.as_str()];
    let keys = [
        KeyInput {
            public_key: ALICE_KEY.into(),
            cert: None,
        },
        KeyInput {
            public_key: extra_key.clone(),
            cert: Some(CertInput {
                ca_key: CA_KEY.into(),
                principals: vec!["alice".into(), extra_login.clone()],
                valid: true,
            }),
        },
    ];
    // Wednesday 2026-11-25 10:30 UTC, Saturday 2026-11-28 23:59:59 UTC, and the extra.
    let times = [1_795_602_600_000, 1_795_910_399_000, extra_now];

    for id in &identities {
        for key in &keys {
            for now in times {
                let jump = decide(&policy, id.as_ref(), None, key, now);
                for login in logins {
                    let d = decide(&policy, id.as_ref(), Some(login), key, now);
                    if jump.allow {
                        assert!(
                            d.allow,
                            "allowed without a login but not as {login:?}: {policy:?}"
                        );
                    }
                    if d.allow {
                        assert!(
                            jump.allow || jump.login_undetermined,
                            "allowed as {login:?} but hidden from a listing: {policy:?}"
                        );
                    }
                }
            }
        }
    }
});
