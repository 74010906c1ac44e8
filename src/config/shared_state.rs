//! `shared_state:`: where the state every replica must see the same of lives (sessions and
//! their revocations, ceremonies, lockout counters, rate limits). Absent, it lives in this
//! process, and the gateway is one replica.
//!
//! The password never sits in the YAML (a config file is copied, diffed and pasted into
//! tickets): a URL that carries one is refused; it comes from `password_file` (mode 0600) or
//! the environment variable `password_env` names.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError, Warning};

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

/// The host of a `redis://` or `rediss://` URL and whether it is TLS; `None` for anything else.
fn parse(url: &str) -> Option<(&str, bool, &str)> {
    let (rest, tls) = match url.split_once("://")? {
        ("redis", rest) => (rest, false),
        ("rediss", rest) => (rest, true),
        _ => return None,
    };
    let authority = rest.split('/').next()?;
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

pub(super) fn validate(
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
    let Some((host, tls, userinfo)) = parse(&shared.url) else {
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
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
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
        assert_eq!(
            parse("redis://127.0.0.1:6379/0"),
            Some(("127.0.0.1", false, ""))
        );
        assert_eq!(
            parse("rediss://user@cache.internal/"),
            Some(("cache.internal", true, "user"))
        );
        assert_eq!(parse("rediss://[::1]:6380"), Some(("::1", true, "")));
        assert_eq!(
            parse("redis://:secret@host"),
            Some(("host", false, ":secret"))
        );
        for bad in ["http://host", "redis://", "redis:///0", "host:6379"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
