//! [`Dedup`]: remembers the `message_id`s a consumer has finished, so that
//! a redelivery of one (its acknowledge was lost, or its lease expired
//! while the work completed) can be acknowledged without doing the work
//! again. Bounded: it forgets the oldest ids beyond its capacity, so it
//! catches redeliveries that come back within that many messages, which
//! is what at-least-once redeliveries do (a lease's TTL later).
//!
//! A publish the client sent twice (see
//! [`RetryPolicy::retry_ambiguous_publishes`](crate::RetryPolicy)) is two
//! messages with two `message_id`s; deduplicating those needs a key of the
//! application's own in the body.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// A bounded set of recently finished `message_id`s, shared by a
/// consumer's handlers.
#[derive(Debug)]
pub struct Dedup {
    capacity: usize,
    // A std mutex: held for a hash lookup, never across an await.
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Dedup {
    /// Remembers up to `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Dedup {
            capacity: capacity.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A panic while holding the lock leaves the set consistent (each
        // operation is one insert or remove), so poisoning is ignored.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `message_id` was already marked done (and is still
    /// remembered).
    pub fn is_done(&self, message_id: u64) -> bool {
        self.lock().ids.contains(&message_id)
    }

    /// Marks `message_id` done; answers false if it already was.
    pub fn mark_done(&self, message_id: u64) -> bool {
        let mut seen = self.lock();
        if !seen.ids.insert(message_id) {
            return false;
        }
        seen.order.push_back(message_id);
        if seen.order.len() > self.capacity {
            if let Some(oldest) = seen.order.pop_front() {
                seen.ids.remove(&oldest);
            }
        }
        true
    }

    /// How many ids it remembers.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_capacity_then_forgets_the_oldest() {
        let d = Dedup::new(3);
        assert!(!d.is_done(1));
        assert!(d.mark_done(1));
        assert!(d.is_done(1));
        assert!(!d.mark_done(1));
        for id in 2..=4 {
            assert!(d.mark_done(id));
        }
        assert_eq!(d.len(), 3);
        assert!(!d.is_done(1), "the oldest is forgotten");
        assert!(d.is_done(2) && d.is_done(4));
    }
}
