//! [`BenchBroker`]: the part of the broker API that the benches drive,
//! implemented by the engine and by the baseline alike.
//!
//! Each benchmark scenario is written once, generic over this trait, and
//! instantiated for both implementations; that is what keeps the two sides
//! of every comparison running exactly the same workload. The trait only
//! forwards: it must never add work (or a lock, or an allocation) that
//! either implementation would not do on its own.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use ubroker_engine::{
    Broker, Clock, Config, Delivery, Error, NewMessage, QueueInfo, QueueName, QueueStats,
    QueueUpdate, Settled, Stats, Sweep,
};

use crate::baseline::MutexBroker;

/// A broker as the benches see it: the non-waiting half of
/// [`ubroker_engine::Broker`]'s API over named queues, with the same
/// semantics.
pub trait BenchBroker: Send + Sync + 'static {
    /// The clock the broker reads deadlines from.
    type Clock: Clock;

    /// The implementation's name in benchmark ids and reports.
    const NAME: &'static str;

    /// A broker with these settings, reading time from `clock`.
    fn with_clock(config: Config, clock: Self::Clock) -> Self
    where
        Self: Sized;

    /// The broker's clock (benches move a `ManualClock` through it).
    fn clock(&self) -> &Self::Clock;

    /// Appends a message at the tail of `queue` (created if needed), or
    /// holds it for `delay`; returns its message id.
    fn publish_to(&self, queue: &str, body: Bytes, delay: Duration) -> Result<u64, Error>;

    /// Leases the head of `queue`, if any, under a fresh id.
    fn try_fetch_from(&self, queue: &str) -> Result<Option<Delivery>, Error>;

    /// Settles `id` for good; fails once the lease's deadline has passed.
    fn acknowledge_in(&self, queue: &str, id: u64) -> Result<(), Error>;

    /// Settles `id` by putting its message back at the tail (after
    /// `delay`), or in `<queue>.dead` on its last allowed delivery.
    fn requeue_in(&self, queue: &str, id: u64, delay: Duration) -> Result<(), Error>;

    /// Extends `id`'s lease to now plus `ttl` (the queue's TTL if `None`).
    fn touch_in(&self, queue: &str, id: u64, ttl: Option<Duration>) -> Result<(), Error>;

    /// Publishes every entry or none; returns the message ids.
    fn publish_batch(&self, queue: &str, messages: Vec<NewMessage>) -> Result<Range<u64>, Error>;

    /// Leases up to `max` messages (bodies within `max_bytes`, the first
    /// always).
    fn try_fetch_batch_from(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Delivery>, Error>;

    /// Acknowledges each id; one result per id.
    fn acknowledge_batch_in(&self, queue: &str, ids: &[u64]) -> Result<Vec<Settled>, Error>;

    /// Requeues each id; one result per id.
    fn requeue_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        delay: Duration,
    ) -> Result<Vec<Settled>, Error>;

    /// Touches each id; one result per id.
    fn touch_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        ttl: Option<Duration>,
    ) -> Result<Vec<Settled>, Error>;

    /// Creates `queue` or changes its settings.
    fn put_queue(&self, queue: &str, update: QueueUpdate) -> Result<QueueInfo, Error>;

    /// Returns every lease past its deadline to the tail of its queue and
    /// releases every delayed message that came due.
    fn expire_due(&self) -> Sweep;

    /// A snapshot of sizes and counters.
    fn stats(&self) -> Stats;

    /// One queue's counters.
    fn queue_stats(&self, queue: &str) -> Result<QueueStats, Error>;

    /// [`BenchBroker::publish_to`] on `default`, at once.
    fn publish(&self, body: Bytes) -> Result<u64, Error> {
        self.publish_to(QueueName::DEFAULT, body, Duration::ZERO)
    }

    /// [`BenchBroker::try_fetch_from`] on `default`.
    fn try_fetch(&self) -> Result<Option<Delivery>, Error> {
        self.try_fetch_from(QueueName::DEFAULT)
    }

    /// [`BenchBroker::acknowledge_in`] on `default`.
    fn acknowledge(&self, id: u64) -> Result<(), Error> {
        self.acknowledge_in(QueueName::DEFAULT, id)
    }

    /// [`BenchBroker::requeue_in`] on `default`, at once.
    fn requeue(&self, id: u64) -> Result<(), Error> {
        self.requeue_in(QueueName::DEFAULT, id, Duration::ZERO)
    }
}

