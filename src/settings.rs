//! Settings: what the gateway runs with, compiled once from the configuration file.
//!
//! `config/` is the file's schema: what an operator may write, with the spans its error messages
//! need. Some of it can still be wrong after the file parsed: hash parameters argon2 refuses, a
//! TOTP period out of range, a lockout policy that contradicts itself, a WebAuthn origin outside
//! its relying party, a rate-limit spec, an upstream's CA or client certificate. Each is
//! converted here, in [`compile`], the one function both `wardgate run` and
//! `wardgate check-config` call, so the check refuses exactly what the start would. It binds no
//! port, writes no file and starts no thread.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

use crate::auth::lockout::{LockoutConfigError, LockoutPolicy};
use crate::auth::mfa::MfaConfig;
use crate::auth::password::{HashError, Hasher, Policy};
use crate::auth::totp::{TotpConfig, TotpError, TotpParams};
use crate::auth::webauthn::{RelyingParty, WebAuthnConfigError};
use crate::config::{
    AuthMode, IdentityField, Loaded, PatientSource, Route, Sanitize, Server as Limits, Tls,
};
use crate::hook::Hook;
use crate::own_api::paths;
use crate::policy::{AccessPolicy, DataRule, PatientAt, PolicyError};
use crate::proxy::{self, TrustedProxies, UpstreamClient};
use crate::ratelimit::{LimitTable, Planned, RateLimitError};
use crate::route::PathPattern;
use crate::sanitize::request::RouteRules;
use crate::session::{Lifetimes, SessionConfig};
use crate::tls::TlsError;

/// The configuration as the gateway runs with it: every fallible conversion done, no spans.
pub struct Settings {
    /// Argon2id with the configured parameters (and its dummy hash for unknown users).
    pub hasher: Hasher,
    /// The hashing threads (`auth.password.hashing`).
    pub hashing: HashingPool,
    pub password_policy: Policy,
    /// `auth.totp` as configured now: for new enrollments, and for seeds stored without their
    /// own parameters.
    pub totp_config: TotpConfig,
    pub totp: TotpParams,
    pub mfa: MfaConfig,
    /// How long an enrollment link works.
    pub enrollment_ttl: Duration,
    pub session: SessionConfig,
    /// The addresses whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Connection limits and timeouts (`server:`).
    pub server: Limits,
    pub listen: Listeners,
    /// The access policy (`policy:`), when there is one.
    pub policy: Option<Arc<AccessPolicy>>,
    /// Where break-glass uses are announced (`policy.break_glass.alert`).
    pub break_glass_alert: Option<Hook>,
    /// The certificate files, paths resolved (they are read, or made, at the start).
    pub tls: Tls,
    /// Where the data directory and the master key are, paths resolved.
    pub store: StoreFiles,
    /// Where the state shared by replicas lives; `None`: in this process.
    pub shared_state: Option<SharedStateSettings>,
    /// The audit trail; `None` without an `audit:` section.
    pub audit: Option<AuditFiles>,
    /// Log every request (`log.requests`).
    pub log_requests: bool,
    pub lockout: LockoutPolicy,
    /// `None` when WebAuthn is not configured.
    pub passkeys: Option<RelyingParty>,
    /// Every limit of `rate_limits`, the routes' and the login endpoints'.
    pub rate_limits: LimitTable<Planned>,
    /// Every route, in the order of the file, each with its upstream's pooled client (none has
    /// connected yet).
    pub routes: Vec<RouteSettings>,
    /// What every request's head is checked against.
    pub head: HeadRules,
    /// `server.body_idle_timeout`.
    pub body_idle_timeout: Duration,
    /// `server.max_upstream_requests_per_client`.
    pub max_in_flight_per_client: usize,
    /// The identity headers stripped from every request besides the built-in ones, in the form
    /// the strip rule compares.
    pub strip_headers: Vec<String>,
}

/// The data directory and the master key file.
pub struct StoreFiles {
    pub dir: PathBuf,
    pub key_file: PathBuf,
    pub dev_generate_key: bool,
    /// `kind: postgres`: accounts, credentials and relations there instead.
    pub postgres: Option<PostgresSettings>,
}

/// A PostgreSQL database (`store: { kind: postgres }`, `audit.postgres`), its files' paths
/// resolved.
pub struct PostgresSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub password: SecretFrom,
}

