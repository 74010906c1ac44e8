//! Rate limits counted in Redis, so that every replica spends one budget: the GCRA of
//! [`LocalLimiter`](crate::ratelimit::LocalLimiter) (governor's, to the nanosecond: the same
//! answers, requests left and `Retry-After` for the same requests at the same times), one Lua
//! script per limit and request, so that two replicas never both spend a key's last request.
//! Which limits a request checks, and in what order, is the one [`LimitTable`] both use.
//!
//! **State.** A key holds its theoretical arrival time (TAT: when its bucket is full again), in
//! nanoseconds since the unix epoch, and expires at that moment: an idle key costs nothing, so
//! `rate_limits.max_keys` does not apply here, and [`Limiter::evict_idle`] only sweeps the
//! stand-in below.
//!
//! ```text
//!   <prefix>:limit:<kind>:<scope>:<key>   string  TAT, unix nanoseconds; PX until it is reached
//!     kind   client | user | route | user-route
//!     scope  `*` for a global limit, the route's name in hex for a route's override
//!     key    the client (`192.0.2.1`, `2001:db8:1:2::/64`), the user id and the route name
//!            in hex (`<user>.<route>` for user-route)
//! ```
//!
//! **Time** is the wall clock of the replica that checks ([`Precise`], read once per limit as
//! governor reads its own), passed to the script: every replica must read the same time base,
//! and NTP keeps them within milliseconds, which moves a wait by as much. Lua's numbers are
//! doubles, exact to 2^53 (104 days of nanoseconds), so the script never computes with a time
//! itself, only with its distance from now, given to it as whole seconds and nanoseconds.
//!
//! **Fails closed.** A Redis that does not answer within the call deadline refuses the request
//! ([`DenyCause::Unavailable`], 503 `WG-STORE-001`): a request is never let through uncounted.
//! The one exception keeps the public routes up (a route without a session, the JWKS, the
//! pages' assets; [`Subject::public`]): their requests are then counted by a stand-in
//! [`LocalLimiter`] of the same limits in this replica, so each replica gives a client its own
//! budget until Redis is back; the log has said so when Redis stopped answering
//! (`store::reachable`). Protected routes and logins refuse, as they need Redis anyway.

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::TryStreamExt;
use redis::Script;

use super::Redis;
use crate::clock::Precise;
use crate::ratelimit::{
    Checking, Decision, DenyCause, LimitKey, LimitTable, Limiter, LocalLimiter, Planned, Subject,
};

/// KEYS: the TAT. ARGV: now (whole seconds, then nanoseconds), the cell and the tolerance
/// (`burst - 1` cells) in nanoseconds. `{1, ahead}`: passed, the TAT now `ahead` ns after now;
/// `{0, wait}`: refused, a request may pass in `wait` ns. Governor's `test_and_update`, with
/// every time as its distance from now.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local now_s, now_ns = tonumber(ARGV[1]), tonumber(ARGV[2])
        local cell, tolerance = tonumber(ARGV[3]), tonumber(ARGV[4])
        local ahead = 0
        local tat = redis.call('GET', KEYS[1])
        if tat then
            ahead = (tonumber(string.sub(tat, 1, -10)) - now_s) * 1e9
                + tonumber(string.sub(tat, -9)) - now_ns
        end
        if ahead > tolerance then return {0, ahead - tolerance} end
        local next = math.max(ahead, 0) + cell
        local at = now_ns + next
        local text = string.format('%d%09d', now_s + math.floor(at / 1e9), at % 1e9)
        redis.call('SET', KEYS[1], text, 'PX', math.ceil(next / 1e6))
        return {1, next}",
    )
});

/// One limit as Redis counts it.
struct Counted {
    planned: Planned,
    /// `<prefix>:limit:<kind>:<scope>:`, the key's own part follows.
    prefix: String,
    /// The spec's cell and tolerance (`burst - 1` cells), in nanoseconds.
    cell: u64,
    tolerance: u64,
    /// The same two as the script's arguments.
    cell_arg: String,
    tolerance_arg: String,
}

