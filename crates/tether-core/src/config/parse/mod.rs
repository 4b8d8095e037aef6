//! Turns config text and the environment into a validated [`Config`]: environment
//! variables over the file ([`env`]), unknown-key handling (Pomerium keys that mean
//! nothing for SSH warn, those that would change access fail with the reason, others
//! fail with a "did you mean"), types, durations, required keys — every error with
//! its line, or the variable it came from.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::yaml::{parse_yaml, Node, Value};
use super::{
    Config, DevIdpUser, HostKeyPolicy, IdpConfig, Limits, LogFormat, Route, RuntimeFlags,
    StorageType, UpstreamLimits,
};
use crate::duration::parse_duration;
use crate::secret::Secret;

mod env;
mod pomerium;
mod suggest;

/// A config error: file, line (when known) and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file's name as given.
    pub file: String,
    /// 1-based line, when the error belongs to one.
    pub line: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A parsed config and the warnings it produced (one line each).
#[derive(Debug)]
pub struct Parsed {
    /// The validated config.
    pub config: Config,
    /// Warnings, e.g. `config.yaml:12: ignored: autocert`.
    pub warnings: Vec<String>,
    /// The environment variables that set a key (`COOKIE_SECRET`, ...), in order.
    pub environment: Vec<String>,
    /// Keys whose value did not come from the config file's own text: set by an
    /// environment variable, or read from a `*_file`. (The rule for secrets inline in
    /// a readable config file does not apply to them.)
    pub outside_file: BTreeSet<String>,
}

impl Parsed {
    /// Whether `key`'s value is written in the config file itself.
    pub fn in_file(&self, key: &str) -> bool {
        !self.outside_file.contains(key)
    }
}

/// What a config is read from besides its text. This crate does no I/O: the binary
/// hands in the process environment and a file reader.
pub struct Sources<'a> {
    /// Environment variables by name.
    pub env: &'a BTreeMap<String, String>,
    /// Reads the file a `*_file` key names that the parser resolves itself
    /// (`databroker_storage_connection_string_file`); the error is one line.
    pub read_file: &'a dyn Fn(&str) -> Result<String, String>,
}

impl Sources<'_> {
    /// No environment, and no file can be read.
    pub fn none() -> Sources<'static> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        Sources {
            env: &EMPTY,
            read_file: &|path: &str| Err(format!("cannot read {path}: no files here")),
        }
    }
}

/// Top-level keys tether understands.
const TETHER_KEYS: &[&str] = &[
    "address",
    "administrators",
    "insecure_server",
    "certificate_file",
    "certificate_key_file",
    "authenticate_service_url",
    "idp_provider",
    "idp_provider_url",
    "idp_client_id",
    "idp_client_secret",
    "idp_client_secret_file",
    "idp_scopes",
    "assume_email_verified",
    "cookie_secret",
    "idp_session_refresh_interval",
    "idp_session_refresh_grace",
    "cookie_secret_file",
    "cookie_name",
    "cookie_expire",
    "ssh_address",
    "ssh_host_key_files",
    "ssh_host_keys",
    "ssh_user_ca_key_file",
    "ssh_user_ca_key",
    "databroker_storage_type",
    "databroker_storage_connection_string",
    "runtime_flags",
    "metrics_address",
    "metrics_basic_auth",
    "routes",
    "data_dir",
    "databroker_storage_connection_string_file",
    "policy",
    "ssh_binding_max_ttl",
    "ssh_sign_in_timeout",
    "ssh_upstream_known_hosts_file",
    "ssh_upstream_host_key_policy",
    "log_format",
    "audit_log",
    "dev_idp",
    "ssh_handshake_timeout",
    "ssh_login_grace_time",
    "ssh_max_unauthenticated",
    "ssh_max_unauthenticated_per_source",
    "ssh_sign_in_codes_per_source",
    "http_header_timeout",
    "http_request_timeout",
    "http_max_connections",
    "http_max_connections_per_source",
    "signout_redirect_url",
    "workload_identity",
    "session_recording",
];

const ROUTE_KEYS: &[&str] = &[
    "from",
    "to",
    "policy",
    "allow_any_authenticated_user",
    recording::KEY,
];

struct Ctx<'a> {
    file: &'a str,
    warnings: Vec<String>,
    /// The environment variables laid over the file (their nodes' lines name them).
    env: env::Applied,
}

