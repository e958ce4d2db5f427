//! [`Code`]: the `code` of every error body (`{"error": "...", "code":
//! "..."}`), with its HTTP status and retry advice. A client decides
//! retries on the code alone.

use std::fmt;

/// Whether a client may send the same request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retry {
    /// The server changed nothing and the request may succeed later with
    /// nothing but time passing (or on another node): safe to retry, even
    /// a publish.
    Later,
    /// Retrying the same request cannot help (it is wrong, or the condition
    /// does not clear by itself).
    Never,
}

/// A machine-readable error code, as the server spells it in
/// [`Code::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// A malformed request: bad JSON, a parameter out of range, a framing
    /// error (`400`; `415` for a content coding, `501` for a transfer
    /// coding the server does not support).
    InvalidRequest,
    /// A delivery id that is unknown, settled, expired or of another queue,
    /// or not a number (`400`).
    InvalidId,
    /// Not `^[A-Za-z0-9_-]{1,80}(\.dead)?$` (`400`).
    InvalidQueueName,
    /// No such route or queue (`404`).
    NotFound,
    /// The path exists, not with this method (`405`, with `Allow`).
    MethodNotAllowed,
    /// `--auth-token` is set and the request does not carry it (`401`).
    Unauthorized,
    /// The body is larger than `--max-body-bytes` (`413`).
    BodyTooLarge,
    /// The head is larger than `--max-header-bytes` (`431`).
    HeadersTooLarge,
    /// No message arrived within a fetch's wait, or the body did not
    /// arrive in time (`408`).
    Timeout,
    /// The byte budget is spent for now (`429`, retry).
    QueueFull,
    /// Creating the queue would pass `max_queues`; clears only when
    /// someone deletes a queue (`429`, do not retry).
    TooManyQueues,
    /// The server is at its connection cap (`503`, retry).
    TooManyConnections,
    /// The server is stopping; another may take its place (`503`, retry).
    ShuttingDown,
    /// The write-ahead log failed: no writes until a restart (`503`, do
    /// not retry here).
    LogFailed,
    /// The disk holding the log is full (`503`; does not clear by itself).
    DiskFull,
    /// Delivery or message ids would reach 2^53 (`503`).
    IdsExhausted,
    /// In a cluster, the node that owns the queue is down (HAProxy answers
    /// for it): nothing was done (`503`, retry elsewhere or later).
    Unavailable,
    /// In a replicated cluster, this node does not lead the queue's
    /// partition: nothing was done (`503`, retry where the leader is).
    NotLeader,
    /// A bug of ours, not the client's (`500`).
    Internal,
}

impl Code {
    /// Every code, in the order the contract lists them.
    pub const ALL: [Code; 19] = [
        Code::InvalidRequest,
        Code::InvalidId,
        Code::InvalidQueueName,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Unauthorized,
        Code::BodyTooLarge,
        Code::HeadersTooLarge,
        Code::Timeout,
        Code::QueueFull,
        Code::TooManyQueues,
        Code::TooManyConnections,
        Code::ShuttingDown,
        Code::LogFailed,
        Code::DiskFull,
        Code::IdsExhausted,
        Code::Unavailable,
        Code::NotLeader,
        Code::Internal,
    ];

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::InvalidId => "invalid_id",
            Code::InvalidQueueName => "invalid_queue_name",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Unauthorized => "unauthorized",
            Code::BodyTooLarge => "body_too_large",
            Code::HeadersTooLarge => "headers_too_large",
            Code::Timeout => "timeout",
            Code::QueueFull => "queue_full",
            Code::TooManyQueues => "too_many_queues",
            Code::TooManyConnections => "too_many_connections",
            Code::ShuttingDown => "shutting_down",
            Code::LogFailed => "log_failed",
            Code::DiskFull => "disk_full",
            Code::IdsExhausted => "ids_exhausted",
            Code::Unavailable => "unavailable",
            Code::NotLeader => "not_leader",
            Code::Internal => "internal",
        }
    }

    /// Reads a code as the server spells it; `None` for one this crate does
    /// not know (a newer server).
    pub fn parse(code: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|known| known.as_str() == code)
    }

    /// The HTTP status the code is usually answered with.
    pub const fn status(self) -> u16 {
        match self {
            Code::InvalidRequest | Code::InvalidId | Code::InvalidQueueName => 400,
            Code::Unauthorized => 401,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::Timeout => 408,
            Code::BodyTooLarge => 413,
            Code::QueueFull | Code::TooManyQueues => 429,
            Code::HeadersTooLarge => 431,
            Code::Internal => 500,
            Code::TooManyConnections
            | Code::ShuttingDown
            | Code::LogFailed
            | Code::DiskFull
            | Code::IdsExhausted
            | Code::Unavailable
            | Code::NotLeader => 503,
        }
    }

    /// Every HTTP status the code may be answered with: [`Code::status`],
    /// and for `invalid_request` also `415` (a content coding) and `501` (a
    /// transfer coding) the server does not support (RFC 9110, 9112).
    pub const fn statuses(self) -> &'static [u16] {
        match self {
            Code::InvalidRequest => &[400, 415, 501],
            Code::InvalidId | Code::InvalidQueueName => &[400],
            Code::Unauthorized => &[401],
            Code::NotFound => &[404],
            Code::MethodNotAllowed => &[405],
            Code::Timeout => &[408],
            Code::BodyTooLarge => &[413],
            Code::QueueFull | Code::TooManyQueues => &[429],
            Code::HeadersTooLarge => &[431],
            Code::Internal => &[500],
            Code::TooManyConnections
            | Code::ShuttingDown
            | Code::LogFailed
            | Code::DiskFull
            | Code::IdsExhausted
            | Code::Unavailable
            | Code::NotLeader => &[503],
        }
    }

    /// Whether the same request may be sent again: only for codes that
    /// mean the server changed nothing and time (or another node) may
    /// help.
    pub const fn retry(self) -> Retry {
        match self {
            Code::QueueFull
            | Code::TooManyConnections
            | Code::ShuttingDown
            | Code::Unavailable
            | Code::NotLeader => Retry::Later,
            _ => Retry::Never,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert!(seen.insert(code.as_str()), "{code} listed twice");
            assert_eq!(code.statuses()[0], code.status(), "{code}");
        }
        assert_eq!(Code::parse("something_new"), None);
    }

    #[test]
    fn only_the_codes_that_change_nothing_are_retried() {
        let retried: Vec<&str> = Code::ALL
            .into_iter()
            .filter(|code| code.retry() == Retry::Later)
            .map(Code::as_str)
            .collect();
        assert_eq!(
            retried,
            [
                "queue_full",
                "too_many_connections",
                "shutting_down",
                "unavailable",
                "not_leader"
            ]
        );
    }
}
