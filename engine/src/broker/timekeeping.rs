//! Timekeeping: the sweep that expires leases and releases delayed
//! messages as they come due, and the signals the caller's timekeeping task
//! sleeps on (something due earlier; the broker drained).

use super::{Broker, Sweep};
use crate::clock::{Clock, Timestamp};

impl<C: Clock> Broker<C> {
    /// Handles everything due: expired leases go back to the tail of their
    /// queue (or to its dead-letter queue), delayed messages join the tail,
    /// in due order within each queue, waking a waiter for each.
    ///
    /// Call it from one background task, then sleep until the returned
    /// `next_deadline` or until [`Broker::due_changed`] completes, whichever
    /// is first. Concurrent calls are safe.
    pub fn expire_due(&self) -> Sweep {
        let now = self.clock.now();
        let (mut expired, mut came_due) = (0, 0);
        loop {
            let due = self.shared.agenda.take_due(now);
            if due.is_empty() {
                break;
            }
            for (queue, shards) in due
                .iter()
                .filter_map(|due| Some((due.queue.upgrade()?, due.shards)))
            {
                let run = queue.run_due(&self.shared, now, shards);
                expired += run.expired;
                came_due += run.came_due;
                for message in run.dead {
                    self.move_to_dead_letters(&queue.name, message, now);
                }
            }
        }
        Sweep {
            expired,
            came_due,
            next_deadline: self.shared.agenda.next_due(),
        }
    }

    /// The earliest time anything (a lease, a delayed message) is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.shared.agenda.next_due()
    }

    /// Completes when something was scheduled earlier than every due time
    /// pending before it (since the last completion). The timekeeping task
    /// waits on this beside its sleep.
    pub async fn due_changed(&self) {
        self.shared.agenda.signal().changed().await
    }

    /// Completes when the broker has come to hold no message at all (since
    /// the last completion). The server's timekeeper then waits a moment
    /// and, if it is still empty, calls [`Broker::compact`] and gives freed
    /// memory back to the OS, without polling.
    pub async fn drained(&self) {
        self.drained.changed().await
    }

    /// Gives back the memory of lease tables that a burst left mostly
    /// empty (hash tables never shrink by themselves). O(queues); call it
    /// when the broker drains, not per request.
    pub fn compact(&self) {
        for queue in self.registry.all() {
            queue.compact();
        }
    }
}
