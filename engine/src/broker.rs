//! [`Broker`]: the at-least-once protocol over named queues. It resolves a
//! queue by name, reads the clock once per operation, keeps the byte budget
//! and the id counters, and moves messages between queues (dead letters,
//! redrive); everything inside one queue is `queue.rs`.
//!
//! # What it must never do
//!
//! Perform I/O, spawn, sleep or depend on an async runtime. Time comes from
//! the injected [`Clock`]; timeouts come from a future the caller passes in;
//! the caller's timekeeping task drives [`Broker::expire_due`], sleeping
//! until [`Broker::next_due`] or [`Broker::due_changed`].

use std::future::{poll_fn, Future};
use std::ops::Range;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_utils::CachePadded;

use crate::agenda::{Agenda, DueSignal};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::error::Error;
use crate::message::{validate, Message, QueueName, MAX_ID};
use crate::queue::{Ended, Leased, Queue, QueueSettings, Shared};

use crate::registry::{QueueRef, Registry};
use crate::stats::{QueueInfo, QueueStats, Stats};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::waiters::{WaitKey, WaitList};

/// Ids are refused this far below [`MAX_ID`], so that fetches racing past
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

    // ----- every queue -----------------------------------------------------

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
        // Reserve first, undo on overflow: no CAS loop on the hot path. Two
        // publishers racing at the limit may both be refused where one would
        // have fitted; neither can push the total over the limit.
        let before = self.held_bytes.fetch_add(charge, Ordering::Relaxed);
        if before.saturating_add(charge) > self.config.max_queue_bytes {
            self.held_bytes.fetch_sub(charge, Ordering::Relaxed);
            validate(queue)?;
            return Err(Error::QueueFull);
        }
        let result = self.publish_reserved(queue, body, delay);
        if result.is_err() {
            self.held_bytes.fetch_sub(charge, Ordering::Relaxed);
        }
        result
    }

    /// Gives `charge` back to the byte budget. The RMW returns the total
    /// before, so noticing that the broker now holds nothing costs one
    /// comparison.
    fn release(&self, charge: u64) {
        if charge > 0 && self.held_bytes.fetch_sub(charge, Ordering::Relaxed) == charge {
            self.drained.notify();
        }
    }

    fn publish_reserved(&self, queue: &str, body: Bytes, delay: Duration) -> Result<u64, Error> {
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
        let charge = messages.iter().fold(0u64, |sum, m| {
            sum.saturating_add(crate::message::charge(m.body.len()))
        });
        let before = self.held_bytes.fetch_add(charge, Ordering::Relaxed);
        if before.saturating_add(charge) > self.config.max_queue_bytes {
            self.held_bytes.fetch_sub(charge, Ordering::Relaxed);
            validate(queue)?;
            return Err(Error::QueueFull);
        }
        let result = self.publish_batch_reserved(queue, messages);
        if result.is_err() {
            self.held_bytes.fetch_sub(charge, Ordering::Relaxed);
        }
        result
    }

    fn publish_batch_reserved(
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
    fn accept_into(
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
    fn hand_over(&self, queue: &str, exempt: bool, hand: impl FnOnce(&Queue)) -> Result<(), Error> {
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

    /// Leases the head of `queue`, if there is one, without waiting. A
    /// queue that does not exist is empty.
    pub(crate) fn try_fetch_from(&self, queue: &str) -> Result<Option<Delivery>, Error> {
        self.check_open()?;
        match self.known(queue)? {
            Some(found) => self.lease_from(&found),
            None => Ok(None),
        }
    }

    fn lease_from(&self, queue: &Queue) -> Result<Option<Delivery>, Error> {
        self.check_ids()?;
        Ok(queue
            .try_fetch(&self.shared, || self.clock.now())
            .map(|leased| self.delivered(queue, leased)))
    }

    fn check_ids(&self) -> Result<(), Error> {
        if self.shared.next_id.load(Ordering::Relaxed) >= MAX_ID - ID_HEADROOM {
            Err(Error::IdsExhausted)
        } else {
            Ok(())
        }
    }

    /// Leases up to `max` messages from the head of `queue`, into `out`.
    fn lease_batch_from(
        &self,
        queue: &Queue,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<usize, Error> {
        self.check_ids()?;
        let mut leased = Vec::new();
        let taken = queue.try_fetch_batch(
            &self.shared,
            max,
            max_bytes,
            || self.clock.now(),
            &mut leased,
        );
        out.extend(
            leased
                .into_iter()
                .map(|leased| self.delivered(queue, leased)),
        );
        Ok(taken)
    }

    /// Leases the head of `queue`, waiting for a message until `timeout`
    /// completes. A queue that does not exist is waited on as an empty one:
    /// its creation wakes the fetch.
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
    pub(crate) async fn fetch_from<T: Future<Output = ()>>(
        &self,
        queue: &str,
        timeout: T,
    ) -> Result<Delivery, Error> {
        let mut timeout = pin!(timeout);
        let mut parked = Parked::default();
        let mut take = |found: &Queue| self.lease_from(found);
        poll_fn(|cx| self.poll_fetch(cx, queue, &mut parked, &mut take, timeout.as_mut())).await
    }

    /// Leases up to `max` messages from the head of `queue`, in queue
    /// order, without waiting, stopping before their bodies pass
    /// `max_bytes` in total (the first always fits). Appends them to `out`
    /// and returns how many (0: the queue is empty or does not exist).
    ///
    /// The batch costs a lock-free pop per message, one clock read, one
    /// range of delivery ids, one deadline and one lock per timer shard its
    /// ids reach.
    pub(crate) fn try_fetch_batch_from(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<usize, Error> {
        self.check_open()?;
        match self.known(queue)? {
            Some(found) if max > 0 => self.lease_batch_from(&found, max, max_bytes, out),
            _ => Ok(0),
        }
    }

    /// As [`QueueHandle::fetch`] (fair, cancellation safe, the same
    /// errors), but answers with 1 to `max` deliveries as soon as at least
    /// one message is ready: it never lingers for more. See
    /// [`QueueHandle::try_fetch_batch`] for `max_bytes`.
    pub(crate) async fn fetch_batch_from<T: Future<Output = ()>>(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
        timeout: T,
    ) -> Result<Vec<Delivery>, Error> {
        let max = max.max(1);
        let mut timeout = pin!(timeout);
        let mut parked = Parked::default();
        let mut take = |found: &Queue| {
            let mut out = Vec::new();
            self.lease_batch_from(found, max, max_bytes, &mut out)
                .map(|taken| (taken > 0).then_some(out))
        };
        poll_fn(|cx| self.poll_fetch(cx, queue, &mut parked, &mut take, timeout.as_mut())).await
    }

    /// One poll of a waiting fetch; `take` leases whatever the fetch takes
    /// from a queue found by name (`None`: nothing ready).
    fn poll_fetch<'a, R, T: Future<Output = ()>>(
        &'a self,
        cx: &mut Context<'_>,
        name: &str,
        parked: &mut Parked<'a>,
        take: &mut impl FnMut(&Queue) -> Result<Option<R>, Error>,
        timeout: Pin<&mut T>,
    ) -> Poll<Result<R, Error>> {
        loop {
            if let Err(error) = self.check_open() {
                // `Parked::drop` deregisters and passes on any wake-up.
                return Poll::Ready(Err(error));
            }
            let queue = match self.known(name) {
                Ok(queue) => queue,
                Err(error) => return Poll::Ready(Err(error)),
            };
            if let Some(found) = &queue {
                match take(found) {
                    Ok(Some(taken)) => {
                        parked.leave();
                        return Poll::Ready(Ok(taken));
                    }
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
            }
            // Wait on the right list: the queue's, or, if it does not exist
            // (or was just replaced), the registry's creations.
            if !parked.is_on(queue.as_ref().map(QueueRef::arc)) {
                let place = match &queue {
                    Some(found) => {
                        Place::Queue(found.arc().clone(), found.waiters.register(cx.waker()))
                    }
                    None => {
                        let creations = &self.registry.creations;
                        Place::Creations(creations, creations.register(cx.waker()))
                    }
                };
                parked.park(place);
                // Re-check after registering: a creation or publish that
                // raced the registration is seen either way.
                continue;
            }
            if parked.poll_notified(cx) {
                // Woken, and re-armed in our old place: look again.
                continue;
            }
            break;
        }
        match timeout.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::Timeout)),
            Poll::Pending => Poll::Pending,
        }
    }

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
    /// `Ok` where the single [`QueueHandle::acknowledge`] would have
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
    /// per id, as [`QueueHandle::acknowledge_batch`]. Those requeued at once
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

    /// Touches each of `ids` in `queue` (see [`QueueHandle::touch`]): one
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
    /// The caller holds no [`QueueRef`]: creating `.dead` takes the
    /// registry's write side.
    fn move_to_dead_letters(&self, source: &QueueName, mut message: Message, now: Timestamp) {
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

    /// Handles everything due: expired leases go back to the tail of their
    /// queue (or to its dead-letter queue), delayed messages join the tail,
    /// in due order within each queue, waking a waiter for each.
    ///
    /// Call it from one background task, then sleep until the returned
    /// `next_deadline` or until [`Broker::due_changed`] completes, whichever
    /// is first. Concurrent calls are safe.
    pub fn expire_due(&self) -> Sweep {
        let now = self.clock.now();
        let (mut expired, mut came_due) = (0, 0);
        loop {
            let due = self.shared.agenda.take_due(now);
            if due.is_empty() {
                break;
            }
            for (queue, shards) in due
                .iter()
                .filter_map(|due| Some((due.queue.upgrade()?, due.shards)))
            {
                let run = queue.run_due(&self.shared, now, shards);
                expired += run.expired;
                came_due += run.came_due;
                for message in run.dead {
                    self.move_to_dead_letters(&queue.name, message, now);
                }
            }
        }
        Sweep {
            expired,
            came_due,
            next_deadline: self.shared.agenda.next_due(),
        }
    }

    /// The earliest time anything (a lease, a delayed message) is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.shared.agenda.next_due()
    }

    /// Completes when something was scheduled earlier than every due time
    /// pending before it (since the last completion). The timekeeping task
    /// waits on this beside its sleep.
    pub async fn due_changed(&self) {
        self.shared.agenda.signal().changed().await
    }

    /// Completes when the broker has come to hold no message at all (since
    /// the last completion). The server's timekeeper then waits a moment
    /// and, if it is still empty, calls [`Broker::compact`] and gives freed
    /// memory back to the OS, without polling.
    pub async fn drained(&self) {
        self.drained.changed().await
    }

    /// Gives back the memory of lease tables that a burst left mostly
    /// empty (hash tables never shrink by themselves). O(queues); call it
    /// when the broker drains, not per request.
    pub fn compact(&self) {
        for queue in self.registry.all() {
            queue.compact();
        }
    }

    // ----- queue administration --------------------------------------------

    /// Creates `queue` or changes its settings. Validates everything first:
    /// a refused update changes nothing.
    pub(crate) fn put_queue(&self, queue: &str, update: QueueUpdate) -> Result<QueueInfo, Error> {
        self.check_open()?;
        let name = QueueName::new(queue)?;
        if name.is_dead() && update.max_deliveries.is_some_and(|max| max != 0) {
            return Err(Error::DeadLetterMaxDeliveries);
        }
        if update.ttl == Some(Duration::ZERO) {
            return Err(Error::ZeroTtl);
        }
        let found = self
            .registry
            .get_or_create(&name, || self.new_queue_settings(&name), false)?;
        if let Some(ttl) = update.ttl {
            found.set_ttl(ttl);
        }
        if let Some(max) = update.max_deliveries {
            found.set_max_deliveries(max);
        }
        Ok(found.info())
    }

    /// `queue`'s settings and contents.
    pub(crate) fn queue_info(&self, queue: &str) -> Result<QueueInfo, Error> {
        validate(queue)?;
        self.registry
            .get(queue)
            .map(|found| found.info())
            .ok_or(Error::QueueNotFound)
    }

    /// Every queue's settings and contents, sorted by name in byte order.
    pub fn queues(&self) -> Vec<QueueInfo> {
        self.registry
            .all()
            .iter()
            .map(|queue| queue.info())
            .collect()
    }

    /// `queue`'s counters.
    pub(crate) fn queue_stats(&self, queue: &str) -> Result<QueueStats, Error> {
        validate(queue)?;
        self.registry
            .get(queue)
            .map(|found| found.stats(self.clock.now()))
            .ok_or(Error::QueueNotFound)
    }

    /// Every queue's counters, sorted by name.
    pub fn all_queue_stats(&self) -> Vec<(QueueName, QueueStats)> {
        let now = self.clock.now();
        self.registry
            .all()
            .iter()
            .map(|queue| (queue.name.clone(), queue.stats(now)))
            .collect()
    }

    /// Drops `queue` with every message it holds (ready, leased, delayed)
    /// and returns how many. Its lease ids become invalid; its `.dead` queue
    /// stays. Fetches waiting on it keep waiting, for the queue a later
    /// publish creates.
    pub(crate) fn delete_queue(&self, queue: &str) -> Result<u64, Error> {
        self.check_open()?;
        validate(queue)?;
        let removed = self.registry.remove(queue)?;
        let (count, charge) = removed.delete(&self.shared);
        self.release(charge);
        Ok(count)
    }

    /// Moves every ready message of the dead-letter queue `dead` to the tail
    /// of the queue it serves, attempts reset. Returns how many moved.
    ///
    /// Each counts in the dead-letter queue's `acknowledged` and `redriven`
    /// and in the target's `published`, so that every queue's counters keep
    /// their identity.
    pub(crate) fn redrive(&self, dead: &str) -> Result<u64, Error> {
        self.check_open()?;
        let name = QueueName::new(dead)?;
        if !name.is_dead() {
            return Err(Error::NotDeadLetterQueue);
        }
        let source = self.registry.get(dead).ok_or(Error::QueueNotFound)?;
        let target = QueueName::new(name.base())?;
        let now = self.clock.now();
        let mut moved = 0;
        let taken = source.take_ready_for_redrive();
        // Without the registry guard: the move may create the target.
        drop(source);
        for mut message in taken {
            message.attempts = 0;
            message.dead_lettered = false;
            self.journal_moved(&target, &message);
            // Exempt from the cap and a valid name: this cannot fail.
            let _ = self.accept_into(target.as_str(), message, Duration::ZERO, now, true);
            moved += 1;
        }
        Ok(moved)
    }

    // ----- life cycle and reporting ----------------------------------------

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

    /// A snapshot of every queue added up.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            queued_bytes: self.held_bytes.load(Ordering::Relaxed),
            waiting: self.registry.creations.waiting(),
            ..Stats::default()
        };
        let now = self.clock.now();
        for queue in self.registry.all() {
            stats.add(&queue.stats(now));
        }
        stats
    }

    /// Leases and delayed messages as the queues' timers count them,
    /// added up: equal to `in_flight` and `delayed` of [`Broker::stats`]
    /// whenever no operation is under way, if every settlement counted its
    /// lease out of its timer. For model checks and tests.
    pub fn timer_counts(&self) -> (usize, usize) {
        self.registry
            .all()
            .iter()
            .map(|queue| queue.timer_counts())
            .fold((0, 0), |(l, d), (ql, qd)| (l + ql, d + qd))
    }

    /// Timer entries held over all queues (live leases plus delayed
    /// messages) and agenda hints: what timekeeping costs in memory.
    pub fn timer_entries(&self) -> usize {
        self.registry
            .all()
            .iter()
            .map(|queue| queue.timer_entries())
            .sum::<usize>()
            + self.shared.agenda.len()
    }
}

