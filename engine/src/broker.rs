//! [`Broker`]: the at-least-once protocol over the ready queue, the lease
//! table, the expiry queue and the wait list.
//!
//! # Where a message lives
//!
//! Every published, unacknowledged message is in exactly one place: the
//! ready queue, or one live lease. Each operation moves it with a single
//! atomic hand-over:
//!
//! * publish: pushed to the ready queue, then waiters are notified.
//! * fetch: popped from the ready queue, then inserted as a lease under a
//!   fresh id, then its deadline is queued for expiry; no `.await` between
//!   the pop and the insert, so a dropped fetch future cannot strand it.
//! * acknowledge / requeue: `remove_if(id, now < deadline)` on the lease
//!   table. The remove is the decision: the caller that removes the lease
//!   owns the message (and drops it, or pushes it back to the tail).
//! * expiry: `remove_if(id, now >= deadline)`, then push to the tail.
//!
//! Because acknowledge, requeue and expiry all settle through one atomic
//! `remove_if` with the deadline test inside the predicate, exactly one of
//! them wins per id, and acknowledge fails once the deadline has passed even
//! if no sweep has run yet.
//!
//! # What it must never do
//!
//! Perform I/O, spawn, sleep or depend on an async runtime. Time comes from
//! the injected [`Clock`]; timeouts come from a future the caller passes in.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_utils::CachePadded;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::error::Error;
use crate::expiry::ExpiryQueue;
use crate::fifo::Fifo;
use crate::lease::{Lease, LeaseTable};
use crate::stats::{Counters, Stats};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::waiters::{WaitKey, WaitList};

/// Ready messages, oldest first.
type ReadyQueue = Fifo<Bytes>;

/// Broker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long a delivery stays leased before it returns to the queue.
    pub ttl: Duration,
    /// The most body bytes held at once (ready plus in flight); a publish
    /// beyond it fails with [`Error::QueueFull`].
    pub max_queue_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ttl: Duration::from_secs(20),
            max_queue_bytes: u64::MAX,
        }
    }
}

/// One delivery of a message: the body and the id that settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Fresh for every delivery; never reused for the broker's lifetime.
    pub id: u64,
    /// The message body as published.
    pub body: Bytes,
}

/// What one expiry sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Leases that ran out and went back to the ready queue.
    pub expired: usize,
    /// The earliest deadline still pending, if any lease may still expire.
    pub next_deadline: Option<Timestamp>,
}

