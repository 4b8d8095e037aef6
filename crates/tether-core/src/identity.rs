//! Who a signed-in person is, as the identity provider told us in the ID token.
//!
//! The email rule (SPEC §6, issue 12): an address counts only when the IdP vouched
//! for it. [`email_is_verified`] decides that once, at sign-in, and the session's
//! [`Identity::email`] holds the address only when it passed; an unverified one
//! stays visible in [`Identity::claims`] but satisfies nothing (`email`, `domain`,
//! `ssh_username_matches_email`, `claim/email`, the upstream certificate's key id).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A verified identity: IdP subject, email and the remaining claims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The IdP subject (`sub`); this is the user id everywhere in tether.
    pub subject: String,
    /// The verified email: the `email` claim when [`email_is_verified`] accepted it
    /// at sign-in, empty otherwise (none sent, or not verified).
    pub email: String,
    /// Display name, when the IdP sent one.
    pub name: Option<String>,
    /// All ID-token claims except the registered JWT ones (sorted by name).
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// Name of the OIDC claim that says whether the IdP verified `email`.
pub const EMAIL_VERIFIED_CLAIM: &str = "email_verified";

/// What the ID token says about `email_verified`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailVerified {
    /// `true` (or the string `"true"`, as some IdPs send it).
    Yes,
    /// `false`, or any other value.
    No,
    /// No claim (or `null`).
    Absent,
}

impl EmailVerified {
    /// Reads the claim's JSON value.
    pub fn from_claim(value: Option<&serde_json::Value>) -> Self {
        match value {
            None | Some(serde_json::Value::Null) => EmailVerified::Absent,
            Some(serde_json::Value::Bool(true)) => EmailVerified::Yes,
            Some(serde_json::Value::String(s)) if s == "true" => EmailVerified::Yes,
            Some(_) => EmailVerified::No,
        }
    }
}

/// Whether an email may be trusted: the IdP said `email_verified: true`, or it sent
/// no such claim and the operator set `assume_email_verified: true` (for IdPs that
/// never send it). `email_verified: false` is never trusted.
pub fn email_is_verified(claim: EmailVerified, assume_when_absent: bool) -> bool {
    match claim {
        EmailVerified::Yes => true,
        EmailVerified::No => false,
        EmailVerified::Absent => assume_when_absent,
    }
}

impl Identity {
    /// The email policy criteria may trust: [`Identity::email`] unless empty or the
    /// claims say `email_verified` is not true and not absent (a session stored
    /// before the rule existed is still checked for an explicit `false`).
    pub fn verified_email(&self) -> Option<&str> {
        let claim = EmailVerified::from_claim(self.claims.get(EMAIL_VERIFIED_CLAIM));
        (!self.email.is_empty() && claim != EmailVerified::No).then_some(self.email.as_str())
    }

    /// Values of a claim for policy decisions: as [`Identity::claim_values`], except
    /// that `email` gives only the [verified](Identity::verified_email) address.
    pub fn trusted_claim_values(&self, name: &str) -> Vec<String> {
        if name == "email" {
            return self
                .verified_email()
                .map(str::to_string)
                .into_iter()
                .collect();
        }
        self.claim_values(name)
    }

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

    #[test]
    fn email_verified_rule() {
        use serde_json::json;
        let claim = |v: serde_json::Value| EmailVerified::from_claim(Some(&v));
        assert_eq!(claim(json!(true)), EmailVerified::Yes);
        assert_eq!(claim(json!("true")), EmailVerified::Yes);
        assert_eq!(claim(json!(false)), EmailVerified::No);
        assert_eq!(claim(json!("false")), EmailVerified::No);
        assert_eq!(claim(json!(1)), EmailVerified::No);
        assert_eq!(claim(json!(null)), EmailVerified::Absent);
        assert_eq!(EmailVerified::from_claim(None), EmailVerified::Absent);
        for assume in [false, true] {
            assert!(email_is_verified(EmailVerified::Yes, assume));
            assert!(
                !email_is_verified(EmailVerified::No, assume),
                "false is never trusted"
            );
        }
        assert!(
            !email_is_verified(EmailVerified::Absent, false),
            "absent: off by default"
        );
        assert!(
            email_is_verified(EmailVerified::Absent, true),
            "absent: opt-in"
        );
    }

    #[test]
    fn verified_email_and_trusted_email_claim() {
        let mut claims = BTreeMap::new();
        claims.insert("email".to_string(), serde_json::json!("eve@example.com"));
        let mut id = Identity {
            subject: "s".into(),
            email: "eve@example.com".into(),
            name: None,
            claims,
        };
        assert_eq!(id.verified_email(), Some("eve@example.com"));
        assert_eq!(id.trusted_claim_values("email"), vec!["eve@example.com"]);
        // A session stored with an explicit `email_verified: false`.
        id.claims
            .insert(EMAIL_VERIFIED_CLAIM.into(), serde_json::json!(false));
        assert_eq!(id.verified_email(), None);
        assert!(id.trusted_claim_values("email").is_empty());
        assert_eq!(
            id.claim_values("email"),
            vec!["eve@example.com"],
            "raw claim kept"
        );
        // Not verified at sign-in: no email at all.
        id.claims.remove(EMAIL_VERIFIED_CLAIM);
        id.email.clear();
        assert_eq!(id.verified_email(), None);
        assert!(id.trusted_claim_values("email").is_empty());
    }
}
