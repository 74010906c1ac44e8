//! Rate limiting: how often one client, one user, or everyone together may use a route.
//!
//! **The threat.** Credential stuffing and password guessing against a login route; scraping of
//! patient records one id after the other; one client (buggy or hostile) monopolizing a back end
//! so that clinicians wait. Each is an automated flood that a per-request check cannot see.
//!
//! **The rule.** Every request passes the limits that apply to it, narrowest first, and the first
//! limit with no capacity left refuses it (429, `Retry-After`). A limit is a GCRA ("generic cell
//! rate algorithm", a leaky bucket kept as one timestamp per key): `requests` per `per`, with up
//! to `burst` at once. Kinds of limit and their keys:
//!
//! | kind             | key                                       | protects                   |
//! |------------------|-------------------------------------------|----------------------------|
//! | `per_client`     | client address; IPv6 by /64, IPv4 exact   | the gateway, login         |
//! | `per_user`       | authenticated user id                     | patient records (scraping) |
//! | `per_user_route` | user id and route                         | one route's data           |
//! | `per_route`      | route name, shared by everyone            | the back end               |
//!
//! **The standard.** OWASP ASVS 5.0 V2.4 (anti-automation: limits on how fast and how often a
//! function can be used) and V6 (brute-force protection of authentication); GCRA as in ITU-T
//! I.371; the answer carries `Retry-After` (RFC 9110 10.2.3) and the headers of
//! draft-ietf-httpapi-ratelimit-headers in structured-field form.
//!
//! ```text
//!  request
//!     │
//!     ▼  phase 5: Stage::Anonymous
//!  [ per_client ] ───────────────────────┐
//!     │                                  │
//!  authenticate                          │
//!     │                                  │  the first limit with no capacity left:
//!     ▼  phase 8: Stage::Identified      │  429, Retry-After, RateLimit headers
//!  [ per_user_route ]   (with a user) ───┤
//!  [ per_user ]         (with a user) ───┤
//!  [ per_route ] ────────────────────────┘
//!     │
//!     ▼
//!  upstream
//! ```
//!
//! **Narrowest first, and what a refusal costs.** Governor spends a cell as it allows, so the
//! limits of one check are not all-or-nothing: a request refused by a later limit has already
//! spent a cell of the narrower limits it passed. The order makes that cost land on the sender
//! only: a request refused by its own client or user limit never reaches the shared `per_route`
//! limit, so a flooding client cannot burn the back end's budget for everybody else, and
//! `per_route` sits after authentication, so requests that fail to log in never spend it either.
//! Of the limits that let a request through, the one with the fewest requests left is reported
//! in the headers; a refusal reports the limit that refused.
//!
//! **Route overrides.** A route may replace any of the four limits (`routes[].rate_limit`). An
//! override counts in its own buckets: `per_client: 5 per 1m` on a login route gives each client
//! five logins a minute, apart from what it spends elsewhere. A route cannot switch a limit off.
//!
//! **Bounded memory.** One key costs one map entry. [`Limiter::evict_idle`] drops keys whose
//! bucket is full again (governor's `retain_recent`), and the upkeep task (`upkeep.rs`) calls it
//! every minute. Against a flood of distinct keys (a botnet, or one IPv6 /48 with 65 536 /64s), each limit
//! holds at most `max_keys` keys. When full, it first sweeps idle keys (at most once a second,
//! so that a flood cannot make every request scan the table), and if still full it **refuses
//! new keys** ([`DenyCause::TooManyKeys`]) while keys it already knows go on as usual. This fails
//! closed on purpose: letting unknown keys through unlimited would hand the flood exactly what
//! the limit exists to stop. Measured on the heap the limiter holds: 1 000 000 client keys (a
//! full `per_client` limit at the default `max_keys`) take 98 MiB, 102 bytes a key (a 48-byte
//! entry in a hash table that grows by powers of two; `tests/limiter_memory.rs`, which counts
//! allocations, x86-64 Linux); an eviction after the window gave all of it back.
//!
//! **Time.** Governor reads time from a clock that the limiter owns, so [`LocalLimiter`] is
//! generic over a `governor::clock::Clock` given at construction instead of taking `now` in each
//! call: the server uses governor's default monotonic clock (quanta), tests a
//! `FakeRelativeClock` that they advance, so no test sleeps.
//!
//! **Several replicas.** Which limits a request checks, and in what order, is one
//! [`LimitTable`]; [`LocalLimiter`] counts it in this process, the shared backend
//! (`store/redis/limiter.rs`) counts the same table in Redis with the same GCRA, so that every
//! replica spends one budget.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use serde::Deserialize;

use crate::units::HumanDuration;
use crate::warning::Warning;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): the limit's quota and window.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of the limit and when it is full again.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A full table sweeps its idle keys at most this often, whatever the flood.
const FORCED_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Finer than this (a million requests a second per key), governor's nanosecond cells lose
/// precision.
const SHORTEST_CELL: Duration = Duration::from_micros(1);
/// Longest time a full burst may take to come back.
const LONGEST_REFILL: Duration = Duration::from_secs(86_400);

// ---------------------------------------------------------------------------------------------
// The file format: `rate_limits:` at the top level and `routes[].rate_limit:`.
// ---------------------------------------------------------------------------------------------

/// `rate_limits:` in gateway.yaml: the limits every route gets unless it overrides them.
///
/// Only `per_client` is on by default: 100 requests a second per address, bursts of 200. An
/// interactive clinician app sends a few requests a second per user, so a ward of users behind
/// one NAT address stays well below it, while one address is held to well under 1% of what a
/// single gateway core serves (about 30 000 requests a second, README). `per_user` needs login,
/// and `per_route` needs the back end's capacity, which only the operator knows. Turning
/// `per_client` off takes an explicit `per_client: null` and earns a [`Warning`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub per_client: Option<LimitSpec>,
    pub per_route: Option<LimitSpec>,
    pub per_user: Option<LimitSpec>,
    pub per_user_route: Option<LimitSpec>,
    /// Most keys one limit holds at once; beyond it new keys are refused (fails closed). In
    /// this process only: in Redis (`shared_state`) every key expires by itself.
    pub max_keys: NonZeroUsize,
}

