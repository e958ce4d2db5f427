//! Building responses: one small function per kind of answer.
//!
//! Every response is JSON with `Content-Type: application/json`. Bodies are
//! built directly (static bytes or one `serde_json` write), with no builder
//! that could fail, so nothing here can panic.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Response, StatusCode};
use serde::Serialize;
use ubroker_engine::Delivery;

use crate::error::ApiError;

/// The response body type of every route.
pub type Body = Full<Bytes>;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// `200 {}`: publish, acknowledge and requeue succeeded.
pub fn ok_empty() -> Response<Body> {
    json(StatusCode::OK, Bytes::from_static(b"{}"))
}

#[derive(Serialize)]
struct FetchBody<'a> {
    message: MessageBody<'a>,
    id: u64,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    body: &'a str,
}

/// `200 {"message": {"body": ...}, "id": ...}`: a delivery.
pub fn delivery(delivery: &Delivery) -> Response<Body> {
    // Bodies are accepted only as JSON strings, so they are always UTF-8;
    // the lossy fallback exists only so that this can never fail.
    let body = String::from_utf8_lossy(&delivery.body);
    let payload = FetchBody {
        message: MessageBody { body: &body },
        id: delivery.id,
    };
    let mut out = Vec::with_capacity(delivery.body.len() + 48);
    match serde_json::to_writer(&mut out, &payload) {
        Ok(()) => json(StatusCode::OK, Bytes::from(out)),
        // Serialising a string and an integer into a Vec cannot fail.
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(br#"{"error":"could not encode the message"}"#),
        ),
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// `{"error": "..."}` with the status that [`ApiError::status`] gives, plus
/// `Allow` on 405, `Retry-After` on 429, `WWW-Authenticate` on 401,
/// `Accept-Encoding` on 415, and `Connection: close` when the request body
/// was not read to its end or its framing is in doubt.
pub fn error(error: &ApiError) -> Response<Body> {
    let payload = ErrorBody {
        error: error.to_string(),
    };
    let body = serde_json::to_vec(&payload)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(br#"{"error":"error"}"#));
    let mut response = json(error.status(), body);
    match error {
        ApiError::MethodNotAllowed { allow } => {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        ApiError::Engine(ubroker_engine::Error::QueueFull) => {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        ApiError::Unauthorized => {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ubroker\""),
            );
        }
        // RFC 9110, section 15.5.16: say which content codings would do.
        ApiError::UnsupportedContentEncoding => {
            response
                .headers_mut()
                .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        // The rest of the request may still be on the wire, or its framing
        // is in doubt: do not try to read the next request from the middle
        // of this one.
        ApiError::BodyTooLarge { .. }
        | ApiError::BodyTimeout
        | ApiError::BodyRead
        | ApiError::MissingHost
        | ApiError::RepeatedHeader { .. }
        | ApiError::UnsupportedTransferEncoding => {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

/// The whole HTTP/1.1 response sent to a connection over `--max-connections`
/// before closing it: it is written to the raw socket, without hyper.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 32\r\n\
\r\n\
{\"error\":\"too many connections\"}";

/// The whole answer to an HTTP/2 connection preface, written to the raw
/// socket: there is no HTTP/1.1 request to route, so no JSON body.
pub const HTTP2_PREFACE_REFUSED: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
connection: close\r\n\
content-length: 0\r\n\
\r\n";
