//! [`ExpiryQueue`]: lease deadlines in the order leases were handed out.
//!
//! # Why a FIFO and not a timing wheel or a heap
//!
//! The TTL is one value per broker, so `deadline = fetch time + ttl` grows
//! with fetch time: deadlines arrive already sorted, and a plain FIFO of
//! `(deadline, id)` is a priority queue for free. Pushing is one lock-free
//! `SegQueue` push on the fetch path; the sweep pops from the head while the
//! head is due and stops at the first entry that is not, so each lease costs
//! O(1) work once and the sweep never looks at a lease that is not due. A
//! timing wheel would give the same bounds with more code and a tick-size
//! trade-off; a heap or `BTreeSet` would cost O(log n) and a lock per fetch.
//!
//! Two fetches racing on different cores can read the clock in one order
//! and push in the other, so the FIFO is sorted only up to that race (a few
//! hundred nanoseconds). An entry stuck behind a slightly later one expires
//! when that one does: late by the skew, never early, never missed.
//!
//! # What it costs
//!
//! One entry is 16 bytes (deadline + id), stored in a `SegQueue` slot of 24
//! bytes (the entry plus the slot's state word), in blocks of 31 slots: about
//! 25 bytes per lease. Entries are not removed when a lease is acknowledged
//! or requeued early (a FIFO cannot delete from the middle); the sweep drops
//! them when their deadline passes, finding the id already gone. So the queue
//! holds one entry per fetch of the last TTL, whatever was settled since.
//!
//! # What it must never do
//!
//! Decide anything. Whether a lease expires is decided by the lease table's
//! atomic `remove_if` with the deadline check inside; this queue only says
//! which ids are worth asking about, and when.

use crate::clock::Timestamp;
use crate::fifo::Fifo;
use crate::sync::{lock, Mutex};

#[derive(Debug, Clone, Copy)]
struct Entry {
    deadline: Timestamp,
    id: u64,
}

pub(crate) struct ExpiryQueue {
    entries: Fifo<Entry>,
    /// The entry the last sweep popped but found not yet due (`SegQueue`
    /// has no peek). The mutex also keeps sweeps from running concurrently.
    held: Mutex<Option<Entry>>,
}

impl ExpiryQueue {
    pub(crate) fn new() -> Self {
        ExpiryQueue {
            entries: Fifo::new(),
            held: Mutex::new(None),
        }
    }

    /// Records that lease `id` runs out at `deadline`.
    ///
    /// Must be called *after* the lease is in the lease table, so that a
    /// sweep that sees the entry also finds the lease.
    pub(crate) fn push(&self, deadline: Timestamp, id: u64) {
        self.entries.push(Entry { deadline, id });
    }

    /// Calls `on_due(id)` for every entry whose deadline is at or before
    /// `now`, in order, and returns the next deadline still pending, if any.
    pub(crate) fn drain_due(
        &self,
        now: Timestamp,
        mut on_due: impl FnMut(u64),
    ) -> Option<Timestamp> {
        let mut held = lock(&self.held);
        loop {
            let entry = held.take().or_else(|| self.entries.pop())?;
            if entry.deadline > now {
                *held = Some(entry);
                return Some(entry.deadline);
            }
            on_due(entry.id);
        }
    }

    /// Entries not yet swept, including those of settled leases.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() + usize::from(lock(&self.held).is_some())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn drains_only_due_entries_and_reports_the_next_deadline() {
        let queue = ExpiryQueue::new();
        for (deadline, id) in [(10, 1), (20, 2), (30, 3)] {
            queue.push(Timestamp::from_nanos(deadline), id);
        }
        let mut due = Vec::new();
        let next = queue.drain_due(Timestamp::from_nanos(20), |id| due.push(id));
        assert_eq!(due, vec![1, 2]);
        assert_eq!(next, Some(Timestamp::from_nanos(30)));
        assert_eq!(queue.len(), 1);

        // The held-back head is not lost between sweeps.
        let next = queue.drain_due(Timestamp::from_nanos(25), |id| due.push(id));
        assert_eq!(next, Some(Timestamp::from_nanos(30)));
        let next = queue.drain_due(Timestamp::from_nanos(30), |id| due.push(id));
        assert_eq!(due, vec![1, 2, 3]);
        assert_eq!(next, None);
        assert_eq!(queue.len(), 0);
    }
}
