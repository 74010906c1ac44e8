//! `wardgate audit …`: checks of the audit trail that need no running gateway.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;

use crate::assertion::AssertionKey;
use crate::audit::trail::{Stored, TrailError};
use crate::audit::{AuditRecord, Query, Reader, export};
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
    /// Print (JSON) the proof that record SEQ is in the tree of the first signed checkpoint
    /// that covers it: its leaf hash and audit path (RFC 9162 2.1.3), checked before printing.
    Prove { seq: u64 },
    /// The records that match every filter given, oldest first: with `--patient`, who saw that
    /// patient's data, when, of which kind, under which grant or emergency (HIPAA's accounting
    /// of disclosures). Needs the audit key; only reads.
    Query {
        #[arg(long)]
        patient: Option<String>,
        /// An account id (as the records carry it).
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// A grant's (or break-glass access's) id.
        #[arg(long)]
        grant: Option<String>,
        /// `allowed`, `refused` or `failed`.
        #[arg(long)]
        decision: Option<String>,
        /// `decision`, `request` or `security`.
        #[arg(long)]
        kind: Option<String>,
        /// Unix seconds, inclusive.
        #[arg(long)]
        since: Option<u64>,
        #[arg(long)]
        until: Option<u64>,
        /// `table`; `json` (one record per line); `syslog` (RFC 5424 lines); `fhir` (one FHIR
        /// R4 `AuditEvent` per line, IHE BALP patient read or query, for records that name a
        /// patient).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Syslog,
    Fhir,
}

/// One line of the table: time, kind, decision, user, patient, categories, purpose, grants,
/// route, status and code.
fn row(record: &AuditRecord) -> String {
    let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let list = |values: &[String]| match values {
        [] => "-".to_owned(),
        values => values.join(","),
    };
    [
        httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(record.time),
        ),
        record.kind.clone(),
        text(&record.decision),
        text(&record.user),
        text(&record.patient),
        list(&record.categories),
        text(&record.purpose_of_use),
        list(&record.grants),
        text(&record.route),
        record.status.map_or("-".into(), |s| s.to_string()),
        text(&record.code),
    ]
    .join("\t")
}

/// The trail `audit` names, read whole with the checkpoints of `copies`: its segment files, or
/// its PostgreSQL database.
fn stored(
    loaded: &config::Loaded,
    audit: &config::Audit,
    copies: &[PathBuf],
) -> Result<Stored, TrailError> {
    if audit.postgres.is_none() {
        return Stored::read(&loaded.resolve(&audit.path), copies);
    }
    #[cfg(feature = "postgres")]
    {
        let read = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| TrailError::Database(format!("the async runtime: {error}")))?
            .block_on(crate::server::audit_in_postgres(loaded));
        read.map_err(|error| TrailError::Database(error.to_string()))?
            .with_copies(copies)
    }
    #[cfg(not(feature = "postgres"))]
    Err(TrailError::Database(
        "audit.postgres: this wardgate was built without the `postgres` feature".into(),
    ))
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
        AuditCommand::Query {
            patient,
            user,
            category,
            grant,
            decision,
            kind,
            since,
            until,
            format,
        } => {
            let filter = Query {
                patient: patient.clone(),
                user: user.clone(),
                category: category.clone(),
                grant: grant.clone(),
                decision: decision.clone(),
                kind: kind.clone(),
                since: *since,
                until: *until,
            };
            let keyring = match Keyring::read_file(&loaded.resolve(&audit.key_file)) {
                Ok(keyring) => keyring,
                Err(error) => {
                    eprintln!("error: the audit key is needed to read records: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let records = match stored(&loaded, audit, &[]).and_then(|s| s.records(&keyring)) {
                Ok(records) => records,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_BROKEN);
                }
            };
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "-".into());
            if *format == Format::Table {
                println!(
                    "time\tkind\tdecision\tuser\tpatient\tcategories\tpurpose\tgrants\troute\tstatus\tcode"
                );
            }
            let mut reader = Reader::default();
            for (seq, _, bytes) in records {
                let Ok(record) = serde_json::from_slice::<AuditRecord>(&bytes) else {
                    eprintln!("warning: record {seq} is not a record this version can read");
                    continue;
                };
                let record = reader.read(seq, record);
                if !filter.keeps(&record) {
                    continue;
                }
                match format {
                    Format::Table => println!("{}", row(&record)),
                    Format::Json => match serde_json::to_string(&record) {
                        Ok(json) => println!("{json}"),
                        Err(error) => eprintln!("warning: record {seq} cannot be printed: {error}"),
                    },
                    Format::Syslog => println!("{}", export::syslog(&record, &host)),
                    Format::Fhir => {
                        if let Some(event) = export::audit_event(&record, seq) {
                            println!("{event}");
                        }
                    }
                }
            }
            ExitCode::SUCCESS
        }
        AuditCommand::Prove { seq } => {
            let proven = own_key()
                .and_then(|key| {
                    stored(&loaded, audit, &[])
                        .and_then(|s| s.prove(*seq, &key))
                        .map_err(|e| e.to_string())
                })
                .and_then(|proof| serde_json::to_string_pretty(&proof).map_err(|e| e.to_string()));
            match proven {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(EXIT_BROKEN)
                }
            }
        }
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
            match stored(&loaded, audit, &all).and_then(|s| s.verify(&key, keyring.as_ref())) {
                Ok(verified) => {
                    let opened = match keyring {
                        Some(_) => format!("{} opened", verified.opened),
                        None => "not opened (no audit key here)".to_owned(),
                    };
                    println!(
                        "ok: {} records, {} checkpoints verified, records {opened}",
                        verified.records, verified.checkpoints
                    );
                    if let Some(cut) = &verified.cut {
                        println!(
                            "retention removed records 0 to {} (the newest of them from {}) at {}: not checked",
                            cut.size.saturating_sub(1),
                            export::rfc3339(cut.newest),
                            export::rfc3339(cut.time)
                        );
                    }
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
