//! [`MutexBroker`]: the ubroker contract written the obvious way, as the
//! yardstick for the engine.
//!
//! # Design
//!
//! A `RwLock<HashMap<String, Arc<Queue>>>` of named queues (`default`
//! included, found like any other), and per queue three mutexes, each held
//! for a few instructions and never one inside another:
//!
//! * `ready`: a `VecDeque` of messages, the ready queue, with its counters.
//! * `leases`: a `HashMap<u64, Lease>` of deliveries in flight plus, under
//!   the same lock, a `BTreeSet<(deadline, id)>` in deadline order, so that
//!   settling, touching and expiring a lease is one critical section.
//! * `delayed`: a `BTreeMap<(due, seq), Message>` of delayed messages.
//!
//! Fetch pops under `ready`, releases it, then inserts the lease under
//! `leases`; acknowledge, requeue and touch decide under `leases` with the
//! deadline test inside it (so exactly one of them and expiry wins, and a
//! lease past its deadline cannot be settled even before a sweep); requeue
//! and expiry then push under `ready` or `delayed`. The sweep walks every
//! queue. Ids (message and delivery) and the byte budget are global
//! atomics, as in the engine; the clock is read before a lock is taken,
//! never inside one.
//!
//! Batches take each lock once per batch: one `ready` lock for a batch
//! publish or fetch, one `leases` lock for a batch fetch's inserts or a
//! batch settlement, one id range from one `fetch_add`, one clock read.
//!
//! # Same semantics, honestly written
//!
//! Named queues with `max_queues` (a queue and its `.dead` queue count as
//! one), FIFO delivery, per-queue TTL and `max_deliveries`, message ids and
//! attempts, a fresh delivery id per delivery, requeue and expiry to the
//! tail or after a delay, touch, delayed publish (due order, ties in the
//! order delayed), dead letters to `<queue>.dead` on the
//! `max_deliveries`-th delivery, the byte budget charged as the engine
//! charges it ([`MESSAGE_OVERHEAD`] per message), the batch operations with
//! the engine's contract, `close`, and per-queue stats including the ready
//! time of the head (so publish reads the clock, as the engine's does).
//!
//! Not here, because no benchmark drives them: waiting fetches (no wait
//! list, so publish and requeue skip the engine's "is anyone waiting" RMW,
//! which favours the baseline), queue deletion and redrive. The lease and
//! registry maps use std's default hasher (SipHash-1-3): the obvious choice.
//!
//! # What it must never do
//!
//! Be slow on purpose. Any change that makes it slower than the obvious
//! code would be must be justified by the contract, not by the benchmarks.

use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ubroker_engine::{
    validate_queue_name, Clock, Config, Delivery, Error, NewMessage, QueueInfo, QueueName,
    QueueSettings, QueueStats, QueueUpdate, Settled, Stats, Sweep, SystemClock, Timestamp, MAX_ID,
    MESSAGE_OVERHEAD,
};

/// Ids are refused this far below [`MAX_ID`], as in the engine.
const ID_HEADROOM: u64 = 1 << 32;

/// One published message, wherever it is.
#[derive(Clone)]
struct Message {
    id: u64,
    body: Bytes,
    attempts: u32,
    /// It reached a `.dead` queue by exhausting its deliveries.
    dead_lettered: bool,
    /// When it last joined a ready queue, for `oldest_ready_age`.
    ready_at: Timestamp,
}

fn charge(body_len: usize) -> u64 {
    body_len as u64 + MESSAGE_OVERHEAD
}

/// One in-flight delivery.
struct Lease {
    message: Message,
    deadline: Timestamp,
}

/// Everything behind a queue's ready lock.
#[derive(Default)]
struct Ready {
    queue: VecDeque<Message>,
    bytes: u64,
    /// Messages accepted straight into the ready queue (publishes and
    /// dead-letter moves; delayed ones count in [`Delayed`]).
    published: u64,
}

/// Everything behind a queue's lease lock.
#[derive(Default)]
struct Leases {
    map: HashMap<u64, Lease>,
    /// `(deadline, id)` of every live lease, in deadline order.
    deadlines: BTreeSet<(Timestamp, u64)>,
    bytes: u64,
    delivered: u64,
    acknowledged: u64,
    requeued: u64,
    expired: u64,
    dead_lettered: u64,
}

