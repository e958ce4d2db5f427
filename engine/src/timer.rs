//! [`Timer`]: one queue's timekeeping. Lease deadlines (expiry, moved by
//! touch) and delayed messages (publish or requeue with a delay) come due
//! through this one structure, and the [`Agenda`] hint it keeps up to date
//! tells the broker's single timekeeping task when to look at it.
//!
//! # What it holds
//!
//! Two ordered collections keyed by `(due time, sequence)`: a set of lease
//! deadlines (the sequence is the lease id; the lease itself stays in the
//! lease table, which decides every settlement), and a map of delayed
//! messages (the timer *owns* a delayed message: that is the one place it
//! is). They are kept apart so that a lease's entry is its 16-byte key and
//! nothing more; [`Timer::take_due`] merges them in due order. Delayed
//! entries take their sequence from a per-queue counter with bit 63 set, so
//! they never collide with a lease id (ids stay below 2^53) and ties come
//! due in the order they were delayed, as the contract asks.
//!
//! # Why an ordered map, and not a timing wheel or the old FIFO
//!
//! The engine used to keep a FIFO of `(deadline, id)`: pushing was
//! lock-free, but an acknowledged lease's entry stayed until its deadline,
//! so memory followed fetches-per-TTL (48.5 MiB after 500k messages at a
//! 20 s TTL), and with per-queue TTLs, touch and delays, deadlines no
//! longer arrive in order at all. Three replacements were weighed:
//!
//! * A hierarchical timing wheel (tokio's timer, Kafka's purgatory): O(1)
//!   insert and cancel, but cancel needs an intrusive list or slab handles,
//!   entries are ordered only to the slot's resolution (delayed messages
//!   must come due in exact order), and finding the next deadline scans
//!   slots. Much more code for a constant-factor gain at our sizes.
//! * Slab-indexed entries with a generation (sharded-slab): O(1) cancel by
//!   handle, but still needs an ordering structure on top.
//! * Compacting the FIFO: keeps the lock-free push, but compaction is an
//!   O(n) pause and cannot order arbitrary deadlines.
//!
//! A `BTreeMap` per queue gives exact order, O(log n) insert and cancel by
//! key (the lease knows its key: its deadline and id), and the next due time
//! as its first key. Each queue has its own map behind its own mutex, held
//! only for the map operation, so queues never contend with each other.
//! The price against the FIFO is a mutex and an O(log n) insert per fetch
//! and a remove per settlement; BENCHMARKS.md measures it over HTTP.
//!
//! # What it costs
//!
//! Per lease, one 16-byte key in B-tree nodes of up to 11 keys that are at
//! least half full: about 20 to 40 bytes, released when the lease settles.
//! Per delayed message, its key and the 56-byte message itself in the
//! delayed map's nodes: about 70 to 130 bytes. BENCHMARKS.md has the
//! measured figures (`ubroker-mem`).
//!
//! # Agenda hints
//!
//! Invariant: whenever this timer holds an entry, the agenda holds a hint
//! for this queue at or before its first due time (or the timekeeper is in
//! the middle of sweeping this queue, and re-hints when done). `hinted`
//! remembers the hint this timer last placed, so that an earlier entry
//! replaces it instead of piling up hints. Removals never touch the agenda:
//! a hint left earlier than the queue's first entry only costs one sweep
//! that finds nothing due and re-hints at the new first entry.
//!
//! # What it must never do
//!
//! Decide a settlement, or take a lease-table lock while holding its own
//! (lock order: lease-table shard, then timer, then agenda).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Weak;

use crate::agenda::Agenda;
use crate::clock::Timestamp;
use crate::message::Message;
use crate::queue::Queue;
use crate::sync::{lock, Mutex};

/// Orders entries: due time first, then the lease id or delay sequence.
pub(crate) type Key = (Timestamp, u64);

/// Bit 63 marks a delayed entry's sequence.
const DELAYED: u64 = 1 << 63;

#[derive(Debug)]
pub(crate) enum Entry {
    /// The lease whose id is the key's sequence runs out.
    Lease,
    /// A delayed message comes due and joins its queue's tail.
    Delayed(Message),
}

/// Where this timer's queue places its agenda hints.
pub(crate) struct Hint<'a> {
    pub(crate) agenda: &'a Agenda,
    pub(crate) queue_id: u64,
    pub(crate) queue: &'a Weak<Queue>,
}

pub(crate) struct Timer {
    inner: Mutex<Inner>,
}

struct Inner {
    leases: BTreeSet<Key>,
    delayed: BTreeMap<Key, Message>,
    next_delay_seq: u64,
    /// The due time of the hint this timer last placed in the agenda.
    hinted: Option<Timestamp>,
}

