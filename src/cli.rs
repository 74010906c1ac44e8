//! The `wardgate` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli_relations::{self, BreakGlassCommand, CareTeamCommand, GrantsCommand};
use crate::cli_user::UserCommand;
use crate::config::{self, Loaded};
use crate::identity::{KeyError, Keyring, MASTER_KEY_ENV};
use crate::server::Bound;
use crate::{identity, settings, telemetry, tls};

#[derive(Debug, Parser)]
#[command(
    name = "wardgate",
    version,
    about = "Security gateway for healthcare APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Validate a config file and print warnings about weak settings; binds nothing.
    CheckConfig {
        #[arg(long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Manage the master keys that seal secrets in the identity store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage accounts through the running gateway.
    User {
        #[arg(long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage care-team links through the running gateway.
    CareTeam {
        #[arg(long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: CareTeamCommand,
    },
    /// List and revoke access grants through the running gateway.
    Grants {
        #[arg(long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// Check the audit trail and print its public key.
    Audit {
        #[arg(long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: crate::cli_audit::AuditCommand,
    },
    /// The review queue of break-glass uses, through the running gateway.
    BreakGlass {
        #[arg(long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: BreakGlassCommand,
    },
    /// Copy the embedded store (`store.path`) into the empty PostgreSQL database of
    /// `store.url`, for several replicas. Stop the gateway first.
    #[cfg(feature = "postgres")]
    Migrate {
        #[arg(long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new master key and re-seal every stored secret under it. Stop the gateway first.
    /// With `store.kind: postgres`, only add the key: copy the key file to every replica,
    /// restart them, then run `keys reseal`.
    Rotate {
        #[arg(long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Re-seal the secrets in PostgreSQL (`store.kind: postgres`) under the key file's current
    /// key, once every replica holds that file.
    #[cfg(feature = "postgres")]
    Reseal {
        #[arg(long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
}

/// Exit status when the config is invalid.
const EXIT_CONFIG: u8 = 2;
/// Exit status when the config is valid but the gateway cannot start (ports, certificates).
const EXIT_START: u8 = 1;

pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => run(&config),
        Command::Keys {
            command: KeysCommand::Rotate { config },
        } => rotate_keys(&config),
        #[cfg(feature = "postgres")]
        Command::Keys {
            command: KeysCommand::Reseal { config },
        } => reseal(&config),
        Command::User { config, command } => crate::cli_user::run(&config, &command),
        Command::CareTeam { config, command } => cli_relations::care_team(&config, &command),
        Command::Grants { config, command } => cli_relations::grants(&config, &command),
        Command::BreakGlass { config, command } => cli_relations::break_glass(&config, &command),
        Command::Audit { config, command } => crate::cli_audit::run(&config, &command),
        #[cfg(feature = "postgres")]
        Command::Migrate { config } => migrate(&config),
    }
}

#[cfg(feature = "postgres")]
/// Loads `file` and runs `command` on it in a runtime of its own, as the commands beside the
/// replicas do (`migrate`, `keys reseal`); `report` prints what it did.
fn on_postgres<T, E: std::fmt::Display + From<crate::identity::StoreError>>(
    file: &Path,
    command: impl AsyncFnOnce(&config::Loaded) -> Result<T, E>,
    report: impl FnOnce(T),
) -> ExitCode {
    let loaded = match config::load(file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let done = match runtime {
        Ok(runtime) => runtime.block_on(command(&loaded)),
        Err(error) => Err(crate::identity::StoreError::Storage(error.to_string()).into()),
    };
    match done {
        Ok(done) => {
            report(done);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_START)
        }
    }
}

#[cfg(feature = "postgres")]
fn reseal(file: &Path) -> ExitCode {
    on_postgres(file, crate::server::reseal_shared, |count| {
        println!("{count} secret(s) in PostgreSQL re-sealed under the current key");
    })
}

#[cfg(feature = "postgres")]
fn migrate(file: &Path) -> ExitCode {
    on_postgres(file, crate::server::migrate, |copied| {
        println!(
            "copied {} account(s), {} TOTP seed(s), {} passkey(s), {} recovery code(s), {} care-team link(s), {} access request(s), the assertion key, and the admin token where there was one",
            copied.users,
            copied.totp,
            copied.passkeys,
            copied.recovery_codes,
            copied.links,
            copied.requests
        );
        println!(
            "not copied: sessions (people log in again) and pending enrollment links (issue them again)"
        );
    })
}

fn rotate_keys(file: &Path) -> ExitCode {
    let loaded = match config::load(file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if std::env::var_os(identity::MASTER_KEY_ENV).is_some() {
        eprintln!(
            "error: the master keys come from {}: rotation rewrites a key file; unset it and rotate with the key file, or manage that variable's keys yourself",
            identity::MASTER_KEY_ENV
        );
        return ExitCode::from(EXIT_START);
    }
    let store = &loaded.config.store;
    let (dir, key_file) = (
        loaded.resolve(&store.path),
        loaded.resolve(&store.key_file()),
    );
    let shared = store.kind == config::StoreKind::Postgres;
    let rotated = match shared {
        true => identity::add_master_key(&key_file, &mut rand::rng()),
        false => identity::rotate_master_key(&dir, &key_file, &mut rand::rng()),
    };
    match rotated {
        Ok(rotation) if shared => {
            println!(
                "{}: key {} is now current. Copy this file to every replica and restart them one by one, then run `wardgate keys reseal`: until then the secrets in PostgreSQL stay sealed under the older keys, which the file keeps. Sessions keep their seals and end with their lifetime",
                key_file.display(),
                rotation.new_key_id
            );
        }
        Ok(rotation) => {
            println!(
                "{}: key {} is now current; {} secret(s) re-sealed",
                key_file.display(),
                rotation.new_key_id,
                rotation.resealed
            );
            println!(
                "older keys {:?} stay in the file to open older backups: delete their lines once no backup needs them",
                rotation.older_key_ids
            );
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_START);
        }
    }
    let Some(audit) = &loaded.config.audit else {
        return ExitCode::SUCCESS;
    };
    let key_file = loaded.resolve(&audit.value.key_file);
    match crate::audit::rotate_key(&key_file, &mut rand::rng()) {
        Ok((id, older)) => {
            println!(
                "{}: key {id} seals the audit records written from the next start on",
                key_file.display()
            );
            println!(
                "older keys {older:?} stay in the file: the records sealed under them are never sealed again (the chain covers them); delete a line only once retention removed the last of its records"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_START)
        }
    }
}

fn check_config(file: &Path) -> ExitCode {
    let loaded = match config::load(file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    if let Err(error) = check_tls_material(&loaded) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Err(error) = check_master_key(&loaded) {
        eprintln!("error: master key: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // The same function `run` calls first: what it would refuse, this refuses.
    if let Err(error) = settings::compile(&loaded) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    println!(
        "{}: ok ({} warning(s))",
        file.display(),
        loaded.warnings.len()
    );
    ExitCode::SUCCESS
}

/// Loads the gateway's own certificate and key, without writing or binding anything (the
/// upstreams' TLS material is loaded with the settings).
fn check_tls_material(loaded: &Loaded) -> Result<(), tls::TlsError> {
    let config = &loaded.config;
    let (cert, key) = (
        loaded.resolve(&config.tls.cert),
        loaded.resolve(&config.tls.key),
    );
    if tls::would_generate(&cert, &key, config.tls.dev_self_signed) {
        eprintln!(
            "warning: {} is missing: `wardgate run` will generate a self-signed one",
            cert.display()
        );
    } else {
        tls::server_config(&cert, &key, config.tls.min_version)?;
    }
    Ok(())
}

/// Reads the master key the gateway would use (its file's permissions included), writing
/// nothing; a key that `wardgate run` would generate is only announced.
fn check_master_key(loaded: &Loaded) -> Result<(), KeyError> {
    let store = &loaded.config.store;
    let key_file = loaded.resolve(&store.key_file());
    let from_env = std::env::var(MASTER_KEY_ENV).ok();
    if from_env.is_none() && store.dev_generate_key && !key_file.exists() {
        eprintln!(
            "warning: {} is missing: `wardgate run` will generate one",
            key_file.display()
        );
        return Ok(());
    }
    Keyring::load(&key_file, from_env.as_deref(), false, &mut rand::rng()).map(|_| ())
}

fn run(file: &Path) -> ExitCode {
    let loaded = match config::load(file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init_logging(&loaded.config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_START);
        }
    };
    runtime.block_on(async move {
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let bound = match Bound::bind(&loaded).await {
            Ok(bound) => bound,
            Err(error) => {
                tracing::error!("cannot start: {error}");
                return ExitCode::from(EXIT_START);
            }
        };
        if let Some(addr) = bound.https_addr() {
            tracing::info!(
                https = %addr,
                admin = bound.admin_addr().map(tracing::field::display),
                redirect = bound.redirect_addr().map(tracing::field::display),
                "wardgate is serving"
            );
        }
        bound.serve(shutdown_signal()).await;
        tracing::info!("wardgate stopped");
        ExitCode::SUCCESS
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
