//! Where the state of several replicas lives: `shared_state:` (sessions and their revocations,
//! ceremonies, lockout counters, rate limits: Redis) and `store: { kind: postgres }` (accounts,
//! second factors, relations, shared keys). Without both, the gateway is one replica, and
//! check-config says so when only one of them is shared.
//!
//! A password never sits in the YAML (a config file is copied, diffed and pasted into
//! tickets): a URL that carries one is refused; it comes from `password_file` (mode 0600) or
//! the environment variable `password_env` names.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError, Database, Store, StoreKind, Warning};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedState {
    pub kind: SharedStateKind,
    /// `redis://host:port/db`, or `rediss://` for TLS (verified against the platform's roots).
    pub url: String,
    /// The CA (PEM) that vouches for a `rediss://` server, when it is not in the platform's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// The start of every key, so that deployments can share one server.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "wardgate".into()
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SharedStateKind {
    Redis,
}

/// The host, TLS and user information of a URL whose scheme is one of `schemes` (with
/// whether it means TLS); `None` for anything else.
fn parse<'a>(url: &'a str, schemes: &[(&str, bool)]) -> Option<(&'a str, bool, &'a str)> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = schemes
        .iter()
        .find(|(name, _)| *name == scheme)
        .map(|(_, tls)| *tls)?;
    let authority = rest.split(['/', '?']).next()?;
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (userinfo, host),
        None => ("", authority),
    };
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => host.split(':').next()?,
    };
    (!host.is_empty()).then_some((host, tls, userinfo))
}

const REDIS: &[(&str, bool)] = &[("redis", false), ("rediss", true)];
const POSTGRES: &[(&str, bool)] = &[("postgres", false), ("postgresql", false)];

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn validate(
    file: &Path,
    config: &Config,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    validate_store(file, &config.store, warnings)?;
    validate_shared_state(file, config, warnings)?;
    validate_audit_database(file, config, warnings)?;
    let postgres = config.store.kind == StoreKind::Postgres;
    match (postgres, config.shared_state.is_some()) {
        (true, false) => warnings.push(Warning(
            "store.kind is postgres without shared_state: sessions, lockouts and rate limits stay in this process, so run one replica only, or add shared_state (Redis)".into(),
        )),
        (false, true) => warnings.push(Warning(
            "shared_state without store.kind: postgres: accounts stay in this replica's data directory, so this is still one replica".into(),
        )),
        _ => {}
    }
    let audit_files = config
        .audit
        .as_ref()
        .is_some_and(|audit| audit.value.postgres.is_none());
    if postgres && config.shared_state.is_some() && audit_files {
        warnings.push(Warning(
            "several replicas with the audit trail in files (no audit.postgres): each replica keeps its own trail, and who saw a patient is answered only by reading every replica's".into(),
        ));
    }
    Ok(())
}

fn validate_store(
    file: &Path,
    store: &Store,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let refuse = |key: &str, message: String| {
        Err(ConfigError::Semantic {
            file: file.display().to_string(),
            message: format!("store.{key}: {message}"),
        })
    };
    if store.kind == StoreKind::Embedded {
        let stray = [
            ("url", store.url.is_some()),
            ("ca_file", store.ca_file.is_some()),
            ("password_file", store.password_file.is_some()),
            ("password_env", store.password_env.is_some()),
        ];
        return match stray.iter().find(|(_, set)| *set) {
            Some((key, _)) => refuse(key, "is for `kind: postgres`".into()),
            None => Ok(()),
        };
    }
    if !cfg!(feature = "postgres") {
        return refuse(
            "kind",
            "this wardgate was built without the `postgres` feature".into(),
        );
    }
    let Some(url) = &store.url else {
        return refuse("url", "`kind: postgres` needs a postgres:// url".into());
    };
    let database = Database {
        url: url.clone(),
        ca_file: store.ca_file.clone(),
        password_file: store.password_file.clone(),
        password_env: store.password_env.clone(),
    };
    validate_database(
        &database,
        "store",
        warnings,
        "password hashes and sealed secrets",
    )
    .or_else(|(key, message)| refuse(key, message))
}

/// The checks of a PostgreSQL database's settings (`store`, `audit.postgres`): the key and the
/// reason of the first refused, and a warning for a URL without TLS to another host.
fn validate_database(
    database: &Database,
    section: &str,
    warnings: &mut Vec<Warning>,
    crossing: &str,
) -> Result<(), (&'static str, String)> {
    let url = &database.url;
    let Some((host, _, userinfo)) = parse(url, POSTGRES) else {
        return Err((
            "url",
            "must be postgres://user@host[:port]/database[?sslmode=verify-full]".into(),
        ));
    };
    if userinfo.contains(':') || url.contains("password=") {
        return Err((
            "url",
            "carries a password: give it in password_file or password_env, never in the YAML"
                .into(),
        ));
    }
    if database.password_file.is_some() && database.password_env.is_some() {
        return Err((
            "password_file",
            "give password_file or password_env, not both".into(),
        ));
    }
    let tls = [
        "sslmode=require",
        "sslmode=verify-ca",
        "sslmode=verify-full",
    ]
    .iter()
    .any(|mode| url.contains(mode));
    if database.ca_file.is_some() && !tls {
        return Err((
            "ca_file",
            "needs sslmode=require, verify-ca or verify-full".into(),
        ));
    }
    if !tls && !is_loopback(host) {
        warnings.push(Warning(format!(
            "{section}.url to {host} has no sslmode=verify-full: {crossing} cross the network without TLS"
        )));
    }
    Ok(())
}

