//! [`Error`]: every way a call can fail, and [`Code`], the server's
//! machine-readable error code (SPEC, **Errors**), which is what retries are
//! decided on. The codes, their statuses and retry advice are
//! `ubroker-proto`'s; [`Code`] adds only [`Code::Other`] for a code a newer
//! server may send. An error answer keeps the server's status, code and message
//! as it sent them.

use std::fmt;
use std::time::Duration;

use hyper::StatusCode;

/// The `code` of an error body (SPEC, **Errors**). Codes this client does
/// not know (a newer server) are kept in [`Code::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidRequest,
    InvalidId,
    InvalidQueueName,
    NotFound,
    MethodNotAllowed,
    Unauthorized,
    BodyTooLarge,
    HeadersTooLarge,
    /// `408`: no message arrived within a fetch's wait. The typed fetches
    /// answer `Ok(None)` / an empty list instead of this error.
    Timeout,
    /// `429`, retried: the queue's byte budget is spent for now.
    QueueFull,
    /// `429`, never retried: it clears only when someone deletes a queue.
    TooManyQueues,
    /// `503`, retried: the server is at its connection cap.
    TooManyConnections,
    /// `503`, retried: the server is stopping (another may take its place).
    ShuttingDown,
    /// `503`, never retried: the server's log failed and it takes no writes.
    LogFailed,
    /// `503`: the disk is full; not retried (it does not clear by itself).
    DiskFull,
    /// `503`, retried: in a cluster, the node that owns the queue is down
    /// (HAProxy answered for it). Nothing was done; another partition can
    /// take the request now, this one later.
    Unavailable,
    /// `503`, never retried: delivery or message ids would reach 2^53.
    IdsExhausted,
    /// `503`, retried: in a replicated cluster (SPEC "Replication, step
    /// 2"), the node asked is not its group's leader and did nothing. The
    /// proxy sends requests to the leader, so this is seen only in the
    /// moments around a failover (or when a node is asked directly);
    /// like `unavailable`, another partition can take the request now and
    /// this one later. `leader` is the global index of the node that
    /// leads, as the answer named it (`None`: no leader is known yet, or
    /// a body without one).
    NotLeader {
        leader: Option<u32>,
    },
    /// `500`: a bug of the server's.
    Internal,
    /// Any other code, as the server spelled it.
    Other(String),
}

impl Code {
    /// Reads a code as the server spells it.
    pub fn parse(code: &str) -> Code {
        match ubroker_proto::Code::parse(code) {
            Some(known) => Code::from(known),
            None => Code::Other(code.to_owned()),
        }
    }

    /// The contract's code (`ubroker-proto`), unless this is one the
    /// contract does not know.
    pub fn known(&self) -> Option<ubroker_proto::Code> {
        use ubroker_proto::Code as Known;
        Some(match self {
            Code::InvalidRequest => Known::InvalidRequest,
            Code::InvalidId => Known::InvalidId,
            Code::InvalidQueueName => Known::InvalidQueueName,
            Code::NotFound => Known::NotFound,
            Code::MethodNotAllowed => Known::MethodNotAllowed,
            Code::Unauthorized => Known::Unauthorized,
            Code::BodyTooLarge => Known::BodyTooLarge,
            Code::HeadersTooLarge => Known::HeadersTooLarge,
            Code::Timeout => Known::Timeout,
            Code::QueueFull => Known::QueueFull,
            Code::TooManyQueues => Known::TooManyQueues,
            Code::TooManyConnections => Known::TooManyConnections,
            Code::ShuttingDown => Known::ShuttingDown,
            Code::LogFailed => Known::LogFailed,
            Code::DiskFull => Known::DiskFull,
            Code::IdsExhausted => Known::IdsExhausted,
            Code::Unavailable => Known::Unavailable,
            Code::NotLeader { .. } => Known::NotLeader,
            Code::Internal => Known::Internal,
            Code::Other(_) => return None,
        })
    }

    /// The code as the server spells it.
    pub fn as_str(&self) -> &str {
        match (self.known(), self) {
            (Some(known), _) => known.as_str(),
            (None, Code::Other(other)) => other,
            (None, _) => unreachable!("every named code is a known one"),
        }
    }

    /// Whether the same request may succeed later without anything but
    /// time passing (the contract's retry advice, `ubroker-proto`'s
    /// `Code::retry`). Only these codes are retried; each one means the
    /// server changed nothing, so even a publish is safe to send again.
    pub fn is_transient(&self) -> bool {
        self.known()
            .is_some_and(|known| known.retry() == ubroker_proto::Retry::Later)
    }
}

