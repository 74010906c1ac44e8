//! `gateway.yaml`: the one file an operator writes.
//!
//! The file is read strictly (`deny_unknown_fields` everywhere, `version: 1` required) and fully
//! validated before any port is bound, so a typo can never start a half-configured gateway.
//! Every error names the file, the line and column, and the key. Settings that weaken the
//! gateway are allowed only when written out, and each produces a [`Warning`] that
//! `wardgate check-config` prints and `wardgate run` logs at start.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::auth::password::PasswordConfig;
use crate::policy::PolicyConfig;
use crate::ratelimit::{RateLimits, RouteRateLimit};
use crate::route::PathPattern;
pub use crate::sanitize::config::{
    Injection, InjectionMode, JsonLimits, MethodName, RouteSanitize, Sanitize,
};
pub use crate::telemetry::{Log, LogFormat};
pub use crate::units::{ByteSize, HumanDuration};
pub use crate::warning::Warning;
pub use replicas::{SharedState, SharedStateKind};

mod replicas;

/// The only config format version this build understands.
pub const VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: Spanned<u32>,
    pub listen: Listen,
    pub tls: Tls,
    #[serde(default = "unlocated")]
    pub server: Spanned<Server>,
    #[serde(default)]
    pub forwarding: Forwarding,
    #[serde(default)]
    pub log: Log,
    /// Request rules applied before anything is forwarded; routes may override parts.
    #[serde(default = "unlocated")]
    pub sanitize: Spanned<Sanitize>,
    /// Keyed GCRA limits (see `ratelimit`); routes may override them.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Accounts and login: password rules and hashing.
    #[serde(default)]
    pub auth: Auth,
    /// A built-in demo patient API with synthetic data, for first tries only.
    #[serde(default)]
    pub demo_backend: Option<DemoBackend>,
    /// Where accounts and their sealed secrets live, and the master key that seals them.
    #[serde(default)]
    pub store: Store,
    /// Sessions, ceremonies, lockouts and limits shared by several replicas (`shared_state`);
    /// in this process when absent.
    #[serde(default)]
    pub shared_state: Option<Spanned<SharedState>>,
    /// The audit trail: its own directory and keys (see `audit`); off when absent, and warned.
    #[serde(default)]
    pub audit: Option<Spanned<Audit>>,
    /// Session lifetimes (see `session`); routes may narrow them.
    #[serde(default = "unlocated")]
    pub session: Spanned<crate::session::SessionConfig>,
    /// Who may see which kind of data about which patient (`policy`); without it every
    /// logged-in person may reach every protected route, and the start says so.
    #[serde(default)]
    pub policy: Option<Spanned<PolicyConfig>>,
    pub upstreams: BTreeMap<String, Spanned<Upstream>>,
    pub routes: Spanned<Vec<Route>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub https: SocketAddr,
    /// Plain-HTTP listener that only answers 308 redirects to HTTPS.
    #[serde(default)]
    pub http_redirect: Option<SocketAddr>,
    /// Health, readiness, metrics and the account API, in plain HTTP. Loopback by default;
    /// `null` turns it off.
    #[serde(default = "default_admin")]
    pub admin: Option<Spanned<SocketAddr>>,
    /// Allow `admin` on an address other than loopback although it speaks plain HTTP (the
    /// admin token would cross the network in clear). Refused unless set.
    #[serde(default)]
    pub admin_insecure_plaintext: bool,
}

fn default_admin() -> Option<Spanned<SocketAddr>> {
    Some(unlocated_value(SocketAddr::from(([127, 0, 0, 1], 9443))))
}

