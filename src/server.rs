//! Listeners, connections and shutdown (phase 1, "accept").
//!
//! Threats: connection floods, slowloris (a head sent a byte at a time), handshake stalls,
//! oversized heads, HTTP/1.1 request smuggling, HTTP/2 stream floods. Rules: a hard connection
//! limit (excess connections wait in the kernel backlog), a TLS handshake deadline, a deadline
//! for the complete request head (which is also the HTTP/1.1 keep-alive idle limit), the strict
//! HTTP/1.x framing guard between TLS and hyper ([`crate::sanitize::framing`], `WG-FRAME-…`),
//! header size and count limits (431, also kept in hyper as a second line), HTTP/2 stream
//! limits and pings. On SIGTERM/SIGINT the gateway stops accepting, lets in-flight
//! requests finish until `server.shutdown_grace`, and exits 0.
//!
//! Start-up order: everything that can fail (config, certificates, upstream TLS material) is
//! checked before the first port is bound, and every port is bound before anything is served.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::assertion::AssertionKey;
use crate::audit::backend::Backend;
use crate::audit::sink::{AuditSink, CheckpointSinks, Webhook};
use crate::audit::trail::Trail;
use crate::body::ResponseBody;
use crate::clock::Clock;
use crate::config::{Loaded, Server as Limits};
use crate::demo;
use crate::hardening;
use crate::identity::{EmbeddedStore, KeyError, KeyOrigin, Keyring, MASTER_KEY_ENV, StoreError};
use crate::per_address::PerAddress;
use crate::pipeline::Gateway;
use crate::proxy::Peer;
use crate::refusal::Refusal;
use crate::sanitize::framing::{FramingLimits, GuardedIo, TunnelSwitch};
use crate::settings::{AuditFiles, StoreFiles};
use crate::store::Stores;
use crate::store::keys::{AdminToken, DataDirKeys, SharedKeys};
use crate::telemetry::Telemetry;
use crate::tls::{self, TlsError};

use crate::deadlines::{ConnectionWatch, Expiry, SendDeadline};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("master key: {0}")]
    Key(#[from] KeyError),
    #[error("identity store: {0}")]
    Store(#[from] StoreError),
    #[error("shared_state: {0}")]
    SharedState(String),
    #[error("cannot start the password hashing threads: {0}")]
    HashPool(std::io::Error),
    #[error("audit trail: {0}")]
    Audit(#[from] crate::audit::trail::TrailError),
    #[error(
        "audit trail: it holds {records} records but the checkpoint signing key {key} is missing: a new key could not verify their checkpoints; restore the key (every replica needs the same file)"
    )]
    AuditKeyMissing { records: u64, key: String },
    #[error("cannot start the audit writer: {0}")]
    AuditThread(std::io::Error),
    #[error("identity assertion key: {0}")]
    AssertionKey(#[from] crate::assertion::AssertionKeyError),
    #[error("admin token: {0}")]
    AdminToken(#[from] crate::store::keys::AdminTokenError),
    #[error(
        "the open-file limit (RLIMIT_NOFILE) allows {allowed} descriptors, and these server \
         limits need {needed} (a client and an upstream connection for each of \
         server.max_connections, the side listeners' connections, a reserve): raise the limit \
         (ulimit -n, LimitNOFILE= in a systemd unit) or lower server.max_connections"
    )]
    FileLimit { needed: u64, allowed: u64 },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
}

/// A gateway with every port bound, not yet serving.
pub struct Bound {
    /// Held for the gateway's lifetime: the store's file lock keeps a second process (a stray
    /// `wardgate keys rotate`) from writing under the running gateway.
    stores: Stores,
    admin_token: Option<AdminToken>,
    enrollment_ttl: Duration,
    https: TcpListener,
    redirect: Option<TcpListener>,
    admin: Option<TcpListener>,
    demo: Option<TcpListener>,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    limits: Limits,
    https_port: u16,
    /// `sanitize.server_names`, lower case: the only hosts the redirect listener names.
    server_names: Vec<String>,
    clock: Clock,
    /// The security-event channel, shared by the gateway's login and the admin API.
    events: crate::auth::events::SecurityEvents,
    /// The config file and the SHA-256 of what was loaded from it, for the audit trail.
    config: (String, String),
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, what, source })
}

fn adopt(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    what: &'static str,
) -> Result<TcpListener, StartError> {
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|source| StartError::Bind { addr, what, source })
}

impl Bound {
    /// Prepares TLS and upstream clients, then binds every listener.
    pub async fn bind(loaded: &Loaded) -> Result<Self, StartError> {
        Self::bind_with_clock(loaded, crate::clock::system()).await
    }

