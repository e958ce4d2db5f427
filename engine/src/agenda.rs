//! [`Agenda`]: which queue has something coming due next, across all
//! queues, and [`DueSignal`], how the timekeeping task learns that an
//! earlier due time appeared while it sleeps.
//!
//! The broker's timekeeping is one task (the server's): it asks
//! [`Broker::expire_due`](crate::Broker::expire_due) to handle everything
//! due, sleeps until [`Agenda::next_due`], and wakes early when the signal
//! fires. No polling: an idle broker's timekeeper sleeps until woken.
//!
//! Each queue keeps at most one *live* hint here (see `timer.rs` for the
//! invariant); a hint whose queue has since settled or moved its first entry
//! costs one sweep of that queue that finds nothing due. Hints hold a
//! `Weak` reference, so a deleted queue is never kept alive by one.
//!
//! Lock order: a queue's timer, then the agenda, then the signal. The
//! agenda never calls into a queue while holding its own lock.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::Weak;
use std::task::{Poll, Waker};

use crate::clock::Timestamp;
use crate::queue::Queue;
use crate::sync::{lock, Mutex};

/// A hint's key: when, which queue, which shard of its timer.
type HintKey = (Timestamp, u64, u32);

/// A queue with something due: the queue, its id, and a bit mask of the
/// timer shards whose hints came due.
pub(crate) struct Due {
    pub(crate) queue: Weak<Queue>,
    pub(crate) queue_id: u64,
    pub(crate) shards: u64,
}

pub(crate) struct Agenda {
    hints: Mutex<BTreeMap<HintKey, Weak<Queue>>>,
    signal: DueSignal,
}

impl Agenda {
    pub(crate) fn new() -> Self {
        Agenda {
            hints: Mutex::new(BTreeMap::new()),
            signal: DueSignal::new(),
        }
    }

    /// Shard `shard` of queue `queue_id`'s timer has something due at `at`.
    /// Signals the timekeeper if that is now the earliest hint.
    pub(crate) fn hint(&self, at: Timestamp, queue_id: u64, shard: u32, queue: &Weak<Queue>) {
        let key = (at, queue_id, shard);
        let earliest = {
            let mut hints = lock(&self.hints);
            let earliest = hints
                .first_key_value()
                .map_or(true, |(first, _)| *first > key);
            hints.insert(key, queue.clone());
            earliest
        };
        if earliest {
            self.signal.notify();
        }
    }

    /// Withdraws a hint (replaced by an earlier one, or its queue deleted).
    pub(crate) fn unhint(&self, at: Timestamp, queue_id: u64, shard: u32) {
        lock(&self.hints).remove(&(at, queue_id, shard));
    }

    /// Removes the hints at or before `now` and returns their queues, each
    /// once, with the shards hinted.
    pub(crate) fn take_due(&self, now: Timestamp) -> Vec<Due> {
        let mut hints = lock(&self.hints);
        let mut due: Vec<Due> = Vec::new();
        while let Some(entry) = hints.first_entry() {
            let (at, queue_id, shard) = *entry.key();
            if at > now {
                break;
            }
            let queue = entry.remove();
            match due.iter_mut().find(|d| d.queue_id == queue_id) {
                Some(d) => d.shards |= 1 << shard,
                None => due.push(Due {
                    queue,
                    queue_id,
                    shards: 1 << shard,
                }),
            }
        }
        due
    }

    /// The earliest hint, if any.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        lock(&self.hints)
            .first_key_value()
            .map(|(&(at, _, _), _)| at)
    }

    /// Hints held (for tests and memory accounting).
    pub(crate) fn len(&self) -> usize {
        lock(&self.hints).len()
    }

    pub(crate) fn signal(&self) -> &DueSignal {
        &self.signal
    }
}

/// A one-slot, level-triggered wake-up for the single timekeeping task:
/// `notify` sets a flag and wakes the registered waker; `changed` completes
/// once the flag is set and clears it. A notify that lands between the
/// timekeeper reading the next due time and waiting is kept by the flag, so
/// it is never lost.
pub(crate) struct DueSignal {
    state: Mutex<(bool, Option<Waker>)>,
}

impl DueSignal {
    pub(crate) fn new() -> Self {
        DueSignal {
            state: Mutex::new((false, None)),
        }
    }

    pub(crate) fn notify(&self) {
        let waker = {
            let mut state = lock(&self.state);
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Completes once [`notify`](Self::notify) has been called since the
    /// last completion.
    pub(crate) async fn changed(&self) {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.0 {
                state.0 = false;
                Poll::Ready(())
            } else {
                match &mut state.1 {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn t(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[test]
    fn hints_come_out_in_time_order() {
        let agenda = Agenda::new();
        let w = Weak::new();
        agenda.hint(t(30), 1, 0, &w);
        agenda.hint(t(10), 2, 0, &w);
        agenda.hint(t(20), 3, 0, &w);
        agenda.hint(t(15), 2, 5, &w);
        assert_eq!(agenda.next_due(), Some(t(10)));
        let due = agenda.take_due(t(20));
        // Queue 2's two shards come out as one queue.
        assert_eq!(due.len(), 2);
        assert_eq!((due[0].queue_id, due[0].shards), (2, 0b10_0001));
        assert_eq!((due[1].queue_id, due[1].shards), (3, 1));
        assert_eq!(agenda.next_due(), Some(t(30)));
        agenda.unhint(t(30), 1, 0);
        assert_eq!(agenda.next_due(), None);
    }

    #[test]
    fn the_signal_fires_only_for_a_new_earliest_hint_and_is_not_lost() {
        use std::future::Future;
        use std::pin::pin;
        use std::task::Context;

        let agenda = Agenda::new();
        let w = Weak::new();
        agenda.hint(t(30), 1, 0, &w); // earliest: signals before anyone waits
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let waker = Waker::from(std::sync::Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut changed = pin!(agenda.signal().changed());
        assert!(
            changed.as_mut().poll(&mut cx).is_ready(),
            "kept by the flag"
        );
        let mut changed = pin!(agenda.signal().changed());
        assert!(changed.as_mut().poll(&mut cx).is_pending());
        agenda.hint(t(40), 2, 0, &w); // later than the first: no signal
        assert!(changed.as_mut().poll(&mut cx).is_pending());
        agenda.hint(t(20), 3, 0, &w);
        assert!(changed.as_mut().poll(&mut cx).is_ready());
    }
}
