//! [`ApiError`]: every way a request can fail, and the one place where each
//! failure becomes an HTTP status, a stable machine-readable `code` and an
//! `{"error": "...", "code": "..."}` body.

use std::fmt;

use hyper::StatusCode;
use ubroker_engine::Error as EngineError;
use ubroker_proto::Code;

/// A failed request. Every variant leaves the broker unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The engine refused the operation.
    Engine(EngineError),
    /// The request body is not the JSON the route asks for.
    BadBody(String),
    /// The request body is longer than `--max-body-bytes`.
    BodyTooLarge { limit: u64 },
    /// The request body could not be read (connection cut, bad framing).
    BodyRead,
    /// The request body did not arrive within `--header-read-timeout`.
    BodyTimeout,
    /// The request head is larger than `--max-header-bytes`.
    HeadersTooLarge { limit: u64 },
    /// `--auth-token` is set and the request does not carry it.
    Unauthorized,
    /// An HTTP/1.1 request without `Host` (RFC 9112, section 3.2).
    MissingHost,
    /// A header that may appear once (`Host`, `Authorization`) appears twice.
    RepeatedHeader { name: &'static str },
    /// `Transfer-Encoding` names a coding other than `chunked`.
    UnsupportedTransferEncoding,
    /// `Content-Encoding` names a coding other than `identity`.
    UnsupportedContentEncoding,
    /// The `{id}` path segment is not an unsigned 64-bit integer.
    BadId,
    /// The `wait` query parameter is not an unsigned integer.
    BadWait,
    /// A query parameter is not an unsigned integer in its range; carries
    /// the parameter's name and its range.
    BadQuery {
        name: &'static str,
        min: u64,
        max: u64,
    },
    /// `?max=` of a fetch is not an integer from 1 to `--max-batch`.
    BadMax { max: u64 },
    /// `?delay=` on a batch publish, whose entries carry their own delays.
    DelayOnBatch,
    /// The fetch was waiting when the server began shutting down.
    ShuttingDown,
    /// No route has this path.
    NotFound,
    /// The path exists but not with this method; carries the `Allow` value.
    MethodNotAllowed { allow: &'static str },
    /// The write-ahead log failed (an I/O error): nothing more is written
    /// until a restart.
    LogFailed,
    /// The disk holding the log is full: publishes are refused while
    /// acknowledgements go on.
    DiskFull,
    /// Replicated mode: this node does not lead its group (or stopped
    /// leading before the change committed); carries the leader it knows.
    NotLeader { leader: Option<u64> },
    /// A bug of ours, not the client's: carries what failed.
    Internal(&'static str),
}

impl ApiError {
    /// The HTTP status for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Engine(error) => match error {
                EngineError::Closed | EngineError::IdsExhausted => StatusCode::SERVICE_UNAVAILABLE,
                EngineError::QueueFull | EngineError::TooManyQueues => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                EngineError::Timeout => StatusCode::REQUEST_TIMEOUT,
                EngineError::QueueNotFound => StatusCode::NOT_FOUND,
                EngineError::InvalidId
                | EngineError::InvalidQueueName
                | EngineError::DefaultQueue
                | EngineError::NotDeadLetterQueue
                | EngineError::DeadLetterMaxDeliveries
                | EngineError::ZeroTtl => StatusCode::BAD_REQUEST,
            },
            ApiError::ShuttingDown
            | ApiError::LogFailed
            | ApiError::DiskFull
            | ApiError::NotLeader { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadBody(_)
            | ApiError::BodyRead
            | ApiError::BadId
            | ApiError::BadWait
            | ApiError::BadQuery { .. }
            | ApiError::BadMax { .. }
            | ApiError::DelayOnBatch
            | ApiError::MissingHost
            | ApiError::RepeatedHeader { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            ApiError::UnsupportedContentEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code (SPEC, Errors; `ubroker-proto`'s
    /// [`Code`], whose status list includes [`ApiError::status`]): what a
    /// client decides retries on.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Engine(error) => match error {
                EngineError::Closed => Code::ShuttingDown,
                EngineError::InvalidId => Code::InvalidId,
                EngineError::QueueFull => Code::QueueFull,
                EngineError::Timeout => Code::Timeout,
                EngineError::InvalidQueueName => Code::InvalidQueueName,
                EngineError::QueueNotFound => Code::NotFound,
                EngineError::TooManyQueues => Code::TooManyQueues,
                EngineError::DefaultQueue
                | EngineError::NotDeadLetterQueue
                | EngineError::DeadLetterMaxDeliveries
                | EngineError::ZeroTtl => Code::InvalidRequest,
                EngineError::IdsExhausted => Code::IdsExhausted,
            },
            ApiError::ShuttingDown => Code::ShuttingDown,
            ApiError::LogFailed => Code::LogFailed,
            ApiError::DiskFull => Code::DiskFull,
            ApiError::NotLeader { .. } => Code::NotLeader,
            ApiError::BadBody(_)
            | ApiError::BodyRead
            | ApiError::BadWait
            | ApiError::BadQuery { .. }
            | ApiError::BadMax { .. }
            | ApiError::DelayOnBatch
            | ApiError::MissingHost
            | ApiError::RepeatedHeader { .. }
            | ApiError::UnsupportedTransferEncoding
            | ApiError::UnsupportedContentEncoding => Code::InvalidRequest,
            ApiError::BadId => Code::InvalidId,
            ApiError::BodyTooLarge { .. } => Code::BodyTooLarge,
            ApiError::BodyTimeout => Code::Timeout,
            ApiError::HeadersTooLarge { .. } => Code::HeadersTooLarge,
            ApiError::Unauthorized => Code::Unauthorized,
            ApiError::NotFound => Code::NotFound,
            ApiError::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        ApiError::Engine(error)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Engine(EngineError::Closed) | ApiError::ShuttingDown => {
                f.write_str("server is shutting down")
            }
            ApiError::Engine(error) => write!(f, "{error}"),
            ApiError::BadBody(reason) => write!(f, "invalid request body: {reason}"),
            ApiError::BodyTooLarge { limit } => {
                write!(f, "request body is larger than {limit} bytes")
            }
            ApiError::BodyRead => f.write_str("could not read the request body"),
            ApiError::BodyTimeout => f.write_str("the request body did not arrive in time"),
            ApiError::HeadersTooLarge { limit } => {
                write!(f, "request headers are larger than {limit} bytes")
            }
            ApiError::Unauthorized => f.write_str("missing or wrong bearer token"),
            ApiError::MissingHost => f.write_str("an HTTP/1.1 request needs a Host header"),
            ApiError::RepeatedHeader { name } => write!(f, "more than one {name} header"),
            ApiError::UnsupportedTransferEncoding => {
                f.write_str("only the chunked transfer coding is supported")
            }
            ApiError::UnsupportedContentEncoding => {
                f.write_str("only the identity content coding is accepted")
            }
            ApiError::BadId => f.write_str("id is not an unsigned 64-bit integer"),
            ApiError::BadWait => f.write_str("wait must be an unsigned integer of milliseconds"),
            ApiError::BadQuery { name, min, max } => write!(
                f,
                "{name} must be an unsigned integer of milliseconds from {min} to {max}"
            ),
            ApiError::BadMax { max } => {
                write!(f, "max must be an unsigned integer from 1 to {max}")
            }
            ApiError::DelayOnBatch => f.write_str(
                "?delay= does not apply to a batch publish: give each entry its own delay_ms",
            ),
            ApiError::NotFound => f.write_str("not found"),
            ApiError::MethodNotAllowed { allow } => {
                write!(f, "method not allowed; use {allow}")
            }
            ApiError::LogFailed => f.write_str(
                "the write-ahead log failed; this broker accepts no writes until it is restarted",
            ),
            ApiError::DiskFull => f.write_str("the disk holding the log is full"),
            ApiError::NotLeader { .. } => f.write_str("not the leader"),
            ApiError::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_the_contract() {
        let cases = [
            (EngineError::InvalidId, 400, "invalid_id", "id is invalid"),
            (
                EngineError::Closed,
                503,
                "shutting_down",
                "server is shutting down",
            ),
            (
                EngineError::Timeout,
                408,
                "timeout",
                "no message arrived within the wait",
            ),
            (EngineError::QueueFull, 429, "queue_full", "queue full"),
            (
                EngineError::TooManyQueues,
                429,
                "too_many_queues",
                "too many queues",
            ),
            (
                EngineError::InvalidQueueName,
                400,
                "invalid_queue_name",
                "invalid queue name",
            ),
            (
                EngineError::QueueNotFound,
                404,
                "not_found",
                "queue not found",
            ),
        ];
        for (error, status, code, message) in cases {
            let api = ApiError::from(error);
            assert_eq!(
                (
                    api.status().as_u16(),
                    api.code().as_str(),
                    api.to_string().as_str()
                ),
                (status, code, message)
            );
        }
    }

    /// Each failure's code is the contract's (`ubroker-proto`), answered
    /// with one of the statuses the contract gives that code.
    #[test]
    fn every_code_is_the_contracts_with_one_of_its_statuses() {
        let all = [
            ApiError::BadBody("x".into()),
            ApiError::BodyTooLarge { limit: 1 },
            ApiError::BodyRead,
            ApiError::BodyTimeout,
            ApiError::HeadersTooLarge { limit: 1 },
            ApiError::Unauthorized,
            ApiError::BadId,
            ApiError::BadWait,
            ApiError::MissingHost,
            ApiError::RepeatedHeader { name: "Host" },
            ApiError::UnsupportedTransferEncoding,
            ApiError::UnsupportedContentEncoding,
            ApiError::BadQuery {
                name: "delay",
                min: 0,
                max: 1,
            },
            ApiError::BadMax { max: 1 },
            ApiError::DelayOnBatch,
            ApiError::ShuttingDown,
            ApiError::NotFound,
            ApiError::MethodNotAllowed { allow: "GET" },
            ApiError::Internal("x"),
            ApiError::NotLeader { leader: Some(4) },
            ApiError::Engine(EngineError::DefaultQueue),
            ApiError::Engine(EngineError::NotDeadLetterQueue),
            ApiError::Engine(EngineError::DeadLetterMaxDeliveries),
            ApiError::Engine(EngineError::ZeroTtl),
            ApiError::Engine(EngineError::IdsExhausted),
        ];
        for error in all {
            let (code, status) = (error.code(), error.status().as_u16());
            assert!(
                code.statuses().contains(&status),
                "{error:?}: {code} is not answered with {status}"
            );
        }
    }

    #[test]
    fn framing_errors_map_to_rfc_9112_and_9110() {
        assert_eq!(ApiError::MissingHost.status(), 400);
        assert_eq!(ApiError::RepeatedHeader { name: "Host" }.status(), 400);
        assert_eq!(
            ApiError::RepeatedHeader { name: "Host" }.to_string(),
            "more than one Host header"
        );
        assert_eq!(ApiError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(ApiError::UnsupportedContentEncoding.status(), 415);
    }
}
