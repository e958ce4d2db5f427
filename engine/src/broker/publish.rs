//! Publishing, single and batch: the byte budget is charged once per
//! request ([`Broker::reserve`], shared with the two-phase publish in
//! `durable`), ids are taken as one range, entries are split into ready and
//! delayed once ([`split_entries`]), and the messages are handed to their
//! queue, found or created, under the registry's read guard.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::{Broker, NewMessage, ID_HEADROOM};
use crate::clock::{Clock, Timestamp};
use crate::error::Error;
use crate::message::{validate, Message, QueueName, MAX_ID};
use crate::queue::Queue;
use crate::sync::Ordering;

impl<C: Clock> Broker<C> {
    /// Appends a message at the tail of `queue` (created if it does not
    /// exist), or holds it for `delay` first. Returns its message id.
    pub(crate) fn publish_to(
        &self,
        queue: &str,
        body: Bytes,
        delay: Duration,
    ) -> Result<u64, Error> {
        self.check_open()?;
        // The name is checked where the queue is looked up (a miss), or
        // below if the budget refuses first: a bad name wins over a full
        // budget either way.
        let charge = crate::message::charge(body.len());
        self.reserve(queue, charge)?;
        let result = self.publish_reserved(queue, body, delay);
        if result.is_err() {
            self.unreserve(charge);
        }
        result
    }

    /// Charges `charge` to the byte budget, or refuses with
    /// [`Error::QueueFull`] (or [`Error::InvalidQueueName`] for a bad
    /// `queue`: a bad name wins over a full budget) and charges nothing.
    ///
    /// Reserve first, undo on overflow: no CAS loop on the hot path. Two
    /// publishers racing at the limit may both be refused where one would
    /// have fitted; neither can push the total over the limit.
    #[inline]
    pub(super) fn reserve(&self, queue: &str, charge: u64) -> Result<(), Error> {
        let before = self.held_bytes.fetch_add(charge, Ordering::Relaxed);
        if before.saturating_add(charge) > self.config.max_queue_bytes {
            self.unreserve(charge);
            validate(queue)?;
            return Err(Error::QueueFull);
        }
        Ok(())
    }

    /// Takes back a [`Broker::reserve`] whose publish failed: nothing was
    /// held, so unlike [`Broker::release`] this can never mean "drained".
    #[inline]
    pub(super) fn unreserve(&self, charge: u64) {
        self.held_bytes.fetch_sub(charge, Ordering::Relaxed);
    }

    pub(super) fn publish_reserved(
        &self,
        queue: &str,
        body: Bytes,
        delay: Duration,
    ) -> Result<u64, Error> {
        let message_id = self.next_message_id.fetch_add(1, Ordering::Relaxed);
        if message_id >= MAX_ID - ID_HEADROOM {
            return Err(Error::IdsExhausted);
        }
        let message = Message::new(message_id, body);
        // Read for the due time of a delay, or for when the message became
        // ready (`oldest_ready_age`).
        let now = self.clock.now();
        self.accept_into(queue, message, delay, now, false)?;
        Ok(message_id)
    }

    /// Publishes a batch to `queue` (created if it does not exist), all or
    /// nothing: the whole batch is charged to the byte budget first
    /// ([`Error::QueueFull`] if it does not fit, and nothing is published).
    /// Entries without a delay join the tail in order (concurrent
    /// publishes may land between them, SPEC "Batches"); delayed entries are
    /// held as single delayed publishes would be. Returns the message ids,
    /// one per entry in entry order; an empty batch publishes nothing.
    ///
    /// The batch costs one reservation, one id range, one clock read and
    /// one wake-up pass, and a lock-free push per message.
    pub(crate) fn publish_batch(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Range<u64>, Error> {
        self.check_open()?;
        if messages.is_empty() {
            validate(queue)?;
            return Ok(0..0);
        }
        let charge = batch_charge(&messages);
        self.reserve(queue, charge)?;
        let result = self.publish_batch_reserved(queue, messages);
        if result.is_err() {
            self.unreserve(charge);
        }
        result
    }

    pub(super) fn publish_batch_reserved(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Range<u64>, Error> {
        let n = messages.len() as u64;
        let first = self.next_message_id.fetch_add(n, Ordering::Relaxed);
        if first.saturating_add(n) >= MAX_ID - ID_HEADROOM {
            return Err(Error::IdsExhausted);
        }
        let now = self.clock.now();
        let (ready, delayed) = split_entries(first, messages);
        self.hand_over(queue, false, |found| {
            found.accept_batch(&self.shared, ready, delayed, now)
        })?;
        Ok(first..first + n)
    }

    /// Hands `message` (already charged to the byte budget) to the queue
    /// named `queue`, created as needed, at its tail now or after `delay`.
    /// The registry's read guard, held while the queue takes the message,
    /// keeps a delete out: the message never lands in a dropped queue.
    /// `exempt` creations skip `max_queues` (dead-letter
    /// moves and redrives, which a client did not ask for), and then this
    /// cannot fail.
    pub(super) fn accept_into(
        &self,
        queue: &str,
        message: Message,
        delay: Duration,
        now: Timestamp,
        exempt: bool,
    ) -> Result<(), Error> {
        self.hand_over(queue, exempt, |found| {
            found.accept(&self.shared, message, delay, now)
        })
    }

    /// The find-or-create under [`Broker::accept_into`] and
    /// [`Broker::publish_batch`]: `hand` gives the messages to the queue
    /// found (or created) by name, under the registry's read guard.
    pub(super) fn hand_over(
        &self,
        queue: &str,
        exempt: bool,
        hand: impl FnOnce(&Queue),
    ) -> Result<(), Error> {
        let found = match self.registry.get(queue) {
            Some(found) => found,
            None => {
                // The name is allocated only if the queue has to be created.
                let name = QueueName::new(queue)?;
                self.registry
                    .get_or_create(&name, || self.new_queue_settings(&name), exempt)?
            }
        };
        hand(&found);
        Ok(())
    }
}

/// What a batch is charged against the byte budget: each body plus
/// [`MESSAGE_OVERHEAD`](crate::MESSAGE_OVERHEAD).
#[inline]
pub(super) fn batch_charge(messages: &[NewMessage]) -> u64 {
    messages.iter().fold(0u64, |sum, m| {
        sum.saturating_add(crate::message::charge(m.body.len()))
    })
}

/// Numbers a batch's entries from `first` in entry order and splits them
/// into those that join the tail now (in order) and those held for their
/// delay.
#[inline]
pub(super) fn split_entries(
    first: u64,
    messages: Vec<NewMessage>,
) -> (Vec<Message>, Vec<(Duration, Message)>) {
    let delayed_count = messages.iter().filter(|m| !m.delay.is_zero()).count();
    let mut ready = Vec::with_capacity(messages.len() - delayed_count);
    let mut delayed = Vec::with_capacity(delayed_count);
    for (id, entry) in (first..).zip(messages) {
        let message = Message::new(id, entry.body);
        if entry.delay.is_zero() {
            ready.push(message);
        } else {
            delayed.push((entry.delay, message));
        }
    }
    (ready, delayed)
}
