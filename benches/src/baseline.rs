//! [`MutexBroker`]: the ubroker contract written the obvious way, as the
//! yardstick for the engine.
//!
//! # Design
//!
//! Two locks, each held for a few instructions:
//!
//! * `ready`: `Mutex<VecDeque<Bytes>>`, the ready queue.
//! * `leases`: `Mutex<HashMap<u64, Lease>>` plus, under the same lock, a
//!   `VecDeque` of `(deadline, id)` in fetch order (the TTL is one value, so
//!   fetch order is deadline order, exactly as in the engine's expiry FIFO)
//!   and the next delivery id.
//!
//! Fetch pops under `ready`, releases it, then inserts the lease under
//! `leases`; acknowledge and requeue remove under `leases` only if the
//! deadline has not passed (requeue then pushes under `ready`); a sweep pops
//! due expiry entries under `leases` and pushes the bodies under `ready`. No
//! code path holds `ready` while taking `leases`, so the locks cannot
//! deadlock.
//!
//! # Same semantics, honestly written
//!
//! FIFO delivery, requeue and expiry to the tail, a fresh id per delivery,
//! the deadline test inside the settling critical section (so exactly one of
//! acknowledge, requeue and expiry wins, and a lease past its deadline
//! cannot be settled even before a sweep), `max_queue_bytes`, `close`, and
//! the engine's [`Stats`]. The clock is read before a lock is taken, never
//! inside one.
//!
//! The lease map uses std's default hasher (SipHash-1-3): that is the
//! obvious choice, and it costs this baseline about 10 to 20 ns per
//! operation against the engine's one-multiply id hash. It has no wait list,
//! so publish and requeue skip the engine's one atomic RMW for waking
//! fetches; that biases the comparison in the baseline's favour.
//!
//! # What it must never do
//!
//! Be slow on purpose. Any change that makes it slower than the obvious
//! code would be must be justified by the contract, not by the benchmarks.

use std::collections::hash_map::{Entry, HashMap};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use ubroker_engine::{Clock, Config, Delivery, Error, Stats, Sweep, SystemClock, Timestamp};

/// One in-flight delivery.
struct Lease {
    body: Bytes,
    deadline: Timestamp,
}

/// Everything behind the ready-queue lock.
struct Ready {
    queue: VecDeque<Bytes>,
    published: u64,
}

/// Everything behind the lease lock.
struct Leases {
    map: HashMap<u64, Lease>,
    /// `(deadline, id)` in fetch order; entries of settled leases stay until
    /// their deadline passes and the sweep drops them.
    expiry: VecDeque<(Timestamp, u64)>,
    next_id: u64,
    delivered: u64,
    acknowledged: u64,
    requeued: u64,
    expired: u64,
}

/// An at-least-once work queue on two mutexes: the obvious engine.
pub struct MutexBroker<C: Clock = SystemClock> {
    clock: C,
    config: Config,
    ready: Mutex<Ready>,
    leases: Mutex<Leases>,
    /// Body bytes held, ready plus in flight. An atomic rather than a field
    /// under one of the locks: publish and acknowledge change it under
    /// different locks.
    queued_bytes: AtomicU64,
    closed: AtomicBool,
}