/// `shared_state:`, its password file's path resolved.
pub struct SharedStateSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub password: SecretFrom,
    pub prefix: String,
}

/// Where a password is read from at the start.
pub enum SecretFrom {
    Nowhere,
    File(PathBuf),
    Env(String),
}

fn secret_from(loaded: &Loaded, file: &Option<PathBuf>, env: &Option<String>) -> SecretFrom {
    match (file, env) {
        (Some(file), _) => SecretFrom::File(loaded.resolve(file)),
        (None, Some(name)) => SecretFrom::Env(name.clone()),
        (None, None) => SecretFrom::Nowhere,
    }
}

/// `audit:`, with its paths resolved.
pub struct AuditFiles {
    pub dir: PathBuf,
    pub key_file: PathBuf,
    pub signing_key: PathBuf,
    pub dev_generate_key: bool,
    pub copies: Vec<PathBuf>,
    pub rules: crate::audit::trail::TrailRules,
    /// Where checkpoints are sent besides `copies`.
    pub webhook: Option<Hook>,
    pub syslog: Option<crate::audit::sink::Syslog>,
    /// `audit.postgres`: the records there instead of in `dir`.
    pub postgres: Option<PostgresSettings>,
}

/// The addresses to listen on (`listen:`, `demo_backend.listen`).
#[derive(Clone, Copy, Debug)]
pub struct Listeners {
    pub https: SocketAddr,
    pub http_redirect: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub demo: Option<SocketAddr>,
}

/// The password hashing pool's size and priority.
pub struct HashingPool {
    pub threads: NonZeroUsize,
    pub queue: usize,
    pub nice: u8,
}

/// The gateway-wide head rules (`sanitize:` and `server.max_request_line`).
pub struct HeadRules {
    pub max_request_line: u64,
    /// The host names the gateway answers for (`Host` / `:authority`).
    pub server_names: Vec<String>,
    pub allow_encoded_slash: bool,
    pub allow_underscores: bool,
}

/// One route, compiled: what the request path needs of it, without spans.
pub struct RouteSettings {
    /// The label of logs, metrics and rate limits.
    pub label: String,
    pub host: Option<String>,
    pub path: PathPattern,
    pub upstream: Arc<UpstreamClient>,
    /// `None` on a route with `auth: none`.
    pub auth: Option<RouteAuth>,
    pub rewrite: Option<PathRewrite>,
    pub websocket: bool,
    /// The route's `response_headers`, and `Cache-Control: no-store` on patient data.
    pub response_headers: HeaderMap,
    pub rules: RouteRules,
    /// The route's part in the access policy: `None` for a route that carries no patient data.
    pub data: Option<DataRule>,
}

/// What a protected route asks of the session and tells the upstream.
pub struct RouteAuth {
    /// The session lifetimes narrowed by the route's own.
    pub lifetimes: Lifetimes,
    /// Identity sent as plain headers.
    pub headers: Vec<IdentityField>,
    /// Identity sent in a signed assertion, when the route asks for one.
    pub assertion: Option<Vec<IdentityField>>,
}

/// A route's `rewrite:` of the path prefix.
pub struct PathRewrite {
    pub prefix: String,
    pub to: String,
}

