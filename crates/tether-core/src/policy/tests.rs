use std::collections::BTreeMap;

use proptest::prelude::*;

use super::time_match::{parse_days, parse_instant, parse_offset};
use super::*;
use crate::config::yaml::parse_yaml;

fn identity(email: &str, groups: &[&str]) -> Identity {
    let mut claims = BTreeMap::new();
    claims.insert("groups".to_string(), serde_json::json!(groups));
    claims.insert("department".to_string(), serde_json::json!("ops"));
    Identity {
        subject: format!("{}-sub", email.split('@').next().unwrap_or("")),
        email: email.to_string(),
        name: None,
        claims,
    }
}

fn policy(yaml: &str) -> Policy {
    parse_policy(&parse_yaml(yaml).unwrap()).unwrap()
}

const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const BOB_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB0bB";

// 2026-11-25 was a Wednesday; 10:30 UTC.
const WED_1030: Timestamp = Timestamp(1_795_602_600_000);
// 2026-11-28, Saturday, 10:30 UTC.
const SAT_1030: Timestamp = Timestamp(1_795_861_800_000);

fn decide(p: &Policy, id: Option<&Identity>, login: &str, key: &str, now: Timestamp) -> Decision {
    let key = KeyInput {
        public_key: key.to_string(),
        cert: None,
    };
    evaluate(
        p,
        &Input {
            identity: id,
            login: Some(login),
            key: &key,
            source: None,
            now,
        },
    )
}

#[test]
fn instants_and_days() {
    assert_eq!(parse_instant("2026-11-25T10:30:00Z").unwrap(), WED_1030);
    assert_eq!(
        parse_instant("2026-11-25T12:30:00+02:00").unwrap(),
        WED_1030
    );
    assert_eq!(parse_instant("2026-11-28T10:30:00Z").unwrap(), SAT_1030);
    assert!(parse_instant("yesterday").is_err());
    let weekdays = parse_days("mon-fri").unwrap();
    assert!(weekdays.matches(WED_1030));
    assert!(!weekdays.matches(SAT_1030));
    assert!(parse_days("sat-sun").unwrap().matches(SAT_1030));
    assert!(!parse_days("tue,thu").unwrap().matches(WED_1030));
    assert!(parse_days("wednesday").unwrap().matches(WED_1030));
    assert!(parse_days("funday").is_err());
    assert_eq!(parse_offset("+02:00"), Ok(120));
    assert!(parse_offset("America/New_York").is_err());
}

/// The SSH route examples from Pomerium's Native SSH Access documentation.
#[test]
fn pomerium_documentation_examples() {
    let by_email = policy("allow:\n  and:\n    - email:\n        is: alice@example.com\n");
    let by_group = policy("- allow:\n    or:\n      - groups:\n          has: sre\n");
    let by_key = policy(&format!(
        "allow:\n  and:\n    - authenticated_user: true\n    - ssh_publickey:\n        - {ALICE_KEY} alice@laptop\n"
    ));
    let weekdays =
        policy("allow:\n  and:\n    - authenticated_user: true\n    - day_of_week: mon-fri\n");
    let weekdays_matcher = policy(
        "allow:\n  and:\n    - day_of_week:\n        is: monday,tuesday,wednesday,thursday,friday\n",
    );
    let alice = identity("alice@example.com", &["sre", "dev"]);
    let bob = identity("bob@example.com", &["dev"]);

    assert!(decide(&by_email, Some(&alice), "alice", ALICE_KEY, WED_1030).allow);
    let d = decide(&by_email, Some(&bob), "bob", BOB_KEY, WED_1030);
    assert!(!d.allow);
    assert_eq!(d.message(), "email bob@example.com is not allowed");

    assert!(decide(&by_group, Some(&alice), "alice", ALICE_KEY, WED_1030).allow);
    let d = decide(&by_group, Some(&bob), "bob", BOB_KEY, WED_1030);
    assert_eq!(d.message(), "not in group sre");
    assert!(!d.key_specific);

    assert!(decide(&by_key, Some(&alice), "alice", ALICE_KEY, WED_1030).allow);
    let d = decide(&by_key, Some(&alice), "alice", BOB_KEY, WED_1030);
    assert!(!d.allow);
    assert!(
        d.key_specific,
        "a key-only denial lets the client try its next key"
    );
    assert_eq!(d.message(), "this SSH key is not allowed");

    assert!(decide(&weekdays, Some(&bob), "bob", BOB_KEY, WED_1030).allow);
    assert!(!decide(&weekdays, Some(&bob), "bob", BOB_KEY, SAT_1030).allow);
    assert!(decide(&weekdays_matcher, Some(&bob), "bob", BOB_KEY, WED_1030).allow);
    assert!(!decide(&weekdays_matcher, Some(&bob), "bob", BOB_KEY, SAT_1030).allow);
}

