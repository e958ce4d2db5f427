//! [`Registry`]: the named queues, the `max_queues` cap, and the wait list
//! of fetches for queues that do not exist yet.
//!
//! `default` always exists and lives outside the map, so the part-1 routes
//! (the hot path of every existing client) find their queue with one string
//! comparison and no lock. Every other queue is in a map behind a sharded
//! reader-writer lock (crossbeam's `ShardedLock`): a lookup takes only its
//! own thread's shard, so lookups of one queue from many threads share no
//! cache line; creation and deletion take every shard, which also makes the
//! `max_queues` check and the insert one atomic step.
//!
//! A lookup hands out the queue *borrowed* under its read guard
//! ([`QueueRef`]), not an `Arc` clone: a clone and drop per operation would
//! be two RMWs on the queue's reference count, one cache line every
//! operation on that queue shares. The price is a rule: a caller must drop
//! a `QueueRef` before it creates or deletes a queue (a write on a shard it
//! holds for reading would deadlock), and must not hold it across an
//! `.await`; a waiting fetch clones the `Arc` once, when it parks.
//!
//! A queue and its `.dead` queue count as one against `max_queues` (the
//! contract), so the registry counts *base names*: `bases[b]` is how many of
//! `b` and `b.dead` exist. `default` and `default.dead` are never counted.
//!
//! A fetch on a queue that does not exist parks on `creations`; every
//! creation wakes them all to look again (creation is rare next to fetches,
//! and each waiter re-checks one map entry).

use std::collections::HashMap;
use std::ops::Deref;

/// The map's hasher: foldhash, seeded per process. Names come from
/// clients, so the seed keeps collisions unpredictable; std's SipHash was
/// about 216 instructions of a 690-instruction publish to a named queue.
type Hasher = foldhash::fast::RandomState;
use std::sync::Arc;

use crate::error::Error;
use crate::message::{base_of, QueueName};
use crate::queue::{Queue, QueueSettings};
use crate::sync::{
    read_sharded, write_sharded, AtomicU64, Ordering, ShardedLock, ShardedLockReadGuard,
};
use crate::waiters::WaitList;

/// A queue found in the registry, borrowed: `default` from the registry
/// itself, any other from the map under the read guard it carries (see the
/// module docs for the rule that comes with it).
pub(crate) enum QueueRef<'a> {
    Default(&'a Arc<Queue>),
    Named(NamedRef<'a>),
}

/// A named queue borrowed under a read guard of the map.
pub(crate) struct NamedRef<'a> {
    /// Keeps the map from changing, so `queue` stays where it is.
    _guard: ShardedLockReadGuard<'a, Named>,
    queue: std::ptr::NonNull<Arc<Queue>>,
}

impl QueueRef<'_> {
    pub(crate) fn arc(&self) -> &Arc<Queue> {
        match self {
            QueueRef::Default(queue) => queue,
            // SAFETY: `queue` points at a value of the map that `_guard`
            // holds read-locked: no writer can remove or move it (a write
            // takes every shard, ours included) until the guard, which lives
            // exactly as long as this borrow's owner, is dropped.
            QueueRef::Named(named) => unsafe { named.queue.as_ref() },
        }
    }
}

impl Deref for QueueRef<'_> {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        self.arc()
    }
}

pub(crate) struct Registry {
    default: Arc<Queue>,
    named: ShardedLock<Named>,
    /// Fetches waiting for a queue that does not exist yet.
    pub(crate) creations: WaitList,
    next_queue_id: AtomicU64,
    max_queues: usize,
}

#[derive(Default)]
pub(crate) struct Named {
    queues: HashMap<Box<str>, Arc<Queue>, Hasher>,
    bases: HashMap<Box<str>, u8, Hasher>,
}

impl Registry {
    pub(crate) fn new(default_settings: QueueSettings, max_queues: usize) -> Self {
        let default = QueueName::new(QueueName::DEFAULT).expect("`default` is a valid name");
        Registry {
            default: Queue::new(default, 0, default_settings),
            named: ShardedLock::new(Named::default()),
            creations: WaitList::new(),
            next_queue_id: AtomicU64::new(1),
            max_queues,
        }
    }

    /// The queue named `name` (already validated), if it exists.
    pub(crate) fn get(&self, name: &str) -> Option<QueueRef<'_>> {
        if name == QueueName::DEFAULT {
            return Some(QueueRef::Default(&self.default));
        }
        let guard = read_sharded(&self.named);
        let queue = std::ptr::NonNull::from(guard.queues.get(name)?);
        Some(QueueRef::Named(NamedRef {
            _guard: guard,
            queue,
        }))
    }

    /// The queue named `name`, created with `settings` if it does not exist.
    /// `exempt` skips the `max_queues` check (a dead-letter queue or a
    /// redrive target, created by the broker, not by a client).
    pub(crate) fn get_or_create(
        &self,
        name: &QueueName,
        settings: impl Fn() -> QueueSettings,
        exempt: bool,
    ) -> Result<QueueRef<'_>, Error> {
        loop {
            if let Some(queue) = self.get(name.as_str()) {
                return Ok(queue);
            }
            let created = {
                let mut named = write_sharded(&self.named);
                if named.queues.contains_key(name.as_str()) {
                    false
                } else {
                    let base = name.base();
                    let counted = base != QueueName::DEFAULT;
                    if counted && !named.bases.contains_key(base) {
                        let in_use = named.bases.len();
                        if !exempt && in_use >= self.max_queues {
                            return Err(Error::TooManyQueues);
                        }
                    }
                    let id = self.next_queue_id.fetch_add(1, Ordering::Relaxed);
                    let queue = Queue::new(name.clone(), id, settings());
                    named.queues.insert(name.as_str().into(), queue);
                    if counted {
                        *named.bases.entry(base.into()).or_insert(0) += 1;
                    }
                    true
                }
            };
            if created {
                // After the insert is visible: fetches waiting for this name
                // look again and find it.
                self.creations.notify_all();
            }
            // Then found under a read guard like any other lookup; were it
            // deleted in between, creating it again is what was asked.
        }
    }

    /// Takes `name` out of the registry; the caller then empties the queue.
    pub(crate) fn remove(&self, name: &str) -> Result<Arc<Queue>, Error> {
        if name == QueueName::DEFAULT {
            return Err(Error::DefaultQueue);
        }
        let mut named = write_sharded(&self.named);
        let queue = named.queues.remove(name).ok_or(Error::QueueNotFound)?;
        let base = base_of(name);
        if base != QueueName::DEFAULT {
            if let Some(count) = named.bases.get_mut(base) {
                *count -= 1;
                if *count == 0 {
                    named.bases.remove(base);
                }
            }
        }
        Ok(queue)
    }

    /// Every queue, `default` included, sorted by name in byte order.
    pub(crate) fn all(&self) -> Vec<Arc<Queue>> {
        let mut all: Vec<Arc<Queue>> = read_sharded(&self.named).queues.values().cloned().collect();
        all.push(self.default.clone());
        all.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        all
    }
}
