//! [`Broker`]: the at-least-once protocol over named queues. It resolves a
//! queue by name, reads the clock once per operation, keeps the byte budget
//! and the id counters, and moves messages between queues (dead letters,
//! redrive); everything inside one queue is `queue.rs`.
//!
//! This file holds the broker's state, its settings and the lookups every
//! operation shares; each concern has its own file beside it:
//!
//! * `handle`: [`QueueHandle`], the public API, and its named outcomes;
//! * `publish`: publishing, single and batch: the byte-budget reservation,
//!   id allocation and the find-or-create hand-over;
//! * `fetch`: fetching, with and without waiting (the wait itself, a
//!   `Parked` place on a `WaitList`, is in `waiters.rs`);
//! * `settle`: acknowledge, requeue, touch, single and batch, and the move
//!   to a dead-letter queue;
//! * `timekeeping`: expiry and delays coming due, and the signals the
//!   server's timekeeper waits on;
//! * `admin`: creating, configuring, listing, deleting and redriving
//!   queues;
//! * `stats`: the counters and snapshots;
//! * `durable`: the journal hook, two-phase publish and restore.
//!
//! # What it must never do
//!
//! Perform I/O, spawn, sleep or depend on an async runtime. Time comes from
//! the injected [`Clock`]; timeouts come from a future the caller passes in;
//! the caller's timekeeping task drives [`Broker::expire_due`], sleeping
//! until [`Broker::next_due`] or [`Broker::due_changed`].

use std::time::Duration;

use bytes::Bytes;
use crossbeam_utils::CachePadded;

use crate::agenda::{Agenda, DueSignal};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::error::Error;
use crate::message::{validate, QueueName};
use crate::queue::{QueueSettings, Shared};
use crate::registry::{QueueRef, Registry};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// Ids are refused this far below [`MAX_ID`](crate::MAX_ID), so that fetches racing past
/// the check cannot reach it.
const ID_HEADROOM: u64 = 1 << 32;

/// Broker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The lease TTL of a new queue (`PUT /queues/{queue}` changes it).
    pub ttl: Duration,
    /// The most bytes held at once over all queues, each message counting
    /// its body plus 64; a publish beyond it fails with
    /// [`Error::QueueFull`].
    pub max_queue_bytes: u64,
    /// The `max_deliveries` of a new queue (0: unlimited).
    pub max_deliveries: u32,
    /// How many queues may exist besides `default` (a queue and its `.dead`
    /// queue count as one).
    pub max_queues: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: Duration::from_secs(20),
            max_queue_bytes: u64::MAX,
            max_deliveries: 0,
            max_queues: 10_000,
        }
    }
}

/// One delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// This delivery: fresh every time, never reused, below 2^53.
    pub id: u64,
    /// The message: fixed at publish, the same on every delivery.
    pub message_id: u64,
    /// 1 on the message's first delivery from this queue, one more on each
    /// later one.
    pub attempt: u32,
    /// The message body as published.
    pub body: Bytes,
    /// For a message that reached a dead-letter queue by exhausting its
    /// deliveries: the queue it came from.
    pub dead_letter: Option<QueueName>,
}

/// One entry of a batch publish ([`QueueHandle::publish_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The message body.
    pub body: Bytes,
    /// Held this long before it joins the tail; zero: at once.
    pub delay: Duration,
}

/// What one timekeeping pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Leases that ran out (those moved to a dead-letter queue included).
    pub expired: usize,
    /// Delayed messages that came due and joined their queue.
    pub came_due: usize,
    /// The earliest time anything is due next, if anything is pending.
    pub next_deadline: Option<Timestamp>,
}

/// A change to a queue's settings: `None` keeps the current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueUpdate {
    pub ttl: Option<Duration>,
    pub max_deliveries: Option<u32>,
}

/// An in-memory at-least-once broker of named queues. Share it with `Arc`;
/// every method takes `&self` and is safe to call from any number of
/// threads.
pub struct Broker<C: Clock = SystemClock> {
    clock: C,
    config: Config,
    registry: Registry,
    shared: Shared,
    next_message_id: CachePadded<AtomicU64>,
    /// What the held messages are charged, for `max_queue_bytes`.
    held_bytes: CachePadded<AtomicU64>,
    /// Fired when an acknowledge or a delete leaves the broker holding
    /// nothing: the moment to give memory back.
    drained: DueSignal,
    closed: AtomicBool,
}

impl Broker<SystemClock> {
    /// A broker on the system clock.
    pub fn new(config: Config) -> Self {
        Broker::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> Broker<C> {
    /// A broker reading time from `clock`.
    pub fn with_clock(config: Config, clock: C) -> Self {
        let default_settings = QueueSettings {
            ttl: config.ttl,
            max_deliveries: config.max_deliveries,
        };
        Broker {
            clock,
            config,
            registry: Registry::new(default_settings, config.max_queues),
            shared: Shared {
                agenda: Agenda::new(),
                next_id: CachePadded::new(AtomicU64::new(1)),
                journal: None,
            },
            next_message_id: CachePadded::new(AtomicU64::new(1)),
            held_bytes: CachePadded::new(AtomicU64::new(0)),
            drained: DueSignal::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// The broker's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The broker's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn new_queue_settings(&self, name: &QueueName) -> QueueSettings {
        QueueSettings {
            ttl: self.config.ttl,
            max_deliveries: if name.is_dead() {
                0
            } else {
                self.config.max_deliveries
            },
        }
    }

    /// The queue `name` for a settlement, `None` if it does not exist (then
    /// no id can be valid under it: a single settlement fails with
    /// [`Error::InvalidId`], a batch answers [`Settled::Invalid`] for each).
    fn settling(&self, name: &str) -> Result<Option<QueueRef<'_>>, Error> {
        self.check_open()?;
        self.known(name)
    }

    /// The queue `name` if it exists, `None` if not; an invalid name is an
    /// error. A name found in the registry was valid when its queue was
    /// created, so it is checked only when the lookup misses: valid names
    /// are the hot path, and checking them byte by byte cost about a sixth
    /// of a fetch-and-acknowledge cycle.
    fn known(&self, name: &str) -> Result<Option<QueueRef<'_>>, Error> {
        match self.registry.get(name) {
            Some(found) => Ok(Some(found)),
            None => validate(name).map(|()| None),
        }
    }

    /// Gives `charge` back to the byte budget. The RMW returns the total
    /// before, so noticing that the broker now holds nothing costs one
    /// comparison.
    fn release(&self, charge: u64) {
        if charge > 0 && self.held_bytes.fetch_sub(charge, Ordering::Relaxed) == charge {
            self.drained.notify();
        }
    }

    /// Stops the broker: from the moment this returns, every publish, fetch,
    /// acknowledge, requeue and touch fails with [`Error::Closed`], and every
    /// waiting fetch wakes up to see it. Idempotent.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for queue in self.registry.all() {
            queue.waiters.notify_all();
        }
        self.registry.creations.notify_all();
    }

    /// Whether [`Broker::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

mod admin;
mod durable;
mod fetch;
mod handle;
mod publish;
mod settle;
mod stats;
mod timekeeping;
mod undeliver;

use fetch::delivery;

pub use durable::{Prepared, RestoredMessage};
pub use handle::{Deleted, Published, PublishedBatch, QueueHandle, Redriven, Settled};

#[cfg(all(test, not(loom)))]
mod tests;
