//! [`Fifo`]: the multi-producer multi-consumer queue under each ready queue,
//! whose producers never lock and whose batch pushes stay contiguous.
//!
//! # Shape
//!
//! Producers push *runs* onto crossbeam's lock-free `SegQueue`: a single
//! message is a run of one, and a batch publish is one run of many, pushed
//! with one CAS. That one push is what makes a batch join the tail
//! contiguous and in order even while single publishes race it, and it
//! amortises the queue's cost over the batch.
//!
//! Consumers pop under a small `head` mutex. A consumer that takes only part
//! of a run (a single fetch from a batch, or a batch fetch that reached its
//! `max` or its byte cap) leaves the rest in `head`, and every pop looks
//! there first. The mutex is what makes that safe: without it, a second
//! consumer could pop the run behind while the first had not yet put back
//! the remainder, and deliver a later message before an earlier one.
//! Consumers of one queue already serialise on its timer lock to schedule
//! their deadlines, so this costs an uncontended lock, not parallelism;
//! producers never take it.
//!
//! # Counting
//!
//! `len` is the runs in the `SegQueue` (O(1)) plus `surplus`: each batch
//! run's messages beyond its first, and everything in `head`. A single push
//! or pop leaves `surplus` alone, so the one-message paths pay no extra
//! atomic. Batch pushes add before they push and pops subtract after they
//! take, so `len` may briefly over-count, never under-count, a message that
//! is still there. [`Fifo::has_any`] answers under the head lock, exactly.
//!
//! # Loom
//!
//! Loom cannot see inside `SegQueue`, so under `cfg(loom)` the same API is
//! backed by a loom `Mutex<VecDeque>`, with an atomic count that lets a pop
//! find the queue empty without synchronising, as `SegQueue`'s does: loom
//! interleaves around each call, and what it checks is *our* protocol on top
//! of the queue.
//!
//! This type must stay a plain queue: no counters of the broker's, no
//! notifications. Those belong to the broker, where the protocol is.

#[cfg(not(loom))]
mod imp {
    use crossbeam_queue::SegQueue;

    use crate::sync::{lock, AtomicUsize, Mutex, Ordering};

    /// What one push appended: one element, or a batch in order.
    enum Run<T> {
        One(T),
        Many(std::vec::IntoIter<T>),
    }

    /// An unbounded FIFO with lock-free pushes and contiguous batches.
    pub(crate) struct Fifo<T> {
        tail: SegQueue<Run<T>>,
        /// The front of the queue, ahead of everything in `tail`: the rest
        /// of a run a consumer took only part of.
        head: Mutex<Option<Run<T>>>,
        /// Elements not counted by `tail.len()` (see the module docs).
        surplus: AtomicUsize,
    }

    impl<T> Fifo<T> {
        pub(crate) fn new() -> Self {
            Fifo {
                tail: SegQueue::new(),
                head: Mutex::new(None),
                surplus: AtomicUsize::new(0),
            }
        }

        /// Appends `value` at the tail.
        pub(crate) fn push(&self, value: T) {
            self.tail.push(Run::One(value));
        }

        /// Appends `values` at the tail, in order and contiguous: no
        /// concurrent push lands between them.
        pub(crate) fn push_all(&self, values: Vec<T>) {
            match values.len() {
                0 => {}
                1 => self
                    .tail
                    .push(Run::One(values.into_iter().next().expect("one"))),
                n => {
                    // Before the push: `len` may over-count, never under.
                    self.surplus.fetch_add(n - 1, Ordering::Relaxed);
                    self.tail.push(Run::Many(values.into_iter()));
                }
            }
        }

        /// Removes the head, if any.
        pub(crate) fn pop(&self) -> Option<T> {
            let mut head = lock(&self.head);
            if let Some(run) = head.as_mut() {
                return match run {
                    Run::One(_) => match head.take() {
                        Some(Run::One(value)) => {
                            self.surplus.fetch_sub(1, Ordering::Relaxed);
                            Some(value)
                        }
                        _ => unreachable!("matched One above"),
                    },
                    Run::Many(rest) => {
                        let value = rest.next();
                        if rest.len() == 0 {
                            *head = None;
                        }
                        self.surplus.fetch_sub(1, Ordering::Relaxed);
                        value
                    }
                };
            }
            match self.tail.pop()? {
                Run::One(value) => Some(value),
                Run::Many(mut rest) => {
                    let value = rest.next();
                    // The run's `n - 1` surplus now counts its remainder in
                    // `head`, which is exactly `n - 1`: nothing to adjust.
                    if rest.len() > 0 {
                        *head = Some(Run::Many(rest));
                    }
                    value
                }
            }
        }

