//! [`Message`]: what the broker holds for one published message, wherever
//! it is (ready, leased, delayed), and [`QueueName`], the checked name of a
//! queue.

// The name rule is the contract's (`ubroker-proto`): one definition for
// the engine, the server, the client and the fuzz model.
use std::fmt;
use std::sync::Arc;
use ubroker_proto::DEAD_SUFFIX;

use bytes::Bytes;

use crate::clock::Timestamp;
use crate::error::Error;

/// Message and delivery ids stay below this (2^53), so that every JSON
/// client, JavaScript's `Number` included, reads them exactly.
pub const MAX_ID: u64 = 1 << 53;

/// One published message.
///
/// 56 bytes: it moves by value between the ready queue, a lease and the
/// timer, and nothing about it is shared between places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// Fixed at publish, the same on every delivery; consumers deduplicate
    /// with it.
    pub(crate) id: u64,
    pub(crate) body: Bytes,
    /// Deliveries from the queue it is in so far (reset when it moves to a
    /// dead-letter queue or is redriven).
    pub(crate) attempts: u32,
    /// It reached its `.dead` queue by exhausting `max_deliveries`; its
    /// origin is the dead-letter queue's name without `.dead`.
    pub(crate) dead_lettered: bool,
    /// When it last joined a ready queue (publish, requeue, expiry, coming
    /// due, a dead-letter move, a redrive): what `oldest_ready_age` reads.
    pub(crate) ready_at: Timestamp,
}

impl Message {
    pub(crate) fn new(id: u64, body: Bytes) -> Self {
        Message {
            id,
            body,
            attempts: 0,
            dead_lettered: false,
            ready_at: Timestamp::ZERO,
        }
    }

    /// What it counts against `max_queue_bytes`: its body plus a fixed
    /// overhead, so that empty messages are bounded too.
    pub(crate) fn charge(&self) -> u64 {
        charge(self.body.len())
    }
}

/// Bytes charged against `max_queue_bytes` per held message beyond its body.
pub const MESSAGE_OVERHEAD: u64 = 64;

pub(crate) fn charge(body_len: usize) -> u64 {
    body_len as u64 + MESSAGE_OVERHEAD
}

/// A valid queue name: `^[A-Za-z0-9_-]{1,80}$`, optionally followed by
/// `.dead`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// The queue every part-1 route uses.
    pub const DEFAULT: &'static str = "default";

    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, Error> {
        validate(name)?;
        Ok(QueueName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a dead-letter queue (`<base>.dead`).
    pub fn is_dead(&self) -> bool {
        self.0.ends_with(DEAD_SUFFIX)
    }

    /// The name without `.dead`: the queue a dead-letter queue serves, and
    /// the unit `max_queues` counts.
    pub fn base(&self) -> &str {
        base_of(&self.0)
    }

    /// This queue's dead-letter queue (`None` for a dead-letter queue).
    pub fn dead_letter_queue(&self) -> Option<QueueName> {
        (!self.is_dead()).then(|| QueueName(Arc::from(format!("{}{DEAD_SUFFIX}", self.0))))
    }
}

pub(crate) fn base_of(name: &str) -> &str {
    ubroker_proto::base_of(name)
}

/// `Ok` if `name` is a valid queue name. No allocation: every request path
/// calls it.
pub fn validate(name: &str) -> Result<(), Error> {
    if ubroker_proto::is_valid_queue_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidQueueName)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let long = "a".repeat(80);
        let long_dead = format!("{long}.dead");
        for good in [
            "a",
            "default",
            "jobs_2-x",
            "Z9",
            &long,
            "jobs.dead",
            &long_dead,
        ] {
            assert!(QueueName::new(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(81);
        for bad in [
            "",
            ".dead",
            "a.dead.dead",
            "a b",
            "a/b",
            "a%20",
            "é",
            "a.b",
            &too_long,
            "a.DEAD",
            "dead.",
            "a..dead",
        ] {
            assert_eq!(QueueName::new(bad), Err(Error::InvalidQueueName), "{bad}");
        }
    }

    #[test]
    fn dead_letter_names() {
        let q = QueueName::new("jobs").unwrap();
        assert!(!q.is_dead());
        let dead = q.dead_letter_queue().unwrap();
        assert_eq!(dead.as_str(), "jobs.dead");
        assert!(dead.is_dead());
        assert_eq!(dead.base(), "jobs");
        assert_eq!(dead.dead_letter_queue(), None);
    }

    #[test]
    fn a_message_is_56_bytes_and_charged_its_body_plus_overhead() {
        assert_eq!(std::mem::size_of::<Message>(), 56);
        let m = Message::new(1, Bytes::new());
        assert_eq!(m.charge(), MESSAGE_OVERHEAD);
    }
}