/// What a consumer is told of a message leased from `queue`.
fn delivery(queue: &Queue, leased: Leased) -> Delivery {
    Delivery {
        id: leased.id,
        message_id: leased.message.id,
        attempt: leased.message.attempts,
        dead_letter: if leased.message.dead_lettered {
            queue.dead_letter_origin()
        } else {
            None
        },
        body: leased.message.body,
    }
}

/// Where a waiting fetch is registered, cleaned up on every exit path.
#[derive(Default)]
struct Parked<'a> {
    at: Option<Place<'a>>,
}

enum Place<'a> {
    Queue(Arc<Queue>, WaitKey),
    /// The registry's list of fetches for queues that do not exist yet.
    Creations(&'a WaitList, WaitKey),
}

impl<'a> Place<'a> {
    fn list_and_key(&self) -> (&WaitList, WaitKey) {
        match self {
            Place::Queue(queue, key) => (&queue.waiters, *key),
            Place::Creations(list, key) => (list, *key),
        }
    }
}

impl<'a> Parked<'a> {
    /// Whether this fetch waits on `queue`'s list (or, for `None`, on the
    /// creations list).
    fn is_on(&self, queue: Option<&Arc<Queue>>) -> bool {
        match (&self.at, queue) {
            (Some(Place::Queue(on, _)), Some(queue)) => Arc::ptr_eq(on, queue),
            (Some(Place::Creations(..)), None) => true,
            _ => false,
        }
    }

