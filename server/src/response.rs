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
use std::collections::BTreeMap;

use ubroker_engine::{Delivery, QueueInfo, QueueStats};

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
    message_id: u64,
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter: Option<DeadLetter<'a>>,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    body: &'a str,
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    queue: &'a str,
    reason: &'static str,
}

/// `200 {"message": {"body": ...}, "id": ..., "message_id": ..., "attempt":
/// ...}`, plus `"dead_letter"` for a message that reached its dead-letter
/// queue by exhausting its deliveries. `message` and `id` come first, as in
/// the original API.
pub fn delivery(delivery: &Delivery) -> Response<Body> {
    // Bodies are accepted only as JSON strings, so they are always UTF-8;
    // the lossy fallback exists only so that this can never fail.
    let body = String::from_utf8_lossy(&delivery.body);
    let payload = FetchBody {
        message: MessageBody { body: &body },
        id: delivery.id,
        message_id: delivery.message_id,
        attempt: delivery.attempt,
        dead_letter: delivery.dead_letter.as_ref().map(|queue| DeadLetter {
            queue: queue.as_str(),
            reason: "max_deliveries",
        }),
    };
    let mut out = Vec::with_capacity(delivery.body.len() + 96);
    match serde_json::to_writer(&mut out, &payload) {
        Ok(()) => json(StatusCode::OK, Bytes::from(out)),
        // Serialising strings and integers into a Vec cannot fail.
        Err(_) => encode_failed(),
    }
}

fn encode_failed() -> Response<Body> {
    json(
        StatusCode::INTERNAL_SERVER_ERROR,
        Bytes::from_static(br#"{"error":"could not encode the response","code":"internal"}"#),
    )
}

/// `200` with `payload` as JSON.
fn ok_json<T: Serialize>(payload: &T) -> Response<Body> {
    match serde_json::to_vec(payload) {
        Ok(body) => json(StatusCode::OK, Bytes::from(body)),
        Err(_) => encode_failed(),
    }
}

#[derive(Serialize)]
struct QueueBody<'a> {
    name: &'a str,
    ttl_ms: u64,
    max_deliveries: u32,
    ready: usize,
    in_flight: usize,
    delayed: usize,
    bytes: u64,
}

impl<'a> From<&'a QueueInfo> for QueueBody<'a> {
    fn from(info: &'a QueueInfo) -> Self {
        QueueBody {
            name: info.name.as_str(),
            ttl_ms: info.ttl_ms,
            max_deliveries: info.max_deliveries,
            ready: info.ready,
            in_flight: info.in_flight,
            delayed: info.delayed,
            bytes: info.bytes,
        }
    }
}

/// `200 {"name", "ttl_ms", "max_deliveries", "ready", "in_flight",
/// "delayed", "bytes"}`: `GET` and `PUT /queues/{queue}`.
pub fn queue(info: &QueueInfo) -> Response<Body> {
    ok_json(&QueueBody::from(info))
}

/// `200 {"queues": [...]}`, in the order given (sorted by name).
pub fn queues(infos: &[QueueInfo]) -> Response<Body> {
    #[derive(Serialize)]
    struct Queues<'a> {
        queues: Vec<QueueBody<'a>>,
    }
    ok_json(&Queues {
        queues: infos.iter().map(QueueBody::from).collect(),
    })
}

/// `200 {"<field>": n}`: `{"deleted": n}` and `{"moved": n}`.
pub fn count(field: &'static str, n: u64) -> Response<Body> {
    let mut map = serde_json::Map::new();
    map.insert(field.to_owned(), n.into());
    ok_json(&map)
}

/// One queue in `GET /stats`.
#[derive(Serialize)]
pub struct QueueStatsBody {
    ready: usize,
    in_flight: usize,
    delayed: usize,
    bytes: u64,
    /// 0 when nothing is ready.
    oldest_ready_age_ms: u64,
    waiting_fetches: usize,
    published: u64,
    delivered: u64,
    acknowledged: u64,
    requeued: u64,
    expired: u64,
    dead_lettered: u64,
    redriven: u64,
}

impl From<QueueStats> for QueueStatsBody {
    fn from(s: QueueStats) -> Self {
        QueueStatsBody {
            ready: s.ready,
            in_flight: s.in_flight,
            delayed: s.delayed,
            bytes: s.bytes,
            oldest_ready_age_ms: s
                .oldest_ready_age
                .map_or(0, |age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
            waiting_fetches: s.waiting_fetches,
            published: s.published,
            delivered: s.delivered,
            acknowledged: s.acknowledged,
            requeued: s.requeued,
            expired: s.expired,
            dead_lettered: s.dead_lettered,
            redriven: s.redriven,
        }
    }
}

/// `200 {"uptime_ms": ..., "queues": {"<name>": {...}}}`.
pub fn stats(
    uptime_ms: u64,
    queues: &BTreeMap<String, QueueStatsBody>,
    log: Option<&crate::durability::LogStatsBody>,
) -> Response<Body> {
    #[derive(Serialize)]
    struct Stats<'a> {
        uptime_ms: u64,
        queues: &'a BTreeMap<String, QueueStatsBody>,
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<&'a crate::durability::LogStatsBody>,
    }
    ok_json(&Stats {
        uptime_ms,
        queues,
        log,
    })
}

/// `200` with the Prometheus text exposition: the one response that is not
/// JSON.
pub fn metrics(text: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// `200 {"status": "ok"}`.
pub fn healthy() -> Response<Body> {
    json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

/// `503` from `/health` once shutdown (or the drain before it) began.
pub fn shutting_down_health() -> Response<Body> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(
            br#"{"error":"server is shutting down","code":"shutting_down","status":"shutting down"}"#,
        ),
    )
}

/// `503` from `/health` once the write-ahead log has failed.
pub fn log_failed_health() -> Response<Body> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        Bytes::from_static(
            br#"{"error":"the write-ahead log failed","code":"log_failed","status":"log failed"}"#,
        ),
    )
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    code: &'static str,
}

/// `{"error": "...", "code": "..."}` with the status that
/// [`ApiError::status`] gives, plus `Allow` on 405, `Retry-After` on a
/// retryable 429, `WWW-Authenticate` on 401, `Accept-Encoding` on 415, and
/// `Connection: close` when the request body was not read to its end or
/// its framing is in doubt.
pub fn error(error: &ApiError) -> Response<Body> {
    let payload = ErrorBody {
        error: error.to_string(),
        code: error.code(),
    };
    let body = serde_json::to_vec(&payload)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(br#"{"error":"error","code":"internal"}"#));
    let mut response = json(error.status(), body);
    match error {
        ApiError::MethodNotAllowed { allow } => {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        // Only `queue_full` is worth retrying here; `too_many_queues` is
        // not (it clears only when someone deletes a queue).
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
content-length: 62\r\n\
\r\n\
{\"error\":\"too many connections\",\"code\":\"too_many_connections\"}";

/// The whole answer to an HTTP/2 connection preface, written to the raw
/// socket: there is no HTTP/1.1 request to route, so no JSON body.
pub const HTTP2_PREFACE_REFUSED: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
connection: close\r\n\
content-length: 0\r\n\
\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_503_declares_its_length_and_a_code() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["code"], "too_many_connections");
    }
}
