//! The bodies of the API as Rust types: what is sent ([`Message`],
//! [`EncodedBatch`], [`QueueSettings`]) and what comes back ([`Delivery`],
//! [`QueueInfo`], [`Stats`], [`Settled`], [`Health`]), with the decoding
//! of each answer.
//!
//! Decoding never allocates per message where it can help it: a fetched
//! body is a [`Bytes`] slice of the response buffer whenever its JSON string
//! has no escapes (the common case), so a batch of 100 costs one `Vec`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use ubroker_proto::{DeadLetter, QueueInfo, QueueSettings, QueueStats, Settled};

/// One message to publish: its body and an optional delay.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub body: &'a str,
    pub delay: Option<Duration>,
}

impl<'a> Message<'a> {
    /// A message ready at once.
    pub fn new(body: &'a str) -> Self {
        Message { body, delay: None }
    }

    /// A message that becomes ready after `delay`.
    pub fn delayed(body: &'a str, delay: Duration) -> Self {
        Message {
            body,
            delay: Some(delay),
        }
    }
}

impl<'a> From<&'a str> for Message<'a> {
    fn from(body: &'a str) -> Self {
        Message::new(body)
    }
}

impl<'a> From<&'a String> for Message<'a> {
    fn from(body: &'a String) -> Self {
        Message::new(body)
    }
}

/// A batch publish body, encoded once: `{"messages": [...]}` and how many
/// entries it holds. Sending it again (a retry, or a load generator's next
/// request) clones a reference count, not the bytes.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    body: Bytes,
    len: usize,
}

impl EncodedBatch {
    /// Encodes `messages`. An empty batch is refused here (the server
    /// would answer `400`).
    pub fn new<'m, I, M>(messages: I) -> Result<Self>
    where
        I: IntoIterator<Item = M>,
        M: Into<Message<'m>>,
    {
        #[derive(Serialize)]
        struct Entry<'a> {
            body: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            delay_ms: Option<u64>,
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"messages\":[");
        let mut len = 0;
        for message in messages {
            let message = message.into();
            if len > 0 {
                out.push(b',');
            }
            let entry = Entry {
                body: message.body,
                delay_ms: message.delay.map(millis),
            };
            serde_json::to_writer(&mut out, &entry)
                .map_err(|e| Error::InvalidArgument(format!("cannot encode message {len}: {e}")))?;
            len += 1;
        }
        if len == 0 {
            return Err(Error::InvalidArgument("a batch needs a message".into()));
        }
        out.extend_from_slice(b"]}");
        Ok(EncodedBatch {
            body: Bytes::from(out),
            len,
        })
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an empty batch cannot be built.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The request body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// A single publish body, `{"body": "..."}`, encoded once: for a producer
/// that sends the same body again and again (a heartbeat, a load
/// generator). See [`crate::Queue::publish_encoded_message`].
#[derive(Debug, Clone)]
pub struct EncodedMessage {
    body: Bytes,
}

impl EncodedMessage {
    /// Encodes `body`.
    pub fn new(body: &str) -> Result<Self> {
        single_publish_body(body).map(|body| EncodedMessage { body })
    }

    /// The request body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// A single publish body, `{"body": "..."}`.
pub(crate) fn single_publish_body(body: &str) -> Result<Bytes> {
    #[derive(Serialize)]
    struct Publish<'a> {
        body: &'a str,
    }
    serde_json::to_vec(&Publish { body })
        .map(Bytes::from)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode the message: {e}")))
}

/// A settle batch body, `{"ids": [...]}`, written by hand into one buffer
/// (ids are plain integers; checked against `serde_json` in the tests).
pub(crate) fn ids_body(ids: &[u64]) -> Result<Bytes> {
    if ids.is_empty() {
        return Err(Error::InvalidArgument("a batch needs an id".into()));
    }
    let mut out = Vec::with_capacity(10 + ids.len() * 12);
    out.extend_from_slice(b"{\"ids\":[");
    for (index, &id) in ids.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        push_decimal(&mut out, id);
    }
    out.extend_from_slice(b"]}");
    Ok(Bytes::from(out))
}

