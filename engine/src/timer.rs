//! [`Timer`]: one queue's timekeeping. Lease deadlines (expiry, moved by
//! touch) and delayed messages (publish or requeue with a delay) come due
//! through this one structure, and the [`Agenda`] hint it keeps up to date
//! tells the broker's single timekeeping task when to look at it.
//!
//! # What it holds
//!
//! Two ordered collections keyed by `(due time, sequence)`: a map of lease
//! deadlines (the sequence is the first lease id of a *run*; the leases
//! themselves stay in the lease table, which decides every settlement), and
//! a map of delayed messages (the timer *owns* a delayed message: that is
//! the one place it is). They are kept apart so that a lease's entry is its
//! 16-byte key and an 8-byte [`Run`] and nothing more; [`Timer::take_due`]
//! merges them in due order.
//!
//! A run is consecutive lease ids that share one deadline: a single fetch
//! schedules a run of one, a batch fetch one run for the whole batch (its
//! ids are one range and its deadline one clock read). The run counts its
//! live leases: a settlement or a touch of one of them counts it down
//! (found with one ordered search, the greatest key at or before
//! `(deadline, id)`), and the run leaves the map when the count reaches
//! zero, so a settled batch leaves nothing behind; a run that comes due
//! expires whichever of its leases are still there with that deadline. Delayed
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
//! Per single lease, one 16-byte key and an 8-byte run in B-tree nodes of
//! up to 11 entries that are at least half full: about 30 to 50 bytes,
//! released when the lease settles. A batch of leases shares one entry.
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

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Weak;

use crate::agenda::Agenda;
use crate::clock::Timestamp;
use crate::message::Message;
use crate::queue::Queue;
use crate::sync::{lock, Mutex};

/// Orders entries: due time first, then the lease id or delay sequence.
pub(crate) type Key = (Timestamp, u64);

const DELAYED: u64 = 1 << 63;

/// Leases `key.1 .. key.1 + len` share the deadline `key.0`; `live` of them
/// are neither settled nor touched since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    len: u32,
    live: u32,
}

#[derive(Debug)]
pub(crate) enum Entry {
    /// A run of `len` leases starting at the key's id, due together.
    Leases(u32),
    Delayed(Message),
}

pub(crate) struct Hint<'a> {
    pub(crate) agenda: &'a Agenda,
    pub(crate) queue_id: u64,
    pub(crate) queue: &'a Weak<Queue>,
}

pub(crate) struct Timer {
    inner: Mutex<Inner>,
}

struct Inner {
    leases: BTreeMap<Key, Run>,
    delayed: BTreeMap<Key, Message>,
    next_delay_seq: u64,
    hinted: Option<Timestamp>,
}

impl Inner {
    fn first(&self) -> Option<Key> {
        match (
            self.leases.first_key_value(),
            self.delayed.first_key_value(),
        ) {
            (Some((&lease, _)), Some((&delayed, _))) => Some(lease.min(delayed)),
            (Some((&lease, _)), None) => Some(lease),
            (None, Some((&delayed, _))) => Some(delayed),
            (None, None) => None,
        }
    }

    /// Keeps the agenda hinted at or before `due`, now that an entry due
    /// then was added.
    fn hint_for(&mut self, due: Timestamp, hint: &Hint<'_>) {
        if self.hinted.map_or(true, |hinted| hinted > due) {
            if let Some(old) = self.hinted {
                hint.agenda.unhint(old, hint.queue_id);
            }
            hint.agenda.hint(due, hint.queue_id, hint.queue);
            self.hinted = Some(due);
        }
    }

    fn insert_run(&mut self, deadline: Timestamp, first: u64, len: u32, hint: &Hint<'_>) {
        self.leases
            .insert((deadline, first), Run { len, live: len });
        self.hint_for(deadline, hint);
    }