#[test]
fn ssh_username_criteria() {
    let p = policy("allow:\n  and:\n    - ssh_username_matches_email: true\n");
    let alice = identity("alice@example.com", &[]);
    assert!(decide(&p, Some(&alice), "alice", ALICE_KEY, WED_1030).allow);
    let d = decide(&p, Some(&alice), "root", ALICE_KEY, WED_1030);
    assert!(!d.allow);
    assert_eq!(d.message(), "login name \"root\" does not match your email");

    let p = policy("allow:\n  and:\n    - ssh_username:\n        in: [deploy, alice]\n");
    assert!(decide(&p, Some(&alice), "deploy", ALICE_KEY, WED_1030).allow);
    assert!(!decide(&p, Some(&alice), "root", ALICE_KEY, WED_1030).allow);

    let p = policy("allow:\n  and:\n    - ssh_username_matches_claim: department\n");
    assert!(decide(&p, Some(&alice), "ops", ALICE_KEY, WED_1030).allow);
    assert!(!decide(&p, Some(&alice), "dev", ALICE_KEY, WED_1030).allow);
}

/// Issue 12 item 4: without a login (a jump-host pipe) a login criterion cannot
/// be evaluated, and an unevaluable criterion never allows.
#[test]
fn login_criteria_without_a_login_deny() {
    let alice = identity("alice@example.com", &["sre"]);
    let key = KeyInput {
        public_key: BOB_KEY.into(),
        cert: Some(CertInput {
            ca_key: ALICE_KEY.into(),
            principals: vec!["deploy".into()],
            valid: true,
        }),
    };
    let jump = Input {
        identity: Some(&alice),
        login: None,
        key: &key,
        source: None,
        now: WED_1030,
    };
    let denied = |yaml: &str| {
        let d = evaluate(&policy(yaml), &jump);
        assert!(!d.allow, "{yaml}");
        d
    };
    for yaml in [
        "allow:\n  and:\n    - ssh_username: deploy\n",
        "allow:\n  and:\n    - ssh_username: root\n    - email: alice@example.com\n",
        "allow:\n  and:\n    - ssh_username_matches_email: true\n",
        "allow:\n  and:\n    - ssh_username_matches_claim: groups\n",
        "allow:\n  not:\n    - ssh_username: root\n",
        "allow:\n  nor:\n    - ssh_username: root\n",
        "allow:\n  or:\n    - ssh_username: deploy\n    - email: bob@example.com\n",
        &format!("allow:\n  and:\n    - ssh_ca:\n        - {ALICE_KEY}\n"),
    ] {
        let d = denied(yaml);
        assert_eq!(
            d.message(),
            "the route's policy checks the login name, which a jump-host connection does not have",
            "{yaml}"
        );
        assert!(d.login_undetermined, "some login might pass: {yaml}");
    }
    // A deny that cannot be evaluated denies.
    let d = denied("allow:\n  and:\n    - accept: true\ndeny:\n  or:\n    - ssh_username: root\n");
    assert!(d.login_undetermined);
    // Settled without the login: an `or` with a match allows, an `and` with a
    // failure fails for its own reason.
    let p = policy("allow:\n  or:\n    - ssh_username: deploy\n    - email: alice@example.com\n");
    assert!(evaluate(&p, &jump).allow);
    let d = denied("allow:\n  and:\n    - ssh_username: deploy\n    - groups:\n        has: dev\n");
    assert_eq!(d.message(), "not in group dev");
    assert!(!d.login_undetermined, "no login helps");
    // No login criteria: unaffected.
    let p = policy("allow:\n  and:\n    - groups:\n        has: sre\n");
    assert!(evaluate(&p, &jump).allow);
    // A certificate from another CA fails on its own.
    let d = denied(&format!(
        "allow:\n  and:\n    - ssh_ca:\n        - {BOB_KEY}\n"
    ));
    assert!(!d.login_undetermined && d.key_specific);
    // With a login the same policies decide normally.
    let p = policy("allow:\n  and:\n    - ssh_username: deploy\n");
    assert!(decide(&p, Some(&alice), "deploy", ALICE_KEY, WED_1030).allow);
}

