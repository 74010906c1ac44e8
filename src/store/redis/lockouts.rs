//! Lockout counters in Redis, so that every replica counts the same attempts: N replicas must
//! not give an attacker N times the guesses. The policy is `auth::lockout`'s (window, growing
//! back-off, probation, what a success forgets), written in Lua beside its Rust so that each
//! admission and each failure is one script, atomic with every other on the key; the policy's
//! numbers are the configured [`LockoutPolicy`], passed to every call.
//!
//! ```text
//!   <prefix>:lockout:<table>:<key>         hash  f = failure times in the window (counting),
//!                                                or u = lock end, l = lock number (locked)
//!   <prefix>:lockout-places:<table>:<key>  zset  attempts in flight, by when their place expires
//!   <prefix>:lockouts:<table>              zset  every entry by when it expires (prune)
//!     table  account | address | factor; key: the user id in hex, or the client address
//! ```
//!
//! **Places in flight** are members of the key's `lockout-places`, each expiring
//! [`PLACE_TTL`] after its admission, so that a replica that dies with attempts running holds
//! their places no longer than that. An attempt dropped unsettled gives its place back from
//! `Drop`, which cannot wait for Redis: the place joins a list that the next admission on this
//! replica sends first (so that a retry on the same replica sees it free), and a spawned task
//! sends it too if no admission comes first. A place whose return is lost (Redis away) expires.
//!
//! **Memory.** Entries expire by themselves, a window past their last failure or lock, and
//! [`Lockouts::prune`] deletes those expired at the caller's `now` (the index says which), so
//! `auth.lockout.max_keys` does not apply here: the TTL bounds what Redis holds.

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use redis::Script;

use super::Redis;
use crate::identity::StoreError;
use crate::store::Pending;
use crate::store::lockouts::{Admitted, LockEvent, Lockouts, NotAdmitted};
use crate::store::lockouts::{LockoutPolicy, OnSuccess};

/// How long an attempt may hold its place: far longer than a verification takes (a wait in
/// the hashing pool's queue and one argon2id run), short enough that a replica that died
/// mid-attempt does not hold a key's places for long.
pub const PLACE_TTL: u64 = 60;

/// What every script shares: the key's live entry, and places given back.
const PRELUDE: &str = r"
    -- The entry at `now`, as auth::lockout's `Entry`; nil when there is none or it has expired
    -- (a window past its last failure or the end of its lock).
    local function live(key, now, window)
        local until_at, lock, failures = unpack(redis.call('HMGET', key, 'u', 'l', 'f'))
        if until_at then
            until_at = tonumber(until_at)
            if now >= until_at + window then return nil end
            return {until_at = until_at, lock = tonumber(lock)}
        end
        if not failures then return nil end
        local times = {}
        for at in string.gmatch(failures, '%d+') do table.insert(times, tonumber(at)) end
        if now >= times[#times] + window then return nil end
        return {failures = times}
    end
    -- ARGV from `from` on: pairs of a places key and a place to give back.
    local function give_back(from)
        for i = from, #ARGV, 2 do redis.call('ZREM', ARGV[i], ARGV[i + 1]) end
    end
";

/// KEYS: entry, places. ARGV: now, max_failures, window, place, place TTL, then places given
/// back. `{0, until}`: locked; `{1}`: as many in flight as may still fail; `{2}`: admitted.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRELUDE}
        local now, max, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        give_back(6)
        local entry = live(KEYS[1], now, window)
        local room = max
        if entry and entry.until_at then
            if now < entry.until_at then return {{0, entry.until_at}} end
            -- On probation one failure locks again.
            room = 1
        elseif entry then
            for _, at in ipairs(entry.failures) do
                if now < at + window then room = room - 1 end
            end
        end
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
        if redis.call('ZCARD', KEYS[2]) >= room then return {{1}} end
        redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
        redis.call('EXPIRE', KEYS[2], ARGV[5])
        return {{2}}"
    ))
});

