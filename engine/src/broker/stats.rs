//! Reporting: one queue's counters, every queue's, the whole broker's, and
//! what the timers hold (for model checks and memory accounting).

use super::Broker;
use crate::clock::Clock;
use crate::error::Error;
use crate::message::{validate, QueueName};
use crate::stats::{QueueStats, Stats};
use crate::sync::Ordering;

impl<C: Clock> Broker<C> {
    /// `queue`'s counters.
    pub(crate) fn queue_stats(&self, queue: &str) -> Result<QueueStats, Error> {
        validate(queue)?;
        self.registry
            .get(queue)
            .map(|found| found.stats(self.clock.now()))
            .ok_or(Error::QueueNotFound)
    }

    /// Every queue's counters, sorted by name.
    pub fn all_queue_stats(&self) -> Vec<(QueueName, QueueStats)> {
        let now = self.clock.now();
        self.registry
            .all()
            .iter()
            .map(|queue| (queue.name.clone(), queue.stats(now)))
            .collect()
    }

    /// A snapshot of every queue added up.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            queued_bytes: self.held_bytes.load(Ordering::Relaxed),
            waiting: self.registry.creations.waiting(),
            ..Stats::default()
        };
        let now = self.clock.now();
        for queue in self.registry.all() {
            stats.add(&queue.stats(now));
        }
        stats
    }

    /// Leases and delayed messages as the queues' timers count them,
    /// added up: equal to `in_flight` and `delayed` of [`Broker::stats`]
    /// whenever no operation is under way, if every settlement counted its
    /// lease out of its timer. For model checks and tests.
    pub fn timer_counts(&self) -> (usize, usize) {
        self.registry
            .all()
            .iter()
            .map(|queue| queue.timer_counts())
            .fold((0, 0), |(l, d), (ql, qd)| (l + ql, d + qd))
    }

    /// Timer entries held over all queues (live leases plus delayed
    /// messages) and agenda hints: what timekeeping costs in memory.
    pub fn timer_entries(&self) -> usize {
        self.registry
            .all()
            .iter()
            .map(|queue| queue.timer_entries())
            .sum::<usize>()
            + self.shared.agenda.len()
    }
}
