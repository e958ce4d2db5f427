//! Building responses: one small function per kind of answer.
//!
//! Every response is JSON with `Content-Type: application/json`. Bodies are
//! built directly (static bytes, one `serde_json` write, or, for the batch
//! answers, bytes written by hand into one buffer sized for the whole
//! answer, which the unit tests compare with `serde_json`'s output), with
//! no builder that could fail, so nothing here can panic.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Response, StatusCode};
use serde::Serialize;
use std::collections::BTreeMap;

use ubroker_engine::{Delivery, QueueInfo, QueueStats, Settled};
use ubroker_proto::{ErrorBody, QueueInfo as WireQueueInfo};

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

/// `200 {"message": {"body": ...}, "id": ..., "message_id": ..., "attempt":
/// ...}`, plus `"dead_letter"` for a message that reached its dead-letter
/// queue by exhausting its deliveries. `message` and `id` come first, as in
/// the original API.
///
/// Written by hand, as a batch entry is (a unit test compares it with
/// `serde_json`'s output): serde's string escaper was the largest part of a
/// single fetch's own instructions.
pub fn delivery(delivery: &Delivery) -> Response<Body> {
    let mut out = Vec::with_capacity(delivery.body.len() + ENTRY_OVERHEAD);
    push_delivery(&mut out, delivery);
    json(StatusCode::OK, Bytes::from(out))
}

/// Appends one delivery's JSON object (the single fetch's whole answer, a
/// batch fetch's entry).
fn push_delivery(out: &mut Vec<u8>, delivery: &Delivery) {
    out.extend_from_slice(b"{\"message\":{\"body\":\"");
    push_body(out, &delivery.body);
    out.extend_from_slice(b"\"},\"id\":");
    push_u64(out, delivery.id);
    out.extend_from_slice(b",\"message_id\":");
    push_u64(out, delivery.message_id);
    out.extend_from_slice(b",\"attempt\":");
    push_u64(out, u64::from(delivery.attempt));
    if let Some(queue) = &delivery.dead_letter {
        out.extend_from_slice(b",\"dead_letter\":{\"queue\":\"");
        push_escaped(out, queue.as_str());
        out.extend_from_slice(b"\",\"reason\":\"max_deliveries\"}");
    }
    out.push(b'}');
}

/// `200 {"messages": [{"message": {"body": ...}, "id": ..., "message_id":
/// ..., "attempt": ...}, ...]}`: a batch fetch, each entry exactly as
/// [`delivery`] writes it (a unit test checks both against `serde_json`).
///
/// Written by hand into one buffer sized for the whole answer: one
/// allocation per response, none per message.
pub fn deliveries(deliveries: &[Delivery]) -> Response<Body> {
    let bodies: usize = deliveries.iter().map(|d| d.body.len()).sum();
    let mut out = Vec::with_capacity(bodies + deliveries.len() * ENTRY_OVERHEAD + 16);
    out.extend_from_slice(b"{\"messages\":[");
    for (index, delivery) in deliveries.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        push_delivery(&mut out, delivery);
    }
    out.extend_from_slice(b"]}");
    json(StatusCode::OK, Bytes::from(out))
}

/// Bytes of one batch-fetch entry besides its body, ids included (the
/// buffer grows past it only for escapes and dead letters).
const ENTRY_OVERHEAD: usize = 100;

/// `200 {"results": ["ok" | "invalid", ...]}`: a batch settle.
pub fn results(results: &[Settled]) -> Response<Body> {
    let mut out = Vec::with_capacity(results.len() * 10 + 16);
    out.extend_from_slice(b"{\"results\":[");
    for (index, settled) in results.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(match settled {
            Settled::Ok => b"\"ok\"",
            Settled::Invalid => b"\"invalid\"",
        });
    }
    out.extend_from_slice(b"]}");
    json(StatusCode::OK, Bytes::from(out))
}

/// `200 {"published": n}`: a batch publish.
pub fn published(n: u64) -> Response<Body> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(b"{\"published\":");
    push_u64(&mut out, n);
    out.push(b'}');
    json(StatusCode::OK, Bytes::from(out))
}

