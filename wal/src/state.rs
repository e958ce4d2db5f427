//! [`State`]: what the log says the broker holds, built by applying records
//! in log order. Recovery builds one from the segments on disk and hands
//! it to the broker. The writer follows the same rules with far less per
//! message ([`crate::tracker::Tracker`], checked against this one record
//! for record by a differential test), so that its idea of what is live
//! is exactly what a recovery would find.
//!
//! # Rules (the replay contract)
//!
//! * A message exists from its `Publish` (or `Live`) record to its `Gone`.
//!   A record about a message that does not exist is ignored: its `Gone`
//!   was logged first (a settlement racing the record), or its segment was
//!   reclaimed because it was settled.
//! * Its place in its queue is the position of the record that last made
//!   it ready (`Publish`, `Ready`, or the position a `Live` record
//!   carries). Leases are not logged: a leased message is ready again.
//! * A queue exists from its first `Publish`, `Ready`, `Delayed` or
//!   `QueuePut` to its `QueueDeleted`. Its messages leave by their own
//!   `Gone` records, which the delete logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

#[cfg(test)]
use crate::record::LiveState;
use crate::record::{live_size, Record, Settings};

/// Message ids are sequential integers: a multiply spreads them over the
/// table for a fraction of SipHash's cost (recovery hashes each id several
/// times).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Positions: a segment's number in the high bits, the offset in it below.
pub const POSITION_SHIFT: u32 = 40;

pub fn position(segment: u64, offset: u64) -> u64 {
    (segment << POSITION_SHIFT) | offset
}

#[derive(Debug, Clone)]
struct Tracked {
    queue: Arc<str>,
    attempts: u32,
    dead_lettered: bool,
    due_ms: u64,
    ready_pos: u64,
    /// The segment holding the record with its body.
    home: u64,
    /// What its `Live` record would take (a body is below 4 GiB).
    size: u32,
}

/// One message as recovery hands it to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredMessage {
    pub queue: Arc<str>,
    pub id: u64,
    pub body: Bytes,
    pub attempts: u32,
    pub dead_lettered: bool,
    /// 0: ready; else when it comes due (wall-clock ms).
    pub due_ms: u64,
}

/// Everything a broker is rebuilt from.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every queue and its settings, by name.
    pub queues: Vec<(Arc<str>, Settings)>,
    /// Ready messages in the order they were last made ready, then
    /// delayed ones in due order.
    pub messages: Vec<RecoveredMessage>,
    /// The first delivery id the broker may hand out.
    pub next_delivery: u64,
    /// The first message id the broker may hand out.
    pub next_message: u64,
}

/// How many live messages a segment holds, and its size on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub live: u64,
    pub bytes: u64,
}

/// The replayed state. See the module docs for the rules.
#[derive(Debug, Default)]
pub struct State {
    keep_bodies: bool,
    messages: IdMap<Tracked>,
    /// Bodies, kept during recovery only (beside `messages`, so that the
    /// writer's entry per live message stays small: at run time the engine
    /// holds bodies, and reclamation reads them back from the segment).
    bodies: IdMap<Bytes>,
    names: HashSet<Arc<str>>,
    queues: BTreeMap<Arc<str>, Settings>,
    next_delivery: u64,
    next_message: u64,
    /// One past the highest message id in a record: a mark never takes
    /// message ids below it.
    seen_message: u64,
    usage: BTreeMap<u64, Usage>,
    live_bytes: u64,
}