impl PathRewrite {
    /// The path the upstream sees: `path` with the prefix replaced, on a segment boundary.
    pub fn apply<'a>(&self, path: &'a str) -> Cow<'a, str> {
        let rest = path.strip_prefix(self.prefix.as_str()).unwrap_or(path);
        match (self.to.as_str(), rest) {
            ("", "") => Cow::Borrowed("/"),
            ("", rest) => Cow::Borrowed(rest),
            (to, rest) => Cow::Owned(format!("{to}{rest}")),
        }
    }
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
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Compiles `loaded` into the settings the gateway runs with, or the first setting it refuses.
pub fn compile(loaded: &Loaded) -> Result<Settings, SettingsError> {
    let config = &loaded.config;
    let policy = match &config.policy {
        Some(policy) => Some(Arc::new(policy.value.compile()?)),
        None => None,
    };
    let passkeys = match &config.auth.webauthn {
        Some(webauthn) => Some(RelyingParty::new(&webauthn.value)?),
        None => None,
    };
    let labels: Vec<String> = config.routes.value.iter().map(|r| r.label()).collect();
    let rate_limits = LimitTable::new(
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
    let break_glass_alert = config
        .policy
        .as_ref()
        .and_then(|policy| policy.value.break_glass.as_ref()?.alert.as_ref())
        .and_then(|alert| {
            // `config::load` refused an alert on an unknown upstream.
            Some(Hook {
                client: upstreams.get(&alert.upstream)?.clone(),
                path: alert.path.clone(),
            })
        });
    let lifetimes = config.session.value.lifetimes();
    let routes = config
        .routes
        .value
        .iter()
        .filter_map(|route| {
            // `config::load` refuses routes that name an unknown upstream.
            let upstream = upstreams.get(route.upstream.value.as_str())?.clone();
            Some(compile_route(
                route,
                upstream,
                &config.sanitize.value,
                lifetimes,
                policy.as_deref(),
            ))
        })
        .collect();
    let hashing = &config.auth.password.hashing;
    Ok(Settings {
        hasher: Hasher::new(hashing.params.clone())?,
        hashing: HashingPool {
            threads: hashing.threads(),
            queue: hashing.queue,
            nice: hashing.nice,
        },
        password_policy: config.auth.password.policy,
        totp_config: config.auth.totp.clone(),
        totp: config.auth.totp.params()?,
        mfa: config.auth.mfa.clone(),
        enrollment_ttl: config.auth.enrollment_ttl.0,
        session: config.session.value.clone(),
        trusted_proxies: TrustedProxies::new(config.forwarding.trusted_proxies.clone()),
        server: config.server.value.clone(),
        tls: Tls {
            cert: loaded.resolve(&config.tls.cert),
            key: loaded.resolve(&config.tls.key),
            min_version: config.tls.min_version,
            dev_self_signed: config.tls.dev_self_signed,
        },
        store: StoreFiles {
            dir: loaded.resolve(&config.store.path),
            key_file: loaded.resolve(&config.store.key_file()),
            dev_generate_key: config.store.dev_generate_key,
            postgres: match (&config.store.kind, &config.store.url) {
                (crate::config::StoreKind::Postgres, Some(url)) => Some(PostgresSettings {
                    url: url.clone(),
                    ca_file: config.store.ca_file.as_ref().map(|ca| loaded.resolve(ca)),
                    password: secret_from(
                        loaded,
                        &config.store.password_file,
                        &config.store.password_env,
                    ),
                }),
                _ => None,
            },
        },
        shared_state: config.shared_state.as_ref().map(|shared| {
            let shared = &shared.value;
            SharedStateSettings {
                url: shared.url.clone(),
                ca_file: shared.ca_file.as_ref().map(|ca| loaded.resolve(ca)),
                password: secret_from(loaded, &shared.password_file, &shared.password_env),
                prefix: shared.prefix.clone(),
            }
        }),
        audit: config.audit.as_ref().map(|audit| {
            let audit = &audit.value;
            AuditFiles {
                dir: loaded.resolve(&audit.path),
                key_file: loaded.resolve(&audit.key_file),
                signing_key: loaded.resolve(&audit.signing_key),
                dev_generate_key: audit.dev_generate_key,
                copies: audit
                    .checkpoint_copies
                    .iter()
                    .map(|c| loaded.resolve(c))
                    .collect(),
                rules: crate::audit::trail::TrailRules {
                    checkpoint_every: audit.checkpoint_every,
                    checkpoint_interval: audit.checkpoint_interval.0.as_secs(),
                    segment_bytes: audit.segment_size.0,
                    retention: audit.retention.map(|r| r.0.as_secs()),
                },
                // `config::load` refused a webhook on an unknown upstream, and a bad syslog.
                webhook: audit.checkpoint_webhook.as_ref().and_then(|hook| {
                    Some(Hook {
                        client: upstreams.get(&hook.upstream)?.clone(),
                        path: hook.path.clone(),
                    })
                }),
                syslog: audit
                    .checkpoint_syslog
                    .as_deref()
                    .and_then(|s| crate::audit::sink::Syslog::parse(s).ok()),
                postgres: audit.postgres.as_ref().map(|database| PostgresSettings {
                    url: database.url.clone(),
                    ca_file: database.ca_file.as_ref().map(|ca| loaded.resolve(ca)),
                    password: secret_from(loaded, &database.password_file, &database.password_env),
                }),
            }
        }),
        log_requests: config.log.requests,
        policy,
        break_glass_alert,
        listen: Listeners {
            https: config.listen.https,
            http_redirect: config.listen.http_redirect,
            admin: config.listen.admin.as_ref().map(|admin| admin.value),
            demo: config.demo_backend.as_ref().map(|demo| demo.listen.value),
        },
        lockout: config.auth.lockout.policy()?,
        passkeys,
        rate_limits,
        routes,
        head: HeadRules {
            max_request_line: config.server.value.max_request_line.0,
            server_names: config.sanitize.value.host_names(),
            allow_encoded_slash: config.sanitize.value.allow_encoded_slash,
            allow_underscores: config.sanitize.value.allow_underscores_in_headers,
        },
        body_idle_timeout: config.server.value.body_idle_timeout.0,
        max_in_flight_per_client: config.server.value.max_upstream_requests_per_client,
        strip_headers: config
            .forwarding
            .strip_headers
            .iter()
            .map(|name| proxy::identity_header_key(&name.value).into_owned())
            .collect(),
    })
}

fn compile_route(
    route: &Route,
    upstream: Arc<UpstreamClient>,
    sanitize: &Sanitize,
    lifetimes: Lifetimes,
    policy: Option<&AccessPolicy>,
) -> RouteSettings {
    let mut response_headers = HeaderMap::new();
    for (name, value) in &route.response_headers {
        // `config::load` refused names and values that are not valid in a header.
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.value.as_str()),
        ) {
            response_headers.insert(name, value);
        }
    }
    if route.cache_no_store.unwrap_or(route.patient_data) {
        response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let auth = (route.auth == AuthMode::Session).then(|| {
        let identity = route.identity.as_ref().map(|i| i.value.clone());
        RouteAuth {
            lifetimes: lifetimes.narrowed(
                route.session.idle_timeout.map(|d| d.0),
                route.session.absolute_timeout.map(|d| d.0),
                route.reauth_within.map(|d| d.0),
            ),
            headers: identity
                .as_ref()
                .map(|i| i.headers.clone())
                .unwrap_or_default(),
            assertion: identity.and_then(|i| i.assertion),
        }
    });
    RouteSettings {
        label: route.label(),
        host: route.host.as_ref().map(|h| h.value.clone()),
        path: route.path.value.clone(),
        upstream,
        auth,
        rewrite: route.rewrite.as_ref().map(|r| PathRewrite {
            prefix: r.value.prefix.clone(),
            to: r.value.to.clone(),
        }),
        websocket: route.websocket,
        response_headers,
        rules: RouteRules::new(sanitize, &route.sanitize),
        data: policy.and_then(|policy| data_rule(route, policy)),
    }
}