/// Appends `n` in decimal (itoa, as serde_json writes integers: a
/// per-digit loop was a tenth of a batch fetch's instructions).
fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends a message body as the inside of a JSON string.
///
/// The common body (ASCII, nothing to escape) is found by one branch-free
/// pass that the compiler vectorises, and copied as it is: the profile of a
/// batch fetch had the byte-by-byte escaper and the UTF-8 check at a fifth
/// of the server's instructions. Bodies arrive as JSON strings, so they are
/// UTF-8; the lossy fallback is for bodies an embedding process published.
fn push_body(out: &mut Vec<u8>, body: &[u8]) {
    let special = body.iter().fold(false, |special, &b| {
        special | (b < 0x20) | (b == b'"') | (b == b'\\') | (b >= 0x80)
    });
    if !special {
        out.extend_from_slice(body);
        return;
    }
    match std::str::from_utf8(body) {
        Ok(text) => push_escaped(out, text),
        Err(_) => push_escaped(out, &String::from_utf8_lossy(body)),
    }
}

/// Appends `text` escaped as the inside of a JSON string, exactly as
/// `serde_json` escapes it: `"` and `\\`, the short forms `\b \f \n \r \t`,
/// other control characters as `\u00XX`; everything else as it is.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut run = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..index]);
        run = index + 1;
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[run..]);
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

/// The server's words for an engine [`QueueInfo`]: the wire object
/// (`ubroker-proto`).
fn queue_body(info: &QueueInfo) -> WireQueueInfo {
    WireQueueInfo {
        name: info.name.as_str().to_owned(),
        ttl_ms: ttl_ms(info.settings.ttl),
        max_deliveries: info.settings.max_deliveries,
        ready: info.ready as u64,
        in_flight: info.in_flight as u64,
        delayed: info.delayed as u64,
        bytes: info.bytes,
    }
}

