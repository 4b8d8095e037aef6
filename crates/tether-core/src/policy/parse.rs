//! Policy YAML → [`Policy`]. Every unknown criterion, operator or matcher is an error
//! with its line; nothing unknown is ever treated as "allow".

use super::time_match::{parse_date_range, parse_days, parse_time_range};
use super::{normalize_key_line, Block, Cidr, Criterion, Op, Policy, Rule, StringMatcher};
use crate::config::yaml::{Node, Value};

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct PolicyError {
    /// 1-based line in the config file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn err(node: &Node, message: impl Into<String>) -> PolicyError {
    PolicyError {
        line: node.line,
        message: message.into(),
    }
}

/// Parses a route's `policy` value: one rule (mapping) or a list of rules.
pub fn parse_policy(node: &Node) -> Result<Policy, PolicyError> {
    let rules = match &node.value {
        Value::Seq(items) => items.iter().map(parse_rule).collect::<Result<_, _>>()?,
        Value::Map(_) => vec![parse_rule(node)?],
        _ => return Err(err(node, "policy: expected a rule or a list of rules")),
    };
    Ok(Policy { rules })
}

fn parse_rule(node: &Node) -> Result<Rule, PolicyError> {
    let entries = node
        .as_map()
        .ok_or_else(|| err(node, "policy rule: expected allow: and/or deny:"))?;
    let mut rule = Rule {
        allow: None,
        deny: None,
    };
    for (k, v) in entries {
        match k.as_str() {
            Some("allow") => rule.allow = Some(parse_block(v)?),
            Some("deny") => rule.deny = Some(parse_block(v)?),
            Some(other) => {
                return Err(err(
                    k,
                    format!("policy: unknown action {other:?} (expected allow or deny)"),
                ))
            }
            None => return Err(err(k, "policy: expected allow or deny")),
        }
    }
    if rule.allow.is_none() && rule.deny.is_none() {
        return Err(err(node, "policy rule: expected allow: and/or deny:"));
    }
    Ok(rule)
}

fn parse_block(node: &Node) -> Result<Block, PolicyError> {
    let entries = node
        .as_map()
        .ok_or_else(|| err(node, "policy: expected one operator (and, or, not, nor)"))?;
    let [(k, v)] = entries else {
        return Err(err(
            node,
            "policy: expected exactly one operator (and, or, not, nor)",
        ));
    };
    let op = match k.as_str() {
        Some("and") => Op::And,
        Some("or") => Op::Or,
        Some("not") => Op::Not,
        Some("nor") => Op::Nor,
        other => {
            return Err(err(
                k,
                format!(
                    "policy: unknown operator {:?} (expected and, or, not, nor)",
                    other.unwrap_or("")
                ),
            ))
        }
    };
    let items = v
        .as_seq()
        .ok_or_else(|| err(v, "policy: an operator takes a list of criteria"))?;
    let criteria = items
        .iter()
        .map(parse_criterion)
        .collect::<Result<_, _>>()?;
    Ok(Block { op, criteria })
}

fn expect_true(name: &str, v: &Node) -> Result<(), PolicyError> {
    match v.as_str() {
        Some("true") => Ok(()),
        _ => Err(err(v, format!("{name}: expected true"))),
    }
}

fn string_list(name: &str, v: &Node) -> Result<Vec<String>, PolicyError> {
    match &v.value {
        Value::Scalar { text, .. } => Ok(vec![text.clone()]),
        Value::Seq(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err(i, format!("{name}: expected strings")))
            })
            .collect(),
        _ => Err(err(
            v,
            format!("{name}: expected a string or a list of strings"),
        )),
    }
}

/// `is:`, `starts_with:`, `ends_with:`, `contains:`, `in:`, or a bare string / list.
pub(super) fn string_matcher(name: &str, v: &Node) -> Result<StringMatcher, PolicyError> {
    match &v.value {
        Value::Scalar { text, .. } => Ok(StringMatcher::Is(text.clone())),
        Value::Seq(_) => Ok(StringMatcher::In(string_list(name, v)?)),
        Value::Map(entries) => {
            let [(k, val)] = entries.as_slice() else {
                return Err(err(v, format!("{name}: expected exactly one matcher")));
            };
            let text = || {
                val.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err(val, format!("{name}: expected a string")))
            };
            match k.as_str() {
                Some("is") => Ok(StringMatcher::Is(text()?)),
                Some("starts_with") => Ok(StringMatcher::StartsWith(text()?)),
                Some("ends_with") => Ok(StringMatcher::EndsWith(text()?)),
                Some("contains") => Ok(StringMatcher::Contains(text()?)),
                Some("in") => Ok(StringMatcher::In(string_list(name, val)?)),
                other => Err(err(
                    k,
                    format!(
                        "{name}: unknown matcher {:?} (expected is, starts_with, ends_with, contains, in)",
                        other.unwrap_or("")
                    ),
                )),
            }
        }
        Value::Null => Err(err(v, format!("{name}: expected a matcher"))),
    }
}