/// A default value: it has no place in the file.
fn unlocated_value<T>(value: T) -> Spanned<T> {
    Spanned::new(
        value,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn unlocated<T: Default>() -> Spanned<T> {
    unlocated_value(T::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Generate a self-signed localhost certificate when the files are missing. Development only.
    #[serde(default)]
    pub dev_self_signed: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// Connection hygiene: what a slow, greedy or hostile client may cost the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Client connections at once, all listeners' clients together on the HTTPS listener;
    /// more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Client connections at once from one peer address (trusted proxies excepted): one
    /// address cannot take every slot. Excess connections are closed at once.
    pub max_connections_per_address: usize,
    /// Requests of one client (address) forwarded and not yet answered in full: each holds an
    /// upstream connection. More: 429 `WG-RATE-003`.
    pub max_upstream_requests_per_client: usize,
    /// Connections at once on each plain-HTTP side listener (admin, redirect, demo).
    pub side_max_connections: usize,
    /// Longest time a client may leave response data untaken (a blocked socket, or an HTTP/2
    /// stream without flow-control credit) before its connection is closed.
    pub send_timeout: HumanDuration,
    pub tls_handshake_timeout: HumanDuration,
    /// Time allowed for a complete request head, counted from the connection's start or from
    /// the end of the previous response; it is therefore also the keep-alive idle limit. On
    /// HTTP/2: the time to the first request, and the longest time without a request in flight.
    pub header_read_timeout: HumanDuration,
    /// HTTP/2: interval of keep-alive pings; a peer that does not answer within it is dropped.
    pub h2_keep_alive_interval: HumanDuration,
    pub h2_max_concurrent_streams: u32,
    pub max_header_size: ByteSize,
    pub max_headers: usize,
    /// HTTP/1.x request line (method, target, version); longer: 414 from the framing guard.
    pub max_request_line: ByteSize,
    /// Client request bodies: longest pause between two chunks.
    pub body_idle_timeout: HumanDuration,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish.
    pub shutdown_grace: HumanDuration,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_address: 256,
            max_upstream_requests_per_client: 64,
            side_max_connections: 64,
            send_timeout: HumanDuration(Duration::from_secs(30)),
            tls_handshake_timeout: HumanDuration(Duration::from_secs(10)),
            header_read_timeout: HumanDuration(Duration::from_secs(15)),
            h2_keep_alive_interval: HumanDuration(Duration::from_secs(30)),
            h2_max_concurrent_streams: 128,
            max_header_size: ByteSize(16 * 1024),
            max_headers: 100,
            max_request_line: ByteSize(8 * 1024),
            body_idle_timeout: HumanDuration(Duration::from_secs(30)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            password: PasswordConfig::default(),
            enrollment_ttl: HumanDuration(Duration::from_secs(3600)),
            totp: crate::auth::totp::TotpConfig::default(),
            lockout: crate::auth::lockout::LockoutConfig::default(),
            webauthn: None,
            mfa: crate::auth::mfa::MfaConfig::default(),
            login_rate_limit: crate::ratelimit::RouteRateLimit::login_default(),
        }
    }
}

/// `auth:` in gateway.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Password rules and hashing (see `auth::password`).
    pub password: PasswordConfig,
    /// How long a new account's (or a password reset's) enrollment token stays valid.
    pub enrollment_ttl: HumanDuration,
    /// Authenticator-app codes: issuer shown in the app, algorithm, digits, period.
    #[serde(default)]
    pub totp: crate::auth::totp::TotpConfig,
    /// Brute-force protection: failures per account, per address and per second factor.
    pub lockout: crate::auth::lockout::LockoutConfig,
    /// Passkeys and security keys; off when absent (the relying party must be named).
    pub webauthn: Option<Spanned<crate::auth::webauthn::WebAuthnConfig>>,
    /// Which second factors accounts may use, narrowed per role.
    pub mfa: crate::auth::mfa::MfaConfig,
    /// Limits on the gateway's own login and enrollment endpoints, stricter than any route's.
    pub login_rate_limit: crate::ratelimit::RouteRateLimit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarding {
    /// Peers whose `X-Forwarded-*`, `Forwarded` and `X-Request-Id` headers are believed.
    /// Empty by default: nobody is trusted.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// More identity headers to remove from every request, besides the built-in list
    /// (`X-Wardgate-*`, `X-Forwarded-User`, `X-Remote-User`, `X-Auth-Request-*`).
    #[serde(default)]
    pub strip_headers: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoBackend {
    pub listen: Spanned<SocketAddr>,
}

/// The audit trail (see `audit`): apart from the identity store, under its own keys, both kept
/// outside its directory so that a copy of the directory reveals nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// The segment files and checkpoints; created with mode 0700.
    pub path: PathBuf,
    /// The keys that seal the records (the master key file's format, mode 0600).
    pub key_file: PathBuf,
    /// The Ed25519 key that signs checkpoints (PEM, mode 0600); created when missing.
    pub signing_key: PathBuf,
    /// Generate `key_file` when it is missing. Development only.
    pub dev_generate_key: bool,
    /// A signed checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or this long after the last one, when records came since.
    pub checkpoint_interval: HumanDuration,
    /// Every checkpoint is also appended to these files (put one on another volume).
    pub checkpoint_copies: Vec<PathBuf>,
    /// A new segment file after this many bytes.
    pub segment_size: ByteSize,
    /// Records older than this are removed, a whole segment at a time (e.g. `2190d`, HIPAA's
    /// common six years); absent, every record is kept.
    pub retention: Option<HumanDuration>,
    /// Every checkpoint is also POSTed (JSON) to this path on one of `upstreams`.
    pub checkpoint_webhook: Option<crate::policy::HookConfig>,
    /// Every checkpoint is also sent as an RFC 5424 line to this syslog: `udp://HOST:PORT` or
    /// `unix:/dev/log` (a datagram socket).
    pub checkpoint_syslog: Option<String>,
    /// The trail in this PostgreSQL database (its own, not the store's), one chain for every
    /// replica, instead of segment files in `path` (feature `postgres`).
    pub postgres: Option<Database>,
}

/// A PostgreSQL database of the audit trail: a URL without a password, which comes from a file
/// or the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `postgres://user@host:port/db?sslmode=verify-full`.
    pub url: String,
    /// A CA bundle (PEM) for a server whose CA is not in the platform's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
}

impl Default for Audit {
    fn default() -> Self {
        Self {
            path: PathBuf::from("audit/"),
            key_file: PathBuf::from("audit.key"),
            signing_key: PathBuf::from("audit-signing.key"),
            dev_generate_key: false,
            checkpoint_every: 1000,
            checkpoint_interval: HumanDuration(Duration::from_secs(10)),
            checkpoint_copies: Vec::new(),
            segment_size: ByteSize(64 * 1024 * 1024),
            retention: None,
            checkpoint_webhook: None,
            checkpoint_syslog: None,
            postgres: None,
        }
    }
}

/// A hook (`key`) names a configured upstream and a path on it.
fn check_hook<T>(
    file: &Path,
    config: &Config,
    span: &Spanned<T>,
    key: &str,
    hook: &crate::policy::HookConfig,
) -> Result<(), ConfigError> {
    if !config.upstreams.contains_key(&hook.upstream) {
        return Err(ConfigError::at(
            file,
            span,
            format!("{key}.upstream"),
            format!("no upstream named `{}` under `upstreams`", hook.upstream),
        ));
    }
    if !hook.path.starts_with('/') {
        return Err(ConfigError::at(
            file,
            span,
            format!("{key}.path"),
            "must start with `/`",
        ));
    }
    Ok(())
}

/// Six years of 365 days, in seconds: HIPAA's retention for documentation (164.316(b)(2)).
const SIX_YEARS: u64 = 2190 * 86_400;

/// The identity store (see `identity`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    pub kind: StoreKind,
    /// Data directory; created with mode 0700.
    pub path: PathBuf,
    /// Master key file (mode 0600); `<path>/master.key` by default. `WARDGATE_MASTER_KEY`
    /// overrides it.
    pub key_file: Option<PathBuf>,
    /// Generate the key file when it is missing. Development only.
    pub dev_generate_key: bool,
    /// `kind: postgres`: `postgres://user@host:port/db?sslmode=verify-full`, no password in it.
    pub url: Option<String>,
    /// A CA bundle (PEM) for a PostgreSQL server whose CA is not in the platform's roots.
    pub ca_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            kind: StoreKind::Embedded,
            path: PathBuf::from("data/"),
            key_file: None,
            dev_generate_key: false,
            url: None,
            ca_file: None,
            password_file: None,
            password_env: None,
        }
    }
}