/// Rate limits shared by every replica, in Redis.
pub struct RedisLimiter {
    redis: Redis,
    table: LimitTable<Counted>,
    now: Precise,
    /// Counts the public routes' requests while Redis cannot ([`Subject::public`]).
    stand_in: LocalLimiter,
}

impl RedisLimiter {
    /// The limits of `table`, counted in `redis` at the times `now` reads.
    pub fn new(redis: Redis, table: &LimitTable<Planned>, now: Precise) -> Self {
        let stand_in = LocalLimiter::counting(table);
        let table = table.counted_by(|planned| {
            let scope = planned.route.as_deref().map_or("*".into(), hex::encode);
            let spec = &planned.spec;
            let cell = u64::try_from(spec.cell().as_nanos()).unwrap_or(u64::MAX);
            let tolerance = cell.saturating_mul(u64::from(spec.burst() - 1));
            Counted {
                prefix: redis.key("limit", &format!("{}:{scope}:", planned.kind.name())),
                planned: planned.clone(),
                cell,
                tolerance,
                cell_arg: cell.to_string(),
                tolerance_arg: tolerance.to_string(),
            }
        });
        Self {
            redis,
            stand_in,
            table,
            now,
        }
    }

    /// One limit's decision for `key`, now.
    async fn count(&self, limit: &Counted, key: &LimitKey) -> Decision {
        let (cell, tolerance) = (limit.cell, limit.tolerance);
        let now = (self.now)();
        let (secs, nanos) = (now.as_secs().to_string(), now.subsec_nanos().to_string());
        let args = [
            secs.as_bytes(),
            nanos.as_bytes(),
            limit.cell_arg.as_bytes(),
            limit.tolerance_arg.as_bytes(),
        ];
        let key = format!("{}{}", limit.prefix, key_text(key));
        match self.redis.run(&GCRA, &[&key], &args).await {
            Ok((1, ahead)) => {
                let left = tolerance.saturating_add(cell).saturating_sub(ahead) / cell;
                limit
                    .planned
                    .allowed(u32::try_from(left).unwrap_or(u32::MAX))
            }
            Ok((_, wait)) => limit
                .planned
                .denied(Duration::from_nanos(wait), DenyCause::Exhausted),
            Err(error) => {
                tracing::warn!(%error, "a rate limit could not be counted: the request is refused");
                limit.planned.denied(Duration::ZERO, DenyCause::Unavailable)
            }
        }
    }
}

/// The key's own part of its Redis key (module doc).
fn key_text(key: &LimitKey) -> String {
    match key {
        LimitKey::Client(client) => client.to_string(),
        LimitKey::User(name) | LimitKey::Route(name) => hex::encode(name.as_bytes()),
        LimitKey::UserRoute(user, route) => {
            format!("{}.{}", hex::encode(&**user), hex::encode(&**route))
        }
    }
}