fn keys(name: &str, v: &Node) -> Result<Vec<String>, PolicyError> {
    let lines = match v.get("in").or_else(|| v.get("is")) {
        Some(inner) => string_list(name, inner)?,
        None => string_list(name, v)?,
    };
    lines
        .iter()
        .map(|l| {
            normalize_key_line(l)
                .ok_or_else(|| err(v, format!("{name}: not an authorized_keys line: {l:?}")))
        })
        .collect()
}

fn parse_criterion(node: &Node) -> Result<Criterion, PolicyError> {
    let entries = node.as_map().ok_or_else(|| {
        err(
            node,
            "policy: a criterion is a mapping such as email: {is: ...}",
        )
    })?;
    let [(k, v)] = entries else {
        return Err(err(node, "policy: each criterion has exactly one name"));
    };
    let name = k
        .as_str()
        .ok_or_else(|| err(k, "policy: criterion name must be a string"))?;
    let c = match name {
        "accept" => {
            expect_true(name, v)?;
            Criterion::Accept
        }
        "reject" => {
            expect_true(name, v)?;
            Criterion::Reject
        }
        "authenticated_user" => {
            expect_true(name, v)?;
            Criterion::AuthenticatedUser
        }
        "email" => Criterion::Email(string_matcher(name, v)?),
        "domain" => Criterion::Domain(string_matcher(name, v)?),
        "user" => Criterion::User(string_matcher(name, v)?),
        "groups" => {
            let has = v
                .get("has")
                .ok_or_else(|| err(v, "groups: expected has: GROUP"))?;
            Criterion::Groups(string_list(name, has)?)
        }
        "date" => Criterion::Date(parse_date_range(v).map_err(|m| err(v, format!("date: {m}")))?),
        "day_of_week" => {
            let text = match &v.value {
                Value::Scalar { text, .. } => text.clone(),
                Value::Map(_) => v
                    .get("is")
                    .and_then(Node::as_str)
                    .ok_or_else(|| err(v, "day_of_week: expected a string or is: DAYS"))?
                    .to_string(),
                _ => return Err(err(v, "day_of_week: expected a string or is: DAYS")),
            };
            Criterion::DayOfWeek(
                parse_days(&text).map_err(|m| err(v, format!("day_of_week: {m}")))?,
            )
        }
        "time_of_day" => Criterion::TimeOfDay(
            parse_time_range(v).map_err(|m| err(v, format!("time_of_day: {m}")))?,
        ),
        "ssh_username" => Criterion::SshUsername(string_matcher(name, v)?),
        "ssh_username_matches_email" => {
            expect_true(name, v)?;
            Criterion::SshUsernameMatchesEmail
        }
        "ssh_username_matches_claim" => Criterion::SshUsernameMatchesClaim(
            v.as_str()
                .ok_or_else(|| err(v, "ssh_username_matches_claim: expected a claim name"))?
                .to_string(),
        ),
        "ssh_publickey" => Criterion::SshPublickey(keys(name, v)?),
        "ssh_ca" => Criterion::SshCa(keys(name, v)?),
        "source_ip" => Criterion::SourceIp(
            string_list(name, v)?
                .iter()
                .map(|t| Cidr::parse(t).map_err(|m| err(v, format!("source_ip: {m}"))))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            if let Some(claim) = other.strip_prefix("claim/") {
                if claim.is_empty() {
                    return Err(err(k, "claim/: missing claim name"));
                }
                Criterion::Claim {
                    name: claim.to_string(),
                    values: string_list(other, v)?,
                }
            } else {
                return Err(err(k, format!("policy: unknown criterion {other:?}")));
            }
        }
    };
    Ok(c)
}
