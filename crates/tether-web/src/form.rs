//! Lenient `application/x-www-form-urlencoded` parsing for form bodies and query
//! strings, so handlers decide the order of checks (CSRF first) and the error text
//! instead of an extractor rejecting the request early.

use std::collections::HashMap;

/// Parsed fields; the first occurrence of a name wins.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fields(HashMap<String, String>);

impl Fields {
    /// Parses urlencoded bytes.
    pub(crate) fn parse(raw: &[u8]) -> Self {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Self(map)
    }

    /// Parses an optional query string.
    pub(crate) fn query(q: Option<&str>) -> Self {
        Self::parse(q.unwrap_or_default().as_bytes())
    }

    /// A field's value.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_wins_and_decodes() {
        let f = Fields::parse(b"a=1&b=x%20y&a=2&c=");
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), Some("x y"));
        assert_eq!(f.get("c"), Some(""));
        assert_eq!(f.get("d"), None);
        assert_eq!(Fields::query(None).get("a"), None);
    }
}
