//! Short-lived server-side state of a multi-step exchange (an enrollment between the password
//! and the first code, a login between the password and the second factor, a WebAuthn
//! ceremony), kept under a random id that the client echoes back.
//!
//! **The threat.** State an attacker can guess (a short or sequential id), finish twice, keep
//! alive forever, or pile up until memory runs out.
//!
//! **The rule.** Ids are 256 random bits (64 hex digits). Each entry lives at most `ttl`
//! seconds; expired entries go on every access. The map holds at most `capacity` entries: one
//! more is refused (the caller answers "busy") rather than grown. Taking an entry removes it,
//! so two racing requests cannot both finish one step; a caller that keeps it alive after a
//! wrong answer puts it back with its original expiry. Time is a parameter.

use std::collections::HashMap;

use crate::identity::seal::hex_encode_into;

struct Entry<T> {
    value: T,
    expires: u64,
}

/// An entry taken out of the map, to be finished or put back.
pub struct Held<T> {
    pub value: T,
    expires: u64,
}

/// Open entries by id.
pub struct Ceremonies<T> {
    open: HashMap<String, Entry<T>>,
    capacity: usize,
    ttl: u64,
}

impl<T> Ceremonies<T> {
    pub fn new(capacity: usize, ttl: u64) -> Self {
        Self {
            open: HashMap::new(),
            capacity,
            ttl,
        }
    }

    /// Forgets expired entries.
    pub fn prune(&mut self, now: u64) {
        self.open.retain(|_, entry| now < entry.expires);
    }

    /// Opens an entry under a fresh random id; `None` when the map is full.
    pub fn start(&mut self, value: T, now: u64) -> Option<String> {
        self.prune(now);
        if self.open.len() >= self.capacity {
            return None;
        }
        let bits: [u8; 32] = rand::random();
        let mut id = String::with_capacity(64);
        hex_encode_into(&bits, &mut id);
        let expires = now.saturating_add(self.ttl);
        self.open.insert(id.clone(), Entry { value, expires });
        Some(id)
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
            value: entry.value,
            expires: entry.expires,
        })
    }

    /// Puts a taken entry back under its id, with its original expiry.
    pub fn put_back(&mut self, id: &str, held: Held<T>) {
        let entry = Entry {
            value: held.value,
            expires: held.expires,
        };
        self.open.insert(id.to_owned(), entry);
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn ids_are_random_256_bit_hex_and_entries_expire() {
        let mut map = Ceremonies::new(4, 60);
        let first = map.start("a", NOW).unwrap();
        let second = map.start("b", NOW).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, second);
        assert_eq!(map.get(&first, NOW + 59).map(|v| *v), Some("a"));
        assert!(map.get(&first, NOW + 60).is_none());
        assert!(map.is_empty());
    }

    #[test]
    fn the_map_is_bounded_and_taking_is_once() {
        let mut map = Ceremonies::new(2, 60);
        let a = map.start(1, NOW).unwrap();
        map.start(2, NOW).unwrap();
        assert!(map.start(3, NOW).is_none());
        let held = map.take(&a, NOW).unwrap();
        assert_eq!(held.value, 1);
        assert!(map.take(&a, NOW).is_none());
        // Put back, it keeps its first expiry.
        map.put_back(&a, held);
        assert!(map.get(&a, NOW + 59).is_some());
        assert!(map.take(&a, NOW + 60).is_none());
        // Expired entries make room.
        assert!(map.start(4, NOW + 60).is_some());
    }
}