        /// Removes up to `max` elements from the head, in order, into
        /// `out`, stopping at the first one `admit` refuses (which stays at
        /// the head). Returns how many it took.
        pub(crate) fn pop_many(
            &self,
            max: usize,
            mut admit: impl FnMut(&T) -> bool,
            out: &mut Vec<T>,
        ) -> usize {
            let mut head = lock(&self.head);
            let start = out.len();
            // `surplus` goes down by what leaves `head` and by each batch
            // run's surplus popped from `tail`, and up by what is put back.
            let mut leaving = 0usize;
            let mut entering = 0usize;
            let mut from_head = head.is_some();
            while out.len() - start < max {
                let run = match head.take() {
                    Some(run) => run,
                    None => {
                        from_head = false;
                        match self.tail.pop() {
                            Some(run) => run,
                            None => break,
                        }
                    }
                };
                if out.len() == start {
                    // Room once something is there: a fetch that finds the
                    // queue empty (every poll of a waiting one) allocates
                    // nothing.
                    out.reserve(max.min(256));
                }
                match run {
                    Run::One(value) => {
                        if !admit(&value) {
                            *head = Some(Run::One(value));
                            if !from_head {
                                entering += 1;
                            }
                            break;
                        }
                        if from_head {
                            leaving += 1;
                        }
                        out.push(value);
                    }
                    Run::Many(mut rest) => {
                        // A run from `tail` counted `len - 1` in surplus;
                        // one from `head` counted `len`.
                        let counted = if from_head {
                            rest.len()
                        } else {
                            rest.len() - 1
                        };
                        let mut refused = false;
                        while out.len() - start < max {
                            match rest.as_slice().first() {
                                Some(next) if admit(next) => {
                                    out.push(rest.next().expect("peeked"));
                                }
                                Some(_) => {
                                    refused = true;
                                    break;
                                }
                                None => break,
                            }
                        }
                        let remaining = rest.len();
                        leaving += counted;
                        entering += remaining;
                        if remaining > 0 {
                            *head = Some(Run::Many(rest));
                        }
                        if refused {
                            break;
                        }
                    }
                }
                from_head = false;
            }
            if entering > leaving {
                self.surplus
                    .fetch_add(entering - leaving, Ordering::Relaxed);
            } else if leaving > entering {
                self.surplus
                    .fetch_sub(leaving - entering, Ordering::Relaxed);
            }
            out.len() - start
        }

        /// The number of elements; exact when nothing races it.
        pub(crate) fn len(&self) -> usize {
            self.tail.len() + self.surplus.load(Ordering::Relaxed)
        }

        /// Whether an element is there, exactly: under the head lock, which
        /// every pop holds.
        pub(crate) fn has_any(&self) -> bool {
            let head = lock(&self.head);
            head.is_some() || !self.tail.is_empty()
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

        pub(crate) fn push_all(&self, values: Vec<T>) {
            if values.is_empty() {
                return;
            }
            let mut queue = lock(&self.queue);
            let n = values.len();
            queue.extend(values);
            // One push of one run: one `SeqCst` CAS in `SegQueue`.
            self.len.fetch_add(n, Ordering::SeqCst);
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

        pub(crate) fn pop_many(
            &self,
            max: usize,
            mut admit: impl FnMut(&T) -> bool,
            out: &mut Vec<T>,
        ) -> usize {
            fence(Ordering::SeqCst);
            if self.len.load(Ordering::Relaxed) == 0 {
                return 0;
            }
            let mut queue = lock(&self.queue);
            let mut taken = 0;
            while taken < max {
                match queue.front() {
                    Some(next) if admit(next) => {
                        out.push(queue.pop_front().expect("peeked"));
                        taken += 1;
                    }
                    _ => break,
                }
            }
            self.len.fetch_sub(taken, Ordering::Relaxed);
            taken
        }

        pub(crate) fn len(&self) -> usize {
            lock(&self.queue).len()
        }

        pub(crate) fn has_any(&self) -> bool {
            !lock(&self.queue).is_empty()
        }
    }
}

pub(crate) use imp::Fifo;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Fifo;

    fn drain(fifo: &Fifo<u32>) -> Vec<u32> {
        std::iter::from_fn(|| fifo.pop()).collect()
    }

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
        assert!(!fifo.has_any());
    }

    #[test]
    fn runs_keep_their_order_and_the_count_follows_every_pop() {
        let fifo = Fifo::new();
        fifo.push(0);
        fifo.push_all(vec![1, 2, 3, 4]);
        fifo.push(5);
        fifo.push_all(vec![6]);
        fifo.push_all(vec![]);
        fifo.push_all(vec![7, 8, 9]);
        assert_eq!(fifo.len(), 10);
        assert_eq!(fifo.pop(), Some(0));
        assert_eq!(fifo.pop(), Some(1));
        // The rest of the run waits at the head.
        assert_eq!(fifo.len(), 8);
        let mut out = Vec::new();
        assert_eq!(fifo.pop_many(2, |_| true, &mut out), 2);
        assert_eq!(out, [2, 3]);
        assert_eq!(fifo.len(), 6);
        out.clear();
        assert_eq!(fifo.pop_many(4, |_| true, &mut out), 4);
        assert_eq!(out, [4, 5, 6, 7]);
        assert_eq!(fifo.len(), 2);
        assert!(fifo.has_any());
        assert_eq!(drain(&fifo), [8, 9]);
        assert_eq!(fifo.len(), 0);
        assert!(!fifo.has_any());
    }

