//! Brute-force protection: a soft lock with growing back-off, per key.
//!
//! **The threat.** Online guessing: of one user's password or TOTP code (a 6-digit code is one
//! in a million; unthrottled, a script finds it within hours), or of many users' passwords from
//! one client address (password spraying, credential stuffing).
//!
//! **The rule.** After `max_failures` failures within `window` (default 5 in 15 minutes) a key is
//! locked: [`Lockout::check`] refuses it until the lock ends. The first lock lasts
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
//! **How the server uses it.** One [`Lockout`] per kind of key, each an independent counter:
//!
//! - keyed by **account**, for password attempts: check before verifying, record the outcome;
//! - keyed by **client address** (IPv6 by /64), for password attempts from that address. Record
//!   failures only: a success must not clear it, or an attacker holding one valid account could
//!   log into it between guesses and reset the counter of their own address;
//! - keyed by **user**, for second-factor attempts: check before [`ActiveTotp::verify`], and
//!   record every refusal (wrong, malformed, replayed) as a failure, success as a success.
//!   With the defaults an attacker gets 5 guesses, then about 12 a day, against odds of 3 in a
//!   million per guess (±1 step of drift): a 6-digit code stays out of reach.
//!
//! A refused `check` is answered like a wrong password (no "account locked" oracle for user
//! enumeration) and is not itself recorded as a failure: attempts during a lock are not verified,
//! so they teach the attacker nothing and need not extend the lock.
//!
//! **Bounded memory.** An entry lives one `window` past its last failure or the end of its lock;
//! [`Lockout::prune`] drops entries past that point, and the server calls it periodically (once a
//! minute is plenty). At most `max_keys` keys are held: a new key arriving at a full table first
//! prunes, and if still full evicts the entry closest to its expiry. Counting entries expire
//! before locked ones, so a flood of new keys erases the least evidence first, and reaching the
//! cap takes `max_keys` failures, which the per-address lockout and rate limits stand in front of.
//!
//! **The standard.** RFC 4226 section 7.3 (throttling: a failure limit, then a delay that grows
//! with each failure), RFC 6238 section 5.2, NIST SP 800-63B-4 rate limiting of authentication
//! attempts (at most 100 consecutive failures per account; growing delays and locks that end by
//! themselves among the methods it names), OWASP ASVS 5 V6.3 (brute-force and
//! credential-stuffing protection). The
//! design follows kanidm's `credential/softlock.rs`.
//!
//! Time is a parameter (`now`, unix seconds) everywhere; the module never reads the clock.
//!
//! [`ActiveTotp::verify`]: crate::auth::totp::ActiveTotp::verify

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Deserialize;

use crate::config::HumanDuration;

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
    /// Most keys held at once (per lockout table).
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

/// [`LockoutConfig`], checked, in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    max_failures: u32,
    window: u64,
    base_backoff: u64,
    max_backoff: u64,
    max_keys: usize,
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

