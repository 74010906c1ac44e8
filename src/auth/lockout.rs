//! Brute-force protection: a soft lock with growing back-off, per key.
//!
//! **The threat.** Online guessing: of one user's password or TOTP code (a 6-digit code is one
//! in a million; unthrottled, a script finds it within hours), or of many users' passwords from
//! one client address (password spraying, credential stuffing).
//!
//! **The rule.** After `max_failures` failures within `window` (default 5 in 15 minutes) a key is
//! locked: [`Lockout::admit`] refuses it until the lock ends. The first lock lasts
//! `base_backoff` (1 minute); a key that fails again within `window` after a lock ended is locked
//! at once, for twice as long as before: 1, 2, 4, 8, 16, 32 minutes, then `max_backoff` (1 hour)
//! for every further lock. One window with no failure after a lock forgets the key, as does a
//! success outside a lock. The lock is *soft*: it ends by itself, so an attacker can delay a user
//! but never lock them out for good, and no administrator has to unlock anyone.
//!
//! ```text
//!                failure                 N-th failure within the window
//!      Open ──────────────▶ Counting ───────────────────────────────▶ Locked { until }
//!       ▲                    │    ▲  │                                  │   ▲
//!       │ window passes      │    └──┘ failure, fewer than N            │   │ failure: locked
//!       │ with no failure    │                                          │   │ again, back-off
//!       ├────────────────────┘                              now >= until│   │ doubled (capped)
//!       │                                                               ▼   │
//!       │            window passes with no failure                   Probation
//!       ├────────────────────────────────────────────────────────────────┘
//!       │
//!       └──────── success, in any state but Locked before `until`
//! ```
//!
//! **Attempts in flight.** Verifying a password takes an argon2id run (tens of milliseconds),
//! so a burst of guesses sent at once would all pass a lock that is only checked before the
//! work and counted after it. So an attempt is *admitted* ([`Lockout::admit`]) before any work,
//! and from then until it is settled it counts against the limit as if it had already failed:
//! a key admits no more attempts than it has failures left before the lock (one while on
//! probation, where one failure locks again). A failure ([`Attempt::failed`]) turns the place
//! into a counted failure; a success ([`Attempt::succeeded`]) gives it back; an attempt dropped
//! unsettled (the work never ran: the hashing pool was busy) gives it back too. Failures plus
//! attempts in flight never exceed `max_failures`, so the failure that starts a lock is the only
//! attempt on its key still in flight: no success can finish after a lock started. (Counting
//! only after the work let 29 guesses sent at once all be verified, and a right password sent
//! just behind them open a challenge.)
//!
//! ```text
//!   admit(key, now) ── locked ──────────────────────────────────────▶ NotAdmitted::Locked
//!      │  failures in the window + attempts in flight = max_failures ─▶ NotAdmitted::InFlight
//!      ▼  Attempt (holds one place)
//!   the work ─┬─ failed(now):  the place becomes a failure (it may start a lock)
//!             ├─ succeeded():  the place is given back (and the key forgotten, for accounts
//!             │                and users)
//!             └─ dropped:      the place is given back
//! ```
//!
//! **How the server uses it.** One [`Lockout`] per kind of key, each an independent counter:
//!
//! - keyed by **account**, for password attempts ([`OnSuccess::Forget`]);
//! - keyed by **client address** (IPv6 by /64), for password attempts from that address
//!   ([`OnSuccess::Keep`]): a success must not clear it, or an attacker holding one valid account
//!   could log into it between guesses and reset the counter of their own address;
//! - keyed by **user**, for second-factor attempts ([`OnSuccess::Forget`]): every refusal of
//!   [`ActiveTotp::verify`] (wrong, malformed, replayed) and every refused assertion is a failure.
//!   With the defaults an attacker gets 5 guesses, then about 12 a day, against odds of 3 in a
//!   million per guess (±1 step of drift): a 6-digit code stays out of reach.
//!
//! An attempt that is not admitted is answered like a wrong password (no "account locked"
//! oracle for user enumeration) and is not itself recorded as a failure: it is not verified, so
//! it teaches the attacker nothing and need not extend the lock.
//!
//! **Bounded memory.** An entry lives one `window` past its last failure or the end of its lock;
//! [`Lockout::prune`] drops entries past that point, and the server calls it periodically (once a
//! minute is plenty). At most `max_keys` keys are held: a new key arriving at a full table first
//! prunes, and if still full evicts the entry closest to its expiry. Counting entries expire
//! before locked ones, so a flood of new keys erases the least evidence first, and reaching the
//! cap takes `max_keys` failures, which the per-address lockout and rate limits stand in front of.
//! Places of attempts in flight are held apart, one small counter per key with work running, so
//! at most as many as there are requests being verified.
//!
//! **The standard.** RFC 4226 section 7.3 (throttling: a failure limit, then a delay that grows
//! with each failure), RFC 6238 section 5.2, NIST SP 800-63B-4 rate limiting of authentication
//! attempts (at most 100 consecutive failures per account; growing delays and locks that end by
//! themselves among the methods it names), OWASP ASVS 5 V6.3 (brute-force and
//! credential-stuffing protection). The
//! design follows kanidm's `credential/softlock.rs`.
//!
//! **Several replicas.** The shared backend (`store/redis/lockouts.rs`) applies these rules in
//! one Lua script per admission and per failure, with this policy's numbers; a seeded run
//! through both tables there keeps the two step for step alike, so a change of rule here must
//! be made there too.
//!
//! Time is a parameter (`now`, unix seconds) everywhere; the module never reads the clock.
//!
//! [`ActiveTotp::verify`]: crate::auth::totp::ActiveTotp::verify

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Deserialize;