/// The `per_client` limit when the file says nothing.
pub const DEFAULT_PER_CLIENT: LimitSpec = LimitSpec {
    requests: nonzero(100),
    per: Duration::from_secs(1),
    burst: nonzero(200),
};

/// `max_keys` when the file says nothing: about 100 MiB per limit when full (module doc).
pub const DEFAULT_MAX_KEYS: NonZeroUsize = match NonZeroUsize::new(1_000_000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_client: Some(DEFAULT_PER_CLIENT),
            per_route: None,
            per_user: None,
            per_user_route: None,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

impl RateLimits {
    /// Weak settings worth an operator's attention, for `check-config` and the start log.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut warnings = Vec::new();
        if self.per_client.is_none() {
            warnings.push(Warning(
                "rate_limits.per_client is off: one client address may send requests without limit"
                    .into(),
            ));
        }
        warnings
    }
}

/// `routes[].rate_limit:`: limits that replace the global ones on this route (module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteRateLimit {
    pub per_client: Option<LimitSpec>,
    pub per_route: Option<LimitSpec>,
    pub per_user: Option<LimitSpec>,
    pub per_user_route: Option<LimitSpec>,
}

impl RouteRateLimit {
    /// The gateway's own login and enrollment endpoints (`auth.login_rate_limit`): 60 requests
    /// a minute per address, bursts of 30. A login takes a handful of requests, so a ward
    /// behind one NAT address can log in together, while a guessing script gets about one try
    /// a second, before the lockouts (`auth.lockout`) stop it on the account.
    pub fn login_default() -> Self {
        Self {
            per_client: Some(LimitSpec {
                requests: nonzero(60),
                per: Duration::from_secs(60),
                burst: nonzero(30),
            }),
            ..Self::default()
        }
    }
}

/// `{ requests: 200, per: 1s, burst: 400 }`, validated: see [`LimitSpec::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LimitSpecFile")]
pub struct LimitSpec {
    requests: NonZeroU32,
    per: Duration,
    burst: NonZeroU32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSpecFile {
    requests: u32,
    per: HumanDuration,
    #[serde(default)]
    burst: Option<u32>,
}

impl TryFrom<LimitSpecFile> for LimitSpec {
    type Error = String;

    fn try_from(file: LimitSpecFile) -> Result<Self, String> {
        Self::new(
            file.requests,
            file.per.0,
            file.burst.unwrap_or(file.requests),
        )
    }
}

impl LimitSpec {
    /// `requests` per `per`, up to `burst` at once.
    ///
    /// `per` must be a whole number of seconds, because the `RateLimit-Policy` header states the
    /// window in seconds and should state it exactly.
    pub fn new(requests: u32, per: Duration, burst: u32) -> Result<Self, String> {
        let requests = NonZeroU32::new(requests).ok_or("`requests` must be at least 1")?;
        let burst = NonZeroU32::new(burst).ok_or("`burst` must be at least 1")?;
        if per.is_zero() {
            return Err("`per` must be longer than zero".into());
        }
        if per.subsec_nanos() != 0 {
            return Err(
                "`per` must be a whole number of seconds (`1s`, `1m`, `1h`): the RateLimit headers count in seconds"
                    .into(),
            );
        }
        let spec = Self {
            requests,
            per,
            burst,
        };
        if spec.cell() < SHORTEST_CELL {
            return Err("at most 1000000 requests a second can be limited".into());
        }
        if spec.refill() > LONGEST_REFILL {
            return Err(
                "a full `burst` would take more than a day to come back: lower `burst` or raise `requests`"
                    .into(),
            );
        }
        Ok(spec)
    }

    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    pub fn per(&self) -> Duration {
        self.per
    }

    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Time between two requests at the sustained rate: one GCRA cell.
    pub(crate) fn cell(&self) -> Duration {
        self.per / self.requests.get()
    }

    /// Time for an empty bucket to be full again.
    fn refill(&self) -> Duration {
        self.cell().saturating_mul(self.burst.get())
    }

    fn quota(&self) -> Quota {
        // `new` made sure the cell is at least a microsecond, so `with_period` accepts it.
        Quota::with_period(self.cell())
            .unwrap_or(Quota::per_second(self.requests))
            .allow_burst(self.burst)
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and subjects.
// ---------------------------------------------------------------------------------------------

/// Which of the four limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Client,
    User,
    Route,
    UserRoute,
}

impl LimitKind {
    /// The policy name in the `RateLimit` headers.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Client => "client",
            LimitKind::User => "user",
            LimitKind::Route => "route",
            LimitKind::UserRoute => "user-route",
        }
    }
}

/// A client address as a limit sees it: IPv4 exact, IPv6 by its /64 (one subscriber's
/// allocation, which one host can cycle through at will), IPv4-mapped IPv6 as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Net(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => ClientKey::V6Net((u128::from(v6) >> 64) as u64),
        }
    }
}

/// `192.0.2.1`, or `2001:db8:1:2::/64`: how a shared backend names the key.
impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::V4(v4) => v4.fmt(f),
            ClientKey::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*net) << 64)),
        }
    }
}

/// What a limit counts by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Client(ClientKey),
    User(Arc<str>),
    Route(Arc<str>),
    UserRoute(Arc<str>, Arc<str>),
}

/// Where in the request path a check happens; each stage checks its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Phase 5, before authentication: `per_client`.
    Anonymous,
    /// Phase 8, after authentication: `per_user_route` and `per_user` (when there is a user),
    /// then `per_route`.
    Identified,
}