/// KEYS: entry, places, index. ARGV: now, max_failures, window, base_backoff, max_backoff,
/// place, the entry's name in the index. `{0}`: counted; `{1, until, lock}`: a lock starts.
static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PRELUDE}
        local now, max, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        redis.call('ZREM', KEYS[2], ARGV[6])
        local function keep(at, ...)
            redis.call('DEL', KEYS[1])
            redis.call('HSET', KEYS[1], ...)
            redis.call('EXPIRE', KEYS[1], at - now)
            redis.call('ZADD', KEYS[3], at, ARGV[7])
        end
        local entry = live(KEYS[1], now, window)
        local lock = 1
        if entry and entry.until_at then
            -- A lock starts only when no other attempt is in flight, so no admitted attempt
            -- fails during one; if one did (a wall clock stepped back), it changes nothing.
            if now < entry.until_at then return {{0}} end
            lock = entry.lock + 1
        else
            local failures = {{}}
            for _, at in ipairs(entry and entry.failures or {{}}) do
                if now < at + window then table.insert(failures, at) end
            end
            table.insert(failures, now)
            if #failures < max then
                keep(now + window, 'f', table.concat(failures, ' '))
                return {{0}}
            end
        end
        local backoff = math.min(tonumber(ARGV[4]) * 2 ^ (lock - 1), tonumber(ARGV[5]))
        local until_at = now + backoff
        keep(until_at + window, 'u', until_at, 'l', lock)
        return {{1, until_at, lock}}"
    ))
});

/// KEYS: entry, places, index. ARGV: place, 1 to forget the entry, the entry's name.
static SUCCEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('ZREM', KEYS[2], ARGV[1])
        if ARGV[2] == '1' then
            redis.call('DEL', KEYS[1])
            redis.call('ZREM', KEYS[3], ARGV[3])
        end
        return 1",
    )
});

/// ARGV: places given back.
static GIVE_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PRELUDE}\n give_back(1)\n return 1")));

/// KEYS: index. ARGV: now, the entries' key prefix. How many expired entries it deleted.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
        for _, name in ipairs(gone) do redis.call('DEL', ARGV[2] .. name) end
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
        return #gone",
    )
});

/// One kind of key's counters in Redis (`table`: account, address, factor), keyed by what
/// `K` displays as.
pub struct RedisLockouts<K> {
    shared: Arc<Shared>,
    key: PhantomData<fn(&K)>,
}

/// What a table and its attempts in flight share.
struct Shared {
    redis: Redis,
    policy: LockoutPolicy,
    on_success: OnSuccess,
    /// `<prefix>:lockout:<table>:`, `<prefix>:lockout-places:<table>:` and the index.
    entries: String,
    places: String,
    index: String,
    /// Places of attempts dropped unsettled, not sent yet: (places key, place).
    given_back: Mutex<Vec<(String, String)>>,
}

impl<K> RedisLockouts<K> {
    pub fn new(redis: Redis, table: &str, policy: LockoutPolicy, on_success: OnSuccess) -> Self {
        let shared = Shared {
            entries: redis.key("lockout", &format!("{table}:")),
            places: redis.key("lockout-places", &format!("{table}:")),
            index: redis.key("lockouts", table),
            redis,
            policy,
            on_success,
            given_back: Mutex::new(Vec::new()),
        };
        Self {
            shared: Arc::new(shared),
            key: PhantomData,
        }
    }
}

impl Shared {
    /// The places given back and not sent yet; a panic while the list was held cannot have
    /// left it half written, so a poisoned lock is still good to use.
    fn take_given_back(&self) -> Vec<(String, String)> {
        let mut list = self
            .given_back
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *list)
    }

    /// Gives a place back from `Drop`: listed for the next admission, and sent by a task.
    fn give_back(self: &Arc<Self>, places: String, place: String) {
        let mut list = self
            .given_back
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        list.push((places, place));
        drop(list);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.clone();
            runtime.spawn(async move {
                let given_back = shared.take_given_back();
                if given_back.is_empty() {
                    return;
                }
                let args: Vec<&[u8]> = given_back
                    .iter()
                    .flat_map(|(places, place)| [places.as_bytes(), place.as_bytes()])
                    .collect();
                if let Err(error) = shared.redis.run::<u8>(&GIVE_BACK, &[], &args).await {
                    tracing::debug!(%error, "places in flight not given back: they expire");
                }
            });
        }
    }
}

impl<K: Clone + Display + Send + Sync + 'static> Lockouts<K> for RedisLockouts<K> {
    fn admit(&self, key: &K, now: u64) -> Pending<'_, Result<Box<dyn Admitted<K>>, NotAdmitted>> {
        let shared = &self.shared;
        let name = key.to_string();
        let (entry, places) = (
            format!("{}{name}", shared.entries),
            format!("{}{name}", shared.places),
        );
        let place = crate::store::ephemeral::new_id(&mut rand::rng());
        let key = key.clone();
        Box::pin(async move {
            let given_back = shared.take_given_back();
            let numbers = [
                now,
                u64::from(shared.policy.max_failures()),
                shared.policy.window(),
            ]
            .map(|n| n.to_string());
            let ttl = PLACE_TTL.to_string();
            let mut args: Vec<&[u8]> = numbers.iter().map(|n| n.as_bytes()).collect();
            args.extend([place.as_bytes(), ttl.as_bytes()]);
            for (places, place) in &given_back {
                args.extend([places.as_bytes(), place.as_bytes()]);
            }
            let answer: Vec<u64> = shared.redis.run(&ADMIT, &[&entry, &places], &args).await?;
            match answer[..] {
                [2] => Ok(Ok(Box::new(Place {
                    shared: shared.clone(),
                    key,
                    name,
                    place,
                    settled: false,
                }) as Box<dyn Admitted<K>>)),
                [1] => Ok(Err(NotAdmitted::InFlight)),
                [0, until] => Ok(Err(NotAdmitted::Locked { until })),
                _ => Err(StoreError::Corrupt("a lockout admission answer".into())),
            }
        })
    }

    fn prune(&self, now: u64) -> Pending<'_, usize> {
        let shared = &self.shared;
        Box::pin(async move {
            let now = now.to_string();
            let args = [now.as_bytes(), shared.entries.as_bytes()];
            shared.redis.run(&PRUNE, &[&shared.index], &args).await
        })
    }
}