/// A route's category and patient source; `config::load` refused a `data` route without both,
/// and a FHIR route whose path does not end in `**`.
fn data_rule(route: &Route, policy: &AccessPolicy) -> Option<DataRule> {
    if route.fhir.as_ref().is_some_and(|f| f.value) {
        let base = route.path.value.rest_index()?;
        return Some(DataRule::Fhir { base });
    }
    let category = policy.category(&route.data.as_ref()?.value)?;
    let patient = match &route.patient.as_ref()?.value {
        PatientSource::Path(text) => {
            let name = text.strip_prefix('{')?.strip_suffix('}')?;
            PatientAt::Segment(route.path.value.param_index(name)?)
        }
        PatientSource::Query(parameter) => PatientAt::Query(parameter.query.clone()),
    };
    Some(DataRule::Rest { category, patient })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_segment_boundaries() {
        let rewrite = |prefix: &str, to: &str| PathRewrite {
            prefix: prefix.to_owned(),
            to: to.to_owned(),
        };
        assert_eq!(rewrite("/api", "").apply("/api/patients/1"), "/patients/1");
        assert_eq!(rewrite("/api", "").apply("/api"), "/");
        assert_eq!(
            rewrite("/api", "/fhir").apply("/api/Patient"),
            "/fhir/Patient"
        );
        assert_eq!(rewrite("/api", "/fhir").apply("/api"), "/fhir");
    }
}
