//! [`Tracker`]: the log writer's bookkeeping. It answers, for reclamation
//! and compaction, how many live messages each segment holds (and how many
//! bytes they would take written forward), which live messages a segment
//! is home to, and what state to write forward for each. It follows the
//! replay contract of [`crate::state`] record for record (the differential
//! test below checks it against [`crate::state::State`]), but keeps far
//! less per message: the writer runs beside a broker that already holds
//! every message, so a per-message entry here is memory the broker pays
//! twice.
//!
//! # What it keeps
//!
//! * Liveness and home, per 64 consecutive ids ([`Chunk`]): for each
//!   segment that is home to some of them, a 64-bit mask. Ids are handed
//!   out in order and a group's records are written in about that order,
//!   so a chunk nearly always has one home (two at a segment boundary or
//!   while compaction moves it). A message's *home* is the segment of the
//!   last record that carries its body (`Publish`, or `Live` written
//!   forward by compaction); a `Gone` in any later segment finds it here
//!   and decrements that segment's count, whatever segment the `Gone`
//!   itself lands in.
//! * Sizes (what its `Live` record would take, for the disk bound): one
//!   per chunk while its live messages are the same size (a batch, a
//!   producer with fixed-size messages), else a per-id array.
//! * What changed since the home record ([`Changes`]): only messages that a
//!   `Ready`, `Delayed` or `Leased` record touched after it. Everything
//!   else about a live message (queue, due time, place in line) is in its
//!   home record, which compaction reads anyway to copy the body.
//! * Per segment: live messages and file bytes ([`Usage`]); the queues
//!   and the id marks (the snapshot each new segment starts with).
//!
//! About 1 to 2 bytes per live message for messages as published, instead
//! of a hash-table entry of 60 to 120 bytes (measured in BENCHMARKS.md,
//! issue 18, "2026-12-08").
//!
//! # Why no window loses an answered message
//!
//! A segment is deleted only when it is the oldest, is not the active one
//! and its count is 0, and the writer counts a message in its home segment
//! from the replay of its record, which happens on the writer thread after
//! the record was written and before any reclamation looks at the counts
//! (`Writer::reclaim` runs after the group is written and replayed;
//! `compact` replays its own `Live` records before the old segment is
//! looked at again). So a count can be too high (never reclaiming early),
//! never too low: the only decrements are a `Gone` (the broker settled the
//! message, and that record is written, and under `--fsync always` or
//! `interval` synced before the deletion) and a move by a later `Live`
//! record that is already written.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::record::{live_size, Entry, LiveState, Record, Settings};
use crate::state::{position, IdMap, Usage};

/// Ids per chunk: one bit each in a `u64`.
const CHUNK: u64 = 64;

/// The live messages among 64 consecutive ids.
#[derive(Debug, Clone)]
struct Chunk {
    /// (segment, the ids homed there as a bit mask); usually the only one.
    first: (u64, u64),
    /// Further homes (a segment boundary, a compaction under way).
    more: Vec<(u64, u64)>,
    /// The size of every live id while `sizes` is `None`.
    size: u32,
    sizes: Option<Box<[u32; CHUNK as usize]>>,
}

impl Chunk {
    fn new(segment: u64, bit: u64, size: u32) -> Self {
        Chunk {
            first: (segment, bit),
            more: Vec::new(),
            size,
            sizes: None,
        }
    }

    fn home(&self, bit: u64) -> Option<u64> {
        std::iter::once(&self.first)
            .chain(self.more.iter())
            .find(|(_, mask)| mask & bit != 0)
            .map(|(segment, _)| *segment)
    }

    fn size(&self, index: usize) -> u32 {
        self.sizes.as_ref().map_or(self.size, |sizes| sizes[index])
    }