impl From<ubroker_proto::Code> for Code {
    fn from(code: ubroker_proto::Code) -> Self {
        use ubroker_proto::Code as Known;
        match code {
            Known::InvalidRequest => Code::InvalidRequest,
            Known::InvalidId => Code::InvalidId,
            Known::InvalidQueueName => Code::InvalidQueueName,
            Known::NotFound => Code::NotFound,
            Known::MethodNotAllowed => Code::MethodNotAllowed,
            Known::Unauthorized => Code::Unauthorized,
            Known::BodyTooLarge => Code::BodyTooLarge,
            Known::HeadersTooLarge => Code::HeadersTooLarge,
            Known::Timeout => Code::Timeout,
            Known::QueueFull => Code::QueueFull,
            Known::TooManyQueues => Code::TooManyQueues,
            Known::TooManyConnections => Code::TooManyConnections,
            Known::ShuttingDown => Code::ShuttingDown,
            Known::LogFailed => Code::LogFailed,
            Known::DiskFull => Code::DiskFull,
            Known::IdsExhausted => Code::IdsExhausted,
            Known::Unavailable => Code::Unavailable,
            Known::NotLeader => Code::NotLeader { leader: None },
            Known::Internal => Code::Internal,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer from the server: its status, `code` and `error` message,
/// and the `Retry-After` it asked for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.status, self.message, self.code)
    }
}

/// Every way a call can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("server answered {0}")]
    Api(ApiError),
    /// The request may never have reached the server, or its answer was
    /// lost: connect refused, connection reset, malformed response.
    /// `connect` is true when the request certainly was not sent: no
    /// connection could be made, or the connection closed before the
    /// request was written.
    #[error("transport error{}: {source}", if *.connect { " (connect)" } else { "" })]
    Transport {
        connect: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A success answer that is not the JSON the route promises.
    #[error("cannot decode the answer to {route}: {source}")]
    Decode {
        route: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A bad argument, caught before anything was sent: a URL, a queue
    /// name, a token that cannot be a header, an empty batch.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The server's status, for an error answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api(api) => Some(api.status),
            _ => None,
        }
    }

    /// The server's code, for an error answer.
    pub fn code(&self) -> Option<&Code> {
        match self {
            Error::Api(api) => Some(&api.code),
            _ => None,
        }
    }

    /// Whether this is the server's answer with `code`.
    pub fn is(&self, code: &Code) -> bool {
        self.code() == Some(code)
    }

    /// Whether the request certainly did nothing where it was sent and
    /// another node could take it now: the owning node is down
    /// (`unavailable`), stopping (`shutting_down`) or not its group's
    /// leader (`not_leader`), or no connection could be made. A
    /// partitioned queue moves on to another partition after such an
    /// error rather than waiting on this one.
    pub fn is_elsewhere(&self) -> bool {
        match self {
            Error::Api(api) => matches!(
                api.code,
                Code::Unavailable | Code::ShuttingDown | Code::NotLeader { .. }
            ),
            Error::Transport { connect, .. } => *connect,
            Error::Decode { .. } | Error::InvalidArgument(_) => false,
        }
    }

    /// Whether this is a `not_leader` answer (whoever it named).
    pub fn is_not_leader(&self) -> bool {
        matches!(self.code(), Some(Code::NotLeader { .. }))
    }

    /// The leader a `not_leader` answer named (its global node index);
    /// `None` for any other error, or when no leader was known.
    pub fn leader(&self) -> Option<u32> {
        match self.code() {
            Some(Code::NotLeader { leader }) => *leader,
            _ => None,
        }
    }

    /// The server's `Retry-After`, for an error answer that carried one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api(api) => api.retry_after,
            _ => None,
        }
    }
}

/// The result of every call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_only_the_contracts_retried_ones_are_transient() {
        let all = [
            "invalid_request",
            "invalid_id",
            "invalid_queue_name",
            "not_found",
            "method_not_allowed",
            "unauthorized",
            "body_too_large",
            "headers_too_large",
            "timeout",
            "queue_full",
            "too_many_queues",
            "too_many_connections",
            "shutting_down",
            "log_failed",
            "disk_full",
            "unavailable",
            "ids_exhausted",
            "not_leader",
            "internal",
            "something_new",
        ];
        let mut transient = Vec::new();
        for text in all {
            let code = Code::parse(text);
            assert_eq!(code.as_str(), text);
            if code.is_transient() {
                transient.push(text);
            }
        }
        assert_eq!(
            transient,
            [
                "queue_full",
                "too_many_connections",
                "shutting_down",
                "unavailable",
                "not_leader"
            ]
        );
        assert_eq!(
            Code::parse("something_new"),
            Code::Other("something_new".into())
        );
    }

    fn api(code: Code) -> Error {
        Error::Api(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: "not the leader".into(),
            retry_after: None,
        })
    }

    #[test]
    fn not_leader_is_elsewhere_and_names_its_leader() {
        let named = api(Code::NotLeader { leader: Some(4) });
        assert!(named.is_elsewhere() && named.is_not_leader());
        assert_eq!(named.leader(), Some(4));
        assert!(named.code().unwrap().is_transient());
        let unknown = api(Code::NotLeader { leader: None });
        assert!(unknown.is_elsewhere() && unknown.is_not_leader());
        assert_eq!(unknown.leader(), None);
        // The leader does not change which code it is.
        assert_eq!(named.code().unwrap().as_str(), "not_leader");
        // Other errors name no leader.
        let down = api(Code::Unavailable);
        assert!(!down.is_not_leader());
        assert_eq!(down.leader(), None);
    }
}
