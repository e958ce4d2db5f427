//! [`Error`]: every way an engine operation can fail.
//!
//! The server maps each variant to an HTTP status in exactly one place; the
//! engine knows nothing of HTTP.

/// Why an engine operation failed. Every failure leaves the broker unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The broker has been closed; nothing is accepted any more.
    #[error("broker is shutting down")]
    Closed,
    /// The delivery id is unknown, already settled, or its lease expired.
    #[error("id is invalid")]
    InvalidId,
    /// Publishing would take the queued body bytes over the configured limit.
    #[error("queue full")]
    QueueFull,
    /// No message became available before the fetch's timeout.
    #[error("no message arrived within the wait")]
    Timeout,
}
