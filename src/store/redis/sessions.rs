//! Session records in Redis: the record sealed under its key (the keyed hash of the token, so
//! a copied record opens under no other key), the last activity beside it so that a touch is
//! one atomic maximum, and two sets to find a user's sessions and all of them.
//!
//! The last activity is outside the seal: whoever can write to Redis could move it forward and
//! keep an idle session alive, up to its absolute lifetime (`created` and `auth_time` are
//! sealed). Such a writer can already delete every session, so Redis must be reachable only by
//! the replicas (a password, and TLS on an untrusted network).

use std::sync::LazyLock;

use redis::Script;
use tokio::sync::broadcast;

use super::{Redis, feed};
use crate::identity::{Purpose, SessionKey, SessionRecord, StoreError, UserId};
use crate::store::Pending;
use crate::store::sessions::{Published, SessionStore};

/// KEYS: entry, all, user's. ARGV: key, sealed, last seen, user. 0 when the key is taken.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], 'r', ARGV[2], 't', ARGV[3], 'u', ARGV[4])
        redis.call('SADD', KEYS[2], ARGV[1])
        redis.call('SADD', KEYS[3], ARGV[1])
        return 1",
    )
});

/// KEYS: entry. ARGV: last seen. 0 when the session is gone.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local seen = redis.call('HGET', KEYS[1], 't')
        if not seen then return 0 end
        if tonumber(ARGV[1]) > tonumber(seen) then redis.call('HSET', KEYS[1], 't', ARGV[1]) end
        return 1",
    )
});

/// KEYS: entry, all. ARGV: key, the user-sessions key prefix. 1 for the one caller that ended it.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local user = redis.call('HGET', KEYS[1], 'u')
        if not user then return 0 end
        redis.call('DEL', KEYS[1])
        redis.call('SREM', KEYS[2], ARGV[1])
        redis.call('SREM', ARGV[2] .. user, ARGV[1])
        return 1",
    )
});

/// KEYS: user's, all. ARGV: the session key prefix. The keys it ended.
static DELETE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local ended = {}
        for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            if redis.call('DEL', ARGV[1] .. key) == 1 then table.insert(ended, key) end
            redis.call('SREM', KEYS[2], key)
        end
        redis.call('DEL', KEYS[1])
        return ended",
    )
});

impl Redis {
    fn session_key(&self, key: SessionKey) -> String {
        self.key("session", &key.to_string())
    }

    fn user_sessions(&self, user: UserId) -> String {
        self.key("user-sessions", &hex::encode(user.as_bytes()))
    }

    /// The record stored under `key`, its last activity from beside it; `None` when gone.
    fn open_session(
        &self,
        key: SessionKey,
        fields: (Option<Vec<u8>>, Option<u64>),
    ) -> Result<Option<SessionRecord>, StoreError> {
        let (Some(sealed), Some(last_seen)) = fields else {
            return Ok(None);
        };
        let plain = self.keyring.open(Purpose::Session, &key.0, &sealed)?;
        let mut record: SessionRecord = serde_json::from_slice(&plain)
            .map_err(|_| StoreError::Corrupt("a session record does not parse".into()))?;
        record.last_seen = record.last_seen.max(last_seen);
        Ok(Some(record))
    }

    async fn read_session(&self, key: SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let fields = self
            .query(
                redis::cmd("HMGET")
                    .arg(self.session_key(key))
                    .arg("r")
                    .arg("t"),
            )
            .await?;
        self.open_session(key, fields)
    }
}

