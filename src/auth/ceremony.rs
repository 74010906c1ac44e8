//! Short-lived server-side state of a multi-step exchange (an enrollment between the password
//! and the first code, a login between the password and the second factor, a WebAuthn
//! ceremony), kept under a random id that the client echoes back.
//!
//! **The threat.** State an attacker can guess (a short or sequential id), finish twice, keep
//! alive forever, or pile up until memory runs out, or until the map is full and every other
//! user is refused (twenty calls used to open twenty ceremonies for one account, and about
//! thirty clients filled the whole WebAuthn map).
//!
//! **The rule.** Ids are 256 random bits (64 hex digits). Each entry belongs to one user and
//! lives at most `ttl` seconds; expired entries go on every access. A user holds at most
//! [`MAX_OPEN_PER_USER`] entries: the newest replaces the oldest, so an account can neither fill
//! the map nor lose its latest login to its own earlier ones; a step-up or a passkey
//! registration belongs to the session's user, so one session is bounded too. The map holds at
//! most `capacity` entries in all: one more is refused (the caller answers "busy") rather than
//! grown. Taking an entry removes it, so two racing requests cannot both finish one step; a
//! caller that keeps it alive after a wrong answer puts it back with its original expiry and
//! age. Ending a user's sessions drops all of that user's entries ([`Ceremonies::drop_user`]).
//! Time is a parameter.
//!
//! ```text
//!   start(user, value, now) ── user holds MAX_OPEN_PER_USER ──▶ their oldest is dropped
//!        │ ── map holds `capacity` ─────────────────────────────▶ None (busy)
//!        ▼
//!   id ──▶ get / take (once) ──▶ put_back (same expiry and age) or done
//! ```

use std::collections::HashMap;

use rand::CryptoRng;

use crate::identity::UserId;
use crate::identity::seal::hex_encode_into;

/// Open entries one user may hold in one map: a few tabs or devices logging in at once.
pub const MAX_OPEN_PER_USER: usize = 5;

struct Entry<T> {
    user: UserId,
    value: T,
    expires: u64,
    /// Order of opening: which entry of a user is the oldest, also within one second.
    serial: u64,
}

/// An entry taken out of the map, to be finished or put back.
pub struct Held<T> {
    pub user: UserId,
    pub value: T,
    expires: u64,
    serial: u64,
}

/// Open entries by id.
pub struct Ceremonies<T> {
    open: HashMap<String, Entry<T>>,
    capacity: usize,
    ttl: u64,
    opened: u64,
}

impl<T> Ceremonies<T> {
    pub fn new(capacity: usize, ttl: u64) -> Self {
        Self {
            open: HashMap::new(),
            capacity,
            ttl,
            opened: 0,
        }
    }

    /// Forgets expired entries; returns how many.
    pub fn prune(&mut self, now: u64) -> usize {
        let before = self.open.len();
        self.open.retain(|_, entry| now < entry.expires);
        before - self.open.len()
    }