/// Everything behind a queue's delayed lock.
#[derive(Default)]
struct Delayed {
    map: BTreeMap<(Timestamp, u64), Message>,
    next_seq: u64,
    bytes: u64,
    /// Messages published with a delay.
    published: u64,
}

/// One named queue.
struct Queue {
    name: QueueName,
    /// For a dead-letter queue, the queue it serves.
    origin: Option<QueueName>,
    ttl_nanos: AtomicU64,
    max_deliveries: AtomicU32,
    ready: Mutex<Ready>,
    leases: Mutex<Leases>,
    delayed: Mutex<Delayed>,
}

/// How a delivery that ended without an acknowledge goes on.
enum Next {
    Ready(Message),
    Delayed(Message),
    Dead(Message),
}

impl Queue {
    fn new(name: QueueName, ttl: Duration, max_deliveries: u32) -> Self {
        let origin = if name.is_dead() {
            QueueName::new(name.base()).ok()
        } else {
            None
        };
        Queue {
            name,
            origin,
            ttl_nanos: AtomicU64::new(ttl.as_nanos().min(u128::from(u64::MAX)) as u64),
            max_deliveries: AtomicU32::new(max_deliveries),
            ready: Mutex::default(),
            leases: Mutex::default(),
            delayed: Mutex::default(),
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl_nanos.load(Ordering::Relaxed))
    }

    fn push_ready(&self, mut message: Message, now: Timestamp) {
        message.ready_at = now;
        let mut ready = lock(&self.ready);
        ready.bytes += message.body.len() as u64;
        ready.queue.push_back(message);
    }

    fn push_delayed(&self, message: Message, due: Timestamp) {
        let mut delayed = lock(&self.delayed);
        delayed.bytes += message.body.len() as u64;
        let seq = delayed.next_seq;
        delayed.next_seq += 1;
        delayed.map.insert((due, seq), message);
    }

    /// Where a delivery that ended (requeue or expiry) goes; counted under
    /// the lease lock the caller holds.
    fn end_delivery(&self, leases: &mut Leases, message: Message, delay: Duration) -> Next {
        let max = self.max_deliveries.load(Ordering::Relaxed);
        if max > 0 && message.attempts >= max {
            leases.dead_lettered += 1;
            Next::Dead(message)
        } else if delay.is_zero() {
            Next::Ready(message)
        } else {
            Next::Delayed(message)
        }
    }

    /// Removes lease `id` if its deadline has not passed.
    fn take_live(leases: &mut Leases, id: u64, now: Timestamp) -> Option<Message> {
        match leases.map.entry(id) {
            MapEntry::Occupied(lease) if now < lease.get().deadline => {
                let lease = lease.remove();
                leases.deadlines.remove(&(lease.deadline, id));
                leases.bytes -= lease.message.body.len() as u64;
                Some(lease.message)
            }
            _ => None,
        }
    }

    /// Moves `id`'s deadline to `new` if it has not passed.
    fn touch_live(leases: &mut Leases, id: u64, now: Timestamp, new: Timestamp) -> bool {
        let Some(lease) = leases.map.get_mut(&id) else {
            return false;
        };
        if now >= lease.deadline {
            return false;
        }
        let old = std::mem::replace(&mut lease.deadline, new);
        leases.deadlines.remove(&(old, id));
        leases.deadlines.insert((new, id));
        true
    }

    fn delivery(&self, id: u64, message: Message) -> Delivery {
        Delivery {
            id,
            message_id: message.id,
            attempt: message.attempts,
            dead_letter: if message.dead_lettered {
                self.origin.clone()
            } else {
                None
            },
            body: message.body,
        }
    }

    fn stats(&self, now: Timestamp) -> QueueStats {
        let (ready, ready_bytes, published, oldest) = {
            let ready = lock(&self.ready);
            let oldest = ready
                .queue
                .front()
                .map(|m| now.saturating_duration_since(m.ready_at));
            (ready.queue.len(), ready.bytes, ready.published, oldest)
        };
        let (delayed, delayed_bytes, published_delayed) = {
            let delayed = lock(&self.delayed);
            (delayed.map.len(), delayed.bytes, delayed.published)
        };
        let leases = lock(&self.leases);
        QueueStats {
            ready,
            in_flight: leases.map.len(),
            delayed,
            bytes: ready_bytes + delayed_bytes + leases.bytes,
            waiting_fetches: 0,
            oldest_ready_age: oldest,
            published: published + published_delayed,
            delivered: leases.delivered,
            acknowledged: leases.acknowledged,
            requeued: leases.requeued,
            expired: leases.expired,
            dead_lettered: leases.dead_lettered,
            redriven: 0,
        }
    }

