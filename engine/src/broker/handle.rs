//! [`QueueHandle`]: the one grammar of the engine's API. Every operation on
//! a queue is `broker.queue(name).verb(..)` (the part-1 `default` queue is
//! [`Broker::default_queue`]), and each answers with a named outcome
//! ([`Published`], [`PublishedBatch`], [`Settled`], [`Deleted`],
//! [`Redriven`]) rather than a bare number, range or flag.
//!
//! A handle is the broker and a borrowed name, nothing more: it holds no
//! guard and no reference count, so making one costs nothing. The queue is
//! looked up by name in each call, under the registry's read guard, exactly
//! as before the handle existed (see the crate's "Which paths take which
//! lock"); a handle therefore stays valid across a delete and re-creation
//! of its queue, as a name would.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::{Broker, Delivery, NewMessage, QueueUpdate};
use crate::clock::Clock;
use crate::error::Error;
use crate::message::QueueName;
use crate::stats::{QueueInfo, QueueStats};

/// What a publish did: the message id it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Published {
    /// Fixed at publish, the same on every delivery of the message.
    pub message_id: u64,
}

/// What a batch publish did: its message ids, one per entry in entry
/// order (empty for an empty batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedBatch {
    pub message_ids: Range<u64>,
}

impl PublishedBatch {
    /// How many messages the batch published.
    pub fn len(&self) -> usize {
        (self.message_ids.end - self.message_ids.start) as usize
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.message_ids.is_empty()
    }
}

/// The outcome of one id of a batch acknowledge, requeue or touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settled {
    /// Acknowledged, requeued or touched.
    Ok,
    /// Unknown, already settled, past its deadline or of another queue:
    /// where the single call fails with [`Error::InvalidId`].
    Invalid,
}

impl Settled {
    /// `Ok` when `done`, else `Invalid`.
    pub fn from_ok(done: bool) -> Self {
        if done {
            Settled::Ok
        } else {
            Settled::Invalid
        }
    }

    /// Whether the id was settled.
    pub fn is_ok(self) -> bool {
        self == Settled::Ok
    }
}

/// What a delete did: how many messages (ready, leased, delayed) went with
/// the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub messages: u64,
}

/// What a redrive did: how many messages moved back to the served queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redriven {
    pub moved: u64,
}

/// One queue of a [`Broker`], by name: see the module doc. `Copy`, and as
/// cheap as the reference and the name it holds.
pub struct QueueHandle<'a, C: Clock> {
    broker: &'a Broker<C>,
    name: &'a str,
}

impl<C: Clock> Clone for QueueHandle<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C: Clock> Copy for QueueHandle<'_, C> {}

impl<C: Clock> std::fmt::Debug for QueueHandle<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("QueueHandle").field(&self.name).finish()
    }
}

impl<C: Clock> Broker<C> {
    /// The queue `name`. Nothing is looked up or checked here: each call on
    /// the handle does that (an invalid name fails there with
    /// [`Error::InvalidQueueName`]).
    #[inline]
    pub fn queue<'a>(&'a self, name: &'a str) -> QueueHandle<'a, C> {
        QueueHandle { broker: self, name }
    }

    /// The part-1 `default` queue: `self.queue("default")`.
    #[inline]
    pub fn default_queue(&self) -> QueueHandle<'_, C> {
        self.queue(QueueName::DEFAULT)
    }
}

