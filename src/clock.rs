//! The wall clock, read only at the edges: where a request starts, where an admin call starts.
//! Everything below takes `now` (unix seconds) as a parameter, so expiry, lockout and TOTP
//! windows are tested by passing a time, never by sleeping.
//!
//! The gateway holds its clock as a value: the binary uses [`system`]; an end-to-end test
//! hands in a clock it can move, to walk a real browser past a session's absolute cap.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds, now.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Time since the unix epoch, to the nanosecond: for what several replicas count in fractions
/// of a second (the shared rate limiter), where each replica's monotonic clock would mean
/// nothing to the others.
pub type Precise = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The operating system's wall clock.
pub fn system() -> Clock {
    let precise = system_precise();
    Arc::new(move || precise().as_secs())
}

/// The operating system's wall clock, to the nanosecond.
pub fn system_precise() -> Precise {
    Arc::new(|| {
        #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    })
}