    /// Adds a live id that is not live yet.
    fn add(&mut self, segment: u64, index: usize, size: u32) {
        let bit = 1u64 << index;
        if self.first.1 == 0 && self.more.is_empty() {
            *self = Chunk::new(segment, bit, size);
            return;
        }
        if let Some(sizes) = &mut self.sizes {
            sizes[index] = size;
        } else if size != self.size {
            let mut sizes = Box::new([self.size; CHUNK as usize]);
            sizes[index] = size;
            self.sizes = Some(sizes);
        }
        if self.first.0 == segment {
            self.first.1 |= bit;
        } else if let Some(home) = self.more.iter_mut().find(|(s, _)| *s == segment) {
            home.1 |= bit;
        } else if self.first.1 == 0 {
            self.first = (segment, bit);
        } else {
            self.more.push((segment, bit));
        }
    }

    /// Removes a live id: its home and size.
    fn remove(&mut self, index: usize) -> Option<(u64, u32)> {
        let bit = 1u64 << index;
        let size = self.size(index);
        let segment = if self.first.1 & bit != 0 {
            self.first.1 &= !bit;
            let segment = self.first.0;
            if self.first.1 == 0 {
                if let Some(next) = self.more.pop() {
                    self.first = next;
                }
            }
            segment
        } else {
            let at = self.more.iter().position(|(_, mask)| mask & bit != 0)?;
            self.more[at].1 &= !bit;
            let segment = self.more[at].0;
            if self.more[at].1 == 0 {
                self.more.swap_remove(at);
            }
            segment
        };
        Some((segment, size))
    }

    fn is_empty(&self) -> bool {
        self.first.1 == 0 && self.more.is_empty()
    }
}

/// What records after its home record changed about a live message;
/// `None`: as its home record says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Changes {
    queue: Option<Arc<str>>,
    attempts: Option<u32>,
    dead_lettered: Option<bool>,
    due_ms: Option<u64>,
    ready_pos: Option<u64>,
}

/// The writer's bookkeeping. See the module docs.
#[derive(Debug)]
pub struct Tracker {
    chunks: IdMap<Chunk>,
    changed: IdMap<Changes>,
    live: u64,
    live_bytes: u64,
    usage: BTreeMap<u64, Usage>,
    names: HashSet<Arc<str>>,
    queues: BTreeMap<Arc<str>, Settings>,
    next_delivery: u64,
    next_message: u64,
    seen_message: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    pub fn new() -> Self {
        Tracker {
            chunks: IdMap::default(),
            changed: IdMap::default(),
            live: 0,
            live_bytes: 0,
            usage: BTreeMap::new(),
            names: HashSet::new(),
            queues: BTreeMap::new(),
            next_delivery: 1,
            next_message: 1,
            seen_message: 0,
        }
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(found) = self.names.get(name) {
            return found.clone();
        }
        let name: Arc<str> = Arc::from(name);
        self.names.insert(name.clone());
        name
    }

    /// The queue `name`, created with default settings if missing.
    fn queue(&mut self, name: &str) -> Arc<str> {
        let name = self.intern(name);
        self.queues.entry(name.clone()).or_default();
        name
    }

    /// Makes sure every queue in `queues` exists (recovery may create one
    /// for a message whose queue was deleted after it raced into it).
    pub fn ensure_queues(&mut self, queues: &[(Arc<str>, Settings)]) {
        for (name, settings) in queues {
            let name = self.intern(name);
            self.queues.entry(name).or_insert(*settings);
        }
    }

    /// The segment that is home to live message `id`.
    pub fn home(&self, id: u64) -> Option<u64> {
        self.chunks.get(&(id / CHUNK))?.home(1 << (id % CHUNK))
    }

    fn is_live(&self, id: u64) -> bool {
        self.home(id).is_some()
    }