    /// [`Bound::bind`] with the clock the gateway reads at its edges.
    pub async fn bind_with_clock(loaded: &Loaded, clock: Clock) -> Result<Self, StartError> {
        Self::bind_all(loaded, clock, None).await
    }

    /// [`Bound::bind_with_clock`], serving HTTPS on `https`, a listener its owner bound
    /// beforehand (to name its port in the config before the gateway starts, as a WebAuthn
    /// origin does), instead of binding `listen.https`. The port never changes hands.
    pub async fn bind_on(
        loaded: &Loaded,
        clock: Clock,
        https: std::net::TcpListener,
    ) -> Result<Self, StartError> {
        Self::bind_all(loaded, clock, Some(https)).await
    }

    async fn bind_all(
        loaded: &Loaded,
        clock: Clock,
        https: Option<std::net::TcpListener>,
    ) -> Result<Self, StartError> {
        // Every setting that can be wrong, before anything is written or bound.
        let settings = crate::settings::compile(loaded)?;
        let config = (
            loaded.file.display().to_string(),
            std::fs::read(&loaded.file)
                .map(|text| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text)))
                .unwrap_or_default(),
        );
        let (cert, key) = (&settings.tls.cert, &settings.tls.key);
        if tls::would_generate(cert, key, settings.tls.dev_self_signed) {
            tls::generate_dev_certificate(cert, key)?;
            tracing::warn!(
                cert = %cert.display(),
                "GENERATED A SELF-SIGNED DEVELOPMENT CERTIFICATE (tls.dev_self_signed). Browsers will warn; never use this in production."
            );
        }
        let acceptor = TlsAcceptor::from(tls::server_config(cert, key, settings.tls.min_version)?);
        raise_file_limit(&settings.server)?;
        let (stores, keyring) = open_identity_store(&settings.store, &loaded.file)?;
        // Key material every replica shares, read through the store layer.
        let keys: Arc<dyn SharedKeys> = Arc::new(DataDirKeys::new(settings.store.dir.clone()));
        // Without a feature, `config::load` refused the section that needs it.
        #[cfg(feature = "postgres")]
        let (stores, keys) = match &settings.store.postgres {
            Some(postgres) => in_postgres(stores, postgres, &keyring).await?,
            None => (stores, keys),
        };
        #[cfg(feature = "redis")]
        let stores = match &settings.shared_state {
            Some(shared) => share_state(stores, shared, &keyring)?,
            None => stores,
        };
        let admin_token = match &settings.listen.admin {
            Some(_) => Some(keys.admin_token().await?),
            None => None,
        };
        let (assertion, created) = keys.assertion_key().await?;
        if created {
            tracing::warn!(
                kid = assertion.kid(),
                "created a new identity assertion key: upstreams that verify assertions need the new JWKS ({})",
                crate::own_api::paths::JWKS
            );
        }
        let telemetry = Telemetry::new(settings.log_requests);
        let (limits, enrollment_ttl) = (settings.server.clone(), settings.enrollment_ttl);
        let server_names = settings.head.server_names.clone();
        let listen = settings.listen;
        let events = crate::auth::events::SecurityEvents::new();
        let identity = crate::pipeline::Identity {
            stores: stores.clone(),
            keyring,
            assertion,
            events: events.clone(),
            audit: match &settings.audit {
                Some(files) => Some(Arc::new(
                    open_audit_trail(files, &clock, telemetry.audit_gauges()).await?,
                )),
                None => None,
            },
        };
        let gateway = Arc::new(
            Gateway::new(settings, telemetry, identity, clock.clone())
                .map_err(StartError::HashPool)?,
        );

        let https = match https {
            Some(listener) => adopt(listener, listen.https, "listen.https")?,
            None => bind(listen.https, "listen.https").await?,
        };
        let redirect = match listen.http_redirect {
            Some(addr) => Some(bind(addr, "listen.http_redirect").await?),
            None => None,
        };
        let admin = match listen.admin {
            Some(addr) => Some(bind(addr, "listen.admin").await?),
            None => None,
        };
        let demo = match listen.demo {
            Some(addr) => Some(bind(addr, "demo_backend.listen").await?),
            None => None,
        };
        let https_port = https.local_addr().map_or(listen.https.port(), |a| a.port());
        Ok(Self {
            stores,
            admin_token,
            enrollment_ttl,
            https,
            redirect,
            admin,
            demo,
            acceptor,
            gateway,
            limits,
            https_port,
            server_names,
            clock,
            events,
            config,
        })
    }

    /// The security-event channel, for a subscriber that must see every event from the start.
    pub fn security_events(&self) -> crate::auth::events::SecurityEvents {
        self.events.clone()
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.local_addr().ok()
    }

    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains in-flight requests for at most
    /// `server.shutdown_grace`.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let ready = Arc::new(AtomicBool::new(true));
        // Subscribed before anything can happen: the trail sees every security event.
        let security = self
            .gateway
            .audit()
            .map(|sink| (sink.clone(), self.events.subscribe()));
        let telemetry = self.gateway.telemetry().clone();
        let side = SideListener {
            max_connections: self.limits.side_max_connections,
            head_timeout: self.limits.header_read_timeout.0,
        };
        let mut side_tasks = tokio::task::JoinSet::new();
        if let (Some(listener), Some(token)) = (self.admin, self.admin_token) {
            let admin = Admin {
                telemetry: telemetry.clone(),
                ready: ready.clone(),
                stores: self.stores.clone(),
                sessions: self.gateway.sessions().clone(),
                token,
                enrollment_ttl: self.enrollment_ttl,
                clock: self.clock.clone(),
                events: self.events,
                access: self.gateway.access().cloned(),
                audit: self.gateway.audit().cloned(),
            };
            let admin = Arc::new(admin);
            side_tasks.spawn(serve_http1(listener, side, move |request| {
                let admin = admin.clone();
                async move { admin.answer(request).await }
            }));
        }
        if let Some(listener) = self.demo {
            side_tasks.spawn(serve_http1(listener, side, |request| {
                std::future::ready(demo::answer(&request))
            }));
        }
        if let Some(listener) = self.redirect {
            // Plain HTTP only moves people who typed `http://` onto TLS: nothing is proxied.
            let https_port = self.https_port;
            let names = Arc::new(self.server_names);
            side_tasks.spawn(serve_http1(listener, side, move |request| {
                std::future::ready(redirect_to_https(&request, https_port, &names))
            }));
        }
        side_tasks.spawn(drain_histograms(telemetry.clone()));
        if let Some((sink, events)) = security {
            let mut started = lifecycle("gateway_started", (self.clock)());
            if let Some(fields) = &mut started.fields {
                fields["config"] = self.config.0.clone().into();
                fields["config_sha256"] = self.config.1.clone().into();
            }
            sink.record(&started);
            let clock = self.clock.clone();
            side_tasks.spawn(crate::audit::sink::keep_security_events(
                sink, events, clock,
            ));
        }
        // Sessions ended on another replica leave this one's cache.
        let sessions = self.gateway.sessions().clone();
        side_tasks.spawn(async move { sessions.follow_revocations().await });
        side_tasks.spawn(self.stores.reachable.clone().watch());
        side_tasks.spawn(crate::upkeep::run(
            self.gateway.clone(),
            self.clock.clone(),
            crate::upkeep::EVERY,
        ));

        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(self.limits.max_connections));
        let builders = Arc::new(Builders {
            h1: h1_builder(&self.limits),
            h2: h2_builder(&self.limits),
        });
        let framing = framing_limits(&self.limits);
        let (phase, phases) = watch::channel(Phase::Serving);
        tokio::pin!(shutdown);
        let per_address = PerAddress::new(self.limits.max_connections_per_address);
        let deadlines = Deadlines {
            handshake: self.limits.tls_handshake_timeout.0,
            idle: self.limits.header_read_timeout.0,
            send: self.limits.send_timeout.0,
        };
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = connections.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let (tcp, addr) = tokio::select! {
                () = &mut shutdown => break,
                accepted = accept(&self.https, "listen.https") => accepted,
            };
            let peer = self.gateway.peer(addr);
            // Behind a load balancer every client shares its address: trusted proxies are
            // not counted.
            let slot = match peer.trusted {
                true => None,
                false => match per_address.try_take(addr.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        telemetry.connection_ended("per_address_limit");
                        continue;
                    }
                },
            };
            let watcher = graceful.watcher();
            let connection = Connection {
                acceptor: self.acceptor.clone(),
                gateway: self.gateway.clone(),
                builders: builders.clone(),
                deadlines,
                framing,
                phase: phases.clone(),
            };
            tokio::spawn(async move {
                connection.serve(tcp, peer, watcher).await;
                drop((permit, slot));
            });
        }
        ready.store(false, Ordering::SeqCst);
        phase.send_replace(Phase::Draining);
        drop(self.https);
        tracing::info!(
            grace_ms = self.limits.shutdown_grace.0.as_millis() as u64,
            "shutting down: draining in-flight requests"
        );
        if tokio::time::timeout(self.limits.shutdown_grace.0, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over: closing the remaining connections");
        }
        // Whatever still runs is cut now, also when the gateway lives on in a larger process
        // (dropping `phase` on return would do the same: a closed channel ends the wait too).
        phase.send_replace(Phase::Closing);
        side_tasks.shutdown().await;
        // The trail's last word, on disk: everything queued before it is too.
        if let Some(sink) = self.gateway.audit() {
            let stopped = lifecycle("gateway_stopped", (self.clock)());
            if sink.durable(&stopped).await.is_err() {
                tracing::error!(target: "wardgate::audit", "the audit trail could not record the stop: records queued since the last group may be lost");
            }
        }
    }
}

