//! [`WaitList`]: parked fetches and the wake-up protocol that gives long-poll
//! fetch its "no lost wake-up" guarantee without a lock on the publish path.
//!
//! # Protocol
//!
//! A fetch that finds the ready queue empty *registers* (adds a slot with its
//! `Waker`), then *re-checks* the queue before it sleeps. A producer (publish,
//! requeue, expiry) pushes to the queue, then calls [`WaitList::notify_one`].
//!
//! The classic lost wake-up is a store/load race: the producer checks "is
//! anyone waiting?" before the consumer's registration is visible, while the
//! consumer's re-check does not yet see the push. Both sides here touch the
//! same atomic, `waiting`, with a read-modify-write (the consumer increments
//! it when registering; the producer does `fetch_add(0)`, an RMW that reads
//! the latest value). RMWs on one atomic are totally ordered, so either:
//!
//! * the registration comes first: the producer reads `waiting > 0`, takes
//!   the lock and wakes a slot; or
//! * the producer's RMW comes first: the consumer's acquiring RMW reads from
//!   its release sequence, so the push happened-before the consumer's
//!   re-check, which therefore sees the message.
//!
//! A plain `load` on the producer side would need `SeqCst` fences on both
//! sides (Dekker), which loom does not model faithfully; one uncontended RMW
//! per publish is cheaper than a lock and is checked by loom as written.
//!
//! # Fairness: a waiter keeps its place
//!
//! Keys grow with registration, and the slots that are *armed* (registered
//! and not notified) sit in a `BTreeSet` ordered by key, so `notify_one`
//! always picks the waiter that began waiting first. A woken waiter does not
//! leave the list to look at the queue: [`WaitList::poll_notified`] re-arms
//! it under its *old* key, so if a racing fetch took the message first it is
//! still first in line for the next one, instead of registering again at the
//! back. Re-arming is an RMW on `waiting` followed by a re-check, exactly
//! like registering, so it cannot lose a wake-up either.
//!
//! # Hand-off
//!
//! `notify_one` marks the oldest armed slot as notified and wakes it. A
//! waiter that deregisters a notified slot must call `notify_one` again,
//! whether it leaves empty-handed (timeout, close, or its future dropped:
//! "a woken waiter that is then cancelled passes the wake-up on") or with a
//! message its own re-check found, since the notification may have come for
//! another message after that re-check. [`WaitList::deregister`] tells the
//! caller when it applies.
//!
//! # Cost
//!
//! Registration, re-arming and deregistration are O(log w) for w waiters on
//! the list (a `BTreeSet` insert or remove) and notification O(log w) (pop
//! the first); slots live in a `HashMap` by key. The lock is taken only
//! when someone waits: a producer with no waiter pays one uncontended RMW.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::task::{Context, Waker};

use crate::queue::Queue;
use crate::sync::{lock, AtomicUsize, Mutex, Ordering};

/// Identifies one registration.
pub(crate) type WaitKey = u64;

pub(crate) struct WaitList {
    /// Slots that are registered and not yet notified. Every change is an RMW
    /// made while holding `inner`; producers read it with an RMW (see the
    /// module docs for why).
    waiting: AtomicUsize,
    inner: Mutex<Inner>,
}

struct Slot {
    waker: Waker,
    notified: bool,
}

struct Inner {
    next_key: WaitKey,
    /// Keys of the armed slots (registered, not notified), oldest first.
    armed: BTreeSet<WaitKey>,
    slots: HashMap<WaitKey, Slot>,
}

