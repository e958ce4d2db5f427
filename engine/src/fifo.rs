//! [`Fifo`]: the lock-free multi-producer multi-consumer queue under the
//! ready queue and the expiry queue.
//!
//! In normal builds it is crossbeam's `SegQueue`: unbounded, lock-free,
//! allocating one block per 31 elements, so a push or pop is a couple of
//! atomic operations and no lock. Loom cannot see inside `SegQueue`, so under
//! `cfg(loom)` the same narrow API (push, pop, len) is backed by a loom
//! `Mutex<VecDeque>`: each call becomes one atomic step that loom interleaves
//! around, and what loom checks is *our* protocol on top of the queue.
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

    use crate::sync::{lock, Mutex};

    /// The loom model of the FIFO: a loom mutex around a `VecDeque`.
    pub(crate) struct Fifo<T> {
        queue: Mutex<VecDeque<T>>,
    }

    impl<T> Fifo<T> {
        pub(crate) fn new() -> Self {
            Fifo {
                queue: Mutex::new(VecDeque::new()),
            }
        }

        pub(crate) fn push(&self, value: T) {
            lock(&self.queue).push_back(value);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            lock(&self.queue).pop_front()
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