impl Limiter for RedisLimiter {
    fn check<'a>(&'a self, subject: &'a Subject<'a>) -> Checking<'a> {
        let steps = futures_util::stream::iter(self.table.steps(subject).map(Ok::<_, Decision>));
        Box::pin(async move {
            let checked = steps
                .try_fold(Decision::PASS, |so_far, (limit, key)| async move {
                    so_far.and(self.count(limit, &key).await)
                })
                .await;
            match checked {
                Ok(decision) | Err(decision) => match decision {
                    Decision::Deny {
                        cause: DenyCause::Unavailable,
                        ..
                    } if subject.public => self.stand_in.check(subject),
                    decision => decision,
                },
            }
        })
    }

    /// The stand-in's idle keys; Redis's expire by themselves when their bucket is full again.
    fn evict_idle(&self) {
        self.stand_in.evict_idle();
    }

    /// The stand-in's keys: those in Redis are not this replica's.
    fn key_count(&self) -> usize {
        self.stand_in.key_count()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use governor::clock::{Clock, FakeRelativeClock};

    use super::super::tests::on_private_server;
    use super::*;
    use crate::identity::{Keyring, MasterKey};
    use crate::ratelimit::{LimitSpec, LocalLimiter, RateLimits, RouteRateLimit, Stage};

    const ALICE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const BOB_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    /// The fake clock's zero, as a wall-clock time (2027): times far beyond Lua's exact range.
    const EPOCH: Duration = Duration::from_secs(1_800_000_000);

    fn spec(requests: u32, per_secs: u64, burst: u32) -> LimitSpec {
        LimitSpec::new(requests, Duration::from_secs(per_secs), burst).unwrap()
    }

    /// Every kind of limit, one with a cell that is no whole number of microseconds (3 a
    /// second), and a route that overrides two of them.
    fn table() -> LimitTable<Planned> {
        let limits = RateLimits {
            per_client: Some(spec(3, 30, 3)),
            per_user: Some(spec(3, 1, 3)),
            per_route: Some(spec(4, 10, 2)),
            per_user_route: Some(spec(5, 60, 5)),
            ..RateLimits::default()
        };
        let login = RouteRateLimit {
            per_client: Some(spec(1, 60, 1)),
            per_route: Some(spec(2, 60, 2)),
            ..RouteRateLimit::default()
        };
        let api = RouteRateLimit::default();
        LimitTable::new(&limits, [("login", &login), ("api", &api)]).unwrap()
    }

    fn unavailable(decision: &Decision) -> bool {
        matches!(
            decision,
            Decision::Deny {
                cause: DenyCause::Unavailable,
                ..
            }
        )
    }

    /// Reads `clock` as the wall clock, from [`EPOCH`].
    fn precise(clock: &FakeRelativeClock) -> Precise {
        let clock = clock.clone();
        Arc::new(move || EPOCH + Duration::from(clock.now()))
    }

    fn second_replica(url: &str) -> Redis {
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        Redis::connect(url, None, None, "wg-test", keyring).unwrap()
    }

    fn on(
        stage: Stage,
        route: &'static str,
        client: IpAddr,
        user: Option<&'static str>,
    ) -> Subject<'static> {
        Subject {
            stage,
            route,
            client,
            user,
            public: false,
        }
    }

    #[tokio::test]
    async fn redis_decides_as_governor_does_to_the_nanosecond() {
        let (_server, redis) = on_private_server();
        let table = table();
        let clock = FakeRelativeClock::default();
        let local = LocalLimiter::counting_with_clock(&table, clock.clone());
        let shared = RedisLimiter::new(redis, &table, precise(&clock));
        let anonymous = |route, client| on(Stage::Anonymous, route, client, None);
        let identified = |route, user| on(Stage::Identified, route, BOB_IP, Some(user));
        let mut script: Vec<(u64, Subject<'static>, usize)> = vec![
            // A burst of the client limit, refusals, then refill after time advances.
            (0, anonymous("api", ALICE_IP), 4),
            (4_500, anonymous("api", ALICE_IP), 1),
            (5_500, anonymous("api", ALICE_IP), 2),
            (1, anonymous("unknown", ALICE_IP), 1),
            // The login route's own client limit, apart from the global one.
            (0, anonymous("login", ALICE_IP), 2),
            (0, anonymous("api", BOB_IP), 1),
            // After the client: per user and route, per user, per route; alice spends the route.
            (0, identified("api", "alice"), 3),
            (0, identified("api", "bob"), 2),
            (0, identified("login", "bob"), 3),
        ];
        // A third of a second is one cell of the user limit: refills that are not whole
        // microseconds, and waits measured in nanoseconds.
        for step in [100, 233, 1, 333, 999, 30_000, 60_000] {
            script.push((step, identified("api", "alice"), 3));
            script.push((0, anonymous("api", ALICE_IP), 2));
            script.push((0, identified("login", "carol"), 2));
        }
        let mut refusals = 0;
        for (i, (advance, subject, times)) in script.into_iter().enumerate() {
            clock.advance(Duration::from_millis(advance));
            for _ in 0..times {
                let expected = local.check(&subject);
                refusals += usize::from(!expected.is_allowed());
                assert_eq!(
                    shared.check(&subject).await,
                    expected,
                    "step {i}: {subject:?}"
                );
            }
        }
        assert!(refusals > 10, "the script reaches the limits: {refusals}");
    }

    #[tokio::test]
    async fn replicas_share_one_budget() {
        let (server, redis) = on_private_server();
        let limits = RateLimits {
            per_client: Some(spec(4, 60, 4)),
            ..RateLimits::default()
        };
        let table = LimitTable::new(&limits, []).unwrap();
        let clock = FakeRelativeClock::default();
        let replicas = [
            RedisLimiter::new(redis, &table, precise(&clock)),
            RedisLimiter::new(second_replica(&server.url()), &table, precise(&clock)),
        ];
        let alice = on(Stage::Anonymous, "api", ALICE_IP, None);
        let mut passed = 0;
        for round in 0..6 {
            passed += usize::from(replicas[round % 2].check(&alice).await.is_allowed());
        }
        assert_eq!(
            passed, 4,
            "a burst split over two replicas stops at the limit"
        );
        let refused = replicas[1].check(&alice).await;
        assert_eq!(refused.binding().unwrap().remaining, 0);
        assert!(
            matches!(refused, Decision::Deny { cause: DenyCause::Exhausted, retry_after, .. } if retry_after == Duration::from_secs(15))
        );
    }

    #[tokio::test]
    async fn a_redis_that_does_not_answer_refuses_every_request() {
        let (server, redis) = on_private_server();
        let limits = RateLimits::default();
        let table = LimitTable::new(&limits, []).unwrap();
        let limiter = RedisLimiter::new(redis, &table, precise(&FakeRelativeClock::default()));
        let alice = on(Stage::Anonymous, "api", ALICE_IP, None);
        assert!(limiter.check(&alice).await.is_allowed());
        server.stop();
        let refused = limiter.check(&alice).await;
        assert!(unavailable(&refused), "{refused:?}");
        // A request no limit applies to needs no store.
        let identified = on(Stage::Identified, "api", ALICE_IP, Some("alice"));
        assert_eq!(limiter.check(&identified).await, Decision::PASS);
    }

    #[tokio::test]
    async fn without_redis_public_routes_are_counted_by_the_replica_alone() {
        let (server, redis) = on_private_server();
        let limits = RateLimits {
            per_client: Some(spec(2, 3600, 2)),
            ..RateLimits::default()
        };
        let table = LimitTable::new(&limits, []).unwrap();
        let limiter = RedisLimiter::new(redis, &table, precise(&FakeRelativeClock::default()));
        server.stop();
        let public = Subject {
            public: true,
            ..on(Stage::Anonymous, "public", ALICE_IP, None)
        };
        assert!(limiter.check(&public).await.is_allowed());
        assert!(limiter.check(&public).await.is_allowed());
        let refused = limiter.check(&public).await;
        assert!(
            matches!(
                refused,
                Decision::Deny {
                    cause: DenyCause::Exhausted,
                    ..
                }
            ),
            "the stand-in keeps the limit: {refused:?}"
        );
        assert_eq!(limiter.key_count(), 1, "the stand-in's key");
        let protected = on(Stage::Anonymous, "api", BOB_IP, None);
        let refused = limiter.check(&protected).await;
        assert!(unavailable(&refused), "{refused:?}");
    }

    #[tokio::test]
    async fn keys_name_their_limit_scope_and_key() {
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let redis = Redis::connect("redis://127.0.0.1:1/", None, None, "wg", keyring).unwrap();
        let limiter = RedisLimiter::new(redis, &table(), precise(&FakeRelativeClock::default()));
        let prefixes: Vec<_> = limiter
            .table
            .all()
            .iter()
            .map(|l| l.prefix.as_str())
            .collect();
        assert_eq!(
            prefixes,
            [
                "wg:limit:client:*:",
                "wg:limit:user:*:",
                "wg:limit:route:*:",
                "wg:limit:user-route:*:",
                "wg:limit:client:6c6f67696e:",
                "wg:limit:route:6c6f67696e:",
            ]
        );
        let v6: IpAddr = "2001:db8:1:2::9".parse().unwrap();
        assert_eq!(key_text(&LimitKey::Client(v6.into())), "2001:db8:1:2::/64");
        assert_eq!(key_text(&LimitKey::Client(ALICE_IP.into())), "192.0.2.1");
        assert_eq!(
            key_text(&LimitKey::UserRoute("a:".into(), "b".into())),
            "613a.62"
        );
    }
}
