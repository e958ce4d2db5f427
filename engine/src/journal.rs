//! [`Journal`]: the hook through which a broker reports the changes it
//! makes to where its messages are, so that a write-ahead log outside the
//! engine can record them. The engine does no I/O: it only calls the hook.
//!
//! # Order
//!
//! A message that joins a ready queue (requeue, expiry, a delayed message
//! coming due, a dead-letter move, a redrive) or the timer is reported
//! **before** it becomes visible to any other operation. So a record of
//! anything that happens to it afterwards (its next delivery, its
//! acknowledgement) is appended after the record that made it ready, and a
//! replay in log order sees the message where it was. Deliveries and
//! settlements are reported after they happened: a replay treats a
//! settlement (`gone`) as final, and a report about a message already gone
//! as stale.
//!
//! Publishes are not reported: the caller logs a publish first, durably if
//! it wants, and only then hands it to the broker
//! (`Broker::prepare_publish` / `Broker::commit_publish`).
//!
//! # Cost
//!
//! A broker without a journal pays one predictable branch per hook site.

use std::time::Duration;

use crate::message::QueueName;

/// Receives the broker's changes, in the order described in the module
/// docs. Called from any thread, sometimes with engine locks held: it must
/// not block for long and must never call back into the broker.
pub trait Journal: Send + Sync + 'static {
    /// Message `id` joins the tail of `queue`.
    fn ready(&self, queue: &QueueName, id: u64, attempts: u32, dead_lettered: bool);
    /// Message `id` waits in `queue` for `delay` from now.
    fn delayed(&self, queue: &QueueName, id: u64, attempts: u32, delay: Duration);
    /// Message `id` was delivered; `attempts` counts this delivery.
    fn delivered(&self, id: u64, attempts: u32);
    /// Message `id` left the broker (acknowledged, or its queue deleted).
    fn gone(&self, id: u64);
    /// Message `id`'s delivery never reached its consumer: it joins the
    /// tail of `queue` again, `attempts` no longer counting that delivery.
    /// A log that does not tell this apart records it as [`Journal::ready`]
    /// (the default), which replays the same.
    fn undelivered(&self, queue: &QueueName, id: u64, attempts: u32, dead_lettered: bool) {
        self.ready(queue, id, attempts, dead_lettered);
    }
}
