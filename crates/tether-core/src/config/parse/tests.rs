use super::*;
use crate::config::{AllowedLogins, Permit};

const BASE: &str = "\
authenticate_service_url: https://auth.example.com/
idp_provider: oidc
idp_provider_url: https://idp.example.com
idp_client_id: tether
idp_client_secret: s3cret
";

fn parse(extra: &str) -> Result<Parsed, ConfigError> {
    parse_config(&format!("{BASE}{extra}"), "config.yaml")
}

#[test]
fn minimal_config_gets_defaults() {
    let p = parse("").unwrap();
    let c = &p.config;
    assert_eq!(c.address, ":443");
    assert_eq!(c.authenticate_service_url, "https://auth.example.com");
    assert_eq!(c.cookie_name, "_pomerium");
    assert_eq!(c.cookie_expire, Duration::from_secs(14 * 3600));
    assert_eq!(c.ssh_binding_max_ttl, Duration::from_secs(48 * 3600));
    assert_eq!(c.ssh_sign_in_timeout, Duration::from_secs(900));
    assert_eq!(c.storage_type, StorageType::File);
    assert_eq!(
        c.idp.scopes,
        vec!["openid", "profile", "email", "offline_access"],
        "Pomerium's default: offline_access for the refresh token"
    );
    assert_eq!(c.ssh_address, None);
    assert!(
        !c.assume_email_verified,
        "unverified emails are not trusted by default"
    );
    assert!(p.warnings.is_empty());
    assert_eq!(
        c.sign_in_url("abc"),
        "https://auth.example.com/.pomerium/sign_in?user_code=abc"
    );
    assert_eq!(c.redirect_uri(), "https://auth.example.com/oauth2/callback");
}

#[test]
fn unknown_key_names_key_and_line() {
    let err = parse("ssh_adress: 127.0.0.1:2222\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml:6: unknown key ssh_adress (did you mean `ssh_address`?)"
    );
    let err = parse("frobnicate: 1\n").unwrap_err();
    assert_eq!(err.to_string(), "config.yaml:6: unknown key frobnicate");
}

#[test]
fn pomerium_keys_warn() {
    let p = parse("autocert: true\nlog_level: debug\n").unwrap();
    assert_eq!(
        p.warnings,
        vec![
            "config.yaml:6: ignored: autocert",
            "config.yaml:7: ignored: log_level"
        ]
    );
}

#[test]
fn wrong_type_and_bad_duration() {
    let err = parse("insecure_server: maybe\n").unwrap_err();
    assert_eq!(err.line, Some(6));
    assert!(err.message.contains("expected true or false"), "{err}");
    let err = parse("cookie_expire: 14 hours\n").unwrap_err();
    assert_eq!(err.line, Some(6));
    assert!(
        err.message.starts_with("cookie_expire: invalid duration"),
        "{err}"
    );
    let err = parse("routes: {a: 1}\n").unwrap_err();
    assert_eq!(err.line, Some(6));
    let err = parse("ssh_address: 2222\n").unwrap_err();
    assert!(err.message.contains("expected host:port"), "{err}");
}

#[test]
fn missing_required_key() {
    let err = parse_config("idp_provider: oidc\n", "c.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.yaml: missing required key authenticate_service_url; set it in the config file \
         or as the environment variable AUTHENTICATE_SERVICE_URL"
    );
    let no_secret = BASE.replace("idp_client_secret: s3cret\n", "");
    let err = parse_config(&no_secret, "c.yaml").unwrap_err();
    assert!(err.message.contains("idp_client_secret"), "{err}");
}

#[test]
fn yaml_syntax_error_has_line() {
    let err = parse("routes: [\n").unwrap_err();
    assert!(err.line.is_some(), "{err}");
}

