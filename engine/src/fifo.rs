//! [`Fifo`]: the multi-producer multi-consumer queue under each ready queue.
//! Nobody locks: producers push and consumers pop on crossbeam's lock-free
//! `SegQueue`.
//!
//! # Shape
//!
//! One element per `SegQueue` slot. A batch is pushed one element at a time,
//! in order, so its elements keep their order but other pushes may land
//! between them (SPEC "Batches" allows it), and a batch pop is a run of
//! single pops that stops at `max` or when the caller says it has enough.
//! Each push and each pop is one of `SegQueue`'s own lock-free operations:
//! a preempted consumer holds up nobody, which a head lock (the previous
//! design, which kept a batch contiguous) could not promise.
//!
//! # Loom
//!
//! Loom cannot see inside `SegQueue`, so under `cfg(loom)` the two
//! primitives below it, `push` and `pop`, are backed by a model of the
//! queue's documented contract: a linearizable MPMC FIFO whose `pop` may
//! decide the queue is empty without synchronising with any push (see
//! `imp` below). Everything else in this file (`push_all`, `pop_while`)
//! is built on those two primitives and runs unchanged under loom.
//!
//! This type must stay a plain queue: no counters of the broker's, no
//! notifications. Those belong to the broker, where the protocol is.

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

        /// The number of elements; exact when nothing races it.
        pub(crate) fn len(&self) -> usize {
            self.queue.len()
        }

        /// Whether no element is there.
        pub(crate) fn is_empty(&self) -> bool {
            self.queue.is_empty()
        }
    }
}

#[cfg(loom)]
mod imp {
    use std::collections::VecDeque;

    use crate::sync::{fence, lock, AtomicUsize, Mutex, Ordering};

    /// The loom model of `SegQueue`'s contract: a loom mutex around a
    /// `VecDeque` makes each push and pop one linearizable step, and an
    /// element count lets `pop` decide the queue is empty *without* the
    /// lock.
    ///
    /// That is how `SegQueue::pop` decides it: a `SeqCst` fence, then a
    /// relaxed load of the tail index. A pop that finds the queue empty
    /// therefore synchronises with no push. Were the model's pop always to
    /// take the lock, it would be ordered after every push that took the
    /// lock first, and loom would accept wake-up protocols that the real
    /// queue breaks (for instance a `Relaxed` load of the waiter count in
    /// `WaitList::notify_one`). The mutex is the model's, not the engine's:
    /// in production there is none.
    pub(crate) struct Fifo<T> {
        queue: Mutex<VecDeque<T>>,
        /// `queue.len()`, changed only under the lock, read without it.
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

        /// A snapshot, as `SegQueue::len` is.
        pub(crate) fn len(&self) -> usize {
            self.len.load(Ordering::SeqCst)
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }
}

pub(crate) use imp::Fifo;

impl<T> Fifo<T> {
    /// Appends `values` at the tail, in order. Other pushes may land
    /// between them.
    pub(crate) fn push_all(&self, values: impl IntoIterator<Item = T>) {
        for value in values {
            self.push(value);
        }
    }

    /// Pops up to `max` elements from the head, in order, onto `out`,
    /// asking `more` after each one whether to go on. Returns how many it
    /// took. Each pop is a `SegQueue` pop of its own: concurrent pops may
    /// take elements in between (the answer is still in queue order).
    pub(crate) fn pop_while(
        &self,
        max: usize,
        mut more: impl FnMut(&T) -> bool,
        out: &mut Vec<T>,
    ) -> usize {
        let start = out.len();
        while out.len() - start < max {
            let Some(value) = self.pop() else { break };
            let go_on = more(&value);
            if out.len() == start {
                // Room once something is there: a fetch that finds the
                // queue empty (every poll of a waiting one) allocates
                // nothing.
                out.reserve(max.min(256));
            }
            out.push(value);
            if !go_on {
                break;
            }
        }
        out.len() - start
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};

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
        assert!(fifo.is_empty());
    }