    /// Forgets live message `id`, if it is live.
    fn remove(&mut self, id: u64) -> bool {
        let key = id / CHUNK;
        let Some(chunk) = self.chunks.get_mut(&key) else {
            return false;
        };
        let Some((segment, size)) = chunk.remove((id % CHUNK) as usize) else {
            return false;
        };
        if chunk.is_empty() {
            self.chunks.remove(&key);
        }
        self.live -= 1;
        self.live_bytes -= u64::from(size);
        if let Some(usage) = self.usage.get_mut(&segment) {
            usage.live -= 1;
        }
        if !self.changed.is_empty() {
            self.changed.remove(&id);
        }
        true
    }

    /// Makes `segment` the home of message `id` (a record carrying its
    /// body and whole state is there): a live one moves. The caller adds
    /// one to `segment`'s count (once per record, not per message).
    fn insert(&mut self, segment: u64, id: u64, size: u32) {
        self.seen_message = self.seen_message.max(id.saturating_add(1));
        let index = (id % CHUNK) as usize;
        // One lookup for the common case, a new id.
        let chunk = self
            .chunks
            .entry(id / CHUNK)
            .or_insert_with(|| Chunk::new(segment, 0, size));
        let old = if chunk.home(1 << index).is_some() {
            chunk.remove(index)
        } else {
            None
        };
        chunk.add(segment, index, size);
        if let Some((old_segment, old_size)) = old {
            self.live -= 1;
            self.live_bytes -= u64::from(old_size);
            if let Some(usage) = self.usage.get_mut(&old_segment) {
                usage.live -= 1;
            }
            // The new record carries its whole state.
            self.changed.remove(&id);
        }
        self.live += 1;
        self.live_bytes += u64::from(size);
    }

    /// As [`Tracker::apply`] of a publish record, from its entries (id, due
    /// time, body length) alone: the writer's replay builds no bodies.
    pub fn apply_published(&mut self, segment: u64, queue: &str, entries: &[Entry]) {
        let queue_len = self.queue(queue).len();
        for &(id, _, len) in entries {
            self.insert(segment, id, live_size(queue_len, len) as u32);
        }
        self.usage.entry(segment).or_default().live += entries.len() as u64;
    }

    /// Notes that `segment` exists and is `bytes` long.
    pub fn segment_grew(&mut self, segment: u64, bytes: u64) {
        self.usage.entry(segment).or_default().bytes = bytes;
    }

    /// Forgets a reclaimed segment.
    pub fn segment_removed(&mut self, segment: u64) {
        self.usage.remove(&segment);
    }

    fn changes(&mut self, id: u64) -> &mut Changes {
        self.changed.entry(id).or_default()
    }

    /// Applies `record`, found at `offset` of `segment`.
    pub fn apply(&mut self, segment: u64, offset: u64, record: &Record) {
        let pos = position(segment, offset);
        match record {
            Record::Publish { queue, messages } => {
                let queue_len = self.queue(queue).len();
                for m in messages {
                    self.insert(segment, m.id, live_size(queue_len, m.body.len()) as u32);
                }
                self.usage.entry(segment).or_default().live += messages.len() as u64;
            }
            Record::Live(live) => {
                let queue_len = self.queue(&live.queue).len();
                self.insert(
                    segment,
                    live.id,
                    live_size(queue_len, live.body.len()) as u32,
                );
                self.usage.entry(segment).or_default().live += 1;
            }
            Record::Ready {
                id,
                queue,
                attempts,
                dead_lettered,
            } => {
                if self.is_live(*id) {
                    let queue = self.queue(queue);
                    let changes = self.changes(*id);
                    changes.queue = Some(queue);
                    changes.attempts = Some(*attempts);
                    changes.dead_lettered = Some(*dead_lettered);
                    changes.due_ms = Some(0);
                    changes.ready_pos = Some(pos);
                }
            }
            Record::Delayed {
                id,
                queue,
                attempts,
                due_ms,
            } => {
                if self.is_live(*id) {
                    let queue = self.queue(queue);
                    let changes = self.changes(*id);
                    changes.queue = Some(queue);
                    changes.attempts = Some(*attempts);
                    changes.due_ms = Some((*due_ms).max(1));
                }
            }
            Record::Leased { id, attempts } => {
                if self.is_live(*id) {
                    self.changes(*id).attempts = Some(*attempts);
                }
            }
            Record::Gone { id } => {
                self.remove(*id);
            }
            Record::QueuePut { queue, settings } => {
                let name = self.intern(queue);
                self.queues.insert(name, *settings);
            }
            Record::QueueDeleted { queue } => {
                self.queues.remove(queue.as_str());
            }
            Record::Marks {
                next_delivery,
                next_message,
            } => {
                // The last mark wins (see `State::apply`).
                self.next_delivery = *next_delivery;
                self.next_message = *next_message;
            }
        }
    }

