//! Short-lived server-side state of a multi-step exchange (an enrollment between the password
//! and the first code, a login between the password and the second factor, a WebAuthn
//! ceremony), kept under a random id that the client echoes back, in a store every replica
//! reaches: a ceremony started on one may finish on another.
//!
//! **The threat.** State an attacker can guess (a short or sequential id), finish twice, keep
//! alive forever, or pile up until memory runs out, or until the store is full and every other
//! user is refused (twenty calls used to open twenty ceremonies for one account, and about
//! thirty clients filled the whole WebAuthn map).
//!
//! **The contract** ([`Ephemeral`]), per [`Space`] (one kind of ceremony). Ids are 256 random
//! bits (64 hex digits), drawn by the caller ([`new_id`]). Each entry belongs to one user and
//! lives at most the space's `ttl` seconds; an expired entry is as good as gone. A user holds at
//! most [`MAX_OPEN_PER_USER`] entries in a space: the newest replaces the oldest, so an account
//! can neither fill the space nor lose its latest login to its own earlier ones; a step-up or a
//! passkey registration belongs to the session's user, so one session is bounded too. A space
//! holds at most `capacity` entries in all: one more is refused (the caller answers "busy")
//! rather than grown. [`Ephemeral::take`] removes an entry atomically, so two racing requests
//! (on one replica or two) cannot both finish one step; a caller that keeps it alive after a
//! wrong answer puts it back with its original expiry and age. [`Ephemeral::drop_user`] drops
//! all of a user's entries in every space (their sessions were ended). Values are opaque bytes
//! (the callers' state, serialized) and may carry secrets (a TOTP seed being enrolled): a backend
//! outside the process seals them before they leave it. Time is a parameter. A store that
//! cannot answer returns an error and the step is refused (503); nothing falls back to memory.
//!
//! ```text
//!   open(space, id, user, value, now) ── user holds MAX_OPEN_PER_USER ──▶ their oldest dropped
//!        │ ── space holds `capacity` ──────────────────────────────────▶ false (busy)
//!        ▼
//!   id ──▶ read / take (once) ──▶ put_back (same expiry and age) or done
//! ```
//!
//! The embedded backend is [`Memory`]: this process's memory, which is all one replica needs
//! (the state is worth minutes, and a restart only asks the user to start the step again).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::CryptoRng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Pending;
use crate::identity::seal::hex_encode_into;
use crate::identity::{StoreError, UserId};

/// Open entries one user may hold in one space: a few tabs or devices logging in at once.
pub const MAX_OPEN_PER_USER: usize = 5;

/// One kind of ceremony: its name, how long an entry lives and how many the space holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub name: &'static str,
    /// Seconds.
    pub ttl: u64,
    pub capacity: usize,
}

/// A fresh ceremony id: 256 bits from `rng`, 64 hex digits.
pub fn new_id<R: CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut bits = [0u8; 32];
    rng.fill_bytes(&mut bits);
    let mut id = String::with_capacity(64);
    hex_encode_into(&bits, &mut id);
    id
}

/// Short-lived ceremony state. See the module docs for the contract.
pub trait Ephemeral: Send + Sync {
    /// Opens `id` for `user` with `value` until `now + space.ttl`, dropping the user's oldest
    /// entries in the space when they hold [`MAX_OPEN_PER_USER`]; `false` when the space is full.
    fn open(
        &self,
        space: Space,
        id: String,
        user: UserId,
        value: Vec<u8>,
        now: u64,
    ) -> Pending<'_, bool>;
    /// The open entry `id`, left in place: its user and value.
    fn read(&self, space: Space, id: &str, now: u64) -> Pending<'_, Option<(UserId, Vec<u8>)>>;
    /// Removes the open entry `id` and hands it over; of two racing takes, one gets it.
    fn take(&self, space: Space, id: &str, now: u64) -> Pending<'_, Option<Held<Vec<u8>>>>;
    /// Puts a taken entry back under its id, with its original expiry and age: if its user
    /// opened others meanwhile, it is the oldest and goes first.
    fn put_back(&self, space: Space, id: String, held: Held<Vec<u8>>) -> Pending<'_, ()>;
    /// Drops every entry of `user`, in every space.
    fn drop_user(&self, user: UserId) -> Pending<'_, ()>;
    /// Forgets the space's expired entries; returns how many.
    fn prune(&self, space: Space, now: u64) -> Pending<'_, usize>;
}