/// A record of the gateway starting or stopping (`event`), with its version.
fn lifecycle(event: &str, now: u64) -> crate::audit::AuditRecord {
    crate::audit::AuditRecord {
        kind: "security".into(),
        time: now,
        event: Some(event.into()),
        fields: Some(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })),
        ..crate::audit::AuditRecord::default()
    }
}

/// The stores and the keyring that seals them.
type OpenedStore = (Stores, Arc<Keyring>);

/// Loads the master key (generating it in development mode, loudly) and opens the identity
/// store: a missing key or an unreadable store stops the start before any port is bound.
fn open_identity_store(store: &StoreFiles, config_file: &Path) -> Result<OpenedStore, StartError> {
    let from_env = std::env::var(MASTER_KEY_ENV).ok();
    let keyring = Arc::new(load_keyring(
        &store.key_file,
        from_env.as_deref(),
        store.dev_generate_key,
        "MASTER KEY (store.dev_generate_key). Back it up: without it the sealed secrets in the identity store cannot be read",
    )?);
    let identity = Arc::new(EmbeddedStore::open(&store.dir, keyring.clone())?);
    if store.postgres.is_none() && identity.users()?.is_empty() {
        tracing::warn!(
            "no accounts yet: create the first with `wardgate user add <name> --role <role> --config {}`",
            config_file.display()
        );
    }
    Ok((Stores::embedded(identity), keyring))
}

