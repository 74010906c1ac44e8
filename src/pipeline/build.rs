//! The composition root: a [`Gateway`] built once from the loaded configuration, with every
//! route compiled into a [`RouteTarget`]. Nothing here runs per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;
use metrics::SharedString;

use crate::access::Access;
use crate::assertion::AssertionKey;
use crate::audit::sink::AuditSink;
use crate::auth::enrollment::Enrollment;
use crate::auth::events::SecurityEvents;
use crate::auth::login::{Login, LoginLockouts, SecondFactors};
use crate::auth::password::HashPool;
use crate::auth::webauthn::Passkeys;
use crate::clock::Clock;
use crate::identity::Keyring;
use crate::own_api::paths;
use crate::per_address::PerAddress;
use crate::policy::{AccessPolicy, DataRule};
use crate::proxy::{Peer, TrustedProxies, UpstreamClient};
use crate::ratelimit::Limiter;
use crate::route::RouteTable;
use crate::sanitize::request::RouteRules;
use crate::session::Sessions;
use crate::settings::HeadRules;
use crate::settings::{PathRewrite, RouteAuth, Settings};
use crate::store::Stores;
use crate::store::relations::Relations;
use crate::telemetry::{NO_ROUTE, RouteLabels, Telemetry};

/// Everything a matched route decides.
pub struct RouteTarget {
    pub(super) auth: Option<RouteAuth>,
    pub(super) labels: Arc<RouteLabels>,
    pub(super) upstream: Arc<UpstreamClient>,
    pub(super) rewrite: Option<PathRewrite>,
    pub(super) websocket: bool,
    pub(super) response_headers: HeaderMap,
    pub(super) rules: RouteRules,
    pub(super) data: Option<DataRule>,
}

/// The shared, immutable state of the request path.
pub struct Gateway {
    pub(super) routes: RouteTable<RouteTarget>,
    pub(super) trusted: TrustedProxies,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) unrouted: Arc<RouteLabels>,
    pub(super) body_idle_timeout: Duration,
    /// What phase 3 checks of every request's head.
    pub(super) head: HeadRules,
    pub(super) limiter: Arc<dyn Limiter>,
    /// Upstream requests in flight per client address (`server.max_upstream_requests_per_client`).
    pub(super) in_flight: Arc<PerAddress>,
    pub(super) enrollment: Enrollment,
    pub(super) login: Login,
    pub(super) assertion: AssertionKey,
    /// Identity headers removed from every request besides the built-in ones.
    pub(super) strip_headers: Vec<String>,
    /// Labels for the gateway's own API in logs and metrics.
    pub(super) own_api: Arc<RouteLabels>,
    pub(super) clock: Clock,
    /// The access policy (`policy:`), and the care-team links and grants it decides with.
    pub(super) policy: Option<Arc<AccessPolicy>>,
    pub(super) relations: Arc<dyn Relations>,
    /// Whether the stores outside the process answered their last check.
    pub(super) reachable: Arc<crate::store::reachable::Reachability>,
    /// Access requests and grants; `None` without a policy.
    pub(super) access: Option<Arc<Access>>,
    /// The audit trail's writer; `None` without `audit:`.
    pub(super) audit: Option<Arc<AuditSink>>,
}

/// What one upkeep sweep removed, by kind (`upkeep.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub sessions: usize,
    pub challenges: usize,
    pub enrollments: usize,
    pub lockouts: usize,
    pub limiter_keys: usize,
}

/// The account side of the gateway, opened before it is built.
pub struct Identity {
    pub stores: Stores,
    pub keyring: Arc<Keyring>,
    pub assertion: AssertionKey,
    pub events: SecurityEvents,
    /// The audit trail's writer, when `audit:` is configured.
    pub audit: Option<Arc<AuditSink>>,
}