/// `text` with its control characters escaped (`\n` for a newline inside a YAML key,
/// say), so an error or a warning that echoes config text stays one line and cannot
/// forge another (found by the `config` fuzz target).
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Ctx<'_> {
    /// Where `line` is: the file and the line, or the environment variable (`$NAME`)
    /// and, for a multi-line value, the line inside it.
    fn locate(&self, line: usize) -> (String, Option<usize>) {
        match self.env.locate(line) {
            Some((name, inner)) => (format!("${name}"), (inner > 0).then_some(inner)),
            None => (self.file.to_string(), Some(line)),
        }
    }

    fn err(&self, line: usize, message: impl Into<String>) -> ConfigError {
        let (file, line) = self.locate(line);
        ConfigError {
            file,
            line,
            message: one_line(&message.into()),
        }
    }

    /// A required key is absent from the file and the environment. `key` may carry
    /// its alternatives (`idp_client_secret (or idp_client_secret_file)`).
    fn missing(&self, key: &str) -> ConfigError {
        let name = key.split([' ', '.']).next().unwrap_or(key);
        ConfigError {
            file: self.file.to_string(),
            line: None,
            message: format!(
                "missing required key {key}; set it in the config file or as the \
                 environment variable {}",
                env::var_name(name)
            ),
        }
    }

    fn warn(&mut self, line: usize, msg: String) {
        let warning = match self.locate(line) {
            (file, Some(line)) => format!("{file}:{line}: {}", one_line(&msg)),
            (file, None) => format!("{file}: {}", one_line(&msg)),
        };
        self.warnings.push(warning);
    }

    fn string(&self, key: &str, node: &Node) -> Result<String, ConfigError> {
        match &node.value {
            Value::Scalar { text, .. } => Ok(text.clone()),
            _ => Err(self.err(
                node.line,
                format!("{key}: expected a string, found {}", node.kind()),
            )),
        }
    }

    fn bool(&self, key: &str, node: &Node) -> Result<bool, ConfigError> {
        match node.as_str() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            // An environment variable may say it the way Go's ParseBool reads it.
            Some(text) if node.line >= env::ENV_LINE => env::env_bool(text)
                .ok_or_else(|| self.err(node.line, format!("{key}: expected true or false"))),
            _ => Err(self.err(node.line, format!("{key}: expected true or false"))),
        }
    }

    fn duration(&self, key: &str, node: &Node) -> Result<Duration, ConfigError> {
        let text = self.string(key, node)?;
        parse_duration(&text).map_err(|e| self.err(node.line, format!("{key}: {e}")))
    }

    fn string_list(&self, key: &str, node: &Node) -> Result<Vec<String>, ConfigError> {
        match &node.value {
            Value::Seq(items) => items.iter().map(|i| self.string(key, i)).collect(),
            Value::Scalar { text, .. } => Ok(text
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()),
            _ => Err(self.err(node.line, format!("{key}: expected a list of strings"))),
        }
    }

    fn address(&self, key: &str, node: &Node) -> Result<String, ConfigError> {
        let text = self.string(key, node)?;
        let valid = text
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        if valid {
            Ok(text)
        } else {
            Err(self.err(
                node.line,
                format!("{key}: expected host:port (e.g. 127.0.0.1:2222 or :443), found {text:?}"),
            ))
        }
    }
}

/// Parses and validates config text. `file` names the source in errors.
pub fn parse_config(text: &str, file: &str) -> Result<Parsed, ConfigError> {
    load_config(Some(text), file, &Sources::none())
}