/// An entry taken out of a space, to be finished or put back.
#[derive(Clone, Debug)]
pub struct Held<T> {
    pub user: UserId,
    pub value: T,
    expires: u64,
    serial: u64,
}

impl<T> Held<T> {
    /// An entry as a backend outside this module stored it.
    #[cfg(feature = "redis")]
    pub(in crate::store) fn stored(user: UserId, value: T, expires: u64, serial: u64) -> Self {
        Self {
            user,
            value,
            expires,
            serial,
        }
    }

    /// When it expires and its place in its user's order, for a backend to store.
    #[cfg(feature = "redis")]
    pub(in crate::store) fn age(&self) -> (u64, u64) {
        (self.expires, self.serial)
    }

    fn map<U>(self, value: U) -> Held<U> {
        Held {
            user: self.user,
            value,
            expires: self.expires,
            serial: self.serial,
        }
    }
}

/// One space of an [`Ephemeral`] store, for values of type `T` (serialized as JSON).
pub struct Ceremonies<T> {
    store: Arc<dyn Ephemeral>,
    space: Space,
    kind: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Ceremonies<T> {
    pub fn new(store: Arc<dyn Ephemeral>, space: Space) -> Self {
        Self {
            store,
            space,
            kind: PhantomData,
        }
    }

    /// Opens an entry for `user` under a fresh id from `rng` (drawn before the future is
    /// made, so that it does not hold the generator); `None` when the space is full.
    pub fn open<R: CryptoRng + ?Sized>(
        &self,
        user: UserId,
        value: &T,
        now: u64,
        rng: &mut R,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + '_ {
        let id = new_id(rng);
        let encoded = encode(value);
        async move {
            let opened = self
                .store
                .open(self.space, id.clone(), user, encoded?, now)
                .await?;
            Ok(opened.then_some(id))
        }
    }

    pub async fn read(&self, id: &str, now: u64) -> Result<Option<(UserId, T)>, StoreError> {
        match self.store.read(self.space, id, now).await? {
            Some((user, value)) => Ok(Some((user, decode(self.space, &value)?))),
            None => Ok(None),
        }
    }

    pub async fn take(&self, id: &str, now: u64) -> Result<Option<Held<T>>, StoreError> {
        match self.store.take(self.space, id, now).await? {
            Some(held) => {
                let value = decode(self.space, &held.value)?;
                Ok(Some(held.map(value)))
            }
            None => Ok(None),
        }
    }

    pub async fn put_back(&self, id: &str, held: Held<T>) -> Result<(), StoreError> {
        let value = encode(&held.value)?;
        let held = held.map(value);
        self.store.put_back(self.space, id.to_owned(), held).await
    }

    pub async fn prune(&self, now: u64) -> Result<usize, StoreError> {
        self.store.prune(self.space, now).await
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|error| StoreError::Storage(format!("ceremony state: {error}")))
}

/// Says where the state stopped parsing, never what it says: it may hold a secret (a TOTP seed
/// being enrolled), and serde's messages quote values.
fn decode<T: DeserializeOwned>(space: Space, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| {
        StoreError::Corrupt(format!(
            "{} ceremony state does not parse (line {}, column {})",
            space.name,
            error.line(),
            error.column()
        ))
    })
}

/// The embedded backend: every space in this process's memory.
#[derive(Default)]
pub struct Memory {
    spaces: Mutex<HashMap<&'static str, Entries>>,
}

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The spaces. Every change under the lock is one insert, remove or retain, so a poisoned
    /// lock is still good to use.
    fn spaces(&self) -> MutexGuard<'_, HashMap<&'static str, Entries>> {
        self.spaces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T: Send + 'static>(
        &self,
        space: Space,
        work: impl FnOnce(&mut Entries) -> T,
    ) -> Pending<'_, T> {
        let mut spaces = self.spaces();
        let entries = spaces.entry(space.name).or_insert_with(Entries::new);
        let done = work(entries);
        Box::pin(std::future::ready(Ok(done)))
    }
}