#[test]
fn ssh_ca_criterion() {
    let p = policy(&format!(
        "allow:\n  and:\n    - ssh_ca:\n        - {ALICE_KEY}\n"
    ));
    let alice = identity("alice@example.com", &[]);
    let cert_key = KeyInput {
        public_key: BOB_KEY.into(),
        cert: Some(CertInput {
            ca_key: ALICE_KEY.into(),
            principals: vec!["alice".into()],
            valid: true,
        }),
    };
    let input = |login| Input {
        identity: Some(&alice),
        login: Some(login),
        key: &cert_key,
        source: None,
        now: WED_1030,
    };
    assert!(evaluate(&p, &input("alice")).allow);
    let d = evaluate(&p, &input("root"));
    assert!(!d.allow && d.key_specific);
}

#[test]
fn matchers_and_claims() {
    let alice = identity("alice@example.com", &["sre"]);
    for (yaml, expect) in [
        ("email: alice@example.com", true),
        ("email: [bob@example.com, alice@example.com]", true),
        ("email:\n  starts_with: alice@", true),
        ("email:\n  ends_with: '@example.org'", false),
        ("email:\n  contains: ice", true),
        ("domain:\n  is: example.com", true),
        ("domain: example.org", false),
        ("user: alice-sub", true),
        ("claim/department: ops", true),
        ("claim/department: [hr, finance]", false),
        ("claim/missing: x", false),
        ("accept: true", true),
        ("reject: true", false),
        ("date:\n  after: 2026-01-01T00:00:00Z", true),
        ("date:\n  before: 2026-01-01", false),
        ("time_of_day:\n  after: '09:00'\n  before: '17:00'", true),
        ("time_of_day:\n  after: '22:00'\n  before: '06:00'", false),
    ] {
        let indented = yaml.replace('\n', "\n        ");
        let p = policy(&format!("allow:\n  and:\n    - {indented}\n"));
        let d = decide(&p, Some(&alice), "alice", ALICE_KEY, WED_1030);
        assert_eq!(d.allow, expect, "{yaml}");
    }
}

