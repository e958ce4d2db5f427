//! [`Queue`]: one named queue and every state a message of it can be in:
//! ready (the lock-free [`Fifo`]), leased (its [`LeaseTable`]) or delayed
//! (its [`Timer`]), with its settings, counters and waiting fetches.
//!
//! # Where a message lives
//!
//! Each published, unacknowledged message of the queue is in exactly one
//! place, and every operation moves it with one hand-over:
//!
//! * publish: pushed to the ready queue (or, with a delay, into the timer);
//! * fetch: popped, then inserted as a lease under a fresh id, then its
//!   deadline scheduled; nothing in between can fail or await;
//! * acknowledge / requeue / touch: decided by the lease table's atomic
//!   `remove_if` / `update_if` with `now < deadline` inside the predicate;
//! * expiry: `remove_if(deadline <= now)` on an entry the timer handed out;
//! * a delivery that ends without an acknowledge (requeue or expiry) on its
//!   `max_deliveries`-th attempt is not put back: it is handed to the
//!   caller ([`Ended::DeadLetter`]), which moves it to `<queue>.dead`.
//!
//! # Life cycle
//!
//! Every operation of a client (publish, fetch, settle, touch, redrive,
//! and the dead-letter moves they cause) reaches a queue through the
//! registry, and holds the registry's read side (a `ShardedLock`, sharded
//! by thread) for as long as it works on the queue. A delete first takes
//! the queue out of the registry under the write side, which waits for
//! those readers, and only then empties it: so no such operation ever
//! overlaps a delete, and they need no check of their own. (`default` is
//! never deleted.)
//!
//! The timekeeper reaches a queue through the agenda's `Weak` reference
//! instead. For it, `life` is a `ShardedLock` around the `deleted` flag: a
//! sweep holds it for reading, delete for writing while it empties the
//! queue, so a sweep either completes before the delete (and what it made
//! ready is counted and dropped by the delete) or sees `deleted` and
//! touches nothing (loom model 20). It is never held across an `.await`
//! or while waiting.
//!
//! # What it must never do
//!
//! Hold a timer lock while taking a lease-table lock (see `timer.rs` for the
//! lock order), or wake a waiter before the message it is woken for is
//! visible in the ready queue.

use std::sync::Weak;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::agenda::Agenda;
use crate::clock::{duration_nanos, Timestamp};
use crate::fifo::Fifo;
use crate::lease::{Lease, LeaseTable};
use crate::message::{Message, QueueName};
use crate::stats::{Counters, QueueInfo, QueueStats};
use crate::sync::{
    read_sharded, write_sharded, AtomicU32, AtomicU64, Ordering, ShardedLock, ShardedLockReadGuard,
};
use crate::timer::{Hint, Timer};
use crate::waiters::WaitList;

mod settle;
mod undeliver;

/// `head_ready_at` when the ready queue is (or was last seen) empty.
const NO_HEAD: u64 = u64::MAX;

/// What became of a delivery that ended without an acknowledge.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Back at the tail of the ready queue.
    Ready,
    /// Back after a delay.
    Delayed,
    /// Its last allowed delivery: the caller must move it to the tail of
    /// this queue's dead-letter queue.
    DeadLetter(Message),
}

/// A delivery handed out by [`Queue::try_fetch`].
pub(crate) struct Leased {
    pub(crate) id: u64,
    pub(crate) message: Message,
}

/// What everything in one broker shares, handed to queue operations.
pub(crate) struct Shared {
    pub(crate) agenda: Agenda,
    /// The next delivery id (1, 2, ...), unique across all queues.
    pub(crate) next_id: CachePadded<AtomicU64>,
    /// Told of every change a write-ahead log must record (`journal.rs`).
    pub(crate) journal: Option<std::sync::Arc<dyn crate::journal::Journal>>,
}

pub(crate) struct Queue {
    pub(crate) name: QueueName,
    /// For a dead-letter queue, the queue it serves: the origin its
    /// dead-lettered messages report.
    origin: Option<QueueName>,
    /// Unique for the broker's lifetime; orders agenda hints of equal time.
    pub(crate) id: u64,
    me: Weak<Queue>,
    life: ShardedLock<bool>,
    ready: Fifo<Message>,
    leases: LeaseTable,
    timer: Timer,
    pub(crate) waiters: WaitList,
    ttl_nanos: AtomicU64,
    max_deliveries: AtomicU32,
    /// Body bytes held (ready, leased and delayed).
    bytes: CachePadded<AtomicU64>,
    /// An upper bound on when the head of the ready queue became ready, in
    /// nanoseconds, or [`NO_HEAD`]: see [`Queue::oldest_ready_age`].
    head_ready_at: AtomicU64,
    counters: Counters,
}