/// Implements [`BenchBroker`] for a broker type whose inherent methods
/// have the trait's names and signatures: the baseline's do, by design.
macro_rules! forward {
    ($ty:ident, $name:literal) => {
        impl<C: Clock> BenchBroker for $ty<C> {
            type Clock = C;
            const NAME: &'static str = $name;

            fn with_clock(config: Config, clock: C) -> Self {
                $ty::with_clock(config, clock)
            }

            fn clock(&self) -> &C {
                $ty::clock(self)
            }

            fn publish_to(&self, queue: &str, body: Bytes, delay: Duration) -> Result<u64, Error> {
                $ty::publish_to(self, queue, body, delay)
            }

            fn try_fetch_from(&self, queue: &str) -> Result<Option<Delivery>, Error> {
                $ty::try_fetch_from(self, queue)
            }

            fn acknowledge_in(&self, queue: &str, id: u64) -> Result<(), Error> {
                $ty::acknowledge_in(self, queue, id)
            }

            fn requeue_in(&self, queue: &str, id: u64, delay: Duration) -> Result<(), Error> {
                $ty::requeue_in(self, queue, id, delay)
            }

            fn touch_in(&self, queue: &str, id: u64, ttl: Option<Duration>) -> Result<(), Error> {
                $ty::touch_in(self, queue, id, ttl)
            }

            fn publish_batch(
                &self,
                queue: &str,
                messages: Vec<NewMessage>,
            ) -> Result<Range<u64>, Error> {
                $ty::publish_batch(self, queue, messages)
            }

            fn try_fetch_batch_from(
                &self,
                queue: &str,
                max: usize,
                max_bytes: usize,
            ) -> Result<Vec<Delivery>, Error> {
                $ty::try_fetch_batch_from(self, queue, max, max_bytes)
            }

            fn acknowledge_batch_in(
                &self,
                queue: &str,
                ids: &[u64],
            ) -> Result<Vec<Settled>, Error> {
                $ty::acknowledge_batch_in(self, queue, ids)
            }

            fn requeue_batch_in(
                &self,
                queue: &str,
                ids: &[u64],
                delay: Duration,
            ) -> Result<Vec<Settled>, Error> {
                $ty::requeue_batch_in(self, queue, ids, delay)
            }

            fn touch_batch_in(
                &self,
                queue: &str,
                ids: &[u64],
                ttl: Option<Duration>,
            ) -> Result<Vec<Settled>, Error> {
                $ty::touch_batch_in(self, queue, ids, ttl)
            }

            fn put_queue(&self, queue: &str, update: QueueUpdate) -> Result<QueueInfo, Error> {
                $ty::put_queue(self, queue, update)
            }

            fn expire_due(&self) -> Sweep {
                $ty::expire_due(self)
            }

            fn stats(&self) -> Stats {
                $ty::stats(self)
            }

            fn queue_stats(&self, queue: &str) -> Result<QueueStats, Error> {
                $ty::queue_stats(self, queue)
            }
        }
    };
}

forward!(MutexBroker, "mutex-baseline");

/// The engine through its queue handles: each method is one handle call,
/// and the named outcomes unwrap to the trait's plain values (a field
/// read, no work).
impl<C: Clock> BenchBroker for Broker<C> {
    type Clock = C;
    const NAME: &'static str = "ubroker";

    fn with_clock(config: Config, clock: C) -> Self {
        Broker::with_clock(config, clock)
    }

    fn clock(&self) -> &C {
        Broker::clock(self)
    }

    fn publish_to(&self, queue: &str, body: Bytes, delay: Duration) -> Result<u64, Error> {
        self.queue(queue)
            .publish_after(body, delay)
            .map(|published| published.message_id)
    }

    fn try_fetch_from(&self, queue: &str) -> Result<Option<Delivery>, Error> {
        self.queue(queue).try_fetch()
    }

    fn acknowledge_in(&self, queue: &str, id: u64) -> Result<(), Error> {
        self.queue(queue).acknowledge(id)
    }

    fn requeue_in(&self, queue: &str, id: u64, delay: Duration) -> Result<(), Error> {
        self.queue(queue).requeue_after(id, delay)
    }

    fn touch_in(&self, queue: &str, id: u64, ttl: Option<Duration>) -> Result<(), Error> {
        self.queue(queue).touch(id, ttl)
    }

    fn publish_batch(&self, queue: &str, messages: Vec<NewMessage>) -> Result<Range<u64>, Error> {
        self.queue(queue)
            .publish_batch(messages)
            .map(|published| published.message_ids)
    }

    fn try_fetch_batch_from(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Delivery>, Error> {
        self.queue(queue).try_fetch_batch(max, max_bytes)
    }

    fn acknowledge_batch_in(&self, queue: &str, ids: &[u64]) -> Result<Vec<Settled>, Error> {
        self.queue(queue).acknowledge_batch(ids)
    }

    fn requeue_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        delay: Duration,
    ) -> Result<Vec<Settled>, Error> {
        self.queue(queue).requeue_batch(ids, delay)
    }

    fn touch_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        ttl: Option<Duration>,
    ) -> Result<Vec<Settled>, Error> {
        self.queue(queue).touch_batch(ids, ttl)
    }

    fn put_queue(&self, queue: &str, update: QueueUpdate) -> Result<QueueInfo, Error> {
        self.queue(queue).put(update)
    }

    fn expire_due(&self) -> Sweep {
        Broker::expire_due(self)
    }

    fn stats(&self) -> Stats {
        Broker::stats(self)
    }

    fn queue_stats(&self, queue: &str) -> Result<QueueStats, Error> {
        self.queue(queue).stats()
    }
}
