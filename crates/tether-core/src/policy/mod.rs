//! The Pomerium Policy Language subset of SPEC §6: parse a route's `policy` YAML into
//! a typed tree ([`Policy`]) and evaluate it as a pure function of
//! ([`Input`]: identity claims, login name, public key or certificate, the client's
//! source address, time) to an
//! allow/deny [`Decision`] with the reason codes that decided it.
//!
//! Parsing never silently allows: an unknown criterion, operator or matcher is an
//! error naming its line. Nothing here performs I/O or knows about SSH libraries:
//! certificates arrive already verified, as plain facts in [`KeyInput`].

mod cidr;
mod eval;
mod parse;
mod time_match;

use std::net::IpAddr;

use crate::identity::Identity;
use crate::time::Timestamp;

pub use cidr::Cidr;
pub use eval::{evaluate, Decision, Reason};
pub use parse::{parse_policy, PolicyError};

/// A route's policy: rules; access = some allow matches AND no deny matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// The policy `allow_any_authenticated_user: true` stands for.
    pub fn any_authenticated_user() -> Self {
        Policy {
            rules: vec![Rule {
                allow: Some(Block {
                    op: Op::And,
                    criteria: vec![Criterion::AuthenticatedUser],
                }),
                deny: None,
            }],
        }
    }
}

/// One rule: an optional allow block and an optional deny block.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Matches → allow (unless some deny matches).
    pub allow: Option<Block>,
    /// Matches → deny.
    pub deny: Option<Block>,
}

/// An operator over criteria.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// How the criteria combine.
    pub op: Op,
    /// The criteria.
    pub criteria: Vec<Criterion>,
}

/// Block operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// All match.
    And,
    /// Any matches.
    Or,
    /// None matches (Pomerium's `not` = not all; we follow PPL: `not` is true when
    /// not all criteria match).
    Not,
    /// None matches.
    Nor,
}

/// A string matcher (§6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatcher {
    /// Equal.
    Is(String),
    /// Prefix.
    StartsWith(String),
    /// Suffix.
    EndsWith(String),
    /// Substring.
    Contains(String),
    /// One of.
    In(Vec<String>),
}

impl StringMatcher {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Is(s) => value == s,
            StringMatcher::StartsWith(s) => value.starts_with(s.as_str()),
            StringMatcher::EndsWith(s) => value.ends_with(s.as_str()),
            StringMatcher::Contains(s) => value.contains(s.as_str()),
            StringMatcher::In(list) => list.iter().any(|s| s == value),
        }
    }

    /// Plain words for a denial: `is alice@example.com`.
    pub fn describe(&self) -> String {
        match self {
            StringMatcher::Is(s) => s.clone(),
            StringMatcher::StartsWith(s) => format!("starting with {s}"),
            StringMatcher::EndsWith(s) => format!("ending with {s}"),
            StringMatcher::Contains(s) => format!("containing {s}"),
            StringMatcher::In(l) => format!("one of {}", l.join(", ")),
        }
    }
}

/// A criterion (§6).
#[derive(Clone, Debug, PartialEq)]
pub enum Criterion {
    /// Always matches.
    Accept,
    /// Never matches.
    Reject,
    /// Any signed-in user.
    AuthenticatedUser,
    /// Email matcher.
    Email(StringMatcher),
    /// Email-domain matcher.
    Domain(StringMatcher),
    /// IdP subject matcher.
    User(StringMatcher),
    /// `claim/<name>`: the claim equals or contains one of the values.
    Claim {
        /// Claim name.
        name: String,
        /// Accepted values.
        values: Vec<String>,
    },
    /// `groups: has: X`.
    Groups(Vec<String>),
    /// `date: {after, before}`.
    Date(time_match::DateRange),
    /// `day_of_week`.
    DayOfWeek(time_match::Days),
    /// `time_of_day: {after, before, timezone}`.
    TimeOfDay(time_match::TimeRange),
    /// Login name matcher.
    SshUsername(StringMatcher),
    /// Login == local part of the email.
    SshUsernameMatchesEmail,
    /// Login is among the claim's values.
    SshUsernameMatchesClaim(String),
    /// The client key is one of these (normalized `type base64`).
    SshPublickey(Vec<String>),
    /// The client presented a user certificate from one of these CAs.
    SshCa(Vec<String>),
    /// `source_ip`: the client's address is in one of these ranges.
    SourceIp(Vec<Cidr>),
}

impl Criterion {
    /// Key-specific criteria: a denial by these lets the client try its next key.
    pub fn is_key_specific(&self) -> bool {
        matches!(self, Criterion::SshPublickey(_) | Criterion::SshCa(_))
    }

    /// Login-name criteria: they cannot be evaluated without a login (jump-host
    /// mode, §8), and there they deny rather than match.
    pub fn is_username_specific(&self) -> bool {
        matches!(
            self,
            Criterion::SshUsername(_)
                | Criterion::SshUsernameMatchesEmail
                | Criterion::SshUsernameMatchesClaim(_)
        )
    }
}

/// A verified user certificate the client presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInput {
    /// The signing CA's public key, `type base64`.
    pub ca_key: String,
    /// Principals.
    pub principals: Vec<String>,
    /// Signature verified and within its validity window.
    pub valid: bool,
}

/// The client's key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyInput {
    /// Public key `type base64` (no comment).
    pub public_key: String,
    /// The certificate, when the client authenticated with one.
    pub cert: Option<CertInput>,
}

/// Everything a decision depends on.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// Signed-in identity (`None` = nobody).
    pub identity: Option<&'a Identity>,
    /// Requested login name. `None` when the connection has no login (jump-host
    /// mode): login criteria are then unknown, and an unknown never allows.
    pub login: Option<&'a str>,
    /// The client's key.
    pub key: &'a KeyInput,
    /// The client's address (the SSH connection's peer). `None` when not known:
    /// `source_ip` is then unknown, and an unknown never allows.
    pub source: Option<IpAddr>,
    /// Now.
    pub now: Timestamp,
}

/// Normalizes an authorized_keys line to `type base64`: options and comments are
/// dropped. Returns `None` when no key is found.
pub fn normalize_key_line(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let pos = words
        .iter()
        .position(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-"))?;
    let ty = words.get(pos)?;
    let data = words.get(pos + 1)?;
    Some(format!("{ty} {data}"))
}

#[cfg(test)]
mod tests;