/// `audit.postgres`: a database of its own, with its checkpoints copied out of it.
fn validate_audit_database(
    file: &Path,
    config: &Config,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let Some(span) = &config.audit else {
        return Ok(());
    };
    let audit = &span.value;
    let Some(database) = &audit.postgres else {
        return Ok(());
    };
    let refuse = |key: &str, message: String| {
        Err(ConfigError::at(
            file,
            span,
            format!("audit.postgres.{key}"),
            message,
        ))
    };
    if !cfg!(feature = "postgres") {
        return refuse(
            "url",
            "this wardgate was built without the `postgres` feature".into(),
        );
    }
    if config.store.url.as_deref() == Some(database.url.as_str()) {
        return refuse(
            "url",
            "is the store's database: the audit trail names patients and lives in a database of its own".into(),
        );
    }
    validate_database(database, "audit.postgres", warnings, "sealed audit records")
        .or_else(|(key, message)| refuse(key, message))?;
    if audit.checkpoint_copies.is_empty()
        && audit.checkpoint_webhook.is_none()
        && audit.checkpoint_syslog.is_none()
    {
        warnings.push(Warning(
            "audit.postgres without checkpoint_copies, checkpoint_webhook or checkpoint_syslog: whoever runs the audit database could rewrite the records and their checkpoints together unseen".into(),
        ));
    }
    Ok(())
}

fn validate_shared_state(
    file: &Path,
    config: &Config,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let Some(span) = &config.shared_state else {
        return Ok(());
    };
    let shared = &span.value;
    let refuse = |key: &str, message: String| {
        Err(ConfigError::at(
            file,
            span,
            format!("shared_state.{key}"),
            message,
        ))
    };
    if !cfg!(feature = "redis") {
        return refuse(
            "kind",
            "this wardgate was built without the `redis` feature".into(),
        );
    }
    let Some((host, tls, userinfo)) = parse(&shared.url, REDIS) else {
        return refuse(
            "url",
            "must be redis://host[:port][/db] or rediss://… for TLS".into(),
        );
    };
    if userinfo.contains(':') {
        return refuse(
            "url",
            "carries a password: give it in password_file or password_env, never in the YAML"
                .into(),
        );
    }
    if shared.ca_file.is_some() && !tls {
        return refuse("ca_file", "needs a rediss:// url".into());
    }
    if shared.password_file.is_some() && shared.password_env.is_some() {
        return refuse(
            "password_file",
            "give password_file or password_env, not both".into(),
        );
    }
    if shared.prefix.is_empty() || shared.prefix.contains([':', ' ', '*']) {
        return refuse(
            "prefix",
            "must be a non-empty name without `:`, spaces or `*`".into(),
        );
    }
    let loopback = is_loopback(host);
    if !tls && !loopback {
        warnings.push(Warning(format!(
            "shared_state.url is plain redis:// to {host}: session records travel sealed, but revocations, counters and the password cross the network in clear; use rediss://"
        )));
    }
    if shared.password_file.is_none() && shared.password_env.is_none() && !loopback {
        warnings.push(Warning(format!(
            "shared_state has no password_file or password_env: anyone who reaches {host} can end every session and reset every lockout"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_for_their_host_tls_and_userinfo() {
        let redis = |url| parse(url, REDIS);
        assert_eq!(
            redis("redis://127.0.0.1:6379/0"),
            Some(("127.0.0.1", false, ""))
        );
        assert_eq!(
            redis("rediss://user@cache.internal/"),
            Some(("cache.internal", true, "user"))
        );
        assert_eq!(redis("rediss://[::1]:6380"), Some(("::1", true, "")));
        assert_eq!(
            redis("redis://:secret@host"),
            Some(("host", false, ":secret"))
        );
        for bad in ["http://host", "redis://", "redis:///0", "host:6379"] {
            assert_eq!(redis(bad), None, "{bad}");
        }
        assert_eq!(
            parse("postgres://wg@db:5432/wg?sslmode=verify-full", POSTGRES),
            Some(("db", false, "wg"))
        );
        assert_eq!(
            parse("postgresql://db?x=1", POSTGRES),
            Some(("db", false, ""))
        );
    }
}