/// Reads a config from the file's text (`None`: there is no file) with the
/// environment laid over it, Pomerium's way: a variable overrides the file's key.
/// `file` names the source in errors (the path, or e.g. `environment`).
pub fn load_config(
    text: Option<&str>,
    file: &str,
    sources: &Sources<'_>,
) -> Result<Parsed, ConfigError> {
    let mut ctx = Ctx {
        file,
        warnings: Vec::new(),
        env: env::Applied::default(),
    };
    let root = match text {
        Some(text) => parse_yaml(text).map_err(|e| ctx.err(e.line, e.message))?,
        None => Node {
            value: Value::Null,
            line: 1,
        },
    };
    let mut entries: Vec<(Node, Node)> = match root.value {
        Value::Map(m) => m,
        Value::Null => Vec::new(),
        _ => return Err(ctx.err(root.line, "expected a mapping of config keys")),
    };
    ctx.env = env::overlay(&mut entries, sources.env, known_keys())?;
    // Unknown-key pass first, so a typo is reported as such.
    check_keys(&mut ctx, &entries)?;
    let root = Node {
        value: Value::Map(entries),
        line: 1,
    };
    let top = Top { root: &root };
    let mut outside_file: BTreeSet<String> = ctx.env.keys.iter().cloned().collect();

    let address = match top.get("address") {
        Some(n) => ctx.address("address", n)?,
        None => ":443".to_string(),
    };
    let certificate_file = top.opt_string(&ctx, "certificate_file")?;
    let certificate_key_file = top.opt_string(&ctx, "certificate_key_file")?;
    if certificate_file.is_some() != certificate_key_file.is_some() {
        return Err(ConfigError {
            file: file.to_string(),
            line: None,
            message: "certificate_file and certificate_key_file must be set together".into(),
        });
    }
    let authenticate_service_url = top
        .url(&ctx, "authenticate_service_url")?
        .trim_end_matches('/')
        .to_string();
    let mut idp = parse_idp(&ctx, &top)?;
    let mut cookie_secret = parse_cookie_secret(&ctx, &top)?;
    // A secret and its *_file both set: the file is used, as in Pomerium.
    if idp.client_secret.is_some() && idp.client_secret_file.is_some() {
        idp.client_secret = None;
        let line = top.line("idp_client_secret");
        ctx.warn(
            line,
            "idp_client_secret and idp_client_secret_file are both set; \
             idp_client_secret_file is used"
                .into(),
        );
    }
    if cookie_secret.is_some() && top.get("cookie_secret_file").is_some() {
        cookie_secret = None;
        let line = top.line("cookie_secret");
        ctx.warn(
            line,
            "cookie_secret and cookie_secret_file are both set; cookie_secret_file is used".into(),
        );
    }
    let (storage_type, storage_connection_string) =
        parse_storage(&mut ctx, &top, sources, &mut outside_file)?;
    let (ssh_upstream_host_key_policy, ssh_upstream_known_hosts_file) =
        parse_upstream_host_keys(&ctx, &top)?;
    let log_format = top.choice(
        &ctx,
        "log_format",
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    )?;
    let runtime_flags = match top.get("runtime_flags") {
        Some(n) => parse_runtime_flags(&mut ctx, n)?,
        None => RuntimeFlags::default(),
    };
    // Pomerium's legacy top-level `policy:` list holds routes too; both are read.
    let mut routes = Vec::new();
    let mut upstream_limits = BTreeMap::new();
    let mut route_recording = BTreeMap::new();
    for key in ["policy", "routes"] {
        if let Some(n) = top.get(key) {
            parse_routes(
                &mut ctx,
                key,
                n,
                &mut routes,
                &mut upstream_limits,
                &mut route_recording,
            )?;
        }
    }
    let (recording_default, recording_storage) = match top.get(recording::KEY) {
        Some(n) => recording::top(&ctx, n)?,
        None => Default::default(),
    };
    let recording = routes
        .iter()
        .filter_map(|r| {
            let own: recording::Written = route_recording.get(&r.name).cloned().unwrap_or_default();
            own.over(&recording_default).map(|s| (r.name.clone(), s))
        })
        .collect();
    let dev_idp_users = match top.get("dev_idp") {
        Some(n) => parse_dev_idp(&ctx, n)?,
        None => Vec::new(),
    };
    let administrators = top
        .get("administrators")
        .map(|n| crate::policy::parse_policy(n).map_err(|e| ctx.err(e.line, e.message)))
        .transpose()?;
    let refresh = super::SessionRefresh::default();
    let signout_redirect_url = top
        .get("signout_redirect_url")
        .map(|_| top.url(&ctx, "signout_redirect_url"))
        .transpose()?;

    let workload_identity = match top.get("workload_identity") {
        Some(n) => workload::parse(&ctx, n, &routes)?,
        None => Vec::new(),
    };
    let config = Config {
        workload_identity,
        recording,
        recording_storage,
        signout_redirect_url,
        address,
        insecure_server: top.flag(&ctx, "insecure_server")?,
        certificate_file,
        certificate_key_file,
        authenticate_service_url,
        idp,
        assume_email_verified: top.flag(&ctx, "assume_email_verified")?,
        cookie_secret,
        session_refresh: super::SessionRefresh {
            interval: top.duration(&ctx, "idp_session_refresh_interval", refresh.interval)?,
            grace: top.duration(&ctx, "idp_session_refresh_grace", refresh.grace)?,
        },
        cookie_secret_file: top.opt_string(&ctx, "cookie_secret_file")?,
        cookie_name: top
            .opt_string(&ctx, "cookie_name")?
            .unwrap_or_else(|| "_pomerium".into()),
        cookie_expire: top.duration(&ctx, "cookie_expire", Duration::from_secs(14 * 3600))?,
        ssh_address: top
            .get("ssh_address")
            .map(|n| ctx.address("ssh_address", n))
            .transpose()?,
        ssh_host_key_files: top
            .get("ssh_host_key_files")
            .map(|n| ctx.string_list("ssh_host_key_files", n))
            .transpose()?
            .unwrap_or_default(),
        ssh_host_keys: parse_pem_list(&ctx, &top, "ssh_host_keys")?,
        ssh_user_ca_key_file: top.opt_string(&ctx, "ssh_user_ca_key_file")?,
        ssh_user_ca_key: top.opt_string(&ctx, "ssh_user_ca_key")?.map(Secret::new),
        storage_type,
        storage_connection_string,
        runtime_flags,
        metrics_address: top
            .get("metrics_address")
            .map(|n| ctx.address("metrics_address", n))
            .transpose()?,
        metrics_basic_auth: top.opt_string(&ctx, "metrics_basic_auth")?.map(Secret::new),
        routes,
        upstream_limits,
        data_dir: top.opt_string(&ctx, "data_dir")?,
        ssh_binding_max_ttl: top.duration(
            &ctx,
            "ssh_binding_max_ttl",
            Duration::from_secs(48 * 3600),
        )?,
        ssh_sign_in_timeout: top.duration(
            &ctx,
            "ssh_sign_in_timeout",
            Duration::from_secs(15 * 60),
        )?,
        ssh_upstream_known_hosts_file,
        ssh_upstream_host_key_policy,
        limits: parse_limits(&ctx, &root)?,
        log_format,
        audit_log: top.opt_string(&ctx, "audit_log")?,
        dev_idp_users,
        administrators,
    };
    Ok(Parsed {
        config,
        warnings: ctx.warnings,
        environment: ctx.env.names,
        outside_file,
    })
}

