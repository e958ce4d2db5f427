//! [`LeaseTable`]: the in-flight deliveries, keyed by delivery id.
//!
//! A [`Lease`] is a message body plus the deadline after which its delivery
//! id stops being valid. The table's one concurrency primitive is
//! [`LeaseTable::remove_if`]: it removes an entry only if a predicate on it
//! holds, atomically with respect to every other operation on that id. That
//! is how exactly one of acknowledge, requeue and expiry wins a delivery:
//! acknowledge and requeue remove only while `now < deadline`, expiry only
//! once `now >= deadline`, and whoever removes the entry owns the message.
//!
//! In normal builds the table is a `DashMap` (sharded `RwLock<HashMap>`),
//! so operations on different ids rarely contend. Under `cfg(loom)` it is a
//! loom `Mutex<HashMap>`: loom cannot see inside `DashMap`, and a single
//! lock gives the same per-id atomicity, which is all the protocol uses.
//!
//! Touch is [`LeaseTable::update_if`]: it changes a lease's deadline under
//! the same per-id lock, only while `now < deadline`, so a touch and an
//! expiry of one lease also have exactly one winner.
//!
//! Each queue has its own table, so an id presented under another queue's
//! path is simply not found, and deleting a queue drops its table's leases
//! at once.
//!
//! Memory per lease (64-bit): key 8 + message 48 + deadline 8 = 64 bytes of
//! entry, plus hashbrown's control byte and spare capacity (the table is
//! kept between 7/16 and 7/8 full), so 73 to 146 bytes, about 95 on average.

use std::hash::{BuildHasherDefault, Hasher};

use crate::clock::Timestamp;
use crate::message::Message;

/// One in-flight delivery: the message and when its lease runs out.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) message: Message,
    pub(crate) deadline: Timestamp,
}

/// Hashes a delivery id with one multiplication.
///
/// Ids are sequential `u64`s chosen by the broker, never by a client, so
/// there is no hash-flooding risk and SipHash's cost buys nothing. The
/// multiply spreads consecutive ids over all of DashMap's shards (it picks a
/// shard from the high bits) and over hashbrown's buckets.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for `u64` keys; this fallback keeps the
        // hasher correct for any other input.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (id ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type BuildIdHasher = BuildHasherDefault<IdHasher>;

/// Below this many slots a table is not worth shrinking.
#[cfg(not(loom))]
const SHRINK_ABOVE: usize = 4096;

#[cfg(not(loom))]
mod imp {
    use dashmap::DashMap;

    use super::{BuildIdHasher, Lease, SHRINK_ABOVE};

    pub(crate) struct LeaseTable {
        map: DashMap<u64, Lease, BuildIdHasher>,
    }

    impl LeaseTable {
        pub(crate) fn new() -> Self {
            LeaseTable {
                map: DashMap::with_hasher(BuildIdHasher::default()),
            }
        }

        pub(crate) fn insert(&self, id: u64, lease: Lease) {
            self.map.insert(id, lease);
        }

        pub(crate) fn remove_if(
            &self,
            id: u64,
            keep: impl FnOnce(&Lease) -> bool,
        ) -> Option<Lease> {
            self.map
                .remove_if(&id, |_, lease| keep(lease))
                .map(|(_, lease)| lease)
        }

        /// Calls `update` on lease `id` with its entry locked; `update`
        /// returns whether it changed anything. `false` if there is no such
        /// lease.
        pub(crate) fn update_if(&self, id: u64, update: impl FnOnce(&mut Lease) -> bool) -> bool {
            match self.map.get_mut(&id) {
                Some(mut lease) => update(&mut lease),
                None => false,
            }
        }

        /// Calls `f` on every lease (a queue being deleted, for its
        /// journal).
        pub(crate) fn for_each(&self, mut f: impl FnMut(&Lease)) {
            for lease in self.map.iter() {
                f(&lease);
            }
        }

        /// Removes every lease; returns how many there were and what they
        /// were charged against the byte budget. Only for a queue being
        /// deleted, when no other operation can reach the table.
        pub(crate) fn clear(&self) -> (usize, u64) {
            let mut count = 0;
            let mut charge = 0;
            for lease in self.map.iter() {
                count += 1;
                charge += lease.message.charge();
            }
            self.map.clear();
            self.map.shrink_to_fit();
            (count, charge)
        }

        pub(crate) fn len(&self) -> usize {
            self.map.len()
        }

        #[cfg(test)]
        pub(crate) fn capacity(&self) -> usize {
            self.map.capacity()
        }

