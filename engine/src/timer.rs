//! [`Timer`]: one queue's timekeeping. Lease deadlines (expiry, moved by
//! touch) and delayed messages (publish or requeue with a delay) come due
//! through this one structure, and the [`Agenda`] hint it keeps up to date
//! tells the broker's single timekeeping task when to look at it.
//!
//! # What it holds
//!
//! [`SHARDS`] shards, each behind its own mutex: lease `id` lives in shard
//! `id % SHARDS`, a delayed message in the shard of its delay sequence, so
//! concurrent fetches and settlements of one queue rarely meet. Each shard
//! holds two ordered collections keyed by `(due time, sequence)`: a map of lease
//! deadlines (the sequence is the first lease id of a *run*; the leases
//! themselves stay in the lease table, which decides every settlement), and
//! a map of delayed messages (the timer *owns* a delayed message: that is
//! the one place it is). They are kept apart so that a lease's entry is its
//! 16-byte key and an 8-byte [`Run`] and nothing more; [`Timer::take_due`]
//! merges them in due order.
//!
//! A run is lease ids `SHARDS` apart (so all in one shard) that share one
//! deadline: a single fetch schedules a run of one, a batch fetch one run
//! per shard its id range reaches (its deadline is one clock read). The run
//! counts its live leases: a settlement or a touch of one of them counts it
//! down (found by its exact key, or by a short walk back from
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
//! as its first key. Each shard's maps sit behind the shard's own mutex,
//! held only for the map operation, so queues never contend with each other
//! and operations on one queue rarely do. The price against the FIFO is a
//! shard lock and an O(log n) insert per fetch and a remove per settlement;
//! a sweep locks each shard the agenda hinted and merges their due entries.
//!
//! # What it costs
//!
//! Per single lease, one 16-byte key and an 8-byte run in B-tree nodes of
//! up to 11 entries that are at least half full: about 30 to 50 bytes,
//! released when the lease settles. A batch of leases shares one entry per
//! shard it reaches.
//! Per delayed message, its key and the 56-byte message itself in the
//! delayed map's nodes: about 70 to 130 bytes. BENCHMARKS.md has the
//! measured figures (`ubroker-mem`).
//!
//! # Agenda hints
//!
//! Invariant: whenever a shard holds an entry, the agenda holds a hint for
//! this queue and shard at or before the shard's first due time (or the
//! timekeeper is in the middle of sweeping it, and re-hints when done).
//! `hinted` remembers the hint the shard last placed, so that an earlier entry
//! replaces it instead of piling up hints. Removals never touch the agenda:
//! a hint left earlier than the queue's first entry only costs one sweep
//! that finds nothing due and re-hints at the new first entry.
//!
//! # What it must never do
//!
//! Decide a settlement, or take a lease-table lock while holding its own
//! (lock order: lease-table shard, then timer, then agenda).

use std::collections::{btree_map, BTreeMap};
use std::ops::Range;
use std::sync::Weak;

use crossbeam_utils::CachePadded;

use crate::agenda::Agenda;
use crate::clock::Timestamp;
use crate::message::Message;
use crate::queue::Queue;
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// Orders entries: due time first, then the lease id or delay sequence.
pub(crate) type Key = (Timestamp, u64);

const DELAYED: u64 = 1 << 63;

/// Shards per timer: a power of two. Lease `id` lives in shard
/// `id % SHARDS`, so the consecutive ids that concurrent fetches take land
/// in different shards. Eight covers the threads a 2- to 8-core server
/// runs with few collisions, at about 1 KiB per queue (each shard on its
/// own cache line). Loom runs the same code with two, so that a model's
/// few leases still share and split shards.
#[cfg(not(loom))]
pub(crate) const SHARDS: usize = 8;
#[cfg(loom)]
pub(crate) const SHARDS: usize = 2;

/// The shard lease `id` (or delayed sequence `seq`) lives in.
fn shard_of(id: u64) -> usize {
    (id % SHARDS as u64) as usize
}

/// Leases `key.1, key.1 + SHARDS, ...` (`len` of them) share the deadline
/// `key.0`; `live` of them are neither settled nor touched since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    len: u32,
    live: u32,
}

