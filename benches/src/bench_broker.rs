//! [`BenchBroker`]: the part of the broker API that the benches drive,
//! implemented by the engine and by the baseline alike.
//!
//! Each benchmark scenario is written once, generic over this trait, and
//! instantiated for both implementations; that is what keeps the two sides
//! of every comparison running exactly the same workload. The trait only
//! forwards: it must never add work (or a lock, or an allocation) that
//! either implementation would not do on its own.

use bytes::Bytes;
use ubroker_engine::{Broker, Clock, Config, Delivery, Error, Stats, Sweep};

use crate::baseline::MutexBroker;

/// A broker as the benches see it: the non-waiting half of
/// [`ubroker_engine::Broker`]'s API, with the same semantics.
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

    /// Appends a message at the tail of the queue.
    fn publish(&self, body: Bytes) -> Result<(), Error>;

    /// Leases the head of the queue, if any, under a fresh id.
    fn try_fetch(&self) -> Result<Option<Delivery>, Error>;

    /// Settles `id` for good; fails once the lease's deadline has passed.
    fn acknowledge(&self, id: u64) -> Result<(), Error>;

    /// Settles `id` by putting its message back at the tail.
    fn requeue(&self, id: u64) -> Result<(), Error>;

    /// Returns every lease past its deadline to the tail of the queue.
    fn expire_due(&self) -> Sweep;

    /// A snapshot of sizes and counters.
    fn stats(&self) -> Stats;
}

impl<C: Clock> BenchBroker for Broker<C> {
    type Clock = C;
    const NAME: &'static str = "ubroker";

    fn with_clock(config: Config, clock: C) -> Self {
        Broker::with_clock(config, clock)
    }

    fn clock(&self) -> &C {
        Broker::clock(self)
    }

    fn publish(&self, body: Bytes) -> Result<(), Error> {
        Broker::publish(self, body).map(drop)
    }

    fn try_fetch(&self) -> Result<Option<Delivery>, Error> {
        Broker::try_fetch(self)
    }

    fn acknowledge(&self, id: u64) -> Result<(), Error> {
        Broker::acknowledge(self, id)
    }

    fn requeue(&self, id: u64) -> Result<(), Error> {
        Broker::requeue(self, id)
    }

    fn expire_due(&self) -> Sweep {
        Broker::expire_due(self)
    }

    fn stats(&self) -> Stats {
        Broker::stats(self)
    }
}

impl<C: Clock> BenchBroker for MutexBroker<C> {
    type Clock = C;
    const NAME: &'static str = "mutex-baseline";

    fn with_clock(config: Config, clock: C) -> Self {
        MutexBroker::with_clock(config, clock)
    }

    fn clock(&self) -> &C {
        MutexBroker::clock(self)
    }

    fn publish(&self, body: Bytes) -> Result<(), Error> {
        MutexBroker::publish(self, body)
    }

    fn try_fetch(&self) -> Result<Option<Delivery>, Error> {
        MutexBroker::try_fetch(self)
    }

    fn acknowledge(&self, id: u64) -> Result<(), Error> {
        MutexBroker::acknowledge(self, id)
    }

    fn requeue(&self, id: u64) -> Result<(), Error> {
        MutexBroker::requeue(self, id)
    }

    fn expire_due(&self) -> Sweep {
        MutexBroker::expire_due(self)
    }

    fn stats(&self) -> Stats {
        MutexBroker::stats(self)
    }
}
