//! Session records, stored under the keyed hash of their token (the token itself is never
//! stored), read and written without blocking the runtime.
//!
//! **Contract.** [`SessionStore::find`] returns the record of a token and the key it is stored
//! under, `None` when the store has none (forged, ended, pruned). [`SessionStore::touch`] only
//! moves `last_seen` forward; a session that is gone is no error (`false`).
//! [`SessionStore::delete`] is the atomic check every revocation relies on: of two callers
//! ending one session, exactly one gets `true`. [`SessionStore::delete_user`] removes every
//! session of a user at once and returns their keys. [`SessionStore::all`] lists every record,
//! dead or alive: the caller judges them with its lifetimes. A store that cannot answer returns
//! an error, and the request path refuses (503); nothing falls back to memory.
//!
//! **Revocation feed.** Replicas keep live sessions in a cache in front of the store, so a
//! session ended on one replica must leave every other replica's cache at once, or it keeps
//! working there until the cache forgets it. [`SessionStore::publish`] announces what went stale
//! to every subscriber on every replica, the publisher included; [`SessionStore::subscribe`] is
//! the feed from now on. A subscriber that falls behind is told how much it missed
//! (`RecvError::Lagged`), and must then drop its whole cache: it cannot know what it missed.
//! A feed that crosses the network can be cut; while it is, [`SessionStore::feed_is_live`] is
//! false and caches are bypassed, and when it is back it says [`Revocation::Everything`].

use tokio::sync::broadcast;

use super::Pending;
use crate::identity::{SessionKey, SessionRecord, UserId};

/// What went stale in the caches, and which replica says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// The publishing replica's id, so that it can pass over what it has applied already.
    pub origin: u64,
    pub revocation: Revocation,
}

/// What a cache in front of the store must drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// One session ended.
    Session(SessionKey),
    /// Every session of the user ended, and whatever was on its way to becoming one.
    User(UserId),
    /// The account changed (its roles, say): the sessions stay, the account is read again.
    Refresh(UserId),
    /// The feed itself was cut: whatever was cached before may be stale, so all of it goes.
    Everything,
}

pub trait SessionStore: Send + Sync {
    /// Stores a new session for `token`; returns its key.
    fn create(&self, token: &[u8], record: SessionRecord) -> Pending<'_, SessionKey>;
    fn find(&self, token: &[u8]) -> Pending<'_, Option<(SessionKey, SessionRecord)>>;
    fn touch(&self, key: SessionKey, last_seen: u64) -> Pending<'_, bool>;
    fn delete(&self, key: SessionKey) -> Pending<'_, bool>;
    fn delete_user(&self, user: UserId) -> Pending<'_, Vec<SessionKey>>;
    fn all(&self) -> Pending<'_, Vec<(SessionKey, SessionRecord)>>;
    /// Announces to every replica's cache (this one's included) what went stale.
    fn publish(&self, published: Published) -> Pending<'_, ()>;
    /// Everything published from now on.
    fn subscribe(&self) -> broadcast::Receiver<Published>;
    /// Whether the feed is whole: false while a shared backend's subscription is down, when a
    /// revocation may be published elsewhere and never arrive; a cache is not trusted then.
    fn feed_is_live(&self) -> bool;
}

#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn record(user: UserId) -> SessionRecord {
        SessionRecord {
            user,
            created: T0,
            last_seen: T0,
            auth_time: T0,
            client: "192.0.2.1".into(),
            user_agent: "test".into(),
        }
    }

    /// The contract every backend keeps, for a user `alice` that exists in the store.
    pub async fn kept_by(store: &dyn SessionStore, alice: UserId) {
        let key = store.create(b"token-1", record(alice)).await.unwrap();
        let other = store.create(b"token-2", record(alice)).await.unwrap();
        let (found, _) = store.find(b"token-1").await.unwrap().unwrap();
        assert!(found == key);
        assert!(store.find(b"forged").await.unwrap().is_none());

        // Activity only moves forward.
        assert!(store.touch(key, T0 + 60).await.unwrap());
        assert!(store.touch(key, T0 + 30).await.unwrap());
        let (_, seen) = store.find(b"token-1").await.unwrap().unwrap();
        assert_eq!(seen.last_seen, T0 + 60);

        // Of two revocations of one session, exactly one ends it.
        assert!(store.delete(key).await.unwrap());
        assert!(!store.delete(key).await.unwrap());
        assert!(
            !store.touch(key, T0 + 90).await.unwrap(),
            "gone is no error"
        );
        assert!(store.find(b"token-1").await.unwrap().is_none());

        let ended = store.delete_user(alice).await.unwrap();
        assert!(ended == vec![other]);
        assert!(store.all().await.unwrap().is_empty());

        // Every subscriber hears every revocation, in order.
        let (mut one, mut two) = (store.subscribe(), store.subscribe());
        let published = |revocation| Published {
            origin: 7,
            revocation,
        };
        let revocations = [Revocation::Session(key), Revocation::User(alice)];
        for revocation in revocations {
            store.publish(published(revocation)).await.unwrap();
        }
        for feed in [&mut one, &mut two] {
            for revocation in revocations {
                assert!(feed.recv().await.unwrap() == published(revocation));
            }
        }
    }
}