/// Issue 12 item 1: an email the IdP did not verify satisfies no email criterion.
#[test]
fn unverified_email_satisfies_no_email_criterion() {
    let verified = identity("eve@example.com", &[]);
    // As sign-in stores it: the address only in the raw claims, `email` empty.
    let mut unverified = identity("", &[]);
    unverified.subject = "eve-sub".into();
    unverified
        .claims
        .insert("email".into(), serde_json::json!("eve@example.com"));
    unverified
        .claims
        .insert("email_verified".into(), serde_json::json!(false));
    // A session stored before the rule: the address kept, the claim says false.
    let mut stale = identity("eve@example.com", &[]);
    stale
        .claims
        .insert("email_verified".into(), serde_json::json!(false));
    for yaml in [
        "email: eve@example.com",
        "domain: example.com",
        "ssh_username_matches_email: true",
        "claim/email: eve@example.com",
        "ssh_username_matches_claim: email",
    ] {
        let p = policy(&format!("allow:\n  and:\n    - {yaml}\n"));
        let login = if yaml.contains("claim: email") {
            "eve@example.com"
        } else {
            "eve"
        };
        assert!(
            decide(&p, Some(&verified), login, ALICE_KEY, WED_1030).allow,
            "{yaml}: verified"
        );
        for id in [&unverified, &stale] {
            let d = decide(&p, Some(id), login, ALICE_KEY, WED_1030);
            assert!(!d.allow, "{yaml}: {id:?}");
            if !yaml.starts_with("claim") && !yaml.contains("claim:") {
                assert_eq!(
                    d.message(),
                    "your email address is not verified by the identity provider",
                    "{yaml}"
                );
            }
        }
    }
    // Criteria that do not read the email are unaffected.
    let p = policy("allow:\n  and:\n    - user: eve-sub\n");
    assert!(decide(&p, Some(&unverified), "eve", ALICE_KEY, WED_1030).allow);
    // A deny on an email cannot be dodged with an unverified address either: it
    // simply does not match, and the allow side must still pass on its own.
    let p = policy("allow:\n  and:\n    - email: eve@example.com\ndeny:\n  or:\n    - email: bob@example.com\n");
    assert!(!decide(&p, Some(&unverified), "eve", ALICE_KEY, WED_1030).allow);
}

#[test]
fn unauthenticated_and_deny() {
    let p = policy("allow:\n  and:\n    - authenticated_user: true\ndeny:\n  or:\n    - email: bob@example.com\n");
    assert_eq!(
        decide(&p, None, "x", ALICE_KEY, WED_1030).message(),
        "not signed in"
    );
    let bob = identity("bob@example.com", &[]);
    let d = decide(&p, Some(&bob), "bob", BOB_KEY, WED_1030);
    assert!(!d.allow);
    assert_eq!(d.message(), "access is denied by policy");
    let empty = Policy { rules: vec![] };
    assert_eq!(
        decide(&empty, Some(&bob), "bob", BOB_KEY, WED_1030).message(),
        "no policy allows access"
    );
}

#[test]
fn parse_errors_name_the_line() {
    let e = parse_policy(&parse_yaml("allow:\n  and:\n    - emial: a@b\n").unwrap()).unwrap_err();
    assert_eq!(e.to_string(), "line 3: policy: unknown criterion \"emial\"");
    let e = parse_policy(&parse_yaml("allow:\n  xor:\n    - accept: true\n").unwrap()).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("unknown operator"));
    let e =
        parse_policy(&parse_yaml("allow:\n  and:\n    - email:\n        matches: x\n").unwrap())
            .unwrap_err();
    assert!(e.message.contains("unknown matcher"), "{e}");
    let e = parse_policy(&parse_yaml("permit:\n  and: []\n").unwrap()).unwrap_err();
    assert!(e.message.contains("unknown action"));
    let e = parse_policy(&parse_yaml("allow:\n  and:\n    - time_of_day:\n        after: '09:00'\n        timezone: Europe/Paris\n").unwrap()).unwrap_err();
    assert!(e.message.contains("not supported"), "{e}");
}

fn arb_criterion() -> impl Strategy<Value = Criterion> {
    prop_oneof![
        Just(Criterion::Accept),
        Just(Criterion::Reject),
        Just(Criterion::AuthenticatedUser),
        "[a-c]@example\\.com".prop_map(|e| Criterion::Email(StringMatcher::Is(e))),
        "[a-c]".prop_map(|g| Criterion::Groups(vec![g])),
        "[a-c]".prop_map(|l| Criterion::SshUsername(StringMatcher::Is(l))),
        "[a-z]{1,8}".prop_map(|n| Criterion::Claim {
            name: n,
            values: vec!["x".into()]
        }),
    ]
}