/// An in-memory at-least-once work queue. Share it with `Arc`; every method
/// takes `&self` and is safe to call from any number of threads.
pub struct Broker<C: Clock = SystemClock> {
    clock: C,
    config: Config,
    ready: ReadyQueue,
    leases: LeaseTable,
    expiry: ExpiryQueue,
    waiters: WaitList,
    /// The next delivery id. Ids start at 1 and only grow.
    next_id: CachePadded<AtomicU64>,
    /// Body bytes held, ready plus in flight, for `max_queue_bytes`.
    queued_bytes: CachePadded<AtomicU64>,
    closed: AtomicBool,
    counters: Counters,
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
        Broker {
            clock,
            config,
            ready: ReadyQueue::new(),
            leases: LeaseTable::new(),
            expiry: ExpiryQueue::new(),
            waiters: WaitList::new(),
            next_id: CachePadded::new(AtomicU64::new(1)),
            queued_bytes: CachePadded::new(AtomicU64::new(0)),
            closed: AtomicBool::new(false),
            counters: Counters::new(),
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

    /// Appends a message at the tail of the queue and wakes one waiting
    /// fetch.
    pub fn publish(&self, body: Bytes) -> Result<(), Error> {
        self.check_open()?;
        let len = body.len() as u64;
        // Reserve first, undo on overflow: no CAS loop on the hot path. Two
        // publishers racing at the limit may both be refused where one would
        // have fitted; neither can push the total over the limit.
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > self.config.max_queue_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Error::QueueFull);
        }
        self.ready.push(body);
        Counters::bump(&self.counters.published);
        self.waiters.notify_one();
        Ok(())
    }

    /// Leases the head of the queue, if there is one, without waiting.
    pub fn try_fetch(&self) -> Result<Option<Delivery>, Error> {
        self.check_open()?;
        let Some(body) = self.ready.pop() else {
            return Ok(None);
        };
        // From here to the lease insert: no await, no early return, no
        // panic path. The message is in our hands and nowhere else.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = self.clock.now().saturating_add(self.config.ttl);
        self.leases.insert(
            id,
            Lease {
                body: body.clone(),
                deadline,
            },
        );
        // After the insert, so a sweep that sees this entry finds the lease.
        self.expiry.push(deadline, id);
        Counters::bump(&self.counters.delivered);
        Ok(Some(Delivery { id, body }))
    }

    /// Leases the head of the queue, waiting for a message until `timeout`
    /// completes.
    ///
    /// Runtime-agnostic: pass any timer future (`tokio::time::sleep(d)`,
    /// `std::future::pending()` to wait forever). Fails with
    /// [`Error::Timeout`] if `timeout` completes first and
    /// [`Error::Closed`] if the broker closes meanwhile.
    ///
    /// Cancellation safe: dropping the returned future at any point leases
    /// nothing, and if this fetch had already been woken for a message it
    /// passes the wake-up on to the next waiter.
    pub async fn fetch<T: Future<Output = ()>>(&self, timeout: T) -> Result<Delivery, Error> {
        let mut timeout = pin!(timeout);
        let mut waiter = Waiter {
            list: &self.waiters,
            key: None,
        };
        poll_fn(|cx| self.poll_fetch(cx, &mut waiter, timeout.as_mut())).await
    }

    fn poll_fetch<T: Future<Output = ()>>(
        &self,
        cx: &mut Context<'_>,
        waiter: &mut Waiter<'_>,
        timeout: Pin<&mut T>,
    ) -> Poll<Result<Delivery, Error>> {
        loop {
            match self.try_fetch() {
                Ok(Some(delivery)) => {
                    waiter.finish_with_message();
                    return Poll::Ready(Ok(delivery));
                }
                // `Waiter::drop` deregisters and passes on any wake-up.
                Err(error) => return Poll::Ready(Err(error)),
                Ok(None) => {}
            }
            match waiter.key {
                // Register, then loop to re-check the queue: a publish that
                // raced the registration is seen either way (see waiters.rs).
                None => waiter.key = Some(self.waiters.register(cx.waker())),
                Some(key) => {
                    if self.waiters.poll_notified(key, cx.waker()) {
                        // Woken: the slot is gone; re-check the queue and,
                        // if someone else got there first, register again.
                        waiter.key = None;
                    } else {
                        break;
                    }
                }
            }
        }
        match timeout.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::Timeout)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Settles delivery `id` for good: the message leaves the broker.
    ///
    /// Fails with [`Error::InvalidId`] if the id is unknown, already settled
    /// or past its deadline (even if no sweep has run yet).
    pub fn acknowledge(&self, id: u64) -> Result<(), Error> {
        self.check_open()?;
        let lease = self.settle(id)?;
        self.queued_bytes
            .fetch_sub(lease.body.len() as u64, Ordering::Relaxed);
        Counters::bump(&self.counters.acknowledged);
        Ok(())
    }

    /// Settles delivery `id` by putting its message back at the tail of the
    /// queue, to be delivered again under a new id.
    pub fn requeue(&self, id: u64) -> Result<(), Error> {
        self.check_open()?;
        let lease = self.settle(id)?;
        self.ready.push(lease.body);
        Counters::bump(&self.counters.requeued);
        self.waiters.notify_one();
        Ok(())
    }

    /// Removes the lease of `id` if it is still live. The one place where a
    /// consumer wins a delivery against expiry.
    fn settle(&self, id: u64) -> Result<Lease, Error> {
        let now = self.clock.now();
        self.leases
            .remove_if(id, |lease| now < lease.deadline)
            .ok_or(Error::InvalidId)
    }

    /// Returns every lease whose deadline has passed to the tail of the
    /// queue, oldest first, waking a waiter for each.
    ///
    /// It also gives the lease table's memory back after a burst (hash
    /// tables do not shrink by themselves), so the sweeper is the broker's
    /// one maintenance task.
    ///
    /// Call it from one background task, at the returned `next_deadline`
    /// (or after one TTL if there is none: no lease handed out later can
    /// expire sooner). Concurrent calls are safe but serialise.
    pub fn expire_due(&self) -> Sweep {
        let now = self.clock.now();
        let mut expired = 0;
        let next_deadline = self.expiry.drain_due(now, |id| {
            // The entry may belong to a lease settled long ago: then there
            // is nothing to remove, and the entry is simply dropped.
            if let Some(lease) = self.leases.remove_if(id, |lease| lease.deadline <= now) {
                self.ready.push(lease.body);
                Counters::bump(&self.counters.expired);
                self.waiters.notify_one();
                expired += 1;
            }
        });
        self.leases.shrink_if_sparse();
        Sweep {
            expired,
            next_deadline,
        }
    }

    /// Stops the broker: from the moment this returns, every publish, fetch,
    /// acknowledge and requeue fails with [`Error::Closed`], and every
    /// waiting fetch wakes up to see it. Idempotent.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waiters.notify_all();
    }

    /// Whether [`Broker::close`] has been called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A snapshot of the broker's state and counters.
    pub fn stats(&self) -> Stats {
        let read = Counters::read;
        Stats {
            ready: self.ready.len(),
            in_flight: self.leases.len(),
            waiting: self.waiters.waiting(),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            published: read(&self.counters.published),
            delivered: read(&self.counters.delivered),
            acknowledged: read(&self.counters.acknowledged),
            requeued: read(&self.counters.requeued),
            expired: read(&self.counters.expired),
        }
    }

    /// Expiry entries not yet swept (for memory accounting and tests).
    pub fn pending_expiry_entries(&self) -> usize {
        self.expiry.len()
    }
}

/// A fetch's registration in the wait list, cleaned up on every exit path.
struct Waiter<'a> {
    list: &'a WaitList,
    key: Option<WaitKey>,
}

impl Waiter<'_> {
    /// The fetch got a message: leave, and pass on any wake-up still on our
    /// slot. It need not have been for the message we took: a publish can
    /// notify us between our re-check's pop and this deregistration, and
    /// swallowing its wake-up would leave another waiter asleep beside a
    /// ready message. When it was ours, the extra wake-up costs another
    /// waiter one re-check.
    fn finish_with_message(&mut self) {
        if let Some(key) = self.key.take() {
            if self.list.deregister(key) {
                self.list.notify_one();
            }
        }
    }
}

impl Drop for Waiter<'_> {
    /// Timeout, close or cancellation: leave, and if we were woken for a
    /// message we did not take, wake the next waiter in our place.
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if self.list.deregister(key) {
                self.list.notify_one();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
