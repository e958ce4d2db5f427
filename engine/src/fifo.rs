//! [`Fifo`]: the lock-free multi-producer multi-consumer queue under the
//! ready queue and the expiry queue.
//!
//! In normal builds it is crossbeam's `SegQueue`: unbounded, lock-free,
//! allocating one block per 31 elements, so a push or pop is a couple of
//! atomic operations and no lock. Loom cannot see inside `SegQueue`, so under
//! `cfg(loom)` the same narrow API (push, pop, len) is backed by a loom
//! `Mutex<VecDeque>`, with an atomic count that lets a pop find the queue
//! empty without synchronising, as `SegQueue`'s does: loom interleaves around
//! each call, and what it checks is *our* protocol on top of the queue.
//!
//! This type must stay a plain queue: no counters, no notifications. Those
//! belong to the broker, where the protocol is.

#[cfg(not(loom))]
mod imp {
    use crossbeam_queue::SegQueue;

    /// An unbounded lock-free FIFO.
    pub(crate) struct Fifo<T> {
        queue: SegQueue<T>,
    }

    impl<T> Fifo<T> {
        pub(crate) fn new() -> Self {
            Fifo {
                queue: SegQueue::new(),
            }
        }

        /// Appends `value` at the tail.
        pub(crate) fn push(&self, value: T) {
            self.queue.push(value);
        }

        /// Removes the head, if any.
        pub(crate) fn pop(&self) -> Option<T> {
            self.queue.pop()
        }

        /// The number of elements (a consistent snapshot, O(1)).
        pub(crate) fn len(&self) -> usize {
            self.queue.len()
        }
    }
}

#[cfg(loom)]
mod imp {
    use std::collections::VecDeque;

    use crate::sync::{fence, lock, AtomicUsize, Mutex, Ordering};

    /// The loom model of the FIFO: a loom mutex around a `VecDeque`, plus an
    /// element count that `pop` reads *without* the lock to decide that the
    /// queue is empty.
    ///
    /// That is how `SegQueue::pop` decides it: a `SeqCst` fence, then a
    /// relaxed load of the tail index. A pop that finds the queue empty
    /// therefore synchronises with no push. Were the model's pop always to
    /// take the lock, it would be ordered after every push that took the
    /// lock first, and loom would accept wake-up protocols that the real
    /// queue breaks (for instance a `Relaxed` load of the waiter count in
    /// `WaitList::notify_one`).
    pub(crate) struct Fifo<T> {
        queue: Mutex<VecDeque<T>>,
        /// `queue.len()`, changed only under the lock, read by `pop` without
        /// it.
        len: AtomicUsize,
    }

    impl<T> Fifo<T> {
        pub(crate) fn new() -> Self {
            Fifo {
                queue: Mutex::new(VecDeque::new()),
                len: AtomicUsize::new(0),
            }
        }

        pub(crate) fn push(&self, value: T) {
            let mut queue = lock(&self.queue);
            queue.push_back(value);
            // `SegQueue::push` advances the tail with a `SeqCst` CAS.
            self.len.fetch_add(1, Ordering::SeqCst);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            fence(Ordering::SeqCst);
            if self.len.load(Ordering::Relaxed) == 0 {
                return None;
            }
            let mut queue = lock(&self.queue);
            let value = queue.pop_front();
            if value.is_some() {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
            value
        }

        pub(crate) fn len(&self) -> usize {
            lock(&self.queue).len()
        }
    }
}

pub(crate) use imp::Fifo;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Fifo;

    #[test]
    fn first_in_first_out() {
        let fifo = Fifo::new();
        for i in 0..100 {
            fifo.push(i);
        }
        assert_eq!(fifo.len(), 100);
        for i in 0..100 {
            assert_eq!(fifo.pop(), Some(i));
        }
        assert_eq!(fifo.pop(), None);
        assert_eq!(fifo.len(), 0);
    }
}