impl<'a, C: Clock> QueueHandle<'a, C> {
    /// The name this handle stands for.
    pub fn name(self) -> &'a str {
        self.name
    }

    // ----- publishing ------------------------------------------------------

    /// Appends a message at the tail (the queue is created if it does not
    /// exist). Fails with [`Error::QueueFull`] if the byte budget is spent.
    #[inline]
    pub fn publish(self, body: Bytes) -> Result<Published, Error> {
        self.publish_after(body, Duration::ZERO)
    }

    /// As [`QueueHandle::publish`], but holds the message for `delay` before
    /// it joins the tail (zero: at once).
    #[inline]
    pub fn publish_after(self, body: Bytes, delay: Duration) -> Result<Published, Error> {
        self.broker
            .publish_to(self.name, body, delay)
            .map(|message_id| Published { message_id })
    }

    /// Publishes a batch, all or nothing: the whole batch is charged to the
    /// byte budget first ([`Error::QueueFull`] if it does not fit, and
    /// nothing is published). Entries without a delay join the tail in
    /// order (concurrent publishes may land between them, SPEC "Batches");
    /// delayed entries are held as single delayed publishes would be.
    ///
    /// The batch costs one reservation, one id range, one clock read and
    /// one wake-up pass, and a lock-free push per message.
    #[inline]
    pub fn publish_batch(self, messages: Vec<NewMessage>) -> Result<PublishedBatch, Error> {
        self.broker
            .publish_batch(self.name, messages)
            .map(|message_ids| PublishedBatch { message_ids })
    }

    // ----- fetching --------------------------------------------------------

    /// Leases the head, if there is one, without waiting. A queue that does
    /// not exist is empty.
    #[inline]
    pub fn try_fetch(self) -> Result<Option<Delivery>, Error> {
        self.broker.try_fetch_from(self.name)
    }

    /// Leases the head, waiting for a message until `timeout` completes. A
    /// queue that does not exist is waited on as an empty one: its creation
    /// wakes the fetch.
    ///
    /// Runtime-agnostic: pass any timer future (`tokio::time::sleep(d)`,
    /// `std::future::pending()` to wait forever). Fails with
    /// [`Error::Timeout`] if `timeout` completes first and
    /// [`Error::Closed`] if the broker closes meanwhile.
    ///
    /// Fair: waiting fetches on a queue are served in the order they began
    /// waiting, and one that was woken but lost the message to a racing
    /// fetch keeps its place.
    ///
    /// Cancellation safe: dropping the returned future at any point leases
    /// nothing, and if this fetch had already been woken for a message it
    /// passes the wake-up on to the next waiter.
    pub async fn fetch<T: Future<Output = ()>>(self, timeout: T) -> Result<Delivery, Error> {
        self.broker.fetch_from(self.name, timeout).await
    }

    /// Leases up to `max` messages from the head, in queue order, without
    /// waiting, stopping before their bodies pass `max_bytes` in total (the
    /// first always fits). Empty: the queue is empty or does not exist.
    ///
    /// The batch costs a lock-free pop per message, one clock read, one
    /// range of delivery ids, one deadline and one lock per timer shard its
    /// ids reach.
    #[inline]
    pub fn try_fetch_batch(self, max: usize, max_bytes: usize) -> Result<Vec<Delivery>, Error> {
        let mut out = Vec::new();
        self.broker
            .try_fetch_batch_from(self.name, max, max_bytes, &mut out)?;
        Ok(out)
    }

    /// As [`QueueHandle::fetch`] (fair, cancellation safe, the same errors),
    /// but answers with 1 to `max` deliveries as soon as at least one
    /// message is ready: it never lingers for more. See
    /// [`QueueHandle::try_fetch_batch`] for `max_bytes`.
    pub async fn fetch_batch<T: Future<Output = ()>>(
        self,
        max: usize,
        max_bytes: usize,
        timeout: T,
    ) -> Result<Vec<Delivery>, Error> {
        self.broker
            .fetch_batch_from(self.name, max, max_bytes, timeout)
            .await
    }

    // ----- settling --------------------------------------------------------

    /// Settles delivery `id` for good: its message leaves the broker.
    ///
    /// Fails with [`Error::InvalidId`] if the id is unknown, already
    /// settled, past its deadline (even if no sweep has run yet), or not of
    /// this queue (a queue that does not exist has no valid id).
    #[inline]
    pub fn acknowledge(self, id: u64) -> Result<(), Error> {
        self.broker.acknowledge_in(self.name, id)
    }

    /// Settles delivery `id` by putting its message back at the tail at
    /// once, to be delivered again under a new id; or, if it was the
    /// message's `max_deliveries`-th delivery, at the tail of `<queue>.dead`.
    /// Fails exactly when [`QueueHandle::acknowledge`] would.
    #[inline]
    pub fn requeue(self, id: u64) -> Result<(), Error> {
        self.requeue_after(id, Duration::ZERO)
    }

    /// As [`QueueHandle::requeue`], but the message is held for `delay`
    /// before it joins the tail.
    #[inline]
    pub fn requeue_after(self, id: u64, delay: Duration) -> Result<(), Error> {
        self.broker.requeue_in(self.name, id, delay)
    }

    /// Extends the lease of delivery `id` to now plus `ttl` (the queue's TTL
    /// if `None`). The id stays the same and valid. Fails with
    /// [`Error::InvalidId`] exactly when an acknowledge would, and with
    /// [`Error::ZeroTtl`] for a zero `ttl`.
    #[inline]
    pub fn touch(self, id: u64, ttl: Option<Duration>) -> Result<(), Error> {
        self.broker.touch_in(self.name, id, ttl)
    }

    /// Acknowledges each of `ids`: one outcome per id, in order, `Ok` where
    /// the single [`QueueHandle::acknowledge`] would have succeeded. An id
    /// repeated in the batch succeeds at most once. A queue that does not
    /// exist answers all `Invalid`.
    #[inline]
    pub fn acknowledge_batch(self, ids: &[u64]) -> Result<Vec<Settled>, Error> {
        self.broker.acknowledge_batch_in(self.name, ids)
    }

    /// Requeues each of `ids`, now or after `delay`: one outcome per id, as
    /// [`QueueHandle::acknowledge_batch`]. Those requeued at once join the
    /// tail together, in the order of `ids`.
    #[inline]
    pub fn requeue_batch(self, ids: &[u64], delay: Duration) -> Result<Vec<Settled>, Error> {
        self.broker.requeue_batch_in(self.name, ids, delay)
    }

    /// Touches each of `ids` (see [`QueueHandle::touch`]): one outcome per
    /// id; an id repeated in the batch is touched each time.
    #[inline]
    pub fn touch_batch(self, ids: &[u64], ttl: Option<Duration>) -> Result<Vec<Settled>, Error> {
        self.broker.touch_batch_in(self.name, ids, ttl)
    }

    /// Gives each of `ids` back as never delivered (its consumer never got
    /// the answer): ready again at the tail, the attempt uncounted, the id
    /// invalid from now on. One outcome per id, as
    /// [`QueueHandle::acknowledge_batch`]; an expired or settled lease is
    /// `Invalid` and left alone.
    #[inline]
    pub fn undeliver_batch(self, ids: &[u64]) -> Result<Vec<Settled>, Error> {
        self.broker.undeliver_batch_in(self.name, ids)
    }

    // ----- administration and stats ----------------------------------------

    /// Creates the queue or changes its settings. Validates everything
    /// first: a refused update changes nothing.
    pub fn put(self, update: QueueUpdate) -> Result<QueueInfo, Error> {
        self.broker.put_queue(self.name, update)
    }

    /// The queue's settings and contents; [`Error::QueueNotFound`] if it
    /// does not exist.
    pub fn info(self) -> Result<QueueInfo, Error> {
        self.broker.queue_info(self.name)
    }

    /// The queue's counters; [`Error::QueueNotFound`] if it does not exist.
    pub fn stats(self) -> Result<QueueStats, Error> {
        self.broker.queue_stats(self.name)
    }

    /// Drops the queue with every message it holds (ready, leased,
    /// delayed). Its lease ids become invalid; its `.dead` queue stays.
    /// Fetches waiting on it keep waiting, for the queue a later publish
    /// creates.
    pub fn delete(self) -> Result<Deleted, Error> {
        self.broker
            .delete_queue(self.name)
            .map(|messages| Deleted { messages })
    }

    /// For a dead-letter queue (`<queue>.dead`): moves every ready message
    /// to the tail of the queue it serves, attempts reset.
    ///
    /// Each counts in the dead-letter queue's `acknowledged` and `redriven`
    /// and in the target's `published`, so that every queue's counters keep
    /// their identity.
    pub fn redrive(self) -> Result<Redriven, Error> {
        self.broker
            .redrive(self.name)
            .map(|moved| Redriven { moved })
    }
}