    /// Live messages.
    pub fn live(&self) -> u64 {
        self.live
    }

    /// What the live messages' records would take, written forward.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Each segment's usage, oldest first.
    pub fn usage(&self) -> impl Iterator<Item = (u64, Usage)> + '_ {
        self.usage.iter().map(|(segment, usage)| (*segment, *usage))
    }

    /// The marks recorded so far.
    pub fn marks(&self) -> (u64, u64) {
        (self.next_delivery, self.next_message.max(self.seen_message))
    }

    /// Every queue and its settings: the snapshot a new segment starts
    /// with, so that reclaiming older segments loses no queue.
    pub fn queue_records(&self) -> Vec<Record> {
        self.queues
            .iter()
            .map(|(name, settings)| Record::QueuePut {
                queue: name.to_string(),
                settings: *settings,
            })
            .collect()
    }

    /// The `Live` records that move every live message homed in segment
    /// `number` forward, given that segment's records (offset, record) in
    /// order: each message's state is its home record's (the last record
    /// in the segment carrying its body) with the changes recorded since.
    pub fn forward(
        &self,
        number: u64,
        records: impl IntoIterator<Item = (u64, Record)>,
    ) -> Vec<Record> {
        let mut found: Vec<LiveState> = Vec::new();
        let mut index: IdMap<usize> = IdMap::default();
        let mut keep = |state: LiveState| {
            if self.home(state.id) != Some(number) {
                return;
            }
            match index.get(&state.id) {
                Some(&at) => found[at] = state,
                None => {
                    index.insert(state.id, found.len());
                    found.push(state);
                }
            }
        };
        for (offset, record) in records {
            match record {
                Record::Publish { queue, messages } => {
                    for m in messages {
                        keep(LiveState {
                            id: m.id,
                            queue: queue.clone(),
                            attempts: 0,
                            dead_lettered: false,
                            due_ms: m.due_ms,
                            ready_pos: position(number, offset),
                            body: m.body,
                        });
                    }
                }
                Record::Live(live) => keep(live),
                _ => {}
            }
        }
        found
            .into_iter()
            .map(|mut state| {
                if let Some(changes) = self.changed.get(&state.id) {
                    if let Some(queue) = &changes.queue {
                        state.queue = queue.to_string();
                    }
                    state.attempts = changes.attempts.unwrap_or(state.attempts);
                    state.dead_lettered = changes.dead_lettered.unwrap_or(state.dead_lettered);
                    state.due_ms = changes.due_ms.unwrap_or(state.due_ms);
                    state.ready_pos = changes.ready_pos.unwrap_or(state.ready_pos);
                }
                // Not a slice of the segment's read: the record is encoded
                // (copied) right away, but keep it independent anyway.
                state.body = Bytes::copy_from_slice(&state.body);
                Record::Live(state)
            })
            .collect()
    }

    /// Messages with changes recorded beyond their home record.
    #[cfg(test)]
    pub fn changed(&self) -> usize {
        self.changed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Published;
    use crate::state::State;

    fn publish(queue: &str, ids: &[u64]) -> Record {
        Record::Publish {
            queue: queue.into(),
            messages: ids
                .iter()
                .map(|&id| Published {
                    id,
                    due_ms: 0,
                    body: Bytes::from(format!("m{id}").repeat(1 + (id % 3) as usize)),
                })
                .collect(),
        }
    }

    /// Applies `records` to a tracker and to the reference [`State`], and
    /// checks that they agree on every count and on what compaction would
    /// write forward from every segment.
    fn agree(records: &[(u64, u64, Record)]) -> Tracker {
        let mut tracker = Tracker::new();
        let mut state = State::new(false);
        for (segment, offset, record) in records {
            tracker.apply(*segment, *offset, record);
            state.apply(*segment, *offset, record.clone());
        }
        let usage: Vec<_> = tracker.usage().collect();
        assert_eq!(
            usage,
            state.usage().collect::<Vec<_>>(),
            "per-segment usage"
        );
        assert_eq!(tracker.live(), state.live() as u64, "live messages");
        assert_eq!(tracker.live_bytes(), state.live_bytes(), "live bytes");
        assert_eq!(tracker.marks(), state.marks(), "marks");
        assert_eq!(tracker.queue_records(), state.queue_records(), "queues");
        for (number, _) in usage {
            let in_segment = records
                .iter()
                .filter(|(s, _, _)| *s == number)
                .map(|(_, offset, record)| (*offset, record.clone()));
            let mut ours = tracker.forward(number, in_segment);
            let mut theirs: Vec<Record> = Vec::new();
            let homed = state.homed_in(number);
            for (segment, _, record) in records {
                let bodies: Vec<(u64, Bytes)> = match record {
                    Record::Publish { messages, .. } if *segment == number => {
                        messages.iter().map(|m| (m.id, m.body.clone())).collect()
                    }
                    Record::Live(live) if *segment == number => {
                        vec![(live.id, live.body.clone())]
                    }
                    _ => Vec::new(),
                };
                for (id, body) in bodies {
                    if homed.contains(&id) {
                        theirs.retain(|r| !matches!(r, Record::Live(l) if l.id == id));
                        theirs.extend(state.live_record(id, body));
                    }
                }
            }
            let key = |r: &Record| match r {
                Record::Live(l) => l.id,
                _ => u64::MAX,
            };
            ours.sort_by_key(key);
            theirs.sort_by_key(key);
            assert_eq!(ours, theirs, "what compaction writes forward from {number}");
        }
        tracker
    }

    #[test]
    fn a_settlement_in_a_later_segment_counts_against_the_home_segment() {
        let t = agree(&[
            (1, 10, publish("q", &[1, 2, 3])),
            (2, 10, Record::Gone { id: 2 }),
            (3, 10, Record::Gone { id: 1 }),
        ]);
        let usage: Vec<_> = t.usage().map(|(s, u)| (s, u.live)).collect();
        assert_eq!(usage, vec![(1, 1)]);
        assert_eq!(t.home(3), Some(1));
        assert_eq!(t.home(1), None);
    }

    #[test]
    fn requeues_delays_and_deliveries_keep_a_message_live_and_are_written_forward() {
        let t = agree(&[
            (1, 10, publish("q", &[1, 2, 3, 4])),
            (1, 20, Record::Leased { id: 1, attempts: 1 }),
            (
                2,
                10,
                Record::Ready {
                    id: 1,
                    queue: "q".into(),
                    attempts: 1,
                    dead_lettered: false,
                },
            ),
            (
                2,
                20,
                Record::Delayed {
                    id: 2,
                    queue: "q".into(),
                    attempts: 2,
                    due_ms: 99,
                },
            ),
            (
                2,
                30,
                Record::Ready {
                    id: 3,
                    queue: "q.dead".into(),
                    attempts: 5,
                    dead_lettered: true,
                },
            ),
            (2, 40, Record::Leased { id: 4, attempts: 1 }),
            (2, 50, Record::Gone { id: 4 }),
        ]);
        assert_eq!(t.usage().next().map(|(_, u)| u.live), Some(3));
        // The settled message's changes went with it.
        assert_eq!(t.changed(), 3);
    }

    #[test]
    fn compaction_moves_messages_home_and_clears_their_changes() {
        let mut records = vec![
            (1, 10, publish("q", &[1, 2, 65, 200])),
            (1, 20, Record::Leased { id: 2, attempts: 3 }),
            (1, 30, Record::Gone { id: 65 }),
        ];
        let t = agree(&records);
        let in_one = records.iter().map(|(_, o, r)| (*o, r.clone()));
        let forward = t.forward(1, in_one);
        assert_eq!(forward.len(), 3);
        for (i, live) in forward.into_iter().enumerate() {
            records.push((2, 10 + i as u64, live));
        }
        // A message published in the new segment beside the moved ones
        // shares their chunk.
        records.push((2, 50, publish("q", &[3])));
        let t = agree(&records);
        let usage: Vec<_> = t.usage().map(|(s, u)| (s, u.live)).collect();
        assert_eq!(usage, vec![(1, 0), (2, 4)]);
        assert_eq!(t.changed(), 0);
        // Settling them after the move counts against the new home.
        records.push((3, 10, Record::Gone { id: 2 }));
        records.push((3, 20, Record::Gone { id: 200 }));
        let t = agree(&records);
        let usage: Vec<_> = t.usage().map(|(s, u)| (s, u.live)).collect();
        assert_eq!(usage, vec![(1, 0), (2, 2)]);
        assert_eq!(t.chunks.len(), 1, "the chunk of 200 is given back");
    }

    #[test]
    fn chunks_split_over_segments_and_sizes_that_differ() {
        let mut records = Vec::new();
        for id in 0..300u64 {
            records.push((1 + id / 100, id, publish("q", &[id])));
        }
        for id in (0..300u64).step_by(7) {
            records.push((4, 1000 + id, Record::Gone { id }));
        }
        let t = agree(&records);
        assert_eq!(t.live(), 300 - 43);
    }

    /// A small deterministic generator, so that the random workload below
    /// needs no dependency and replays the same on every run.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn random_workloads_agree_with_the_reference_state() {
        for seed in 0..24 {
            let mut rng = Lcg(seed);
            let mut records: Vec<(u64, u64, Record)> = Vec::new();
            let (mut segment, mut offset, mut next_id) = (1u64, 0u64, 1u64);
            for _ in 0..300 {
                offset += 10;
                if rng.below(40) == 0 {
                    segment += 1;
                    offset = 10;
                }
                let id = 1 + rng.below(next_id);
                let record = match rng.below(10) {
                    0..=2 => {
                        let n = 1 + rng.below(70);
                        let ids: Vec<u64> = (next_id..next_id + n).collect();
                        next_id += n;
                        publish(["a", "bb"][rng.below(2) as usize], &ids)
                    }
                    3 => Record::Leased {
                        id,
                        attempts: rng.below(5) as u32,
                    },
                    4 => Record::Ready {
                        id,
                        queue: "a.dead".into(),
                        attempts: rng.below(5) as u32,
                        dead_lettered: rng.below(2) == 0,
                    },
                    5 => Record::Delayed {
                        id,
                        queue: "bb".into(),
                        attempts: 1,
                        due_ms: rng.below(1000),
                    },
                    6 => {
                        // Compaction of a random older segment, as the
                        // writer does it: its live messages move here.
                        let old = 1 + rng.below(segment);
                        let mut tracker = Tracker::new();
                        for (s, o, r) in &records {
                            tracker.apply(*s, *o, r);
                        }
                        let in_old: Vec<_> = records
                            .iter()
                            .filter(|(s, _, _)| *s == old)
                            .map(|(_, o, r)| (*o, r.clone()))
                            .collect();
                        for live in tracker.forward(old, in_old) {
                            records.push((segment, offset, live));
                            offset += 10;
                        }
                        continue;
                    }
                    _ => Record::Gone { id },
                };
                records.push((segment, offset, record));
            }
            agree(&records);
        }
    }
}