/// Appends `n` in decimal: `write!` goes through the formatting machinery,
/// about 250 instructions per id in a batch (callgrind).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Milliseconds of `d`, saturating, as the API counts them.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One delivery of a message: a lease until acknowledged, requeued or
/// expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// This delivery's id: what acknowledge, requeue and touch take.
    pub id: u64,
    /// The message's id, the same on every delivery: deduplicate with it
    /// (see [`crate::Dedup`]). 0 from a server that predates it.
    pub message_id: u64,
    /// 1 on the first delivery from this queue, one more on each later one
    /// (0 from a server that predates it).
    pub attempt: u32,
    /// The body, always valid UTF-8 (a JSON string); see [`Delivery::text`].
    pub body: Bytes,
    /// Set when fetched from a dead-letter queue.
    pub dead_letter: Option<DeadLetter>,
    /// The partition it was fetched from, when fetched through a
    /// [`crate::PartitionedQueue`]: its settlements go there.
    pub partition: Option<u32>,
}

impl Delivery {
    /// The body as text.
    pub fn text(&self) -> &str {
        // The body came out of a JSON string, so it is UTF-8; the fallback
        // is never taken.
        std::str::from_utf8(&self.body).unwrap_or_default()
    }
}

/// A delivery as it sits in the response, borrowing its body when it can.
#[derive(Deserialize)]
struct RawDelivery<'a> {
    #[serde(borrow)]
    message: RawMessage<'a>,
    id: u64,
    #[serde(default)]
    message_id: u64,
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    dead_letter: Option<DeadLetter>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    body: Cow<'a, str>,
}

impl RawDelivery<'_> {
    fn into_delivery(self, response: &Bytes) -> Delivery {
        let body = match self.message.body {
            // A slice of the response buffer: no copy, no allocation.
            Cow::Borrowed(text) => response.slice_ref(text.as_bytes()),
            Cow::Owned(text) => Bytes::from(text),
        };
        Delivery {
            id: self.id,
            message_id: self.message_id,
            attempt: self.attempt,
            body,
            dead_letter: self.dead_letter,
            partition: None,
        }
    }
}

/// The answer as text, checked once: serde_json then reads it as `&str`
/// and skips checking every string on its own, which cost a batch fetch
/// about 450 instructions per message (callgrind).
fn text<'a>(response: &'a [u8], route: &'static str) -> Result<&'a str> {
    std::str::from_utf8(response).map_err(|e| Error::Decode {
        route,
        source: serde::de::Error::custom(e),
    })
}

/// Decodes a single fetch answer.
pub(crate) fn decode_delivery(response: &Bytes) -> Result<Delivery> {
    let raw: RawDelivery =
        serde_json::from_str(text(response, "fetch")?).map_err(|source| Error::Decode {
            route: "fetch",
            source,
        })?;
    Ok(raw.into_delivery(response))
}

/// Decodes a batch fetch answer, appending to `out`. A server without
/// batches (part 1 only, such as the original Go ubroker) ignores `max`
/// and answers the single form, which is taken as a batch of one rather
/// than lost with its lease.
pub(crate) fn decode_deliveries(response: &Bytes, out: &mut Vec<Delivery>) -> Result<()> {
    #[derive(Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        messages: Vec<RawDelivery<'a>>,
    }
    let json = text(response, "fetch?max")?;
    let raw: Batch = match serde_json::from_str(json) {
        Ok(raw) => raw,
        Err(source) => {
            let single = serde_json::from_str::<RawDelivery>(json).map_err(|_| Error::Decode {
                route: "fetch?max",
                source,
            })?;
            out.push(single.into_delivery(response));
            return Ok(());
        }
    };
    out.reserve(raw.messages.len());
    out.extend(raw.messages.into_iter().map(|d| d.into_delivery(response)));
    Ok(())
}

/// Decodes `{"results": [...]}`.
pub(crate) fn decode_results(response: &Bytes) -> Result<Vec<Settled>> {
    #[derive(Deserialize)]
    struct Results {
        results: Vec<Settled>,
    }
    serde_json::from_str::<Results>(text(response, "settle batch")?)
        .map(|r| r.results)
        .map_err(|source| Error::Decode {
            route: "settle batch",
            source,
        })
}

/// Decodes a one-field count answer (`{"published": n}`, `{"deleted": n}`,
/// `{"moved": n}`).
pub(crate) fn decode_count(response: &Bytes, field: &'static str) -> Result<u64> {
    let map: BTreeMap<String, u64> =
        serde_json::from_slice(response).map_err(|source| Error::Decode {
            route: field,
            source,
        })?;
    map.get(field).copied().ok_or_else(|| Error::Decode {
        route: field,
        source: serde::de::Error::missing_field(field),
    })
}