/// Every top-level key once, and known: tether's own, or Pomerium's (ignored with
/// a warning); anything else is an error.
fn check_keys(ctx: &mut Ctx, entries: &[(Node, Node)]) -> Result<(), ConfigError> {
    let mut seen: Vec<&str> = Vec::new();
    for (k, _) in entries {
        let key = ctx.string("key", k)?;
        let key = key.as_str();
        if seen.contains(&key) {
            return Err(ctx.err(k.line, format!("duplicate key {key}")));
        }
        if let Some(known) = TETHER_KEYS.iter().find(|t| **t == key) {
            seen.push(known);
        } else if let Some((_, why)) = pomerium::REFUSED_KEYS.iter().find(|(t, _)| *t == key) {
            return Err(ctx.err(k.line, format!("{key} {why}")));
        } else if let Some(known) = pomerium::IGNORED_KEYS.iter().find(|t| **t == key) {
            seen.push(known);
            ctx.warn(k.line, format!("ignored: {key}"));
        } else {
            let hint = suggest::did_you_mean(key, known_keys());
            return Err(ctx.err(k.line, format!("unknown key {key}{hint}")));
        }
    }
    Ok(())
}

/// Every top-level key tether or Pomerium defines.
fn known_keys() -> impl Iterator<Item = &'static str> + Clone {
    TETHER_KEYS
        .iter()
        .copied()
        .chain(pomerium::REFUSED_KEYS.iter().map(|(k, _)| *k))
        .chain(pomerium::IGNORED_KEYS.iter().copied())
}

/// The top-level mapping with typed getters; a key set to null counts as absent.
struct Top<'a> {
    root: &'a Node,
}

impl Top<'_> {
    fn get(&self, key: &str) -> Option<&Node> {
        self.root.get(key).filter(|n| !n.is_null())
    }

    /// The line of `key`, or 1 when it is absent.
    fn line(&self, key: &str) -> usize {
        self.get(key).map_or(1, |n| n.line)
    }

    fn opt_string(&self, ctx: &Ctx, key: &str) -> Result<Option<String>, ConfigError> {
        self.get(key).map(|n| ctx.string(key, n)).transpose()
    }

    /// A required, non-empty string.
    fn req_string(&self, ctx: &Ctx, key: &str) -> Result<String, ConfigError> {
        let Some(n) = self.get(key) else {
            return Err(ctx.missing(key));
        };
        let s = ctx.string(key, n)?;
        if s.trim().is_empty() {
            return Err(ctx.err(n.line, format!("{key}: must not be empty")));
        }
        Ok(s)
    }

    /// A required http:// or https:// URL.
    fn url(&self, ctx: &Ctx, key: &str) -> Result<String, ConfigError> {
        let url = self.req_string(ctx, key)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ctx.err(
                self.line(key),
                format!("{key}: expected an http:// or https:// URL"),
            ));
        }
        Ok(url)
    }

    /// A boolean, false when absent.
    fn flag(&self, ctx: &Ctx, key: &str) -> Result<bool, ConfigError> {
        Ok(self
            .get(key)
            .map(|n| ctx.bool(key, n))
            .transpose()?
            .unwrap_or(false))
    }

    /// A duration greater than zero, `default` when absent.
    fn duration(&self, ctx: &Ctx, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(n) = self.get(key) else {
            return Ok(default);
        };
        let d = ctx.duration(key, n)?;
        if d.is_zero() {
            return Err(ctx.err(n.line, format!("{key}: must be greater than zero")));
        }
        Ok(d)
    }

    /// One of `options` by name; the first when absent.
    fn choice<T: Copy>(
        &self,
        ctx: &Ctx,
        key: &str,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(text) = self.opt_string(ctx, key)? else {
            return options
                .first()
                .map(|(_, v)| *v)
                .ok_or_else(|| ctx.missing(key));
        };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
            return Ok(*v);
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        let expected = match names.split_last() {
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        Err(ctx.err(
            self.line(key),
            format!("{key}: expected {expected}, found {text:?}"),
        ))
    }
}

