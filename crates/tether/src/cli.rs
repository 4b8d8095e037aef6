//! Command line: `serve`, `check`, `demo`, `bindings list|revoke`, `sessions list|kill`. Config and key
//! errors print one line and exit 2 before any port is bound. The config is the
//! `-c` file (or `./config.yaml`, or none) with the environment over it
//! ([`crate::source`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tether_core::audit::{AuditEvent, Via};
use tether_core::config::{Config, Parsed, StorageType};
use tether_store::Store;

use crate::{app, demo, keys, logging, perms, sessions, source};

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
        /// Config file [default: ./config.yaml if it exists, else the environment
        /// alone]. Environment variables (COOKIE_SECRET, ...) override its keys.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate the config and print the effective settings (secrets redacted).
    Check {
        /// Config file [default: ./config.yaml if it exists, else the environment
        /// alone]. Environment variables (COOKIE_SECRET, ...) override its keys.
        #[arg(short, long)]
        config: Option<PathBuf>,
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
        /// Config file [default: ./config.yaml if it exists, else the environment
        /// alone].
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: BindingsAction,
    },
    /// List and end live SSH sessions, on every replica sharing the store.
    Sessions {
        /// Config file [default: ./config.yaml if it exists, else the environment
        /// alone].
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: SessionsAction,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// One line per live session, its id first.
    List {
        /// Only this user's (email or user id).
        #[arg(long)]
        user: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// End a live session by id; its client is told an administrator ended it.
    Kill {
        /// Session id (from `tether sessions list`).
        id: String,
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
    /// Revoke a client binding by id (`sshkey-SHA256:...`), a remembered key
    /// (`--remembered`), or everything of one user (`--all-for`); live
    /// connections end.
    Revoke {
        /// Client binding id.
        #[arg(required_unless_present_any = ["remembered", "all_for"])]
        id: Option<String>,
        /// Forget a remembered key (identity binding) by fingerprint.
        #[arg(long, value_name = "FINGERPRINT", conflicts_with_all = ["id", "all_for"])]
        remembered: Option<String>,
        /// Cut a user off: every client binding, remembered key and web session.
        #[arg(long, value_name = "EMAIL", conflicts_with_all = ["id", "remembered"])]
        all_for: Option<String>,
    },
}

/// Exit status for config and key errors.
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(source::config_path(config).as_deref()),
        Command::Serve { config } => {
            let path = source::config_path(config);
            let Some(parsed) = load_config(path.as_deref()) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            run_app(parsed.config, &parsed.warnings, false, path)
        }
        Command::Demo {
            data_dir,
            address,
            ssh_address,
        } => match demo::config(&data_dir, &address, &ssh_address) {
            Ok(cfg) => run_app(cfg, &[], true, None),
            Err(e) => {
                eprintln!("tether: {e:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Bindings { config, action } => {
            let Some(parsed) = load_config(source::config_path(config).as_deref()) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            admin(parsed.config, action)
        }
        Command::Sessions { config, action } => {
            let Some(parsed) = load_config(source::config_path(config).as_deref()) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            admin_sessions(parsed.config, action)
        }
    }
}

/// Reads and validates the config (file and environment); prints the error (one
/// line). Warnings are the caller's to show.
fn load_config(path: Option<&Path>) -> Option<Parsed> {
    let parsed = match source::load(path) {
        Ok(p) => p,
        Err(line) => {
            eprintln!("{line}");
            return None;
        }
    };
    if let Some(path) = path {
        if let Err(line) = perms::check_config_file(path, &parsed) {
            eprintln!("{line}");
            return None;
        }
    }
    Some(parsed)
}

fn check(path: Option<&Path>) -> ExitCode {
    let name = path.map_or(source::ENVIRONMENT.to_string(), |p| p.display().to_string());
    let parsed = match source::load(path) {
        Ok(p) => p,
        Err(line) => {
            eprintln!("{line}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in &parsed.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", app::describe(&parsed.config));
    if !parsed.environment.is_empty() {
        let mut names = parsed.environment.clone();
        names.sort();
        println!("from the environment: {}", names.join(", "));
    }
    if let Err(line) = app::web_tls(&parsed.config) {
        eprintln!("{name}: {line}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Err(e) = keys::check_inline(&parsed.config) {
        eprintln!("{name}: {e:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // What `serve` would refuse: secrets others can read (`perms`).
    let data = keys::data_dir(&parsed.config);
    let refused = path
        .map_or(Ok(()), |p| perms::check_config_file(p, &parsed))
        .and_then(|()| {
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

fn run_app(
    config: Config,
    warnings: &[String],
    demo: bool,
    config_path: Option<PathBuf>,
) -> ExitCode {
    if let Err(e) = logging::init_logging(&config) {
        eprintln!("tether: {e:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    for w in warnings {
        tracing::warn!("config: {w}");
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
                        // A workload has no email: its `workload:<issuer>#<sub>`.
                        if b.email.is_empty() {
                            &b.user_id
                        } else {
                            &b.email
                        },
                        b.key_type,
                        b.issued_at.rfc3339(),
                        b.expires_at.rfc3339(),
                        b.last_used.map_or("never".to_string(), |t| t.rfc3339())
                    );
                }
                Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
            }
            BindingsAction::Revoke {
                remembered: Some(fp),
                ..
            } => sessions::forget(store.as_ref(), &fp).await,
            BindingsAction::Revoke {
                all_for: Some(who), ..
            } => sessions::cut_off(store, &who).await,
            BindingsAction::Revoke { id, .. } => {
                let id = id.unwrap_or_default();
                match store
                    .revoke_binding(&id, None, "revoked by administrator")
                    .await
                {
                    Ok(b) => {
                        AuditEvent::BindingRevoked {
                            via: Via::Admin,
                            binding_id: b.id.clone(),
                            user: b.owner().to_string(),
                            by: "administrator (tether bindings revoke)".to_string(),
                            reason: "revoked by administrator".to_string(),
                        }
                        .emit();
                        println!("revoked {} ({})", b.id, b.owner());
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

fn admin_sessions(config: Config, action: SessionsAction) -> ExitCode {
    if let Err(e) = logging::init_logging(&config) {
        eprintln!("tether: {e:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if config.storage_type == StorageType::Memory {
        eprintln!(
            "tether: the memory store is private to the gateway process; \
             live sessions are listed only with file or postgres storage"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(async {
        let store = open_store(&config).await?;
        match action {
            SessionsAction::List { user, json } => {
                sessions::list(store.as_ref(), user.as_deref(), json).await
            }
            SessionsAction::Kill { id } => sessions::kill(store.as_ref(), &id).await,
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