impl Run {
    /// Whether lease `id` (of this run's shard) is one of the run starting
    /// at `first`.
    fn holds(&self, first: u64, id: u64) -> bool {
        id >= first && (id - first) / SHARDS as u64 <= u64::from(self.len - 1)
    }
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

/// One queue's timekeeping, in [`SHARDS`] independently locked shards.
pub(crate) struct Timer {
    shards: Box<[CachePadded<Mutex<Inner>>]>,
    /// Orders delayed messages of equal due time across shards.
    next_delay_seq: AtomicU64,
}

struct Inner {
    /// This shard's index, which its agenda hints carry.
    index: u32,
    leases: BTreeMap<Key, Run>,
    delayed: BTreeMap<Key, Message>,
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
                hint.agenda.unhint(old, hint.queue_id, self.index);
            }
            hint.agenda.hint(due, hint.queue_id, self.index, hint.queue);
            self.hinted = Some(due);
        }
    }

    fn insert_run(&mut self, deadline: Timestamp, first: u64, len: u32, hint: &Hint<'_>) {
        self.leases
            .insert((deadline, first), Run { len, live: len });
        self.hint_for(deadline, hint);
    }

    fn insert_delayed(&mut self, key: Key, message: Message, hint: &Hint<'_>) {
        self.delayed.insert(key, message);
        self.hint_for(key.0, hint);
    }

    /// Counts lease `keys[0]` out of its run, with every following key in
    /// the same run (a batch settled together), and drops the run once
    /// none of its leases is live. Returns how many keys it consumed.
    /// Nothing changes for a run already gone (a sweep took it first).
    ///
    /// A single lease, or the first of a batch's run, is found by its exact
    /// key. Any other lease of a run is in the run with the greatest key at
    /// or before its own that holds it: the search walks back over runs of
    /// one that a touch back to the same deadline may have put in between.
    fn cancel_run(&mut self, keys: &[Key]) -> usize {
        let (deadline, id) = keys[0];
        if let btree_map::Entry::Occupied(mut exact) = self.leases.entry((deadline, id)) {
            // The common case: a single lease, or the first of a run. One
            // search, and the removal reuses its handle.
            let run = exact.get_mut();
            let n = keys
                .iter()
                .take_while(|&&(d, i)| d == deadline && run.holds(id, i))
                .count();
            run.live = run.live.saturating_sub(n as u32);
            if run.live == 0 {
                exact.remove();
            }
            return n;
        }
        let mut found = None;
        // At most a few steps: runs of one in between are rare, and a
        // lease not found is one whose run a sweep already took (or, past
        // the steps, one that its run's sweep will count out).
        for (&key, run) in self
            .leases
            .range((deadline, 0)..=(deadline, id))
            .rev()
            .take(4)
        {
            if run.holds(key.1, id) {
                found = Some((key, *run));
                break;
            }
        }
        let Some((key, run)) = found else {
            return 1;
        };
        let n = keys
            .iter()
            .take_while(|&&(d, i)| d == deadline && run.holds(key.1, i))
            .count();
        let live = run.live.saturating_sub(n as u32);
        if live == 0 {
            self.leases.remove(&key);
        } else if let Some(run) = self.leases.get_mut(&key) {
            run.live = live;
        }
        n
    }

    /// Removes and returns every entry due at `now`, in due order, onto
    /// `due`; re-hints the agenda at the first entry left.
    fn take_due(&mut self, now: Timestamp, hint: &Hint<'_>, due: &mut Vec<(Key, Entry)>) {
        self.hinted = None;
        loop {
            let lease = self.leases.first_key_value().map(|(&key, _)| key);
            let delayed = self.delayed.first_key_value().map(|(&key, _)| key);
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
                let (key, run) = self.leases.pop_first().expect("seen above");
                due.push((key, Entry::Leases(run.len)));
            } else {
                if delayed.is_some_and(|key| key.0 > now) {
                    break;
                }
                let (key, message) = self.delayed.pop_first().expect("seen above");
                due.push((key, Entry::Delayed(message)));
            }
        }
        if let Some(next) = self.first() {
            hint.agenda
                .hint(next.0, hint.queue_id, self.index, hint.queue);
            self.hinted = Some(next.0);
        }
    }
}