/// The identity provider: `idp_provider` (one of the names Pomerium uses, see
/// [`super::IdpProvider`]), its URL (required unless the provider has a fixed one),
/// client and scopes (the provider's defaults when not set).
fn parse_idp(ctx: &Ctx, top: &Top) -> Result<IdpConfig, ConfigError> {
    let provider = top.req_string(ctx, "idp_provider")?;
    let Some(kind) = super::IdpProvider::from_name(&provider) else {
        let names: Vec<&str> = super::IDP_PROVIDERS.iter().map(|(n, _)| *n).collect();
        let hint = match provider.as_str() {
            "apple" => {
                " (apple is not supported: its client secret is a signed JWT tether does not make)"
            }
            "keycloak" | "dex" | "authentik" | "zitadel" => {
                " (for Keycloak use oidc with the realm URL)"
            }
            _ => "",
        };
        return Err(ctx.err(
            top.line("idp_provider"),
            format!(
                "idp_provider: expected one of {}, found {provider:?}{hint}",
                names.join(", ")
            ),
        ));
    };
    let provider_url = match (top.get("idp_provider_url"), kind.default_url()) {
        (Some(_), _) => top.url(ctx, "idp_provider_url")?,
        (None, Some(default)) => default.to_string(),
        (None, None) => {
            return Err(ctx.missing(&format!(
                "idp_provider_url (required with idp_provider: {provider})"
            )))
        }
    };
    let provider_url = provider_url.trim_end_matches('/').to_string();
    let client_secret = top.opt_string(ctx, "idp_client_secret")?.map(Secret::new);
    let client_secret_file = top.opt_string(ctx, "idp_client_secret_file")?;
    if client_secret.is_none() && client_secret_file.is_none() {
        return Err(ctx.missing("idp_client_secret (or idp_client_secret_file)"));
    }
    let scopes = match top.get("idp_scopes") {
        Some(n) => ctx.string_list("idp_scopes", n)?,
        None => kind.default_scopes(&provider_url),
    };
    Ok(IdpConfig {
        provider,
        provider_url,
        client_id: top.req_string(ctx, "idp_client_id")?,
        client_secret,
        client_secret_file,
        scopes,
    })
}

/// `cookie_secret`, when set: base64 of exactly 32 bytes.
fn parse_cookie_secret(ctx: &Ctx, top: &Top) -> Result<Option<Secret<String>>, ConfigError> {
    let Some(secret) = top.opt_string(ctx, "cookie_secret")? else {
        return Ok(None);
    };
    let ok = STANDARD
        .decode(secret.trim())
        .is_ok_and(|bytes| bytes.len() == 32);
    if !ok {
        return Err(ctx.err(
            top.line("cookie_secret"),
            "cookie_secret: expected base64 of 32 random bytes (head -c32 /dev/urandom | base64)",
        ));
    }
    Ok(Some(Secret::new(secret)))
}

/// The store: its type and, for PostgreSQL (required there), connection string —
/// inline or read from `databroker_storage_connection_string_file` (trimmed; the
/// file wins when both are set, as in Pomerium).
fn parse_storage(
    ctx: &mut Ctx,
    top: &Top,
    sources: &Sources<'_>,
    outside_file: &mut BTreeSet<String>,
) -> Result<(StorageType, Option<Secret<String>>), ConfigError> {
    let storage_type = top.choice(
        ctx,
        "databroker_storage_type",
        &[
            ("file", StorageType::File),
            ("memory", StorageType::Memory),
            ("postgres", StorageType::Postgres),
        ],
    )?;
    const KEY: &str = "databroker_storage_connection_string";
    let mut connection = top.opt_string(ctx, KEY)?.map(Secret::new);
    if let Some(path) = top.opt_string(ctx, "databroker_storage_connection_string_file")? {
        let line = top.line("databroker_storage_connection_string_file");
        let text = (sources.read_file)(&path).map_err(|e| {
            ctx.err(
                line,
                format!("databroker_storage_connection_string_file: {e}"),
            )
        })?;
        if connection.is_some() {
            ctx.warn(
                line,
                format!("{KEY} and {KEY}_file are both set; {KEY}_file is used"),
            );
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(ctx.err(line, format!("{KEY}_file: {path} is empty")));
        }
        connection = Some(Secret::new(text.to_string()));
        outside_file.insert(KEY.to_string());
    }
    if storage_type == StorageType::Postgres && connection.is_none() {
        return Err(ctx.missing(
            "databroker_storage_connection_string (required with databroker_storage_type: postgres)",
        ));
    }
    Ok((storage_type, connection))
}

