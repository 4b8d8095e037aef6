//! The SSH username on the wire (§1.1): `alice@prod` means login `alice` on route
//! `prod`; a name with no `@` means the internal CLI.

/// A parsed wire username.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireUser {
    /// The upstream login name (everything before the last `@`).
    pub login: String,
    /// The route name (everything after the last `@`), `None` for the internal CLI.
    pub route: Option<String>,
}

/// Why a wire username was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsernameError {
    /// Empty login or empty route.
    #[error("invalid username {0:?}: expected user or user@route")]
    Invalid(String),
}

/// Longest username accepted; longer ones are refused before any work is done.
pub const MAX_USERNAME_LEN: usize = 256;

/// Splits at the LAST `@`, as OpenSSH splits `user@route@host`.
pub fn parse_wire_user(wire: &str) -> Result<WireUser, UsernameError> {
    let invalid = || UsernameError::Invalid(wire.chars().take(64).collect());
    if wire.is_empty() || wire.len() > MAX_USERNAME_LEN || wire.chars().any(char::is_control) {
        return Err(invalid());
    }
    match wire.rsplit_once('@') {
        None => Ok(WireUser {
            login: wire.to_string(),
            route: None,
        }),
        Some((login, route)) => {
            if login.is_empty() || route.is_empty() {
                return Err(invalid());
            }
            Ok(WireUser {
                login: login.to_string(),
                route: Some(route.to_string()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_at_last_at() {
        assert_eq!(
            parse_wire_user("alice@prod"),
            Ok(WireUser {
                login: "alice".into(),
                route: Some("prod".into())
            })
        );
        assert_eq!(
            parse_wire_user("a@b@prod").map(|u| (u.login, u.route)),
            Ok(("a@b".into(), Some("prod".into())))
        );
        assert_eq!(
            parse_wire_user("alice"),
            Ok(WireUser {
                login: "alice".into(),
                route: None
            })
        );
    }

    #[test]
    fn refuses_empty_parts() {
        for s in ["", "@prod", "alice@", "@", "a\nb"] {
            assert!(parse_wire_user(s).is_err(), "{s:?}");
        }
        assert!(parse_wire_user(&"a".repeat(MAX_USERNAME_LEN + 1)).is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(login in "[a-z0-9._@-]{1,20}", route in "[a-z0-9._-]{1,20}") {
            prop_assume!(!login.starts_with('@') && !login.ends_with('@'));
            let u = parse_wire_user(&format!("{login}@{route}")).unwrap();
            prop_assert_eq!(u.login, login);
            prop_assert_eq!(u.route, Some(route));
        }

        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = parse_wire_user(&s);
        }

        #[test]
        fn no_at_means_cli(s in "[a-z0-9._-]{1,40}") {
            let u = parse_wire_user(&s).unwrap();
            prop_assert_eq!(u.route, None);
            prop_assert_eq!(u.login, s);
        }
    }
}