impl Gateway {
    /// Builds the gateway from the settings compiled from its configuration; fails only when
    /// the password hashing threads cannot start.
    pub fn new(
        settings: Settings,
        telemetry: Arc<Telemetry>,
        identity: Identity,
        clock: Clock,
    ) -> Result<Self, std::io::Error> {
        let hashing = &settings.hashing;
        let pool = Arc::new(HashPool::new(
            settings.hasher,
            hashing.threads,
            hashing.queue,
            hashing.nice,
        )?);
        let ephemeral = identity.stores.ephemeral.clone();
        let relations = identity.stores.relations.clone();
        let identity_stores = identity.stores.clone();
        let reachable = identity.stores.reachable.clone();
        let counters = identity.stores.counters.clone();
        let access_events = identity.events.clone();
        let audit = identity.audit.clone();
        let passkeys = settings
            .passkeys
            .map(|party| Arc::new(Passkeys::new(party, ephemeral)));
        let sessions = Arc::new(Sessions::new(
            &identity.stores,
            identity.keyring,
            &settings.session,
        ));
        let enrollment = Enrollment::new(
            identity.stores.clone(),
            pool.clone(),
            settings.password_policy,
            settings.totp_config,
            passkeys.clone(),
            settings.mfa.clone(),
            identity.events.clone(),
        );
        let login = Login::new(
            identity.stores,
            pool,
            sessions,
            identity.events,
            SecondFactors {
                totp: settings.totp,
                passkeys,
                mfa: settings.mfa,
            },
            LoginLockouts::new(&counters, settings.lockout),
        );
        let targets: Vec<_> = settings
            .routes
            .into_iter()
            .map(|route| {
                let labels = telemetry
                    .route_labels(SharedString::from(route.label), route.upstream.name.clone());
                let target = RouteTarget {
                    auth: route.auth,
                    labels: Arc::new(labels),
                    upstream: route.upstream,
                    rewrite: route.rewrite,
                    websocket: route.websocket,
                    response_headers: route.response_headers,
                    rules: route.rules,
                    data: route.data,
                };
                (route.host, route.path, target)
            })
            .collect();
        Ok(Self {
            routes: RouteTable::new(targets),
            trusted: settings.trusted_proxies,
            unrouted: Arc::new(telemetry.route_labels(
                SharedString::const_str(NO_ROUTE),
                SharedString::const_str(""),
            )),
            own_api: Arc::new(telemetry.route_labels(
                SharedString::const_str(paths::PREFIX),
                SharedString::const_str(""),
            )),
            telemetry,
            body_idle_timeout: settings.body_idle_timeout,
            head: settings.head,
            limiter: counters.limiter(&settings.rate_limits),
            in_flight: PerAddress::new(settings.max_in_flight_per_client),
            enrollment,
            login,
            assertion: identity.assertion,
            strip_headers: settings.strip_headers,
            clock,
            access: settings.policy.clone().map(|policy| {
                let (alert, audit) = (settings.break_glass_alert, audit.clone());
                Arc::new(Access::new(
                    policy,
                    identity_stores,
                    access_events,
                    alert,
                    audit,
                ))
            }),
            policy: settings.policy,
            relations,
            reachable,
            audit,
        })
    }

    /// The audit trail's writer, when `audit:` is configured.
    pub fn audit(&self) -> Option<&Arc<AuditSink>> {
        self.audit.as_ref()
    }

    /// Access requests and grants, when there is a policy.
    pub fn access(&self) -> Option<&Arc<Access>> {
        self.access.as_ref()
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        self.login.sessions()
    }

    /// Forgets expired login and enrollment state and dead sessions (`now`: unix seconds).
    pub async fn prune(&self, now: u64) -> Result<Removed, crate::session::SessionError> {
        let (lockouts, challenges) = self.login.prune(now).await?;
        let enrollments = self.enrollment.prune(now).await?;
        let sessions = self.sessions().prune(now).await?;
        Ok(Removed {
            sessions,
            challenges,
            enrollments,
            lockouts,
            limiter_keys: 0,
        })
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn limiter(&self) -> &Arc<dyn Limiter> {
        &self.limiter
    }

    /// The connection's peer, with the forwarding values it earns.
    pub fn peer(&self, addr: SocketAddr) -> Arc<Peer> {
        Arc::new(Peer::new(addr, &self.trusted))
    }
}
