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

use super::Pending;
use crate::identity::{SessionKey, SessionRecord, UserId};

pub trait SessionStore: Send + Sync {
    /// Stores a new session for `token`; returns its key.
    fn create(&self, token: &[u8], record: SessionRecord) -> Pending<'_, SessionKey>;
    fn find(&self, token: &[u8]) -> Pending<'_, Option<(SessionKey, SessionRecord)>>;
    fn touch(&self, key: SessionKey, last_seen: u64) -> Pending<'_, bool>;
    fn delete(&self, key: SessionKey) -> Pending<'_, bool>;
    fn delete_user(&self, user: UserId) -> Pending<'_, Vec<SessionKey>>;
    fn all(&self) -> Pending<'_, Vec<(SessionKey, SessionRecord)>>;
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
    }
}
