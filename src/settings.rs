//! Settings: what the gateway runs with, compiled once from the configuration file.
//!
//! `config/` is the file's schema: what an operator may write, with the spans its error messages
//! need. Some of it can still be wrong after the file parsed: hash parameters argon2 refuses, a
//! TOTP period out of range, a lockout policy that contradicts itself, a WebAuthn origin outside
//! its relying party, a rate-limit spec, an upstream's CA or client certificate. Each is
//! converted here, in [`compile`], the one function both `wardgate run` and
//! `wardgate check-config` call, so the check refuses exactly what the start would. It binds no
//! port, writes no file and starts no thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::lockout::{LockoutConfigError, LockoutPolicy};
use crate::auth::password::{HashError, Hasher};
use crate::auth::totp::{TotpError, TotpParams};
use crate::auth::webauthn::{Passkeys, WebAuthnConfigError};
use crate::config::Loaded;
use crate::own_api::paths;
use crate::proxy::UpstreamClient;
use crate::ratelimit::{LocalLimiter, RateLimitError};
use crate::tls::TlsError;

/// The fallible part of the configuration, converted.
pub struct Settings {
    /// Argon2id with the configured parameters (and its dummy hash for unknown users).
    pub hasher: Hasher,
    pub totp: TotpParams,
    pub lockout: LockoutPolicy,
    /// `None` when WebAuthn is not configured.
    pub passkeys: Option<Arc<Passkeys>>,
    /// Every limit of `rate_limits`, the routes' and the login endpoints'.
    pub limiter: LocalLimiter,
    /// One pooled client per upstream, by name; none has connected yet.
    pub upstreams: BTreeMap<String, Arc<UpstreamClient>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("auth.password.hashing: {0}")]
    Hashing(#[from] HashError),
    #[error("auth.totp: {0}")]
    Totp(#[from] TotpError),
    #[error(transparent)]
    Lockout(#[from] LockoutConfigError),
    #[error("auth.webauthn.{0}")]
    WebAuthn(#[from] WebAuthnConfigError),
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
    #[error(transparent)]
    Upstream(#[from] TlsError),
}

/// Compiles `loaded` into the settings the gateway runs with, or the first setting it refuses.
pub fn compile(loaded: &Loaded) -> Result<Settings, SettingsError> {
    let config = &loaded.config;
    let passkeys = match &config.auth.webauthn {
        Some(webauthn) => Some(Arc::new(Passkeys::new(&webauthn.value)?)),
        None => None,
    };
    let labels: Vec<String> = config.routes.value.iter().map(|r| r.label()).collect();
    let limiter = LocalLimiter::new(
        &config.rate_limits,
        labels
            .iter()
            .map(String::as_str)
            .zip(config.routes.value.iter().map(|r| &r.rate_limit))
            .chain([(paths::PREFIX, &config.auth.login_rate_limit)]),
    )?;
    let mut upstreams = BTreeMap::new();
    for (name, upstream) in &config.upstreams {
        let client = UpstreamClient::new(name, &upstream.value, |p| loaded.resolve(p))?;
        upstreams.insert(name.clone(), Arc::new(client));
    }
    Ok(Settings {
        hasher: Hasher::new(config.auth.password.hashing.params.clone())?,
        totp: config.auth.totp.params()?,
        lockout: config.auth.lockout.policy()?,
        passkeys,
        limiter,
        upstreams,
    })
}
