//! Sessions in Redis (`shared_state`), against a private `redis-server` on a free port: what a
//! session cache miss costs (the sealed record read from Redis and opened, the account read,
//! the session cached), and how long a revocation takes to reach another replica's cache (one
//! replica ends a session; the time until the other, which had it cached, refuses it: the
//! publish, pub/sub, and the other's feed task dropping the entry; the other replica is asked
//! every millisecond, so the figure is an upper bound to within 1 ms: asking in a busy loop
//! starves Redis and the feed task of the machine's two cores). Two `Sessions` on one Redis
//! stand for two replicas. A cache hit is `benches/session.rs`: Redis is not asked.
//!
//! Needs `redis-server` (`scripts/server-deps.sh` installs it). Run: `cargo bench --bench
//! shared_state`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A round trip through Redis is timed by the clock: this file is the edge that reads it.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use wardgate::session::{SessionConfig, Sessions};
use wardgate::store::redis::Redis;
use wardgate::store::sessions::SessionStore;

mod support;
use support::{Fixture, T0};

#[path = "../tests/servers/redis.rs"]
mod private_redis;
use private_redis::PrivateRedis;

fn shared_state(c: &mut Criterion) {
    let server = PrivateRedis::start();
    let fixture = Fixture::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replica = || {
        let _entered = runtime.enter();
        let redis = Redis::connect(&server.url(), None, None, "bench", fixture.keyring.clone());
        let redis = Arc::new(redis.unwrap());
        let mut stores = fixture.stores();
        stores.sessions = redis.clone();
        stores.ephemeral = redis.clone();
        let config = SessionConfig::default();
        let sessions = Arc::new(Sessions::new(&stores, fixture.keyring.clone(), &config));
        runtime.spawn({
            let sessions = sessions.clone();
            async move { sessions.follow_revocations().await }
        });
        // Until its subscription stands, a replica trusts no cached session.
        while !redis.feed_is_live() {
            std::thread::sleep(Duration::from_millis(10));
        }
        sessions
    };
    let (a, b) = (replica(), replica());
    let lifetimes = a.lifetimes();
    let now = T0 + 1;

    c.bench_function("session check in Redis, cache miss", |bench| {
        bench.iter_custom(|iters| {
            runtime.block_on(async {
                let mut tokens = Vec::new();
                for _ in 0..iters {
                    let created = a.create(fixture.new_session(), a.epoch(), T0).await;
                    tokens.push(created.unwrap().0);
                }
                let start = Instant::now();
                for token in &tokens {
                    let live = b.check(token.as_str(), &lifetimes, now).await;
                    assert!(live.unwrap().is_ok());
                }
                start.elapsed()
            })
        })
    });

    let mut group = c.benchmark_group("revocation");
    group.sample_size(20);
    group.bench_function("ended on one replica, refused by the other", |bench| {
        bench.iter_custom(|iters| {
            runtime.block_on(async {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let created = a.create(fixture.new_session(), a.epoch(), T0).await;
                    let (token, live) = created.unwrap();
                    let cached = b.check(token.as_str(), &lifetimes, now).await;
                    assert!(cached.unwrap().is_ok());
                    let start = Instant::now();
                    assert!(a.end(live.key).await.unwrap());
                    while b
                        .check(token.as_str(), &lifetimes, now)
                        .await
                        .unwrap()
                        .is_ok()
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    took += start.elapsed();
                }
                took
            })
        })
    });
    group.finish();
}

criterion_group!(benches, shared_state);
criterion_main!(benches);