impl Ephemeral for Memory {
    fn open(
        &self,
        space: Space,
        id: String,
        user: UserId,
        value: Vec<u8>,
        now: u64,
    ) -> Pending<'_, bool> {
        self.with(space, |entries| entries.open(space, id, user, value, now))
    }

    fn read(&self, space: Space, id: &str, now: u64) -> Pending<'_, Option<(UserId, Vec<u8>)>> {
        self.with(space, |entries| {
            entries
                .get(id, now)
                .map(|entry| (entry.user, entry.value.clone()))
        })
    }

    fn take(&self, space: Space, id: &str, now: u64) -> Pending<'_, Option<Held<Vec<u8>>>> {
        self.with(space, |entries| entries.take(id, now))
    }

    fn put_back(&self, space: Space, id: String, held: Held<Vec<u8>>) -> Pending<'_, ()> {
        self.with(space, |entries| entries.put_back(id, held))
    }

    fn drop_user(&self, user: UserId) -> Pending<'_, ()> {
        for entries in self.spaces().values_mut() {
            entries.drop_user(user);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn prune(&self, space: Space, now: u64) -> Pending<'_, usize> {
        self.with(space, |entries| entries.prune(now))
    }
}

struct Entry {
    user: UserId,
    value: Vec<u8>,
    expires: u64,
    /// Order of opening: which entry of a user is the oldest, also within one second.
    serial: u64,
}

/// One space's open entries by id.
struct Entries {
    open: HashMap<String, Entry>,
    opened: u64,
}

impl Entries {
    fn new() -> Self {
        Self {
            open: HashMap::new(),
            opened: 0,
        }
    }

    fn prune(&mut self, now: u64) -> usize {
        let before = self.open.len();
        self.open.retain(|_, entry| now < entry.expires);
        before - self.open.len()
    }

    fn open(&mut self, space: Space, id: String, user: UserId, value: Vec<u8>, now: u64) -> bool {
        self.prune(now);
        self.keep_newest(user, MAX_OPEN_PER_USER - 1);
        if self.open.len() >= space.capacity {
            return false;
        }
        self.opened += 1;
        let entry = Entry {
            user,
            value,
            expires: now.saturating_add(space.ttl),
            serial: self.opened,
        };
        self.open.insert(id, entry);
        true
    }

    /// Drops `user`'s oldest entries until at most `keep` remain.
    fn keep_newest(&mut self, user: UserId, keep: usize) {
        let mut theirs: Vec<(u64, String)> = self
            .open
            .iter()
            .filter(|(_, entry)| entry.user == user)
            .map(|(id, entry)| (entry.serial, id.clone()))
            .collect();
        if theirs.len() <= keep {
            return;
        }
        theirs.sort_unstable();
        for (_, id) in &theirs[..theirs.len() - keep] {
            self.open.remove(id);
        }
    }

    fn get(&mut self, id: &str, now: u64) -> Option<&Entry> {
        self.prune(now);
        self.open.get(id)
    }

    fn take(&mut self, id: &str, now: u64) -> Option<Held<Vec<u8>>> {
        self.prune(now);
        self.open.remove(id).map(|entry| Held {
            user: entry.user,
            value: entry.value,
            expires: entry.expires,
            serial: entry.serial,
        })
    }

    fn put_back(&mut self, id: String, held: Held<Vec<u8>>) {
        let user = held.user;
        let entry = Entry {
            user,
            value: held.value,
            expires: held.expires,
            serial: held.serial,
        };
        self.open.insert(id, entry);
        self.keep_newest(user, MAX_OPEN_PER_USER);
    }

    fn drop_user(&mut self, user: UserId) {
        self.open.retain(|_, entry| entry.user != user);
    }
}