/// One request, as the limiter needs to know it.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub stage: Stage,
    /// The route's name, as given to [`LocalLimiter::new`].
    pub route: &'a str,
    /// The client address (after trusted-proxy resolution).
    pub client: IpAddr,
    /// The authenticated user id, if any.
    pub user: Option<&'a str>,
    /// A route that asks for no session and reads no shared state: it stays up while the
    /// shared count cannot be reached, counted by this replica alone (`RedisLimiter`).
    pub public: bool,
}

// ---------------------------------------------------------------------------------------------
// Decisions and the headers they produce.
// ---------------------------------------------------------------------------------------------

/// Where a request stands with one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub kind: LimitKind,
    pub spec: LimitSpec,
    /// Requests that may follow at once.
    pub remaining: u32,
    /// Time until the limit is full again (refused: until a request may pass).
    pub reset: Duration,
}

impl Standing {
    /// `"client";q=200;w=1`
    fn policy_value(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.kind.name(),
            self.spec.requests(),
            self.spec.per().as_secs()
        )
    }

    /// `"client";r=199;t=1`
    fn state_value(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.kind.name(),
            self.remaining,
            whole_seconds_up(self.reset)
        )
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyCause {
    /// The limit has no capacity left for this key.
    Exhausted,
    /// The limit holds `max_keys` keys, none idle, and this key is new (fails closed).
    TooManyKeys,
    /// The shared store that counts the limit did not answer (fails closed).
    Unavailable,
}

/// The outcome of [`Limiter::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every limit let the request through; `binding` is the one with the fewest requests left
    /// (`None` when no limit applies).
    Allow { binding: Option<Standing> },
    /// Refused by `binding`; the client may try again after `retry_after`.
    Deny {
        retry_after: Duration,
        binding: Standing,
        cause: DenyCause,
    },
}

impl Decision {
    /// No limit applies (yet): where a request's checks start.
    pub const PASS: Decision = Decision::Allow { binding: None };

    /// One more limit's decision on a request that passed the limits before it: its refusal as
    /// `Err`, which ends the check (module doc: "Narrowest first"), else the stricter pass.
    pub(crate) fn and(self, next: Decision) -> Result<Decision, Decision> {
        if next.is_allowed() {
            Ok(self.stricter(next))
        } else {
            Err(next)
        }
    }

    /// The stricter of two decisions, e.g. those of the two stages of one request: a refusal
    /// over a pass, the longer wait of two refusals, the fewer requests left of two passes (then
    /// the later reset); on a tie, `self`: the earlier stage.
    pub fn stricter(self, other: Decision) -> Decision {
        match (&self, &other) {
            (Decision::Deny { retry_after: a, .. }, Decision::Deny { retry_after: b, .. }) => {
                if b > a { other } else { self }
            }
            (Decision::Deny { .. }, _) => self,
            (_, Decision::Deny { .. }) => other,
            (Decision::Allow { binding: a }, Decision::Allow { binding: b }) => match (a, b) {
                (Some(a), Some(b)) if (b.remaining, a.reset) < (a.remaining, b.reset) => other,
                (None, Some(_)) => other,
                _ => self,
            },
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The limit the decision reports.
    pub fn binding(&self) -> Option<&Standing> {
        match self {
            Decision::Allow { binding } => binding.as_ref(),
            Decision::Deny { binding, .. } => Some(binding),
        }
    }

    /// `RateLimit-Policy` and `RateLimit` for the binding limit, and `Retry-After` (whole
    /// seconds, rounded up, at least 1) on a refusal. Empty when no limit applied. Only the
    /// binding limit is named: listing the route-wide limit would tell any client how busy the
    /// back end is.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let Some(standing) = self.binding() else {
            return Vec::new();
        };
        let mut headers = Vec::with_capacity(3);
        // Both are quotes, letters, digits and `;=-`: always valid header values.
        if let (Ok(policy), Ok(state)) = (
            HeaderValue::try_from(standing.policy_value()),
            HeaderValue::try_from(standing.state_value()),
        ) {
            headers.push((RATELIMIT_POLICY, policy));
            headers.push((RATELIMIT, state));
        }
        if let Decision::Deny { retry_after, .. } = self {
            headers.push((
                RETRY_AFTER,
                HeaderValue::from(whole_seconds_up(*retry_after)),
            ));
        }
        headers
    }
}

/// Seconds, rounded up, at least 1: a client told `0` would retry at once.
fn whole_seconds_up(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

// ---------------------------------------------------------------------------------------------
// The limiter.
// ---------------------------------------------------------------------------------------------

/// A check in progress: ready at once for [`LocalLimiter`], a round trip for a shared backend.
pub type Checking<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// A rate limiter the request path can hold as `Arc<dyn Limiter>`; [`LocalLimiter`] keeps its
/// state in this process, a shared one (Redis, for several replicas) answers over the network,
/// so `check` is async: a backend must never block a runtime thread on a socket.
///
/// Contract: `check` counts the request against every limit it passes and decides, atomically
/// per limit (two replicas checking at once cannot both spend the last token); a backend that
/// cannot answer refuses rather than lets the request through unlimited.
pub trait Limiter: Send + Sync {
    /// Checks the limits of `subject.stage` that apply to the subject, narrowest first; stops at
    /// the first refusal (module doc: "Narrowest first").
    fn check<'a>(&'a self, subject: &'a Subject<'a>) -> Checking<'a>;
    /// Drops the keys whose bucket is full again, and returns their memory.
    fn evict_idle(&self);
    /// Keys held, all limits together.
    fn key_count(&self) -> usize;
}

/// Configuration that cannot be turned into limits.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    #[error(
        "two routes are named `{0}` with different `rate_limit` settings: rate limits tell routes apart by name"
    )]
    DuplicateRoute(String),
}