    fn insert_delayed(&mut self, due: Timestamp, message: Message, hint: &Hint<'_>) {
        let seq = DELAYED | self.next_delay_seq;
        self.next_delay_seq += 1;
        self.delayed.insert((due, seq), message);
        self.hint_for(due, hint);
    }

    /// Counts lease `id` (deadline `deadline`) out of its run, and drops the
    /// run once none of its leases is live. Nothing if the run is gone (a
    /// sweep took it first).
    fn cancel(&mut self, deadline: Timestamp, id: u64) {
        let Some((&key, run)) = self.leases.range_mut(..=(deadline, id)).next_back() else {
            return;
        };
        if key.0 != deadline || id - key.1 >= u64::from(run.len) {
            return;
        }
        run.live -= 1;
        if run.live == 0 {
            self.leases.remove(&key);
        }
    }
}

impl Timer {
    pub(crate) fn new() -> Self {
        Timer {
            inner: Mutex::new(Inner {
                leases: BTreeMap::new(),
                delayed: BTreeMap::new(),
                next_delay_seq: 0,
                hinted: None,
            }),
        }
    }

    /// Schedules lease `id`'s deadline (a run of one).
    pub(crate) fn schedule_lease(&self, deadline: Timestamp, id: u64, hint: &Hint<'_>) {
        lock(&self.inner).insert_run(deadline, id, 1, hint);
    }

    /// Schedules the deadline shared by a batch's leases, `ids` one range:
    /// one entry, one lock, the agenda hinted at most once.
    pub(crate) fn schedule_leases(&self, deadline: Timestamp, ids: Range<u64>, hint: &Hint<'_>) {
        let len = u32::try_from(ids.end.saturating_sub(ids.start)).expect("a batch fits a u32");
        if len > 0 {
            lock(&self.inner).insert_run(deadline, ids.start, len, hint);
        }
    }

    /// Moves lease `id` from `old` to `new` (a touch).
    pub(crate) fn reschedule_lease(
        &self,
        old: Timestamp,
        new: Timestamp,
        id: u64,
        hint: &Hint<'_>,
    ) {
        if old == new {
            // Nothing moves; and a run of one keyed `(new, id)` inserted
            // here could replace the run that `id` starts.
            return;
        }
        let mut inner = lock(&self.inner);
        inner.cancel(old, id);
        inner.insert_run(new, id, 1, hint);
    }

    /// Cancels a settled lease's deadline.
    pub(crate) fn cancel_lease(&self, deadline: Timestamp, id: u64) {
        lock(&self.inner).cancel(deadline, id);
    }

    /// Cancels the deadlines of settled leases, under one lock.
    pub(crate) fn cancel_leases(&self, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        let mut inner = lock(&self.inner);
        for &(deadline, id) in keys {
            inner.cancel(deadline, id);
        }
    }

    pub(crate) fn schedule_delayed(&self, due: Timestamp, message: Message, hint: &Hint<'_>) {
        lock(&self.inner).insert_delayed(due, message, hint);
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
            inner.insert_delayed(due, message, hint);
        }
    }

    /// Removes and returns every entry due at `now`, in due order, and
    /// re-hints the agenda at the first entry left.
    pub(crate) fn take_due(&self, now: Timestamp, hint: &Hint<'_>) -> Vec<(Key, Entry)> {
        let mut inner = lock(&self.inner);
        inner.hinted = None;
        let mut due = Vec::new();
        loop {
            let lease = inner.leases.first_key_value().map(|(&key, _)| key);
            let delayed = inner.delayed.first_key_value().map(|(&key, _)| key);
            // Pop the earlier of the two firsts: one descent each, no
            // second search for the key just found.
            let take_lease = match (lease, delayed) {
                (Some(l), Some(d)) => l < d,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_lease {
                if lease.is_some_and(|key| key.0 > now) {
                    break;
                }
                let (key, run) = inner.leases.pop_first().expect("seen above");
                due.push((key, Entry::Leases(run.len)));
            } else {
                if delayed.is_some_and(|key| key.0 > now) {
                    break;
                }
                let (key, message) = inner.delayed.pop_first().expect("seen above");
                due.push((key, Entry::Delayed(message)));
            }
        }
        if let Some(next) = inner.first() {
            hint.agenda.hint(next.0, hint.queue_id, hint.queue);
            inner.hinted = Some(next.0);
        }
        due
    }

    pub(crate) fn clear(&self, hint: &Hint<'_>) -> Vec<Message> {
        let mut inner = lock(&self.inner);
        if let Some(old) = inner.hinted.take() {
            hint.agenda.unhint(old, hint.queue_id);
        }
        inner.leases = BTreeMap::new();
        std::mem::take(&mut inner.delayed).into_values().collect()
    }

    pub(crate) fn delayed(&self) -> usize {
        lock(&self.inner).delayed.len()
    }

    /// Entries held: runs of live leases plus delayed messages.
    pub(crate) fn len(&self) -> usize {
        let inner = lock(&self.inner);
        inner.leases.len() + inner.delayed.len()
    }
}

