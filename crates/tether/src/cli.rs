//! Command line: `serve`, `check`, `demo`, `bindings list|revoke`. Config and key
//! errors print one line and exit 2 before any port is bound.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tether_core::audit::{AuditEvent, Via};
use tether_core::config::{parse_config, Config, StorageType};
use tether_store::Store;

use crate::{app, demo, keys, logging, perms};

#[derive(Parser)]
#[command(name = "tether", version, about = "An identity-aware SSH gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Validate the config and print the effective settings (secrets redacted).
    Check {
        /// Config file.
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Run everything embedded: SQLite, generated keys and a development IdP.
    Demo {
        /// Data directory (keys, SQLite).
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Web address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        address: String,
        /// SSH address.
        #[arg(long, default_value = "127.0.0.1:2222")]
        ssh_address: String,
    },
    /// Administer client bindings in the configured store.
    Bindings {
        /// Config file.
        #[arg(short, long, default_value = "config.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: BindingsAction,
    },
}

#[derive(Subcommand)]
enum BindingsAction {
    /// List client bindings.
    List {
        /// Only this user's (email or user id).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a binding by id (`sshkey-SHA256:...`); ends its live connections.
    Revoke {
        /// Binding id.
        id: String,
    },
}

/// Exit status for config and key errors.
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => {
            let Some(cfg) = load_config(&config, true) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            run_app(cfg, false, Some(config))
        }
        Command::Demo {
            data_dir,
            address,
            ssh_address,
        } => match demo::config(&data_dir, &address, &ssh_address) {
            Ok(cfg) => run_app(cfg, true, None),
            Err(e) => {
                eprintln!("tether: {e:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Bindings { config, action } => {
            let Some(cfg) = load_config(&config, false) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            admin(cfg, action)
        }
    }
}

/// Reads and validates a config file; prints the error (one line) and warnings.
fn load_config(path: &Path, print_warnings: bool) -> Option<Config> {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: cannot read config: {e}");
            return None;
        }
    };
    match parse_config(&text, &name) {
        Ok(parsed) => {
            if print_warnings {
                for w in &parsed.warnings {
                    eprintln!("warning: {w}");
                }
            }
            if let Err(line) = perms::check_config_file(path, &parsed.config) {
                eprintln!("{line}");
                return None;
            }
            Some(parsed.config)
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: cannot read config: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match parse_config(&text, &name) {
        Ok(parsed) => {
            for w in &parsed.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", app::describe(&parsed.config));
            if let Err(line) = app::web_tls(&parsed.config) {
                eprintln!("{name}: {line}");
                return ExitCode::from(EXIT_CONFIG);
            }
            // What `serve` would refuse: secrets others can read (`perms`).
            let data = keys::data_dir(&parsed.config);
            let refused = perms::check_config_file(path, &parsed.config).and_then(|()| {
                if keys::needs_data_dir(&parsed.config) {
                    perms::check_data_dir(&data)
                } else {
                    Ok(())
                }
            });
            if let Err(line) = refused {
                eprintln!("{line}");
                return ExitCode::from(EXIT_CONFIG);
            }
            println!("{name}: OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("tether: cannot start runtime: {e}");
            None
        }
    }
}

fn run_app(config: Config, demo: bool, config_path: Option<PathBuf>) -> ExitCode {
    if let Err(e) = logging::init_logging(&config) {
        eprintln!("tether: {e:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let data = keys::data_dir(&config);
    let material = match keys::load(&config, &data) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("tether: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(app::run(config, material, data, demo, config_path)) {
        Ok(app::Outcome::Clean) => ExitCode::SUCCESS,
        Ok(app::Outcome::SetupFailed) => ExitCode::from(EXIT_CONFIG),
        Err(e) => {
            eprintln!("tether: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let data = keys::data_dir(config);
    let conn = match (&config.storage_connection_string, config.storage_type) {
        (Some(c), _) => c.expose().clone(),
        (None, StorageType::File) => {
            keys::ensure_data_dir(&data)?;
            data.join("tether.db").display().to_string()
        }
        (None, _) => String::new(),
    };
    tether_store::open(config.storage_type.as_str(), &conn)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn admin(config: Config, action: BindingsAction) -> ExitCode {
    if let Err(e) = logging::init_logging(&config) {
        eprintln!("tether: {e:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(async {
        let store = open_store(&config).await?;
        match action {
            BindingsAction::List { user } => {
                let bindings = store.list_bindings(None).await?;
                println!(
                    "{:<58} {:<28} {:<12} {:<22} {:<22} LAST USED",
                    "ID", "USER", "KEY TYPE", "ISSUED", "EXPIRES"
                );
                for b in bindings.iter().filter(|b| {
                    user.as_deref()
                        .is_none_or(|u| u == b.email || u == b.user_id)
                }) {
                    println!(
                        "{:<58} {:<28} {:<12} {:<22} {:<22} {}",
                        b.id,
                        b.email,
                        b.key_type,
                        b.issued_at.rfc3339(),
                        b.expires_at.rfc3339(),
                        b.last_used.map_or("never".to_string(), |t| t.rfc3339())
                    );
                }
                Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
            }
            BindingsAction::Revoke { id } => {
                match store
                    .revoke_binding(&id, None, "revoked by administrator")
                    .await
                {
                    Ok(b) => {
                        AuditEvent::BindingRevoked {
                            via: Via::Admin,
                            binding_id: b.id.clone(),
                            user: b.email.clone(),
                            by: "administrator (tether bindings revoke)".to_string(),
                            reason: "revoked by administrator".to_string(),
                        }
                        .emit();
                        println!("revoked {} ({})", b.id, b.email);
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(tether_store::RevokeError::NotFound) => {
                        eprintln!("binding {id} not found");
                        Ok(ExitCode::FAILURE)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tether: {e:#}");
            ExitCode::FAILURE
        }
    }
}