impl Timer {
    pub(crate) fn new() -> Self {
        Timer {
            shards: (0..SHARDS as u32)
                .map(|index| {
                    CachePadded::new(Mutex::new(Inner {
                        index,
                        leases: BTreeMap::new(),
                        delayed: BTreeMap::new(),
                        hinted: None,
                    }))
                })
                .collect(),
            next_delay_seq: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: u64) -> &Mutex<Inner> {
        &self.shards[shard_of(id)]
    }

    /// Schedules lease `id`'s deadline (a run of one).
    pub(crate) fn schedule_lease(&self, deadline: Timestamp, id: u64, hint: &Hint<'_>) {
        lock(self.shard(id)).insert_run(deadline, id, 1, hint);
    }

    /// Schedules the deadline shared by a batch's leases, `ids` one range:
    /// one run per shard it reaches (its ids `SHARDS` apart), each under one
    /// lock of its shard.
    pub(crate) fn schedule_leases(&self, deadline: Timestamp, ids: Range<u64>, hint: &Hint<'_>) {
        let len = ids.end.saturating_sub(ids.start);
        for first in ids.start..ids.start + len.min(SHARDS as u64) {
            let in_shard = (ids.end - first).div_ceil(SHARDS as u64);
            let in_shard = u32::try_from(in_shard).expect("a batch fits a u32");
            lock(self.shard(first)).insert_run(deadline, first, in_shard, hint);
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
        let mut inner = lock(self.shard(id));
        inner.cancel_run(&[(old, id)]);
        inner.insert_run(new, id, 1, hint);
    }

    /// Cancels a settled lease's deadline.
    pub(crate) fn cancel_lease(&self, deadline: Timestamp, id: u64) {
        lock(self.shard(id)).cancel_run(&[(deadline, id)]);
    }

    /// Cancels the deadlines of settled leases, under one lock per shard
    /// they reach. Keys of one shard that follow each other in `keys` are
    /// counted out of their run together.
    pub(crate) fn cancel_leases(&self, keys: &[Key]) {
        match keys {
            [] => {}
            [(deadline, id)] => self.cancel_lease(*deadline, *id),
            _ => {
                // A counting sort by shard (stable, so each shard's keys keep
                // their order and a run's leases stay together): two passes
                // and one allocation, then one lock per shard reached.
                let mut starts = [0usize; SHARDS + 1];
                for key in keys {
                    starts[shard_of(key.1) + 1] += 1;
                }
                for i in 1..=SHARDS {
                    starts[i] += starts[i - 1];
                }
                let mut next = starts;
                let mut sorted = vec![(Timestamp::ZERO, 0u64); keys.len()];
                for &key in keys {
                    let shard = shard_of(key.1);
                    sorted[next[shard]] = key;
                    next[shard] += 1;
                }
                for (index, shard) in self.shards.iter().enumerate() {
                    let mut rest = &sorted[starts[index]..starts[index + 1]];
                    if rest.is_empty() {
                        continue;
                    }
                    let mut inner = lock(shard);
                    while !rest.is_empty() {
                        let n = inner.cancel_run(rest);
                        rest = &rest[n.max(1)..];
                    }
                }
            }
        }
    }

    fn delay_key(&self, due: Timestamp) -> Key {
        let seq = self.next_delay_seq.fetch_add(1, Ordering::Relaxed);
        (due, DELAYED | seq)
    }

    pub(crate) fn schedule_delayed(&self, due: Timestamp, message: Message, hint: &Hint<'_>) {
        let key = self.delay_key(due);
        lock(self.shard(key.1)).insert_delayed(key, message, hint);
    }

    /// Holds delayed messages, each until its own due time; ties keep the
    /// order given.
    pub(crate) fn schedule_delayed_all(
        &self,
        messages: impl IntoIterator<Item = (Timestamp, Message)>,
        hint: &Hint<'_>,
    ) {
        for (due, message) in messages {
            self.schedule_delayed(due, message, hint);
        }
    }

    /// Removes and returns every entry due at `now` in the shards of
    /// `shards` (a bit mask: the shards the agenda handed out), merged in
    /// due order, and re-hints the agenda at each shard's first entry left.
    ///
    /// A shard not in the mask has nothing due: its hint, at or before its
    /// first entry, would have come out of the agenda with the others.
    pub(crate) fn take_due(
        &self,
        now: Timestamp,
        shards: u64,
        hint: &Hint<'_>,
    ) -> Vec<(Key, Entry)> {
        let mut due = Vec::new();
        let mut from = 0;
        for (index, shard) in self.shards.iter().enumerate() {
            if shards & (1 << index) != 0 {
                lock(shard).take_due(now, hint, &mut due);
                from += 1;
            }
        }
        if from > 1 {
            // Keys are unique (lease ids and delay sequences are), so the
            // order is total; each shard's part is sorted already.
            due.sort_unstable_by_key(|(key, _)| *key);
        }
        due
    }

    pub(crate) fn clear(&self, hint: &Hint<'_>) -> Vec<Message> {
        let mut dropped = Vec::new();
        for shard in self.shards.iter() {
            let mut inner = lock(shard);
            if let Some(old) = inner.hinted.take() {
                hint.agenda.unhint(old, hint.queue_id, inner.index);
            }
            inner.leases = BTreeMap::new();
            dropped.extend(std::mem::take(&mut inner.delayed).into_values());
        }
        dropped
    }

    pub(crate) fn delayed(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).delayed.len())
            .sum()
    }