/// [`Lockout::check`] refused: the key is locked until `until` (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("locked until {until}")]
pub struct Locked {
    pub until: u64,
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

/// Failure counters and soft locks for one kind of key (account, client address, user).
#[derive(Debug)]
pub struct Lockout<K> {
    policy: LockoutPolicy,
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: Clone + Eq + Hash> Lockout<K> {
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The table. A panic elsewhere while it was held cannot leave an entry half written (every
    /// update is a single assignment), so a poisoned lock is still good to use.
    fn entries(&self) -> MutexGuard<'_, HashMap<K, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key` may attempt to authenticate at `now`.
    pub fn check(&self, key: &K, now: u64) -> Result<(), Locked> {
        match self.entries().get(key) {
            Some(&Entry::Locked { until, .. }) if now < until => Err(Locked { until }),
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt; returns the event when it starts a lock. A failure while locked
    /// changes nothing (the attempt should not have been verified; see the module docs).
    pub fn record_failure(&self, key: &K, now: u64) -> Option<LockEvent<K>> {
        let policy = &self.policy;
        let mut entries = self.entries();
        let live = entries
            .get(key)
            .filter(|entry| now < entry.expires(policy))
            .cloned();
        let next = match live {
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
                    Self::make_room(policy, &mut entries, now);
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

    /// A successful attempt forgets the key's failures and past locks. A lock in force stays
    /// until it ends: the success can only come from an attempt that raced the lock.
    pub fn record_success(&self, key: &K, now: u64) {
        let mut entries = self.entries();
        if !matches!(entries.get(key), Some(&Entry::Locked { until, .. }) if now < until) {
            entries.remove(key);
        }
    }

    /// Drops entries with nothing left to say at `now`; returns how many.
    pub fn prune(&self, now: u64) -> usize {
        let policy = &self.policy;
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|_, entry| now < entry.expires(policy));
        before - entries.len()
    }

    /// Keys held, for metrics.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;
    const T0: u64 = 1_700_000_000;

    fn lockout() -> Lockout<&'static str> {
        Lockout::new(LockoutConfig::default().policy().unwrap())
    }

    /// Fails `n` times, one second apart from `start`; returns the last event.
    fn fail(
        lockout: &Lockout<&'static str>,
        key: &'static str,
        n: u64,
        start: u64,
    ) -> Option<LockEvent<&'static str>> {
        (0..n)
            .map(|i| lockout.record_failure(&key, start + i))
            .last()
            .flatten()
    }

    #[test]
    fn the_nth_failure_locks_not_before() {
        let lockout = lockout();
        for i in 0..4 {
            assert_eq!(lockout.record_failure(&"alice", T0 + i), None);
            assert_eq!(lockout.check(&"alice", T0 + i), Ok(()));
        }
        let event = lockout.record_failure(&"alice", T0 + 4);
        assert_eq!(
            event,
            Some(LockEvent {
                key: "alice",
                until: T0 + 4 + MIN,
                lock: 1
            })
        );
        assert_eq!(
            lockout.check(&"alice", T0 + 5),
            Err(Locked {
                until: T0 + 4 + MIN
            })
        );
        assert_eq!(
            lockout.check(&"alice", T0 + 4 + MIN - 1),
            Err(Locked {
                until: T0 + 4 + MIN
            })
        );
        assert_eq!(lockout.check(&"alice", T0 + 4 + MIN), Ok(()));
    }

    #[test]
    fn failures_during_a_lock_change_nothing() {
        let lockout = lockout();
        fail(&lockout, "alice", 5, T0);
        assert_eq!(lockout.record_failure(&"alice", T0 + 10), None);
        assert_eq!(
            lockout.check(&"alice", T0 + 10),
            Err(Locked {
                until: T0 + 4 + MIN
            })
        );
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
            let event = lockout.record_failure(&"alice", now).unwrap();
            seen.push((event.until - now) / MIN);
            expected.push(minutes);
            assert_eq!(
                lockout.check(&"alice", now),
                Err(Locked { until: event.until })
            );
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
        let event = lockout.record_failure(&"alice", later + 4).unwrap();
        assert_eq!(event.lock, 1);
        assert_eq!(event.until, later + 4 + MIN);
    }

    #[test]
    fn success_resets_but_does_not_lift_a_lock() {
        let lockout = lockout();
        fail(&lockout, "alice", 4, T0);
        lockout.record_success(&"alice", T0 + 4);
        assert_eq!(fail(&lockout, "alice", 4, T0 + 5), None);

        let until = lockout.record_failure(&"alice", T0 + 9).unwrap().until;
        lockout.record_success(&"alice", T0 + 10);
        assert_eq!(lockout.check(&"alice", T0 + 10), Err(Locked { until }));
        // After the lock, a success clears probation: the next failure does not relock.
        lockout.record_success(&"alice", until);
        assert_eq!(lockout.record_failure(&"alice", until + 1), None);
        assert_eq!(lockout.check(&"alice", until + 1), Ok(()));
    }

    #[test]
    fn the_window_slides() {
        let lockout = lockout();
        // Four failures, then a fifth just as the first leaves the 15-minute window.
        fail(&lockout, "alice", 4, T0);
        assert_eq!(lockout.record_failure(&"alice", T0 + 15 * MIN), None);
        assert_eq!(lockout.check(&"alice", T0 + 15 * MIN), Ok(()));
        // The second failure (T0 + 1) is still inside: this one makes five.
        assert!(lockout.record_failure(&"alice", T0 + 15 * MIN).is_some());
    }

    #[test]
    fn keys_and_tables_are_independent() {
        let by_account = lockout();
        let by_address: Lockout<std::net::IpAddr> =
            Lockout::new(LockoutConfig::default().policy().unwrap());
        let address = std::net::IpAddr::from([192, 0, 2, 7]);
        fail(&by_account, "alice", 5, T0);
        assert!(by_account.check(&"alice", T0 + 5).is_err());
        assert_eq!(by_account.check(&"bob", T0 + 5), Ok(()));
        assert_eq!(by_address.check(&address, T0 + 5), Ok(()));
        // Spraying: one failure each on five accounts from one address.
        for (i, account) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            assert_eq!(by_account.record_failure(&account, T0 + i as u64), None);
            by_address.record_failure(&address, T0 + i as u64);
        }
        assert!(by_address.check(&address, T0 + 5).is_err());
        assert_eq!(by_account.check(&"a", T0 + 5), Ok(()));
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
        assert!(lockout.check(&"locked", until - 1).is_err());
        assert_eq!(lockout.prune(until + 15 * MIN - 1), 0);
        assert_eq!(lockout.prune(until + 15 * MIN), 1);
        assert!(lockout.is_empty());
    }

    #[test]
    fn the_cap_holds_and_evicts_what_expires_first() {
        let policy = LockoutConfig {
            max_keys: 3,
            ..LockoutConfig::default()
        }
        .policy()
        .unwrap();
        let lockout: Lockout<u32> = Lockout::new(policy);
        for key in 0..5 {
            lockout.record_failure(&key, T0);
        }
        let locked = (0..5).map(|i| lockout.record_failure(&100, T0 + i)).last();
        assert!(locked.flatten().is_some());
        for key in 5..1000 {
            lockout.record_failure(&key, T0 + 10);
            assert!(lockout.len() <= 3);
        }
        // The locked key outlives the flood of counting keys.
        assert!(lockout.check(&100, T0 + 20).is_err());
        // An expired table makes room without evicting anything live.
        lockout.record_failure(&5000, T0 + 10 * 3600);
        assert_eq!(lockout.len(), 1);
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