impl Inner {
    /// The first key of either collection.
    fn first(&self) -> Option<Key> {
        match (self.leases.first(), self.delayed.first_key_value()) {
            (Some(&lease), Some((&delayed, _))) => Some(lease.min(delayed)),
            (Some(&lease), None) => Some(lease),
            (None, Some((&delayed, _))) => Some(delayed),
            (None, None) => None,
        }
    }

    fn insert(&mut self, key: Key, entry: Entry, hint: &Hint<'_>) {
        match entry {
            Entry::Lease => {
                self.leases.insert(key);
            }
            Entry::Delayed(message) => {
                self.delayed.insert(key, message);
            }
        }
        let due = key.0;
        if self.hinted.map_or(true, |hinted| hinted > due) {
            if let Some(old) = self.hinted {
                hint.agenda.unhint(old, hint.queue_id);
            }
            hint.agenda.hint(due, hint.queue_id, hint.queue);
            self.hinted = Some(due);
        }
    }
}

impl Timer {
    pub(crate) fn new() -> Self {
        Timer {
            inner: Mutex::new(Inner {
                leases: BTreeSet::new(),
                delayed: BTreeMap::new(),
                next_delay_seq: 0,
                hinted: None,
            }),
        }
    }

    /// Lease `id` runs out at `deadline`. Call after inserting the lease, so
    /// that a sweep that sees the entry also finds the lease.
    pub(crate) fn schedule_lease(&self, deadline: Timestamp, id: u64, hint: &Hint<'_>) {
        lock(&self.inner).insert((deadline, id), Entry::Lease, hint);
    }

    /// A touch moved lease `id` from `old` to `new`. Called with the lease's
    /// table entry locked, so no settlement of it runs meanwhile.
    pub(crate) fn reschedule_lease(
        &self,
        old: Timestamp,
        new: Timestamp,
        id: u64,
        hint: &Hint<'_>,
    ) {
        let mut inner = lock(&self.inner);
        inner.leases.remove(&(old, id));
        inner.insert((new, id), Entry::Lease, hint);
    }

    /// Lease `id`, due at `deadline`, was settled: forget its entry.
    pub(crate) fn cancel_lease(&self, deadline: Timestamp, id: u64) {
        lock(&self.inner).leases.remove(&(deadline, id));
    }

    /// Holds `message` until `due`.
    pub(crate) fn schedule_delayed(&self, due: Timestamp, message: Message, hint: &Hint<'_>) {
        let mut inner = lock(&self.inner);
        let seq = DELAYED | inner.next_delay_seq;
        inner.next_delay_seq += 1;
        inner.insert((due, seq), Entry::Delayed(message), hint);
    }

    /// Removes and returns every entry due at or before `now`, in order, and
    /// re-hints the agenda at the first entry left. Called by the sweep
    /// after the agenda handed it this queue's hint.
    /// Schedules the deadlines of a batch of leases that share one
    /// `deadline`: one lock, and the agenda hinted at most once.
    pub(crate) fn schedule_leases(
        &self,
        deadline: Timestamp,
        ids: impl IntoIterator<Item = u64>,
        hint: &Hint<'_>,
    ) {
        let mut inner = lock(&self.inner);
        let mut ids = ids.into_iter();
        let Some(first) = ids.next() else { return };
        // The first insert hints the agenda if needed; the rest share its
        // deadline, so they cannot move the hint.
        inner.insert((deadline, first), Entry::Lease, hint);
        inner.leases.extend(ids.map(|id| (deadline, id)));
    }

    /// Cancels the deadlines of settled leases, under one lock.
    pub(crate) fn cancel_leases(&self, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        let mut inner = lock(&self.inner);
        for key in keys {
            inner.leases.remove(key);
        }
    }

    /// Holds delayed messages, each until its own due time, under one lock;
    /// ties keep the order given.
    pub(crate) fn schedule_delayed_all(
        &self,
        messages: impl IntoIterator<Item = (Timestamp, Message)>,
        hint: &Hint<'_>,
    ) {
        let mut inner = lock(&self.inner);
        for (due, message) in messages {
            let seq = DELAYED | inner.next_delay_seq;
            inner.next_delay_seq += 1;
            inner.insert((due, seq), Entry::Delayed(message), hint);
        }
    }

    pub(crate) fn take_due(&self, now: Timestamp, hint: &Hint<'_>) -> Vec<(Key, Entry)> {
        let mut inner = lock(&self.inner);
        // The hint that brought the sweep here is gone from the agenda.
        inner.hinted = None;
        let mut due = Vec::new();
        while let Some(key) = inner.first() {
            if key.0 > now {
                break;
            }
            // Keys are unique across both collections (bit 63), so the
            // first key is in exactly one of them.
            if inner.leases.remove(&key) {
                due.push((key, Entry::Lease));
            } else if let Some(message) = inner.delayed.remove(&key) {
                due.push((key, Entry::Delayed(message)));
            }
        }
        if let Some((next, _)) = inner.first() {
            hint.agenda.hint(next, hint.queue_id, hint.queue);
            inner.hinted = Some(next);
        }
        due
    }