#[cfg(feature = "redis")]
/// Sessions and ceremonies in the shared state (Redis), so that every replica sees them; the
/// connection is made by the first call, so a Redis that is down now is a gateway that is not
/// ready yet, and says so, rather than one that does not start.
fn share_state(
    mut stores: Stores,
    shared: &crate::settings::SharedStateSettings,
    keyring: &Arc<Keyring>,
) -> Result<Stores, StartError> {
    let password = read_password(&shared.password)?;
    let ca = match &shared.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|error| {
            StartError::SharedState(format!("ca_file {}: {error}", path.display()))
        })?),
        None => None,
    };
    let redis = crate::store::redis::Redis::connect(
        &shared.url,
        password.as_deref().map(String::as_str),
        ca,
        &shared.prefix,
        keyring.clone(),
    )
    .map_err(|error| StartError::SharedState(error.to_string()))?;
    let redis = Arc::new(redis);
    stores.sessions = redis.clone();
    stores.ephemeral = redis.clone();
    stores.counters = crate::store::counters::Counters::Redis((*redis).clone());
    stores.reachable = Arc::new(stores.reachable.and(redis));
    Ok(stores)
}

#[cfg(feature = "postgres")]
/// Accounts, second factors, relations and the shared keys in PostgreSQL, its schema brought
/// up to date first: a database that cannot be reached now, or whose schema is newer than this
/// binary, stops the start with the cause.
async fn in_postgres(
    mut stores: Stores,
    postgres: &crate::settings::PostgresSettings,
    keyring: &Arc<Keyring>,
) -> Result<(Stores, Arc<dyn SharedKeys>), StartError> {
    let database = Arc::new(connect_postgres(postgres, keyring.clone()).await?);
    stores.accounts = database.clone();
    stores.credentials = database.clone();
    // No decision cache in front: another replica's write (an ended link, a revoked grant)
    // would not reach it. Each patient request asks the database.
    stores.relations = database.clone();
    stores.reachable = Arc::new(stores.reachable.and(database.clone()));
    Ok((stores, database))
}

#[cfg(feature = "postgres")]
/// The database of `postgres`, its schema brought up to date.
async fn connect_postgres(
    postgres: &crate::settings::PostgresSettings,
    keyring: Arc<Keyring>,
) -> Result<crate::store::postgres::Postgres, StartError> {
    let options = postgres_options(postgres)?;
    crate::store::postgres::Postgres::connect(&postgres.url, options, keyring)
        .await
        .map_err(postgres_failed)
}

#[cfg(feature = "postgres")]
fn postgres_options(
    postgres: &crate::settings::PostgresSettings,
) -> Result<crate::store::postgres::Options, StartError> {
    Ok(crate::store::postgres::Options {
        password: read_password(&postgres.password)?,
        ca_file: postgres.ca_file.clone(),
        timeouts: crate::store::postgres::Timeouts::default(),
    })
}

