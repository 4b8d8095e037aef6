//! Who a signed-in person is, as the identity provider told us in the ID token.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A verified identity: IdP subject, email and the remaining claims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The IdP subject (`sub`); this is the user id everywhere in tether.
    pub subject: String,
    /// The `email` claim (empty when the IdP sent none).
    pub email: String,
    /// Display name, when the IdP sent one.
    pub name: Option<String>,
    /// All ID-token claims except the registered JWT ones (sorted by name).
    pub claims: BTreeMap<String, serde_json::Value>,
}

impl Identity {
    /// Values of a claim as strings: a string claim gives one value, a list gives
    /// each string element; anything else gives none.
    pub fn claim_values(&self, name: &str) -> Vec<String> {
        match self.claims.get(name) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    serde_json::Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect(),
            Some(serde_json::Value::Number(n)) => vec![n.to_string()],
            Some(serde_json::Value::Bool(b)) => vec![b.to_string()],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values_flatten_strings_and_lists() {
        let mut claims = BTreeMap::new();
        claims.insert("groups".to_string(), serde_json::json!(["sre", "dev", 3]));
        claims.insert("dept".to_string(), serde_json::json!("ops"));
        claims.insert("obj".to_string(), serde_json::json!({"a": 1}));
        let id = Identity {
            subject: "s".into(),
            email: "a@b".into(),
            name: None,
            claims,
        };
        assert_eq!(id.claim_values("groups"), vec!["sre", "dev", "3"]);
        assert_eq!(id.claim_values("dept"), vec!["ops"]);
        assert!(id.claim_values("obj").is_empty());
        assert!(id.claim_values("missing").is_empty());
    }
}