/// A queue's settings: the one settings type (a change to them is a
/// [`QueueUpdate`](crate::QueueUpdate), a snapshot carries them in
/// [`QueueInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a delivery's lease lasts.
    pub ttl: Duration,
    /// The delivery that ends a message's life here (0: unlimited).
    pub max_deliveries: u32,
}

/// What one timekeeping pass over a queue did ([`Queue::run_due`]).
#[derive(Debug, Default)]
pub(crate) struct DueRun {
    /// Leases that ran out (those to dead-letter included).
    pub(crate) expired: usize,
    /// Delayed messages that came due.
    pub(crate) came_due: usize,
    /// Messages whose last allowed delivery expired: for the dead-letter
    /// queue.
    pub(crate) dead: Vec<Message>,
}

impl Queue {
    pub(crate) fn new(name: QueueName, id: u64, settings: QueueSettings) -> std::sync::Arc<Queue> {
        let origin = if name.is_dead() {
            QueueName::new(name.base()).ok()
        } else {
            None
        };
        std::sync::Arc::new_cyclic(|me| Queue {
            name,
            origin,
            id,
            me: me.clone(),
            life: ShardedLock::new(false),
            ready: Fifo::new(),
            leases: LeaseTable::new(),
            timer: Timer::new(),
            waiters: WaitList::new(),
            ttl_nanos: AtomicU64::new(duration_nanos(settings.ttl)),
            max_deliveries: AtomicU32::new(settings.max_deliveries),
            bytes: CachePadded::new(AtomicU64::new(0)),
            head_ready_at: AtomicU64::new(NO_HEAD),
            counters: Counters::new(),
        })
    }

    fn hint<'a>(&'a self, shared: &'a Shared) -> Hint<'a> {
        Hint {
            agenda: &shared.agenda,
            queue_id: self.id,
            queue: &self.me,
        }
    }