impl SessionStore for Redis {
    fn create(&self, token: &[u8], record: SessionRecord) -> Pending<'_, SessionKey> {
        let key = SessionKey(self.keyring.token_hash(token));
        Box::pin(async move {
            let plain = serde_json::to_vec(&record)
                .map_err(|error| StoreError::Storage(format!("session record: {error}")))?;
            let sealed = self.keyring.seal(Purpose::Session, &key.0, &plain)?;
            let (entry, all, theirs) = (
                self.session_key(key),
                self.key("sessions", "all"),
                self.user_sessions(record.user),
            );
            let name = key.to_string();
            let created: u8 = self
                .run(
                    &CREATE,
                    &[&entry, &all, &theirs],
                    &[
                        name.as_bytes(),
                        &sealed,
                        record.last_seen.to_string().as_bytes(),
                        hex::encode(record.user.as_bytes()).as_bytes(),
                    ],
                )
                .await?;
            match created {
                1 => Ok(key),
                _ => Err(StoreError::Conflict("session".into())),
            }
        })
    }

    fn find(&self, token: &[u8]) -> Pending<'_, Option<(SessionKey, SessionRecord)>> {
        let keys = self.keyring.token_hashes(token);
        Box::pin(async move {
            for hash in keys {
                let key = SessionKey(hash);
                if let Some(record) = self.read_session(key).await? {
                    return Ok(Some((key, record)));
                }
            }
            Ok(None)
        })
    }

    fn touch(&self, key: SessionKey, last_seen: u64) -> Pending<'_, bool> {
        Box::pin(async move {
            let entry = self.session_key(key);
            let seen = last_seen.to_string();
            let touched: u8 = self.run(&TOUCH, &[&entry], &[seen.as_bytes()]).await?;
            Ok(touched == 1)
        })
    }

    fn delete(&self, key: SessionKey) -> Pending<'_, bool> {
        Box::pin(async move {
            let (entry, all) = (self.session_key(key), self.key("sessions", "all"));
            let users = self.key("user-sessions", "");
            let name = key.to_string();
            let ended: u8 = self
                .run(
                    &DELETE,
                    &[&entry, &all],
                    &[name.as_bytes(), users.as_bytes()],
                )
                .await?;
            Ok(ended == 1)
        })
    }

    fn delete_user(&self, user: UserId) -> Pending<'_, Vec<SessionKey>> {
        Box::pin(async move {
            let (theirs, all) = (self.user_sessions(user), self.key("sessions", "all"));
            let entries = self.key("session", "");
            let ended: Vec<String> = self
                .run(&DELETE_USER, &[&theirs, &all], &[entries.as_bytes()])
                .await?;
            ended.iter().map(|key| parse_key(key)).collect()
        })
    }

    fn all(&self) -> Pending<'_, Vec<(SessionKey, SessionRecord)>> {
        Box::pin(async move {
            let names: Vec<String> = self
                .query(redis::cmd("SMEMBERS").arg(self.key("sessions", "all")))
                .await?;
            let mut sessions = Vec::with_capacity(names.len());
            for name in names {
                let key = parse_key(&name)?;
                // Ended between the two reads: not a session any more.
                if let Some(record) = self.read_session(key).await? {
                    sessions.push((key, record));
                }
            }
            Ok(sessions)
        })
    }

    fn publish(&self, published: Published) -> Pending<'_, ()> {
        Box::pin(async move {
            let message = feed::encode(&published);
            let command = redis::cmd("PUBLISH")
                .arg(self.feed.channel())
                .arg(message)
                .to_owned();
            self.query::<u64>(&command).await.map(drop)
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.feed.subscribe()
    }

    fn feed_is_live(&self) -> bool {
        self.feed.is_live()
    }
}

fn parse_key(name: &str) -> Result<SessionKey, StoreError> {
    name.parse()
        .map_err(|_| StoreError::Corrupt("a session key in redis is not one".into()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::on_private_server;
    use super::*;
    use crate::store::sessions::Revocation;

    #[tokio::test]
    async fn keeps_the_sessions_contract() {
        let (_server, redis) = on_private_server();
        wait_until_live(&redis).await;
        crate::store::sessions::contract::kept_by(&redis, UserId::from_bytes([1; 16])).await;
    }

    async fn wait_until_live(redis: &Redis) {
        for _ in 0..100 {
            if redis.feed_is_live() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the feed did not come up");
    }

    #[tokio::test]
    async fn a_record_in_redis_names_no_client_and_opens_under_no_other_key() {
        let (_server, redis) = on_private_server();
        let alice = UserId::from_bytes([1; 16]);
        let record = SessionRecord {
            user: alice,
            created: 10,
            last_seen: 10,
            auth_time: 10,
            client: "203.0.113.77".into(),
            user_agent: "Firefox".into(),
        };
        let key = redis.create(b"token-a", record.clone()).await.unwrap();
        let other = redis.create(b"token-b", record).await.unwrap();
        let sealed: Vec<u8> = redis
            .query(redis::cmd("HGET").arg(redis.session_key(key)).arg("r"))
            .await
            .unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"203.0.113.77"));
        assert!(!sealed.windows(7).any(|w| w == b"Firefox"));
        // Copied under another session's key, it does not open.
        let copy = redis::cmd("HSET")
            .arg(redis.session_key(other))
            .arg("r")
            .arg(sealed)
            .to_owned();
        redis.query::<u64>(&copy).await.unwrap();
        assert!(redis.find(b"token-b").await.is_err());
    }

    #[tokio::test]
    async fn a_revocation_published_on_one_replica_reaches_the_other() {
        let (server, one) = on_private_server();
        let keyring = one.keyring.clone();
        let two = Redis::connect(&server.url(), None, None, "wg-test", keyring).unwrap();
        wait_until_live(&two).await;
        let mut heard = two.subscribe();
        let published = Published {
            origin: 1,
            revocation: Revocation::User(UserId::from_bytes([1; 16])),
        };
        one.publish(published).await.unwrap();
        loop {
            let got = heard.recv().await.unwrap();
            if got.revocation != Revocation::Everything {
                assert_eq!(got, published);
                break;
            }
        }
    }

    #[tokio::test]
    async fn a_lost_subscription_is_not_live_and_comes_back_with_everything() {
        let (server, redis) = on_private_server();
        wait_until_live(&redis).await;
        let mut heard = redis.subscribe();
        server.stop();
        for _ in 0..100 {
            if !redis.feed_is_live() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(!redis.feed_is_live(), "a cut subscription is not live");
        server.start_again();
        wait_until_live(&redis).await;
        let mut told = Vec::new();
        while let Ok(published) = heard.try_recv() {
            told.push(published.revocation);
        }
        assert_eq!(told.last(), Some(&Revocation::Everything), "{told:?}");
    }
}