    fn park(&mut self, place: Place<'a>) {
        self.leave();
        self.at = Some(place);
    }

    /// `true` if woken (and re-armed in place): look again.
    fn poll_notified(&self, cx: &Context<'_>) -> bool {
        match &self.at {
            Some(place) => {
                let (list, key) = place.list_and_key();
                list.poll_notified(key, cx.waker())
            }
            None => true,
        }
    }

    /// Leaves the list, passing on a wake-up this fetch did not use. Also
    /// what a fetch that got a message does: a wake-up on its slot need not
    /// have been for the message it took (a publish can notify it between
    /// its re-check's pop and this deregistration), and swallowing it would
    /// leave another waiter asleep beside a ready message.
    ///
    /// On a queue's list the wake-up is passed on only if a message is
    /// ready: the notifier pushed before it notified, and `deregister` takes
    /// the lock the notifier released, so a message that was pushed for
    /// this wake-up and is still there is seen. If none is, the wake-up's
    /// message is gone (to this fetch or another), and waking the next
    /// waiter for nothing would only cost it its place in line.
    fn leave(&mut self) {
        if let Some(place) = self.at.take() {
            let (list, key) = place.list_and_key();
            if list.deregister(key) {
                let wanted = match &place {
                    Place::Queue(queue, _) => queue.has_ready(),
                    Place::Creations(..) => true,
                };
                if wanted {
                    list.notify_one();
                }
            }
        }
    }
}

impl Drop for Parked<'_> {
    /// Timeout, close or cancellation: leave, and if we were woken for a
    /// message we did not take, wake the next waiter in our place.
    fn drop(&mut self) {
        self.leave();
    }
}

mod durable;
mod handle;
pub use durable::{Prepared, RestoredMessage};
pub use handle::{Deleted, Published, PublishedBatch, QueueHandle, Redriven, Settled};

#[cfg(all(test, not(loom)))]
mod tests;