/// A TTL in the API's whole milliseconds (saturating: the engine keeps
/// nanoseconds, the API and the log milliseconds).
pub fn ttl_ms(ttl: std::time::Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// `200 {"name", "ttl_ms", "max_deliveries", "ready", "in_flight",
/// "delayed", "bytes"}`: the object `GET` and `PUT /queues/{queue}` answer,
/// the server's words for an engine [`QueueInfo`].
pub fn queue(info: &QueueInfo) -> Response<Body> {
    ok_json(&queue_body(info))
}

/// `200 {"queues": [...]}`, in the order given (sorted by name).
pub fn queues(infos: &[QueueInfo]) -> Response<Body> {
    #[derive(Serialize)]
    struct Queues {
        queues: Vec<WireQueueInfo>,
    }
    ok_json(&Queues {
        queues: infos.iter().map(queue_body).collect(),
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

/// `503 {"error": "not the leader", "code": "not_leader", "leader": <index
/// or null>}`: replicated mode, a node that does not lead its group.
pub fn not_leader(leader: Option<u64>) -> Response<Body> {
    let body = match leader {
        Some(leader) => {
            format!(r#"{{"error":"not the leader","code":"not_leader","leader":{leader}}}"#)
        }
        None => r#"{"error":"not the leader","code":"not_leader","leader":null}"#.to_owned(),
    };
    json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(body))
}

/// `/health` of a replicated node: `{"status": "ok", "role": ..., "leader": ...}`
/// (`200`, or `503` from `/health/leader` on a node that does not lead).
pub fn replica_health(status: StatusCode, leading: bool, leader: Option<u64>) -> Response<Body> {
    let role = if leading { "leader" } else { "follower" };
    let leader = leader.map_or_else(|| "null".to_owned(), |l| l.to_string());
    let body = if status == StatusCode::OK {
        format!(r#"{{"status":"ok","role":"{role}","leader":{leader}}}"#)
    } else {
        format!(
            r#"{{"error":"not the leader","code":"not_leader","status":"ok","role":"{role}","leader":{leader}}}"#
        )
    };
    json(status, Bytes::from(body))
}

/// `{"error": "...", "code": "..."}` with the status that
/// [`ApiError::status`] gives, plus `Allow` on 405, `Retry-After` on a
/// retryable 429, `WWW-Authenticate` on 401, `Accept-Encoding` on 415, and
/// `Connection: close` when the request body was not read to its end or
/// its framing is in doubt.
pub fn error(error: &ApiError) -> Response<Body> {
    if let ApiError::NotLeader { leader } = error {
        return not_leader(*leader);
    }
    let payload = ErrorBody {
        error: error.to_string().into(),
        code: error.code().as_str().into(),
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
    use http_body_util::BodyExt;
    use ubroker_engine::QueueName;

    async fn body_of(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn sample_deliveries() -> Vec<Delivery> {
        let every_ascii: String = (0u8..128).map(char::from).collect();
        let bodies = [
            String::new(),
            "plain".to_owned(),
            every_ascii,
            "é ü 日本 \u{2028}\u{2029} \u{1F600} \\\" \\u0041".to_owned(),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Delivery {
                id: (1 << 53) - 1 - i as u64,
                message_id: i as u64,
                attempt: if i == 2 { u32::MAX } else { 1 },
                body: Bytes::from(body),
                dead_letter: (i % 2 == 1).then(|| QueueName::new("jobs-1_x").unwrap()),
            })
            .collect()
    }

    /// The single fetch's answer as `serde_json` writes it: the reference
    /// the hand-written form is held to.
    #[derive(serde::Serialize)]
    struct FetchBody<'a> {
        message: MessageBody<'a>,
        id: u64,
        message_id: u64,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        dead_letter: Option<DeadLetter<'a>>,
    }

    #[derive(serde::Serialize)]
    struct MessageBody<'a> {
        body: &'a str,
    }

    #[derive(serde::Serialize)]
    struct DeadLetter<'a> {
        queue: &'a str,
        reason: &'static str,
    }

    fn serde_delivery(delivery: &Delivery) -> String {
        serde_json::to_string(&FetchBody {
            message: MessageBody {
                body: std::str::from_utf8(&delivery.body).unwrap(),
            },
            id: delivery.id,
            message_id: delivery.message_id,
            attempt: delivery.attempt,
            dead_letter: delivery.dead_letter.as_ref().map(|queue| DeadLetter {
                queue: queue.as_str(),
                reason: "max_deliveries",
            }),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn batch_fetch_bodies_match_serde_json_and_the_single_form() {
        let deliveries = sample_deliveries();
        let batch = body_of(super::deliveries(&deliveries)).await;
        // Each entry, and each single fetch's answer, is byte for byte what
        // serde_json writes.
        let mut singles = Vec::new();
        for d in &deliveries {
            let single = body_of(delivery(d)).await;
            assert_eq!(single, serde_delivery(d));
            singles.push(single);
        }
        assert_eq!(batch, format!("{{\"messages\":[{}]}}", singles.join(",")));
        // And it parses back to the same values.
        let parsed: serde_json::Value = serde_json::from_str(&batch).unwrap();
        for (entry, d) in parsed["messages"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&deliveries)
        {
            assert_eq!(
                entry["message"]["body"].as_str().unwrap().as_bytes(),
                &d.body[..]
            );
            assert_eq!(entry["id"], d.id);
            assert_eq!(entry["attempt"], d.attempt);
        }
    }

    #[tokio::test]
    async fn escaping_matches_serde_json_for_every_character_class() {
        let mut text = String::new();
        for c in (0u32..0x800)
            .chain([0xFFFF, 0x10FFFF])
            .filter_map(char::from_u32)
        {
            text.push(c);
        }
        let mut out = Vec::new();
        push_escaped(&mut out, &text);
        let expected = serde_json::to_string(&text).unwrap();
        assert_eq!(format!("\"{}\"", String::from_utf8(out).unwrap()), expected);
    }

    #[test]
    fn bodies_are_written_as_serde_json_writes_them_with_or_without_escapes() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain ascii, nothing to escape ~ \x7f".to_vec(),
            "é".as_bytes().to_vec(),
            b"tab\there".to_vec(),
            b"quote\" and back\\slash".to_vec(),
            vec![b'x'; 1000],
        ];
        // Every single byte, at the start, the middle and the end of a body
        // long enough for a vectorised scan.
        for byte in 0u8..=255 {
            for at in [0, 17, 63] {
                let mut body = vec![b'a'; 64];
                body[at] = byte;
                cases.push(body);
            }
        }
        for body in cases {
            let mut out = Vec::new();
            push_body(&mut out, &body);
            let expected = serde_json::to_string(&String::from_utf8_lossy(&body)).unwrap();
            assert_eq!(
                format!("\"{}\"", String::from_utf8(out).unwrap()),
                expected,
                "{body:?}"
            );
        }
    }

    #[tokio::test]
    async fn results_and_published_match_serde_json() {
        let results = [Settled::Ok, Settled::Invalid, Settled::Invalid, Settled::Ok];
        let expected = serde_json::json!({"results": ["ok", "invalid", "invalid", "ok"]});
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body_of(super::results(&results)).await)
                .unwrap(),
            expected
        );
        assert_eq!(
            body_of(super::results(&results)).await,
            expected.to_string()
        );
        for n in [0, 7, 10, 1000, u64::MAX] {
            assert_eq!(
                body_of(published(n)).await,
                serde_json::json!({ "published": n }).to_string()
            );
        }
    }

    #[test]
    fn the_raw_503_declares_its_length_and_a_code() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["code"], "too_many_connections");
    }
}
