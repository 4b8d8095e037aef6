//! `tether demo` (SPEC §11): everything embedded — keys and SQLite in `./data`, the
//! gateway on 127.0.0.1:2222, the web app on http://127.0.0.1:8080 and a built-in
//! development identity provider under `/dev-idp/`. Development only.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;
use tether_core::config::{parse_config, Config};

/// The demo user's password (development IdP only, loopback only).
pub const DEMO_PASSWORD: &str = "tether-demo";

/// The demo's config, produced through the same parser as a real config file.
pub fn config(data_dir: &Path, address: &str, ssh_address: &str) -> Result<Config> {
    let mut secret = [0u8; 24];
    getrandom::getrandom(&mut secret).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let client_secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let base = format!("http://{address}");
    let yaml = format!(
        "address: {address}
insecure_server: true
authenticate_service_url: {base}
idp_provider: oidc
idp_provider_url: {base}/dev-idp
idp_client_id: tether-demo
idp_client_secret: {client_secret}
ssh_address: {ssh_address}
databroker_storage_type: file
data_dir: {data}
dev_idp:
  enabled: true
  users:
    - username: alice
      password: {DEMO_PASSWORD}
      email: alice@example.com
      name: Alice Example
      groups: [sre, dev]
    - username: bob
      password: {DEMO_PASSWORD}
      email: bob@example.com
      name: Bob Example
      groups: [dev]
",
        data = data_dir.display(),
    );
    Ok(parse_config(&yaml, "(demo)")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .config)
}

/// What to do next, printed once everything listens.
pub fn print_banner(config: &Config, ssh: Option<SocketAddr>, web: Option<SocketAddr>) {
    let ssh_port = ssh.map_or(2222, |a| a.port());
    let web = web.map_or_else(|| config.address.clone(), |a| a.to_string());
    let idp = &config.idp.provider_url;
    let lines = [
        String::new(),
        "tether demo is running (development only: built-in identity provider, loopback only)"
            .to_string(),
        String::new(),
        format!("  SSH gateway   127.0.0.1:{ssh_port}"),
        format!("  Web app       http://{web}"),
        format!("  Dev IdP       {idp}   users: alice, bob   password: {DEMO_PASSWORD}"),
        String::new(),
        "Next, in another terminal:".to_string(),
        String::new(),
        format!("  ssh -p {ssh_port} alice@localhost whoami"),
        String::new(),
        format!(
            "Open the link it prints, sign in as alice (password {DEMO_PASSWORD}), click Authorize,"
        ),
        format!("and whoami answers. Your bindings: http://{web}/.pomerium/session_binding_info"),
        "Stop with Ctrl-C.".to_string(),
    ];
    println!("{}", lines.join("\n"));
}
