//! [`Stats`] (a snapshot) and [`Counters`] (the live event counters).
//!
//! Counters are `Relaxed` atomics, each on its own cache line: they order
//! nothing and are read only for reporting, so the hot path pays one
//! uncontended-line increment per event and no fence.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU64, Ordering};

/// A snapshot of the broker's state and lifetime counters.
///
/// Fields are read one after another, not atomically together: under
/// concurrent traffic they may disagree by the operations in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages in the ready queue.
    pub ready: usize,
    /// Live leases.
    pub in_flight: usize,
    /// Fetches parked waiting for a message.
    pub waiting: usize,
    /// Body bytes of all messages held (ready plus in flight).
    pub queued_bytes: u64,
    /// Messages accepted by publish.
    pub published: u64,
    /// Deliveries handed out by fetch (redeliveries included).
    pub delivered: u64,
    /// Deliveries acknowledged.
    pub acknowledged: u64,
    /// Deliveries requeued by their consumer.
    pub requeued: u64,
    /// Deliveries whose lease ran out.
    pub expired: u64,
}

pub(crate) struct Counters {
    pub(crate) published: CachePadded<AtomicU64>,
    pub(crate) delivered: CachePadded<AtomicU64>,
    pub(crate) acknowledged: CachePadded<AtomicU64>,
    pub(crate) requeued: CachePadded<AtomicU64>,
    pub(crate) expired: CachePadded<AtomicU64>,
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
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
