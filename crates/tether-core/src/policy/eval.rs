//! Policy evaluation: a pure function of the policy and an [`Input`]. Returns the
//! decision, the reason codes that decided it, and one plain sentence for a denial
//! (`not in group sre`) — never the policy itself.

use super::{Block, Criterion, Input, Op, Policy};
use crate::identity::Identity;

/// Why a criterion matched or not (Pomerium-style reason codes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// Stable code, e.g. `groups-unauthorized`.
    pub code: &'static str,
    /// Plain words for the user, e.g. `not in group sre`.
    pub text: String,
}

/// The outcome of evaluating a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Access granted.
    pub allow: bool,
    /// The reasons that decided it (matched allows, or the failures / matched deny).
    pub reasons: Vec<Reason>,
    /// Denied only because of key-specific criteria (`ssh_publickey`, `ssh_ca`):
    /// the client may try its next key.
    pub key_specific: bool,
}

impl Decision {
    /// The one plain sentence for a denial.
    pub fn message(&self) -> String {
        self.reasons
            .first()
            .map_or_else(|| "no policy allows access".to_string(), |r| r.text.clone())
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Normal,
    /// Key-specific criteria count as matched (to tell key-specific denials apart).
    IgnoreKeys,
}

/// Evaluates `criterion`; `Ok` carries the match and its reason.
fn check(c: &Criterion, input: &Input, mode: Mode) -> (bool, Reason) {
    let r = |code: &'static str, text: String| Reason { code, text };
    if matches!(mode, Mode::IgnoreKeys) && c.is_key_specific() {
        return (true, r("key-ignored", String::new()));
    }
    if c.is_username_specific() && input.login.is_none() {
        return (true, r("ssh-username-skipped", String::new()));
    }
    let id = input.identity;
    // Only a verified email counts (identity module docs); an unverified one is
    // named in the denial so the user knows why.
    let email = id.and_then(Identity::verified_email).unwrap_or("");
    let unverified = id.is_some() && email.is_empty();
    match c {
        Criterion::Accept => (true, r("accept", "accepted".into())),
        Criterion::Reject => (false, r("reject", "access is rejected by policy".into())),
        Criterion::AuthenticatedUser => match id {
            Some(_) => (true, r("user-ok", "signed in".into())),
            None => (false, r("user-unauthenticated", "not signed in".into())),
        },
        Criterion::Email(m) => {
            let ok = !email.is_empty() && m.matches(email);
            match (ok, unverified) {
                (true, _) => (true, r("email-ok", format!("email {email} is not allowed"))),
                (false, true) => (false, unverified_reason()),
                (false, false) => (
                    false,
                    r(
                        "email-unauthorized",
                        format!("email {email} is not allowed"),
                    ),
                ),
            }
        }
        Criterion::Domain(m) => {
            let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
            let ok = !domain.is_empty() && m.matches(domain);
            match (ok, unverified) {
                (true, _) => (
                    true,
                    r("domain-ok", format!("domain {domain} is not allowed")),
                ),
                (false, true) => (false, unverified_reason()),
                (false, false) => (
                    false,
                    r(
                        "domain-unauthorized",
                        format!("domain {domain} is not allowed"),
                    ),
                ),
            }
        }
        Criterion::User(m) => {
            let ok = id.is_some_and(|i| m.matches(&i.subject));
            (
                ok,
                r(
                    if ok { "user-ok" } else { "user-unauthorized" },
                    "user is not allowed".into(),
                ),
            )
        }
        Criterion::Claim { name, values } => {
            let have = id.map(|i| i.trusted_claim_values(name)).unwrap_or_default();
            let ok = have.iter().any(|h| values.contains(h));
            (
                ok,
                r(
                    if ok { "claim-ok" } else { "claim-unauthorized" },
                    format!("claim {name} does not match"),
                ),
            )
        }
        Criterion::Groups(groups) => {
            let have = id.map(|i| i.claim_values("groups")).unwrap_or_default();
            let ok = groups.iter().any(|g| have.contains(g));
            (
                ok,
                r(
                    if ok {
                        "groups-ok"
                    } else {
                        "groups-unauthorized"
                    },
                    format!("not in group {}", groups.join(" or ")),
                ),
            )
        }
        Criterion::Date(d) => {
            let ok = d.matches(input.now);
            (
                ok,
                r(
                    if ok { "date-ok" } else { "date-unauthorized" },
                    "access is not allowed at this date".into(),
                ),
            )
        }
        Criterion::DayOfWeek(d) => {
            let ok = d.matches(input.now);
            (
                ok,
                r(
                    if ok {
                        "day-of-week-ok"
                    } else {
                        "day-of-week-unauthorized"
                    },
                    "access is not allowed on this day of the week".into(),
                ),
            )
        }
        Criterion::TimeOfDay(t) => {
            let ok = t.matches(input.now);
            (
                ok,
                r(
                    if ok {
                        "time-of-day-ok"
                    } else {
                        "time-of-day-unauthorized"
                    },
                    "access is not allowed at this time of day".into(),
                ),
            )
        }
        Criterion::SshUsername(m) => {
            let login = input.login.unwrap_or("");
            let ok = m.matches(login);
            (
                ok,
                r(
                    if ok {
                        "ssh-username-ok"
                    } else {
                        "ssh-username-unauthorized"
                    },
                    format!("login name {login:?} is not allowed"),
                ),
            )
        }
        Criterion::SshUsernameMatchesEmail => {
            let login = input.login.unwrap_or("");
            let local = email.rsplit_once('@').map_or("", |(l, _)| l);
            let ok = !local.is_empty() && login == local;
            if !ok && unverified {
                return (false, unverified_reason());
            }
            (
                ok,
                r(
                    if ok {
                        "ssh-username-ok"
                    } else {
                        "ssh-username-unauthorized"
                    },
                    format!("login name {login:?} does not match your email"),
                ),
            )
        }
        Criterion::SshUsernameMatchesClaim(claim) => {
            let login = input.login.unwrap_or("");
            let ok = id.is_some_and(|i| {
                i.trusted_claim_values(claim)
                    .iter()
                    .any(|v| !v.is_empty() && v == login)
            });
            (
                ok,
                r(
                    if ok {
                        "ssh-username-ok"
                    } else {
                        "ssh-username-unauthorized"
                    },
                    format!("login name {login:?} is not in your {claim} claim"),
                ),
            )
        }
        Criterion::SshPublickey(keys) => {
            let ok = keys.contains(&input.key.public_key);
            (
                ok,
                r(
                    if ok {
                        "ssh-publickey-ok"
                    } else {
                        "ssh-publickey-unauthorized"
                    },
                    "this SSH key is not allowed".into(),
                ),
            )
        }
        Criterion::SshCa(cas) => {
            let ok = input.key.cert.as_ref().is_some_and(|c| {
                c.valid
                    && cas.contains(&c.ca_key)
                    && input
                        .login
                        .is_none_or(|l| c.principals.iter().any(|p| p == l))
            });
            (
                ok,
                r(
                    if ok {
                        "ssh-ca-ok"
                    } else {
                        "ssh-ca-unauthorized"
                    },
                    "no valid certificate from an allowed CA".into(),
                ),
            )
        }
    }
}

/// The denial when an email criterion meets an address the IdP did not verify.
fn unverified_reason() -> Reason {
    Reason {
        code: "email-unverified",
        text: "your email address is not verified by the identity provider".into(),
    }
}

/// Evaluates a block: (matched, the reasons that decided it).
fn block(b: &Block, input: &Input, mode: Mode) -> (bool, Vec<Reason>) {
    if b.criteria.is_empty() {
        return (false, Vec::new());
    }
    let results: Vec<(bool, Reason)> = b.criteria.iter().map(|c| check(c, input, mode)).collect();
    let (matched, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(ok, _)| *ok);
    let hit = match b.op {
        Op::And => failed.is_empty(),
        Op::Or => !matched.is_empty(),
        // Pomerium: NOT => (NOT A) AND (NOT B); NOR => (NOT A) OR (NOT B).
        Op::Not => matched.is_empty(),
        Op::Nor => !failed.is_empty(),
    };
    // A hit is explained by what matched (or, for not/nor, what did not); a miss by
    // what failed (or, for not/nor, what matched).
    let positive = matches!(b.op, Op::And | Op::Or);
    let reasons = if hit == positive { matched } else { failed };
    let reasons = reasons.into_iter().map(|(_, r)| r).collect();
    (hit, reasons)
}

fn decide(policy: &Policy, input: &Input, mode: Mode) -> (bool, Vec<Reason>) {
    let mut allow_hit: Option<Vec<Reason>> = None;
    let mut allow_miss = Vec::new();
    for rule in &policy.rules {
        if let Some(d) = &rule.deny {
            let (hit, reasons) = block(d, input, mode);
            if hit {
                let detail = reasons.iter().find(|r| !r.text.is_empty()).map(|r| r.code);
                let text = "access is denied by policy".to_string();
                let code = detail.unwrap_or("deny");
                return (false, vec![Reason { code, text }]);
            }
        }
        if let Some(a) = &rule.allow {
            let (hit, reasons) = block(a, input, mode);
            if hit {
                allow_hit.get_or_insert_with(Vec::new).extend(reasons);
            } else {
                let first = reasons.into_iter().find(|r| !r.text.is_empty());
                allow_miss.push(first.unwrap_or_else(|| Reason {
                    code: "no-match",
                    text: "no policy allows access".into(),
                }));
            }
        }
    }
    if let Some(reasons) = allow_hit {
        return (true, reasons);
    }
    if allow_miss.is_empty() {
        allow_miss.push(Reason {
            code: "no-match",
            text: "no policy allows access".into(),
        });
    }
    (false, allow_miss)
}

/// Evaluates a policy. Deny wins over allow; no allow rule → deny.
pub fn evaluate(policy: &Policy, input: &Input) -> Decision {
    let (allow, reasons) = decide(policy, input, Mode::Normal);
    let key_specific = !allow && decide(policy, input, Mode::IgnoreKeys).0;
    Decision {
        allow,
        reasons,
        key_specific,
    }
}
