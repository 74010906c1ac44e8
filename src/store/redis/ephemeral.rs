//! Ceremonies in Redis, keeping the contract of `store::ephemeral` across replicas: a login
//! started on one replica finishes on another, and of two replicas taking one entry, one gets
//! it. Each operation is one script; values are sealed for their space and id before they leave.
//!
//! An entry's expiry is the `now` it was opened at plus the space's time to live, judged with
//! the caller's `now` like the embedded backend; Redis's own expiry (a minute later, on Redis's
//! clock) only collects what a stopped gateway left behind.

use std::sync::LazyLock;

use redis::Script;

use super::Redis;
use crate::identity::{Purpose, StoreError, UserId};
use crate::store::Pending;
use crate::store::ephemeral::{Ephemeral, Held, MAX_OPEN_PER_USER, Space};

/// Seconds Redis keeps an entry past its time to live before collecting it.
const COLLECT_AFTER: u64 = 60;

/// Removes entry `id` and its places in the space's and its user's indexes; `ARGV[e]` and
/// `ARGV[u]` are the key prefixes of entries and of users' indexes in this space.
const DROP: &str = r"
local function drop(space, entries, users, id)
    local user = redis.call('HGET', entries .. id, 'u')
    redis.call('DEL', entries .. id)
    redis.call('ZREM', space, id)
    if user then redis.call('ZREM', users .. user, id) end
end
local function prune(space, entries, users, now)
    local expired = redis.call('ZRANGEBYSCORE', space, '-inf', now)
    for _, id in ipairs(expired) do drop(space, entries, users, id) end
    return #expired
end
-- Drops the user's oldest entries until `keep` remain (forgetting ids Redis collected).
local function keep_newest(space, entries, users, theirs, keep)
    for _, id in ipairs(redis.call('ZRANGE', theirs, 0, -1)) do
        if redis.call('EXISTS', entries .. id) == 0 then
            redis.call('ZREM', theirs, id)
            redis.call('ZREM', space, id)
        end
    end
    local excess = redis.call('ZCARD', theirs) - keep
    if excess > 0 then
        for _, id in ipairs(redis.call('ZRANGE', theirs, 0, excess - 1)) do
            drop(space, entries, users, id)
        end
    end
end
";

/// KEYS: entry, space, user's, user's spaces, serial. ARGV: id, user, value, expires, now, max
/// per user, capacity, entries prefix, users prefix, space name, collect after. 0 when full.
static OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DROP}
        prune(KEYS[2], ARGV[8], ARGV[9], ARGV[5])
        keep_newest(KEYS[2], ARGV[8], ARGV[9], KEYS[3], tonumber(ARGV[6]) - 1)
        if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then return 0 end
        local serial = redis.call('INCR', KEYS[5])
        redis.call('HSET', KEYS[1], 'u', ARGV[2], 'v', ARGV[3], 'x', ARGV[4], 'n', serial)
        redis.call('EXPIRE', KEYS[1], ARGV[11])
        redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
        redis.call('ZADD', KEYS[3], serial, ARGV[1])
        redis.call('SADD', KEYS[4], ARGV[10])
        return 1"
    ))
});

/// KEYS: entry, space. ARGV: id, now, users prefix. The entry's fields, or nil when it is gone
/// or expired (and gone now).
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local fields = redis.call('HMGET', KEYS[1], 'u', 'v', 'x', 'n')
        if not fields[1] then return false end
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        redis.call('ZREM', ARGV[3] .. fields[1], ARGV[1])
        if tonumber(fields[3]) <= tonumber(ARGV[2]) then return false end
        return fields",
    )
});

/// KEYS: entry, space, user's, user's spaces. ARGV: id, user, value, expires, serial, max per
/// user, entries prefix, users prefix, space name, collect after.
static PUT_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DROP}
        redis.call('HSET', KEYS[1], 'u', ARGV[2], 'v', ARGV[3], 'x', ARGV[4], 'n', ARGV[5])
        redis.call('EXPIRE', KEYS[1], ARGV[10])
        redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
        redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
        redis.call('SADD', KEYS[4], ARGV[9])
        keep_newest(KEYS[2], ARGV[7], ARGV[8], KEYS[3], tonumber(ARGV[6]))
        return 1"
    ))
});