#[cfg(feature = "postgres")]
fn postgres_failed(error: StoreError) -> StartError {
    StartError::SharedState(format!("store (postgresql): {error}"))
}

#[cfg(feature = "postgres")]
/// The audit trail that the replicas of `loaded` append to in PostgreSQL (`audit.postgres`),
/// read whole, for `wardgate audit`: the schema is left as it is.
pub async fn audit_in_postgres(loaded: &Loaded) -> Result<crate::audit::trail::Stored, StartError> {
    let settings = crate::settings::compile(loaded)?;
    let postgres = settings
        .audit
        .and_then(|audit| audit.postgres)
        .ok_or_else(|| StartError::SharedState("the config has no audit.postgres".into()))?;
    let options = postgres_options(&postgres)?;
    let reader = crate::audit::postgres::reader(&postgres.url, options)?;
    Ok(reader.stored().await?)
}

#[cfg(feature = "postgres")]
/// `wardgate keys reseal`: every secret in the PostgreSQL store of `loaded` sealed again under
/// the key file's current key; how many were. The schema is left as it is.
pub async fn reseal_shared(loaded: &Loaded) -> Result<usize, StartError> {
    let (_, postgres, keyring) = for_postgres(loaded)?;
    let options = postgres_options(&postgres)?;
    let database = crate::store::postgres::Postgres::open(&postgres.url, options, keyring)
        .map_err(postgres_failed)?;
    database.reseal_all().await.map_err(postgres_failed)
}

#[cfg(feature = "postgres")]
/// The admin token that the replicas of `loaded` share in PostgreSQL, for `wardgate user`:
/// read with the identity keyring, as a replica reads it, the schema left as it is.
pub async fn shared_admin_token(loaded: &Loaded) -> Result<AdminToken, StartError> {
    let (_, postgres, keyring) = for_postgres(loaded)?;
    let options = postgres_options(&postgres)?;
    let database = crate::store::postgres::Postgres::open(&postgres.url, options, keyring)
        .map_err(postgres_failed)?;
    Ok(database.admin_token().await?)
}

#[cfg(feature = "postgres")]
/// `wardgate migrate`: the embedded store of `loaded` (its `store.path`) copied into the
/// PostgreSQL database its `store.url` names. The gateway must be stopped: the embedded store
/// is refused while another process holds it.
pub async fn migrate(
    loaded: &Loaded,
) -> Result<crate::store::migrate::Copied, crate::store::migrate::MigrateError> {
    let failed = |error: StartError| StoreError::Storage(error.to_string());
    let (settings, postgres, keyring) = for_postgres(loaded).map_err(failed)?;
    let embedded = EmbeddedStore::open(&settings.store.dir, keyring.clone())?;
    let from = Stores::embedded(Arc::new(embedded));
    let to = connect_postgres(&postgres, keyring).await.map_err(failed)?;
    crate::store::migrate::embedded_to_postgres(&from, &settings.store.dir, &to, settings.totp)
        .await
}

#[cfg(feature = "postgres")]
/// The settings of a config whose store is in PostgreSQL, that store's, and the identity
/// keyring (never generated here: the replicas' key file must exist).
fn for_postgres(
    loaded: &Loaded,
) -> Result<
    (
        crate::settings::Settings,
        crate::settings::PostgresSettings,
        Arc<Keyring>,
    ),
    StartError,
> {
    let mut settings = crate::settings::compile(loaded)?;
    let postgres = settings.store.postgres.take().ok_or_else(|| {
        StartError::SharedState(
            "the config keeps its store in files, not in PostgreSQL (store.kind: postgres)".into(),
        )
    })?;
    let from_env = std::env::var(MASTER_KEY_ENV).ok();
    let (keyring, _) = Keyring::load(
        &settings.store.key_file,
        from_env.as_deref(),
        false,
        &mut rand::rng(),
    )?;
    Ok((settings, postgres, Arc::new(keyring)))
}

#[cfg(any(feature = "redis", feature = "postgres"))]
/// A store's password, from its file (mode 0600) or an environment variable; never logged.
fn read_password(
    from: &crate::settings::SecretFrom,
) -> Result<Option<zeroize::Zeroizing<String>>, StartError> {
    use crate::settings::SecretFrom;
    let text = match from {
        SecretFrom::Nowhere => return Ok(None),
        SecretFrom::File(path) => crate::secret_file::read(path, 4096).map_err(|error| {
            StartError::SharedState(format!("password_file {}: {error}", path.display()))
        })?,
        SecretFrom::Env(name) => std::env::var(name)
            .map_err(|_| StartError::SharedState(format!("password_env: ${name} is not set")))?,
    };
    let password = zeroize::Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
    Ok(Some(password))
}

