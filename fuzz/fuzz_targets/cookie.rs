//! Sealed cookies (the `_pomerium`, `_login` and `_direct` cookie values any browser
//! sends): opening arbitrary text with a fixed key never panics and never opens one
//! purpose's value as another's; sealing any fields opens to the same fields until
//! they expire; flipping any bit of a sealed value, or another key, opens nothing;
//! and arbitrary plaintext sealed with the real key (what someone holding the key
//! could forge) opens without a panic.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tether_web::fuzzing::{CookieSealer, LoginFields, Purpose};

/// The fixed cookie secret of this target.
const KEY: [u8; 32] = *b"tether-fuzz-cookie-secret-32-byt";

/// Opens `value` as all three cookies at `now`; at most one may succeed.
fn open_all(s: &CookieSealer, value: &str, now: i64) -> usize {
    let session = s.open_session(value, now);
    let login = s.open_login(value, now);
    let direct = s.open_direct(value, now);
    if let Some((_, expires)) = &session {
        assert!(now < *expires, "expired session opened");
    }
    if let Some(l) = &login {
        assert!(now < l.expires, "expired login state opened");
    }
    if let Some((_, _, expires)) = &direct {
        assert!(now < *expires, "expired mark opened");
    }
    let opened = usize::from(session.is_some())
        + usize::from(login.is_some())
        + usize::from(direct.is_some());
    assert!(opened <= 1, "one value opened as two purposes: {value:?}");
    opened
}

/// Every single-bit change of the sealed bytes at `bit` must fail to open.
fn tampered(value: &str, bit: usize) -> Option<String> {
    let mut raw = URL_SAFE_NO_PAD
        .decode(value)
        .expect("sealed values are base64url");
    let len = raw.len();
    let byte = raw.get_mut((bit / 8) % len)?;
    *byte ^= 1 << (bit % 8);
    Some(URL_SAFE_NO_PAD.encode(raw))
}

fn round_trip(
    s: &CookieSealer,
    other: &CookieSealer,
    u: &mut Unstructured,
) -> libfuzzer_sys::arbitrary::Result<()> {
    let now = i64::arbitrary(u)?;
    let bit = usize::arbitrary(u)?;

    let session_id = String::arbitrary(u)?;
    let expires = i64::arbitrary(u)?;
    let sealed = s.seal_session(&session_id, expires).expect("session seals");
    let opened = s.open_session(&sealed, now);
    if now < expires {
        assert_eq!(opened, Some((session_id.clone(), expires)));
    } else {
        assert_eq!(opened, None, "expired");
    }
    let far_past = i64::MIN;
    assert!(s.open_login(&sealed, far_past).is_none(), "purpose bound");
    assert!(s.open_direct(&sealed, far_past).is_none(), "purpose bound");
    assert!(other.open_session(&sealed, far_past).is_none(), "key bound");
    if let Some(t) = tampered(&sealed, bit) {
        assert_eq!(open_all(s, &t, far_past), 0, "tampered value opened");
    }

    let login = LoginFields {
        state: String::arbitrary(u)?,
        nonce: String::arbitrary(u)?,
        pkce_verifier: String::arbitrary(u)?,
        return_to: String::arbitrary(u)?,
        opened_directly: bool::arbitrary(u)?,
        expires: i64::arbitrary(u)?,
    };
    let sealed = s.seal_login(&login).expect("login state seals");
    let opened = s.open_login(&sealed, now);
    if now < login.expires {
        assert_eq!(opened.as_ref(), Some(&login));
    } else {
        assert_eq!(opened, None, "expired");
    }
    assert!(s.open_session(&sealed, far_past).is_none(), "purpose bound");
    assert!(other.open_login(&sealed, far_past).is_none(), "key bound");
    if let Some(t) = tampered(&sealed, bit) {
        assert_eq!(open_all(s, &t, far_past), 0, "tampered value opened");
    }

    let return_to = String::arbitrary(u)?;
    let sid = String::arbitrary(u)?;
    let expires = i64::arbitrary(u)?;
    let sealed = s
        .seal_direct(&return_to, &sid, expires)
        .expect("mark seals");
    let opened = s.open_direct(&sealed, now);
    if now < expires {
        assert_eq!(opened, Some((return_to, sid, expires)));
    } else {
        assert_eq!(opened, None, "expired");
    }
    assert!(s.open_session(&sealed, far_past).is_none(), "purpose bound");
    assert!(other.open_direct(&sealed, far_past).is_none(), "key bound");

    // Arbitrary plaintext under the real key and a chosen purpose.
    let purpose = match u8::arbitrary(u)? % 3 {
        0 => Purpose::Session,
        1 => Purpose::Login,
        _ => Purpose::Direct,
    };
    let plain: Vec<u8> = Vec::arbitrary(u)?;
    let sealed = s.seal_bytes(purpose, &plain).expect("bytes seal");
    let n = open_all(s, &sealed, now);
    if n == 1 {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&plain).is_ok(),
            "opened non-JSON"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let s = CookieSealer::new(&KEY);
    let other = CookieSealer::new(&[0x5a; 32]);

    // 1. The input as a cookie value, as a browser sends it.
    let value = String::from_utf8_lossy(data);
    for now in [i64::MIN, 0, 1_795_602_600_000, i64::MAX] {
        open_all(&s, &value, now);
        open_all(&other, &value, now);
    }

    // 2. Seal/open round trips of fields taken from the input.
    let _ = round_trip(&s, &other, &mut Unstructured::new(data));
});
