//! [`ApiError`]: every way a request can fail, and the one place where each
//! failure becomes an HTTP status and an `{"error": "..."}` body.

use std::fmt;

use hyper::StatusCode;
use ubroker_engine::Error as EngineError;

/// A failed request. Every variant leaves the broker unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The engine refused the operation.
    Engine(EngineError),
    /// The publish body is not the JSON object the contract asks for.
    BadBody(String),
    /// The publish body is longer than `--max-body-bytes`.
    BodyTooLarge { limit: u64 },
    /// The request body could not be read (connection cut, bad framing).
    BodyRead,
    /// The publish body did not arrive within `--header-read-timeout`.
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
    /// The fetch was waiting when the server began shutting down.
    ShuttingDown,
    /// No route has this path.
    NotFound,
    /// The path exists but not with this method; carries the `Allow` value.
    MethodNotAllowed { allow: &'static str },
}

impl ApiError {
    /// The HTTP status for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Engine(EngineError::Closed) | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Engine(EngineError::InvalidId) => StatusCode::BAD_REQUEST,
            ApiError::Engine(EngineError::QueueFull) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Engine(EngineError::Timeout) => StatusCode::REQUEST_TIMEOUT,
            ApiError::BadBody(_)
            | ApiError::BodyRead
            | ApiError::BadId
            | ApiError::BadWait
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
            ApiError::NotFound => f.write_str("not found"),
            ApiError::MethodNotAllowed { allow } => {
                write!(f, "method not allowed; use {allow}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_the_contract() {
        assert_eq!(ApiError::from(EngineError::InvalidId).status(), 400);
        assert_eq!(
            ApiError::from(EngineError::InvalidId).to_string(),
            "id is invalid"
        );
        assert_eq!(ApiError::from(EngineError::Closed).status(), 503);
        assert_eq!(ApiError::from(EngineError::Timeout).status(), 408);
        assert_eq!(ApiError::from(EngineError::QueueFull).status(), 429);
        assert_eq!(
            ApiError::from(EngineError::QueueFull).to_string(),
            "queue full"
        );
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