    /// Entries held: runs of live leases plus delayed messages.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let inner = lock(shard);
                inner.leases.len() + inner.delayed.len()
            })
            .sum()
    }

    /// Leases the runs count as live: equal to the lease table's size
    /// whenever no operation is under way, if every settlement counted its
    /// lease out.
    pub(crate) fn live_leases(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .leases
                    .values()
                    .map(|run| run.live as usize)
                    .sum::<usize>()
            })
            .sum()
    }
}

/// The ids of the leases of a due run: `key.1`, `key.1 + SHARDS`, ...
pub(crate) fn lease_ids(key: &Key, len: u32) -> impl Iterator<Item = u64> {
    let first = key.1;
    (0..u64::from(len)).map(move |k| first + k * SHARDS as u64)
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

    /// As the sweep does: the agenda hands out the due shards, then the
    /// timer gives up what is due in them.
    fn sweep(agenda: &Agenda, timer: &Timer, now: Timestamp, h: &Hint<'_>) -> Vec<(Key, Entry)> {
        let shards = agenda
            .take_due(now)
            .iter()
            .fold(0, |mask, due| mask | due.shards);
        timer.take_due(now, shards, h)
    }

    fn ids(key: &Key, len: u32) -> Vec<u64> {
        lease_ids(key, len).collect()
    }

    #[test]
    fn entries_come_due_in_order_across_shards_with_delay_ties_in_insertion_order() {
        let agenda = Agenda::new();
        let weak = Weak::new();
        let h = hint(&agenda, &weak);
        let timer = Timer::new();
        timer.schedule_lease(t(30), 1, &h);
        // Ten delayed messages due together land in different shards.
        for id in 10..20 {
            timer.schedule_delayed(t(20), Message::new(id, Bytes::from_static(b"a")), &h);
        }
        timer.schedule_lease(t(10), 2, &h);
        timer.schedule_lease(t(20), 3, &h);
        assert_eq!(agenda.next_due(), Some(t(10)));
        assert_eq!(timer.delayed(), 10);

        let order: Vec<_> = sweep(&agenda, &timer, t(25), &h)
            .iter()
            .map(|(key, entry)| match entry {
                Entry::Leases(len) => format!("leases {:?}", ids(key, *len)),
                Entry::Delayed(m) => format!("delayed {}", m.id),
            })
            .collect();
        let mut expected = vec!["leases [2]".to_string(), "leases [3]".to_string()];
        expected.extend((10..20).map(|id| format!("delayed {id}")));
        assert_eq!(order, expected);
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
        assert_eq!((timer.len(), timer.live_leases()), (500, 500));
        assert!(sweep(&agenda, &timer, t(4999), &h).is_empty());
        assert_eq!(sweep(&agenda, &timer, t(10_000), &h).len(), 500);
        assert_eq!(timer.len(), 0);
        assert_eq!(agenda.len(), 0);
    }

    #[test]
    fn a_batch_is_one_run_per_shard_that_leaves_when_its_last_lease_settles() {
        let agenda = Agenda::new();
        let weak = Weak::new();
        let h = hint(&agenda, &weak);
        let timer = Timer::new();
        let s = SHARDS as u64;
        // A batch of 2 * SHARDS + 3 leases: one run in each shard, the
        // first three shards' runs three long, the others two.
        let batch = 100..100 + 2 * s + 3;
        timer.schedule_leases(t(50), batch.clone(), &h);
        assert_eq!(timer.len(), SHARDS);
        assert_eq!(timer.live_leases(), batch.clone().count());
        // Settling every lease but one, singly and in batches, leaves only
        // the last one's run.
        let last = batch.end - 1;
        for id in batch.clone().step_by(2).filter(|&id| id != last) {
            timer.cancel_lease(t(50), id);
        }
        let rest: Vec<Key> = batch
            .clone()
            .skip(1)
            .step_by(2)
            .filter(|&id| id != last)
            .map(|id| (t(50), id))
            .collect();
        timer.cancel_leases(&rest);
        assert_eq!((timer.len(), timer.live_leases()), (1, 1));
        // A second cancel, a wrong deadline or an id outside every run is
        // nothing.
        timer.cancel_lease(t(50), 100);
        timer.cancel_lease(t(49), last);
        timer.cancel_lease(t(50), last + s);
        assert_eq!((timer.len(), timer.live_leases()), (1, 1));
        timer.cancel_lease(t(50), last);
        assert_eq!((timer.len(), timer.live_leases()), (0, 0));
    }

    #[test]
    fn a_touched_lease_leaves_its_run_and_the_run_comes_due_whole() {
        let agenda = Agenda::new();
        let weak = Weak::new();
        let h = hint(&agenda, &weak);
        let timer = Timer::new();
        let s = SHARDS as u64;
        // Three leases in shard 0's run: 0, S, 2S.
        timer.schedule_leases(t(50), 0..2 * s + 1, &h);
        // A touch to the same deadline changes nothing (and must not
        // replace the run its id starts); a touch elsewhere and back puts a
        // run of one between the run's key and its later ids.
        timer.reschedule_lease(t(50), t(50), 0, &h);
        timer.reschedule_lease(t(50), t(80), s, &h);
        timer.reschedule_lease(t(80), t(50), s, &h);
        assert_eq!(timer.live_leases(), (2 * s + 1) as usize);
        // 2S is still found in its run behind the run of one.
        timer.cancel_lease(t(50), 2 * s);
        assert_eq!(timer.live_leases(), (2 * s) as usize);
        let due = sweep(&agenda, &timer, t(60), &h);
        let runs: Vec<_> = due
            .iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Leases(len) => Some(ids(key, *len)),
                Entry::Delayed(_) => None,
            })
            .filter(|ids| ids[0] % s == 0)
            .collect();
        // Shard 0: the batch's run whole (the sweep skips leases settled or
        // touched since, in the lease table), and S's run of one.
        assert_eq!(runs, [vec![0, s, 2 * s], vec![s]]);
        assert_eq!(timer.len(), 0);
    }

    #[test]
    fn an_earlier_entry_replaces_its_shards_hint_and_clear_removes_them() {
        let agenda = Agenda::new();
        let weak = Weak::new();
        let h = hint(&agenda, &weak);
        let timer = Timer::new();
        let s = SHARDS as u64;
        timer.schedule_lease(t(50), s, &h);
        timer.schedule_lease(t(60), 2 * s, &h);
        assert_eq!(agenda.len(), 1);
        timer.schedule_lease(t(40), 3 * s, &h);
        assert_eq!((agenda.len(), agenda.next_due()), (1, Some(t(40))));
        // Another shard hints for itself.
        timer.schedule_lease(t(45), 1, &h);
        assert_eq!(agenda.len(), 2);
        timer.schedule_delayed(t(45), Message::new(1, Bytes::new()), &h);
        let dropped = timer.clear(&h);
        assert_eq!(dropped.len(), 1);
        assert_eq!((agenda.len(), timer.len()), (0, 0));
    }
}
