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

use super::{Config, ConfigError, Store, StoreKind, Warning};

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
    let Some((host, _, userinfo)) = parse(url, POSTGRES) else {
        return refuse(
            "url",
            "must be postgres://user@host[:port]/database[?sslmode=verify-full]".into(),
        );
    };
    if userinfo.contains(':') || url.contains("password=") {
        return refuse(
            "url",
            "carries a password: give it in password_file or password_env, never in the YAML"
                .into(),
        );
    }
    if store.password_file.is_some() && store.password_env.is_some() {
        return refuse(
            "password_file",
            "give password_file or password_env, not both".into(),
        );
    }
    let tls = [
        "sslmode=require",
        "sslmode=verify-ca",
        "sslmode=verify-full",
    ]
    .iter()
    .any(|mode| url.contains(mode));
    if store.ca_file.is_some() && !tls {
        return refuse(
            "ca_file",
            "needs sslmode=require, verify-ca or verify-full".into(),
        );
    }
    if !tls && !is_loopback(host) {
        warnings.push(Warning(format!(
            "store.url to {host} has no sslmode=verify-full: password hashes and sealed secrets cross the network without TLS"
        )));
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