/// Decodes any JSON answer into `T`.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    response: &Bytes,
    route: &'static str,
) -> Result<T> {
    serde_json::from_slice(response).map_err(|source| Error::Decode { route, source })
}

/// `GET /stats`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Stats {
    pub uptime_ms: u64,
    pub queues: BTreeMap<String, QueueStats>,
    /// The write-ahead log's figures, with `--data-dir`, as the server
    /// writes them.
    #[serde(default)]
    pub log: Option<serde_json::Value>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `200 {"status": "ok"}`.
    Ok,
    /// `503`: the server is draining, shutting down, or its log failed;
    /// carries the code (`shutting_down`, `log_failed`).
    Unavailable(crate::error::Code),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_body_matches_serde_json() {
        for ids in [
            vec![0u64],
            vec![1, 2, 3],
            vec![u64::MAX, 9_007_199_254_740_991],
        ] {
            let ours = ids_body(&ids).unwrap();
            let theirs = serde_json::to_vec(&serde_json::json!({ "ids": ids })).unwrap();
            assert_eq!(&ours[..], &theirs[..]);
        }
        assert!(ids_body(&[]).is_err());
    }

    #[test]
    fn batches_encode_bodies_and_delays() {
        let batch = EncodedBatch::new([
            Message::new("a\"b"),
            Message::delayed("c", Duration::from_millis(1500)),
        ])
        .unwrap();
        assert_eq!(batch.len(), 2);
        let value: serde_json::Value = serde_json::from_slice(batch.body()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"messages": [{"body": "a\"b"}, {"body": "c", "delay_ms": 1500}]})
        );
        assert!(EncodedBatch::new(Vec::<&str>::new()).is_err());
    }

    #[test]
    fn deliveries_borrow_plain_bodies_and_copy_escaped_ones() {
        let response = Bytes::from_static(
            br#"{"messages":[{"message":{"body":"plain"},"id":7,"message_id":3,"attempt":2},
                {"message":{"body":"tab\there"},"id":8,"message_id":4,"attempt":1,
                 "dead_letter":{"queue":"jobs","reason":"max_deliveries"}}]}"#,
        );
        let mut out = Vec::new();
        decode_deliveries(&response, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].id, out[0].message_id, out[0].attempt), (7, 3, 2));
        assert_eq!(out[0].text(), "plain");
        // The borrowed body points into the response buffer.
        let start = response.as_ptr() as usize;
        let body = out[0].body.as_ptr() as usize;
        assert!(body >= start && body < start + response.len());
        assert_eq!(out[1].text(), "tab\there");
        assert_eq!(out[1].dead_letter.as_ref().unwrap().queue, "jobs");

        // A server without batches answers `?max=` with the single form.
        let mut out = Vec::new();
        decode_deliveries(
            &Bytes::from_static(br#"{"message":{"body":"s"},"id":9}"#),
            &mut out,
        )
        .unwrap();
        assert_eq!((out.len(), out[0].id, out[0].text()), (1, 9, "s"));
        assert!(decode_deliveries(&Bytes::from_static(b"{}"), &mut out).is_err());
        assert!(
            decode_deliveries(&Bytes::from_static(b"{\"messages\":[\xff]}"), &mut out).is_err()
        );
        assert!(decode_results(&Bytes::from_static(b"\xfe")).is_err());

        // A part-1 server sends neither message_id nor attempt.
        let single = Bytes::from_static(br#"{"message":{"body":"x"},"id":1}"#);
        let d = decode_delivery(&single).unwrap();
        assert_eq!((d.id, d.message_id, d.attempt), (1, 0, 0));
        assert!(decode_delivery(&Bytes::from_static(b"{}")).is_err());
    }

    #[test]
    fn counts_and_results() {
        let b = Bytes::from_static(br#"{"published":3}"#);
        assert_eq!(decode_count(&b, "published").unwrap(), 3);
        assert!(decode_count(&b, "moved").is_err());
        let r = Bytes::from_static(br#"{"results":["ok","invalid","ok"]}"#);
        assert_eq!(
            decode_results(&r).unwrap(),
            [Settled::Ok, Settled::Invalid, Settled::Ok]
        );
    }
}
