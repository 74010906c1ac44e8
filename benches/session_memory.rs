//! Memory per cached session (target: at most 1 KiB), measured by counting the heap.
//!
//! `SESSIONS` sessions are created in a store, then checked once each through a fresh
//! [`Sessions`] (as after a restart), which reads them from the store and fills its cache. The
//! heap still in use after that, minus before, divided by the count, is what one cached session
//! costs: the moka entry, its key, the shared `Live` record and its strings, and the cache's
//! tables, grown to hold them. Every session is checked once before, through another
//! `Sessions`, so that the store's own page cache is already warm and is not counted.
//!
//! The figures are the bytes the program asked for, and the number of heap blocks: the allocator
//! adds its own overhead per block, given as a range.
//!
//! ```sh
//! cargo bench --bench session_memory    # SESSIONS=20000 to change the count (the cache holds 100000)
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use wardgate::session::{SessionConfig, Sessions, Token};

mod support;
use support::{Fixture, T0};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Checks every token once through `sessions` (a cache miss each: a store read fills the
/// cache); returns how many sessions its cache then holds, after moka's pending maintenance.
fn check_all(
    runtime: &tokio::runtime::Runtime,
    sessions: &Sessions,
    tokens: &[Token],
    now: u64,
) -> u64 {
    let lifetimes = sessions.lifetimes();
    runtime.block_on(async {
        for token in tokens {
            sessions
                .check(token.as_str(), &lifetimes, now)
                .await
                .unwrap()
                .unwrap();
        }
    });
    sessions.cached()
}

fn main() {
    let count: usize = std::env::var("SESSIONS").map_or(10_000, |n| n.parse().unwrap());
    let fixture = Fixture::new();
    let config = SessionConfig::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();

    eprintln!("creating {count} sessions in the store ...");
    let tokens: Vec<Token> = {
        let creator = Sessions::new(&fixture.stores(), fixture.keyring.clone(), &config);
        runtime.block_on(async {
            let mut tokens = Vec::with_capacity(count);
            for _ in 0..count {
                tokens.push(
                    creator
                        .create(fixture.new_session(), creator.epoch(), T0)
                        .await
                        .unwrap()
                        .0,
                );
            }
            tokens
        })
    };
    let now = T0 + 1;
    let warm = Sessions::new(&fixture.stores(), fixture.keyring.clone(), &config);
    check_all(&runtime, &warm, &tokens, now);
    drop(warm);

    let sessions = Sessions::new(&fixture.stores(), fixture.keyring.clone(), &config);
    let region = Region::new(GLOBAL);
    let cached = check_all(&runtime, &sessions, &tokens, now);
    let change = region.change();
    assert_eq!(cached, count as u64, "every session is in the cache");

    let bytes = change.bytes_allocated as i128 - change.bytes_deallocated as i128
        + change.bytes_reallocated as i128;
    let blocks = change.allocations as i128 - change.deallocations as i128;
    let n = count as f64;
    // glibc's malloc keeps 8 bytes beside each block and hands out 16-byte multiples, 32 at
    // least: 8 to 31 bytes more per block than asked for.
    println!(
        "memory per cached session ({count} sessions): {:.0} bytes requested in {:.1} heap \
         blocks, {:.0} to {:.0} bytes with malloc's per-block overhead (target: at most 1024)",
        bytes as f64 / n,
        blocks as f64 / n,
        (bytes + 8 * blocks) as f64 / n,
        (bytes + 31 * blocks) as f64 / n,
    );
}