use crate::store::Pending;
use crate::store::lockouts::{Admitted, Lockouts};
pub use crate::store::lockouts::{LockEvent, LockoutPolicy, NotAdmitted, OnSuccess};
use crate::units::HumanDuration;

/// The `auth: lockout:` section of the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Failures within `window` that lock a key.
    pub max_failures: u32,
    pub window: HumanDuration,
    /// Length of the first lock; each further lock doubles it.
    pub base_backoff: HumanDuration,
    /// The longest a lock lasts.
    pub max_backoff: HumanDuration,
    /// Most keys held at once (per lockout table), in this process only: in Redis
    /// (`shared_state`) every entry expires by itself.
    pub max_keys: usize,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: HumanDuration(Duration::from_secs(15 * 60)),
            base_backoff: HumanDuration(Duration::from_secs(60)),
            max_backoff: HumanDuration(Duration::from_secs(60 * 60)),
            max_keys: 100_000,
        }
    }
}

/// A config value out of range: `key` is relative to `auth.lockout`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("auth.lockout.{key}: {message}")]
pub struct LockoutConfigError {
    pub key: &'static str,
    pub message: &'static str,
}

impl LockoutConfig {
    /// The checked runtime policy.
    pub fn policy(&self) -> Result<LockoutPolicy, LockoutConfigError> {
        let problem = |key, message| Err(LockoutConfigError { key, message });
        let secs = |d: HumanDuration| d.0.as_secs();
        // NIST SP 800-63B-4 allows at most 100 consecutive failures per account.
        if !(1..=100).contains(&self.max_failures) {
            return problem("max_failures", "must be between 1 and 100");
        }
        if secs(self.window) == 0 {
            return problem("window", "must be at least 1s");
        }
        if secs(self.base_backoff) == 0 {
            return problem("base_backoff", "must be at least 1s");
        }
        if self.max_backoff < self.base_backoff {
            return problem("max_backoff", "must be at least base_backoff");
        }
        if self.max_keys == 0 {
            return problem("max_keys", "must be at least 1");
        }
        Ok(LockoutPolicy {
            max_failures: self.max_failures,
            window: secs(self.window),
            base_backoff: secs(self.base_backoff),
            max_backoff: secs(self.max_backoff),
            max_keys: self.max_keys,
        })
    }
}

