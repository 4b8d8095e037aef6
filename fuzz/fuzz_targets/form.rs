//! Form bodies and query strings (`application/x-www-form-urlencoded`, any bytes a
//! browser or attacker posts): the handlers' parser never panics, keeps the first
//! value of a repeated name, agrees with the query-string entry point, and
//! round-trips whatever `form_urlencoded::Serializer` writes.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tether_web::fuzzing::FormFields;

/// The first value of every name, by the url crate directly.
fn first_values(raw: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    map
}

fn check_raw(raw: &[u8]) {
    let fields = FormFields::parse(raw);
    let expected = first_values(raw);
    for (k, v) in &expected {
        assert_eq!(fields.get(k), Some(v.as_str()), "field {k:?}");
    }
    for name in [
        "csrf",
        "user_code",
        "action",
        "binding_id",
        "ttl",
        "remember",
    ] {
        if !expected.contains_key(name) {
            assert_eq!(fields.get(name), None, "absent field {name:?}");
        }
    }
    if let Ok(q) = std::str::from_utf8(raw) {
        let query = FormFields::query(Some(q));
        for (k, v) in &expected {
            assert_eq!(query.get(k), Some(v.as_str()), "query field {k:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as a form body.
    check_raw(data);

    // 2. Fields made from the bytes, encoded by the standard serializer, parse
    //    back to the first value of each name.
    let mut u = Unstructured::new(data);
    let Ok(pairs) = Vec::<(String, String)>::arbitrary(&mut u) else {
        return;
    };
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        ser.append_pair(k, v);
    }
    let body = ser.finish();
    let fields = FormFields::parse(body.as_bytes());
    let mut first: HashMap<&str, &str> = HashMap::new();
    for (k, v) in &pairs {
        first.entry(k.as_str()).or_insert(v.as_str());
    }
    for (k, v) in first {
        assert_eq!(fields.get(k), Some(v), "round trip of {k:?} in {body:?}");
    }
    check_raw(body.as_bytes());
});
