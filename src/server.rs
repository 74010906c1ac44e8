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

use crate::admin::{Admin, AdminToken};
use crate::body::ResponseBody;
use crate::clock::Clock;
use crate::config::{Loaded, Server as Limits};
use crate::identity::{
    EmbeddedStore, IdentityStore, KeyError, KeyOrigin, Keyring, MASTER_KEY_ENV, StoreError,
};
use crate::pipeline::Gateway;
use crate::proxy;
use crate::refusal::Refusal;
use crate::sanitize::framing::{FramingLimits, GuardedIo, TunnelSwitch};
use crate::telemetry::Telemetry;
use crate::tls::{self, TlsError};
use crate::{admin, demo};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    RateLimit(#[from] crate::ratelimit::RateLimitError),
    #[error("master key: {0}")]
    Key(#[from] KeyError),
    #[error("identity store: {0}")]
    Store(#[from] StoreError),
    #[error("auth.password.hashing: {0}")]
    Hashing(#[from] crate::auth::password::HashError),
    #[error("cannot start the password hashing threads: {0}")]
    HashPool(std::io::Error),
    #[error("auth.totp: {0}")]
    Totp(#[from] crate::auth::totp::TotpError),
    #[error(transparent)]
    Lockout(#[from] crate::auth::lockout::LockoutConfigError),
    #[error("auth.webauthn.{0}")]
    WebAuthn(#[from] crate::auth::webauthn::WebAuthnConfigError),
    #[error("identity assertion key: {0}")]
    AssertionKey(#[from] crate::assertion::AssertionKeyError),
    #[error("{dir}: cannot read or create the admin token: {source}")]
    AdminToken {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
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
    identity: Arc<dyn IdentityStore>,
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
    clock: Clock,
    /// The security-event channel, shared by the gateway's login and the admin API.
    events: crate::auth::events::SecurityEvents,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, what, source })
}

impl Bound {
    /// Prepares TLS and upstream clients, then binds every listener.
    pub async fn bind(loaded: &Loaded) -> Result<Self, StartError> {
        Self::bind_with_clock(loaded, crate::clock::system()).await
    }

    /// [`Bound::bind`] with the clock the gateway reads at its edges.
    pub async fn bind_with_clock(loaded: &Loaded, clock: Clock) -> Result<Self, StartError> {
        let config = &loaded.config;
        let cert = loaded.resolve(&config.tls.cert);
        let key = loaded.resolve(&config.tls.key);
        if tls::would_generate(&cert, &key, config.tls.dev_self_signed) {
            tls::generate_dev_certificate(&cert, &key)?;
            tracing::warn!(
                cert = %cert.display(),
                "GENERATED A SELF-SIGNED DEVELOPMENT CERTIFICATE (tls.dev_self_signed). Browsers will warn; never use this in production."
            );
        }
        let acceptor = TlsAcceptor::from(tls::server_config(&cert, &key, config.tls.min_version)?);
        let (identity, keyring, admin_token) = open_identity_store(loaded)?;
        let key_file = loaded
            .resolve(&config.store.path)
            .join(crate::assertion::KEY_FILE);
        let (assertion, created) = crate::assertion::AssertionKey::load_or_create(&key_file)?;
        if created {
            tracing::warn!(
                key_file = %key_file.display(),
                kid = assertion.kid(),
                "created a new identity assertion key: upstreams that verify assertions need the new JWKS ({})",
                crate::assertion::JWKS_PATH
            );
        }
        let telemetry = Telemetry::new(config.log.requests);
        let events = crate::auth::events::SecurityEvents::new();
        let accounts = crate::pipeline::Accounts {
            store: identity.clone(),
            keyring,
            assertion,
            events: events.clone(),
        };
        let gateway = Arc::new(Gateway::new(loaded, telemetry, accounts, clock.clone())?);

        let https = bind(config.listen.https, "listen.https").await?;
        let redirect = match config.listen.http_redirect {
            Some(addr) => Some(bind(addr, "listen.http_redirect").await?),
            None => None,
        };
        let admin = match &config.listen.admin {
            Some(addr) => Some(bind(addr.value, "listen.admin").await?),
            None => None,
        };
        let demo = match &config.demo_backend {
            Some(demo) => Some(bind(demo.listen.value, "demo_backend.listen").await?),
            None => None,
        };
        let https_port = https
            .local_addr()
            .map_or(config.listen.https.port(), |a| a.port());
        let limits = config.server.value.clone();
        Ok(Self {
            identity,
            admin_token,
            enrollment_ttl: config.auth.enrollment_ttl.0,
            https,
            redirect,
            admin,
            demo,
            acceptor,
            gateway,
            limits,
            https_port,
            clock,
            events,
        })
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
        let telemetry = self.gateway.telemetry().clone();
        let mut side_tasks = tokio::task::JoinSet::new();
        if let (Some(listener), Some(token)) = (self.admin, self.admin_token) {
            let admin = Admin {
                telemetry: telemetry.clone(),
                ready: ready.clone(),
                store: self.identity.clone(),
                sessions: self.gateway.sessions().clone(),
                token,
                enrollment_ttl: self.enrollment_ttl,
                clock: self.clock.clone(),
                events: self.events,
            };
            side_tasks.spawn(admin::serve(listener, Arc::new(admin)));
        }
        if let Some(listener) = self.demo {
            side_tasks.spawn(demo::serve(listener));
        }
        if let Some(listener) = self.redirect {
            // Plain HTTP only moves people who typed `http://` onto TLS: nothing is proxied.
            let https_port = self.https_port;
            side_tasks.spawn(serve_http1(listener, move |request| {
                std::future::ready(redirect_to_https(&request, https_port))
            }));
        }
        side_tasks.spawn(upkeep(telemetry.clone()));
        side_tasks.spawn(crate::ratelimit::run_eviction(
            self.gateway.limiter().clone(),
            Duration::from_secs(60),
        ));

        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(self.limits.max_connections));
        let builders = Arc::new(Builders {
            h1: h1_builder(&self.limits),
            h2: h2_builder(&self.limits),
        });
        let handshake_timeout = self.limits.tls_handshake_timeout.0;
        let framing = framing_limits(&self.limits);
        let (drain, draining) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = connections.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.https.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let watcher = graceful.watcher();
            let connection = Connection {
                acceptor: self.acceptor.clone(),
                gateway: self.gateway.clone(),
                builders: builders.clone(),
                handshake_timeout,
                framing,
                draining: draining.clone(),
            };
            tokio::spawn(async move {
                connection.serve(tcp, peer, watcher).await;
                drop(permit);
            });
        }
        ready.store(false, Ordering::SeqCst);
        drain.send_replace(true);
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
        side_tasks.shutdown().await;
    }
}

/// HTTP/1.x straight from hyper, not through `auto`: `auto` first reads the client's opening
/// bytes to sniff for HTTP/2, outside hyper's header-read deadline, and the framing guard holds
/// those bytes back until the head is complete, so a slowloris client would never be cut off.
/// Loads the master key (generating it in development mode, loudly), opens the identity store
/// and, when there is an admin listener, its token: a missing key or an unreadable store stops
/// the start before any port is bound.
/// The store, the keyring that seals it, and the admin token (when there is an admin listener).
type OpenedStore = (Arc<dyn IdentityStore>, Arc<Keyring>, Option<AdminToken>);

fn open_identity_store(loaded: &Loaded) -> Result<OpenedStore, StartError> {
    let store = &loaded.config.store;
    let key_file = loaded.resolve(&store.key_file());
    let from_env = std::env::var(MASTER_KEY_ENV).ok();
    let (keyring, origin) = Keyring::load(
        &key_file,
        from_env.as_deref(),
        store.dev_generate_key,
        &mut rand::rng(),
    )?;
    if let KeyOrigin::Generated(path) = &origin {
        tracing::warn!(
            key_file = %path.display(),
            "GENERATED A NEW MASTER KEY (store.dev_generate_key). Back it up: without it the sealed secrets in the identity store cannot be read. Never use this in production."
        );
    }
    let dir = loaded.resolve(&store.path);
    let keyring = Arc::new(keyring);
    let identity: Arc<dyn IdentityStore> = Arc::new(EmbeddedStore::open(&dir, keyring.clone())?);
    let token = match &loaded.config.listen.admin {
        Some(_) => {
            Some(
                AdminToken::load_or_create(&dir).map_err(|source| StartError::AdminToken {
                    dir: dir.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    if identity.users()?.is_empty() {
        tracing::warn!(
            "no accounts yet: create the first with `wardgate user add <name> --role <role> --config {}`",
            loaded.file.display()
        );
    }
    Ok((identity, keyring, token))
}

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

/// One builder per ALPN protocol: the handshake has already decided, so nothing is sniffed.
struct Builders {
    h1: http1::Builder,
    h2: auto::Builder<TokioExecutor>,
}

struct Connection {
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    builders: Arc<Builders>,
    handshake_timeout: Duration,
    framing: FramingLimits,
    /// Turns true when the drain begins.
    draining: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(
        self,
        tcp: TcpStream,
        addr: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let telemetry = self.gateway.telemetry().clone();
        telemetry.connection_opened();
        // Nagle would hold back small responses waiting for an ACK.
        let _ = tcp.set_nodelay(true);
        let tls =
            match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(_)) | Err(_) => {
                    telemetry.tls_handshake_failed();
                    telemetry.connection_closed();
                    return;
                }
            };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let gateway = self.gateway;
        let peer = gateway.peer(addr);
        let service = |tunnel: Option<TunnelSwitch>| {
            service_fn(move |mut request: Request<Incoming>| {
                if let Some(tunnel) = &tunnel {
                    request.extensions_mut().insert(tunnel.clone());
                }
                let (gateway, peer) = (gateway.clone(), peer.clone());
                async move { Ok::<_, Infallible>(gateway.handle(peer, request).await) }
            })
        };
        // ALPN decides the protocol; without ALPN, HTTP/1.1 (RFC 9113 section 3.2).
        let result = if h2 {
            // HTTP/2 frames every message itself: there is no length to smuggle.
            let io = TokioIo::new(tls);
            watcher
                .watch(
                    self.builders
                        .h2
                        .serve_connection(io, service(None))
                        .into_owned(),
                )
                .await
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
            // `Watcher::watch` does not take an HTTP/1 connection with upgrades: the drain is
            // followed by hand, and the watcher held so that the drain waits for this one too.
            let _watcher = watcher;
            let mut draining = self.draining;
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = async { drop(draining.wait_for(|draining| *draining).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            result.map_err(Into::into)
        };
        if let Err(error) = result {
            tracing::debug!(peer = %addr, error = %error, "connection ended with an error");
        }
        telemetry.connection_closed();
    }
}

/// Keeps histogram memory flat between scrapes.
async fn upkeep(telemetry: Arc<Telemetry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        telemetry.run_upkeep();
    }
}

/// Serves plain HTTP/1.1 on a side listener (admin, redirects, demo back end): each request is
/// answered by `answer` alone, with a 10 s head deadline against idle or slow clients.
pub(crate) async fn serve_http1<F, Fut, B>(listener: TcpListener, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::body::BoxError>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (builder, answer) = (builder.clone(), answer.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

/// The 308 answer for a plain-HTTP request, or a refusal when it names no valid host.
pub fn redirect_to_https<B>(request: &Request<B>, https_port: u16) -> Response<ResponseBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .filter(|a| !a.as_str().contains('@') && !a.host().is_empty());
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = host.map(|host| match https_port {
        443 => format!("https://{}{path}", host.host()),
        port => format!("https://{}:{port}{path}", host.host()),
    });
    let mut response = match location.and_then(|l| HeaderValue::try_from(l).ok()) {
        Some(location) if path.starts_with('/') && request.method() != Method::CONNECT => {
            let mut response = Response::new(ResponseBody::from(Bytes::new()));
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        _ => Refusal::HttpsRequired.response(),
    };
    proxy::harden_response(response.headers_mut());
    response
}