/// Governor's dashmap store (SipHash keys: no hash flooding), shared with the limit so that it
/// can count and look up keys, which governor's limiter does not offer.
#[derive(Clone, Default)]
struct Keys {
    map: Arc<DashMapStateStore<LimitKey>>,
    /// `map.len()` without locking every shard on the hot path; exact after each sweep.
    count: Arc<AtomicUsize>,
}

impl StateStore for Keys {
    type Key = LimitKey;

    fn measure_and_replace<T, F, E>(&self, key: &LimitKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let state = self.map.entry(key.clone()).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Relaxed);
            InMemoryState::default()
        });
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<LimitKey> for Keys {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.map, drop_below);
        self.count.store(self.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One configured limit, whichever backend counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub kind: LimitKind,
    pub spec: LimitSpec,
    /// The route this limit is an override of; `None` for a global limit.
    pub route: Option<Arc<str>>,
}

impl Planned {
    /// A pass with `remaining` requests left at once.
    pub(crate) fn allowed(&self, remaining: u32) -> Decision {
        // Each missing request comes back after one cell time; exact to within one cell.
        let missing = self.spec.burst().saturating_sub(remaining);
        Decision::Allow {
            binding: Some(self.standing(remaining, self.spec.cell().saturating_mul(missing))),
        }
    }

    /// A refusal: a request may pass again after `wait`.
    pub(crate) fn denied(&self, wait: Duration, cause: DenyCause) -> Decision {
        Decision::Deny {
            retry_after: wait,
            binding: self.standing(0, wait),
            cause,
        }
    }

    fn standing(&self, remaining: u32, reset: Duration) -> Standing {
        Standing {
            kind: self.kind,
            spec: self.spec,
            remaining,
            reset,
        }
    }
}

/// The limits in force on one route, as places in [`LimitTable::all`].
#[derive(Clone, Copy, Debug, Default)]
struct RouteLimits {
    client: Option<usize>,
    user: Option<usize>,
    route: Option<usize>,
    user_route: Option<usize>,
}

/// Which limits a request checks: the global limits, and on a route with overrides its own
/// limits in their place (module doc: "Route overrides"). Written once for every backend: `L`
/// is what counts one limit ([`Planned`] before any backend counts it).
#[derive(Debug)]
pub struct LimitTable<L> {
    /// Every distinct limit once; a route without an override shares the global limit.
    all: Vec<L>,
    /// Routes unknown to the table get the global limits.
    global: RouteLimits,
    routes: HashMap<Arc<str>, RouteLimits>,
    /// `rate_limits.max_keys`, for the backends that hold keys in memory.
    max_keys: NonZeroUsize,
}

impl LimitTable<Planned> {
    /// The limits of `rate_limits:`, and each route's name with its `rate_limit:` overrides.
    pub fn new<'a>(
        limits: &RateLimits,
        routes: impl IntoIterator<Item = (&'a str, &'a RouteRateLimit)>,
    ) -> Result<Self, RateLimitError> {
        let mut all = Vec::new();
        let mut make = |kind, spec: Option<LimitSpec>, route: Option<&str>| {
            spec.map(|spec| {
                all.push(Planned {
                    kind,
                    spec,
                    route: route.map(Arc::from),
                });
                all.len() - 1
            })
        };
        let global = RouteLimits {
            client: make(LimitKind::Client, limits.per_client, None),
            user: make(LimitKind::User, limits.per_user, None),
            route: make(LimitKind::Route, limits.per_route, None),
            user_route: make(LimitKind::UserRoute, limits.per_user_route, None),
        };
        let mut seen: HashMap<&str, &RouteRateLimit> = HashMap::new();
        let mut by_route = HashMap::new();
        for (name, overrides) in routes {
            match seen.entry(name) {
                Entry::Occupied(first) if *first.get() != overrides => {
                    return Err(RateLimitError::DuplicateRoute(name.to_owned()));
                }
                Entry::Occupied(_) => continue,
                Entry::Vacant(slot) => {
                    slot.insert(overrides);
                }
            }
            let mut pick = |kind, spec: Option<LimitSpec>, global: Option<usize>| {
                if spec.is_some() {
                    make(kind, spec, Some(name))
                } else {
                    global
                }
            };
            let limits = RouteLimits {
                client: pick(LimitKind::Client, overrides.per_client, global.client),
                user: pick(LimitKind::User, overrides.per_user, global.user),
                route: pick(LimitKind::Route, overrides.per_route, global.route),
                user_route: pick(
                    LimitKind::UserRoute,
                    overrides.per_user_route,
                    global.user_route,
                ),
            };
            by_route.insert(Arc::<str>::from(name), limits);
        }
        Ok(Self {
            all,
            global,
            routes: by_route,
            max_keys: limits.max_keys,
        })
    }

    /// The same table, each limit counted by what `count` makes of it.
    pub fn counted_by<L>(&self, count: impl FnMut(&Planned) -> L) -> LimitTable<L> {
        LimitTable {
            all: self.all.iter().map(count).collect(),
            global: self.global,
            routes: self.routes.clone(),
            max_keys: self.max_keys,
        }
    }
}

impl<L> LimitTable<L> {
    /// The limits `subject.stage` checks, narrowest first, each with the key it counts by.
    pub(crate) fn steps(&self, subject: &Subject<'_>) -> impl Iterator<Item = (&L, LimitKey)> {
        let (route_name, limits) = match self.routes.get_key_value(subject.route) {
            Some((name, limits)) => (name.clone(), limits),
            None => (Arc::from(subject.route), &self.global),
        };
        let user = subject.user.map(Arc::<str>::from);
        let limit = |place: Option<usize>| place.map(|place| &self.all[place]);
        let steps = match subject.stage {
            Stage::Anonymous => [
                limit(limits.client).map(|l| (l, LimitKey::Client(subject.client.into()))),
                None,
                None,
            ],
            Stage::Identified => [
                limit(limits.user_route)
                    .zip(user.clone())
                    .map(|(l, u)| (l, LimitKey::UserRoute(u, route_name.clone()))),
                limit(limits.user)
                    .zip(user)
                    .map(|(l, u)| (l, LimitKey::User(u))),
                limit(limits.route).map(|l| (l, LimitKey::Route(route_name))),
            ],
        };
        steps.into_iter().flatten()
    }

