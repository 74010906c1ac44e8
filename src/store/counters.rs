//! Where the request path counts: rate limits and lockout counters, in this process, or in
//! the Redis every replica shares (`shared_state`), so that N replicas never give a client N
//! times the budget or an attacker N times the guesses. Chosen once at start; the limits and
//! the lockout rules are the same either way, only who keeps the count differs. The lockout
//! counters are built beside their rules, in `auth::lockout`.

use std::sync::Arc;

use crate::ratelimit::{LimitTable, Limiter, LocalLimiter, Planned};

/// Who keeps the counts.
#[derive(Clone, Default)]
pub enum Counters {
    /// This process's memory: one replica.
    #[default]
    Local,
    /// The shared Redis, under its prefix.
    #[cfg(feature = "redis")]
    Redis(crate::store::redis::Redis),
}

impl Counters {
    /// The rate limits of `table`, counted here.
    pub fn limiter(&self, table: &LimitTable<Planned>) -> Arc<dyn Limiter> {
        match self {
            Counters::Local => Arc::new(LocalLimiter::counting(table)),
            #[cfg(feature = "redis")]
            Counters::Redis(redis) => Arc::new(crate::store::redis::RedisLimiter::new(
                redis.clone(),
                table,
                crate::clock::system_precise(),
            )),
        }
    }
}