/// KEYS: user's spaces. ARGV: user, key prefix.
static DROP_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        for _, space in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            local theirs = ARGV[2] .. ':ceremony-user:' .. space .. ':' .. ARGV[1]
            for _, id in ipairs(redis.call('ZRANGE', theirs, 0, -1)) do
                redis.call('DEL', ARGV[2] .. ':ceremony:' .. space .. ':' .. id)
                redis.call('ZREM', ARGV[2] .. ':ceremony-space:' .. space, id)
            end
            redis.call('DEL', theirs)
        end
        redis.call('DEL', KEYS[1])
        return 1",
    )
});

/// KEYS: space. ARGV: now, entries prefix, users prefix. How many expired entries went.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DROP} return prune(KEYS[1], ARGV[2], ARGV[3], ARGV[1])"
    ))
});

/// The keys of one space, as `DROP_USER` builds them too.
struct Keys {
    space: String,
    entries: String,
    users: String,
}

impl Redis {
    fn ceremony_keys(&self, space: Space) -> Keys {
        Keys {
            space: self.key("ceremony-space", space.name),
            entries: self.key("ceremony", &format!("{}:", space.name)),
            users: self.key("ceremony-user", &format!("{}:", space.name)),
        }
    }

    fn user_spaces(&self, user: &str) -> String {
        self.key("ceremony-spaces", user)
    }

    /// The value's owner in the seal: its space and id, so that it opens nowhere else.
    fn seal_ceremony(&self, space: Space, id: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let owner = format!("{}:{id}", space.name);
        Ok(self
            .keyring
            .seal(Purpose::Ceremony, owner.as_bytes(), value)?)
    }

    fn open_ceremony(&self, space: Space, id: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let owner = format!("{}:{id}", space.name);
        Ok(self
            .keyring
            .open(Purpose::Ceremony, owner.as_bytes(), sealed)?
            .to_vec())
    }
}

/// Ids are [`new_id`](crate::store::ephemeral::new_id)'s 64 hex digits; anything else a client
/// sends names no entry and never reaches Redis.
fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn user_of(hex_id: &str) -> Result<UserId, StoreError> {
    let bytes: [u8; 16] = hex::decode(hex_id)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("a ceremony's user in redis is not an id".into()))?;
    Ok(UserId::from_bytes(bytes))
}

