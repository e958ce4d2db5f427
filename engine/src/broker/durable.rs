//! The durable side of [`Broker`], for a caller that keeps a write-ahead
//! log: attaching a [`Journal`], publishing in two phases so that a publish
//! is logged before it becomes visible, and rebuilding a broker from a log
//! at start-up (queues, messages with their ids, attempts, dead-letter
//! origins and delays, and the id high-water marks).
//!
//! # Where a published message enters the engine
//!
//! [`Broker::prepare_publish`] checks, charges the byte budget and numbers
//! the messages, and nothing is visible yet. The caller appends the publish
//! record, waits for it to be durable if it promises that (`--fsync
//! always`), and only then calls [`Broker::commit_publish`], which hands
//! the messages to their queue. So no fetch can see a message whose record
//! is not in the log before every record about its later life (delivery,
//! acknowledgement, requeue): replay never meets a settlement before its
//! publish. A failed log means [`Broker::abort_publish`]: the charge is
//! given back and nothing was ever visible.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::publish::{batch_charge, split_entries};
use super::{delivery, Broker, Delivery, NewMessage, QueueUpdate};
use crate::clock::Clock;
use crate::error::Error;
use crate::journal::Journal;
use crate::message::{charge, validate, Message, QueueName, MAX_ID};
use crate::queue::{Leased, Queue};
use crate::sync::Ordering;

/// A publish that is checked, charged and numbered, but not yet visible.
/// Hand it to [`Broker::commit_publish`] or [`Broker::abort_publish`];
/// dropping it keeps its charge against the byte budget.
#[derive(Debug)]
#[must_use = "commit or abort a prepared publish"]
pub struct Prepared {
    queue: String,
    first: u64,
    entries: Vec<NewMessage>,
    charge: u64,
}

impl Prepared {
    /// The message ids, in entry order.
    pub fn ids(&self) -> Range<u64> {
        self.first..self.first + self.entries.len() as u64
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn entries(&self) -> &[NewMessage] {
        &self.entries
    }
}

/// One message of a [`Broker::restore_ready`] run, as the log had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredMessage {
    /// Its message id (kept: replay and clients know it by this).
    pub id: u64,
    pub body: Bytes,
    /// The deliveries it has had from this queue.
    pub attempts: u32,
    /// Whether it reached this (dead-letter) queue by exhausting its
    /// deliveries.
    pub dead_lettered: bool,
}