#[test]
fn routes_parse() {
    let p = parse(
        "routes:
  - from: ssh://prod
    to: ssh://10.0.0.5:22
    allow_any_authenticated_user: true
  - from: ssh://db
    to: [ssh://db.internal]
    name: database
    policy:
      - allow:
          and:
            - email:
                is: alice@example.com
",
    )
    .unwrap();
    let c = &p.config;
    assert_eq!(c.routes.len(), 2);
    let prod = c.route("prod").unwrap();
    assert_eq!(prod.to, "10.0.0.5:22");
    assert!(prod.allow_any_authenticated_user);
    let db = c.route("db").unwrap();
    assert_eq!(db.to, "db.internal:22");
    assert!(db.policy.is_some());
    assert_eq!(p.warnings, vec!["config.yaml:12: ignored: route name"]);
}

#[test]
fn bad_policy_names_its_line() {
    let err = parse(
        "routes:\n  - from: ssh://x\n    to: ssh://a:22\n    policy:\n      - allow:\n          and:\n            - emial: a@b\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml:12: policy: unknown criterion \"emial\""
    );
}

#[test]
fn route_errors() {
    let err = parse("routes:\n  - from: x\n    to: ssh://a:22\n").unwrap_err();
    assert_eq!(err.line, Some(7));
    assert!(err.message.contains("expected ssh://NAME"), "{err}");
    // An HTTP route of a Pomerium config is skipped whole, with a warning.
    let p =
        parse("routes:\n  - from: https://x\n    to: http://a\n    allowed_users: [a]\n").unwrap();
    assert!(p.config.routes.is_empty());
    assert_eq!(
        p.warnings,
        vec!["config.yaml:7: ignored: route https://x (tether serves ssh:// routes only)"]
    );
    let err = parse("routes:\n  - from: ssh://x\n    to: ssh://a:22\n    bogus: 1\n").unwrap_err();
    assert_eq!(err.to_string(), "config.yaml:9: unknown route key bogus");
    let err = parse("routes:\n  - from: ssh://x\n    to: ssh://a:22\n    polcy: []\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml:9: unknown route key polcy (did you mean `policy`?)"
    );
    let err = parse(
        "routes:\n  - from: ssh://x\n    to: ssh://a:22\n  - from: ssh://x\n    to: ssh://b\n",
    )
    .unwrap_err();
    assert!(err.message.contains("duplicate route"), "{err}");
    let err = parse("routes:\n  - from: ssh://x\n    to: ssh://a:22\n    allowed_users: [a]\n")
        .unwrap_err();
    assert!(err.message.contains("not supported"), "{err}");
    let err = parse("routes:\n  - from: ssh://x\n    to: [ssh://a, ssh://a:22]\n").unwrap_err();
    assert!(err.message.contains("listed twice"), "{err}");
    let err = parse("routes:\n  - from: ssh://x\n    to: []\n").unwrap_err();
    assert!(err.message.contains("at least one"), "{err}");
}

#[test]
fn runtime_flags_and_storage() {
    let p = parse(
        "runtime_flags:\n  ssh_routes_portal: true\n  mcp: false\ndatabroker_storage_type: memory\n",
    )
    .unwrap();
    assert!(p.config.runtime_flags.ssh_routes_portal);
    assert!(!p.config.runtime_flags.ssh_allow_direct_tcpip);
    assert_eq!(p.config.storage_type, StorageType::Memory);
    assert_eq!(
        p.warnings,
        vec!["config.yaml:8: ignored: runtime_flags.mcp"]
    );
    let err = parse("databroker_storage_type: postgres\n").unwrap_err();
    assert!(err.message.contains("databroker_storage_connection_string"));
    let err = parse("databroker_storage_type: redis\n").unwrap_err();
    assert_eq!(err.line, Some(6));
}

#[test]
fn cookie_secret_must_be_32_bytes() {
    let err = parse("cookie_secret: dG9vIHNob3J0\n").unwrap_err();
    assert!(err.message.contains("32 random bytes"), "{err}");
    let ok = parse("cookie_secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
    assert!(ok.is_ok());
}

#[test]
fn secrets_are_redacted_in_debug() {
    let p = parse("").unwrap();
    assert!(!format!("{:?}", p.config).contains("s3cret"));
}

#[test]
fn dev_idp_users() {
    let p = parse(
        "dev_idp:\n  enabled: true\n  users:\n    - username: alice\n      password: pw\n      email: alice@example.com\n      groups: [sre]\n",
    )
    .unwrap();
    let u = &p.config.dev_idp_users[0];
    assert_eq!(u.username, "alice");
    assert_eq!(u.groups, vec!["sre"]);
    // Users alone do not turn it on.
    let err = parse(
        "dev_idp:\n  users:\n    - username: alice\n      password: pw\n      email: a@example.com\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("dev_idp.enabled: true"), "{err}");
    let off = parse("dev_idp:\n  enabled: false\n  users:\n    - username: a\n").unwrap();
    assert!(off.config.dev_idp_users.is_empty(), "explicitly off");
}

#[test]
fn duplicate_top_level_key() {
    let err = parse("cookie_name: a\ncookie_name: b\n").unwrap_err();
    assert_eq!(err.to_string(), "config.yaml:7: duplicate key cookie_name");
}

#[test]
fn assume_email_verified_is_an_explicit_bool() {
    assert!(
        parse("assume_email_verified: true\n")
            .unwrap()
            .config
            .assume_email_verified
    );
    assert!(
        !parse("assume_email_verified: false\n")
            .unwrap()
            .config
            .assume_email_verified
    );
    let err = parse("assume_email_verified: yes\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml:6: assume_email_verified: expected true or false"
    );
}

#[test]
fn upstream_forms() {
    assert_eq!(parse_upstream("ssh://h"), Some("h:22".into()));
    assert_eq!(parse_upstream("ssh://h:2200"), Some("h:2200".into()));
    assert_eq!(
        parse_upstream("ssh://[::1]:2200"),
        Some("[::1]:2200".into())
    );
    assert_eq!(parse_upstream("ssh://h:x"), None);
    assert_eq!(parse_upstream("tcp://h:22"), None);
}

#[test]
fn example_config_parses() {
    let text = include_str!("../../../../../config/example.yaml");
    let p = parse_config(text, "example.yaml").unwrap();
    assert!(!p.config.routes.is_empty());
    // The sample must not show a route where any signed-in user can be root.
    for route in &p.config.routes {
        let limits = p.config.upstream_limits_of(&route.name);
        assert!(
            !(route.allow_any_authenticated_user && limits.logins.allows("root")),
            "example route {} admits any signed-in user as root",
            route.name
        );
        assert!(limits.logins.is_list(), "{} lists its logins", route.name);
    }
}

#[test]
fn upstream_limits_default_to_no_root_and_pty_only() {
    let p = parse("routes:\n  - from: ssh://x\n    to: ssh://a:22\n").unwrap();
    let limits = p.config.upstream_limits_of("x");
    assert_eq!(limits.logins, AllowedLogins::AnyButRoot);
    assert!(limits.logins.allows("alice"));
    assert!(!limits.logins.allows("root"));
    assert_eq!(
        limits.permit,
        Permit {
            pty: true,
            agent_forwarding: false,
            port_forwarding: false,
            x11_forwarding: false,
        }
    );
    // A name that is no route gets the same defaults.
    assert_eq!(p.config.upstream_limits_of("nope"), limits);
}

#[test]
fn upstream_limits_parse() {
    let p = parse(
        "routes:
  - from: ssh://prod
    to: ssh://10.0.0.5:22
    ssh_allowed_logins: [deploy, app, deploy]
    ssh_permit:
      pty: false
      agent_forwarding: true
  - from: ssh://admin
    to: ssh://10.0.0.6:22
    ssh_allowed_logins:
      - root
    ssh_permit: {port_forwarding: true, x11_forwarding: true}
  - from: ssh://legacy
    to: ssh://10.0.0.7:22
    ssh_allowed_logins: any
",
    )
    .unwrap();
    let prod = p.config.upstream_limits_of("prod");
    assert_eq!(
        prod.logins,
        AllowedLogins::Only(vec!["deploy".into(), "app".into()])
    );
    assert_eq!(
        prod.permit,
        Permit {
            pty: false,
            agent_forwarding: true,
            port_forwarding: false,
            x11_forwarding: false,
        }
    );
    let admin = p.config.upstream_limits_of("admin");
    assert!(admin.logins.allows("root"));
    assert!(!admin.logins.allows("deploy"));
    assert_eq!(
        admin.permit,
        Permit {
            agent_forwarding: false,
            ..Permit::ALL
        }
    );
    assert_eq!(
        p.config.upstream_limits_of("legacy").logins,
        AllowedLogins::Any
    );
    assert!(p.warnings.is_empty());
}

#[test]
fn malformed_upstream_limits_are_one_line_errors() {
    let route = "routes:\n  - from: ssh://x\n    to: ssh://a:22\n";
    let cases = [
        (
            "    ssh_allowed_logins: deploy\n",
            "config.yaml:9: ssh_allowed_logins: expected a list of login names, e.g. [deploy, app], or any",
        ),
        (
            "    ssh_allowed_logins: []\n",
            "config.yaml:9: ssh_allowed_logins: expected at least one login name (remove the route to allow none)",
        ),
        (
            "    ssh_allowed_logins: [deploy, \"a b\"]\n",
            "config.yaml:9: ssh_allowed_logins: \"a b\" is not a login name (letters, digits, '.', '_', '-'; at most 32)",
        ),
        (
            "    ssh_allowed_logins: [\"*\"]\n",
            "config.yaml:9: ssh_allowed_logins: \"*\" is not a login name (letters, digits, '.', '_', '-'; at most 32)",
        ),
        (
            "    ssh_allowed_logins: [{a: b}]\n",
            "config.yaml:9: ssh_allowed_logins: expected a string, found a mapping",
        ),
        (
            "    ssh_permit: true\n",
            "config.yaml:9: ssh_permit: expected a mapping of pty, agent_forwarding, port_forwarding, x11_forwarding: true|false",
        ),
        (
            "    ssh_permit:\n      agent: true\n",
            "config.yaml:10: unknown ssh_permit.agent (expected pty, agent_forwarding, port_forwarding, x11_forwarding)",
        ),
        (
            "    ssh_permit:\n      pty: yes\n",
            "config.yaml:10: ssh_permit.pty: expected true or false",
        ),
    ];
    for (extra, expected) in cases {
        let err = parse(&format!("{route}{extra}")).unwrap_err();
        assert_eq!(err.to_string(), expected, "{extra}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}

#[test]
fn limits_have_defaults_and_are_validated() {
    let d = parse("").unwrap().config.limits;
    assert_eq!(d, crate::config::Limits::default());
    assert_eq!(d.ssh_handshake_timeout, Duration::from_secs(20));
    let l = parse(
        "ssh_handshake_timeout: 5s\nssh_max_unauthenticated: 64\n\
         ssh_max_unauthenticated_per_source: 4\nssh_sign_in_codes_per_source: 3\n\
         http_header_timeout: 2s\nhttp_max_connections: 10\n",
    )
    .unwrap()
    .config
    .limits;
    assert_eq!(l.ssh_handshake_timeout, Duration::from_secs(5));
    assert_eq!(l.ssh_max_unauthenticated, 64);
    assert_eq!(l.ssh_max_unauthenticated_per_source, 4);
    assert_eq!(l.ssh_sign_in_codes_per_source, 3);
    assert_eq!(l.http_header_timeout, Duration::from_secs(2));
    assert_eq!(l.http_max_connections, 10);
    assert_eq!(l.ssh_login_grace_time, d.ssh_login_grace_time);
    let err = parse("ssh_max_unauthenticated: 0\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml:6: ssh_max_unauthenticated: expected a whole number from 1 to 1000000"
    );
    let err = parse("http_header_timeout: 0s\n").unwrap_err();
    assert!(
        err.to_string().contains("must be greater than zero"),
        "{err}"
    );
}

#[test]
fn session_refresh_has_defaults_and_is_validated() {
    let d = parse("").unwrap().config.session_refresh;
    assert_eq!(d.interval, Duration::from_secs(300));
    assert_eq!(d.grace, Duration::from_secs(900));
    let c = parse("idp_session_refresh_interval: 30s\nidp_session_refresh_grace: 1h\n")
        .unwrap()
        .config
        .session_refresh;
    assert_eq!(c.interval, Duration::from_secs(30));
    assert_eq!(c.grace, Duration::from_secs(3600));
    let err = parse("idp_session_refresh_interval: 0s\n").unwrap_err();
    assert!(
        err.to_string().contains("must be greater than zero"),
        "{err}"
    );
}

#[test]
fn errors_and_warnings_stay_one_line() {
    // A key with a line break in it (the config fuzz target's find) is echoed
    // escaped: one line, no forged second line.
    let err = parse("\"ssh_adress\\nforged: line\": 1\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml:6: unknown key ssh_adress\\nforged: line"
    );
    let err = parse("? |\n  multi\n  line\n: 1\n").unwrap_err();
    assert!(!err.to_string().contains('\n'), "{err}");
    assert!(
        err.to_string().ends_with(": unknown key multi\\nline\\n"),
        "{err}"
    );
}

#[test]
fn workload_identity_issuers_parse_with_limits() {
    let routes = "routes:\n  - from: ssh://prod\n    to: ssh://10.0.0.1\n    allow_any_authenticated_user: true\n";
    let entry = |extra: &str| {
        format!(
            "{routes}workload_identity:\n  - issuer: https://token.actions.githubusercontent.com/\n    audience: https://gw.example.com\n    policy:\n      - allow:\n          and:\n            - claim/repository: org/deploy\n    routes: [prod]\n    logins: [deploy]\n{extra}"
        )
    };
    let p = parse(&entry("")).unwrap();
    let w = &p.config.workload_identity[0];
    assert_eq!(w.issuer, "https://token.actions.githubusercontent.com");
    assert_eq!(w.max_lifetime, Duration::from_secs(15 * 60));
    assert_eq!(
        (w.routes.as_slice(), w.logins.as_slice()),
        (&["prod".to_string()][..], &["deploy".to_string()][..])
    );
    assert_eq!(
        p.config
            .workload_issuer_of("workload:https://token.actions.githubusercontent.com#repo:org/deploy:ref:refs/heads/main")
            .map(|w| w.audience.as_str()),
        Some("https://gw.example.com")
    );
    assert!(p.config.workload_issuer_of("alice-sub").is_none());
    assert!(p
        .config
        .workload_issuer_of("workload:https://other#x")
        .is_none());

    let p = parse(&entry("    max_lifetime: 1h\n")).unwrap();
    assert_eq!(
        p.config.workload_identity[0].max_lifetime,
        Duration::from_secs(3600)
    );
    for (extra, want) in [
        (
            "    max_lifetime: 2h\n",
            "max_lifetime must be greater than zero and at most 1h",
        ),
        (
            "    color: blue\n",
            "workload_identity: unknown key \"color\"",
        ),
    ] {
        let e = parse(&entry(extra)).unwrap_err().to_string();
        assert!(e.contains(want), "{extra}: {e}");
    }
    let e = parse(&entry("").replace("routes: [prod]", "routes: [nope]"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("workload_identity: routes: no route ssh://nope"),
        "{e}"
    );
    let e = parse(&entry("").replace("    audience: https://gw.example.com\n", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("workload_identity: missing audience"), "{e}");
    let e = parse(&entry("").replace("    logins: [deploy]\n", "    logins: []\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("logins must not be empty"), "{e}");
}

#[test]
fn session_recording_per_route_over_the_top_level_default() {
    let p = parse(
        "session_recording:
  input: true
  directory: /var/lib/tether/rec
  retention: 168h
  max_size: 10MiB
routes:
  - from: ssh://prod
    to: ssh://10.0.0.1
    allow_any_authenticated_user: true
    session_recording: {enabled: true}
  - from: ssh://db
    to: ssh://10.0.0.2
    allow_any_authenticated_user: true
    session_recording: {enabled: true, input: false, command_output: true, fail_closed: false}
  - from: ssh://dev
    to: ssh://10.0.0.3
    allow_any_authenticated_user: true
",
    )
    .unwrap();
    let c = &p.config;
    let prod = c.recording_of("prod").unwrap();
    assert!(
        prod.input && !prod.command_output && prod.fail_closed,
        "{prod:?}"
    );
    let db = c.recording_of("db").unwrap();
    assert!(!db.input && db.command_output && !db.fail_closed, "{db:?}");
    assert_eq!(c.recording_of("dev"), None, "not enabled anywhere");
    assert_eq!(
        c.recording_directory(std::path::Path::new("/data")),
        std::path::PathBuf::from("/var/lib/tether/rec")
    );
    assert_eq!(
        c.recording_storage.retention,
        Duration::from_secs(7 * 86400)
    );
    assert_eq!(c.recording_storage.max_size, 10 << 20);

    // The top-level `enabled` records every route; defaults otherwise.
    let p = parse(
        "session_recording: {enabled: true}
routes:
  - from: ssh://dev
    to: ssh://10.0.0.3
    allow_any_authenticated_user: true
  - from: ssh://off
    to: ssh://10.0.0.4
    allow_any_authenticated_user: true
    session_recording: {enabled: false}
",
    )
    .unwrap();
    let dev = p.config.recording_of("dev").unwrap();
    assert!(!dev.input && !dev.command_output && dev.fail_closed);
    assert_eq!(p.config.recording_of("off"), None);
    assert_eq!(
        p.config.recording_directory(std::path::Path::new("/data")),
        std::path::PathBuf::from("/data/recordings")
    );
}

#[test]
fn malformed_session_recording_is_a_one_line_error() {
    let route = |v: &str| {
        parse(&format!(
            "routes:\n  - from: ssh://prod\n    to: ssh://10.0.0.1\n    session_recording: {v}\n"
        ))
        .unwrap_err()
        .to_string()
    };
    assert!(route("true").contains("session_recording: expected a mapping"));
    assert!(route("{enabled: maybe}").contains("session_recording.enabled"));
    let e = route("{directory: /x}");
    assert!(
        e.contains("session_recording.directory: unknown key"),
        "{e}"
    );
    let top = |v: &str| {
        parse(&format!("session_recording: {v}\n"))
            .unwrap_err()
            .to_string()
    };
    assert!(top("{max_size: lots}").contains("not a size"));
    assert!(top("{max_size: 10}").contains("at least 4KiB"));
    assert!(top("{retention: 5m}").contains("at least 1h"));
    assert!(top("{directory: ''}").contains("expected a directory path"));
    assert!(top("{colour: red}").contains("unknown key"));
    for e in [top("{max_size: lots}"), route("{enabled: maybe}")] {
        assert!(e.starts_with("config.yaml:"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
