//! Policy evaluation: a pure function of the policy and an [`Input`]. Returns the
//! decision, the reason codes that decided it, and one plain sentence for a denial
//! (`not in group sre`) — never the policy itself.
//!
//! Fail closed (issue 12): a criterion that cannot be evaluated with the input — a
//! login-name criterion (`ssh_username*`, and `ssh_ca`'s principal check) on a
//! connection that has no login, i.e. a jump-host pipe, `source_ip` without the
//! client's address, or `groups` when the IdP left the groups out of the token
//! (Entra ID's group overage: `_claim_names` names `groups`) — is *unknown*,
//! never matched. Blocks combine unknowns three-valued (an `or` with a match still
//! matches; an `and` with a failure still fails; otherwise the block is unknown),
//! and an unknown allow block does not allow while an unknown deny block denies.

use super::{Block, Criterion, Input, Op, Policy};
use crate::config::groups_overage;
use crate::identity::Identity;
use crate::time::Timestamp;

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
    /// Denied with no login given, but only because login-name criteria could
    /// not be evaluated: some login name might be allowed. For listing routes
    /// (`routes`), never for access.
    pub login_undetermined: bool,
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
    /// Unknown allow blocks count as matched and unknown deny blocks as not:
    /// "could some login name be allowed?" (listing routes, never access).
    AnyLogin,
}

/// A criterion's or block's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    /// Matched.
    Yes,
    /// Did not match.
    No,
    /// Cannot be evaluated with this input (a login criterion without a login).
    Unknown,
}

/// Plain words for a criterion that needs a login name when there is none.
const LOGIN_UNKNOWN: &str =
    "the route's policy checks the login name, which a jump-host connection does not have";

/// The reason for an unknown login criterion.
fn login_unknown() -> Reason {
    Reason {
        code: "ssh-username-unknown",
        text: LOGIN_UNKNOWN.into(),
    }
}

/// Evaluates `c` three-valued: login criteria without a login are unknown.
fn check3(c: &Criterion, input: &Input, mode: Mode) -> (Tri, Reason) {
    if matches!(mode, Mode::IgnoreKeys) && c.is_key_specific() {
        return (
            Tri::Yes,
            Reason {
                code: "key-ignored",
                text: String::new(),
            },
        );
    }
    if c.is_username_specific() && input.login.is_none() {
        return (Tri::Unknown, login_unknown());
    }
    let on_groups = matches!(c, Criterion::Groups(_))
        || matches!(c, Criterion::Claim { name, .. } if name == "groups");
    if on_groups && input.identity.is_some_and(|i| groups_overage(&i.claims)) {
        return (
            Tri::Unknown,
            Reason {
                code: "groups-unknown",
                text: "your groups are not in the sign-in token (too many groups); ask the \
                       administrator to limit the groups the identity provider sends"
                    .into(),
            },
        );
    }
    if matches!(c, Criterion::SourceIp(_)) && input.source.is_none() {
        return (
            Tri::Unknown,
            Reason {
                code: "source-ip-unknown",
                text: "the client's address is not known".into(),
            },
        );
    }
    let (ok, reason) = check(c, input);
    if ok && input.login.is_none() && matches!(c, Criterion::SshCa(_)) {
        // The certificate is good, but whether it names the login cannot be told.
        return (Tri::Unknown, login_unknown());
    }
    (if ok { Tri::Yes } else { Tri::No }, reason)
}

/// Evaluates `criterion` on known input: (matched, its reason).
fn check(c: &Criterion, input: &Input) -> (bool, Reason) {
    match c {
        Criterion::Accept => verdict(true, "accept", "", "accepted".into()),
        Criterion::Reject => verdict(false, "", "reject", "access is rejected by policy".into()),
        Criterion::AuthenticatedUser
        | Criterion::Email(_)
        | Criterion::Domain(_)
        | Criterion::User(_)
        | Criterion::Claim { .. }
        | Criterion::Groups(_) => check_identity(c, input.identity),
        Criterion::Date(_) | Criterion::DayOfWeek(_) | Criterion::TimeOfDay(_) => {
            check_time(c, input.now)
        }
        Criterion::SshUsername(_)
        | Criterion::SshUsernameMatchesEmail
        | Criterion::SshUsernameMatchesClaim(_)
        | Criterion::SshPublickey(_)
        | Criterion::SshCa(_) => check_ssh(c, input),
        Criterion::SourceIp(ranges) => {
            let ok = input
                .source
                .is_some_and(|ip| ranges.iter().any(|r| r.contains(ip)));
            let text = match input.source {
                Some(ip) => format!("source address {} is not allowed", ip.to_canonical()),
                None => "the client's address is not known".into(),
            };
            verdict(ok, "source-ip-ok", "source-ip-unauthorized", text)
        }
    }
}