    fn info(&self, now: Timestamp) -> QueueInfo {
        let stats = self.stats(now);
        QueueInfo {
            name: self.name.clone(),
            settings: QueueSettings {
                ttl: self.ttl(),
                max_deliveries: self.max_deliveries.load(Ordering::Relaxed),
            },
            ready: stats.ready,
            in_flight: stats.in_flight,
            delayed: stats.delayed,
            bytes: stats.bytes,
        }
    }
}

/// The named queues and the `max_queues` account.
#[derive(Default)]
struct Registry {
    queues: HashMap<String, Arc<Queue>>,
    /// How many of `b` and `b.dead` exist, per base name `b` (`default`
    /// not counted).
    bases: HashMap<String, u8>,
}

/// An at-least-once broker of named queues on mutexes: the obvious engine.
pub struct MutexBroker<C: Clock = SystemClock> {
    clock: C,
    config: Config,
    registry: RwLock<Registry>,
    next_message_id: AtomicU64,
    next_id: AtomicU64,
    /// What the held messages are charged, for `max_queue_bytes`.
    held_bytes: AtomicU64,
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
        let broker = MutexBroker {
            clock,
            config,
            registry: RwLock::default(),
            next_message_id: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            held_bytes: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        };
        broker
            .queue_or_create(QueueName::DEFAULT, true)
            .expect("`default` is a valid name");
        broker
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

    fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .queues
            .get(name)
            .cloned()
    }

    /// The queue `name` (validated), created if needed; `exempt` creations
    /// (dead-letter moves) skip `max_queues`.
    fn queue_or_create(&self, name: &str, exempt: bool) -> Result<Arc<Queue>, Error> {
        if let Some(queue) = self.queue(name) {
            return Ok(queue);
        }
        let name = QueueName::new(name)?;
        let mut registry = self.registry.write().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = registry.queues.get(name.as_str()) {
            return Ok(queue.clone());
        }
        let base = name.base();
        let counted = base != QueueName::DEFAULT;
        let new_base = counted && !registry.bases.contains_key(base);
        if new_base && !exempt && registry.bases.len() >= self.config.max_queues {
            return Err(Error::TooManyQueues);
        }
        if counted {
            *registry.bases.entry(base.to_owned()).or_default() += 1;
        }
        let max_deliveries = if name.is_dead() {
            0
        } else {
            self.config.max_deliveries
        };
        let queue = Arc::new(Queue::new(name.clone(), self.config.ttl, max_deliveries));
        registry
            .queues
            .insert(name.as_str().to_owned(), queue.clone());
        Ok(queue)
    }

    /// Charges `total` to the byte budget, or refuses it whole.
    fn reserve(&self, total: u64) -> Result<(), Error> {
        let before = self.held_bytes.fetch_add(total, Ordering::Relaxed);
        if before.saturating_add(total) > self.config.max_queue_bytes {
            self.held_bytes.fetch_sub(total, Ordering::Relaxed);
            return Err(Error::QueueFull);
        }
        Ok(())
    }

    fn release(&self, total: u64) {
        if total > 0 {
            self.held_bytes.fetch_sub(total, Ordering::Relaxed);
        }
    }

    /// `count` fresh message ids.
    fn message_ids(&self, count: u64) -> Result<Range<u64>, Error> {
        let first = self.next_message_id.fetch_add(count, Ordering::Relaxed);
        if first.saturating_add(count) >= MAX_ID - ID_HEADROOM {
            return Err(Error::IdsExhausted);
        }
        Ok(first..first + count)
    }

    /// Appends a message at the tail of `default`.
    pub fn publish(&self, body: Bytes) -> Result<u64, Error> {
        self.publish_to(QueueName::DEFAULT, body, Duration::ZERO)
    }

    /// Appends a message at the tail of `queue` (created if needed), or holds
    /// it for `delay` first. Returns its message id.
    pub fn publish_to(&self, queue: &str, body: Bytes, delay: Duration) -> Result<u64, Error> {
        self.check_open()?;
        validate_queue_name(queue)?;
        let charged = charge(body.len());
        self.reserve(charged)?;
        let accepted = self.message_ids(1).and_then(|ids| {
            let found = self.queue_or_create(queue, false)?;
            Ok((ids.start, found))
        });
        let (id, found) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                self.release(charged);
                return Err(error);
            }
        };
        let message = Message {
            id,
            body,
            attempts: 0,
            dead_lettered: false,
            ready_at: Timestamp::ZERO,
        };
        let now = self.clock.now();
        if delay.is_zero() {
            let mut ready = lock(&found.ready);
            ready.published += 1;
            ready.bytes += message.body.len() as u64;
            ready.queue.push_back(Message {
                ready_at: now,
                ..message
            });
        } else {
            let mut delayed = lock(&found.delayed);
            delayed.published += 1;
            delayed.bytes += message.body.len() as u64;
            let seq = delayed.next_seq;
            delayed.next_seq += 1;
            delayed
                .map
                .insert((now.saturating_add(delay), seq), message);
        }
        Ok(id)
    }

    /// Publishes every entry or none: see the engine's `publish_batch`.
    pub fn publish_batch(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Range<u64>, Error> {
        self.check_open()?;
        validate_queue_name(queue)?;
        if messages.is_empty() {
            let next = self.next_message_id.load(Ordering::Relaxed);
            return Ok(next..next);
        }
        let total = messages.iter().map(|m| charge(m.body.len())).sum();
        self.reserve(total)?;
        let accepted = self.message_ids(messages.len() as u64).and_then(|ids| {
            let found = self.queue_or_create(queue, false)?;
            Ok((ids, found))
        });
        let (ids, found) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                self.release(total);
                return Err(error);
            }
        };
        let now = self.clock.now();
        let mut later = Vec::new();
        {
            let mut ready = lock(&found.ready);
            for (id, entry) in ids.clone().zip(messages) {
                let message = Message {
                    id,
                    body: entry.body,
                    attempts: 0,
                    dead_lettered: false,
                    ready_at: now,
                };
                if entry.delay.is_zero() {
                    ready.published += 1;
                    ready.bytes += message.body.len() as u64;
                    ready.queue.push_back(message);
                } else {
                    later.push((now.saturating_add(entry.delay), message));
                }
            }
        }
        if !later.is_empty() {
            let mut delayed = lock(&found.delayed);
            for (due, message) in later {
                delayed.published += 1;
                delayed.bytes += message.body.len() as u64;
                let seq = delayed.next_seq;
                delayed.next_seq += 1;
                delayed.map.insert((due, seq), message);
            }
        }
        Ok(ids)
    }

    fn check_ids(&self) -> Result<(), Error> {
        if self.next_id.load(Ordering::Relaxed) >= MAX_ID - ID_HEADROOM {
            Err(Error::IdsExhausted)
        } else {
            Ok(())
        }
    }

    /// Leases the head of `default`, if there is one.
    pub fn try_fetch(&self) -> Result<Option<Delivery>, Error> {
        self.try_fetch_from(QueueName::DEFAULT)
    }

    /// Leases the head of `queue`, if there is one; a queue that does not
    /// exist is empty.
    pub fn try_fetch_from(&self, queue: &str) -> Result<Option<Delivery>, Error> {
        self.check_open()?;
        validate_queue_name(queue)?;
        let Some(found) = self.queue(queue) else {
            return Ok(None);
        };
        self.check_ids()?;
        let Some(mut message) = ({
            let mut ready = lock(&found.ready);
            let popped = ready.queue.pop_front();
            if let Some(message) = &popped {
                ready.bytes -= message.body.len() as u64;
            }
            popped
        }) else {
            return Ok(None);
        };
        // After the pop, as in the engine: a deadline read before it could
        // already have passed.
        let now = self.clock.now();
        let deadline = now.saturating_add(found.ttl());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        message.attempts = message.attempts.saturating_add(1);
        {
            let mut leases = lock(&found.leases);
            leases.bytes += message.body.len() as u64;
            leases.delivered += 1;
            leases.deadlines.insert((deadline, id));
            leases.map.insert(
                id,
                Lease {
                    message: message.clone(),
                    deadline,
                },
            );
        }
        Ok(Some(found.delivery(id, message)))
    }

    /// Leases up to `max` messages from the head of `queue` without
    /// waiting, stopping once the bodies reach `max_bytes` (the message that
    /// crosses the line is the last one taken, as in the engine).
    pub fn try_fetch_batch_from(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Delivery>, Error> {
        self.check_open()?;
        validate_queue_name(queue)?;
        let Some(found) = self.queue(queue) else {
            return Ok(Vec::new());
        };
        self.check_ids()?;
        let mut taken = Vec::new();
        {
            let mut ready = lock(&found.ready);
            let mut bytes = 0usize;
            while taken.len() < max && bytes < max_bytes.max(1) {
                let Some(front) = ready.queue.pop_front() else {
                    break;
                };
                let len = front.body.len();
                bytes = bytes.saturating_add(len);
                ready.bytes -= len as u64;
                taken.push(front);
            }
        }
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        let count = taken.len();
        let now = self.clock.now();
        let deadline = now.saturating_add(found.ttl());
        let first = self.next_id.fetch_add(count as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(count);
        {
            let mut leases = lock(&found.leases);
            leases.delivered += count as u64;
            for (id, mut message) in (first..).zip(taken) {
                message.attempts = message.attempts.saturating_add(1);
                leases.bytes += message.body.len() as u64;
                leases.deadlines.insert((deadline, id));
                leases.map.insert(
                    id,
                    Lease {
                        message: message.clone(),
                        deadline,
                    },
                );
                out.push(found.delivery(id, message));
            }
        }
        Ok(out)
    }

    /// The queue of a settlement: `Ok(None)` if it does not exist (every id
    /// is then invalid).
    fn settling(&self, queue: &str) -> Result<Option<Arc<Queue>>, Error> {
        self.check_open()?;
        validate_queue_name(queue)?;
        Ok(self.queue(queue))
    }

    /// Settles delivery `id` of `default` for good.
    pub fn acknowledge(&self, id: u64) -> Result<(), Error> {
        self.acknowledge_in(QueueName::DEFAULT, id)
    }

    /// Settles delivery `id` of `queue` for good.
    pub fn acknowledge_in(&self, queue: &str, id: u64) -> Result<(), Error> {
        let found = self.settling(queue)?.ok_or(Error::InvalidId)?;
        let now = self.clock.now();
        let message = {
            let mut leases = lock(&found.leases);
            let message = Queue::take_live(&mut leases, id, now).ok_or(Error::InvalidId)?;
            leases.acknowledged += 1;
            message
        };
        self.release(charge(message.body.len()));
        Ok(())
    }

    /// Acknowledges each id: `true` where the single call would succeed.
    pub fn acknowledge_batch_in(&self, queue: &str, ids: &[u64]) -> Result<Vec<Settled>, Error> {
        let Some(found) = self.settling(queue)? else {
            return Ok(vec![Settled::Invalid; ids.len()]);
        };
        let now = self.clock.now();
        let mut released = 0;
        let results = {
            let mut leases = lock(&found.leases);
            let results: Vec<Settled> = ids
                .iter()
                .map(|&id| match Queue::take_live(&mut leases, id, now) {
                    Some(message) => {
                        released += charge(message.body.len());
                        Settled::Ok
                    }
                    None => Settled::Invalid,
                })
                .collect();
            leases.acknowledged += results.iter().filter(|ok| ok.is_ok()).count() as u64;
            results
        };
        self.release(released);
        Ok(results)
    }

    /// Requeues delivery `id` of `default` to its tail.
    pub fn requeue(&self, id: u64) -> Result<(), Error> {
        self.requeue_in(QueueName::DEFAULT, id, Duration::ZERO)
    }

    /// Requeues delivery `id` of `queue` to its tail, now or after `delay`,
    /// or to `<queue>.dead` on its last allowed delivery.
    pub fn requeue_in(&self, queue: &str, id: u64, delay: Duration) -> Result<(), Error> {
        let found = self.settling(queue)?.ok_or(Error::InvalidId)?;
        let now = self.clock.now();
        let next = {
            let mut leases = lock(&found.leases);
            let message = Queue::take_live(&mut leases, id, now).ok_or(Error::InvalidId)?;
            let next = found.end_delivery(&mut leases, message, delay);
            if !matches!(next, Next::Dead(_)) {
                leases.requeued += 1;
            }
            next
        };
        self.carry_on(&found, next, now, delay);
        Ok(())
    }

    /// Requeues each id: `true` where the single call would succeed.
    pub fn requeue_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        delay: Duration,
    ) -> Result<Vec<Settled>, Error> {
        let Some(found) = self.settling(queue)? else {
            return Ok(vec![Settled::Invalid; ids.len()]);
        };
        let now = self.clock.now();
        let mut nexts = Vec::with_capacity(ids.len());
        let results = {
            let mut leases = lock(&found.leases);
            ids.iter()
                .map(|&id| match Queue::take_live(&mut leases, id, now) {
                    Some(message) => {
                        let next = found.end_delivery(&mut leases, message, delay);
                        if !matches!(next, Next::Dead(_)) {
                            leases.requeued += 1;
                        }
                        nexts.push(next);
                        Settled::Ok
                    }
                    None => Settled::Invalid,
                })
                .collect()
        };
        self.carry_on_all(&found, nexts, now, delay);
        Ok(results)
    }

    /// Puts a message whose delivery ended where `next` says.
    fn carry_on(&self, queue: &Queue, next: Next, now: Timestamp, delay: Duration) {
        match next {
            Next::Ready(message) => queue.push_ready(message, now),
            Next::Delayed(message) => queue.push_delayed(message, now.saturating_add(delay)),
            Next::Dead(message) => self.move_to_dead_letters(queue, message, now),
        }
    }

    /// As [`Self::carry_on`] for a batch, taking the ready lock once.
    fn carry_on_all(&self, queue: &Queue, nexts: Vec<Next>, now: Timestamp, delay: Duration) {
        let mut rest = Vec::new();
        {
            let mut ready = lock(&queue.ready);
            for next in nexts {
                match next {
                    Next::Ready(mut message) => {
                        message.ready_at = now;
                        ready.bytes += message.body.len() as u64;
                        ready.queue.push_back(message);
                    }
                    other => rest.push(other),
                }
            }
        }
        for next in rest {
            self.carry_on(queue, next, now, delay);
        }
    }

    /// Appends `message` to `source`'s dead-letter queue, attempts reset.
    fn move_to_dead_letters(&self, source: &Queue, mut message: Message, now: Timestamp) {
        message.attempts = 0;
        message.dead_lettered = true;
        // `max_deliveries` is 0 on a dead-letter queue, so `source` has one.
        let dead = source
            .name
            .dead_letter_queue()
            .expect("a dead-letter queue never dead-letters");
        let target = self
            .queue_or_create(dead.as_str(), true)
            .expect("exempt from the cap, and a valid name");
        let mut ready = lock(&target.ready);
        ready.published += 1;
        message.ready_at = now;
        ready.bytes += message.body.len() as u64;
        ready.queue.push_back(message);
    }

    /// Extends the lease of delivery `id` of `queue` to now plus `ttl` (the
    /// queue's TTL if `None`).
    pub fn touch_in(&self, queue: &str, id: u64, ttl: Option<Duration>) -> Result<(), Error> {
        if ttl == Some(Duration::ZERO) {
            return Err(Error::ZeroTtl);
        }
        let found = self.settling(queue)?.ok_or(Error::InvalidId)?;
        let now = self.clock.now();
        let new = now.saturating_add(ttl.unwrap_or_else(|| found.ttl()));
        if Queue::touch_live(&mut lock(&found.leases), id, now, new) {
            Ok(())
        } else {
            Err(Error::InvalidId)
        }
    }

    /// Touches each id: `true` where the single call would succeed.
    pub fn touch_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
        ttl: Option<Duration>,
    ) -> Result<Vec<Settled>, Error> {
        if ttl == Some(Duration::ZERO) {
            return Err(Error::ZeroTtl);
        }
        let Some(found) = self.settling(queue)? else {
            return Ok(vec![Settled::Invalid; ids.len()]);
        };
        let now = self.clock.now();
        let new = now.saturating_add(ttl.unwrap_or_else(|| found.ttl()));
        let mut leases = lock(&found.leases);
        Ok(ids
            .iter()
            .map(|&id| Settled::from_ok(Queue::touch_live(&mut leases, id, now, new)))
            .collect())
    }

    /// Creates `queue` or changes its settings.
    pub fn put_queue(&self, queue: &str, update: QueueUpdate) -> Result<QueueInfo, Error> {
        self.check_open()?;
        let name = QueueName::new(queue)?;
        if name.is_dead() && update.max_deliveries.is_some_and(|max| max != 0) {
            return Err(Error::DeadLetterMaxDeliveries);
        }
        if update.ttl == Some(Duration::ZERO) {
            return Err(Error::ZeroTtl);
        }
        let found = self.queue_or_create(queue, false)?;
        if let Some(ttl) = update.ttl {
            found.ttl_nanos.store(
                ttl.as_nanos().min(u128::from(u64::MAX)) as u64,
                Ordering::Relaxed,
            );
        }
        if let Some(max) = update.max_deliveries {
            found.max_deliveries.store(max, Ordering::Relaxed);
        }
        Ok(found.info(self.clock.now()))
    }

    /// Returns every lease past its deadline to its queue's tail (or its
    /// dead-letter queue) and every delayed message that came due, in due
    /// order within each queue.
    pub fn expire_due(&self) -> Sweep {
        let now = self.clock.now();
        let queues: Vec<Arc<Queue>> = self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .queues
            .values()
            .cloned()
            .collect();
        let (mut expired, mut came_due) = (0, 0);
        let mut next_deadline: Option<Timestamp> = None;
        for queue in &queues {
            let mut ended = Vec::new();
            {
                let mut leases = lock(&queue.leases);
                while let Some(&(deadline, id)) = leases.deadlines.first() {
                    if deadline > now {
                        break;
                    }
                    leases.deadlines.pop_first();
                    let lease = leases.map.remove(&id).expect("a deadline has its lease");
                    leases.bytes -= lease.message.body.len() as u64;
                    let next = queue.end_delivery(&mut leases, lease.message, Duration::ZERO);
                    if !matches!(next, Next::Dead(_)) {
                        leases.expired += 1;
                    }
                    ended.push(((deadline, id), next));
                }
                next_deadline = min_time(next_deadline, leases.deadlines.first().map(|k| k.0));
            }
            let mut due = Vec::new();
            {
                let mut delayed = lock(&queue.delayed);
                while let Some(entry) = delayed.map.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let ((at, _), message) = entry.remove_entry();
                    delayed.bytes -= message.body.len() as u64;
                    due.push((at, message));
                }
                next_deadline = min_time(
                    next_deadline,
                    delayed.map.first_key_value().map(|(k, _)| k.0),
                );
            }
            expired += ended.len();
            came_due += due.len();
            // Leases and delayed messages join the tail in due order.
            let mut ended = ended.into_iter().peekable();
            let mut due = due.into_iter().peekable();
            let mut ready = lock(&queue.ready);
            loop {
                let take_lease = match (ended.peek(), due.peek()) {
                    (Some(((deadline, _), _)), Some((at, _))) => deadline <= at,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let next = if take_lease {
                    ended.next().expect("peeked").1
                } else {
                    Next::Ready(due.next().expect("peeked").1)
                };
                match next {
                    Next::Ready(mut message) | Next::Delayed(mut message) => {
                        message.ready_at = now;
                        ready.bytes += message.body.len() as u64;
                        ready.queue.push_back(message);
                    }
                    Next::Dead(message) => {
                        drop(ready);
                        self.move_to_dead_letters(queue, message, now);
                        ready = lock(&queue.ready);
                    }
                }
            }
        }
        Sweep {
            expired,
            came_due,
            next_deadline,
        }
    }

    /// Stops the broker: every later call fails with [`Error::Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// `queue`'s counters.
    pub fn queue_stats(&self, queue: &str) -> Result<QueueStats, Error> {
        validate_queue_name(queue)?;
        self.queue(queue)
            .map(|found| found.stats(self.clock.now()))
            .ok_or(Error::QueueNotFound)
    }

    /// A snapshot of every queue added up.
    pub fn stats(&self) -> Stats {
        let now = self.clock.now();
        let queues: Vec<Arc<Queue>> = self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .queues
            .values()
            .cloned()
            .collect();
        let mut stats = Stats {
            queued_bytes: self.held_bytes.load(Ordering::Relaxed),
            ..Stats::default()
        };
        for queue in &queues {
            let q = queue.stats(now);
            stats.ready += q.ready;
            stats.in_flight += q.in_flight;
            stats.delayed += q.delayed;
            stats.queues += 1;
            stats.published += q.published;
            stats.delivered += q.delivered;
            stats.acknowledged += q.acknowledged;
            stats.requeued += q.requeued;
            stats.expired += q.expired;
            stats.dead_lettered += q.dead_lettered;
        }
        stats
    }
}

fn min_time(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
