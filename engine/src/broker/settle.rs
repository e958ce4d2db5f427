//! Settlement: acknowledge, requeue and touch, single and batch, by
//! delivery id; and the move of a message whose last allowed delivery ended
//! to its queue's dead-letter queue. Whether a delivery ends in the
//! dead-letter queue is decided in one place, `Queue::end_delivery`.

use std::time::Duration;

use super::{Broker, Settled};
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::message::{Message, QueueName};
use crate::queue::Ended;

impl<C: Clock> Broker<C> {
    /// Settles delivery `id` of `queue` for good: the message leaves the
    /// broker.
    ///
    /// Fails with [`Error::InvalidId`] if the id is unknown, already settled,
    /// past its deadline (even if no sweep has run yet), or not of `queue`.
    pub(crate) fn acknowledge_in(&self, queue: &str, id: u64) -> Result<(), Error> {
        let found = self.settling(queue)?.ok_or(Error::InvalidId)?;
        let charge = found.acknowledge(&self.shared, id, self.clock.now())?;
        self.release(charge);
        Ok(())
    }

    /// Settles delivery `id` of `queue` by putting its message back at the
    /// tail, now or after `delay`, to be delivered again under a new id; or,
    /// if it was the message's `max_deliveries`-th delivery, at the tail of
    /// `<queue>.dead`.
    pub(crate) fn requeue_in(&self, queue: &str, id: u64, delay: Duration) -> Result<(), Error> {
        let found = self.settling(queue)?.ok_or(Error::InvalidId)?;
        let now = self.clock.now();
        let ended = found.requeue(&self.shared, id, delay, now)?;
        if let Ended::DeadLetter(message) = ended {
            // Without the registry guard: the move may create `.dead`.
            let source = found.name.clone();
            drop(found);
            self.move_to_dead_letters(&source, message, now);
        }
        Ok(())
    }

    /// Extends the lease of delivery `id` of `queue` to now plus `ttl` (the
    /// queue's TTL if `None`). The id stays the same and valid. Fails with
    /// [`Error::InvalidId`] exactly when an acknowledge would.
    pub(crate) fn touch_in(
        &self,
        queue: &str,
        id: u64,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        if ttl == Some(Duration::ZERO) {
            return Err(Error::ZeroTtl);
        }
        let found = self.settling(queue)?.ok_or(Error::InvalidId)?;
        found.touch(&self.shared, id, ttl, self.clock.now())
    }

    /// Acknowledges each of `ids` in `queue`: one result per id, in order,
    /// `Ok` where the single [`crate::QueueHandle::acknowledge`] would have
    /// succeeded. An id repeated in the batch succeeds at most once. A queue
    /// that does not exist answers all `Invalid`.
    pub(crate) fn acknowledge_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
    ) -> Result<Vec<Settled>, Error> {
        let mut results = Vec::with_capacity(ids.len());
        match self.settling(queue)? {
            Some(found) => {
                let charge =
                    found.acknowledge_all(&self.shared, ids, self.clock.now(), &mut results);
                self.release(charge);
            }
            None => results.resize(ids.len(), Settled::Invalid),
        }
        Ok(results)
    }

    /// Requeues each of `ids` in `queue`, now or after `delay`: one result
    /// per id, as [`crate::QueueHandle::acknowledge_batch`]. Those requeued at once
    /// join the tail together, in the order of `ids`.
    pub(crate) fn requeue_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        delay: Duration,
    ) -> Result<Vec<Settled>, Error> {
        let mut results = Vec::with_capacity(ids.len());
        match self.settling(queue)? {
            Some(found) => {
                let now = self.clock.now();
                let dead = found.requeue_all(&self.shared, ids, delay, now, &mut results);
                if !dead.is_empty() {
                    // Without the registry guard: the move may create `.dead`.
                    let source = found.name.clone();
                    drop(found);
                    for message in dead {
                        self.move_to_dead_letters(&source, message, now);
                    }
                }
            }
            None => results.resize(ids.len(), Settled::Invalid),
        }
        Ok(results)
    }

    /// Touches each of `ids` in `queue` (see [`crate::QueueHandle::touch`]): one
    /// result per id; an id repeated in the batch is touched each time.
    pub(crate) fn touch_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        ttl: Option<Duration>,
    ) -> Result<Vec<Settled>, Error> {
        if ttl == Some(Duration::ZERO) {
            return Err(Error::ZeroTtl);
        }
        let mut results = Vec::with_capacity(ids.len());
        match self.settling(queue)? {
            Some(found) => {
                let now = self.clock.now();
                results.extend(
                    ids.iter().map(|&id| {
                        Settled::from_ok(found.touch(&self.shared, id, ttl, now).is_ok())
                    }),
                );
            }
            None => results.resize(ids.len(), Settled::Invalid),
        }
        Ok(results)
    }

    /// Moves a message whose last allowed delivery ended to the tail of
    /// `source`'s dead-letter queue (created as needed, outside
    /// `max_queues`). The byte budget is unchanged: the message is still
    /// held.
    ///
    /// The caller holds no [`QueueRef`](crate::registry::QueueRef): creating `.dead` takes the
    /// registry's write side.
    pub(super) fn move_to_dead_letters(
        &self,
        source: &QueueName,
        mut message: Message,
        now: Timestamp,
    ) {
        message.attempts = 0;
        message.dead_lettered = true;
        let Some(dead) = source.dead_letter_queue() else {
            // A dead-letter queue never has max_deliveries > 0 (put_queue
            // refuses it), so this cannot happen; were it to, keeping the
            // message beats dropping it.
            message.dead_lettered = false;
            let _ = self.accept_into(source.as_str(), message, Duration::ZERO, now, true);
            return;
        };
        self.journal_moved(&dead, &message);
        // Exempt from the cap and a valid name: this cannot fail.
        let _ = self.accept_into(dead.as_str(), message, Duration::ZERO, now, true);
    }
}