/// Loads a keyring (from `env_value`, else the file); one generated in development mode is
/// announced loudly with `what`.
fn load_keyring(
    file: &Path,
    env_value: Option<&str>,
    dev_generate: bool,
    what: &str,
) -> Result<Keyring, KeyError> {
    let (keyring, origin) = Keyring::load(file, env_value, dev_generate, &mut rand::rng())?;
    if let KeyOrigin::Generated(path) = &origin {
        tracing::warn!(
            key_file = %path.display(),
            "GENERATED A NEW {what}. Never use this in production."
        );
    }
    Ok(keyring)
}

/// Loads the audit keys (generating the sealing key in development mode, loudly), opens the
/// trail (its files, or its PostgreSQL database) and starts its writer: a trail that cannot be
/// opened, or whose chain is broken, stops the start before any port is bound.
async fn open_audit_trail(
    files: &AuditFiles,
    clock: &Clock,
    gauges: crate::audit::sink::Gauges,
) -> Result<AuditSink, StartError> {
    let keyring = load_keyring(
        &files.key_file,
        None,
        files.dev_generate_key,
        "AUDIT KEY (audit.dev_generate_key). Back it up: without it the audit records cannot be read",
    )?;
    let (signer, created) = AssertionKey::load_or_create(&files.signing_key)?;
    let kid = signer.kid().to_owned();
    let keyring = Arc::new(keyring);
    let (trail, records) = match &files.postgres {
        #[cfg(feature = "postgres")]
        Some(postgres) => {
            let options = postgres_options(postgres)?;
            let (trail, records) = crate::audit::postgres::PgTrail::open(
                &postgres.url,
                options,
                keyring,
                signer,
                files.rules,
                files.copies.clone(),
                clock(),
            )
            .await?;
            tracing::info!(target: "wardgate::audit", records, "the audit trail is in PostgreSQL");
            (Backend::Postgres(trail), records)
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => {
            return Err(StartError::SharedState(
                "audit.postgres: this wardgate was built without the `postgres` feature".into(),
            ));
        }
        None => {
            let (trail, opened) = Trail::open(
                &files.dir,
                keyring,
                signer,
                files.rules,
                files.copies.clone(),
                clock(),
            )?;
            if opened.torn_bytes > 0 {
                tracing::warn!(
                    target: "wardgate::audit",
                    bytes = opened.torn_bytes,
                    "the audit trail ended in a half-written record (a crash): it was cut off; no request waited on it"
                );
            }
            (Backend::Files(trail), opened.records)
        }
    };
    if created && records > 0 {
        // The key was made just now, by this start: nothing was signed with it.
        let _ = std::fs::remove_file(&files.signing_key);
        return Err(StartError::AuditKeyMissing {
            records,
            key: files.signing_key.display().to_string(),
        });
    }
    if created {
        tracing::warn!(key = %files.signing_key.display(), kid, "created a new audit checkpoint signing key");
    }
    let webhook = files
        .webhook
        .clone()
        .zip(tokio::runtime::Handle::try_current().ok())
        .map(|(hook, runtime)| {
            let post = move |checkpoint: &serde_json::Value| {
                hook.post("audit_checkpoint", checkpoint, &runtime);
            };
            Arc::new(post) as Webhook
        });
    let sinks = CheckpointSinks {
        webhook,
        syslog: files.syslog.clone(),
    };
    AuditSink::start(trail, clock.clone(), sinks, gauges).map_err(StartError::AuditThread)
}

/// HTTP/1.x straight from hyper, not through `auto`: `auto` first reads the client's opening
/// bytes to sniff for HTTP/2, outside hyper's header-read deadline, and the framing guard holds
/// those bytes back until the head is complete, so a slowloris client would never be cut off.
fn h1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.0)
        .max_headers(limits.max_headers)
        .max_buf_size(max_header_size(limits).max(8192))
        // The framing guard ends a refused stream with end-of-file; without half-close hyper
        // would take that as the client leaving and drop the response to the valid request
        // before it, instead of finishing it and then closing (which sends the refusal).
        .half_close(true)
        .keep_alive(true);
    builder
}

fn h2_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(max_header_size(limits)).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(20))
        .keep_alive_interval(limits.h2_keep_alive_interval.0)
        .keep_alive_timeout(limits.h2_keep_alive_interval.0);
    builder.http2_only()
}

