//! [`QueueInfo`] and [`QueueStats`] (snapshots of one queue), [`Stats`]
//! (the whole broker) and [`Counters`] (the live event counters).
//!
//! Counters are `Relaxed` atomics, each on its own cache line: they order
//! nothing and are read only for reporting, so the hot path pays one
//! uncontended-line increment per event and no fence.
//!
//! For every queue, at every quiet moment:
//! `published = acknowledged + dead_lettered + ready + in_flight + delayed`.
//! A dead-letter move counts once in the source's `dead_lettered` and once in
//! the dead-letter queue's `published`; a redrive counts once in the
//! dead-letter queue's `acknowledged` (and `redriven`, which says why) and
//! once in the target's `published`.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::message::QueueName;
use crate::queue::QueueSettings;
use crate::sync::{AtomicU64, Ordering};

/// A queue's settings and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: QueueName,
    pub settings: QueueSettings,
    pub ready: usize,
    pub in_flight: usize,
    pub delayed: usize,
    /// Body bytes held (ready, in flight and delayed).
    pub bytes: u64,
}

/// One queue's state and lifetime counters.
///
/// Fields are read one after another, not atomically together: under
/// concurrent traffic they may disagree by the operations in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub ready: usize,
    pub in_flight: usize,
    pub delayed: usize,
    /// Body bytes held.
    pub bytes: u64,
    /// Fetches parked waiting for a message.
    pub waiting_fetches: usize,
    /// How long the head of the ready queue has been ready (an upper bound;
    /// see `Queue::oldest_ready_age`); `None` when nothing is ready.
    pub oldest_ready_age: Option<Duration>,
    /// Messages accepted: publishes, dead-letter moves in, redrives in.
    pub published: u64,
    /// Deliveries handed out (redeliveries included).
    pub delivered: u64,
    /// Deliveries acknowledged (and, on a dead-letter queue, messages
    /// redriven out of it).
    pub acknowledged: u64,
    /// Deliveries requeued by their consumer (not those dead-lettered), and
    /// deliveries given back because their answer never reached it.
    pub requeued: u64,
    /// Deliveries whose lease ran out (not those dead-lettered).
    pub expired: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Messages redriven out of this dead-letter queue.
    pub redriven: u64,
}

/// The whole broker: every queue added up, plus what only the broker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages in the ready queues.
    pub ready: usize,
    /// Live leases.
    pub in_flight: usize,
    /// Delayed messages.
    pub delayed: usize,
    /// Fetches parked waiting for a message, including those waiting for a
    /// queue that does not exist yet.
    pub waiting: usize,
    /// What the held messages are charged against `max_queue_bytes`.
    pub queued_bytes: u64,
    /// Queues that exist, `default` included.
    pub queues: usize,
    pub published: u64,
    pub delivered: u64,
    pub acknowledged: u64,
    pub requeued: u64,
    pub expired: u64,
    pub dead_lettered: u64,
}

impl Stats {
    pub(crate) fn add(&mut self, q: &QueueStats) {
        self.ready += q.ready;
        self.in_flight += q.in_flight;
        self.delayed += q.delayed;
        self.waiting += q.waiting_fetches;
        self.queues += 1;
        self.published += q.published;
        self.delivered += q.delivered;
        self.acknowledged += q.acknowledged;
        self.requeued += q.requeued;
        self.expired += q.expired;
        self.dead_lettered += q.dead_lettered;
    }
}

pub(crate) struct Counters {
    pub(crate) published: CachePadded<AtomicU64>,
    pub(crate) delivered: CachePadded<AtomicU64>,
    pub(crate) acknowledged: CachePadded<AtomicU64>,
    pub(crate) requeued: CachePadded<AtomicU64>,
    pub(crate) expired: CachePadded<AtomicU64>,
    pub(crate) dead_lettered: CachePadded<AtomicU64>,
    pub(crate) redriven: CachePadded<AtomicU64>,
}

impl Counters {
    pub(crate) fn new() -> Self {
        let zero = || CachePadded::new(AtomicU64::new(0));
        Counters {
            published: zero(),
            delivered: zero(),
            acknowledged: zero(),
            requeued: zero(),
            expired: zero(),
            dead_lettered: zero(),
            redriven: zero(),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` (a batch's worth); adding 0 touches nothing.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