    /// Every distinct limit once.
    pub(crate) fn all(&self) -> &[L] {
        &self.all
    }
}

/// One configured limit: one governor keyed limiter.
struct Limit<C: Clock> {
    planned: Planned,
    governor: RateLimiter<LimitKey, Keys, C, StateInformationMiddleware>,
    keys: Keys,
    max_keys: usize,
    start: C::Instant,
    /// When the next forced sweep may run, in nanoseconds after `start`.
    next_sweep: AtomicU64,
}

impl<C: Clock> Limit<C> {
    fn new(planned: &Planned, max_keys: NonZeroUsize, clock: C) -> Self {
        let keys = Keys::default();
        let start = clock.now();
        Self {
            planned: planned.clone(),
            governor: RateLimiter::new(planned.spec.quota(), keys.clone(), clock),
            keys,
            max_keys: max_keys.get(),
            start,
            next_sweep: AtomicU64::new(0),
        }
    }

    fn check(&self, key: &LimitKey) -> Decision {
        if !self.admit(key) {
            return self
                .planned
                .denied(self.planned.spec.refill(), DenyCause::TooManyKeys);
        }
        match self.governor.check_key(key) {
            Ok(snapshot) => self.planned.allowed(snapshot.remaining_burst_capacity()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.governor.clock().now());
                self.planned.denied(wait, DenyCause::Exhausted)
            }
        }
    }

    /// Whether `key` may hold a place: it has one already, or there is room (after a sweep, if
    /// one is due). Concurrent checks may overshoot `max_keys` by the number of threads.
    fn admit(&self, key: &LimitKey) -> bool {
        if self.keys.count.load(Ordering::Relaxed) < self.max_keys
            || self.keys.map.contains_key(key)
        {
            return true;
        }
        let now = self
            .governor
            .clock()
            .now()
            .duration_since(self.start)
            .as_u64();
        let due = self.next_sweep.load(Ordering::Relaxed);
        let next = now.saturating_add(Nanos::from(FORCED_SWEEP_INTERVAL).as_u64());
        if now >= due
            && self
                .next_sweep
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.governor.retain_recent();
        }
        self.keys.count.load(Ordering::Relaxed) < self.max_keys
    }
}

/// Rate limits kept in this process's memory, with governor.
///
/// `C` is the clock: governor's default (monotonic) in the server, a `FakeRelativeClock` in
/// tests.
pub struct LocalLimiter<C: Clock = DefaultClock> {
    table: LimitTable<Limit<C>>,
}