    #[test]
    fn a_refused_element_stays_at_the_head_wherever_it_was() {
        let fifo = Fifo::new();
        fifo.push(10);
        fifo.push(99);
        fifo.push_all(vec![1, 2, 98, 3]);
        let mut out = Vec::new();
        // Refused while a single run: it goes to the head and stays first.
        assert_eq!(fifo.pop_many(10, |&v| v < 50, &mut out), 1);
        assert_eq!(out, [10]);
        assert_eq!(fifo.len(), 5);
        out.clear();
        assert_eq!(fifo.pop_many(10, |&v| v < 50, &mut out), 0);
        assert_eq!(fifo.len(), 5);
        assert_eq!(fifo.pop(), Some(99));
        // Refused inside a batch run.
        assert_eq!(fifo.pop_many(10, |&v| v < 50, &mut out), 2);
        assert_eq!(out, [1, 2]);
        assert_eq!(fifo.len(), 2);
        out.clear();
        assert_eq!(fifo.pop_many(10, |_| true, &mut out), 2);
        assert_eq!(out, [98, 3]);
        assert_eq!((fifo.len(), fifo.has_any()), (0, false));
    }

    #[test]
    fn concurrent_pushes_never_land_inside_a_batch() {
        let fifo = std::sync::Arc::new(Fifo::new());
        let producers: Vec<_> = (0..4u32)
            .map(|p| {
                let fifo = fifo.clone();
                std::thread::spawn(move || {
                    for b in 0..300u32 {
                        let base = (p * 1000 + b) * 100;
                        if p % 2 == 0 {
                            fifo.push_all((0..5).map(|i| base + i).collect());
                        } else {
                            fifo.push(base + 99);
                        }
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.join().unwrap();
        }
        let all = drain(&fifo);
        assert_eq!(all.len(), 2 * 300 * 5 + 2 * 300);
        let mut i = 0;
        while i < all.len() {
            if all[i] % 100 == 99 {
                i += 1;
                continue;
            }
            let base = all[i] - all[i] % 100;
            let run: Vec<u32> = (0..5).map(|k| base + k).collect();
            assert_eq!(all[i..i + 5], run[..], "batch at {i} broken up");
            i += 5;
        }
    }

    #[test]
    fn batches_stay_contiguous_under_concurrent_pushes_and_pops() {
        const PRODUCERS: u32 = 4;
        const BATCHES: u32 = 500;
        const RUN: u32 = 7;
        let fifo = std::sync::Arc::new(Fifo::new());
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let fifo = fifo.clone();
                std::thread::spawn(move || {
                    for b in 0..BATCHES {
                        let base = (p * BATCHES + b) * 100;
                        if b % 2 == 0 {
                            fifo.push_all((0..RUN).map(|i| base + i).collect());
                        } else {
                            fifo.push(base + 99);
                        }
                    }
                })
            })
            .collect();
        // Consumers take one or a few at a time; each records what it saw,
        // and each batch run must come out in order and unbroken overall.
        let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let consumers: Vec<_> = (0..2)
            .map(|c| {
                let (fifo, taken) = (fifo.clone(), taken.clone());
                std::thread::spawn(move || {
                    let mut idle = 0;
                    while idle < 10_000 {
                        let mut got = Vec::new();
                        // Both pop forms record under one lock with the
                        // pop itself impossible to hold, so compare per
                        // consumer below instead of globally.
                        if c == 0 {
                            if let Some(v) = fifo.pop() {
                                got.push(v);
                            }
                        } else {
                            fifo.pop_many(3, |_| true, &mut got);
                        }
                        if got.is_empty() {
                            idle += 1;
                            std::thread::yield_now();
                        } else {
                            idle = 0;
                            taken.lock().unwrap().push((c, got));
                        }
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.join().unwrap();
        }
        for consumer in consumers {
            consumer.join().unwrap();
        }
        let mut all: Vec<u32> = drain(&fifo);
        let taken = std::mem::take(&mut *taken.lock().unwrap());
        all.extend(taken.iter().flat_map(|(_, got)| got.iter().copied()));
        let expected = PRODUCERS * (BATCHES / 2) * (RUN + 1);
        assert_eq!(all.len() as u32, expected);
        // Within each consumer's own sequence, a batch's elements appear in
        // increasing order (a later element never overtakes an earlier one).
        for c in 0..2 {
            let seq: Vec<u32> = taken
                .iter()
                .filter(|(who, _)| *who == c)
                .flat_map(|(_, got)| got.iter().copied())
                .collect();
            let mut last = std::collections::HashMap::new();
            for v in seq {
                if v % 100 == 99 {
                    continue;
                }
                if let Some(prev) = last.insert(v / 100, v % 100) {
                    assert!(prev < v % 100, "batch {} out of order", v / 100);
                }
            }
        }
        assert_eq!(fifo.len(), 0);
    }
}