    /// The life-cycle read guard, or `None` once the queue is deleted.
    fn alive(&self) -> Option<ShardedLockReadGuard<'_, bool>> {
        let life = read_sharded(&self.life);
        (!*life).then_some(life)
    }

    pub(crate) fn settings(&self) -> QueueSettings {
        QueueSettings {
            ttl: Duration::from_nanos(self.ttl_nanos.load(Ordering::Relaxed)),
            max_deliveries: self.max_deliveries.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.ttl_nanos.store(duration_nanos(ttl), Ordering::Relaxed);
    }

    pub(crate) fn set_max_deliveries(&self, max: u32) {
        self.max_deliveries.store(max, Ordering::Relaxed);
    }

    /// Accepts a message (already charged against the byte budget): at the
    /// tail now, or after `delay`. The caller found the queue in the
    /// registry (see "Life cycle" above).
    pub(crate) fn accept(
        &self,
        shared: &Shared,
        message: Message,
        delay: Duration,
        now: Timestamp,
    ) {
        self.bytes
            .fetch_add(message.body.len() as u64, Ordering::Relaxed);
        Counters::bump(&self.counters.published);
        if delay.is_zero() {
            self.make_ready(message, now);
        } else {
            self.timer
                .schedule_delayed(now.saturating_add(delay), message, &self.hint(shared));
        }
    }

    /// Accepts a batch (already charged against the byte budget): `ready`
    /// joins the tail in order, each of `delayed` is held until its delay
    /// has passed. The caller found the queue in the registry.
    pub(crate) fn accept_batch(
        &self,
        shared: &Shared,
        ready: Vec<Message>,
        delayed: Vec<(Duration, Message)>,
        now: Timestamp,
    ) {
        let bytes = ready
            .iter()
            .chain(delayed.iter().map(|(_, message)| message))
            .map(|message| message.body.len() as u64)
            .sum();
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Counters::add(
            &self.counters.published,
            (ready.len() + delayed.len()) as u64,
        );
        if !delayed.is_empty() {
            self.timer.schedule_delayed_all(
                delayed
                    .into_iter()
                    .map(|(delay, message)| (now.saturating_add(delay), message)),
                &self.hint(shared),
            );
        }
        self.make_all_ready(ready, now);
    }

    /// Appends `messages` at the tail, in order (other publishes may land
    /// between them), and wakes as many waiting fetches in one pass.
    fn make_all_ready(&self, mut messages: Vec<Message>, now: Timestamp) {
        let n = messages.len();
        if n == 0 {
            return;
        }
        for message in &mut messages {
            message.ready_at = now;
        }
        self.ready.push_all(messages);
        self.note_head_ready_at(now);
        // After the push: the woken fetches must find the messages.
        self.waiters.notify_many(n);
    }

    /// Reports a message going back to this queue's tail (now, or after
    /// `delay`), before it is visible there.
    fn journal_back(
        &self,
        journal: &dyn crate::journal::Journal,
        message: &Message,
        delay: Duration,
    ) {
        if delay.is_zero() {
            journal.ready(
                &self.name,
                message.id,
                message.attempts,
                message.dead_lettered,
            );
        } else {
            journal.delayed(&self.name, message.id, message.attempts, delay);
        }
    }

    /// Appends `message` at the tail and wakes the oldest waiting fetch.
    fn make_ready(&self, mut message: Message, now: Timestamp) {
        message.ready_at = now;
        self.ready.push(message);
        // Into an empty queue, this message is the head.
        self.note_head_ready_at(now);
        // After the push: the woken fetch must find the message.
        self.waiters.notify_one();
    }

    /// Records `now` as the head's ready time if the ready queue was seen
    /// empty. A load first: a `lock cmpxchg` costs as much when it fails,
    /// and on a busy queue it almost always would.
    fn note_head_ready_at(&self, now: Timestamp) {
        if self.head_ready_at.load(Ordering::Relaxed) == NO_HEAD {
            let _ = self.head_ready_at.compare_exchange(
                NO_HEAD,
                now.as_nanos(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// How long the head of the ready queue has been ready, if any message
    /// is.
    ///
    /// `SegQueue` has no peek, so this is kept without one: a fetch that
    /// pops a message records when *that* message became ready (messages
    /// become ready in FIFO order, so the new head became ready no earlier),
    /// and a message pushed into an empty queue records its own time. The
    /// figure is therefore exact for a head that was pushed into an empty
    /// queue and otherwise an upper bound, over by at most the gap between
    /// the last message fetched and the one behind it: an operator's alert
    /// on a stalled queue fires no later than it should. A push racing the
    /// fetch that empties the queue can leave it unknown (`None` while
    /// messages are ready) until the next fetch. It costs the hot path one
    /// relaxed store per fetch and one relaxed load per publish.
    pub(crate) fn oldest_ready_age(&self, now: Timestamp) -> Option<Duration> {
        if self.ready.is_empty() {
            return None;
        }
        match self.head_ready_at.load(Ordering::Relaxed) {
            NO_HEAD => None,
            at => Some(now.saturating_duration_since(Timestamp::from_nanos(at))),
        }
    }

    /// Whether a message is ready (for passing on a wake-up).
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Leases the head of the queue, if there is one. The clock is read
    /// after the pop: read before it, a fetch descheduled for longer than
    /// the TTL in between would hand out a lease already past its deadline
    /// (found by loom models 10 and 11b).
    pub(crate) fn try_fetch(
        &self,
        shared: &Shared,
        now: impl FnOnce() -> Timestamp,
    ) -> Option<Leased> {
        let mut message = self.ready.pop()?;
        let now = now();
        let head = if self.ready.is_empty() {
            NO_HEAD
        } else {
            message.ready_at.as_nanos()
        };
        self.head_ready_at.store(head, Ordering::Relaxed);
        // From here to the lease insert: no await, no early return, no panic
        // path. The message is in our hands and nowhere else.
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        message.attempts = message.attempts.saturating_add(1);
        let deadline = now.saturating_add(self.settings().ttl);
        self.leases.insert(
            id,
            Lease {
                message: message.clone(),
                deadline,
            },
        );
        // After the insert, so that a sweep that sees the entry finds the
        // lease.
        self.timer.schedule_lease(deadline, id, &self.hint(shared));
        Counters::bump(&self.counters.delivered);
        Some(Leased { id, message })
    }

    /// Leases up to `max` messages from the head, in order, into `out`,
    /// stopping once their bodies reach `max_bytes` in total: the message
    /// that crosses the line is the last one taken, so an answer's bodies
    /// stay under `max_bytes` plus one body (SPEC "Batches"). Lock-free
    /// pops, then one clock read, one id range, one deadline and one timer
    /// run per shard for the whole batch. Returns how many.
    pub(crate) fn try_fetch_batch(
        &self,
        shared: &Shared,
        max: usize,
        max_bytes: usize,
        now: impl FnOnce() -> Timestamp,
        out: &mut Vec<Leased>,
    ) -> usize {
        // Sized by the pop, once it finds something.
        let mut messages = Vec::new();
        let mut total = 0usize;
        let taken = self.ready.pop_while(
            max,
            |message| {
                total = total.saturating_add(message.body.len());
                total < max_bytes
            },
            &mut messages,
        );
        if taken == 0 {
            return 0;
        }
        // After the pop, as in `try_fetch`.
        let now = now();
        let head = if self.ready.is_empty() {
            NO_HEAD
        } else {
            messages[taken - 1].ready_at.as_nanos()
        };
        self.head_ready_at.store(head, Ordering::Relaxed);
        // Nothing from here to the timer can fail, await or return early.
        let first_id = shared.next_id.fetch_add(taken as u64, Ordering::Relaxed);
        let deadline = now.saturating_add(self.settings().ttl);
        out.reserve(taken);
        for (id, mut message) in (first_id..).zip(messages) {
            message.attempts = message.attempts.saturating_add(1);
            self.leases.insert(
                id,
                Lease {
                    message: message.clone(),
                    deadline,
                },
            );
            out.push(Leased { id, message });
        }
        // After the inserts, so that a sweep that sees an entry finds its
        // lease.
        self.timer.schedule_leases(
            deadline,
            first_id..first_id + taken as u64,
            &self.hint(shared),
        );
        Counters::add(&self.counters.delivered, taken as u64);
        taken
    }

    /// Empties and retires the queue. Returns how many messages it dropped
    /// (ready, leased and delayed) and what they were charged. Every later
    /// operation on this `Queue` sees it deleted; its waiters are woken to
    /// look for the queue that replaces it.
    pub(crate) fn delete(&self, shared: &Shared) -> (u64, u64) {
        let (count, charge) = {
            let mut life = write_sharded(&self.life);
            if *life {
                return (0, 0);
            }
            *life = true;
            let journal = shared.journal.as_deref();
            if let Some(journal) = journal {
                self.leases.for_each(|lease| journal.gone(lease.message.id));
            }
            let (mut count, mut charge) = self.leases.clear();
            while let Some(message) = self.ready.pop() {
                count += 1;
                charge += message.charge();
                if let Some(journal) = journal {
                    journal.gone(message.id);
                }
            }
            for message in self.timer.clear(&self.hint(shared)) {
                count += 1;
                charge += message.charge();
                if let Some(journal) = journal {
                    journal.gone(message.id);
                }
            }
            self.bytes.store(0, Ordering::Relaxed);
            (count as u64, charge)
        };
        self.waiters.notify_all();
        (count, charge)
    }

    /// Takes every ready message for a redrive (this is a dead-letter
    /// queue). Each counts as consumed here: see `QueueHandle::redrive`.
    pub(crate) fn take_ready_for_redrive(&self) -> Vec<Message> {
        let mut taken = Vec::new();
        while let Some(message) = self.ready.pop() {
            self.bytes
                .fetch_sub(message.body.len() as u64, Ordering::Relaxed);
            Counters::bump(&self.counters.acknowledged);
            Counters::bump(&self.counters.redriven);
            taken.push(message);
        }
        taken
    }

    /// For a dead-letter queue, the queue its dead-lettered messages came
    /// from.
    pub(crate) fn dead_letter_origin(&self) -> Option<QueueName> {
        self.origin.clone()
    }

    pub(crate) fn info(&self) -> QueueInfo {
        QueueInfo {
            name: self.name.clone(),
            settings: self.settings(),
            ready: self.ready.len(),
            in_flight: self.leases.len(),
            delayed: self.timer.delayed(),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn stats(&self, now: Timestamp) -> QueueStats {
        let read = Counters::read;
        let info = self.info();
        QueueStats {
            oldest_ready_age: self.oldest_ready_age(now),
            ready: info.ready,
            in_flight: info.in_flight,
            delayed: info.delayed,
            bytes: info.bytes,
            waiting_fetches: self.waiters.waiting(),
            published: read(&self.counters.published),
            delivered: read(&self.counters.delivered),
            acknowledged: read(&self.counters.acknowledged),
            requeued: read(&self.counters.requeued),
            expired: read(&self.counters.expired),
            dead_lettered: read(&self.counters.dead_lettered),
            redriven: read(&self.counters.redriven),
        }
    }

    pub(crate) fn compact(&self) {
        self.leases.shrink_if_sparse();
    }

    /// Timer entries held (runs of live leases plus delayed messages).
    pub(crate) fn timer_entries(&self) -> usize {
        self.timer.len()
    }

    /// Leases and delayed messages as the timer counts them (see
    /// [`Timer::live_leases`]).
    pub(crate) fn timer_counts(&self) -> (usize, usize) {
        (self.timer.live_leases(), self.timer.delayed())
    }
}