impl Store {
    /// The key file as written, or its default inside the data directory.
    pub fn key_file(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.path.join("master.key"))
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One redb file in the data directory.
    #[default]
    Embedded,
    /// Accounts, second factors, care-team links, grants and shared keys in PostgreSQL, for
    /// several replicas (feature `postgres`).
    Postgres,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub url: UpstreamUrl,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// From the request sent to the upstream's response head.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: HumanDuration,
    /// Longest pause between two chunks of the upstream's response body.
    #[serde(default = "default_response_timeout")]
    pub body_idle_timeout: HumanDuration,
    /// PEM bundle of CAs that sign the upstream's certificate; the system roots otherwise.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Client certificate for mutual TLS to the upstream.
    #[serde(default)]
    pub client_cert: Option<ClientCert>,
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: HumanDuration,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_response_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_pool_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_pool_max_idle() -> usize {
    256
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `http://` or `https://` host, optional port, optional base path; nothing else.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct UpstreamUrl {
    pub uri: Uri,
    pub tls: bool,
}

impl TryFrom<String> for UpstreamUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let uri: Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "`{text}`: upstream URLs start with http:// or https://"
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{text}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{text}`: credentials in upstream URLs are not allowed"
            ));
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(format!(
                "`{text}`: an upstream URL has no query or fragment"
            ));
        }
        Ok(Self { uri, tls })
    }
}

impl UpstreamUrl {
    /// The base path without a trailing slash (`""` for the root).
    pub fn base_path(&self) -> &str {
        self.uri.path().trim_end_matches('/')
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Label in logs and metrics; the path pattern by default.
    #[serde(default)]
    pub name: Option<String>,
    /// Exact host name (no port), case-insensitive; any host when absent.
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    pub path: Spanned<PathPattern>,
    pub upstream: Spanned<String>,
    /// Who may pass: `session` (a logged-in person with a live session) or `none`. Always
    /// written out, so that a public route is never public by accident.
    pub auth: AuthMode,
    /// Step-up: the last second-factor proof must be younger than this, or the user proves it
    /// again and comes back to the same request.
    #[serde(default)]
    pub reauth_within: Option<HumanDuration>,
    /// Stricter session caps on this route (they can only shorten the global ones).
    #[serde(default)]
    pub session: RouteSession,
    /// What the upstream learns about the user; nothing unless asked for (least privilege).
    #[serde(default)]
    pub identity: Option<Spanned<RouteIdentity>>,
    /// Responses carry patient data: `Cache-Control: no-store` unless `cache_no_store` says otherwise.
    #[serde(default)]
    pub patient_data: bool,
    #[serde(default)]
    pub cache_no_store: Option<bool>,
    /// Let `Upgrade: websocket` through to the upstream.
    #[serde(default)]
    pub websocket: bool,
    #[serde(default)]
    pub rewrite: Option<Spanned<Rewrite>>,
    /// Extra headers set on every response of this route.
    #[serde(default)]
    pub response_headers: BTreeMap<String, Spanned<String>>,
    /// Overrides of the global `sanitize` rules for this route.
    #[serde(default)]
    pub sanitize: RouteSanitize,
    /// Overrides of the global `rate_limits` for this route.
    #[serde(default)]
    pub rate_limit: RouteRateLimit,
    /// The data category of `policy.categories` the route carries: every request is then
    /// decided by the access policy, for the patient `patient` names.
    #[serde(default)]
    pub data: Option<Spanned<String>>,
    /// Where the patient id is: `"{patient}"` (a parameter of `path`) or `{ query: name }`.
    #[serde(default)]
    pub patient: Option<Spanned<PatientSource>>,
    /// A FHIR server's base (`path` ends in `/**`): the gateway reads each FHIR request for its
    /// patient and categories (`policy.fhir`) and checks the answer before it leaves.
    #[serde(default)]
    pub fhir: Option<Spanned<bool>>,
}

/// Where a route's patient id is.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PatientSource {
    /// `"{name}"`: the `{name}` segment of the route's path pattern.
    Path(String),
    /// `{ query: name }`: the query parameter `name`.
    Query(QueryParameter),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParameter {
    pub query: String,
}

impl Route {
    /// The label of logs, metrics and rate limits: `name`, or the path pattern.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.path.value.to_string())
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
    Session,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSession {
    #[serde(default)]
    pub idle_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub absolute_timeout: Option<HumanDuration>,
}

/// A fact about the user that a route may pass upstream.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum IdentityField {
    /// The account id (128 random bits, hex): `X-Wardgate-User-Id`.
    Id,
    /// The user name: `X-Wardgate-User`.
    Name,
    /// The roles, comma-separated: `X-Wardgate-Roles`.
    Roles,
}

/// `identity:` of a route.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteIdentity {
    /// Plain headers, for upstreams on a trusted network.
    #[serde(default)]
    pub headers: Vec<IdentityField>,
    /// A signed JWT (`X-Wardgate-Assertion`, EdDSA) with `sub`, `aud` = the route name,
    /// `auth_time`, `sid`, plus these fields; absent: no assertion.
    #[serde(default)]
    pub assertion: Option<Vec<IdentityField>>,
}

/// Replace a leading literal part of the path before forwarding.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    pub prefix: String,
    pub to: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Invalid {
        file: String,
        line: u32,
        column: u32,
        key: String,
        message: String,
    },
    #[error("{file}: {detail}")]
    Syntax { file: String, detail: String },
    #[error("{file}: {message}")]
    Semantic { file: String, message: String },
}

impl ConfigError {
    fn at<T>(
        file: &Path,
        span: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            file: file.display().to_string(),
            line: span.referenced.line() as u32,
            column: span.referenced.column() as u32,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A loaded, validated config and the warnings it deserves.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file it came from.
    pub file: PathBuf,
    pub warnings: Vec<Warning>,
    /// Directory of the config file: relative paths in it are relative to this.
    pub base_dir: PathBuf,
}

impl Loaded {
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }
}

/// Reads and validates the config file; nothing is bound or written.
pub fn load(file: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.display().to_string(),
        source,
    })?;
    parse(file, &text)
}

/// Validates config text that came from `file` (named in errors).
pub fn parse(file: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let mut key = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            key = error.path().to_string();
            error.into_inner()
        })
    });
    let config: Config = parsed.map_err(|error| match error.location() {
        Some(location) => ConfigError::Invalid {
            file: file.display().to_string(),
            line: location.line() as u32,
            column: location.column() as u32,
            key: readable_key(&key),
            message: error_message(&error),
        },
        None => ConfigError::Syntax {
            file: file.display().to_string(),
            detail: error.to_string(),
        },
    })?;
    let warnings = validate(file, &config)?;
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Loaded {
        config,
        warnings,
        base_dir,
        file: file.to_path_buf(),
    })
}

/// The dotted key path, without the `.value` steps that location-tracking wrappers add.
fn readable_key(path: &str) -> String {
    let key = path.replace(".value[", "[").replace(".value.", ".");
    let key = key.strip_suffix(".value").unwrap_or(&key);
    if key.is_empty() || key == "." {
        "(document)".to_owned()
    } else {
        key.to_owned()
    }
}

/// serde-saphyr's first line, without its own `error: line L column C:` prefix (we print ours).
fn error_message(error: &serde_saphyr::Error) -> String {
    let rendered = error.to_string();
    let first = rendered.lines().next().unwrap_or_default().trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.split_once(": ") {
        Some((position, rest)) if position.starts_with("line ") => rest.to_owned(),
        _ => first.to_owned(),
    }
}

fn validate(file: &Path, config: &Config) -> Result<Vec<Warning>, ConfigError> {
    let mut warnings = Vec::new();
    if config.version.value != VERSION {
        return Err(ConfigError::at(
            file,
            &config.version,
            "version",
            format!(
                "unsupported config version {}; this build reads version {VERSION}",
                config.version.value
            ),
        ));
    }
    if config.tls.dev_self_signed {
        warnings.push(Warning(
            "tls.dev_self_signed is on: a self-signed certificate is generated when none exists. Never use this in production."
                .into(),
        ));
    }
    if config.store.dev_generate_key {
        warnings.push(Warning(format!(
            "store.dev_generate_key is on: a master key is generated in {} when missing, and secrets sealed under a lost key are lost. Never use this in production.",
            config.store.key_file().display()
        )));
    }
    validate_server(file, config)?;
    if let Err(error) = config.auth.lockout.policy() {
        return Err(ConfigError::Semantic {
            file: file.display().to_string(),
            message: error.to_string(),
        });
    }
    if let Some(webauthn) = &config.auth.webauthn
        && let Err(error) = webauthn.value.validate()
    {
        return Err(ConfigError::at(
            file,
            webauthn,
            format!("auth.webauthn.{}", error.key),
            error.message,
        ));
    }
    if let Err(message) = config.auth.mfa.check(config.auth.webauthn.is_some()) {
        return Err(ConfigError::Semantic {
            file: file.display().to_string(),
            message,
        });
    }
    match config.session.value.check() {
        Ok(more) => warnings.extend(more.into_iter().map(Warning)),
        Err(message) => return Err(ConfigError::at(file, &config.session, "session", message)),
    }
    for name in &config.forwarding.strip_headers {
        if HeaderName::try_from(name.value.as_str()).is_err() {
            return Err(ConfigError::at(
                file,
                name,
                "forwarding.strip_headers",
                format!("`{}` is not a header name", name.value),
            ));
        }
    }
    if let Some(admin) = &config.listen.admin
        && !admin.value.ip().is_loopback()
    {
        if !config.listen.admin_insecure_plaintext {
            return Err(ConfigError::at(
                file,
                admin,
                "listen.admin",
                format!(
                    "{} is not loopback, and the admin listener speaks plain HTTP: the admin token and the account API would cross the network in clear. Keep it on loopback (reach it through an SSH tunnel or a TLS proxy), or set listen.admin_insecure_plaintext: true",
                    admin.value
                ),
            ));
        }
        warnings.push(Warning(format!(
            "listen.admin is {} (not loopback) in plain HTTP (listen.admin_insecure_plaintext): health, metrics, the account API and the admin token cross the network unencrypted",
            admin.value
        )));
    }
    for net in &config.forwarding.trusted_proxies {
        if net.prefix_len() == 0 {
            warnings.push(Warning(format!(
                "forwarding.trusted_proxies contains {net}: every client can forge its address and request id"
            )));
        }
    }
    if let Some(demo) = &config.demo_backend {
        warnings.push(Warning(format!(
            "demo_backend is on at {}: a built-in DEMO patient API with synthetic data, for first tries only",
            demo.listen.value
        )));
        if !demo.listen.value.ip().is_loopback() {
            return Err(ConfigError::at(
                file,
                &demo.listen,
                "demo_backend.listen",
                "the demo backend listens on loopback only",
            ));
        }
    }
    for (name, upstream) in &config.upstreams {
        let upstream_span = upstream;
        let upstream = &upstream.value;
        if !upstream.url.tls {
            warnings.push(Warning(format!(
                "upstream `{name}` uses plain http://: traffic to it is not encrypted"
            )));
        }
        if !upstream.url.tls && (upstream.ca_bundle.is_some() || upstream.client_cert.is_some()) {
            return Err(ConfigError::at(
                file,
                upstream_span,
                format!("upstreams.{name}"),
                "ca_bundle and client_cert need an https:// url",
            ));
        }
    }
    validate_sanitize(file, config, &mut warnings)?;
    warnings.extend(config.rate_limits.warnings());
    validate_routes(file, config, &mut warnings)?;
    validate_policy(file, config, &mut warnings)?;
    validate_audit(file, config, &mut warnings)?;
    replicas::validate(file, config, &mut warnings)?;
    Ok(warnings)
}

/// The access policy, and every route's part in it.
fn validate_policy(
    file: &Path,
    config: &Config,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let policy = match &config.policy {
        Some(policy) => Some(policy.value.compile().map_err(|error| {
            ConfigError::at(file, policy, format!("policy.{}", error.key), error.message)
        })?),
        None => None,
    };
    if let Some(span) = &config.policy
        && let Some(alert) = span
            .value
            .break_glass
            .as_ref()
            .and_then(|b| b.alert.as_ref())
    {
        check_hook(file, config, span, "policy.break_glass.alert", alert)?;
    }
    for (index, route) in config.routes.value.iter().enumerate() {
        let key = |field: &str| format!("routes[{index}].{field}");
        if let Some(fhir) = route.fhir.as_ref().filter(|f| f.value) {
            let problem = if route.data.is_some() || route.patient.is_some() {
                Some((
                    "fhir",
                    "a FHIR route says its patient and categories itself: drop `data` and `patient`",
                ))
            } else if policy.as_ref().is_none_or(|p| p.fhir.is_none()) {
                Some((
                    "fhir",
                    "needs `policy.fhir`: the data category of each resource type",
                ))
            } else if route.auth != AuthMode::Session {
                Some((
                    "auth",
                    "a FHIR route needs `auth: session`: the policy decides for a person",
                ))
            } else if route.path.value.rest_index().is_none() {
                Some((
                    "path",
                    "a FHIR route's path is the server's base and ends in `/**`",
                ))
            } else {
                None
            };
            if let Some((field, message)) = problem {
                return Err(ConfigError::at(file, fhir, key(field), message));
            }
            continue;
        }
        let Some(data) = &route.data else {
            if let Some(patient) = &route.patient {
                return Err(ConfigError::at(
                    file,
                    patient,
                    key("patient"),
                    "a patient source needs `data`: the category the route carries",
                ));
            }
            if policy.is_some() && route.patient_data && route.auth == AuthMode::Session {
                return Err(ConfigError::at(
                    file,
                    &route.path,
                    key("data"),
                    "a route that carries patient data names its `data` category and `patient` under a policy",
                ));
            }
            continue;
        };
        let Some(policy) = &policy else {
            return Err(ConfigError::at(
                file,
                data,
                key("data"),
                "needs a `policy:` section that names the category",
            ));
        };
        if policy.category(&data.value).is_none() {
            return Err(ConfigError::at(
                file,
                data,
                key("data"),
                format!("`{}` is not one of policy.categories", data.value),
            ));
        }
        if route.auth != AuthMode::Session {
            return Err(ConfigError::at(
                file,
                data,
                key("auth"),
                "a route with `data` needs `auth: session`: the policy decides for a person",
            ));
        }
        let Some(patient) = &route.patient else {
            return Err(ConfigError::at(
                file,
                data,
                key("patient"),
                "a route with `data` names where the patient id is: `\"{patient}\"` or `{ query: patient }`",
            ));
        };
        let found = match &patient.value {
            PatientSource::Path(text) => text
                .strip_prefix('{')
                .and_then(|t| t.strip_suffix('}'))
                .and_then(|name| route.path.value.param_index(name))
                .is_some(),
            PatientSource::Query(parameter) => {
                !parameter.query.is_empty()
                    && parameter
                        .query
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            }
        };
        if !found {
            return Err(ConfigError::at(
                file,
                patient,
                key("patient"),
                format!(
                    "names no `{{parameter}}` of the path `{}` and no query parameter",
                    route.path.value
                ),
            ));
        }
    }
    if policy.is_none()
        && config
            .routes
            .value
            .iter()
            .any(|r| r.auth == AuthMode::Session)
    {
        warnings.push(Warning(
            "no `policy:` section: every logged-in person may reach every `auth: session` route, whatever patient it names"
                .into(),
        ));
    }
    Ok(())
}

fn validate_audit(
    file: &Path,
    config: &Config,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let Some(span) = &config.audit else {
        warnings.push(Warning(
            "no `audit:` section: decisions and security events are not kept in an audit trail"
                .into(),
        ));
        return Ok(());
    };
    let audit = &span.value;
    let problem = if audit.checkpoint_every == 0 {
        Some(("checkpoint_every", "at least 1"))
    } else if audit.checkpoint_interval.0.as_secs() == 0 {
        Some(("checkpoint_interval", "at least 1s"))
    } else if audit.segment_size.0 < 4096 {
        Some(("segment_size", "at least 4KiB"))
    } else if audit.retention.is_some_and(|r| r.0.as_secs() < 86_400) {
        Some(("retention", "at least 1d"))
    } else if [&audit.key_file, &audit.signing_key]
        .iter()
        .any(|key| key.starts_with(&audit.path))
    {
        Some((
            "key_file",
            "the keys live outside `audit.path`: a copy of the trail must not carry them",
        ))
    } else {
        None
    };
    if let Some((key, message)) = problem {
        return Err(ConfigError::at(file, span, format!("audit.{key}"), message));
    }
    if let Some(hook) = &audit.checkpoint_webhook {
        check_hook(file, config, span, "audit.checkpoint_webhook", hook)?;
    }
    if let Some(Err(message)) = audit
        .checkpoint_syslog
        .as_deref()
        .map(crate::audit::sink::Syslog::parse)
    {
        return Err(ConfigError::at(
            file,
            span,
            "audit.checkpoint_syslog",
            message,
        ));
    }
    if audit.dev_generate_key {
        warnings.push(Warning(
            "audit.dev_generate_key is on: a missing audit key is generated (development only)"
                .into(),
        ));
    }
    if audit.retention.is_some_and(|r| r.0.as_secs() < SIX_YEARS) {
        warnings.push(Warning(
            "audit.retention is shorter than six years (2190d), the retention HIPAA's documentation rules and most hospital policies ask for".into(),
        ));
    }
    Ok(())
}

fn validate_server(file: &Path, config: &Config) -> Result<(), ConfigError> {
    let server = &config.server.value;
    let problem = if let Some((key, _)) = [
        ("server.max_connections", server.max_connections),
        (
            "server.max_connections_per_address",
            server.max_connections_per_address,
        ),
        (
            "server.max_upstream_requests_per_client",
            server.max_upstream_requests_per_client,
        ),
        ("server.side_max_connections", server.side_max_connections),
    ]
    .into_iter()
    .find(|(_, n)| *n == 0)
    {
        Some((key, "must be at least 1".to_owned()))
    } else if server.max_header_size.0 < 8 * 1024 || server.max_header_size.0 > 1024 * 1024 {
        Some((
            "server.max_header_size",
            "must be between 8KiB and 1MiB".to_owned(),
        ))
    } else if server.max_headers == 0 {
        Some(("server.max_headers", "must be at least 1".to_owned()))
    } else if server.max_request_line.0 < 1024
        || server.max_request_line.0 > server.max_header_size.0
    {
        Some((
            "server.max_request_line",
            "must be between 1KiB and server.max_header_size".to_owned(),
        ))
    } else if server.h2_max_concurrent_streams == 0 {
        Some((
            "server.h2_max_concurrent_streams",
            "must be at least 1".to_owned(),
        ))
    } else {
        [
            ("server.tls_handshake_timeout", server.tls_handshake_timeout),
            ("server.header_read_timeout", server.header_read_timeout),
            (
                "server.h2_keep_alive_interval",
                server.h2_keep_alive_interval,
            ),
            ("server.body_idle_timeout", server.body_idle_timeout),
            ("server.send_timeout", server.send_timeout),
        ]
        .into_iter()
        .find(|(_, d)| d.0.is_zero())
        .map(|(key, _)| (key, "must be longer than zero".to_owned()))
    };
    match problem {
        Some((key, message)) => Err(ConfigError::at(file, &config.server, key, message)),
        None => Ok(()),
    }
}

fn validate_sanitize(
    file: &Path,
    config: &Config,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    let sanitize = &config.sanitize.value;
    if sanitize.server_names.is_empty() {
        warnings.push(Warning(
            "sanitize.server_names is empty: requests for any Host are accepted".into(),
        ));
    }
    if let Some(bad) = sanitize.server_names.iter().find(|n| !is_host_name(n)) {
        return Err(ConfigError::at(
            file,
            &config.sanitize,
            "sanitize.server_names",
            format!("`{bad}` is not a host name"),
        ));
    }
    if sanitize.allow_encoded_slash {
        warnings.push(Warning(
            "sanitize.allow_encoded_slash is on: %2F and %5C reach upstreams, which may decode them as separators".into(),
        ));
    }
    if sanitize.allow_underscores_in_headers {
        warnings.push(Warning(
            "sanitize.allow_underscores_in_headers is on: header names with `_` reach upstreams, and CGI, WSGI, Rack and PHP back ends read them as the same name with `-`".into(),
        ));
    }
    let methods = std::iter::once(&sanitize.methods).chain(
        config
            .routes
            .value
            .iter()
            .filter_map(|r| r.sanitize.methods.as_ref()),
    );
    for method in methods.flatten() {
        if method.0 == http::Method::TRACE || method.0 == http::Method::CONNECT {
            warnings.push(Warning(format!(
                "{} is allowed: it is refused by default",
                method.0
            )));
        }
    }
    let injections = std::iter::once((None, &sanitize.injection)).chain(
        config.routes.value.iter().filter_map(|r| {
            r.sanitize
                .injection
                .as_ref()
                .map(|i| (Some(&r.path.value), i))
        }),
    );
    for (route, injection) in injections {
        if injection.mode != InjectionMode::Block {
            let place = route.map_or("sanitize.injection".to_owned(), |p| format!("route `{p}`"));
            warnings.push(Warning(format!(
                "{place}: injection detection does not block (mode {:?})",
                injection.mode
            )));
        }
    }
    let json_limits = std::iter::once(&sanitize.json).chain(
        config
            .routes
            .value
            .iter()
            .filter_map(|r| r.sanitize.json.as_ref()),
    );
    if json_limits
        .into_iter()
        .any(|j| j.max_depth == 0 || j.max_size.0 == 0)
    {
        return Err(ConfigError::at(
            file,
            &config.sanitize,
            "sanitize.json",
            "max_depth and max_size must be above zero",
        ));
    }
    Ok(())
}

fn validate_routes(
    file: &Path,
    config: &Config,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfigError> {
    if config.routes.value.is_empty() {
        return Err(ConfigError::at(
            file,
            &config.routes,
            "routes",
            "at least one route is needed",
        ));
    }
    let mut shapes = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for (index, route) in config.routes.value.iter().enumerate() {
        let key = |field: &str| format!("routes[{index}].{field}");
        if !labels.insert(route.label()) {
            return Err(ConfigError::at(
                file,
                &route.path,
                key("name"),
                format!(
                    "another route is already labelled `{}`: give each route a unique `name`",
                    route.label()
                ),
            ));
        }
        if !config.upstreams.contains_key(&route.upstream.value) {
            return Err(ConfigError::at(
                file,
                &route.upstream,
                key("upstream"),
                format!(
                    "no upstream named `{}` under `upstreams`",
                    route.upstream.value
                ),
            ));
        }
        if let Some(host) = &route.host
            && !is_host_name(&host.value)
        {
            return Err(ConfigError::at(
                file,
                host,
                key("host"),
                format!("`{}` is not a host name", host.value),
            ));
        }
        let host = route.host.as_ref().map(|h| h.value.to_ascii_lowercase());
        if !shapes.insert((host, route.path.value.shape())) {
            return Err(ConfigError::at(
                file,
                &route.path,
                key("path"),
                format!(
                    "`{}` matches exactly what an earlier route matches",
                    route.path.value
                ),
            ));
        }
        if let Some(rewrite) = &route.rewrite {
            if !route.path.value.has_literal_prefix(&rewrite.value.prefix) {
                return Err(ConfigError::at(
                    file,
                    rewrite,
                    key("rewrite.prefix"),
                    format!(
                        "`{}` must be a literal, whole-segment prefix of the path pattern `{}`",
                        rewrite.value.prefix, route.path.value
                    ),
                ));
            }
            if !(rewrite.value.to.is_empty() || rewrite.value.to.starts_with('/'))
                || rewrite.value.to.ends_with('/')
            {
                return Err(ConfigError::at(
                    file,
                    rewrite,
                    key("rewrite.to"),
                    "must be empty or start with `/`, and not end with `/`",
                ));
            }
        }
        for (name, value) in &route.response_headers {
            if HeaderName::try_from(name.as_str()).is_err()
                || HeaderValue::try_from(value.value.as_str()).is_err()
            {
                return Err(ConfigError::at(
                    file,
                    value,
                    key(&format!("response_headers.{name}")),
                    "not a valid header name and value",
                ));
            }
        }
        if route.auth == AuthMode::None {
            let needs_session = if route.reauth_within.is_some() {
                Some("reauth_within")
            } else if route.session.idle_timeout.is_some()
                || route.session.absolute_timeout.is_some()
            {
                Some("session")
            } else if route.identity.is_some() {
                Some("identity")
            } else {
                None
            };
            if let Some(field) = needs_session {
                return Err(ConfigError::at(
                    file,
                    &route.path,
                    key(field),
                    "needs `auth: session`: a public route has no user",
                ));
            }
            warnings.push(Warning(format!(
                "route `{}` has `auth: none`: anyone who reaches the gateway can use it",
                route.path.value
            )));
        }
        if route.patient_data && route.cache_no_store == Some(false) {
            warnings.push(Warning(format!(
                "route `{}` carries patient data but `cache_no_store: false` lets clients keep copies",
                route.path.value
            )));
        }
    }
    Ok(())
}

/// A DNS name or IP literal as a route's `host` may name it (no port, no wildcard).
fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_store(store: &str) -> Result<Loaded, ConfigError> {
        let text = format!(
            "version: 1\nlisten: {{ https: \"127.0.0.1:0\" }}\ntls: {{ cert: c.crt, key: c.key }}\n\
             {store}upstreams:\n  b: {{ url: \"https://127.0.0.1:1\" }}\n\
             routes:\n  - {{ path: /**, upstream: b, auth: none }}\n"
        );
        parse(Path::new("gateway.yaml"), &text)
    }

    /// Every warning of `loaded`, a line each.
    fn warnings(loaded: &Loaded) -> String {
        loaded
            .warnings
            .iter()
            .map(|w| w.0.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn store_warnings(loaded: &Loaded) -> Vec<&Warning> {
        loaded
            .warnings
            .iter()
            .filter(|w| w.0.contains("store."))
            .collect()
    }

    #[test]
    fn the_store_section_has_safe_defaults() {
        let loaded = with_store("").unwrap();
        let store = &loaded.config.store;
        assert_eq!(store.kind, StoreKind::Embedded);
        assert_eq!(store.path, Path::new("data/"));
        assert_eq!(store.key_file(), Path::new("data/master.key"));
        assert!(!store.dev_generate_key);
        assert!(store_warnings(&loaded).is_empty());

        let loaded = with_store("store: { path: /var/lib/wardgate }\n").unwrap();
        assert_eq!(
            loaded.config.store.key_file(),
            Path::new("/var/lib/wardgate/master.key")
        );
        let loaded = with_store("store: { kind: embedded, key_file: /etc/wg.key }\n").unwrap();
        assert_eq!(loaded.config.store.key_file(), Path::new("/etc/wg.key"));
    }

    #[test]
    fn unknown_store_keys_and_kinds_are_refused() {
        let error = with_store("store: { path: data/, passphrase: x }\n").unwrap_err();
        assert!(error.to_string().contains("passphrase"), "{error}");
        let error = with_store("store: { kind: mysql }\n").unwrap_err();
        assert!(error.to_string().contains("store.kind"), "{error}");
    }

    #[test]
    fn a_postgres_store_is_refused_without_a_url_with_a_password_in_it_or_with_stray_keys() {
        let pg = |yaml: &str| with_store(&format!("store: {{ kind: postgres, {yaml} }}\n"));
        for (yaml, key, says) in [
            (
                "dev_generate_key: false",
                "store.url",
                "needs a postgres://",
            ),
            (
                "url: \"mysql://db/wg\"",
                "store.url",
                "postgres://user@host",
            ),
            (
                "url: \"postgres://wg:hunter2@db/wg\"",
                "store.url",
                "password_file",
            ),
            (
                "url: \"postgres://wg@db/wg?password=hunter2\"",
                "store.url",
                "password_env",
            ),
            (
                "url: \"postgres://wg@db/wg\", password_file: p, password_env: P",
                "store.password_file",
                "not both",
            ),
            (
                "url: \"postgres://wg@db/wg\", ca_file: ca.pem",
                "store.ca_file",
                "sslmode",
            ),
        ] {
            let error = pg(yaml).unwrap_err().to_string();
            assert!(
                error.contains(key) && error.contains(says),
                "{yaml}: {error}"
            );
            assert!(!error.contains("hunter2"), "{error}");
        }
        let stray = with_store("store: { url: \"postgres://wg@db/wg\" }\n").unwrap_err();
        assert!(
            stray
                .to_string()
                .contains("store.url: is for `kind: postgres`"),
            "{stray}"
        );
    }

    #[test]
    fn one_shared_half_without_the_other_is_one_replica_and_check_config_says_so() {
        let says = |yaml: &str| warnings(&with_store(yaml).unwrap());
        let pg = "store: { kind: postgres, url: \"postgres://wg@db/wg?sslmode=verify-full\" }\n";
        assert!(says(pg).contains("run one replica only"), "{}", says(pg));
        let redis = "shared_state: { kind: redis, url: \"redis://127.0.0.1:6379\" }\n";
        assert!(says(redis).contains("still one replica"), "{}", says(redis));
        let both = says(&format!("{pg}{redis}"));
        assert!(!both.contains("one replica"), "{both}");
        let clear = says("store: { kind: postgres, url: \"postgres://wg@db.internal/wg\" }\n");
        assert!(clear.contains("without TLS"), "{clear}");
    }

    #[test]
    fn an_audit_database_of_its_own_is_checked_as_the_store_is_and_warned_without_copies() {
        let store = "store: { kind: postgres, url: \"postgres://wg@db/wg?sslmode=verify-full\" }\n";
        let audit = |postgres: &str, more: &str| {
            with_store(&format!(
                "{store}audit: {{ postgres: {{ {postgres} }}{more} }}\n"
            ))
        };
        for (postgres, key, says) in [
            (
                "url: \"postgres://wg@db/wg?sslmode=verify-full\"",
                "audit.postgres.url",
                "database of its own",
            ),
            (
                "url: \"postgres://wg:hunter2@db/audit\"",
                "audit.postgres.url",
                "password_file",
            ),
            (
                "url: \"redis://db/audit\"",
                "audit.postgres.url",
                "postgres://user@host",
            ),
            (
                "url: \"postgres://wg@db/audit\", ca_file: ca.pem",
                "audit.postgres.ca_file",
                "sslmode",
            ),
            (
                "url: \"postgres://wg@db/audit\", password_file: p, password_env: P",
                "audit.postgres.password_file",
                "not both",
            ),
        ] {
            let error = audit(postgres, "").unwrap_err().to_string();
            assert!(
                error.contains(key) && error.contains(says),
                "{postgres}: {error}"
            );
            assert!(!error.contains("hunter2"), "{error}");
        }
        let says = |loaded: Loaded| warnings(&loaded);
        let url = "url: \"postgres://wg@audit.internal/audit\"";
        let alone = says(audit(url, "").unwrap());
        assert!(
            alone.contains("rewrite the records and their checkpoints together"),
            "{alone}"
        );
        assert!(
            alone.contains("audit.postgres.url to audit.internal"),
            "{alone}"
        );
        let copied = says(audit(url, ", checkpoint_copies: [/mnt/other/cp.jsonl]").unwrap());
        assert!(!copied.contains("rewrite the records"), "{copied}");
        let redis = "shared_state: { kind: redis, url: \"redis://127.0.0.1:6379\" }\n";
        let files = says(with_store(&format!("{store}{redis}audit: {{}}\n")).unwrap());
        assert!(
            files.contains("each replica keeps its own trail"),
            "{files}"
        );
        let shared = says(
            with_store(&format!(
                "{store}{redis}audit: {{ postgres: {{ {url} }}, checkpoint_copies: [cp.jsonl] }}\n"
            ))
            .unwrap(),
        );
        assert!(!shared.contains("its own trail"), "{shared}");
    }

    #[test]
    fn shared_state_is_refused_with_a_password_in_the_url_or_a_bad_url_or_prefix() {
        let shared = |yaml: &str| with_store(&format!("shared_state: {{ kind: redis, {yaml} }}\n"));
        for (yaml, key, says) in [
            (
                "url: \"redis://:hunter2@cache:6379\"",
                "shared_state.url",
                "password_file",
            ),
            (
                "url: \"http://cache:6379\"",
                "shared_state.url",
                "rediss://",
            ),
            ("url: \"redis://\"", "shared_state.url", "redis://host"),
            (
                "url: \"redis://cache\", ca_file: ca.pem",
                "shared_state.ca_file",
                "rediss://",
            ),
            (
                "url: \"rediss://cache\", password_file: p, password_env: P",
                "shared_state.password_file",
                "not both",
            ),
            (
                "url: \"rediss://cache\", prefix: \"a:b\"",
                "shared_state.prefix",
                "`:`",
            ),
            (
                "url: \"rediss://cache\", prefix: \"\"",
                "shared_state.prefix",
                "non-empty",
            ),
        ] {
            let error = shared(yaml).unwrap_err().to_string();
            assert!(
                error.contains(key) && error.contains(says),
                "{yaml}: {error}"
            );
            assert!(!error.contains("hunter2"), "{error}");
        }
        let error = shared("url: \"rediss://cache\", db: 1").unwrap_err();
        assert!(error.to_string().contains("db"), "{error}");
    }

    #[test]
    fn shared_state_in_clear_or_without_a_password_is_warned_about() {
        let warned = |yaml: &str| {
            let loaded = with_store(&format!("shared_state: {{ kind: redis, {yaml} }}\n")).unwrap();
            loaded
                .warnings
                .iter()
                .filter(|w| w.0.starts_with("shared_state") && !w.0.contains("one replica"))
                .map(|w| w.0.clone())
                .collect::<Vec<_>>()
        };
        let both = warned("url: \"redis://cache.internal:6379\"");
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both[0].contains("in clear") && both[1].contains("no password_file"));
        assert!(warned("url: \"rediss://cache.internal\", password_env: RP").is_empty());
        assert!(
            warned("url: \"redis://127.0.0.1:6379/0\"").is_empty(),
            "loopback"
        );
        let loaded = with_store("shared_state: { kind: redis, url: \"rediss://c\" }\n").unwrap();
        assert_eq!(loaded.config.shared_state.unwrap().value.prefix, "wardgate");
    }

    #[test]
    fn generating_a_key_is_warned_about() {
        let loaded = with_store("store: { dev_generate_key: true }\n").unwrap();
        let warnings = store_warnings(&loaded);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].0.contains("data/master.key"), "{}", warnings[0]);
    }
}