    /// Opens an entry for `user` under a fresh id of 256 bits from `rng`, dropping the user's
    /// oldest when they already hold [`MAX_OPEN_PER_USER`]; `None` when the map is full.
    pub fn start<R: CryptoRng + ?Sized>(
        &mut self,
        user: UserId,
        value: T,
        now: u64,
        rng: &mut R,
    ) -> Option<String> {
        self.prune(now);
        self.keep_newest(user, MAX_OPEN_PER_USER - 1);
        if self.open.len() >= self.capacity {
            return None;
        }
        let mut bits = [0u8; 32];
        rng.fill_bytes(&mut bits);
        let mut id = String::with_capacity(64);
        hex_encode_into(&bits, &mut id);
        self.opened += 1;
        let entry = Entry {
            user,
            value,
            expires: now.saturating_add(self.ttl),
            serial: self.opened,
        };
        self.open.insert(id.clone(), entry);
        Some(id)
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

    /// The open entry `id`.
    pub fn get(&mut self, id: &str, now: u64) -> Option<&mut T> {
        self.prune(now);
        self.open.get_mut(id).map(|entry| &mut entry.value)
    }

    /// Removes the open entry `id` and hands it over.
    pub fn take(&mut self, id: &str, now: u64) -> Option<Held<T>> {
        self.prune(now);
        self.open.remove(id).map(|entry| Held {
            user: entry.user,
            value: entry.value,
            expires: entry.expires,
            serial: entry.serial,
        })
    }

    /// Puts a taken entry back under its id, with its original expiry and age: if its user
    /// opened others meanwhile, it is the oldest and goes first.
    pub fn put_back(&mut self, id: &str, held: Held<T>) {
        let user = held.user;
        let entry = Entry {
            user,
            value: held.value,
            expires: held.expires,
            serial: held.serial,
        };
        self.open.insert(id.to_owned(), entry);
        self.keep_newest(user, MAX_OPEN_PER_USER);
    }

    /// Drops every entry of `user` (their sessions were ended or a credential reset).
    pub fn drop_user(&mut self, user: UserId) {
        self.open.retain(|_, entry| entry.user != user);
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const NOW: u64 = 1_800_000_000;
    const ALICE: UserId = UserId::from_bytes([1; 16]);
    const BOB: UserId = UserId::from_bytes([2; 16]);

    #[test]
    fn ids_are_random_256_bit_hex_and_entries_expire() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut map = Ceremonies::new(4, 60);
        let first = map.start(ALICE, "a", NOW, &mut rng).unwrap();
        let second = map.start(ALICE, "b", NOW, &mut rng).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, second);
        assert_eq!(map.get(&first, NOW + 59).map(|v| *v), Some("a"));
        assert!(map.get(&first, NOW + 60).is_none());
        assert!(map.is_empty());
    }

    #[test]
    fn ids_come_from_the_generator_given() {
        let id = |seed| {
            Ceremonies::new(4, 60)
                .start(ALICE, (), NOW, &mut StdRng::seed_from_u64(seed))
                .unwrap()
        };
        assert_eq!(id(1), id(1));
        assert_ne!(id(1), id(2));
    }

    #[test]
    fn the_map_is_bounded_and_taking_is_once() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut map = Ceremonies::new(2, 60);
        let a = map.start(ALICE, 1, NOW, &mut rng).unwrap();
        map.start(BOB, 2, NOW, &mut rng).unwrap();
        assert!(
            map.start(UserId::from_bytes([3; 16]), 3, NOW, &mut rng)
                .is_none()
        );
        let held = map.take(&a, NOW).unwrap();
        assert_eq!((held.user, held.value), (ALICE, 1));
        assert!(map.take(&a, NOW).is_none());
        // Put back, it keeps its first expiry.
        map.put_back(&a, held);
        assert!(map.get(&a, NOW + 59).is_some());
        assert!(map.take(&a, NOW + 60).is_none());
        // Expired entries make room.
        assert!(map.start(ALICE, 4, NOW + 60, &mut rng).is_some());
    }

    #[test]
    fn a_users_newest_entry_replaces_their_oldest_and_others_keep_theirs() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut map = Ceremonies::new(100, 60);
        let bobs = map.start(BOB, 0, NOW, &mut rng).unwrap();
        let ids: Vec<String> = (1..=MAX_OPEN_PER_USER + 1)
            .map(|n| map.start(ALICE, n, NOW, &mut rng).unwrap())
            .collect();
        assert!(map.get(&ids[0], NOW).is_none(), "the oldest is gone");
        for (n, id) in ids.iter().enumerate().skip(1) {
            assert_eq!(map.get(id, NOW).copied(), Some(n + 1));
        }
        assert_eq!(map.get(&bobs, NOW).copied(), Some(0));

        // One taken while the user opens another: put back, it is the oldest and goes.
        let held = map.take(&ids[1], NOW).unwrap();
        let newest = map.start(ALICE, 99, NOW, &mut rng).unwrap();
        map.put_back(&ids[1], held);
        assert!(map.get(&ids[1], NOW).is_none());
        assert_eq!(map.get(&newest, NOW).copied(), Some(99));

        map.drop_user(ALICE);
        assert!(map.get(&newest, NOW).is_none());
        assert_eq!(map.get(&bobs, NOW).copied(), Some(0));
    }
}