impl State {
    /// A state for recovery (`keep_bodies`) or for the writer.
    pub fn new(keep_bodies: bool) -> Self {
        State {
            keep_bodies,
            next_delivery: 1,
            next_message: 1,
            ..State::default()
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

    /// Forgets a reclaimed segment.
    pub fn segment_removed(&mut self, segment: u64) {
        self.usage.remove(&segment);
    }

    /// Applies `record`, found at `offset` of `segment`.
    pub fn apply(&mut self, segment: u64, offset: u64, record: Record) {
        let pos = position(segment, offset);
        match record {
            Record::Publish { queue, messages } => {
                let queue = self.queue(&queue);
                for message in messages {
                    self.seen_message = self.seen_message.max(message.id.saturating_add(1));
                    let tracked = Tracked {
                        queue: queue.clone(),
                        attempts: 0,
                        dead_lettered: false,
                        due_ms: message.due_ms,
                        ready_pos: pos,
                        home: segment,
                        size: live_size(queue.len(), message.body.len()) as u32,
                    };
                    if self.keep_bodies {
                        // Copied out of the segment read: a slice would pin
                        // the whole 16 MiB read while any message of it
                        // lives, and a restored broker would hold its log
                        // twice.
                        self.bodies
                            .insert(message.id, Bytes::copy_from_slice(&message.body));
                    }
                    self.insert(message.id, tracked);
                }
            }
            Record::Live(live) => {
                self.seen_message = self.seen_message.max(live.id.saturating_add(1));
                let queue = self.queue(&live.queue);
                let tracked = Tracked {
                    size: live_size(queue.len(), live.body.len()) as u32,
                    queue,
                    attempts: live.attempts,
                    dead_lettered: live.dead_lettered,
                    due_ms: live.due_ms,
                    ready_pos: live.ready_pos,
                    home: segment,
                };
                if self.keep_bodies {
                    self.bodies
                        .insert(live.id, Bytes::copy_from_slice(&live.body));
                }
                self.insert(live.id, tracked);
            }
            Record::Ready {
                id,
                queue,
                attempts,
                dead_lettered,
            } => {
                if self.messages.contains_key(&id) {
                    let queue = self.queue(&queue);
                    if let Some(m) = self.messages.get_mut(&id) {
                        m.queue = queue;
                        m.attempts = attempts;
                        m.dead_lettered = dead_lettered;
                        m.due_ms = 0;
                        m.ready_pos = pos;
                    }
                }
            }
            Record::Delayed {
                id,
                queue,
                attempts,
                due_ms,
            } => {
                if self.messages.contains_key(&id) {
                    let queue = self.queue(&queue);
                    if let Some(m) = self.messages.get_mut(&id) {
                        m.queue = queue;
                        m.attempts = attempts;
                        m.due_ms = due_ms.max(1);
                    }
                }
            }
            Record::Leased { id, attempts } => {
                if let Some(m) = self.messages.get_mut(&id) {
                    m.attempts = attempts;
                }
            }
            Record::Gone { id } => {
                if let Some(m) = self.messages.remove(&id) {
                    self.bodies.remove(&id);
                    self.live_bytes -= u64::from(m.size);
                    if let Some(usage) = self.usage.get_mut(&m.home) {
                        usage.live -= 1;
                    }
                }
            }
            Record::QueuePut { queue, settings } => {
                let name = self.intern(&queue);
                self.queues.insert(name, settings);
            }
            Record::QueueDeleted { queue } => {
                self.queues.remove(queue.as_str());
            }
            Record::Marks {
                next_delivery,
                next_message,
            } => {
                // The last mark wins: every mark is at or above every id
                // handed out before it was appended (a grant runs ahead of
                // the ids; the mark of a clean shutdown is exact), so the
                // last one is the tightest safe start.
                self.next_delivery = next_delivery;
                self.next_message = next_message;
            }
        }
    }

    fn insert(&mut self, id: u64, tracked: Tracked) {
        self.live_bytes += u64::from(tracked.size);
        self.usage.entry(tracked.home).or_default().live += 1;
        if let Some(old) = self.messages.insert(id, tracked) {
            self.live_bytes -= u64::from(old.size);
            if let Some(usage) = self.usage.get_mut(&old.home) {
                usage.live -= 1;
            }
        }
    }

    /// Live messages.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.messages.len()
    }

    /// What the live messages' records would take, written forward.
    #[cfg(test)]
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Each segment's usage, oldest first.
    #[cfg(test)]
    pub fn usage(&self) -> impl Iterator<Item = (u64, Usage)> + '_ {
        self.usage.iter().map(|(segment, usage)| (*segment, *usage))
    }

    /// The marks recorded so far.
    pub fn marks(&self) -> (u64, u64) {
        (self.next_delivery, self.next_message.max(self.seen_message))
    }

    /// Every queue and its settings: the snapshot a new segment starts
    /// with, so that reclaiming older segments loses no queue.
    #[cfg(test)]
    pub fn queue_records(&self) -> Vec<Record> {
        self.queues
            .iter()
            .map(|(name, settings)| Record::QueuePut {
                queue: name.to_string(),
                settings: *settings,
            })
            .collect()
    }

