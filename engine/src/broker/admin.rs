//! Queue administration: create or configure, look up, list, delete, and
//! redrive a dead-letter queue.

use std::time::Duration;

use super::{Broker, QueueUpdate};
use crate::clock::Clock;
use crate::error::Error;
use crate::message::{validate, QueueName};
use crate::stats::QueueInfo;

impl<C: Clock> Broker<C> {
    /// Creates `queue` or changes its settings. Validates everything first:
    /// a refused update changes nothing.
    pub(crate) fn put_queue(&self, queue: &str, update: QueueUpdate) -> Result<QueueInfo, Error> {
        self.check_open()?;
        let name = QueueName::new(queue)?;
        if name.is_dead() && update.max_deliveries.is_some_and(|max| max != 0) {
            return Err(Error::DeadLetterMaxDeliveries);
        }
        if update.ttl == Some(Duration::ZERO) {
            return Err(Error::ZeroTtl);
        }
        let found = self
            .registry
            .get_or_create(&name, || self.new_queue_settings(&name), false)?;
        if let Some(ttl) = update.ttl {
            found.set_ttl(ttl);
        }
        if let Some(max) = update.max_deliveries {
            found.set_max_deliveries(max);
        }
        Ok(found.info())
    }

    /// `queue`'s settings and contents.
    pub(crate) fn queue_info(&self, queue: &str) -> Result<QueueInfo, Error> {
        validate(queue)?;
        self.registry
            .get(queue)
            .map(|found| found.info())
            .ok_or(Error::QueueNotFound)
    }

    /// Every queue's settings and contents, sorted by name in byte order.
    pub fn queues(&self) -> Vec<QueueInfo> {
        self.registry
            .all()
            .iter()
            .map(|queue| queue.info())
            .collect()
    }

    /// Drops `queue` with every message it holds (ready, leased, delayed)
    /// and returns how many. Its lease ids become invalid; its `.dead` queue
    /// stays. Fetches waiting on it keep waiting, for the queue a later
    /// publish creates.
    pub(crate) fn delete_queue(&self, queue: &str) -> Result<u64, Error> {
        self.check_open()?;
        validate(queue)?;
        let removed = self.registry.remove(queue)?;
        let (count, charge) = removed.delete(&self.shared);
        self.release(charge);
        Ok(count)
    }

    /// Moves every ready message of the dead-letter queue `dead` to the tail
    /// of the queue it serves, attempts reset. Returns how many moved.
    ///
    /// Each counts in the dead-letter queue's `acknowledged` and `redriven`
    /// and in the target's `published`, so that every queue's counters keep
    /// their identity.
    pub(crate) fn redrive(&self, dead: &str) -> Result<u64, Error> {
        self.check_open()?;
        let name = QueueName::new(dead)?;
        if !name.is_dead() {
            return Err(Error::NotDeadLetterQueue);
        }
        let source = self.registry.get(dead).ok_or(Error::QueueNotFound)?;
        let target = QueueName::new(name.base())?;
        let now = self.clock.now();
        let mut moved = 0;
        let taken = source.take_ready_for_redrive();
        // Without the registry guard: the move may create the target.
        drop(source);
        for mut message in taken {
            message.attempts = 0;
            message.dead_lettered = false;
            self.journal_moved(&target, &message);
            // Exempt from the cap and a valid name: this cannot fail.
            let _ = self.accept_into(target.as_str(), message, Duration::ZERO, now, true);
            moved += 1;
        }
        Ok(moved)
    }
}