fn allow(op: Op, criteria: Vec<Criterion>) -> Policy {
    Policy {
        rules: vec![Rule {
            allow: Some(Block { op, criteria }),
            deny: None,
        }],
    }
}

fn arb_identity() -> impl Strategy<Value = Identity> {
    ("[a-c]", proptest::collection::vec("[a-c]", 0..3)).prop_map(|(u, groups)| {
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        identity(&format!("{u}@example.com"), &refs)
    })
}

proptest! {
    #[test]
    fn not_inverts_a_single_criterion(c in arb_criterion(), id in arb_identity(), login in "[a-c]") {
        let plain = decide(&allow(Op::And, vec![c.clone()]), Some(&id), &login, ALICE_KEY, WED_1030);
        let inverted = decide(&allow(Op::Not, vec![c]), Some(&id), &login, ALICE_KEY, WED_1030);
        prop_assert_eq!(plain.allow, !inverted.allow);
    }

    #[test]
    fn and_of_one_equals_or_of_one(c in arb_criterion(), id in arb_identity(), login in "[a-c]") {
        let a = decide(&allow(Op::And, vec![c.clone()]), Some(&id), &login, ALICE_KEY, WED_1030);
        let o = decide(&allow(Op::Or, vec![c]), Some(&id), &login, ALICE_KEY, WED_1030);
        prop_assert_eq!(a.allow, o.allow);
    }

    #[test]
    fn deny_wins_over_allow(cs in proptest::collection::vec(arb_criterion(), 1..4), id in arb_identity()) {
        let p = Policy { rules: vec![
            Rule { allow: Some(Block { op: Op::Or, criteria: vec![Criterion::Accept] }), deny: None },
            Rule { allow: None, deny: Some(Block { op: Op::And, criteria: cs.clone() }) },
        ]};
        let deny_matches = decide(&allow(Op::And, cs), Some(&id), "a", ALICE_KEY, WED_1030).allow;
        let d = decide(&p, Some(&id), "a", ALICE_KEY, WED_1030);
        prop_assert_eq!(d.allow, !deny_matches);
    }

    #[test]
    fn unknown_claim_never_matches(name in "[a-z]{1,12}", id in arb_identity()) {
        prop_assume!(name != "groups" && name != "department");
        let p = allow(Op::And, vec![Criterion::Claim { name, values: vec!["ops".into(), "a".into()] }]);
        prop_assert!(!decide(&p, Some(&id), "a", ALICE_KEY, WED_1030).allow);
    }

    #[test]
    fn without_a_login_login_criteria_never_allow(
        c in prop_oneof![
            "[a-c]".prop_map(|l| Criterion::SshUsername(StringMatcher::Is(l))),
            Just(Criterion::SshUsernameMatchesEmail),
            "[a-z]{1,8}".prop_map(Criterion::SshUsernameMatchesClaim),
        ],
        op in prop_oneof![Just(Op::And), Just(Op::Or), Just(Op::Not), Just(Op::Nor)],
        id in arb_identity(),
    ) {
        let key = KeyInput::default();
        let jump = Input { identity: Some(&id), login: None, key: &key, source: None, now: WED_1030 };
        prop_assert!(!evaluate(&allow(op, vec![c.clone()]), &jump).allow);
        let denying = Policy { rules: vec![
            Rule { allow: Some(Block { op: Op::Or, criteria: vec![Criterion::Accept] }), deny: None },
            Rule { allow: None, deny: Some(Block { op, criteria: vec![c] }) },
        ]};
        prop_assert!(!evaluate(&denying, &jump).allow);
    }

    #[test]
    fn nobody_signed_in_never_passes_identity_criteria(c in arb_criterion()) {
        prop_assume!(c != Criterion::Accept && !c.is_username_specific());
        let d = decide(&allow(Op::And, vec![c]), None, "a", ALICE_KEY, WED_1030);
        prop_assert!(!d.allow);
    }
}

