//! Pomerium compatibility: environment variables and their precedence, Pomerium's
//! keys (warned or refused), "did you mean", legacy `policy`, several upstreams.

use super::*;

const BASE: &str = "\
authenticate_service_url: https://auth.example.com/
idp_provider: oidc
idp_provider_url: https://idp.example.com
idp_client_id: tether
idp_client_secret: s3cret
";

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn no_files(path: &str) -> Result<String, String> {
    Err(format!("{path}: not found"))
}

fn load(text: Option<&str>, vars: &[(&str, &str)]) -> Result<Parsed, ConfigError> {
    let env = env(vars);
    load_config(
        text,
        "config.yaml",
        &Sources {
            env: &env,
            read_file: &no_files,
        },
    )
}

#[test]
fn environment_overrides_the_file() {
    let p = load(
        Some(&format!("{BASE}cookie_name: from_file\naddress: :8443\n")),
        &[
            ("COOKIE_NAME", "from_env"),
            ("IDP_CLIENT_SECRET", "env-secret"),
            ("SSH_ADDRESS", "127.0.0.1:2222"),
            ("PATH", "/usr/bin"),
            ("ADDRESS", ""),
        ],
    )
    .unwrap();
    let c = &p.config;
    assert_eq!(c.cookie_name, "from_env", "env wins over the file");
    assert_eq!(
        c.idp.client_secret.as_ref().map(|s| s.expose().as_str()),
        Some("env-secret")
    );
    assert_eq!(c.ssh_address.as_deref(), Some("127.0.0.1:2222"), "env only");
    assert_eq!(c.address, ":8443", "an empty variable counts as unset");
    assert_eq!(
        p.environment,
        vec!["IDP_CLIENT_SECRET", "COOKIE_NAME", "SSH_ADDRESS"]
    );
    assert!(!p.in_file("idp_client_secret"));
    assert!(!p.in_file("cookie_name"));
    assert!(p.in_file("authenticate_service_url"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn environment_alone_is_a_config() {
    let vars = [
        ("AUTHENTICATE_SERVICE_URL", "https://auth.example.com"),
        ("IDP_PROVIDER", "oidc"),
        ("IDP_PROVIDER_URL", "https://idp.example.com"),
        ("IDP_CLIENT_ID", "tether"),
        ("IDP_CLIENT_SECRET", "s"),
        ("IDP_SCOPES", "openid, email"),
        ("INSECURE_SERVER", "TRUE"),
        ("COOKIE_EXPIRE", "2h"),
        ("SSH_ADDRESS", ":2222"),
        (
            "ROUTES",
            r#"[{"from": "ssh://prod", "to": "ssh://10.0.0.5", "allow_any_authenticated_user": true}]"#,
        ),
        ("RUNTIME_FLAGS", r#"{"ssh_routes_portal": true}"#),
    ];
    let p = load(None, &vars).unwrap();
    let c = &p.config;
    assert_eq!(c.idp.scopes, vec!["openid", "email"]);
    assert!(
        c.insecure_server,
        "Go's ParseBool forms from the environment"
    );
    assert_eq!(c.cookie_expire, Duration::from_secs(7200));
    assert_eq!(c.route("prod").map(|r| r.to.as_str()), Some("10.0.0.5:22"));
    assert!(c.runtime_flags.ssh_routes_portal);
    // Without the variables the same call names what is missing, and the variable.
    let err = load(None, &vars[1..]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config.yaml: missing required key authenticate_service_url; set it in the config \
         file or as the environment variable AUTHENTICATE_SERVICE_URL"
    );
}

#[test]
fn structured_values_may_be_base64_as_pomerium_writes_policy() {
    let yaml =
        "- from: ssh://db\n  to: ssh://db.internal:2200\n  allow_any_authenticated_user: true\n";
    let p = load(Some(BASE), &[("POLICY", &STANDARD.encode(yaml))]).unwrap();
    assert_eq!(
        p.config.route("db").map(|r| r.to.as_str()),
        Some("db.internal:2200")
    );
}

#[test]
fn errors_and_warnings_from_the_environment_name_the_variable() {
    let err = load(Some(BASE), &[("COOKIE_EXPIRE", "soon")]).unwrap_err();
    assert_eq!(err.file, "$COOKIE_EXPIRE");
    assert_eq!(err.line, None);
    assert!(
        err.message.starts_with("cookie_expire: invalid duration"),
        "{err}"
    );

    let err = load(Some(BASE), &[("INSECURE_SERVER", "yes")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "$INSECURE_SERVER: insecure_server: expected true or false"
    );
    // A file's bool stays strict: only true or false.
    let err = load(Some(&format!("{BASE}insecure_server: TRUE\n")), &[]).unwrap_err();
    assert_eq!(err.line, Some(6));

    // Inside a structured value: its own line.
    let routes = "- from: ssh://a\n  to: ssh://h\n  bogus: 1\n";
    let err = load(Some(BASE), &[("ROUTES", routes)]).unwrap_err();
    assert_eq!(err.to_string(), "$ROUTES:3: unknown route key bogus");
    let err = load(Some(BASE), &[("ROUTES", "[{")]).unwrap_err();
    assert_eq!(err.file, "$ROUTES");
    assert!(err.message.contains("not valid YAML or JSON"), "{err}");

    let p = load(
        Some(BASE),
        &[("SHARED_SECRET", "x"), ("LOG_LEVEL", "debug")],
    )
    .unwrap();
    assert_eq!(
        p.warnings,
        vec![
            "$LOG_LEVEL: ignored: log_level",
            "$SHARED_SECRET: ignored: shared_secret"
        ]
    );
}

#[test]
fn pomerium_keys_warn_refused_keys_say_why_unknown_keys_suggest() {
    let p = parse_config(
        &format!("{BASE}signout_redirect_url: https://example.com/bye\nshared_secret_file: /s\notel_traces_exporter: otlp\n"),
        "c.yaml",
    )
    .unwrap();
    assert_eq!(
        p.warnings,
        vec![
            "c.yaml:7: ignored: shared_secret_file",
            "c.yaml:8: ignored: otel_traces_exporter",
        ]
    );
    assert_eq!(
        p.config.signout_redirect_url.as_deref(),
        Some("https://example.com/bye")
    );
    let err = parse_config(&format!("{BASE}signout_redirect_url: /bye\n"), "c.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.yaml:6: signout_redirect_url: expected an http:// or https:// URL"
    );
    let err = parse_config(&format!("{BASE}policy_file: p.yaml\n"), "c.yaml").unwrap_err();
    assert!(
        err.message.starts_with("policy_file is not supported"),
        "{err}"
    );
    let err =
        parse_config(&format!("{BASE}metrics_client_ca_file: ca.pem\n"), "c.yaml").unwrap_err();
    assert!(err.message.contains("metrics_basic_auth"), "{err}");
    for (typo, meant) in [
        ("cookie_secert", "cookie_secret"),
        ("idp_client_secrets", "idp_client_secret"),
        ("signout_redirect_uri", "signout_redirect_url"),
        ("rotues", "routes"),
    ] {
        let err = parse_config(&format!("{BASE}{typo}: x\n"), "c.yaml").unwrap_err();
        assert_eq!(
            err.message,
            format!("unknown key {typo} (did you mean `{meant}`?)")
        );
    }
}

#[test]
fn route_keys_that_change_access_are_refused_with_the_reason() {
    for (key, why) in [
        ("allowed_users: [a@b]", "write a policy"),
        ("allowed_groups: [admins]", "removed from Pomerium too"),
        ("idp_client_id: other", "per-route identity providers"),
        ("sub_policies: []", "write a policy"),
        ("upstream_tunnel: {}", "reverse tunnels"),
    ] {
        let text = format!("{BASE}routes:\n  - from: ssh://x\n    to: ssh://a\n    {key}\n");
        let err = parse_config(&text, "c.yaml").unwrap_err();
        assert_eq!(err.line, Some(9), "{err}");
        assert!(err.message.contains(why), "{key}: {err}");
    }
    let text = format!(
        "{BASE}routes:\n  - from: ssh://x\n    to: ssh://a\n    allow_any_authenticated_user: true\n    tls_skip_verify: true\n    description: the x box\n"
    );
    let p = parse_config(&text, "c.yaml").unwrap();
    assert_eq!(
        p.warnings,
        vec![
            "c.yaml:10: ignored: route tls_skip_verify",
            "c.yaml:11: ignored: route description"
        ]
    );
}

#[test]
fn legacy_policy_list_is_read_like_routes() {
    let text = format!(
        "{BASE}policy:\n  - from: ssh://old\n    to: ssh://old.internal\n    allow_any_authenticated_user: true\nroutes:\n  - from: ssh://new\n    to: ssh://new.internal\n    allow_any_authenticated_user: true\n"
    );
    let p = parse_config(&text, "c.yaml").unwrap();
    let names: Vec<&str> = p.config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["old", "new"]);
    let dup = format!(
        "{BASE}policy:\n  - from: ssh://x\n    to: ssh://a\nroutes:\n  - from: ssh://x\n    to: ssh://b\n"
    );
    let err = parse_config(&dup, "c.yaml").unwrap_err();
    assert_eq!(err.to_string(), "c.yaml:10: duplicate route ssh://x");
    let err = parse_config(&format!("{BASE}policy: {{a: 1}}\n"), "c.yaml").unwrap_err();
    assert_eq!(err.message, "policy: expected a list of routes");
}

#[test]
fn several_upstreams_in_order_weights_ignored() {
    let text = format!(
        "{BASE}routes:\n  - from: ssh://x\n    to:\n      - ssh://a:2201\n      - ssh://b\n      - ssh://[::1]:2203\n    allow_any_authenticated_user: true\n"
    );
    let p = parse_config(&text, "c.yaml").unwrap();
    let r = p.config.route("x").unwrap();
    assert_eq!(r.to, "a:2201");
    assert_eq!(r.failover, vec!["b:22", "[::1]:2203"]);
    assert_eq!(
        r.upstreams().collect::<Vec<_>>(),
        vec!["a:2201", "b:22", "[::1]:2203"]
    );
    assert!(p.warnings.is_empty());

    let text =
        format!("{BASE}routes:\n  - from: ssh://x\n    to: [\"ssh://a,10\", \"ssh://b,20\"]\n");
    let p = parse_config(&text, "c.yaml").unwrap();
    assert_eq!(p.config.route("x").unwrap().upstreams().count(), 2);
    assert_eq!(
        p.warnings,
        vec![
            "c.yaml:8: to: load-balancing weights are ignored; tether tries the upstreams in order"
        ]
    );
    let text = format!("{BASE}routes:\n  - from: ssh://x\n    to: \"ssh://a,0\"\n");
    assert!(
        parse_config(&text, "c.yaml").is_err(),
        "weight 0 is no weight"
    );
}

#[test]
fn from_with_a_port_names_the_route_and_warns() {
    let text = format!("{BASE}routes:\n  - from: ssh://prod:22\n    to: ssh://a\n");
    let p = parse_config(&text, "c.yaml").unwrap();
    assert!(p.config.route("prod").is_some());
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].starts_with("c.yaml:7: from: the port in"),
        "{:?}",
        p.warnings
    );
    for bad in ["ssh://prod:x", "ssh://:22", "ssh://a:b:22"] {
        let text = format!("{BASE}routes:\n  - from: {bad}\n    to: ssh://a\n");
        assert!(parse_config(&text, "c.yaml").is_err(), "{bad}");
    }
}

#[test]
fn storage_connection_string_file_is_read_and_trimmed() {
    let env = BTreeMap::new();
    let read = |path: &str| match path {
        "/run/secrets/db" => Ok("postgres://t:pw@db/t\n".to_string()),
        "/run/secrets/empty" => Ok("\n".to_string()),
        _ => Err(format!("{path}: No such file or directory")),
    };
    let sources = Sources {
        env: &env,
        read_file: &read,
    };
    let text = format!("{BASE}databroker_storage_type: postgres\ndatabroker_storage_connection_string_file: /run/secrets/db\n");
    let p = load_config(Some(&text), "c.yaml", &sources).unwrap();
    assert_eq!(
        p.config
            .storage_connection_string
            .as_ref()
            .map(|s| s.expose().as_str()),
        Some("postgres://t:pw@db/t")
    );
    assert!(!p.in_file("databroker_storage_connection_string"));
    let missing = text.replace("/run/secrets/db", "/nope");
    let err = load_config(Some(&missing), "c.yaml", &sources).unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.yaml:7: databroker_storage_connection_string_file: /nope: No such file or directory"
    );
    let empty = text.replace("/run/secrets/db", "/run/secrets/empty");
    assert!(load_config(Some(&empty), "c.yaml", &sources).is_err());
}

#[test]
fn a_secret_and_its_file_both_set_use_the_file() {
    let text = format!(
        "{BASE}idp_client_secret_file: /s\ncookie_secret: {}\ncookie_secret_file: /c\n",
        STANDARD.encode([7u8; 32])
    );
    let p = parse_config(&text, "c.yaml").unwrap();
    assert!(p.config.idp.client_secret.is_none());
    assert_eq!(p.config.idp.client_secret_file.as_deref(), Some("/s"));
    assert!(p.config.cookie_secret.is_none());
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    // Set through the environment, the file variant works the same way.
    let p = load(Some(BASE), &[("IDP_CLIENT_SECRET_FILE", "/run/s")]).unwrap();
    assert_eq!(p.config.idp.client_secret_file.as_deref(), Some("/run/s"));
    assert!(p.config.idp.client_secret.is_none());
}