    #[test]
    fn pop_while_stops_at_max_or_when_told_and_keeps_order() {
        let fifo = Fifo::new();
        fifo.push(0);
        fifo.push_all(vec![1, 2, 3, 4]);
        fifo.push_all(Vec::new());
        fifo.push_all([5, 6, 70, 8, 9]);
        assert_eq!(fifo.len(), 10);
        let mut out = Vec::new();
        assert_eq!(fifo.pop_while(3, |_| true, &mut out), 3);
        assert_eq!(out, [0, 1, 2]);
        out.clear();
        // The element that says "enough" is the last one taken.
        assert_eq!(fifo.pop_while(10, |&v| v < 50, &mut out), 5);
        assert_eq!(out, [3, 4, 5, 6, 70]);
        out.clear();
        assert_eq!(fifo.pop_while(0, |_| true, &mut out), 0);
        assert_eq!(fifo.pop_while(1, |_| true, &mut out), 1);
        assert_eq!(fifo.pop_while(10, |&v| v < 9, &mut out), 1);
        assert_eq!(out, [8, 9]);
        assert!(fifo.is_empty());
        let mut fresh = Vec::new();
        assert_eq!(fifo.pop_while(10, |_| true, &mut fresh), 0);
        assert_eq!(fresh.capacity(), 0, "an empty pop allocates nothing");
    }

    /// Global order across consumers, per producer: if one consumer's pop
    /// of a producer's message finished before another consumer's pop of
    /// an earlier message from the same producer began, the queue handed
    /// them out of order. Each pop is bracketed by two tickets from one
    /// shared counter, so "finished before began" is observable across
    /// threads; single pops and batch pops race singles and batch pushes.
    ///
    /// Seen failing on a seeded bug, a `pop` that takes two elements and
    /// pushes the first back to the tail: "producer 0's message 2 was
    /// popped (tickets 64867..64868) before a pop of an earlier message of
    /// it began (ticket 94990)".
    #[test]
    fn every_producers_order_holds_across_consumers() {
        const PRODUCERS: u64 = 3;
        const PER_PRODUCER: u64 = 20_000;
        const CONSUMERS: usize = 3;
        let fifo = Arc::new(Fifo::<(u64, u64)>::new());
        let clock = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(PRODUCERS as usize + CONSUMERS));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (fifo, start) = (fifo.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let mut seq = 0;
                    while seq < PER_PRODUCER {
                        // Singles and batches of up to 7, in order.
                        let n = (seq % 8).min(PER_PRODUCER - seq);
                        if n <= 1 {
                            fifo.push((p, seq));
                            seq += 1;
                        } else {
                            fifo.push_all((seq..seq + n).map(|s| (p, s)));
                            seq += n;
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|c| {
                let (fifo, clock, done, start) =
                    (fifo.clone(), clock.clone(), done.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    // (producer, seq, ticket before, ticket after)
                    let mut seen = Vec::new();
                    let mut batch = Vec::new();
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        let before = clock.fetch_add(1, Ordering::SeqCst);
                        batch.clear();
                        if c == 0 {
                            fifo.pop_while(5, |_| true, &mut batch);
                        } else if let Some(value) = fifo.pop() {
                            batch.push(value);
                        }
                        let after = clock.fetch_add(1, Ordering::SeqCst);
                        if batch.is_empty() && finished {
                            break;
                        }
                        for &(p, s) in &batch {
                            seen.push((p, s, before, after));
                        }
                    }
                    seen
                })
            })
            .collect();
        for producer in producers {
            producer.join().expect("producer");
        }
        done.store(true, Ordering::Release);
        let mut all: Vec<(u64, u64, u64, u64)> = consumers
            .into_iter()
            .flat_map(|c| c.join().expect("consumer"))
            .collect();
        assert_eq!(all.len() as u64, PRODUCERS * PER_PRODUCER, "lost or extra");
        all.sort_unstable();
        for p in 0..PRODUCERS {
            let mine: Vec<_> = all.iter().filter(|m| m.0 == p).collect();
            assert!(mine.iter().enumerate().all(|(i, m)| m.1 == i as u64));
            // The latest start among messages 0..=i: message i+1 must not
            // have finished popping before it.
            let mut latest_start = 0;
            for pair in mine.windows(2) {
                latest_start = latest_start.max(pair[0].2);
                let next = pair[1];
                assert!(
                    next.3 > latest_start,
                    "producer {p}'s message {} was popped (tickets {}..{}) before a pop of \
                     an earlier message of it began (ticket {latest_start})",
                    next.1,
                    next.2,
                    next.3,
                );
            }
        }
    }
}