/// How upstream host keys are checked, and the known_hosts file (required for
/// `strict`).
fn parse_upstream_host_keys(
    ctx: &Ctx,
    top: &Top,
) -> Result<(HostKeyPolicy, Option<String>), ConfigError> {
    let policy = top.choice(
        ctx,
        "ssh_upstream_host_key_policy",
        &[
            ("accept-new", HostKeyPolicy::AcceptNew),
            ("strict", HostKeyPolicy::Strict),
        ],
    )?;
    let known_hosts = top.opt_string(ctx, "ssh_upstream_known_hosts_file")?;
    if policy == HostKeyPolicy::Strict && known_hosts.is_none() {
        return Err(ctx.missing(
            "ssh_upstream_known_hosts_file (required with ssh_upstream_host_key_policy: strict)",
        ));
    }
    Ok((policy, known_hosts))
}

/// A list of PEM keys given inline (one key alone may stand without the list, as
/// Pomerium's decoding allows).
fn parse_pem_list(ctx: &Ctx, top: &Top, key: &str) -> Result<Vec<Secret<String>>, ConfigError> {
    let Some(n) = top.get(key) else {
        return Ok(Vec::new());
    };
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .map(|i| ctx.string(key, i).map(Secret::new))
            .collect(),
        Value::Scalar { text, .. } => Ok(vec![Secret::new(text.clone())]),
        _ => Err(ctx.err(n.line, format!("{key}: expected a list of PEM keys"))),
    }
}

/// The `Limits` keys; absent ones keep their defaults. Counts must be at least 1
/// and durations greater than zero: a limit of zero would refuse everyone.
fn parse_limits(ctx: &Ctx, root: &Node) -> Result<Limits, ConfigError> {
    let get = |key: &str| root.get(key).filter(|n| !n.is_null());
    let dur = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        let Some(n) = get(key) else {
            return Ok(default);
        };
        let d = ctx.duration(key, n)?;
        if d.is_zero() {
            return Err(ctx.err(n.line, format!("{key}: must be greater than zero")));
        }
        Ok(d)
    };
    let count = |key: &str, default: usize| -> Result<usize, ConfigError> {
        let Some(n) = get(key) else {
            return Ok(default);
        };
        match ctx.string(key, n)?.parse::<usize>() {
            Ok(v) if (1..=1_000_000).contains(&v) => Ok(v),
            _ => Err(ctx.err(
                n.line,
                format!("{key}: expected a whole number from 1 to 1000000"),
            )),
        }
    };
    let d = Limits::default();
    let codes = count(
        "ssh_sign_in_codes_per_source",
        d.ssh_sign_in_codes_per_source as usize,
    )?;
    Ok(Limits {
        ssh_handshake_timeout: dur("ssh_handshake_timeout", d.ssh_handshake_timeout)?,
        ssh_login_grace_time: dur("ssh_login_grace_time", d.ssh_login_grace_time)?,
        ssh_max_unauthenticated: count("ssh_max_unauthenticated", d.ssh_max_unauthenticated)?,
        ssh_max_unauthenticated_per_source: count(
            "ssh_max_unauthenticated_per_source",
            d.ssh_max_unauthenticated_per_source,
        )?,
        ssh_sign_in_codes_per_source: u32::try_from(codes).unwrap_or(u32::MAX),
        http_header_timeout: dur("http_header_timeout", d.http_header_timeout)?,
        http_request_timeout: dur("http_request_timeout", d.http_request_timeout)?,
        http_max_connections: count("http_max_connections", d.http_max_connections)?,
        http_max_connections_per_source: count(
            "http_max_connections_per_source",
            d.http_max_connections_per_source,
        )?,
    })
}