fn from(p: &Policy, source: Option<&str>) -> Decision {
    let alice = identity("alice@example.com", &["dev"]);
    let key = KeyInput::default();
    let source = source.map(|s| s.parse().unwrap());
    evaluate(
        p,
        &Input {
            identity: Some(&alice),
            login: Some("alice"),
            key: &key,
            source,
            now: WED_1030,
        },
    )
}

#[test]
fn source_ip_ranges_v4_and_v6() {
    let p = policy(
        "allow:\n  and:\n    - source_ip: [\"10.0.0.0/8\", \"192.168.1.1/24\", \"::1/128\", \"2001:db8::/32\", \"203.0.113.7\"]\n",
    );
    for ok in [
        "10.1.2.3",
        "192.168.1.200",
        "::1",
        "2001:db8:ffff::1",
        "203.0.113.7",
        // A dual-stack listener reports IPv4 clients as IPv4-mapped IPv6.
        "::ffff:10.9.9.9",
    ] {
        let d = from(&p, Some(ok));
        assert!(d.allow, "{ok}: {d:?}");
        assert_eq!(d.reasons[0].code, "source-ip-ok");
    }
    for no in [
        "11.0.0.1",
        "192.168.2.1",
        "::2",
        "2001:db9::1",
        "203.0.113.8",
    ] {
        let d = from(&p, Some(no));
        assert!(!d.allow, "{no}");
        assert_eq!(d.reasons[0].code, "source-ip-unauthorized");
        assert_eq!(
            d.message(),
            format!("source address {no} is not allowed"),
            "{no}"
        );
    }
    // A bare string is one range.
    let one = policy("allow:\n  and:\n    - source_ip: 127.0.0.1/32\n");
    assert!(from(&one, Some("127.0.0.1")).allow);
    assert!(!from(&one, Some("127.0.0.2")).allow);
    let mapped = from(&one, Some("::ffff:127.0.0.2"));
    assert_eq!(mapped.message(), "source address 127.0.0.2 is not allowed");
    // An IPv4 range never matches a (non-mapped) IPv6 address, and back.
    assert!(!from(&one, Some("::127.0.0.1")).allow);
    let v6 = policy("allow:\n  and:\n    - source_ip: \"::/0\"\n");
    assert!(!from(&v6, Some("1.2.3.4")).allow);
    assert!(from(&v6, Some("fe80::1")).allow);
    let any4 = policy("allow:\n  and:\n    - source_ip: 0.0.0.0/0\n");
    assert!(from(&any4, Some("1.2.3.4")).allow);
}

#[test]
fn source_ip_unknown_address_fails_closed() {
    let allow = policy("allow:\n  and:\n    - source_ip: 10.0.0.0/8\n");
    let d = from(&allow, None);
    assert!(!d.allow);
    // A deny on a network cannot be dodged by an unknown address.
    let deny = policy(
        "- allow:\n    and:\n      - authenticated_user: true\n  deny:\n    and:\n      - source_ip: 10.0.0.0/8\n",
    );
    assert!(from(&deny, Some("192.0.2.1")).allow);
    let d = from(&deny, Some("10.0.0.1"));
    assert!(!d.allow);
    assert_eq!(d.reasons[0].code, "source-ip-ok");
    let d = from(&deny, None);
    assert!(!d.allow);
    assert_eq!(d.message(), "the client's address is not known");
    // `not` over a source range: everyone outside it.
    let outside = policy("allow:\n  not:\n    - source_ip: 10.0.0.0/8\n");
    assert!(from(&outside, Some("192.0.2.1")).allow);
    assert!(!from(&outside, Some("10.0.0.1")).allow);
    assert!(!from(&outside, None).allow);
}