impl LockoutPolicy {
    /// Length of the `lock`-th lock (1-based): `base_backoff * 2^(lock-1)`, capped.
    fn backoff(&self, lock: u32) -> u64 {
        let doublings = lock.saturating_sub(1);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        self.base_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

#[derive(Clone, Debug)]
enum Entry {
    /// Failure times still inside the window, oldest first; fewer than `max_failures`.
    Counting(VecDeque<u64>),
    /// The `lock`-th lock, ending at `until`; from then on, until one window later, probation.
    Locked { until: u64, lock: u32 },
}

impl Entry {
    /// When the entry has nothing left to say and may be forgotten.
    fn expires(&self, policy: &LockoutPolicy) -> u64 {
        let last = match self {
            Self::Counting(failures) => failures.back().copied().unwrap_or(0),
            Self::Locked { until, .. } => *until,
        };
        last.saturating_add(policy.window)
    }
}

/// Failure counters and soft locks for one kind of key (account, client address, user), in
/// this process's memory: the embedded backend of [`Lockouts`].
#[derive(Debug)]
pub struct Lockout<K> {
    shared: Arc<Shared<K>>,
}

/// What a lockout and its attempts in flight share.
#[derive(Debug)]
struct Shared<K> {
    policy: LockoutPolicy,
    on_success: OnSuccess,
    table: Mutex<Table<K>>,
}

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    /// Admitted attempts not yet settled, per key; a key without any has no entry here.
    in_flight: HashMap<K, u32>,
}

/// One admitted attempt: it holds a place in its key's count until it is settled with
/// [`Attempt::failed`] or [`Attempt::succeeded`], or dropped (the work never ran).
#[must_use = "an attempt counts against the limit until it is settled"]
#[derive(Debug)]
pub struct Attempt<K: Clone + Eq + Hash> {
    shared: Arc<Shared<K>>,
    key: K,
    holds_place: bool,
}

impl<K: Clone + Eq + Hash> Shared<K> {
    /// The table. A panic elsewhere while it was held cannot leave an entry half written (every
    /// update is a single assignment), so a poisoned lock is still good to use.
    fn table(&self) -> MutexGuard<'_, Table<K>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Clone + Eq + Hash> Lockout<K> {
    pub fn new(policy: LockoutPolicy, on_success: OnSuccess) -> Self {
        let shared = Shared {
            policy,
            on_success,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                in_flight: HashMap::new(),
            }),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table<K>> {
        self.shared.table()
    }

    /// Admits an attempt on `key` at `now`, before any work is done for it: refused while the
    /// key is locked, or while the attempts in flight would be enough to lock it.
    pub fn admit(&self, key: &K, now: u64) -> Result<Attempt<K>, NotAdmitted> {
        let policy = &self.shared.policy;
        let mut table = self.table();
        let room = match table.entries.get(key) {
            Some(&Entry::Locked { until, .. }) if now < until => {
                return Err(NotAdmitted::Locked { until });
            }
            Some(entry) if now >= entry.expires(policy) => policy.max_failures,
            // On probation one failure locks again.
            Some(Entry::Locked { .. }) => 1,
            Some(Entry::Counting(failures)) => {
                let live = failures
                    .iter()
                    .filter(|&&at| now < at.saturating_add(policy.window))
                    .count();
                policy
                    .max_failures
                    .saturating_sub(u32::try_from(live).unwrap_or(u32::MAX))
            }
            None => policy.max_failures,
        };
        let in_flight = table.in_flight.get(key).copied().unwrap_or(0);
        if in_flight >= room {
            return Err(NotAdmitted::InFlight);
        }
        table.in_flight.insert(key.clone(), in_flight + 1);
        Ok(Attempt {
            shared: self.shared.clone(),
            key: key.clone(),
            holds_place: true,
        })
    }

    /// Drops entries with nothing left to say at `now`; returns how many.
    pub fn prune(&self, now: u64) -> usize {
        let policy = &self.shared.policy;
        let entries = &mut self.table().entries;
        let before = entries.len();
        entries.retain(|_, entry| now < entry.expires(policy));
        before - entries.len()
    }