/// Locks `mutex`, ignoring poisoning: every critical section here leaves its
/// data consistent at each step and runs no user code.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MutexBroker<SystemClock> {
    /// A broker on the system clock.
    pub fn new(config: Config) -> Self {
        MutexBroker::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> MutexBroker<C> {
    /// A broker reading time from `clock`.
    pub fn with_clock(config: Config, clock: C) -> Self {
        MutexBroker {
            clock,
            config,
            ready: Mutex::new(Ready {
                queue: VecDeque::new(),
                published: 0,
            }),
            leases: Mutex::new(Leases {
                map: HashMap::new(),
                expiry: VecDeque::new(),
                next_id: 1,
                delivered: 0,
                acknowledged: 0,
                requeued: 0,
                expired: 0,
            }),
            queued_bytes: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// The broker's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Appends a message at the tail of the queue.
    pub fn publish(&self, body: Bytes) -> Result<(), Error> {
        self.check_open()?;
        let len = body.len() as u64;
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > self.config.max_queue_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Error::QueueFull);
        }
        let mut ready = lock(&self.ready);
        ready.queue.push_back(body);
        ready.published += 1;
        Ok(())
    }

    /// Leases the head of the queue, if there is one.
    pub fn try_fetch(&self) -> Result<Option<Delivery>, Error> {
        self.check_open()?;
        let Some(body) = lock(&self.ready).queue.pop_front() else {
            return Ok(None);
        };
        let deadline = self.clock.now().saturating_add(self.config.ttl);
        let mut leases = lock(&self.leases);
        let id = leases.next_id;
        leases.next_id += 1;
        leases.map.insert(
            id,
            Lease {
                body: body.clone(),
                deadline,
            },
        );
        leases.expiry.push_back((deadline, id));
        leases.delivered += 1;
        Ok(Some(Delivery {
            id,
            message_id: id,
            attempt: 1,
            body,
            dead_letter: None,
        }))
    }

    /// Settles `id` for good.
    pub fn acknowledge(&self, id: u64) -> Result<(), Error> {
        self.check_open()?;
        let body = self.settle(id, |leases| leases.acknowledged += 1)?;
        self.queued_bytes
            .fetch_sub(body.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Settles `id` by putting its message back at the tail of the queue.
    pub fn requeue(&self, id: u64) -> Result<(), Error> {
        self.check_open()?;
        let body = self.settle(id, |leases| leases.requeued += 1)?;
        lock(&self.ready).queue.push_back(body);
        Ok(())
    }

    /// Removes the lease of `id` if its deadline has not passed, counting
    /// the settlement with `count` under the same lock.
    fn settle(&self, id: u64, count: impl FnOnce(&mut Leases)) -> Result<Bytes, Error> {
        let now = self.clock.now();
        let mut leases = lock(&self.leases);
        match leases.map.entry(id) {
            Entry::Occupied(lease) if now < lease.get().deadline => {
                let body = lease.remove().body;
                count(&mut leases);
                Ok(body)
            }
            _ => Err(Error::InvalidId),
        }
    }

    /// Returns every lease whose deadline has passed to the tail of the
    /// queue, oldest first.
    pub fn expire_due(&self) -> Sweep {
        let now = self.clock.now();
        let mut due = Vec::new();
        let next_deadline = {
            let mut leases = lock(&self.leases);
            let Leases { map, expiry, .. } = &mut *leases;
            while let Some(&(deadline, id)) = expiry.front() {
                if deadline > now {
                    break;
                }
                expiry.pop_front();
                // A settled lease left its entry behind: nothing to remove.
                if let Entry::Occupied(lease) = map.entry(id) {
                    if lease.get().deadline <= now {
                        due.push(lease.remove().body);
                    }
                }
            }
            leases.expired += due.len() as u64;
            leases.expiry.front().map(|&(deadline, _)| deadline)
        };
        let expired = due.len();
        if expired > 0 {
            lock(&self.ready).queue.extend(due);
        }
        Sweep {
            expired,
            came_due: 0,
            next_deadline,
        }
    }

    /// Stops the broker: every later call fails with [`Error::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// A snapshot of sizes and counters (each lock read in turn).
    pub fn stats(&self) -> Stats {
        let (ready, published) = {
            let ready = lock(&self.ready);
            (ready.queue.len(), ready.published)
        };
        let leases = lock(&self.leases);
        Stats {
            ready,
            in_flight: leases.map.len(),
            waiting: 0,
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            published,
            delivered: leases.delivered,
            acknowledged: leases.acknowledged,
            requeued: leases.requeued,
            expired: leases.expired,
            queues: 1,
            ..Stats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ubroker_engine::ManualClock;

    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn broker() -> MutexBroker<ManualClock> {
        MutexBroker::with_clock(
            Config {
                ttl: TTL,
                ..Config::default()
            },
            ManualClock::new(),
        )
    }

    fn msg(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn fetch_now(b: &MutexBroker<ManualClock>) -> Delivery {
        b.try_fetch().expect("open").expect("a message is ready")
    }

    #[test]
    fn fifo_with_requeue_and_expiry_to_the_tail() {
        let b = broker();
        for s in ["a", "b", "c"] {
            b.publish(msg(s)).unwrap();
        }
        let a = fetch_now(&b);
        b.requeue(a.id).unwrap();
        let bm = fetch_now(&b);
        assert_eq!(bm.body, msg("b"));
        b.clock().advance(TTL);
        assert_eq!(b.expire_due().expired, 1);
        let order: Vec<_> = (0..3).map(|_| fetch_now(&b).body).collect();
        assert_eq!(order, vec![msg("c"), msg("a"), msg("b")]);
        assert_eq!(b.try_fetch(), Ok(None));
    }

    #[test]
    fn every_delivery_gets_a_fresh_id_and_settles_once() {
        let b = broker();
        b.publish(msg("a")).unwrap();
        let first = fetch_now(&b);
        b.requeue(first.id).unwrap();
        assert_eq!(b.acknowledge(first.id), Err(Error::InvalidId));
        assert_eq!(b.requeue(first.id), Err(Error::InvalidId));
        let second = fetch_now(&b);
        assert_ne!(second.id, first.id);
        b.acknowledge(second.id).unwrap();
        assert_eq!(b.acknowledge(second.id), Err(Error::InvalidId));
        assert_eq!(b.acknowledge(999), Err(Error::InvalidId));
    }

    #[test]
    fn a_lease_past_its_deadline_cannot_be_settled_before_any_sweep() {
        let b = broker();
        b.publish(msg("a")).unwrap();
        b.publish(msg("b")).unwrap();
        let a = fetch_now(&b);
        let bd = fetch_now(&b);
        b.clock().advance(TTL - Duration::from_nanos(1));
        b.acknowledge(a.id).unwrap();
        b.clock().advance(Duration::from_nanos(1));
        assert_eq!(b.requeue(bd.id), Err(Error::InvalidId));
        assert_eq!(b.acknowledge(bd.id), Err(Error::InvalidId));
        // The sweep drops a's stale entry and returns b's message.
        let sweep = b.expire_due();
        assert_eq!(sweep.expired, 1);
        assert_eq!(sweep.next_deadline, None);
        assert_eq!(fetch_now(&b).body, msg("b"));
    }

    #[test]
    fn sweep_touches_nothing_early_and_reports_the_next_deadline() {
        let b = broker();
        b.publish(msg("a")).unwrap();
        fetch_now(&b);
        let sweep = b.expire_due();
        assert_eq!(sweep.expired, 0);
        assert_eq!(
            sweep.next_deadline,
            Some(Timestamp::ZERO.saturating_add(TTL))
        );
        assert_eq!(b.stats().in_flight, 1);
    }

    #[test]
    fn counters_limit_and_close() {
        let b = MutexBroker::with_clock(
            Config {
                ttl: TTL,
                max_queue_bytes: 2,
                ..Config::default()
            },
            ManualClock::new(),
        );
        b.publish(msg("a")).unwrap();
        b.publish(msg("b")).unwrap();
        assert_eq!(b.publish(msg("c")), Err(Error::QueueFull));
        let a = fetch_now(&b);
        b.acknowledge(a.id).unwrap();
        b.publish(msg("c")).unwrap();
        let stats = b.stats();
        assert_eq!(
            (stats.ready, stats.in_flight, stats.queued_bytes),
            (2, 0, 2)
        );
        assert_eq!(
            (stats.published, stats.delivered, stats.acknowledged),
            (3, 1, 1)
        );
        b.close();
        assert_eq!(b.publish(msg("d")), Err(Error::Closed));
        assert_eq!(b.try_fetch(), Err(Error::Closed));
    }

    #[test]
    fn threads_lose_and_duplicate_nothing() {
        let b = MutexBroker::new(Config::default());
        let per_producer = 5_000u32;
        let seen = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for p in 0..2u32 {
                let b = &b;
                s.spawn(move || {
                    for i in 0..per_producer {
                        b.publish(Bytes::from((p * per_producer + i).to_le_bytes().to_vec()))
                            .unwrap();
                    }
                });
            }
            for _ in 0..2 {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while b.stats().acknowledged < 2 * u64::from(per_producer) {
                        match b.try_fetch().unwrap() {
                            Some(d) => {
                                b.acknowledge(d.id).unwrap();
                                mine.push(d.body);
                            }
                            None => std::thread::yield_now(),
                        }
                    }
                    seen.lock().unwrap().extend(mine);
                });
            }
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2 * per_producer as usize);
    }
}