fn parse_runtime_flags(ctx: &mut Ctx, node: &Node) -> Result<RuntimeFlags, ConfigError> {
    let Some(entries) = node.as_map() else {
        return Err(ctx.err(
            node.line,
            "runtime_flags: expected a mapping of flag: true|false",
        ));
    };
    let mut flags = RuntimeFlags::default();
    for (k, v) in entries {
        let key = ctx.string("runtime_flags key", k)?;
        match key.as_str() {
            "ssh_routes_portal" => flags.ssh_routes_portal = ctx.bool(&key, v)?,
            "ssh_allow_direct_tcpip" => flags.ssh_allow_direct_tcpip = ctx.bool(&key, v)?,
            _ => {
                ctx.bool(&key, v)?;
                ctx.warn(k.line, format!("ignored: runtime_flags.{key}"));
            }
        }
    }
    Ok(flags)
}

/// The routes of the list under `key` (`routes`, or Pomerium's legacy `policy`),
/// added to `routes` and `limits`; a route name given twice (in either list) is an
/// error.
fn parse_routes(
    ctx: &mut Ctx,
    key: &str,
    node: &Node,
    routes: &mut Vec<Route>,
    limits: &mut BTreeMap<String, UpstreamLimits>,
    recordings: &mut BTreeMap<String, recording::Written>,
) -> Result<(), ConfigError> {
    let Some(items) = node.as_seq() else {
        return Err(ctx.err(node.line, format!("{key}: expected a list of routes")));
    };
    for item in items {
        let Some(entries) = item.as_map() else {
            return Err(ctx.err(item.line, "route: expected a mapping with from and to"));
        };
        // A Pomerium config also routes HTTP, TCP and UDP; those routes give no SSH
        // access, so they are skipped whole (keys and policy unread), with a warning.
        if let Some(from) = item.get("from").and_then(Node::as_str) {
            if !from.starts_with("ssh://") && from.contains("://") {
                let from = from.to_string();
                ctx.warn(
                    item.line,
                    format!("ignored: route {from} (tether serves ssh:// routes only)"),
                );
                continue;
            }
        }
        check_route_keys(ctx, entries)?;
        let from_node = item
            .get("from")
            .ok_or_else(|| ctx.err(item.line, "route: missing from (ssh://NAME)"))?;
        let from = ctx.string("from", from_node)?;
        let name = parse_from(ctx, &from, from_node.line)?;
        if routes.iter().any(|r| r.name == name) {
            return Err(ctx.err(from_node.line, format!("duplicate route ssh://{name}")));
        }
        let to_node = item
            .get("to")
            .ok_or_else(|| ctx.err(item.line, "route: missing to (ssh://HOST:PORT)"))?;
        let mut upstreams = parse_to(ctx, to_node)?.into_iter();
        let Some(to) = upstreams.next() else {
            return Err(ctx.err(to_node.line, "to: expected at least one ssh://HOST[:PORT]"));
        };
        let allow_any_authenticated_user = item
            .get("allow_any_authenticated_user")
            .map(|n| ctx.bool("allow_any_authenticated_user", n))
            .transpose()?
            .unwrap_or(false);
        limits.insert(name.clone(), upstream::parse(ctx, item)?);
        if let Some(n) = item.get(recording::KEY) {
            recordings.insert(name.clone(), recording::route(ctx, n)?);
        }
        routes.push(Route {
            name,
            to,
            failover: upstreams.collect(),
            allow_any_authenticated_user,
            policy: item
                .get("policy")
                .map(|n| crate::policy::parse_policy(n).map_err(|e| ctx.err(e.line, e.message)))
                .transpose()?,
            line: ctx.locate(item.line).1.unwrap_or(0),
        });
    }
    Ok(())
}

/// A route's keys: tether's, refused Pomerium ones (with the reason), ignored
/// Pomerium ones (a warning), or unknown (with a "did you mean").
fn check_route_keys(ctx: &mut Ctx, entries: &[(Node, Node)]) -> Result<(), ConfigError> {
    let ours = || ROUTE_KEYS.iter().chain(upstream::KEYS).copied();
    for (k, _) in entries {
        let key = ctx.string("route key", k)?;
        let key = key.as_str();
        if ours().any(|t| t == key) {
            continue;
        }
        if let Some((_, why)) = pomerium::REFUSED_ROUTE_KEYS.iter().find(|(t, _)| *t == key) {
            return Err(ctx.err(k.line, format!("route: {key} {why}")));
        }
        if pomerium::IGNORED_ROUTE_KEYS.contains(&key) {
            ctx.warn(k.line, format!("ignored: route {key}"));
            continue;
        }
        let known = ours()
            .chain(pomerium::REFUSED_ROUTE_KEYS.iter().map(|(k, _)| *k))
            .chain(pomerium::IGNORED_ROUTE_KEYS.iter().copied());
        let hint = suggest::did_you_mean(key, known);
        return Err(ctx.err(k.line, format!("unknown route key {key}{hint}")));
    }
    Ok(())
}