impl<C: Clock> Broker<C> {
    /// Reports every change to `journal` from now on (see `journal.rs`).
    /// Set it before the broker is shared.
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.shared.journal = Some(journal);
        self
    }

    /// First phase of a publish (single or batch, all or nothing): fails as
    /// `publish_batch` would, else charges the byte budget and reserves the
    /// message ids. Nothing is visible until [`Broker::commit_publish`].
    pub fn prepare_publish(
        &self,
        queue: &str,
        entries: Vec<NewMessage>,
    ) -> Result<Prepared, Error> {
        self.check_open()?;
        validate(queue)?;
        let total = batch_charge(&entries);
        self.reserve(queue, total)?;
        let n = entries.len() as u64;
        let first = self.next_message_id.fetch_add(n, Ordering::Relaxed);
        if first.saturating_add(n) >= MAX_ID - super::ID_HEADROOM {
            self.unreserve(total);
            return Err(Error::IdsExhausted);
        }
        Ok(Prepared {
            queue: queue.to_owned(),
            first,
            entries,
            charge: total,
        })
    }

    /// Second phase: hands the prepared messages to their queue (created as
    /// needed), ready ones at the tail in order. Returns
    /// their ids.
    pub fn commit_publish(&self, prepared: Prepared) -> Result<Range<u64>, Error> {
        let ids = prepared.ids();
        let now = self.clock.now();
        let Prepared {
            queue,
            first,
            entries,
            charge,
        } = prepared;
        let result = if entries.len() == 1 {
            let entry = entries
                .into_iter()
                .next()
                .map(|e| (e.delay, Message::new(first, e.body)));
            match entry {
                Some((delay, message)) => self.accept_into(&queue, message, delay, now, false),
                None => Ok(()),
            }
        } else {
            let (ready, delayed) = split_entries(first, entries);
            self.hand_over(&queue, false, |found| {
                found.accept_batch(&self.shared, ready, delayed, now)
            })
        };
        match result {
            Ok(()) => Ok(ids),
            Err(error) => {
                self.release(charge);
                Err(error)
            }
        }
    }

    /// Gives a prepared publish's charge back: it never happened.
    pub fn abort_publish(&self, prepared: Prepared) {
        self.release(prepared.charge);
    }

    /// Restore: creates `queue` (outside `max_queues`) with these
    /// settings (`None`: the default for new queues; a zero TTL, and a
    /// dead-letter queue's `max_deliveries`, are ignored).
    pub fn restore_queue(&self, queue: &str, settings: QueueUpdate) -> Result<(), Error> {
        let name = QueueName::new(queue)?;
        let found = self
            .registry
            .get_or_create(&name, || self.new_queue_settings(&name), true)?;
        if let Some(ttl) = settings.ttl.filter(|ttl| !ttl.is_zero()) {
            found.set_ttl(ttl);
        }
        if let Some(max) = settings.max_deliveries.filter(|_| !name.is_dead()) {
            found.set_max_deliveries(max);
        }
        Ok(())
    }

    /// Restore: message `id` at the tail of `queue` (created as needed,
    /// outside `max_queues`), now or after `delay`, with the attempts it
    /// had. Charged to the byte budget without its limit: what the broker
    /// held before the restart it holds after.
    pub fn restore_message(
        &self,
        queue: &str,
        id: u64,
        body: Bytes,
        attempts: u32,
        dead_lettered: bool,
        delay: Duration,
    ) -> Result<(), Error> {
        validate(queue)?;
        self.held_bytes
            .fetch_add(charge(body.len()), Ordering::Relaxed);
        let mut message = Message::new(id, body);
        message.attempts = attempts;
        message.dead_lettered = dead_lettered;
        self.next_message_id
            .fetch_max(id.saturating_add(1), Ordering::Relaxed);
        self.accept_into(queue, message, delay, self.clock.now(), true)
    }

    /// Restore: `messages` join the tail of `queue` in order, as one run: what [`Broker::restore_message`]
    /// does for each, at a fraction of the cost (recovery of a million
    /// messages is one call per run of one queue).
    pub fn restore_ready(&self, queue: &str, messages: Vec<RestoredMessage>) -> Result<(), Error> {
        validate(queue)?;
        let mut total = 0u64;
        let mut max_id = 0;
        let ready: Vec<Message> = messages
            .into_iter()
            .map(|restored| {
                total = total.saturating_add(charge(restored.body.len()));
                max_id = max_id.max(restored.id);
                let mut message = Message::new(restored.id, restored.body);
                message.attempts = restored.attempts;
                message.dead_lettered = restored.dead_lettered;
                message
            })
            .collect();
        self.held_bytes.fetch_add(total, Ordering::Relaxed);
        self.next_message_id
            .fetch_max(max_id.saturating_add(1), Ordering::Relaxed);
        let now = self.clock.now();
        self.hand_over(queue, true, |found| {
            found.accept_batch(&self.shared, ready, Vec::new(), now)
        })
    }

    /// Restore: hands out no delivery id below `next_delivery` and no
    /// message id below `next_message` from now on.
    pub fn restore_ids(&self, next_delivery: u64, next_message: u64) {
        self.shared
            .next_id
            .fetch_max(next_delivery, Ordering::Relaxed);
        self.next_message_id
            .fetch_max(next_message, Ordering::Relaxed);
    }

    /// The next delivery id and message id to be handed out.
    pub fn next_ids(&self) -> (u64, u64) {
        (
            self.shared.next_id.load(Ordering::Relaxed),
            self.next_message_id.load(Ordering::Relaxed),
        )
    }

    /// A delivery just leased from `queue`, reported to the journal.
    pub(super) fn delivered(&self, queue: &Queue, leased: Leased) -> Delivery {
        if let Some(journal) = &self.shared.journal {
            journal.delivered(leased.message.id, leased.message.attempts);
        }
        delivery(queue, leased)
    }

    /// A message about to join the tail of `to` by a dead-letter move or a
    /// redrive, reported before it is visible there.
    pub(super) fn journal_moved(&self, to: &QueueName, message: &Message) {
        if let Some(journal) = &self.shared.journal {
            journal.ready(to, message.id, message.attempts, message.dead_lettered);
        }
    }
}
