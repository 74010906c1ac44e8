//! Counted slots per client address: connections per peer, requests in flight per client.
//!
//! Threat: one address taking every shared slot, either connections (`server.max_connections`
//! is shared by all clients) or upstream requests (each holds an upstream connection for as
//! long as the client keeps its response open). Rule: at most `max` slots per address at once;
//! a slot is given back when its holder is dropped, whatever way the work ended. The table holds
//! only addresses with a slot taken, so its size is bounded by the slots in use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Slots taken, by address.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    taken: Mutex<HashMap<IpAddr, usize>>,
}

/// One slot of one address; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            taken: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `address`, or `None` when it holds `max` already.
    pub fn try_take(self: &Arc<Self>, address: IpAddr) -> Option<Slot> {
        let address = address.to_canonical();
        // A panic elsewhere while counting cannot leave the map inconsistent: keep using it.
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let count = taken.entry(address).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            table: self.clone(),
            address,
        })
    }

    /// Slots `address` holds now.
    pub fn taken(&self, address: IpAddr) -> usize {
        let taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        taken.get(&address.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self
            .table
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = taken.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_at_most_max_and_dropped_slots_come_back() {
        let table = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.try_take(a).unwrap();
        let _second = table.try_take(a).unwrap();
        assert!(table.try_take(a).is_none());
        let _other = table.try_take(b).unwrap();
        assert_eq!(table.taken(a), 2);
        drop(first);
        assert_eq!(table.taken(a), 1);
        let _third = table.try_take(a).unwrap();
        assert!(table.try_take(a).is_none());
    }

    #[test]
    fn mapped_v6_addresses_count_as_their_v4_address_and_empty_entries_go() {
        let table = PerAddress::new(1);
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let slot = table.try_take(v4).unwrap();
        assert!(table.try_take(mapped).is_none());
        drop(slot);
        assert!(table.taken.lock().unwrap().is_empty());
    }
}