impl WaitList {
    pub(crate) fn new() -> Self {
        WaitList {
            waiting: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                next_key: 0,
                armed: BTreeSet::new(),
                slots: HashMap::new(),
            }),
        }
    }

    /// Adds a waiter. The caller must re-check its condition afterwards.
    pub(crate) fn register(&self, waker: &Waker) -> WaitKey {
        let mut inner = lock(&self.inner);
        let key = inner.next_key;
        inner.next_key += 1;
        inner.armed.insert(key);
        inner.slots.insert(
            key,
            Slot {
                waker: waker.clone(),
                notified: false,
            },
        );
        self.waiting.fetch_add(1, Ordering::AcqRel);
        key
    }

    /// If `key` was notified, re-arms it in its old place (it stays first in
    /// line) and returns `true`: the caller must re-check its condition.
    /// Otherwise refreshes its waker and returns `false`.
    pub(crate) fn poll_notified(&self, key: WaitKey, waker: &Waker) -> bool {
        let mut inner = lock(&self.inner);
        let Inner { armed, slots, .. } = &mut *inner;
        match slots.get_mut(&key) {
            Some(slot) if slot.notified => {
                slot.notified = false;
                if !slot.waker.will_wake(waker) {
                    slot.waker = waker.clone();
                }
                armed.insert(key);
                // An RMW, like registering: a producer that pushed before
                // its own RMW on `waiting` is seen by the caller's re-check.
                self.waiting.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(slot) => {
                if !slot.waker.will_wake(waker) {
                    slot.waker = waker.clone();
                }
                false
            }
            // Slots are removed only by their owner; treat a missing one as
            // notified so the owner re-checks rather than sleeping forever.
            None => true,
        }
    }

    /// Removes `key`. Returns `true` if it had been notified, in which case
    /// the caller owns a wake-up it did not use and must pass it on (even
    /// if it is leaving with a message: the wake-up may be for another).
    pub(crate) fn deregister(&self, key: WaitKey) -> bool {
        let mut inner = lock(&self.inner);
        match inner.slots.remove(&key) {
            Some(slot) if slot.notified => true,
            Some(_) => {
                inner.armed.remove(&key);
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                false
            }
            None => false,
        }
    }

    /// Wakes the oldest waiter that has not been notified yet, if any.
    ///
    /// Call after making a message visible in the ready queue.
    pub(crate) fn notify_one(&self) {
        // An RMW, not a load: it orders this call after the push that
        // preceded it for any waiter registering concurrently.
        if self.waiting.fetch_add(0, Ordering::AcqRel) == 0 {
            return;
        }
        let waker = {
            let mut inner = lock(&self.inner);
            let Inner { armed, slots, .. } = &mut *inner;
            let mut chosen = None;
            if let Some(key) = armed.pop_first() {
                if let Some(slot) = slots.get_mut(&key) {
                    slot.notified = true;
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    chosen = Some(slot.waker.clone());
                }
            }
            chosen
        };
        // Wake outside the lock: the woken task may run at once and lock it.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes the `n` oldest waiters not notified yet (fewer if fewer wait),
    /// in one pass under the lock: what a batch that made `n` messages
    /// ready calls once, instead of `notify_one` `n` times.
    ///
    /// Call after making the messages visible in the ready queue.
    pub(crate) fn notify_many(&self, n: usize) {
        if n == 0 {
            return;
        }
        if n == 1 {
            return self.notify_one();
        }
        // The same RMW as `notify_one`, for the same reason.
        if self.waiting.fetch_add(0, Ordering::AcqRel) == 0 {
            return;
        }
        let wakers: Vec<Waker> = {
            let mut inner = lock(&self.inner);
            let Inner { armed, slots, .. } = &mut *inner;
            let mut wakers = Vec::new();
            while wakers.len() < n {
                let Some(key) = armed.pop_first() else { break };
                if let Some(slot) = slots.get_mut(&key) {
                    slot.notified = true;
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    wakers.push(slot.waker.clone());
                }
            }
            wakers
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Notifies and wakes every registered waiter (close, a queue created
    /// or deleted). Each re-checks and, if it stays, keeps its place.
    pub(crate) fn notify_all(&self) {
        // The same RMW as `notify_one`, for the same reason.
        if self.waiting.fetch_add(0, Ordering::AcqRel) == 0 {
            return;
        }
        let wakers: Vec<Waker> = {
            let mut inner = lock(&self.inner);
            let Inner { armed, slots, .. } = &mut *inner;
            armed.clear();
            slots
                .values_mut()
                .filter(|slot| !slot.notified)
                .map(|slot| {
                    slot.notified = true;
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    slot.waker.clone()
                })
                .collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Registered waiters not yet notified (for stats and tests).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// Where a waiting fetch is registered, cleaned up on every exit path.
#[derive(Default)]
pub(crate) struct Parked<'a> {
    at: Option<Place<'a>>,
}

pub(crate) enum Place<'a> {
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
    pub(crate) fn is_on(&self, queue: Option<&Arc<Queue>>) -> bool {
        match (&self.at, queue) {
            (Some(Place::Queue(on, _)), Some(queue)) => Arc::ptr_eq(on, queue),
            (Some(Place::Creations(..)), None) => true,
            _ => false,
        }
    }

    pub(crate) fn park(&mut self, place: Place<'a>) {
        self.leave();
        self.at = Some(place);
    }

    /// `true` if woken (and re-armed in place): look again.
    pub(crate) fn poll_notified(&self, cx: &Context<'_>) -> bool {
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
    pub(crate) fn leave(&mut self) {
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

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct CountingWaker(StdAtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, StdOrdering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(StdAtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn notify_one_wakes_the_oldest_waiter_once() {
        let list = WaitList::new();
        let (c1, w1) = counting_waker();
        let (c2, w2) = counting_waker();
        let k1 = list.register(&w1);
        let k2 = list.register(&w2);
        assert_eq!(list.waiting(), 2);
        list.notify_one();
        assert_eq!(c1.0.load(StdOrdering::SeqCst), 1);
        assert_eq!(c2.0.load(StdOrdering::SeqCst), 0);
        assert_eq!(list.waiting(), 1);
        assert!(!list.poll_notified(k2, &w2));
        list.notify_one();
        assert_eq!(c2.0.load(StdOrdering::SeqCst), 1);
        assert!(list.deregister(k2), "k2 was notified and must pass it on");
        assert!(list.deregister(k1), "k1 was notified and never polled");
        assert_eq!(list.waiting(), 0);
    }

    #[test]
    fn a_woken_waiter_that_finds_nothing_keeps_its_place() {
        let list = WaitList::new();
        let (c1, w1) = counting_waker();
        let (c2, w2) = counting_waker();
        let k1 = list.register(&w1);
        let k2 = list.register(&w2);
        list.notify_one();
        // k1 wakes, re-checks and (say) loses the message to a racing fetch:
        // it is re-armed under its old key.
        assert!(list.poll_notified(k1, &w1));
        assert_eq!(list.waiting(), 2);
        assert!(!list.poll_notified(k1, &w1));
        // The next message still goes to k1, not to k2 behind it.
        list.notify_one();
        assert_eq!(c1.0.load(StdOrdering::SeqCst), 2);
        assert_eq!(c2.0.load(StdOrdering::SeqCst), 0);
        assert!(list.poll_notified(k1, &w1));
        assert!(!list.deregister(k1));
        assert!(!list.deregister(k2));
        assert_eq!(list.waiting(), 0);
    }

    #[test]
    fn notify_without_waiters_is_a_no_op() {
        let list = WaitList::new();
        list.notify_one();
        list.notify_all();
        let (c, w) = counting_waker();
        let k = list.register(&w);
        assert_eq!(c.0.load(StdOrdering::SeqCst), 0);
        assert!(!list.deregister(k));
        assert_eq!(list.waiting(), 0);
    }

    #[test]
    fn deregistered_waiters_leave_nothing_behind() {
        let list = WaitList::new();
        let (_, w) = counting_waker();
        for _ in 0..10_000 {
            let k = list.register(&w);
            assert!(!list.deregister(k));
        }
        {
            let inner = lock(&list.inner);
            assert!(inner.armed.is_empty() && inner.slots.is_empty());
        }
        let (c, w2) = counting_waker();
        let k = list.register(&w2);
        list.notify_one();
        assert_eq!(c.0.load(StdOrdering::SeqCst), 1);
        assert!(list.poll_notified(k, &w2));
    }

    #[test]
    fn notify_all_wakes_everyone() {
        let list = WaitList::new();
        let counters: Vec<_> = (0..5).map(|_| counting_waker()).collect();
        let keys: Vec<_> = counters.iter().map(|(_, w)| list.register(w)).collect();
        list.notify_all();
        assert_eq!(list.waiting(), 0);
        for ((c, w), k) in counters.iter().zip(keys) {
            assert_eq!(c.0.load(StdOrdering::SeqCst), 1);
            assert!(list.poll_notified(k, w));
        }
    }
}
