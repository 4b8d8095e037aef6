//! The wire username (`user@route`, SSH_MSG_USERAUTH_REQUEST's user name, any bytes a
//! client sends): `parse_wire_user` never panics, accepts exactly what the rule
//! says (non-empty, at most 256 bytes, no control characters, split at the last `@`
//! into a non-empty login and route), and its result rebuilds the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::username::{parse_wire_user, UsernameError, WireUser, MAX_USERNAME_LEN};

fuzz_target!(|data: &[u8]| {
    // russh hands the handler a `String`; a client's non-UTF-8 name arrives lossily.
    let wire = String::from_utf8_lossy(data);
    let wire = wire.as_ref();
    let result = parse_wire_user(wire);

    let last_at = wire.rfind('@');
    let expected_ok = !wire.is_empty()
        && wire.len() <= MAX_USERNAME_LEN
        && !wire.chars().any(char::is_control)
        && last_at.is_none_or(|i| i > 0 && i + 1 < wire.len());
    assert_eq!(result.is_ok(), expected_ok, "{wire:?} -> {result:?}");

    match result {
        Ok(WireUser { login, route }) => {
            assert!(!login.is_empty());
            let rebuilt = match &route {
                Some(r) => {
                    assert!(!r.is_empty() && !r.contains('@'), "{r:?}");
                    format!("{login}@{r}")
                }
                None => {
                    assert!(!login.contains('@'));
                    login.clone()
                }
            };
            assert_eq!(rebuilt, wire);
            // parse -> display -> parse is stable.
            let again = parse_wire_user(&rebuilt).expect("rebuilt name parses");
            assert_eq!(again, WireUser { login, route });
        }
        Err(UsernameError::Invalid(shown)) => {
            // The error echoes at most 64 characters, a prefix of the input.
            assert!(shown.chars().count() <= 64);
            assert!(wire.starts_with(&shown));
        }
    }
});