    /// Keys held, for metrics.
    pub fn len(&self) -> usize {
        self.table().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Clone + Eq + Hash> Shared<K> {
    /// Counts a failure; returns the event when it starts a lock.
    fn record_failure(&self, table: &mut Table<K>, key: &K, now: u64) -> Option<LockEvent<K>> {
        let policy = &self.policy;
        let entries = &mut table.entries;
        let live = entries
            .get(key)
            .filter(|entry| now < entry.expires(policy))
            .cloned();
        let next = match live {
            // A lock starts only when no other attempt is in flight (module docs), so no admitted
            // attempt fails during one; if one did (a wall clock stepped back), it changes nothing.
            Some(Entry::Locked { until, .. }) if now < until => return None,
            Some(Entry::Locked { lock, .. }) => {
                let lock = lock.saturating_add(1);
                Entry::Locked {
                    until: now.saturating_add(policy.backoff(lock)),
                    lock,
                }
            }
            Some(Entry::Counting(mut failures)) => {
                failures.retain(|&at| now < at.saturating_add(policy.window));
                failures.push_back(now);
                Self::lock_if_full(policy, failures, now)
            }
            None => {
                if !entries.contains_key(key) {
                    Self::make_room(policy, entries, now);
                }
                Self::lock_if_full(policy, VecDeque::from([now]), now)
            }
        };
        let event = match next {
            Entry::Locked { until, lock } => Some(LockEvent {
                key: key.clone(),
                until,
                lock,
            }),
            Entry::Counting(_) => None,
        };
        entries.insert(key.clone(), next);
        event
    }

    fn lock_if_full(policy: &LockoutPolicy, failures: VecDeque<u64>, now: u64) -> Entry {
        if failures.len() >= policy.max_failures as usize {
            Entry::Locked {
                until: now.saturating_add(policy.backoff(1)),
                lock: 1,
            }
        } else {
            Entry::Counting(failures)
        }
    }

    /// Before a new key goes in: at the cap, drop expired entries, then the one closest to expiry.
    fn make_room(policy: &LockoutPolicy, entries: &mut HashMap<K, Entry>, now: u64) {
        if entries.len() < policy.max_keys {
            return;
        }
        entries.retain(|_, entry| now < entry.expires(policy));
        while entries.len() >= policy.max_keys {
            let soonest = entries
                .iter()
                .min_by_key(|(_, entry)| entry.expires(policy))
                .map(|(key, _)| key.clone());
            match soonest {
                Some(key) => entries.remove(&key),
                None => return,
            };
        }
    }
}

impl<K: Clone + Eq + Hash> Attempt<K> {
    /// The table, with this attempt's place given back.
    fn settle(&mut self) -> MutexGuard<'_, Table<K>> {
        let mut table = self.shared.table();
        if std::mem::take(&mut self.holds_place) {
            match table.in_flight.get_mut(&self.key) {
                Some(count) if *count > 1 => *count -= 1,
                _ => {
                    table.in_flight.remove(&self.key);
                }
            }
        }
        table
    }

    /// The attempt failed: its place becomes a counted failure. Returns the event when it
    /// starts a lock.
    pub fn failed(mut self, now: u64) -> Option<LockEvent<K>> {
        let shared = self.shared.clone();
        let key = self.key.clone();
        let mut table = self.settle();
        shared.record_failure(&mut table, &key, now)
    }

    /// The attempt succeeded: its place is given back and, for [`OnSuccess::Forget`], the key's
    /// failures and past locks are forgotten.
    pub fn succeeded(mut self) {
        let on_success = self.shared.on_success;
        let key = self.key.clone();
        let mut table = self.settle();
        if on_success == OnSuccess::Forget {
            table.entries.remove(&key);
        }
    }
}

impl<K: Clone + Eq + Hash> Drop for Attempt<K> {
    /// An attempt dropped unsettled was never verified: its place is given back, uncounted.
    fn drop(&mut self) {
        drop(self.settle());
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Lockouts<K> for Lockout<K> {
    fn admit(&self, key: &K, now: u64) -> Pending<'_, Result<Box<dyn Admitted<K>>, NotAdmitted>> {
        let admitted = Lockout::admit(self, key, now);
        let admitted = admitted.map(|attempt| Box::new(attempt) as Box<dyn Admitted<K>>);
        Box::pin(std::future::ready(Ok(admitted)))
    }

    fn prune(&self, now: u64) -> Pending<'_, usize> {
        Box::pin(std::future::ready(Ok(Lockout::prune(self, now))))
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Admitted<K> for Attempt<K> {
    fn failed(self: Box<Self>, now: u64) -> Pending<'static, Option<LockEvent<K>>> {
        Box::pin(std::future::ready(Ok(Attempt::failed(*self, now))))
    }

    fn succeeded(self: Box<Self>) -> Pending<'static, ()> {
        Attempt::succeeded(*self);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl crate::store::counters::Counters {
    /// One kind of key's lockout counters (`table` names the kind in Redis: `account`,
    /// `address`, `factor`), counted where these counters count.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))] // `table` names Redis keys
    pub fn lockouts<K>(
        &self,
        table: &str,
        policy: LockoutPolicy,
        on_success: OnSuccess,
    ) -> Arc<dyn Lockouts<K>>
    where
        K: Clone + Eq + Hash + std::fmt::Display + Send + Sync + 'static,
    {
        match self {
            Self::Local => Arc::new(Lockout::new(policy, on_success)),
            #[cfg(feature = "redis")]
            Self::Redis(redis) => Arc::new(crate::store::redis::RedisLockouts::new(
                redis.clone(),
                table,
                policy,
                on_success,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;
    const T0: u64 = 1_700_000_000;

    fn lockout() -> Lockout<&'static str> {
        Lockout::new(
            LockoutConfig::default().policy().unwrap(),
            OnSuccess::Forget,
        )
    }

    /// One admitted attempt that fails at `now`.
    fn fail_once(
        lockout: &Lockout<&'static str>,
        key: &'static str,
        now: u64,
    ) -> Option<LockEvent<&'static str>> {
        lockout.admit(&key, now).unwrap().failed(now)
    }

    /// Fails `n` times, one second apart from `start`; returns the last event.
    fn fail(
        lockout: &Lockout<&'static str>,
        key: &'static str,
        n: u64,
        start: u64,
    ) -> Option<LockEvent<&'static str>> {
        let mut last = None;
        for i in 0..n {
            last = fail_once(lockout, key, start + i);
        }
        last
    }

    fn locked_until(lockout: &Lockout<&'static str>, key: &'static str, now: u64) -> Option<u64> {
        match lockout.admit(&key, now) {
            Err(NotAdmitted::Locked { until }) => Some(until),
            _ => None,
        }
    }

    /// How many attempts on `key` may be in flight together at `now` (the next is refused as
    /// in flight); all are dropped unsettled after.
    fn room_in_flight(lockout: &Lockout<&'static str>, key: &'static str, now: u64) -> usize {
        let mut attempts = Vec::new();
        // More than `max_failures` ever allows (at most 100): a broken count fails, not hangs.
        for _ in 0..=100 {
            match lockout.admit(&key, now) {
                Ok(attempt) => attempts.push(attempt),
                Err(refused) => {
                    assert_eq!(refused, NotAdmitted::InFlight);
                    return attempts.len();
                }
            }
        }
        panic!("more than 100 attempts in flight on {key}");
    }

    #[test]
    fn the_nth_failure_locks_not_before() {
        let lockout = lockout();
        for i in 0..4 {
            assert_eq!(fail_once(&lockout, "alice", T0 + i), None);
            assert_eq!(locked_until(&lockout, "alice", T0 + i), None);
        }
        let event = fail_once(&lockout, "alice", T0 + 4);
        assert_eq!(
            event,
            Some(LockEvent {
                key: "alice",
                until: T0 + 4 + MIN,
                lock: 1
            })
        );
        assert_eq!(locked_until(&lockout, "alice", T0 + 5), Some(T0 + 4 + MIN));
        assert_eq!(
            locked_until(&lockout, "alice", T0 + 4 + MIN - 1),
            Some(T0 + 4 + MIN)
        );
        assert_eq!(locked_until(&lockout, "alice", T0 + 4 + MIN), None);
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let lockout = lockout();
        fail(&lockout, "alice", 2, T0);
        // A burst: three places left before the lock, so three attempts are admitted at once
        // and every further one is refused while they run, the right password included.
        let burst: Vec<_> = (0..3)
            .map(|_| lockout.admit(&"alice", T0 + 5).unwrap())
            .collect();
        assert_eq!(
            lockout.admit(&"alice", T0 + 5).unwrap_err(),
            NotAdmitted::InFlight
        );
        // Other keys are not concerned.
        drop(lockout.admit(&"bob", T0 + 5).unwrap());
        let mut events: Vec<_> = burst.into_iter().map(|a| a.failed(T0 + 6)).collect();
        assert_eq!(
            events.pop().flatten().map(|e| e.until),
            Some(T0 + 6 + MIN),
            "the last failure of the burst locks"
        );
        assert_eq!(events, [None, None]);
        assert_eq!(
            lockout.admit(&"alice", T0 + 7).unwrap_err(),
            NotAdmitted::Locked {
                until: T0 + 6 + MIN
            }
        );
    }

    #[test]
    fn a_lock_starts_only_when_no_other_attempt_is_in_flight() {
        let lockout = lockout();
        fail(&lockout, "alice", 4, T0);
        // One failure left: one attempt at a time. It succeeds: the key is forgotten.
        let right = lockout.admit(&"alice", T0 + 10).unwrap();
        assert_eq!(
            lockout.admit(&"alice", T0 + 10).unwrap_err(),
            NotAdmitted::InFlight
        );
        right.succeeded();
        assert_eq!(fail(&lockout, "alice", 4, T0 + 11), None);
        // On probation after a lock, likewise one at a time.
        let until = fail_once(&lockout, "alice", T0 + 15).unwrap().until;
        let probation = lockout.admit(&"alice", until).unwrap();
        assert_eq!(
            lockout.admit(&"alice", until).unwrap_err(),
            NotAdmitted::InFlight
        );
        assert_eq!(probation.failed(until).unwrap().lock, 2);
    }

    #[test]
    fn an_attempt_dropped_unsettled_gives_its_place_back() {
        let lockout = lockout();
        fail(&lockout, "alice", 4, T0);
        drop(lockout.admit(&"alice", T0 + 4).unwrap());
        // Not counted: the next one is admitted, and its failure is the fifth.
        assert!(fail_once(&lockout, "alice", T0 + 5).is_some());
    }

    #[test]
    fn failures_during_a_lock_are_not_admitted() {
        let lockout = lockout();
        fail(&lockout, "alice", 5, T0);
        assert_eq!(
            lockout.admit(&"alice", T0 + 10).unwrap_err(),
            NotAdmitted::Locked {
                until: T0 + 4 + MIN
            }
        );
        assert_eq!(locked_until(&lockout, "alice", T0 + 11), Some(T0 + 4 + MIN));
    }

    #[test]
    fn each_lock_after_the_first_doubles_up_to_the_cap() {
        let lockout = lockout();
        let mut now = T0;
        let first = fail(&lockout, "alice", 5, now).unwrap();
        assert_eq!(first.until - (now + 4), MIN);
        now = first.until;
        let mut expected = Vec::new();
        let mut seen = Vec::new();
        for minutes in [2, 4, 8, 16, 32, 60, 60] {
            // One failure on probation is enough.
            let event = fail_once(&lockout, "alice", now).unwrap();
            seen.push((event.until - now) / MIN);
            expected.push(minutes);
            assert_eq!(locked_until(&lockout, "alice", now), Some(event.until));
            now = event.until;
        }
        assert_eq!(seen, expected);
    }

    #[test]
    fn probation_ends_after_a_quiet_window() {
        let lockout = lockout();
        let until = fail(&lockout, "alice", 5, T0).unwrap().until;
        // One window after the lock ended: forgotten, back to counting from zero.
        let later = until + 15 * MIN;
        assert_eq!(fail(&lockout, "alice", 4, later), None);
        let event = fail_once(&lockout, "alice", later + 4).unwrap();
        assert_eq!(event.lock, 1);
        assert_eq!(event.until, later + 4 + MIN);
    }

    #[test]
    fn a_success_forgets_the_failures_for_accounts_and_not_for_addresses() {
        let lockout = lockout();
        fail(&lockout, "alice", 4, T0);
        lockout.admit(&"alice", T0 + 4).unwrap().succeeded();
        assert_eq!(fail(&lockout, "alice", 4, T0 + 5), None);
        // After a lock, a success clears probation: the next failure does not relock.
        let until = fail_once(&lockout, "alice", T0 + 9).unwrap().until;
        lockout.admit(&"alice", until).unwrap().succeeded();
        assert_eq!(fail_once(&lockout, "alice", until + 1), None);
        assert_eq!(locked_until(&lockout, "alice", until + 1), None);

        let address = Lockout::new(LockoutConfig::default().policy().unwrap(), OnSuccess::Keep);
        fail(&address, "192.0.2.7", 4, T0);
        address.admit(&"192.0.2.7", T0 + 4).unwrap().succeeded();
        assert!(fail_once(&address, "192.0.2.7", T0 + 5).is_some());
    }

    #[test]
    fn after_probation_a_key_admits_a_full_set_of_attempts_at_once() {
        let lockout = lockout();
        let until = fail(&lockout, "alice", 5, T0).unwrap().until;
        // On probation: one attempt at a time.
        let first = lockout.admit(&"alice", until).unwrap();
        assert_eq!(
            lockout.admit(&"alice", until).err(),
            Some(NotAdmitted::InFlight)
        );
        drop(first);
        // A quiet window later the key starts over: five may be in flight together.
        assert_eq!(room_in_flight(&lockout, "alice", until + 15 * MIN), 5);
    }

    #[test]
    fn a_failure_leaves_the_in_flight_count_as_its_window_ends() {
        let lockout = lockout();
        for at in [T0, T0, T0, T0 + 10] {
            fail_once(&lockout, "alice", at);
        }
        // At T0 + 15 min the first three are exactly a window old and count no more: one
        // failure left standing, so four attempts may be in flight, not one.
        assert_eq!(room_in_flight(&lockout, "alice", T0 + 15 * MIN), 4);
    }

    #[test]
    fn a_clock_stepping_back_into_a_past_lock_changes_nothing() {
        let lockout = lockout();
        let until = fail(&lockout, "alice", 5, T0).unwrap().until;
        // Admitted on probation, failed by a wall clock that stepped back into the lock.
        let attempt = lockout.admit(&"alice", until).unwrap();
        assert_eq!(attempt.failed(until - 30), None);
        // Not locked again: still on probation.
        assert_eq!(locked_until(&lockout, "alice", until + 1), None);
    }

    #[test]
    fn settling_one_attempt_leaves_the_others_counted_and_all_settled_leave_nothing() {
        let lockout = lockout();
        let admit = || lockout.admit(&"alice", T0);
        let first = admit().unwrap();
        let others = [admit().unwrap(), admit().unwrap()];
        drop(first);
        // Two still hold places: three more may join them, not five.
        let more: Vec<_> = (0..3).map(|_| admit().unwrap()).collect();
        assert_eq!(admit().err(), Some(NotAdmitted::InFlight));
        drop(others);
        drop(more);
        // The in-flight table keeps no key without an attempt: it has no cap of its own.
        assert!(lockout.table().in_flight.is_empty());
    }

    #[test]
    fn the_window_slides() {
        let lockout = lockout();
        // Four failures, then a fifth just as the first leaves the 15-minute window.
        fail(&lockout, "alice", 4, T0);
        assert_eq!(fail_once(&lockout, "alice", T0 + 15 * MIN), None);
        assert_eq!(locked_until(&lockout, "alice", T0 + 15 * MIN), None);
        // The second failure (T0 + 1) is still inside: this one makes five.
        assert!(fail_once(&lockout, "alice", T0 + 15 * MIN).is_some());
    }

    #[test]
    fn keys_and_tables_are_independent() {
        let by_account = lockout();
        let by_address: Lockout<std::net::IpAddr> =
            Lockout::new(LockoutConfig::default().policy().unwrap(), OnSuccess::Keep);
        let address = std::net::IpAddr::from([192, 0, 2, 7]);
        fail(&by_account, "alice", 5, T0);
        assert!(locked_until(&by_account, "alice", T0 + 5).is_some());
        assert_eq!(locked_until(&by_account, "bob", T0 + 5), None);
        assert!(by_address.admit(&address, T0 + 5).is_ok());
        // Spraying: one failure each on five accounts from one address.
        for (i, account) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            let now = T0 + 6 + i as u64;
            assert_eq!(fail_once(&by_account, account, now), None);
            let _ = by_address.admit(&address, now).unwrap().failed(now);
        }
        assert!(matches!(
            by_address.admit(&address, T0 + 11),
            Err(NotAdmitted::Locked { .. })
        ));
        assert_eq!(locked_until(&by_account, "a", T0 + 11), None);
    }

    #[test]
    fn prune_drops_what_has_expired() {
        let lockout = lockout();
        fail(&lockout, "counting", 2, T0);
        let until = fail(&lockout, "locked", 5, T0).unwrap().until;
        assert_eq!(lockout.len(), 2);
        assert_eq!(lockout.prune(T0 + 14 * MIN), 0);
        // The counting key's last failure (T0 + 1) is out of the window; the lock is not.
        assert_eq!(lockout.prune(T0 + 1 + 15 * MIN), 1);
        assert!(locked_until(&lockout, "locked", until - 1).is_some());
        assert_eq!(lockout.prune(until + 15 * MIN - 1), 0);
        assert_eq!(lockout.prune(until + 15 * MIN), 1);
        assert!(lockout.is_empty());
    }

    /// The default policy, but a table of at most three keys.
    fn three_keys() -> Lockout<u32> {
        let policy = LockoutConfig {
            max_keys: 3,
            ..LockoutConfig::default()
        }
        .policy()
        .unwrap();
        Lockout::new(policy, OnSuccess::Forget)
    }

    #[test]
    fn the_cap_holds_and_evicts_what_expires_first() {
        let lockout = three_keys();
        let fail = |key: u32, now: u64| lockout.admit(&key, now).unwrap().failed(now);
        for key in 0..5 {
            fail(key, T0);
        }
        let events: Vec<_> = (0..5).map(|i| fail(100, T0 + i)).collect();
        assert!(events[4].is_some());
        for key in 1000..2000 {
            fail(key, T0 + 10);
            assert!(lockout.len() <= 3);
        }
        // The locked key outlives the flood of counting keys.
        assert!(lockout.admit(&100, T0 + 20).is_err());
        // An expired table makes room without evicting anything live.
        fail(5000, T0 + 10 * 3600);
        assert_eq!(lockout.len(), 1);
        assert!(!lockout.is_empty());
    }

    #[test]
    fn only_a_full_table_is_swept_and_then_of_everything_expired() {
        let lockout = three_keys();
        let fail = |key: u32, now: u64| lockout.admit(&key, now).unwrap().failed(now);
        let expiry = T0 + 15 * MIN;
        fail(1, T0);
        // Below the cap a new key scans nothing: key 1, expired, waits for the prune.
        fail(2, expiry);
        assert_eq!(lockout.len(), 2);
        assert_eq!(lockout.prune(expiry), 1);
        // At the cap every expired entry goes, those expiring this very second too.
        let later = expiry + 1;
        fail(3, later);
        fail(4, later);
        fail(5, later + 15 * MIN);
        assert_eq!(lockout.len(), 1);
    }

    #[tokio::test]
    async fn the_memory_table_keeps_the_lockouts_contract() {
        let lockout: Lockout<u32> = Lockout::new(
            LockoutConfig::default().policy().unwrap(),
            OnSuccess::Forget,
        );
        crate::store::lockouts::contract::kept_by(&lockout).await;
    }

    #[test]
    fn config_is_strict_and_checked() {
        let config: LockoutConfig = serde_saphyr::from_str(
            "max_failures: 3\nwindow: 10m\nbase_backoff: 30s\nmax_backoff: 30m\n",
        )
        .unwrap();
        let policy = config.policy().unwrap();
        assert_eq!(policy.backoff(1), 30);
        assert_eq!(policy.backoff(2), 60);
        assert_eq!(policy.backoff(100), 30 * MIN);
        assert_eq!(LockoutConfig::default().policy().unwrap().backoff(1), MIN);
        // Locks of one fixed length: the back-off never grows.
        let fixed: LockoutConfig = serde_saphyr::from_str(
            "base_backoff: 5m
max_backoff: 5m
",
        )
        .unwrap();
        assert_eq!(fixed.policy().unwrap().backoff(3), 5 * MIN);
        assert!(serde_saphyr::from_str::<LockoutConfig>("lockout_for: 1m\n").is_err());
        assert!(serde_saphyr::from_str::<LockoutConfig>("window: 900\n").is_err());
        for (yaml, key) in [
            ("max_failures: 0\n", "max_failures"),
            ("max_failures: 101\n", "max_failures"),
            ("window: 0s\n", "window"),
            ("base_backoff: 500ms\n", "base_backoff"),
            ("max_backoff: 30s\n", "max_backoff"),
            ("max_keys: 0\n", "max_keys"),
        ] {
            let config: LockoutConfig = serde_saphyr::from_str(yaml).unwrap();
            assert_eq!(config.policy().unwrap_err().key, key, "{yaml}");
        }
    }
}