/// `(ok, reason)` with the code for the outcome; the text explains a denial (and
/// is kept on a match, where the caller may show it for `not`).
fn verdict(ok: bool, yes: &'static str, no: &'static str, text: String) -> (bool, Reason) {
    let code = if ok { yes } else { no };
    (ok, Reason { code, text })
}

/// The identity's verified email ("" when none), and whether an email exists but
/// is unverified (so a denial says why).
fn verified_email(id: Option<&Identity>) -> (&str, bool) {
    // Only a verified email counts (identity module docs).
    let email = id.and_then(Identity::verified_email).unwrap_or("");
    (email, id.is_some() && email.is_empty())
}

/// Criteria on who signed in: the session's identity and its claims.
fn check_identity(c: &Criterion, id: Option<&Identity>) -> (bool, Reason) {
    let (email, unverified) = verified_email(id);
    match c {
        Criterion::AuthenticatedUser => {
            let text = if id.is_some() {
                "signed in"
            } else {
                "not signed in"
            };
            verdict(id.is_some(), "user-ok", "user-unauthenticated", text.into())
        }
        Criterion::Email(m) => {
            let ok = !email.is_empty() && m.matches(email);
            if !ok && unverified {
                return (false, unverified_reason());
            }
            let text = format!("email {email} is not allowed");
            verdict(ok, "email-ok", "email-unauthorized", text)
        }
        Criterion::Domain(m) => {
            let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
            let ok = !domain.is_empty() && m.matches(domain);
            if !ok && unverified {
                return (false, unverified_reason());
            }
            let text = format!("domain {domain} is not allowed");
            verdict(ok, "domain-ok", "domain-unauthorized", text)
        }
        Criterion::User(m) => {
            let ok = id.is_some_and(|i| m.matches(&i.subject));
            verdict(
                ok,
                "user-ok",
                "user-unauthorized",
                "user is not allowed".into(),
            )
        }
        Criterion::Claim { name, values } => {
            let have = id.map(|i| i.trusted_claim_values(name)).unwrap_or_default();
            let ok = have.iter().any(|h| values.contains(h));
            let text = format!("claim {name} does not match");
            verdict(ok, "claim-ok", "claim-unauthorized", text)
        }
        Criterion::Groups(groups) => {
            let have = id.map(|i| i.claim_values("groups")).unwrap_or_default();
            let ok = groups.iter().any(|g| have.contains(g));
            let text = format!("not in group {}", groups.join(" or "));
            verdict(ok, "groups-ok", "groups-unauthorized", text)
        }
        _ => unreachable_criterion(),
    }
}

/// Criteria on when: the evaluation time.
fn check_time(c: &Criterion, now: Timestamp) -> (bool, Reason) {
    match c {
        Criterion::Date(d) => verdict(
            d.matches(now),
            "date-ok",
            "date-unauthorized",
            "access is not allowed at this date".into(),
        ),
        Criterion::DayOfWeek(d) => verdict(
            d.matches(now),
            "day-of-week-ok",
            "day-of-week-unauthorized",
            "access is not allowed on this day of the week".into(),
        ),
        Criterion::TimeOfDay(t) => verdict(
            t.matches(now),
            "time-of-day-ok",
            "time-of-day-unauthorized",
            "access is not allowed at this time of day".into(),
        ),
        _ => unreachable_criterion(),
    }
}

/// Criteria on the SSH side: the login name and the client's key or certificate.
fn check_ssh(c: &Criterion, input: &Input) -> (bool, Reason) {
    const YES: &str = "ssh-username-ok";
    const NO: &str = "ssh-username-unauthorized";
    let login = input.login.unwrap_or("");
    match c {
        Criterion::SshUsername(m) => {
            let text = format!("login name {login:?} is not allowed");
            verdict(m.matches(login), YES, NO, text)
        }
        Criterion::SshUsernameMatchesEmail => {
            let (email, unverified) = verified_email(input.identity);
            let local = email.rsplit_once('@').map_or("", |(l, _)| l);
            let ok = !local.is_empty() && login == local;
            if !ok && unverified {
                return (false, unverified_reason());
            }
            let text = format!("login name {login:?} does not match your email");
            verdict(ok, YES, NO, text)
        }
        Criterion::SshUsernameMatchesClaim(claim) => {
            let ok = input.identity.is_some_and(|i| {
                i.trusted_claim_values(claim)
                    .iter()
                    .any(|v| !v.is_empty() && v == login)
            });
            let text = format!("login name {login:?} is not in your {claim} claim");
            verdict(ok, YES, NO, text)
        }
        Criterion::SshPublickey(keys) => verdict(
            keys.contains(&input.key.public_key),
            "ssh-publickey-ok",
            "ssh-publickey-unauthorized",
            "this SSH key is not allowed".into(),
        ),
        Criterion::SshCa(cas) => {
            let ok = input.key.cert.as_ref().is_some_and(|c| {
                c.valid
                    && cas.contains(&c.ca_key)
                    && input
                        .login
                        .is_none_or(|l| c.principals.iter().any(|p| p == l))
            });
            let text = "no valid certificate from an allowed CA".into();
            verdict(ok, "ssh-ca-ok", "ssh-ca-unauthorized", text)
        }
        _ => unreachable_criterion(),
    }
}