/// One admitted attempt: its place in the key's `lockout-places` until settled or dropped.
struct Place<K> {
    shared: Arc<Shared>,
    key: K,
    /// The key as Redis names it.
    name: String,
    place: String,
    settled: bool,
}

impl<K> Place<K> {
    fn entry_keys(&self) -> [String; 3] {
        let shared = &self.shared;
        [
            format!("{}{}", shared.entries, self.name),
            format!("{}{}", shared.places, self.name),
            shared.index.clone(),
        ]
    }
}

impl<K: Clone + Send + 'static> Admitted<K> for Place<K> {
    fn failed(mut self: Box<Self>, now: u64) -> Pending<'static, Option<LockEvent<K>>> {
        self.settled = true;
        Box::pin(async move {
            let policy = &self.shared.policy;
            let (base, longest) = policy.backoffs();
            let numbers = [
                now,
                u64::from(policy.max_failures()),
                policy.window(),
                base,
                longest,
            ]
            .map(|n| n.to_string());
            let mut args: Vec<&[u8]> = numbers.iter().map(|n| n.as_bytes()).collect();
            args.extend([self.place.as_bytes(), self.name.as_bytes()]);
            let [entry, places, index] = self.entry_keys();
            let keys = [entry.as_str(), places.as_str(), index.as_str()];
            let answer: Vec<u64> = self.shared.redis.run(&FAIL, &keys, &args).await?;
            match answer[..] {
                [0] => Ok(None),
                [1, until, lock] => Ok(Some(LockEvent {
                    key: self.key.clone(),
                    until,
                    lock: u32::try_from(lock).unwrap_or(u32::MAX),
                })),
                _ => Err(StoreError::Corrupt("a lockout failure answer".into())),
            }
        })
    }

    fn succeeded(mut self: Box<Self>) -> Pending<'static, ()> {
        self.settled = true;
        Box::pin(async move {
            let forget = if self.shared.on_success == OnSuccess::Forget {
                "1"
            } else {
                "0"
            };
            let args = [
                self.place.as_bytes(),
                forget.as_bytes(),
                self.name.as_bytes(),
            ];
            let [entry, places, index] = self.entry_keys();
            let keys = [entry.as_str(), places.as_str(), index.as_str()];
            self.shared
                .redis
                .run::<u8>(&SUCCEED, &keys, &args)
                .await
                .map(drop)
        })
    }
}