fn max_header_size(limits: &Limits) -> usize {
    usize::try_from(limits.max_header_size.0).unwrap_or(usize::MAX)
}

fn framing_limits(limits: &Limits) -> FramingLimits {
    FramingLimits {
        max_request_line: usize::try_from(limits.max_request_line.0).unwrap_or(usize::MAX),
        max_header_bytes: usize::try_from(limits.max_header_size.0).unwrap_or(usize::MAX),
        max_headers: limits.max_headers,
    }
}

/// The shutdown, as connections see it: serving, draining (finish what is in flight, take no
/// new requests), closing (the grace period is over: end now).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    Draining,
    Closing,
}

/// One builder per ALPN protocol: the handshake has already decided, so nothing is sniffed.
struct Builders {
    h1: http1::Builder,
    h2: auto::Builder<TokioExecutor>,
}

/// The deadlines of one client connection (`server.*`).
#[derive(Clone, Copy)]
struct Deadlines {
    handshake: Duration,
    /// HTTP/2: to the first request, and with no request in flight (HTTP/1: hyper's
    /// header-read timeout, the same setting).
    idle: Duration,
    send: Duration,
}

struct Connection {
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    builders: Arc<Builders>,
    deadlines: Deadlines,
    framing: FramingLimits,
    /// Where the shutdown is.
    phase: watch::Receiver<Phase>,
}

impl Connection {
    async fn serve(
        self,
        tcp: TcpStream,
        peer: Arc<Peer>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let addr = peer.addr;
        let telemetry = self.gateway.telemetry().clone();
        telemetry.connection_opened();
        // Nagle would hold back small responses waiting for an ACK.
        let _ = tcp.set_nodelay(true);
        // Under TLS: a client that stops reading blocks the socket, whatever the protocol.
        let tcp = SendDeadline::new(tcp, self.deadlines.send);
        let tls =
            match tokio::time::timeout(self.deadlines.handshake, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(_)) | Err(_) => {
                    telemetry.tls_handshake_failed();
                    telemetry.connection_closed();
                    return;
                }
            };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let gateway = self.gateway;
        let watch = h2.then(ConnectionWatch::new);
        let service = |tunnel: Option<TunnelSwitch>| {
            let watch = watch.clone();
            service_fn(move |mut request: Request<Incoming>| {
                if let Some(tunnel) = &tunnel {
                    request.extensions_mut().insert(tunnel.clone());
                }
                let stream = watch.as_ref().map(ConnectionWatch::begin);
                let (gateway, peer) = (gateway.clone(), peer.clone());
                async move {
                    let response = gateway.handle(peer, request).await;
                    Ok::<_, Infallible>(match stream {
                        Some(stream) => response.map(|body| body.watched(stream)),
                        None => response,
                    })
                }
            })
        };
        // `Watcher::watch` takes neither an HTTP/1 connection with upgrades nor one that is
        // also watched for deadlines: the drain is followed by hand, and the watcher held so
        // that the drain waits for this connection too.
        let _watcher = watcher;
        let (mut draining, mut closing) = (self.phase.clone(), self.phase);
        let drain = async move { drop(draining.wait_for(|p| *p >= Phase::Draining).await) };
        let close = async move { drop(closing.wait_for(|p| *p == Phase::Closing).await) };
        // ALPN decides the protocol; without ALPN, HTTP/1.1 (RFC 9113 section 3.2).
        let serving = async {
            if let Some(watch) = &watch {
                // HTTP/2 frames every message itself: there is no length to smuggle.
                let conn = self
                    .builders
                    .h2
                    .serve_connection(TokioIo::new(tls), service(None));
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => result,
                    () = drain => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                    expiry = watch.expired(self.deadlines.idle, self.deadlines.send) => {
                        telemetry.connection_ended(expiry.reason());
                        match expiry {
                            // Nothing in flight: GOAWAY, and the connection ends. hyper sends it
                            // only after the client's preface, which a silent client never sends:
                            // the wait for it is bounded too.
                            Expiry::Idle => {
                                conn.as_mut().graceful_shutdown();
                                tokio::time::timeout(self.deadlines.idle, conn)
                                    .await
                                    .unwrap_or(Ok(()))
                            }
                            // Dropping the connection drops its responses and their upstreams.
                            Expiry::Stalled => Ok(()),
                        }
                    }
                }
            } else {
                // Below hyper, so that hyper (and every upstream) only reads unambiguous requests.
                let refused = telemetry.clone();
                let guarded = GuardedIo::new(
                    tls,
                    self.framing,
                    Box::new(move |violation| refused.framing_refused(addr.ip(), violation)),
                );
                let tunnel = guarded.tunnel_switch();
                let conn = self
                    .builders
                    .h1
                    .serve_connection(TokioIo::new(guarded), service(Some(tunnel)))
                    .with_upgrades();
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    () = drain => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                result.map_err(Into::into)
            }
        };
        let result = tokio::select! {
            result = serving => result,
            () = close => Ok(()),
        };
        if let Err(error) = result {
            tracing::debug!(peer = %addr, error = %error, "connection ended with an error");
        }
        telemetry.connection_closed();
    }
}

