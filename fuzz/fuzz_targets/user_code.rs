//! Sign-in user codes (`user_code=` in a URL anyone can send): `UserCode::parse`
//! never panics, accepts exactly the canonical base64url (no padding) encodings of
//! 16 bytes, displays as its input, and every 16 bytes encode to a code it accepts.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tether_core::code::{CodeError, UserCode};

/// The 6-bit value of a base64url character.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Independent statement of the rule: 22 base64url characters whose last one
/// carries no bits beyond the 128 (its low 4 bits are zero).
fn is_canonical_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 22
        && b.iter().all(|c| sextet(*c).is_some())
        && b.last()
            .and_then(|c| sextet(*c))
            .is_some_and(|v| v & 0x0f == 0)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let parsed = UserCode::parse(s);
        assert_eq!(parsed.is_ok(), is_canonical_code(s), "{s:?} -> {parsed:?}");
        match parsed {
            Ok(code) => {
                assert_eq!(code.as_str(), s);
                assert_eq!(code.to_string(), s);
                let bytes = URL_SAFE_NO_PAD.decode(s).expect("accepted code decodes");
                assert_eq!(bytes.len(), 16);
                assert_eq!(URL_SAFE_NO_PAD.encode(&bytes), s, "canonical");
                assert_eq!(UserCode::parse(&code.to_string()), Ok(code.clone()));
                // Debug is for logs: never the whole bearer code.
                assert!(!format!("{code:?}").contains(s));
            }
            Err(e) => assert_eq!(e, CodeError::Malformed),
        }
    }

    // Any 16 bytes make a code that parses and round-trips.
    let mut raw = [0u8; 16];
    for (dst, src) in raw.iter_mut().zip(data.iter()) {
        *dst = *src;
    }
    let text = URL_SAFE_NO_PAD.encode(raw);
    let code = UserCode::parse(&text).expect("encoded 16 bytes parse");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(code.as_str()).ok(),
        Some(raw.to_vec())
    );
});
