//! Config files (`tether serve|check -c FILE`): any text makes `parse_config`
//! return a config or one error, never panic; the result is deterministic; errors
//! and warnings name the file and a line inside it; a valid config's routes have
//! unique-enough lookups and policies that evaluate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::config::parse_config;
use tether_core::policy::{evaluate, Input, KeyInput};
use tether_core::Timestamp;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Lines as YAML counts them (\n, \r\n or a lone \r), plus one past the end.
    let max_line = text.matches('\n').count() + text.matches('\r').count() + 2;
    let result = parse_config(text, FILE);
    let again = parse_config(text, FILE);
    match (&result, &again) {
        (Err(a), Err(b)) => assert_eq!(a, b, "deterministic error"),
        (Ok(a), Ok(b)) => {
            assert_eq!(a.warnings, b.warnings);
            assert_eq!(format!("{:?}", a.config), format!("{:?}", b.config));
        }
        _ => panic!("parse_config is not deterministic"),
    }
    match result {
        Err(e) => {
            assert_eq!(e.file, FILE);
            if let Some(line) = e.line {
                assert!(
                    (1..=max_line).contains(&line),
                    "line {line} out of range: {e}"
                );
            }
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.yaml:"), "{shown}");
            assert!(!shown.contains('\n'), "one line: {shown:?}");
        }
        Ok(parsed) => {
            for w in &parsed.warnings {
                assert!(w.starts_with("fuzz.yaml:"), "{w}");
            }
            let c = &parsed.config;
            let key = KeyInput::default();
            for r in &c.routes {
                assert!((1..=max_line).contains(&r.line), "route line {}", r.line);
                let found = c.route(&r.name).expect("a route is found by its name");
                assert_eq!(found.name, r.name);
                let policy = r.effective_policy();
                let input = Input {
                    identity: None,
                    login: Some("alice"),
                    key: &key,
                    source: None,
                    now: Timestamp(0),
                };
                let d = evaluate(&policy, &input);
                if r.policy.is_none() && !r.allow_any_authenticated_user {
                    assert!(!d.allow, "a route without a policy admits no one");
                }
            }
            let _ = c.sign_in_url("C6I3E-wUa1ne-TVtrORlQw");
            let _ = c.redirect_uri();
            // Secrets are redacted in Debug (what a log line would show). A cookie
            // secret is 44 base64 characters; written once in the file, it has no
            // other way into the Debug text.
            if let Some(secret) = &c.cookie_secret {
                let secret = secret.expose();
                if text.matches(secret.as_str()).count() == 1 {
                    assert!(
                        !format!("{c:?}").contains(secret.as_str()),
                        "cookie secret in Debug"
                    );
                }
            }
        }
    }
});