impl Ephemeral for Redis {
    fn open(
        &self,
        space: Space,
        id: String,
        user: UserId,
        value: Vec<u8>,
        now: u64,
    ) -> Pending<'_, bool> {
        Box::pin(async move {
            let sealed = self.seal_ceremony(space, &id, &value)?;
            let keys = self.ceremony_keys(space);
            let user = hex::encode(user.as_bytes());
            let entry = format!("{}{id}", keys.entries);
            let theirs = format!("{}{user}", keys.users);
            let spaces = self.user_spaces(&user);
            let serial = self.key("ceremony-serial", "all");
            let numbers = [
                now.saturating_add(space.ttl).to_string(),
                now.to_string(),
                MAX_OPEN_PER_USER.to_string(),
                space.capacity.to_string(),
                (space.ttl + COLLECT_AFTER).to_string(),
            ];
            let opened: u8 = self
                .run(
                    &OPEN,
                    &[&entry, &keys.space, &theirs, &spaces, &serial],
                    &[
                        id.as_bytes(),
                        user.as_bytes(),
                        &sealed,
                        numbers[0].as_bytes(),
                        numbers[1].as_bytes(),
                        numbers[2].as_bytes(),
                        numbers[3].as_bytes(),
                        keys.entries.as_bytes(),
                        keys.users.as_bytes(),
                        space.name.as_bytes(),
                        numbers[4].as_bytes(),
                    ],
                )
                .await?;
            Ok(opened == 1)
        })
    }

    fn read(&self, space: Space, id: &str, now: u64) -> Pending<'_, Option<(UserId, Vec<u8>)>> {
        let id = id.to_owned();
        Box::pin(async move {
            if !well_formed(&id) {
                return Ok(None);
            }
            let entry = format!("{}{id}", self.ceremony_keys(space).entries);
            let fields: (Option<String>, Option<Vec<u8>>, Option<u64>) = self
                .query(redis::cmd("HMGET").arg(entry).arg("u").arg("v").arg("x"))
                .await?;
            match fields {
                (Some(user), Some(sealed), Some(expires)) if now < expires => Ok(Some((
                    user_of(&user)?,
                    self.open_ceremony(space, &id, &sealed)?,
                ))),
                _ => Ok(None),
            }
        })
    }

    fn take(&self, space: Space, id: &str, now: u64) -> Pending<'_, Option<Held<Vec<u8>>>> {
        let id = id.to_owned();
        Box::pin(async move {
            if !well_formed(&id) {
                return Ok(None);
            }
            let keys = self.ceremony_keys(space);
            let entry = format!("{}{id}", keys.entries);
            let now = now.to_string();
            let taken: Option<(String, Vec<u8>, u64, u64)> = self
                .run(
                    &TAKE,
                    &[&entry, &keys.space],
                    &[id.as_bytes(), now.as_bytes(), keys.users.as_bytes()],
                )
                .await?;
            match taken {
                Some((user, sealed, expires, serial)) => Ok(Some(Held::stored(
                    user_of(&user)?,
                    self.open_ceremony(space, &id, &sealed)?,
                    expires,
                    serial,
                ))),
                None => Ok(None),
            }
        })
    }

    fn put_back(&self, space: Space, id: String, held: Held<Vec<u8>>) -> Pending<'_, ()> {
        Box::pin(async move {
            let sealed = self.seal_ceremony(space, &id, &held.value)?;
            let keys = self.ceremony_keys(space);
            let user = hex::encode(held.user.as_bytes());
            let entry = format!("{}{id}", keys.entries);
            let theirs = format!("{}{user}", keys.users);
            let spaces = self.user_spaces(&user);
            let (expires, serial) = held.age();
            let numbers = [
                expires.to_string(),
                serial.to_string(),
                MAX_OPEN_PER_USER.to_string(),
                (space.ttl + COLLECT_AFTER).to_string(),
            ];
            self.run::<u8>(
                &PUT_BACK,
                &[&entry, &keys.space, &theirs, &spaces],
                &[
                    id.as_bytes(),
                    user.as_bytes(),
                    &sealed,
                    numbers[0].as_bytes(),
                    numbers[1].as_bytes(),
                    numbers[2].as_bytes(),
                    keys.entries.as_bytes(),
                    keys.users.as_bytes(),
                    space.name.as_bytes(),
                    numbers[3].as_bytes(),
                ],
            )
            .await
            .map(drop)
        })
    }

    fn drop_user(&self, user: UserId) -> Pending<'_, ()> {
        Box::pin(async move {
            let user = hex::encode(user.as_bytes());
            let spaces = self.user_spaces(&user);
            self.run::<u8>(
                &DROP_USER,
                &[&spaces],
                &[user.as_bytes(), self.prefix.as_bytes()],
            )
            .await
            .map(drop)
        })
    }

    fn prune(&self, space: Space, now: u64) -> Pending<'_, usize> {
        Box::pin(async move {
            let keys = self.ceremony_keys(space);
            let now = now.to_string();
            self.run(
                &PRUNE,
                &[&keys.space],
                &[
                    now.as_bytes(),
                    keys.entries.as_bytes(),
                    keys.users.as_bytes(),
                ],
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::on_private_server;
    use super::*;

    #[tokio::test]
    async fn keeps_the_ephemeral_contract() {
        let (_server, redis) = on_private_server();
        crate::store::ephemeral::contract::kept_by(Arc::new(redis)).await;
    }

    #[tokio::test]
    async fn state_in_redis_is_sealed_to_its_space_and_id() {
        let (_server, redis) = on_private_server();
        let space = Space {
            name: "enrollment",
            ttl: 60,
            capacity: 4,
        };
        let (id, other) = ("a".repeat(64), "b".repeat(64));
        let alice = UserId::from_bytes([1; 16]);
        let seed = b"JBSWY3DPEHPK3PXP".to_vec();
        for id in [&id, &other] {
            assert!(
                redis
                    .open(space, id.clone(), alice, seed.clone(), 10)
                    .await
                    .unwrap()
            );
        }
        let entry = format!("{}{id}", redis.ceremony_keys(space).entries);
        let sealed: Vec<u8> = redis
            .query(redis::cmd("HGET").arg(&entry).arg("v"))
            .await
            .unwrap();
        assert!(!sealed.windows(seed.len()).any(|w| w == seed));
        let moved = redis::cmd("HSET")
            .arg(format!("{}{other}", redis.ceremony_keys(space).entries))
            .arg("v")
            .arg(sealed)
            .to_owned();
        redis.query::<u64>(&moved).await.unwrap();
        assert!(
            redis.read(space, &other, 10).await.is_err(),
            "moved, it does not open"
        );
        assert_eq!(redis.read(space, "../x", 10).await.unwrap(), None);
    }
}
