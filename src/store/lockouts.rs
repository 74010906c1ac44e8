//! Failure counters and soft locks, per key (an account, a client address, a user's second
//! factor): the state of `auth::lockout`, behind a trait so that every replica counts the same
//! attempts (N replicas must not give an attacker N times the guesses).
//!
//! **Contract.** [`Lockouts::admit`] decides, atomically with every other admission on the same
//! key, whether one more attempt may run: refused while the key is locked, or while failures in
//! the window plus attempts already in flight reach the limit; an admitted attempt holds a place
//! until it is settled. [`Admitted::failed`] turns the place into a counted failure (and returns
//! the lock it starts), [`Admitted::succeeded`] gives it back (and, where the policy says so,
//! forgets the key); an attempt dropped unsettled gives its place back too (the work never ran).
//! A backend that cannot answer returns an error and the step is refused (503): an attempt that
//! cannot be counted is never verified. Entries expire by themselves (a window past their last
//! failure or lock); [`Lockouts::prune`] removes the expired ones where the backend does not.
//! Time is a parameter. The rules themselves (window, back-off, probation) are written once, in
//! `auth::lockout`, whose [`Lockout`](crate::auth::lockout::Lockout) is the embedded backend.

use super::Pending;

/// [`LockoutConfig`](crate::auth::lockout::LockoutConfig), checked, in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub(crate) max_failures: u32,
    pub(crate) window: u64,
    pub(crate) base_backoff: u64,
    pub(crate) max_backoff: u64,
    pub(crate) max_keys: usize,
}

impl LockoutPolicy {
    /// Failures within the window that lock a key.
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// How long a failure counts, and an ended lock keeps its key on probation (seconds).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The first lock's length, and the longest lock (seconds).
    pub fn backoffs(&self) -> (u64, u64) {
        (self.base_backoff, self.max_backoff)
    }
}

/// What a success does to a key's failures: forgets them (accounts, users), or keeps them
/// (client addresses: see `auth::lockout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnSuccess {
    Forget,
    Keep,
}

/// An attempt that was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// The key is locked until `until` (unix seconds).
    #[error("locked until {until}")]
    Locked { until: u64 },
    /// As many attempts are in flight as the key has failures left before the lock.
    #[error("as many attempts are in flight as may still fail before the lock")]
    InFlight,
}

/// A lock has just started: for the security log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEvent<K> {
    pub key: K,
    /// When the lock ends (unix seconds).
    pub until: u64,
    /// 1 for the first lock, then 2, 3, ... while the key keeps failing.
    pub lock: u32,
}

/// The counters of one kind of key.
pub trait Lockouts<K>: Send + Sync {
    /// Admits an attempt on `key` at `now`, before any work is done for it.
    fn admit(&self, key: &K, now: u64) -> Pending<'_, Result<Box<dyn Admitted<K>>, NotAdmitted>>;
    /// Forgets entries with nothing left to say at `now`; returns how many.
    fn prune(&self, now: u64) -> Pending<'_, usize>;
}

/// One admitted attempt, holding its place until it is settled or dropped.
pub trait Admitted<K>: Send {
    /// The attempt failed at `now`; the lock it starts, if it does.
    fn failed(self: Box<Self>, now: u64) -> Pending<'static, Option<LockEvent<K>>>;
    /// The attempt succeeded.
    fn succeeded(self: Box<Self>) -> Pending<'static, ()>;
}

#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    const T0: u64 = 1_800_000_000;
    const MIN: u64 = 60;

    /// The contract every backend keeps, built with the default policy (5 failures in 15
    /// minutes lock for 1 minute) and forgetting a key on success.
    pub async fn kept_by(lockouts: &dyn Lockouts<u32>) {
        let admit = |key: u32, now: u64| lockouts.admit(&key, now);
        // Five places: five attempts at once, and a sixth is refused while they run.
        let mut burst = Vec::new();
        for _ in 0..5 {
            burst.push(admit(1, T0).await.unwrap().unwrap());
        }
        let refused = admit(1, T0).await.unwrap().err();
        assert_eq!(refused, Some(NotAdmitted::InFlight));
        assert!(admit(2, T0).await.unwrap().is_ok(), "other keys are apart");
        // One dropped unsettled gives its place back; one success forgets nothing yet counted.
        drop(burst.pop());
        let right = admit(1, T0).await.unwrap().unwrap();
        right.succeeded().await.unwrap();
        // The other four fail; the fifth failure locks.
        let mut events = Vec::new();
        for attempt in burst {
            events.push(attempt.failed(T0 + 1).await.unwrap());
        }
        assert_eq!(events, [None, None, None, None]);
        let fifth = admit(1, T0 + 2).await.unwrap().unwrap();
        let lock = fifth.failed(T0 + 2).await.unwrap();
        let until = T0 + 2 + MIN;
        assert_eq!(
            lock,
            Some(LockEvent {
                key: 1,
                until,
                lock: 1
            })
        );
        let locked = admit(1, until - 1).await.unwrap().err();
        assert_eq!(locked, Some(NotAdmitted::Locked { until }));
        // The lock ends by itself; the entry goes a window later.
        assert!(admit(1, until).await.unwrap().is_ok());
        assert_eq!(lockouts.prune(until + 15 * MIN).await.unwrap(), 1);
    }
}
