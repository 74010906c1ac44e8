//! Heap held by the rate limiter for a full table of client keys, and given back by eviction.
//!
//! The heap is counted by a global allocator, which sees every allocation of the process: so
//! this is a test binary of its own, with this one test, and nothing else allocates meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use wardgate::ratelimit::{
    DEFAULT_MAX_KEYS, Limiter, LocalLimiter, RateLimits, RouteRateLimit, Stage, Subject,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes in use now.
fn heap() -> i128 {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as i128 - stats.bytes_deallocated as i128
}

#[test]
fn a_full_client_limit_costs_about_100_bytes_a_key_and_eviction_gives_them_back() {
    // The default limits: `per_client` only, holding at most `max_keys` addresses.
    let keys = DEFAULT_MAX_KEYS.get();
    let clock = FakeRelativeClock::default();
    let no_routes: [(&str, &RouteRateLimit); 0] = [];
    let limiter =
        LocalLimiter::with_clock(&RateLimits::default(), no_routes, clock.clone()).unwrap();
    let empty = heap();
    for n in 0..u32::try_from(keys).unwrap() {
        let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        let subject = Subject {
            stage: Stage::Anonymous,
            route: "api",
            client,
            user: None,
            public: false,
        };
        assert!(limiter.check(&subject).is_allowed());
    }
    assert_eq!(limiter.key_count(), keys);
    let full = heap() - empty;

    // Past the window every bucket is full again, so every key is idle.
    clock.advance(Duration::from_secs(3));
    limiter.evict_idle();
    assert_eq!(limiter.key_count(), 0);
    let evicted = heap() - empty;
    let per_key = full / keys as i128;
    eprintln!(
        "rate limit heap: {keys} client keys: {} KiB ({per_key} bytes a key); after eviction {} KiB",
        full / 1024,
        evicted / 1024
    );
    // Generous: a regression to kilobytes per key would show.
    assert!(per_key < 256, "{per_key} bytes a key");
    assert!(
        evicted < full / 20,
        "{evicted} of {full} bytes kept after eviction"
    );
}