    /// The ids of the live messages whose body is in `segment`.
    #[cfg(test)]
    pub fn homed_in(&self, segment: u64) -> HashSet<u64> {
        self.messages
            .iter()
            .filter(|(_, m)| m.home == segment)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The `Live` record of message `id` with `body`, if it is live.
    #[cfg(test)]
    pub fn live_record(&self, id: u64, body: Bytes) -> Option<Record> {
        let m = self.messages.get(&id)?;
        Some(Record::Live(LiveState {
            id,
            queue: m.queue.to_string(),
            attempts: m.attempts,
            dead_lettered: m.dead_lettered,
            due_ms: m.due_ms,
            ready_pos: m.ready_pos,
            body,
        }))
    }

    /// Hands the replayed state over (recovery), ordered for the broker,
    /// and stops keeping bodies: from here on the state only tracks.
    pub fn take_recovered(&mut self) -> Recovered {
        self.keep_bodies = false;
        let mut ready = Vec::new();
        let mut delayed = Vec::new();
        for (id, m) in self.messages.iter_mut() {
            let id = *id;
            // A message in a queue deleted after its publish raced into the
            // queue that replaced it: that queue exists.
            if !self.queues.contains_key(&m.queue) {
                self.queues.insert(m.queue.clone(), Settings::default());
            }
            let key = if m.due_ms == 0 { m.ready_pos } else { m.due_ms };
            let message = RecoveredMessage {
                queue: m.queue.clone(),
                id,
                body: self.bodies.remove(&id).unwrap_or_default(),
                attempts: m.attempts,
                dead_lettered: m.dead_lettered,
                due_ms: m.due_ms,
            };
            if m.due_ms == 0 {
                ready.push((key, id, message));
            } else {
                delayed.push((key, m.ready_pos, message));
            }
        }
        // Every body went to a recovered message; give the table back.
        self.bodies = IdMap::default();
        ready.sort_unstable_by_key(|(key, id, _)| (*key, *id));
        delayed.sort_unstable_by_key(|(key, pos, m)| (*key, *pos, m.id));
        Recovered {
            queues: self
                .queues
                .iter()
                .map(|(name, settings)| (name.clone(), *settings))
                .collect(),
            messages: ready
                .into_iter()
                .map(|(_, _, m)| m)
                .chain(delayed.into_iter().map(|(_, _, m)| m))
                .collect(),
            next_delivery: self.next_delivery,
            next_message: self.next_message.max(self.seen_message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Published;

    fn publish(queue: &str, id: u64) -> Record {
        Record::Publish {
            queue: queue.into(),
            messages: vec![Published {
                id,
                due_ms: 0,
                body: Bytes::from(format!("m{id}")),
            }],
        }
    }

    #[test]
    fn ready_order_is_where_each_was_last_made_ready() {
        let mut s = State::new(true);
        s.apply(1, 0, publish("q", 1));
        s.apply(1, 10, publish("q", 2));
        s.apply(1, 20, Record::Leased { id: 1, attempts: 1 });
        s.apply(
            1,
            30,
            Record::Ready {
                id: 1,
                queue: "q".into(),
                attempts: 1,
                dead_lettered: false,
            },
        );
        s.apply(1, 40, Record::Leased { id: 2, attempts: 1 });
        let r = s.take_recovered();
        let order: Vec<_> = r.messages.iter().map(|m| (m.id, m.attempts)).collect();
        // 2 was leased (comes back ready at its publish position, attempt
        // 1 recorded); 1 was requeued after it.
        assert_eq!(order, vec![(2, 1), (1, 1)]);
        assert_eq!(r.next_message, 3);
    }

    #[test]
    fn gone_is_final_and_records_about_unknown_messages_are_ignored() {
        let mut s = State::new(true);
        s.apply(1, 0, publish("q", 1));
        s.apply(1, 10, Record::Gone { id: 1 });
        s.apply(
            1,
            20,
            Record::Ready {
                id: 1,
                queue: "q".into(),
                attempts: 3,
                dead_lettered: false,
            },
        );
        s.apply(1, 30, Record::Leased { id: 9, attempts: 1 });
        assert_eq!(s.live(), 0);
        assert_eq!(s.live_bytes(), 0);
        assert_eq!(s.usage().next().unwrap().1.live, 0);
        assert!(s.take_recovered().messages.is_empty());
    }

    #[test]
    fn live_records_move_a_message_home_and_keep_its_place() {
        let mut s = State::new(true);
        s.apply(1, 0, publish("q", 1));
        s.apply(1, 10, publish("q", 2));
        let live = s.live_record(1, Bytes::from_static(b"m1")).unwrap();
        s.apply(2, 0, live);
        let usage: Vec<_> = s.usage().collect();
        assert_eq!(usage[0].1.live, 1);
        assert_eq!(usage[1].1.live, 1);
        let ids: Vec<_> = s.take_recovered().messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn queues_dead_letters_delays_and_marks() {
        let mut s = State::new(true);
        s.apply(
            1,
            0,
            Record::QueuePut {
                queue: "empty".into(),
                settings: Settings {
                    ttl_ms: Some(5),
                    max_deliveries: None,
                },
            },
        );
        s.apply(1, 5, publish("q", 1));
        s.apply(
            1,
            10,
            Record::Ready {
                id: 1,
                queue: "q.dead".into(),
                attempts: 0,
                dead_lettered: true,
            },
        );
        s.apply(1, 20, publish("q", 2));
        s.apply(
            1,
            30,
            Record::Delayed {
                id: 2,
                queue: "q".into(),
                attempts: 1,
                due_ms: 500,
            },
        );
        s.apply(1, 40, Record::QueueDeleted { queue: "q".into() });
        s.apply(
            1,
            50,
            Record::Marks {
                next_delivery: 100,
                next_message: 50,
            },
        );
        let r = s.take_recovered();
        let names: Vec<_> = r.queues.iter().map(|(n, _)| n.to_string()).collect();
        // `q` was deleted, but message 2 (never logged gone) keeps it: a
        // publish that raced the delete landed in its replacement.
        assert_eq!(names, vec!["empty", "q", "q.dead"]);
        assert_eq!(r.queues[0].1.ttl_ms, Some(5));
        assert_eq!(r.messages.len(), 2);
        assert_eq!(&*r.messages[0].queue, "q.dead");
        assert!(r.messages[0].dead_lettered);
        assert_eq!((r.messages[1].due_ms, r.messages[1].attempts), (500, 1));
        assert_eq!((r.next_delivery, r.next_message), (100, 50));
    }
}