/// The ids of the leases of a due run: `key.1 .. key.1 + len`.
pub(crate) fn lease_ids(key: &Key, len: u32) -> Range<u64> {
    key.1..key.1 + u64::from(len)
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
                Entry::Leases(len) => format!("leases {:?}", lease_ids(key, *len)),
                Entry::Delayed(m) => format!("delayed {}", m.id),
            })
            .collect();
        assert_eq!(order, ["leases 2..3", "delayed 10", "delayed 11"]);
        assert_eq!(timer.delayed(), 0);
        // Re-hinted at the first entry left.
        assert_eq!(agenda.next_due(), Some(t(30)));
    }

    #[test]
    fn a_lease_entry_is_its_key_and_a_run_and_no_more() {
        assert_eq!(std::mem::size_of::<Key>(), 16);
        assert_eq!(std::mem::size_of::<Run>(), 8);
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
    fn a_batch_is_one_entry_that_leaves_when_its_last_lease_settles() {
        let agenda = Agenda::new();
        let weak = Weak::new();
        let h = hint(&agenda, &weak);
        let timer = Timer::new();
        // Two batches with the same deadline and a single lease between.
        timer.schedule_leases(t(50), 10..14, &h);
        timer.schedule_lease(t(50), 14, &h);
        timer.schedule_leases(t(50), 15..17, &h);
        assert_eq!(timer.len(), 3);
        // Settling each lease of the first run counts it down; an id outside
        // every run (or a second cancel after the run is gone) is nothing.
        for id in [13, 11, 10] {
            timer.cancel_lease(t(50), id);
        }
        timer.cancel_lease(t(49), 12);
        timer.cancel_lease(t(50), 99);
        assert_eq!(timer.len(), 3, "one lease of the first run is live");
        timer.cancel_lease(t(50), 12);
        assert_eq!(timer.len(), 2);
        // A touch moves one lease out of its run into a run of one; a touch
        // to the same deadline changes nothing (and must not replace the
        // run its id starts).
        timer.reschedule_lease(t(50), t(50), 15, &h);
        timer.reschedule_lease(t(50), t(80), 16, &h);
        assert_eq!(timer.len(), 3);
        timer.cancel_leases(&[(t(50), 14)]);
        // As the sweep does: the agenda hands out the hint first.
        assert_eq!(agenda.take_due(t(60)).len(), 1);
        let due = timer.take_due(t(60), &h);
        let runs: Vec<_> = due
            .iter()
            .map(|(key, entry)| match entry {
                Entry::Leases(len) => lease_ids(key, *len),
                Entry::Delayed(_) => unreachable!("no delayed messages"),
            })
            .collect();
        // The run 15..17 comes due whole: the sweep skips 16, whose lease
        // now has a later deadline in the lease table.
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0], 15..17);
        assert_eq!(timer.len(), 1);
        assert_eq!(agenda.next_due(), Some(t(80)));
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