#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const NOW: u64 = 1_800_000_000;
    const ALICE: UserId = UserId::from_bytes([1; 16]);
    const BOB: UserId = UserId::from_bytes([2; 16]);

    fn space(name: &'static str, capacity: usize) -> Space {
        Space {
            name,
            ttl: 60,
            capacity,
        }
    }

    /// The contract every backend keeps; each backend's tests call it on a fresh store.
    pub async fn kept_by(store: Arc<dyn Ephemeral>) {
        expiry(store.clone()).await;
        bound_and_once(store.clone()).await;
        per_user(store.clone()).await;
        spaces_apart(store).await;
    }

    async fn expiry(store: Arc<dyn Ephemeral>) {
        let mut rng = StdRng::seed_from_u64(7);
        let map = Ceremonies::new(store, space("expiry", 4));
        let id = map
            .open(ALICE, &1u32, NOW, &mut rng)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(map.read(&id, NOW + 59).await.unwrap(), Some((ALICE, 1)));
        assert_eq!(map.read(&id, NOW + 60).await.unwrap(), None);
        assert!(map.take(&id, NOW + 60).await.unwrap().is_none());
    }

    async fn bound_and_once(store: Arc<dyn Ephemeral>) {
        let mut rng = StdRng::seed_from_u64(7);
        let map = Ceremonies::new(store, space("bound", 2));
        let a = map
            .open(ALICE, &1u32, NOW, &mut rng)
            .await
            .unwrap()
            .unwrap();
        map.open(BOB, &2, NOW, &mut rng).await.unwrap().unwrap();
        let third = UserId::from_bytes([3; 16]);
        assert_eq!(
            map.open(third, &3, NOW, &mut rng).await.unwrap(),
            None,
            "full"
        );
        let (first, second) = tokio::join!(map.take(&a, NOW), map.take(&a, NOW));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert!(
            first.is_some() != second.is_some(),
            "one of two racing takes wins"
        );
        let held = first.or(second).unwrap();
        assert_eq!((held.user, held.value), (ALICE, 1));
        // Put back, it keeps its first expiry.
        map.put_back(&a, held).await.unwrap();
        assert!(map.read(&a, NOW + 59).await.unwrap().is_some());
        assert!(map.take(&a, NOW + 60).await.unwrap().is_none());
        // Expired entries make room.
        assert!(
            map.open(ALICE, &4, NOW + 60, &mut rng)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(map.prune(NOW + 120).await.unwrap(), 1);
    }

    async fn per_user(store: Arc<dyn Ephemeral>) {
        let mut rng = StdRng::seed_from_u64(7);
        let map = Ceremonies::new(store.clone(), space("per-user", 100));
        let bobs = map
            .open(BOB, &0usize, NOW, &mut rng)
            .await
            .unwrap()
            .unwrap();
        let mut ids = Vec::new();
        for n in 1..=MAX_OPEN_PER_USER + 1 {
            ids.push(map.open(ALICE, &n, NOW, &mut rng).await.unwrap().unwrap());
        }
        assert!(
            map.read(&ids[0], NOW).await.unwrap().is_none(),
            "the oldest is gone"
        );
        for (n, id) in ids.iter().enumerate().skip(1) {
            assert_eq!(map.read(id, NOW).await.unwrap(), Some((ALICE, n + 1)));
        }
        // One taken while the user opens another: put back, it is the oldest and goes.
        let held = map.take(&ids[1], NOW).await.unwrap().unwrap();
        let newest = map.open(ALICE, &99, NOW, &mut rng).await.unwrap().unwrap();
        map.put_back(&ids[1], held).await.unwrap();
        assert!(map.read(&ids[1], NOW).await.unwrap().is_none());
        assert_eq!(map.read(&newest, NOW).await.unwrap(), Some((ALICE, 99)));

        store.drop_user(ALICE).await.unwrap();
        assert!(map.read(&newest, NOW).await.unwrap().is_none());
        assert_eq!(map.read(&bobs, NOW).await.unwrap(), Some((BOB, 0)));
    }

    async fn spaces_apart(store: Arc<dyn Ephemeral>) {
        let mut rng = StdRng::seed_from_u64(7);
        let logins = Ceremonies::new(store.clone(), space("one", 1));
        let others = Ceremonies::<u32>::new(store.clone(), space("two", 1));
        let id = logins
            .open(ALICE, &1u32, NOW, &mut rng)
            .await
            .unwrap()
            .unwrap();
        assert!(others.read(&id, NOW).await.unwrap().is_none());
        assert!(
            others.open(BOB, &2, NOW, &mut rng).await.unwrap().is_some(),
            "its own capacity"
        );
        store.drop_user(ALICE).await.unwrap();
        assert!(
            logins.read(&id, NOW).await.unwrap().is_none(),
            "dropped in every space"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ids_are_random_256_bit_hex_from_the_generator_given() {
        let id = |seed| new_id(&mut StdRng::seed_from_u64(seed));
        assert_eq!(id(1).len(), 64);
        assert!(id(1).bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id(1), id(1));
        assert_ne!(id(1), id(2));
    }

    #[test]
    fn state_that_does_not_parse_is_reported_without_its_content() {
        let space = Space {
            name: "enrollment",
            ttl: 60,
            capacity: 1,
        };
        let error = decode::<u32>(space, br#""JBSWY3DPEHPK3PXP""#).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("enrollment ceremony state does not parse"),
            "{text}"
        );
        assert!(!text.contains("JBSWY3DP"), "{text}");
    }

    #[tokio::test]
    async fn memory_keeps_the_contract() {
        contract::kept_by(Arc::new(Memory::new())).await;
    }
}