/// `from: ssh://NAME` → `NAME`. Pomerium also parses `ssh://NAME:PORT`, but matches
/// SSH routes by the exact `from` text against `ssh://` + the name in the username,
/// so such a route never matches there; tether reads it as `NAME`, with a warning
/// that the port means nothing (SSH users reach every route on `ssh_address`).
fn parse_from(ctx: &mut Ctx, from: &str, line: usize) -> Result<String, ConfigError> {
    let bad = |ctx: &Ctx| ctx.err(line, format!("from: expected ssh://NAME, found {from:?}"));
    let Some(rest) = from.strip_prefix("ssh://").map(|n| n.trim_end_matches('/')) else {
        return Err(bad(ctx));
    };
    let name = match rest.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => {
            ctx.warn(
                line,
                format!(
                    "from: the port in {from:?} is ignored; the route is named {name:?} \
                     and reached on ssh_address"
                ),
            );
            name
        }
        _ => rest,
    };
    if name.is_empty() || name.contains(['/', '@', ':', ' ']) {
        return Err(bad(ctx));
    }
    Ok(name.to_string())
}

/// `to`: one upstream or a list of them, each `ssh://HOST[:PORT]` with an optional
/// Pomerium load-balancing weight (`ssh://HOST,10`; read, then ignored with a
/// warning: tether tries the upstreams in order, it does not balance).
fn parse_to(ctx: &mut Ctx, node: &Node) -> Result<Vec<String>, ConfigError> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(list) => list.iter().collect(),
        _ => vec![node],
    };
    let mut out: Vec<String> = Vec::new();
    let mut weighted = None;
    for item in items {
        let text = ctx.string("to", item)?;
        let url = match text.split_once(',') {
            Some((url, weight)) if weight.trim().parse::<u32>().is_ok_and(|w| w > 0) => {
                weighted = weighted.or(Some(item.line));
                url
            }
            _ => text.as_str(),
        };
        let address = parse_upstream(url).ok_or_else(|| {
            ctx.err(
                item.line,
                format!("to: expected ssh://HOST[:PORT], found {text:?}"),
            )
        })?;
        if out.contains(&address) {
            return Err(ctx.err(item.line, format!("to: {text:?} is listed twice")));
        }
        out.push(address);
    }
    if let Some(line) = weighted {
        ctx.warn(
            line,
            "to: load-balancing weights are ignored; tether tries the upstreams in order".into(),
        );
    }
    Ok(out)
}

/// `ssh://host[:port]` → `host:port` (default port 22). IPv6 in brackets.
fn parse_upstream(text: &str) -> Option<String> {
    let rest = text.strip_prefix("ssh://")?.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '@', ' ', ',']) {
        return None;
    }
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().ok()?,
            None if after.is_empty() => 22,
            None => return None,
        };
        return Some(format!("[{host}]:{port}"));
    }
    match rest.split_once(':') {
        Some((host, port)) => {
            let port = port.parse::<u16>().ok()?;
            (!host.is_empty()).then(|| format!("{host}:{port}"))
        }
        None => Some(format!("{rest}:22")),
    }
}

/// `dev_idp`: the built-in development IdP (static users and passwords) is served
/// only with an explicit `enabled: true` beside its users, so a config copied from
/// the demo never turns it on by having users alone.
fn parse_dev_idp(ctx: &Ctx, node: &Node) -> Result<Vec<DevIdpUser>, ConfigError> {
    match node.get("enabled") {
        Some(n) if ctx.bool("dev_idp.enabled", n)? => {}
        // Explicitly off: not served, whatever users are listed.
        Some(_) => return Ok(Vec::new()),
        None => {
            return Err(ctx.err(
                node.line,
                "dev_idp: the development identity provider (static passwords, never for \
             production) is served only with dev_idp.enabled: true",
            ))
        }
    }
    let users = node
        .get("users")
        .and_then(Node::as_seq)
        .ok_or_else(|| ctx.err(node.line, "dev_idp: expected users: [ ... ]"))?;
    users
        .iter()
        .map(|u| {
            let field = |key: &str| -> Result<String, ConfigError> {
                u.get(key)
                    .ok_or_else(|| ctx.err(u.line, format!("dev_idp user: missing {key}")))
                    .and_then(|n| ctx.string(key, n))
            };
            Ok(DevIdpUser {
                username: field("username")?,
                password: Secret::new(field("password")?),
                email: field("email")?,
                name: field("name").unwrap_or_default(),
                groups: u
                    .get("groups")
                    .map(|n| ctx.string_list("groups", n))
                    .transpose()?
                    .unwrap_or_default(),
            })
        })
        .collect()
}

mod recording;
mod upstream;
mod workload;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pomerium;