/// The next connection of `listener`. Accept errors (out of file descriptors and the like) are
/// logged and retried after a pause, never in a tight loop.
async fn accept(listener: &TcpListener, what: &'static str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, listener = what, "accept failed; retrying in 50 ms");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Descriptors the server limits may need at once: a client and an upstream connection for
/// each of `max_connections`, each side listener's connections, and a reserve for listeners,
/// the store, certificates and logs.
fn descriptors_needed(limits: &Limits) -> u64 {
    const RESERVE: u64 = 64;
    const SIDE_LISTENERS: u64 = 3;
    2 * limits.max_connections as u64
        + SIDE_LISTENERS * limits.side_max_connections as u64
        + RESERVE
}

/// Raises the soft open-file limit to the hard one when the server limits need more than the
/// soft one allows, and refuses to start when even the hard one is too low: running out of
/// descriptors mid-flight would fail connections at random.
fn raise_file_limit(limits: &Limits) -> Result<(), StartError> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let needed = descriptors_needed(limits);
        let limit = getrlimit(Resource::Nofile);
        let (soft, hard) = (
            limit.current.unwrap_or(u64::MAX),
            limit.maximum.unwrap_or(u64::MAX),
        );
        if soft >= needed {
            return Ok(());
        }
        if hard < needed {
            return Err(StartError::FileLimit {
                needed,
                allowed: hard,
            });
        }
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).map_err(|_| StartError::FileLimit {
            needed,
            allowed: soft,
        })?;
        tracing::info!(from = soft, to = hard, needed, "raised the open-file limit");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = descriptors_needed(limits);
    Ok(())
}

/// Keeps histogram memory flat between scrapes.
async fn drain_histograms(telemetry: Arc<Telemetry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        telemetry.run_upkeep();
    }
}

/// The limits of a plain-HTTP side listener (admin, redirects, demo back end).
#[derive(Clone, Copy, Debug)]
pub struct SideListener {
    pub max_connections: usize,
    /// Deadline for a request head, and the keep-alive idle limit.
    pub head_timeout: Duration,
}

/// Serves plain HTTP/1.1 on a side listener: each request is answered by `answer` alone, at
/// most `side.max_connections` connections at once (more wait in the kernel's backlog, so idle
/// clients cannot exhaust the gateway's file descriptors), with a head deadline against idle or
/// slow clients.
pub(crate) async fn serve_http1<F, Fut, B>(listener: TcpListener, side: SideListener, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::body::BoxError>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(side.head_timeout);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(side.max_connections));
    // The connections belong to this task: when the gateway stops it, dropping the set cuts
    // them too, so no idle keep-alive client keeps the store (or anything else) alive.
    let mut serving = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let (tcp, _) = accept(&listener, "side listener").await;
        while serving.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let (builder, answer) = (builder.clone(), answer.clone());
        serving.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            drop(permit);
        });
    }
}

/// The 308 answer for a plain-HTTP request, or a refusal when it names no valid host or a host
/// outside `server_names` (when they are set): the redirect never echoes a foreign `Host`.
pub fn redirect_to_https<B>(
    request: &Request<B>,
    https_port: u16,
    server_names: &[String],
) -> Response<ResponseBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .filter(|a| !a.as_str().contains('@') && !a.host().is_empty());
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut response = match host {
        Some(host)
            if crate::sanitize::request::check_host(
                &host.host().to_ascii_lowercase(),
                server_names,
            )
            .is_err() =>
        {
            Refusal::UnknownHost.response()
        }
        host => {
            let location = host.map(|host| {
                let host = host.host().to_ascii_lowercase();
                match https_port {
                    443 => format!("https://{host}{path}"),
                    port => format!("https://{host}:{port}{path}"),
                }
            });
            match location.and_then(|l| HeaderValue::try_from(l).ok()) {
                Some(location) if path.starts_with('/') && request.method() != Method::CONNECT => {
                    let mut response = Response::new(ResponseBody::from(Bytes::new()));
                    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                    response.headers_mut().insert(header::LOCATION, location);
                    response
                }
                _ => Refusal::HttpsRequired.response(),
            }
        }
    };
    hardening::harden_response(response.headers_mut());
    response
}