impl<K> Drop for Place<K> {
    /// Dropped unsettled, the attempt was never verified: its place is given back, uncounted.
    fn drop(&mut self) {
        if !self.settled {
            let places = format!("{}{}", self.shared.places, self.name);
            self.shared
                .give_back(places, std::mem::take(&mut self.place));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::on_private_server;
    use super::*;
    use crate::auth::lockout::LockoutConfig;
    use crate::identity::{Keyring, MasterKey};

    const T0: u64 = 1_800_000_000;

    fn accounts(redis: Redis) -> RedisLockouts<u32> {
        let policy = LockoutConfig::default().policy().unwrap();
        RedisLockouts::new(redis, "account", policy, OnSuccess::Forget)
    }

    #[tokio::test]
    async fn keeps_the_lockouts_contract() {
        let (_server, redis) = on_private_server();
        crate::store::lockouts::contract::kept_by(&accounts(redis)).await;
    }

    #[tokio::test]
    async fn replicas_count_failures_together() {
        let (server, redis) = on_private_server();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let other = Redis::connect(&server.url(), None, None, "wg-test", keyring).unwrap();
        let replicas = [accounts(redis), accounts(other)];
        let mut locks = Vec::new();
        for i in 0..5 {
            let attempt = replicas[i % 2].admit(&7, T0 + i as u64).await.unwrap();
            locks.push(attempt.unwrap().failed(T0 + i as u64).await.unwrap());
        }
        let until = T0 + 4 + 60;
        assert_eq!(
            locks.pop().flatten(),
            Some(LockEvent {
                key: 7,
                until,
                lock: 1
            }),
            "five failures split over two replicas lock"
        );
        assert_eq!(locks, [None, None, None, None]);
        for replica in &replicas {
            let refused = replica.admit(&7, T0 + 5).await.unwrap().err();
            assert_eq!(refused, Some(NotAdmitted::Locked { until }));
        }
        // Places in flight are shared too: on probation one at a time, whichever replica.
        let probation = replicas[0].admit(&7, until).await.unwrap().unwrap();
        let refused = replicas[1].admit(&7, until).await.unwrap().err();
        assert_eq!(refused, Some(NotAdmitted::InFlight));
        let again = probation.failed(until).await.unwrap().unwrap();
        assert_eq!((again.lock, again.until), (2, until + 2 * 60));
    }

    /// The script against `auth::lockout`'s table, on one long seeded run of admissions,
    /// failures, successes and drops: the same answers and the same locks, for both kinds of
    /// success.
    #[tokio::test]
    async fn redis_follows_the_embedded_policy_step_by_step() {
        use rand::{Rng, SeedableRng};

        use crate::auth::lockout::Lockout;

        let (_server, redis) = on_private_server();
        let policy = LockoutConfig {
            max_failures: 3,
            ..LockoutConfig::default()
        }
        .policy()
        .unwrap();
        for (table, on_success) in [("forget", OnSuccess::Forget), ("keep", OnSuccess::Keep)] {
            let embedded: Lockout<u32> = Lockout::new(policy, on_success);
            let shared = RedisLockouts::new(redis.clone(), table, policy, on_success);
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let mut now = T0;
            let mut held = Vec::new();
            let (mut locks, mut longest) = (0, 0);
            for step in 0..2000 {
                now += [0, 0, 1, 1, 30, 61, 300, 901][rng.random_range(0..8)];
                // Places held that long expire in Redis only (their replica died): drop first.
                held.retain(|(at, _, _)| now < at + PLACE_TTL);
                let key = rng.random_range(0..2);
                let (a, b) = (
                    Lockouts::admit(&embedded, &key, now).await.unwrap(),
                    shared.admit(&key, now).await.unwrap(),
                );
                assert_eq!(a.as_ref().err(), b.as_ref().err(), "{table} step {step}");
                if let (Ok(a), Ok(b)) = (a, b) {
                    held.push((now, a, b));
                }
                if rng.random_bool(0.5) {
                    continue;
                }
                let settled = rng.random_range(0..held.len().max(1));
                if settled >= held.len() {
                    continue;
                }
                let (_, a, b) = held.swap_remove(settled);
                match rng.random_range(0..4) {
                    0 => {
                        a.succeeded().await.unwrap();
                        b.succeeded().await.unwrap();
                    }
                    1 => drop((a, b)),
                    _ => {
                        let lock = a.failed(now).await.unwrap();
                        locks += usize::from(lock.is_some());
                        longest = longest.max(lock.as_ref().map_or(0, |lock| lock.lock));
                        assert_eq!(lock, b.failed(now).await.unwrap(), "{table} step {step}");
                    }
                }
            }
            assert!(
                locks > 10 && longest >= 3,
                "locks and back-off: {locks}, {longest}"
            );
            assert_eq!(
                Lockouts::prune(&embedded, now + 3 * 3600).await.unwrap(),
                shared.prune(now + 3 * 3600).await.unwrap()
            );
        }
    }

    #[tokio::test]
    async fn a_place_expires_with_the_replica_that_held_it() {
        let (_server, redis) = on_private_server();
        let lockouts = accounts(redis);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(lockouts.admit(&1, T0).await.unwrap().unwrap());
        }
        // A replica that died holding them never gives them back.
        held.into_iter().for_each(std::mem::forget);
        let refused = lockouts.admit(&1, T0 + PLACE_TTL - 1).await.unwrap().err();
        assert_eq!(refused, Some(NotAdmitted::InFlight));
        assert!(lockouts.admit(&1, T0 + PLACE_TTL).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_redis_that_does_not_answer_admits_nothing() {
        let (server, redis) = on_private_server();
        let lockouts = accounts(redis);
        let attempt = lockouts.admit(&1, T0).await.unwrap().unwrap();
        server.stop();
        assert!(lockouts.admit(&1, T0).await.is_err());
        assert!(attempt.failed(T0).await.is_err());
        assert!(lockouts.prune(T0).await.is_err());
    }
}
