//! [`Error`]: every way an engine operation can fail.
//!
//! The server maps each variant to an HTTP status and an error `code` in
//! exactly one place; the engine knows nothing of HTTP.

/// Why an engine operation failed. Every failure leaves the broker unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The broker has been closed; nothing is accepted any more.
    #[error("broker is shutting down")]
    Closed,
    /// The delivery id is unknown, already settled, its lease expired, or
    /// it belongs to another queue.
    #[error("id is invalid")]
    InvalidId,
    /// Publishing would take the held messages over `max_queue_bytes`.
    #[error("queue full")]
    QueueFull,
    /// No message became available before the fetch's timeout.
    #[error("no message arrived within the wait")]
    Timeout,
    /// Not `^[A-Za-z0-9_-]{1,80}$`, optionally followed by `.dead`.
    #[error("invalid queue name")]
    InvalidQueueName,
    /// No queue by this name.
    #[error("queue not found")]
    QueueNotFound,
    /// Creating the queue would pass `max_queues`.
    #[error("too many queues")]
    TooManyQueues,
    /// The `default` queue always exists.
    #[error("the default queue cannot be deleted")]
    DefaultQueue,
    /// Redrive applies only to a dead-letter queue (`<queue>.dead`).
    #[error("redrive applies only to a dead-letter queue (a name ending in .dead)")]
    NotDeadLetterQueue,
    /// A dead-letter queue takes no `max_deliveries` other than 0.
    #[error("a dead-letter queue takes no max_deliveries other than 0")]
    DeadLetterMaxDeliveries,
    /// A TTL of zero.
    #[error("ttl must be at least 1 ms")]
    ZeroTtl,
    /// Delivery or message ids would pass 2^53 (after about 285 years at a
    /// million a second).
    #[error("delivery ids are exhausted")]
    IdsExhausted,
}