        /// Gives memory back after a burst: hashbrown tables never shrink
        /// on their own, so a table that once held a million leases would
        /// keep their slots forever. Shrinks only when at most a quarter is
        /// used, so the O(capacity) rehash is paid once per burst.
        pub(crate) fn shrink_if_sparse(&self) {
            let capacity = self.map.capacity();
            if capacity > SHRINK_ABOVE && capacity / 4 > self.map.len() {
                self.map.shrink_to_fit();
            }
        }
    }
}

#[cfg(loom)]
mod imp {
    use std::collections::HashMap;

    use super::{BuildIdHasher, Lease};
    use crate::sync::{lock, Mutex};

    pub(crate) struct LeaseTable {
        map: Mutex<HashMap<u64, Lease, BuildIdHasher>>,
    }

    impl LeaseTable {
        pub(crate) fn new() -> Self {
            LeaseTable {
                map: Mutex::new(HashMap::default()),
            }
        }

        pub(crate) fn insert(&self, id: u64, lease: Lease) {
            lock(&self.map).insert(id, lease);
        }

        pub(crate) fn remove_if(
            &self,
            id: u64,
            keep: impl FnOnce(&Lease) -> bool,
        ) -> Option<Lease> {
            let mut map = lock(&self.map);
            match map.get(&id) {
                Some(lease) if keep(lease) => map.remove(&id),
                _ => None,
            }
        }

        pub(crate) fn update_if(&self, id: u64, update: impl FnOnce(&mut Lease) -> bool) -> bool {
            match lock(&self.map).get_mut(&id) {
                Some(lease) => update(lease),
                None => false,
            }
        }

        pub(crate) fn for_each(&self, mut f: impl FnMut(&Lease)) {
            for lease in lock(&self.map).values() {
                f(lease);
            }
        }

        pub(crate) fn clear(&self) -> (usize, u64) {
            let mut map = lock(&self.map);
            let count = map.len();
            let charge = map.values().map(|lease| lease.message.charge()).sum();
            map.clear();
            (count, charge)
        }

        pub(crate) fn len(&self) -> usize {
            lock(&self.map).len()
        }

        pub(crate) fn shrink_if_sparse(&self) {
            // Memory is not what the loom models check.
        }
    }
}

/// The in-flight leases: `insert`, atomic `remove_if`, `len`.
pub(crate) use imp::LeaseTable;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    use bytes::Bytes;

    fn lease(deadline: u64) -> Lease {
        Lease {
            message: Message::new(1, Bytes::from_static(b"m")),
            deadline: Timestamp::from_nanos(deadline),
        }
    }

    #[test]
    fn remove_if_removes_only_when_the_predicate_holds() {
        let table = LeaseTable::new();
        table.insert(7, lease(10));
        assert!(table.remove_if(7, |l| l.deadline.as_nanos() > 10).is_none());
        assert_eq!(table.len(), 1);
        let removed = table.remove_if(7, |l| l.deadline.as_nanos() == 10);
        assert_eq!(
            removed.map(|l| l.message.body),
            Some(Bytes::from_static(b"m"))
        );
        assert_eq!(table.len(), 0);
        assert!(table.remove_if(7, |_| true).is_none());
    }

    #[test]
    fn update_if_changes_only_a_live_lease_and_clear_counts() {
        let table = LeaseTable::new();
        table.insert(1, lease(10));
        table.insert(2, lease(10));
        assert!(table.update_if(1, |l| {
            l.deadline = Timestamp::from_nanos(20);
            true
        }));
        assert!(!table.update_if(1, |_| false));
        assert!(!table.update_if(3, |_| true));
        let moved = table.remove_if(1, |l| l.deadline.as_nanos() == 20);
        assert!(moved.is_some());
        assert_eq!(table.clear(), (1, 1 + crate::message::MESSAGE_OVERHEAD));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_drained_table_gives_its_memory_back() {
        let table = LeaseTable::new();
        for id in 0..100_000 {
            table.insert(id, lease(1));
        }
        let full = table.capacity();
        for id in 0..99_990 {
            table.remove_if(id, |_| true);
        }
        table.shrink_if_sparse();
        assert!(
            table.capacity() < full / 100,
            "{} of {full}",
            table.capacity()
        );
        assert_eq!(table.len(), 10);
    }

    #[test]
    fn sequential_ids_spread_over_many_hash_values() {
        use std::hash::BuildHasher;
        let build = BuildIdHasher::default();
        let top_bits: std::collections::HashSet<u64> =
            (0..64u64).map(|id| build.hash_one(id) >> 58).collect();
        // 64 consecutive ids land in well over half of the 64 top-bit buckets.
        assert!(top_bits.len() > 32, "only {} distinct", top_bits.len());
    }
}