#[test]
fn source_ip_parse_errors_name_the_line() {
    for (bad, msg) in [
        ("source_ip: 10.0.0.0/33", "longer than the address"),
        (
            "source_ip: 10.0.0/8",
            "expected an IP address or CIDR range",
        ),
        ("source_ip: \"::1/129\"", "longer than the address"),
        (
            "source_ip: example.com",
            "expected an IP address or CIDR range",
        ),
        (
            "source_ip: \"10.0.0.0/+8\"",
            "expected an IP address or CIDR range",
        ),
        ("source_ip: {is: 10.0.0.0/8}", "expected a string or a list"),
    ] {
        let yaml = format!("allow:\n  and:\n    - {bad}\n");
        let e = parse_policy(&parse_yaml(&yaml).unwrap()).unwrap_err();
        assert_eq!(e.line, 3, "{bad}: {e}");
        assert!(e.message.contains(msg), "{bad}: {e}");
    }
    assert_eq!(
        Cidr::parse("192.168.1.1/24").unwrap().to_string(),
        "192.168.1.0/24"
    );
    assert_eq!(
        Cidr::parse("2001:db8::1").unwrap().to_string(),
        "2001:db8::1/128"
    );
}

proptest! {
    #[test]
    fn a_range_contains_its_own_addresses(a in any::<u32>(), b in any::<u128>(), p4 in 0u8..=32, p6 in 0u8..=128, flip in any::<u32>()) {
        let v4 = std::net::Ipv4Addr::from(a);
        let r4 = Cidr::parse(&format!("{v4}/{p4}")).unwrap();
        prop_assert!(r4.contains(v4.into()));
        prop_assert!(r4.contains(std::net::IpAddr::V6(v4.to_ipv6_mapped())));
        // Flipping a bit inside the prefix leaves the range.
        if p4 > 0 {
            let bit = 31 - (flip % u32::from(p4));
            let other = std::net::Ipv4Addr::from(a ^ (1 << bit));
            prop_assert!(!r4.contains(other.into()));
        }
        let v6 = std::net::Ipv6Addr::from(b);
        let r6 = Cidr::parse(&format!("{v6}/{p6}")).unwrap();
        prop_assert!(r6.contains(v6.into()) || v6.to_ipv4_mapped().is_some());
    }
}

#[test]
fn groups_overage_fails_closed() {
    let mut over = identity("alice@example.com", &[]);
    over.claims.remove("groups");
    over.claims
        .insert("_claim_names".into(), serde_json::json!({"groups": "src1"}));
    let allow = policy("allow:\n  and:\n    - groups:\n        has: sre\n");
    let d = decide(&allow, Some(&over), "alice", ALICE_KEY, WED_1030);
    assert!(!d.allow);
    assert_eq!(d.reasons[0].code, "groups-unknown");
    // A deny on a group cannot be dodged by having too many groups.
    let deny = policy(
        "- allow:\n    and:\n      - authenticated_user: true\n  deny:\n    or:\n      - groups:\n          has: contractors\n",
    );
    let d = decide(&deny, Some(&over), "alice", ALICE_KEY, WED_1030);
    assert!(!d.allow);
    assert!(d.message().contains("too many groups"), "{}", d.message());
    let claim = policy("allow:\n  and:\n    - claim/groups: sre\n");
    assert!(!decide(&claim, Some(&over), "alice", ALICE_KEY, WED_1030).allow);
    // Criteria on other things still decide.
    let email = policy("allow:\n  and:\n    - email:\n        is: alice@example.com\n");
    assert!(decide(&email, Some(&over), "alice", ALICE_KEY, WED_1030).allow);
    assert!(
        decide(
            &deny,
            Some(&identity("alice@example.com", &["sre"])),
            "alice",
            ALICE_KEY,
            WED_1030
        )
        .allow
    );
}