/// [`check`] routes each criterion to the one function that knows it; a criterion
/// reaching another is a bug in `check`, and it denies (fail closed).
fn unreachable_criterion() -> (bool, Reason) {
    debug_assert!(false, "criterion routed to the wrong check");
    verdict(
        false,
        "",
        "internal",
        "criterion could not be evaluated".into(),
    )
}

/// The denial when an email criterion meets an address the IdP did not verify.
fn unverified_reason() -> Reason {
    Reason {
        code: "email-unverified",
        text: "your email address is not verified by the identity provider".into(),
    }
}

/// Evaluates a block: (outcome, the reasons that decided it). A hit is explained by
/// what matched (for `not`/`nor`, by what did not), a miss by what failed (for
/// `not`/`nor`, by what matched), an unknown by the unknown criteria.
fn block(b: &Block, input: &Input, mode: Mode) -> (Tri, Vec<Reason>) {
    if b.criteria.is_empty() {
        return (Tri::No, Vec::new());
    }
    let mut yes = Vec::new();
    let mut no = Vec::new();
    let mut unknown = Vec::new();
    for c in &b.criteria {
        let (t, reason) = check3(c, input, mode);
        match t {
            Tri::Yes => yes.push(reason),
            Tri::No => no.push(reason),
            Tri::Unknown => unknown.push(reason),
        }
    }
    let known = unknown.is_empty();
    // Pomerium: NOT => (NOT A) AND (NOT B); NOR => (NOT A) OR (NOT B).
    match b.op {
        Op::And if !no.is_empty() => (Tri::No, no),
        Op::And if known => (Tri::Yes, yes),
        Op::Or if !yes.is_empty() => (Tri::Yes, yes),
        Op::Or if known => (Tri::No, no),
        Op::Not if !yes.is_empty() => (Tri::No, yes),
        Op::Not if known => (Tri::Yes, no),
        Op::Nor if !no.is_empty() => (Tri::Yes, no),
        Op::Nor if known => (Tri::No, yes),
        _ => (Tri::Unknown, unknown),
    }
}

fn decide(policy: &Policy, input: &Input, mode: Mode) -> (bool, Vec<Reason>) {
    let optimistic = matches!(mode, Mode::AnyLogin);
    let mut allow_hit: Option<Vec<Reason>> = None;
    let mut allow_miss = Vec::new();
    for rule in &policy.rules {
        if let Some(d) = &rule.deny {
            let (t, reasons) = block(d, input, mode);
            if t == Tri::Yes || (t == Tri::Unknown && !optimistic) {
                let first = reasons.iter().find(|r| !r.text.is_empty());
                let detail = first.map(|r| r.code);
                let text = if t == Tri::Unknown {
                    first.map_or_else(|| LOGIN_UNKNOWN.to_string(), |r| r.text.clone())
                } else {
                    "access is denied by policy".to_string()
                };
                let code = detail.unwrap_or("deny");
                return (false, vec![Reason { code, text }]);
            }
        }
        if let Some(a) = &rule.allow {
            let (t, reasons) = block(a, input, mode);
            if t == Tri::Yes || (t == Tri::Unknown && optimistic) {
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

/// Evaluates a policy. Deny wins over allow; no allow rule → deny; a block that
/// cannot be evaluated never allows and always denies (module docs).
pub fn evaluate(policy: &Policy, input: &Input) -> Decision {
    let (allow, reasons) = decide(policy, input, Mode::Normal);
    let key_specific = !allow && decide(policy, input, Mode::IgnoreKeys).0;
    let login_undetermined =
        !allow && input.login.is_none() && decide(policy, input, Mode::AnyLogin).0;
    Decision {
        allow,
        reasons,
        key_specific,
        login_undetermined,
    }
}