impl LocalLimiter<DefaultClock> {
    /// Limits for the server: `limits` from `rate_limits:`, and each route's name with its
    /// `rate_limit:` overrides.
    pub fn new<'a>(
        limits: &RateLimits,
        routes: impl IntoIterator<Item = (&'a str, &'a RouteRateLimit)>,
    ) -> Result<Self, RateLimitError> {
        Self::with_clock(limits, routes, DefaultClock::default())
    }

    /// The limits of `table`, counted in this process.
    pub fn counting(table: &LimitTable<Planned>) -> Self {
        Self::counting_with_clock(table, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalLimiter<C> {
    /// As [`LocalLimiter::new`], reading time from `clock`.
    pub fn with_clock<'a>(
        limits: &RateLimits,
        routes: impl IntoIterator<Item = (&'a str, &'a RouteRateLimit)>,
        clock: C,
    ) -> Result<Self, RateLimitError> {
        Ok(Self::counting_with_clock(
            &LimitTable::new(limits, routes)?,
            clock,
        ))
    }

    /// As [`LocalLimiter::counting`], reading time from `clock`.
    pub fn counting_with_clock(table: &LimitTable<Planned>, clock: C) -> Self {
        let max_keys = table.max_keys;
        Self {
            table: table.counted_by(|planned| Limit::new(planned, max_keys, clock.clone())),
        }
    }
}

impl<C> LocalLimiter<C>
where
    C: Clock + Send + Sync,
{
    /// [`Limiter::check`], answered at once: a few atomic operations per limit.
    pub fn check(&self, subject: &Subject<'_>) -> Decision {
        let checked = self
            .table
            .steps(subject)
            .try_fold(Decision::PASS, |so_far, (limit, key)| {
                so_far.and(limit.check(&key))
            });
        match checked {
            Ok(decision) | Err(decision) => decision,
        }
    }
}

impl<C> Limiter for LocalLimiter<C>
where
    C: Clock + Send + Sync,
{
    fn check<'a>(&'a self, subject: &'a Subject<'a>) -> Checking<'a> {
        Box::pin(std::future::ready(LocalLimiter::check(self, subject)))
    }

    fn evict_idle(&self) {
        for limit in self.table.all() {
            limit.governor.retain_recent();
            limit.governor.shrink_to_fit();
        }
    }

    fn key_count(&self) -> usize {
        self.table
            .all()
            .iter()
            .map(|limit| limit.governor.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    const ALICE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const BOB_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

    fn spec(requests: u32, per_secs: u64, burst: u32) -> LimitSpec {
        LimitSpec::new(requests, Duration::from_secs(per_secs), burst).unwrap()
    }

    fn only(kind: LimitKind, spec: LimitSpec) -> RateLimits {
        let mut limits = RateLimits {
            per_client: None,
            ..RateLimits::default()
        };
        match kind {
            LimitKind::Client => limits.per_client = Some(spec),
            LimitKind::User => limits.per_user = Some(spec),
            LimitKind::Route => limits.per_route = Some(spec),
            LimitKind::UserRoute => limits.per_user_route = Some(spec),
        }
        limits
    }

    fn fake_limiter(limits: &RateLimits) -> (LocalLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let no_overrides = RouteRateLimit::default();
        let limiter =
            LocalLimiter::with_clock(limits, [("api", &no_overrides)], clock.clone()).unwrap();
        (limiter, clock)
    }

    fn anonymous(client: IpAddr) -> Subject<'static> {
        Subject {
            stage: Stage::Anonymous,
            route: "api",
            client,
            user: None,
            public: false,
        }
    }

    fn identified<'a>(client: IpAddr, user: &'a str) -> Subject<'a> {
        Subject {
            stage: Stage::Identified,
            route: "api",
            client,
            user: Some(user),
            public: false,
        }
    }

    fn retry_after(decision: Decision) -> Duration {
        match decision {
            Decision::Deny { retry_after, .. } => retry_after,
            Decision::Allow { .. } => panic!("allowed: {decision:?}"),
        }
    }

    fn remaining(decision: Decision) -> u32 {
        decision.binding().unwrap().remaining
    }

    fn header_text(decision: &Decision) -> Vec<(String, String)> {
        decision
            .headers()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn burst_then_refusal_then_recovery() {
        // 3 per 30s: one cell every 10s, all three at once.
        let (limiter, clock) = fake_limiter(&only(LimitKind::Client, spec(3, 30, 3)));
        let alice = anonymous(ALICE_IP);
        for left in [2, 1, 0] {
            assert_eq!(remaining(limiter.check(&alice)), left);
        }
        let refused = limiter.check(&alice);
        assert_eq!(retry_after(refused), Duration::from_secs(10));
        assert!(matches!(
            refused,
            Decision::Deny {
                cause: DenyCause::Exhausted,
                ..
            }
        ));

        clock.advance(Duration::from_millis(4_500));
        let refused = limiter.check(&alice);
        assert_eq!(retry_after(refused), Duration::from_millis(5_500));
        assert!(header_text(&refused).contains(&("retry-after".into(), "6".into())));

        clock.advance(Duration::from_millis(5_500));
        assert_eq!(remaining(limiter.check(&alice)), 0);
        assert!(!limiter.check(&alice).is_allowed());

        // A whole window later the full burst is back.
        clock.advance(Duration::from_secs(30));
        assert_eq!(remaining(limiter.check(&alice)), 2);
    }

    #[test]
    fn a_user_is_limited_wherever_they_come_from() {
        let (limiter, _clock) = fake_limiter(&only(LimitKind::User, spec(2, 60, 2)));
        assert!(limiter.check(&identified(ALICE_IP, "alice")).is_allowed());
        assert!(limiter.check(&identified(BOB_IP, "alice")).is_allowed());
        let refused = limiter.check(&identified(ALICE_IP, "alice"));
        assert_eq!(refused.binding().unwrap().kind, LimitKind::User);
        assert!(!refused.is_allowed());
        // Another user from the same address has a limit of their own.
        assert!(limiter.check(&identified(ALICE_IP, "bob")).is_allowed());
        // Without a user, no user limit applies.
        assert_eq!(
            limiter.check(&Subject {
                user: None,
                public: false,
                ..identified(ALICE_IP, "")
            }),
            Decision::Allow { binding: None }
        );
    }

    #[test]
    fn ipv6_by_64_and_mapped_ipv4_as_ipv4() {
        let key = |text: &str| ClientKey::from(text.parse::<IpAddr>().unwrap());
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        // IPv4-compatible (`::a.b.c.d`, deprecated) is not mapped: it stays IPv6.
        assert_ne!(key("::192.0.2.1"), key("192.0.2.1"));

        let (limiter, _clock) = fake_limiter(&only(LimitKind::Client, spec(1, 60, 1)));
        let from = |ip: &str| limiter.check(&anonymous(ip.parse().unwrap())).is_allowed();
        assert!(from("2001:db8:1:2::1"));
        assert!(!from("2001:db8:1:2:aaaa::9"), "same /64 shares the limit");
        assert!(from("2001:db8:1:3::1"), "another /64 has its own");
        assert!(from("192.0.2.1"));
        assert!(!from("::ffff:192.0.2.1"), "mapped IPv4 is the IPv4 address");
    }

    #[test]
    fn strictest_limit_is_reported_and_refusals_spare_the_shared_limit() {
        let limits = RateLimits {
            per_client: None,
            per_user: Some(spec(2, 60, 2)),
            per_route: Some(spec(3, 60, 3)),
            ..RateLimits::default()
        };
        let (limiter, _clock) = fake_limiter(&limits);
        // user 2 left 1, route 3 left 2: the user limit binds.
        let first = limiter.check(&identified(ALICE_IP, "alice"));
        assert_eq!(first.binding().unwrap().kind, LimitKind::User);
        assert_eq!(remaining(first), 1);
        assert!(limiter.check(&identified(ALICE_IP, "alice")).is_allowed());
        // Alice's refusals come from her own limit and do not spend the route's.
        for _ in 0..5 {
            let refused = limiter.check(&identified(ALICE_IP, "alice"));
            assert_eq!(refused.binding().unwrap().kind, LimitKind::User);
        }
        // Bob: user 2 left 1, route 1 left 0: now the route binds.
        let bob = limiter.check(&identified(BOB_IP, "bob"));
        assert_eq!(bob.binding().unwrap().kind, LimitKind::Route);
        assert_eq!(remaining(bob), 0);
        let refused = limiter.check(&identified(BOB_IP, "bob"));
        assert_eq!(refused.binding().unwrap().kind, LimitKind::Route);
        assert_eq!(retry_after(refused), Duration::from_secs(20));
    }

    #[test]
    fn login_endpoints_default_to_thirty_at_once_then_one_a_second() {
        let clock = FakeRelativeClock::default();
        let login = RouteRateLimit::login_default();
        let no_overrides = RouteRateLimit::default();
        let limiter = LocalLimiter::with_clock(
            &RateLimits::default(),
            [("login", &login), ("api", &no_overrides)],
            clock.clone(),
        )
        .unwrap();
        let at_login = Subject {
            route: "login",
            ..anonymous(ALICE_IP)
        };
        for _ in 0..30 {
            assert!(limiter.check(&at_login).is_allowed());
        }
        let refused = limiter.check(&at_login);
        assert_eq!(refused.binding().unwrap().spec, spec(60, 60, 30));
        assert_eq!(retry_after(refused), Duration::from_secs(1));
        // The login limit counts apart: the client's own budget elsewhere is untouched.
        assert_eq!(remaining(limiter.check(&anonymous(ALICE_IP))), 199);
    }

    #[test]
    fn stages_check_their_own_limits_and_combine() {
        let limits = RateLimits {
            per_client: Some(spec(5, 1, 10)),
            per_route: Some(spec(100, 1, 100)),
            ..RateLimits::default()
        };
        let (limiter, _clock) = fake_limiter(&limits);
        let before = limiter.check(&anonymous(ALICE_IP));
        assert_eq!(before.binding().unwrap().kind, LimitKind::Client);
        let after = limiter.check(&identified(ALICE_IP, "alice"));
        assert_eq!(after.binding().unwrap().kind, LimitKind::Route);
        assert_eq!(before.stricter(after), before);
        assert_eq!(after.stricter(before), before);
        let deny = |secs, standing: &Decision| Decision::Deny {
            retry_after: Duration::from_secs(secs),
            binding: *standing.binding().unwrap(),
            cause: DenyCause::Exhausted,
        };
        let refused = deny(3, &after);
        let longer = deny(9, &before);
        assert_eq!(before.stricter(refused), refused);
        assert_eq!(refused.stricter(longer), longer);
        assert_eq!(longer.stricter(refused), longer);
        // Of two refusals with the same wait, the earlier stage's is reported.
        let tied = deny(3, &before);
        assert_eq!(tied.stricter(refused), tied);
        assert_eq!(refused.stricter(tied), refused);
        // So is the earlier stage's of two passes alike in requests left and reset.
        let standing = *after.binding().unwrap();
        let client = Decision::Allow {
            binding: Some(Standing {
                kind: LimitKind::Client,
                ..standing
            }),
        };
        let route = Decision::Allow {
            binding: Some(standing),
        };
        assert_eq!(client.stricter(route), client);
        assert_eq!(route.stricter(client), route);
        assert_eq!(Decision::Allow { binding: None }.stricter(after), after);
    }

    #[test]
    fn route_overrides_count_on_their_own() {
        let limits = RateLimits {
            per_route: Some(spec(1000, 1, 1000)),
            ..RateLimits::default()
        };
        let login = RouteRateLimit {
            per_client: Some(spec(1, 60, 1)),
            per_route: Some(spec(2, 60, 2)),
            ..RouteRateLimit::default()
        };
        let api = RouteRateLimit::default();
        let clock = FakeRelativeClock::default();
        let limiter =
            LocalLimiter::with_clock(&limits, [("login", &login), ("api", &api)], clock).unwrap();
        let on = |route: &'static str, client: IpAddr, stage| Subject {
            stage,
            route,
            client,
            user: None,
            public: false,
        };
        assert!(
            limiter
                .check(&on("login", ALICE_IP, Stage::Anonymous))
                .is_allowed()
        );
        let refused = limiter.check(&on("login", ALICE_IP, Stage::Anonymous));
        assert_eq!(retry_after(refused), Duration::from_secs(60));
        assert_eq!(
            refused.binding().unwrap().spec,
            spec(1, 60, 1),
            "the override's policy is reported"
        );
        // Elsewhere Alice has the global 100/s.
        let api_check = limiter.check(&on("api", ALICE_IP, Stage::Anonymous));
        assert_eq!(remaining(api_check), 199);
        // The login route's own back-end limit.
        assert!(
            limiter
                .check(&on("login", BOB_IP, Stage::Identified))
                .is_allowed()
        );
        assert!(
            limiter
                .check(&on("login", BOB_IP, Stage::Identified))
                .is_allowed()
        );
        assert!(
            !limiter
                .check(&on("login", BOB_IP, Stage::Identified))
                .is_allowed()
        );
        assert!(
            limiter
                .check(&on("api", BOB_IP, Stage::Identified))
                .is_allowed()
        );
        // A route the limiter was not told about gets the global limits.
        assert_eq!(
            remaining(limiter.check(&on("unknown", BOB_IP, Stage::Identified))),
            999
        );
    }

    #[test]
    fn duplicate_route_names_must_agree() {
        let limits = RateLimits::default();
        let a = RouteRateLimit::default();
        let b = RouteRateLimit {
            per_client: Some(spec(1, 1, 1)),
            ..RouteRateLimit::default()
        };
        assert!(LocalLimiter::new(&limits, [("x", &a), ("x", &a)]).is_ok());
        assert_eq!(
            LocalLimiter::new(&limits, [("x", &a), ("x", &b)]).err(),
            Some(RateLimitError::DuplicateRoute("x".into()))
        );
    }

    #[test]
    fn header_values() {
        let (limiter, _clock) = fake_limiter(&only(LimitKind::Client, spec(3, 30, 3)));
        let alice = anonymous(ALICE_IP);
        assert_eq!(
            header_text(&limiter.check(&alice)),
            [
                ("ratelimit-policy".into(), "\"client\";q=3;w=30".into()),
                ("ratelimit".into(), "\"client\";r=2;t=10".into()),
            ]
        );
        limiter.check(&alice);
        assert_eq!(
            header_text(&limiter.check(&alice))[1],
            ("ratelimit".into(), "\"client\";r=0;t=30".into())
        );
        assert_eq!(
            header_text(&limiter.check(&alice)),
            [
                ("ratelimit-policy".into(), "\"client\";q=3;w=30".into()),
                ("ratelimit".into(), "\"client\";r=0;t=10".into()),
                ("retry-after".into(), "10".into()),
            ]
        );
        assert!(Decision::Allow { binding: None }.headers().is_empty());
        assert_eq!(whole_seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_up(Duration::ZERO), 1);
        assert_eq!(whole_seconds_up(Duration::from_millis(2_001)), 3);

        let limits = RateLimits {
            per_client: None,
            per_user_route: Some(spec(200, 1, 400)),
            ..RateLimits::default()
        };
        let (limiter, _clock) = fake_limiter(&limits);
        assert_eq!(
            header_text(&limiter.check(&identified(ALICE_IP, "alice"))),
            [
                ("ratelimit-policy".into(), "\"user-route\";q=200;w=1".into()),
                ("ratelimit".into(), "\"user-route\";r=399;t=1".into()),
            ]
        );
    }

    /// A client limit of 10 a second that holds at most three keys (addresses `ip(n)`).
    fn three_keys() -> (LocalLimiter<FakeRelativeClock>, FakeRelativeClock) {
        fake_limiter(&RateLimits {
            max_keys: NonZeroUsize::new(3).unwrap(),
            ..only(LimitKind::Client, spec(10, 1, 10))
        })
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, n))
    }

    #[test]
    fn hard_cap_refuses_new_keys_until_idle_ones_go() {
        let (limiter, clock) = three_keys();
        for n in 1..=3 {
            assert!(limiter.check(&anonymous(ip(n))).is_allowed());
        }
        // Full, nothing idle yet: a new key is refused; known keys go on.
        let refused = limiter.check(&anonymous(ip(4)));
        assert!(matches!(
            refused,
            Decision::Deny {
                cause: DenyCause::TooManyKeys,
                ..
            }
        ));
        assert_eq!(retry_after(refused), Duration::from_secs(1));
        assert!(limiter.check(&anonymous(ip(1))).is_allowed());
        assert_eq!(limiter.key_count(), 3);

        // Forced sweeps are spaced: the idle keys wait for the next one.
        clock.advance(Duration::from_millis(500));
        assert!(!limiter.check(&anonymous(ip(5))).is_allowed());
        clock.advance(Duration::from_secs(2));
        assert!(limiter.check(&anonymous(ip(5))).is_allowed());
        assert_eq!(limiter.key_count(), 1);
        for n in 10..30 {
            limiter.check(&anonymous(ip(n)));
        }
        assert_eq!(limiter.key_count(), 3);
    }

    #[test]
    fn below_the_cap_a_check_never_sweeps() {
        // A sweep scans the whole table: only a full table pays for one, never the common case.
        let (limiter, clock) = three_keys();
        limiter.check(&anonymous(ip(1)));
        limiter.check(&anonymous(ip(2)));
        clock.advance(Duration::from_secs(2));
        // Both are idle now, and stay until an eviction or a full table sweeps them.
        assert!(limiter.check(&anonymous(ip(3))).is_allowed());
        assert_eq!(limiter.key_count(), 3);
    }

    #[test]
    fn config_defaults() {
        let limits: RateLimits = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(limits, RateLimits::default());
        assert_eq!(limits.per_client, Some(spec(100, 1, 200)));
        assert_eq!(limits.max_keys.get(), 1_000_000);
        assert!(limits.warnings().is_empty());
        let route: RouteRateLimit = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(route, RouteRateLimit::default());

        let off: RateLimits = serde_saphyr::from_str("per_client: null").unwrap();
        assert_eq!(off.per_client, None);
        assert_eq!(off.warnings().len(), 1);
    }

    #[test]
    fn config_full_example() {
        let limits: RateLimits = serde_saphyr::from_str(
            "per_client: { requests: 200, per: 1s, burst: 400 }\n\
             per_route: { requests: 5000, per: 1s }\n\
             per_user:\n  requests: 600\n  per: 1m\n\
             per_user_route: { requests: 10, per: 1h, burst: 2 }\n\
             max_keys: 50000\n",
        )
        .unwrap();
        assert_eq!(limits.per_client, Some(spec(200, 1, 400)));
        assert_eq!(
            limits.per_route,
            Some(spec(5000, 1, 5000)),
            "burst defaults to requests"
        );
        assert_eq!(limits.per_user, Some(spec(600, 60, 600)));
        assert_eq!(limits.per_user_route, Some(spec(10, 3600, 2)));
        assert_eq!(limits.max_keys.get(), 50_000);

        let route: RouteRateLimit =
            serde_saphyr::from_str("per_client: { requests: 5, per: 1m }").unwrap();
        assert_eq!(route.per_client, Some(spec(5, 60, 5)));
        assert_eq!(route.per_route, None);
    }

    #[test]
    fn config_invalid_values_refused() {
        for (yaml, expected) in [
            (
                "per_client: { requests: 0, per: 1s }",
                "`requests` must be at least 1",
            ),
            (
                "per_client: { requests: 5, per: 1s, burst: 0 }",
                "`burst` must be at least 1",
            ),
            (
                "per_client: { requests: 5, per: 0s }",
                "`per` must be longer than zero",
            ),
            (
                "per_client: { requests: 5, per: 1500ms }",
                "whole number of seconds",
            ),
            ("per_client: { requests: 5, per: 1 }", "has no unit"),
            (
                "per_client: { requests: 2000000, per: 1s }",
                "at most 1000000 requests",
            ),
            (
                "per_client: { requests: 1, per: 1d, burst: 2 }",
                "more than a day",
            ),
            ("per_client: { requests: 5, per: 1s, brust: 9 }", "brust"),
            ("per_clients: { requests: 5, per: 1s }", "per_clients"),
            ("max_keys: 0", "nonzero"),
        ] {
            let error = serde_saphyr::from_str::<RateLimits>(yaml)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        assert!(serde_saphyr::from_str::<RouteRateLimit>("max_keys: 5").is_err());
    }
}