    /// Empties the timer (the queue is being deleted): returns the delayed
    /// messages and takes this queue's hint out of the agenda.
    pub(crate) fn clear(&self, hint: &Hint<'_>) -> Vec<Message> {
        let mut inner = lock(&self.inner);
        if let Some(old) = inner.hinted.take() {
            hint.agenda.unhint(old, hint.queue_id);
        }
        inner.leases = BTreeSet::new();
        std::mem::take(&mut inner.delayed).into_values().collect()
    }

    /// Delayed messages held.
    pub(crate) fn delayed(&self) -> usize {
        lock(&self.inner).delayed.len()
    }

    /// Entries held: live leases plus delayed messages (for tests and the
    /// memory accounting).
    pub(crate) fn len(&self) -> usize {
        let inner = lock(&self.inner);
        inner.leases.len() + inner.delayed.len()
    }
}

/// The sequence half of a lease entry's key is its id.
pub(crate) fn lease_id(key: &Key) -> u64 {
    key.1
}

#[cfg(all(test, not(loom)))]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn t(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    fn hint<'a>(agenda: &'a Agenda, queue: &'a Weak<Queue>) -> Hint<'a> {
        Hint {
            agenda,
            queue_id: 7,
            queue,
        }
    }

    #[test]
    fn entries_come_due_in_order_with_delay_ties_in_insertion_order() {
        let agenda = Agenda::new();
        let weak = Weak::new();
        let h = hint(&agenda, &weak);
        let timer = Timer::new();
        timer.schedule_lease(t(30), 1, &h);
        timer.schedule_delayed(t(20), Message::new(10, Bytes::from_static(b"a")), &h);
        timer.schedule_delayed(t(20), Message::new(11, Bytes::from_static(b"b")), &h);
        timer.schedule_lease(t(10), 2, &h);
        assert_eq!(agenda.next_due(), Some(t(10)));
        assert_eq!(timer.delayed(), 2);

        // As the sweep does: the agenda hands out the hint, then the timer
        // gives up what is due.
        assert_eq!(agenda.take_due(t(25)).len(), 1);
        let due = timer.take_due(t(25), &h);
        let order: Vec<_> = due
            .iter()
            .map(|(key, entry)| match entry {
                Entry::Lease => format!("lease {}", lease_id(key)),
                Entry::Delayed(m) => format!("delayed {}", m.id),
            })
            .collect();
        assert_eq!(order, ["lease 2", "delayed 10", "delayed 11"]);
        assert_eq!(timer.delayed(), 0);
        // Re-hinted at the first entry left.
        assert_eq!(agenda.next_due(), Some(t(30)));
    }

    #[test]
    fn a_lease_entry_is_its_key_and_no_more() {
        assert_eq!(std::mem::size_of::<Key>(), 16);
        assert_eq!(std::mem::size_of::<Message>(), 56);
    }

    #[test]
    fn settled_and_touched_leases_leave_nothing_behind() {
        let agenda = Agenda::new();
        let weak = Weak::new();
        let h = hint(&agenda, &weak);
        let timer = Timer::new();
        for id in 0..1000 {
            timer.schedule_lease(t(100 + id), id, &h);
        }
        for id in 0..1000 {
            if id % 2 == 0 {
                timer.cancel_lease(t(100 + id), id);
            } else {
                timer.reschedule_lease(t(100 + id), t(5000 + id), id, &h);
            }
        }
        assert_eq!(timer.len(), 500);
        assert!(timer.take_due(t(4999), &h).is_empty());
        assert_eq!(timer.take_due(t(10_000), &h).len(), 500);
        assert_eq!(timer.len(), 0);
    }

    #[test]
    fn an_earlier_entry_replaces_the_hint_and_clear_removes_it() {
        let agenda = Agenda::new();
        let weak = Weak::new();
        let h = hint(&agenda, &weak);
        let timer = Timer::new();
        timer.schedule_lease(t(50), 1, &h);
        timer.schedule_lease(t(60), 2, &h);
        assert_eq!(agenda.len(), 1);
        timer.schedule_lease(t(40), 3, &h);
        assert_eq!((agenda.len(), agenda.next_due()), (1, Some(t(40))));
        timer.schedule_delayed(t(45), Message::new(1, Bytes::new()), &h);
        let dropped = timer.clear(&h);
        assert_eq!(dropped.len(), 1);
        assert_eq!((agenda.len(), timer.len()), (0, 0));
    }
}
