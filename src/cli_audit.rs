//! `wardgate audit …`: checks of the audit trail that need no running gateway.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;

use crate::assertion::AssertionKey;
use crate::audit::trail::{self, TrailError};
use crate::config;
use crate::identity::{KeyError, Keyring};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the chain, the tree and every checkpoint (also the config's copies and `--copy`),
    /// and open every record when the audit key is at hand; names the first broken record and
    /// exits 1. Runs beside the gateway: it only reads.
    Verify {
        /// The checkpoints' public key (base64, as `audit public-key` prints it), for a verifier
        /// who holds nothing else; default: the config's signing key.
        #[arg(long)]
        public_key: Option<String>,
        /// More files with copies of the checkpoints.
        #[arg(long = "copy")]
        copies: Vec<PathBuf>,
    },
    /// Print the public key that verifies the checkpoints (base64), to give to verifiers.
    PublicKey,
}

const EXIT_BROKEN: u8 = 1;
const EXIT_CONFIG: u8 = 2;

pub fn run(file: &Path, command: &AuditCommand) -> ExitCode {
    let loaded = match config::load(file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(audit) = loaded.config.audit.as_ref().map(|a| &a.value) else {
        eprintln!("error: {} has no `audit:` section", file.display());
        return ExitCode::from(EXIT_CONFIG);
    };
    let signing = loaded.resolve(&audit.signing_key);
    let own_key = || match signing.exists() {
        true => AssertionKey::load_or_create(&signing)
            .map(|(key, _)| key.public_key())
            .map_err(|error| error.to_string()),
        false => Err(format!("{}: no such signing key", signing.display())),
    };
    match command {
        AuditCommand::PublicKey => match own_key() {
            Ok(key) => {
                println!("{}", STANDARD.encode(key));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        AuditCommand::Verify { public_key, copies } => {
            let key = match public_key {
                Some(text) => STANDARD.decode(text.trim()).map_err(|e| e.to_string()),
                None => own_key(),
            };
            let key = match key {
                Ok(key) => key,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let keyring = match Keyring::read_file(&loaded.resolve(&audit.key_file)) {
                Ok(keyring) => Some(keyring),
                Err(KeyError::Missing(_)) => None,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mut all: Vec<PathBuf> = audit
                .checkpoint_copies
                .iter()
                .map(|c| loaded.resolve(c))
                .collect();
            all.extend(copies.iter().cloned());
            let dir = loaded.resolve(&audit.path);
            match trail::verify(&dir, &key, keyring.as_ref(), &all) {
                Ok(verified) => {
                    let opened = match keyring {
                        Some(_) => format!("{} opened", verified.opened),
                        None => "not opened (no audit key here)".to_owned(),
                    };
                    println!(
                        "ok: {} records, {} checkpoints verified, records {opened}",
                        verified.records, verified.checkpoints
                    );
                    ExitCode::SUCCESS
                }
                Err(TrailError::Broken { seq, message }) => {
                    println!("broken: record {seq}: {message}");
                    ExitCode::from(EXIT_BROKEN)
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
    }
}
