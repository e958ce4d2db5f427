//! Request decoding: turning client bytes (bodies, path segments, query
//! strings) into typed values, or a 400-class [`ApiError`].
//!
//! Everything here is a pure function of its input, with no I/O and no
//! broker, so it is unit-tested exhaustively and fuzzed (`server/fuzz`). It
//! must never panic, whatever the input.
//!
//! This file decodes request bodies (JSON); [`query`] decodes the query
//! string, path segments (ids) and the size of the head; [`plain`] reads the
//! commonest bodies by hand before serde is asked.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use ubroker_engine::{NewMessage, QueueUpdate};

use crate::config::Config;
use crate::error::ApiError;

mod plain;
mod query;
pub use query::*;

/// What a publish request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Publish {
    /// `{"body": "..."}`: one message, delayed by the route's `?delay=`.
    One(Bytes),
    /// `{"messages": [...]}`: 1 to `--max-batch` messages, all or nothing.
    Batch(Vec<NewMessage>),
}

#[derive(Deserialize)]
struct PublishRequest<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    body: Option<JsonStr<'a>>,
    #[serde(default, deserialize_with = "present")]
    messages: Option<Entries>,
}

/// A JSON string, borrowed from the request when it holds no escapes.
///
/// (serde's own `Cow<str>` always allocates unless it is a struct field
/// marked `#[serde(borrow)]` directly, which an `Option` is not.)
struct JsonStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

impl JsonStr<'_> {
    /// The message body: one allocation of its own per message. An escaped
    /// string was already unescaped into a `String`, which is kept as is.
    ///
    /// `Bytes::slice_ref` of the request would save the copy but pin the
    /// whole request buffer (up to `--max-body-bytes`) for as long as any
    /// one of its messages lives; BENCHMARKS.md has the measurement.
    fn into_body(self) -> Bytes {
        match self.0 {
            Cow::Borrowed(text) => Bytes::copy_from_slice(text.as_bytes()),
            Cow::Owned(text) => Bytes::from(text),
        }
    }
}

/// One entry of `messages`: `{"body": "<string>", "delay_ms": u64?}`,
/// other fields ignored; made into the engine's message as it is parsed
/// (its delay is checked against `--max-delay` afterwards).
struct Entry(NewMessage);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            Body,
            DelayMs,
            #[serde(other)]
            Other,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with a string field \"body\"")
            }
            // Only `visit_map`: unlike a derived struct, an array is refused.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error;
                let (mut body, mut delay_ms) = (None, None);
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Body if body.is_some() => {
                            return Err(A::Error::duplicate_field("body"))
                        }
                        Field::Body => body = Some(map.next_value::<JsonStr<'de>>()?),
                        Field::DelayMs if delay_ms.is_some() => {
                            return Err(A::Error::duplicate_field("delay_ms"))
                        }
                        Field::DelayMs => delay_ms = Some(map.next_value::<u64>()?),
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let body = body.ok_or_else(|| A::Error::missing_field("body"))?;
                Ok(Entry(NewMessage {
                    body: body.into_body(),
                    delay: Duration::from_millis(delay_ms.unwrap_or(0)),
                }))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// `messages`: a JSON array of entries. An entry's error names its index.
struct Entries(Vec<NewMessage>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                // serde_json gives no length. Room for 256 up front: a Vec
                // that grows while the bodies are allocated leaves its old
                // buffers between them, and a batch fetch of bodies so
                // scattered cost 1.2 us of server CPU per message fetched
                // and acknowledged against 0.7 us (BENCHMARKS.md).
                let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(256).min(1024));
                loop {
                    match seq.next_element::<Entry>() {
                        Ok(Some(Entry(message))) => entries.push(message),
                        Ok(None) => return Ok(Entries(entries)),
                        Err(error) => {
                            // serde_json adds the position once more on the
                            // way out: keep one.
                            let text = error.to_string();
                            let reason = text.rsplit_once(" at line ").map_or(&*text, |(r, _)| r);
                            return Err(serde::de::Error::custom(format_args!(
                                "messages[{}]: {reason}",
                                entries.len()
                            )));
                        }
                    }
                }
            }
        }
        d.deserialize_seq(Visitor)
    }
}

/// Parses a publish body: `{"body": "<string>"}` (one message) or
/// `{"messages": [{"body": "<string>", "delay_ms": u64?}, ...]}` (a batch of
/// 1 to `--max-batch`, each delay at most `--max-delay`).
///
/// Extra fields are ignored (as the original did), both `body` and
/// `messages` is a 400, and every error in an entry names its index.
pub fn parse_publish(raw: &[u8], config: &Config) -> Result<Publish, ApiError> {
    if let Some(body) = plain::body(raw) {
        return Ok(Publish::One(Bytes::copy_from_slice(body)));
    }
    let request: PublishRequest<'_> = parse_object(
        raw,
        "a JSON object with a string field \"body\" or an array \"messages\"",
    )?;
    match (request.body, request.messages) {
        (Some(body), None) => Ok(Publish::One(body.into_body())),
        (None, Some(Entries(entries))) => {
            let max = config.max_batch();
            if entries.is_empty() || entries.len() > max {
                return Err(ApiError::BadBody(format!(
                    "messages must hold 1 to {max} entries, not {}",
                    entries.len()
                )));
            }
            let max_delay = Duration::from_millis(config.max_delay);
            if let Some(index) = entries.iter().position(|entry| entry.delay > max_delay) {
                return Err(ApiError::BadBody(format!(
                    "messages[{index}]: delay_ms must be from 0 to {}",
                    config.max_delay
                )));
            }
            Ok(Publish::Batch(entries))
        }
        (Some(_), Some(_)) => Err(ApiError::BadBody(
            "give either \"body\" or \"messages\", not both".into(),
        )),
        (None, None) => Err(ApiError::BadBody("missing field `body`".into())),
    }
}

/// The body of a batch acknowledge, requeue or touch.
#[derive(Deserialize)]
struct IdsRequest {
    ids: Vec<u64>,
}

/// Parses `{"ids": [u64, ...]}` (1 to `--max-batch` ids; other fields
/// ignored). An id that is not a `u64` is a 400 for the whole request.
pub fn parse_ids(raw: &[u8], config: &Config) -> Result<Vec<u64>, ApiError> {
    let request = match plain::ids(raw) {
        Some(ids) => IdsRequest { ids },
        None => parse_object(
            raw,
            "a JSON object with an array of unsigned integers \"ids\"",
        )?,
    };
    let max = config.max_batch();
    if request.ids.is_empty() || request.ids.len() > max {
        return Err(ApiError::BadBody(format!(
            "ids must hold 1 to {max} ids, not {}",
            request.ids.len()
        )));
    }
    Ok(request.ids)
}

/// The body of `PUT /queues/{queue}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQueue {
    #[serde(default, deserialize_with = "present")]
    ttl_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    max_deliveries: Option<u32>,
}

/// A field that, when present, must hold a value: `null` is refused rather
/// than read as "keep", so a client's bug does not pass silently.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Parses `{"ttl_ms": u64, "max_deliveries": u32}` (each optional; an empty
/// body is `{}`; unknown fields refused). `ttl_ms` is 1 to `--max-ttl`.
pub fn parse_put_queue(raw: &[u8], config: &Config) -> Result<QueueUpdate, ApiError> {
    // JSON's whitespace (RFC 8259, section 2), not Rust's ASCII whitespace,
    // which also takes form feed (found by fuzzing).
    let raw: &[u8] = if raw
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        b"{}"
    } else {
        raw
    };
    let request: PutQueue = parse_object(raw, "a JSON object with ttl_ms and max_deliveries")?;
    if let Some(ttl) = request.ttl_ms {
        if !(1..=config.max_ttl).contains(&ttl) {
            return Err(ApiError::BadBody(format!(
                "ttl_ms must be from 1 to {}",
                config.max_ttl
            )));
        }
    }
    Ok(QueueUpdate {
        ttl: request.ttl_ms.map(Duration::from_millis),
        max_deliveries: request.max_deliveries,
    })
}

/// Parses a JSON object of type `T` from a UTF-8 body.
fn parse_object<'a, T: Deserialize<'a>>(raw: &'a [u8], expected: &str) -> Result<T, ApiError> {
    // serde's derived struct visitor also accepts a JSON array; the
    // contract asks for an object.
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadBody(format!("expected {expected}")));
    }
    // JSON text is UTF-8 (RFC 8259, section 8.1). `from_slice` checks only
    // the strings it keeps: invalid UTF-8 in an ignored field's string would
    // pass, so the whole body is checked here, once (found by fuzzing).
    let text = std::str::from_utf8(raw)
        .map_err(|error| ApiError::BadBody(format!("not UTF-8: {error}")))?;
    serde_json::from_str(text).map_err(|error| ApiError::BadBody(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_queue_bodies() {
        let config = Config::for_port(0);
        assert_eq!(parse_put_queue(b"", &config), Ok(QueueUpdate::default()));
        assert_eq!(
            parse_put_queue(b" \t\r\n", &config),
            Ok(QueueUpdate::default())
        );
        assert!(
            parse_put_queue(b"\x0c", &config).is_err(),
            "form feed is not JSON"
        );
        assert_eq!(
            parse_put_queue(b" {} ", &config),
            Ok(QueueUpdate::default())
        );
        assert_eq!(
            parse_put_queue(br#"{"ttl_ms": 5, "max_deliveries": 3}"#, &config),
            Ok(QueueUpdate {
                ttl: Some(Duration::from_millis(5)),
                max_deliveries: Some(3)
            })
        );
        for bad in [
            &br#"{"ttl_ms": 0}"#[..],
            br#"{"ttl_ms": 43200001}"#,
            br#"{"ttl_ms": -1}"#,
            br#"{"ttl_ms": "5"}"#,
            br#"{"ttl_ms": null}"#,
            br#"{"max_deliveries": 4294967296}"#,
            br#"{"max_deliveries": 1.5}"#,
            br#"{"other": 1}"#,
            br#"{"ttl_ms": 5, "ttl_ms": 6}"#,
            b"[]",
            b"null",
            b"{",
            b"{\"ttl_ms\": 5, \"x\": \"\xff\"}",
        ] {
            assert!(
                matches!(parse_put_queue(bad, &config), Err(ApiError::BadBody(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn one(raw: &[u8]) -> Result<Bytes, ApiError> {
        match parse_publish(raw, &Config::for_port(0))? {
            Publish::One(body) => Ok(body),
            Publish::Batch(_) => panic!("a batch from {:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn batch(raw: &str, config: &Config) -> Result<Vec<NewMessage>, ApiError> {
        match parse_publish(raw.as_bytes(), config)? {
            Publish::Batch(messages) => Ok(messages),
            Publish::One(_) => panic!("a single publish from {raw:?}"),
        }
    }

    fn bad_body(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::BadBody(reason)) => reason,
            other => panic!("expected a bad body, got {other:?}"),
        }
    }

    #[test]
    fn publish_bodies_must_be_objects_with_a_string_body() {
        assert_eq!(
            one(br#" {"body":"x","other":1} "#),
            Ok(Bytes::from_static(b"x"))
        );
        assert_eq!(one(br#"{"body":"\u00e9"}"#), Ok(Bytes::from("é")));
        assert_eq!(one(br#"{"body":"a\"b"}"#), Ok(Bytes::from("a\"b")));
        for bad in [
            &b""[..],
            b"[\"x\"]",
            b"\"x\"",
            b"null",
            b"{}",
            b"{\"body\":1}",
            b"{\"body\":null}",
            b"{\"body\":[\"x\"]}",
            b"{\"body\":\"x\"",
            b"{\"body\":\"x\",\"body\":\"y\"}",
            b"{\"body\":\"\\ud800\"}",
            b"{\"body\":\"\xff\"}",
            // Invalid UTF-8 outside the body's own string (fuzz finding).
            b"{\"body\":\"x\",\"^od{\":\"y\x8a\"}",
            b"{\"other\":\"\xc3\x28\",\"body\":\"x\"}",
            b"{\"body\":\"x\"} \xff",
        ] {
            assert!(
                matches!(
                    parse_publish(bad, &Config::for_port(0)),
                    Err(ApiError::BadBody(_))
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn batch_publish_bodies() {
        let config = Config::for_port(0);
        assert_eq!(
            batch(
                r#"{"messages":[{"body":"a"},{"body":"b\n","delay_ms":5,"x":[1]},{"delay_ms":0,"body":""}],"y":1}"#,
                &config
            ),
            Ok(vec![
                NewMessage {
                    body: Bytes::from("a"),
                    delay: Duration::ZERO
                },
                NewMessage {
                    body: Bytes::from("b\n"),
                    delay: Duration::from_millis(5)
                },
                NewMessage {
                    body: Bytes::new(),
                    delay: Duration::ZERO
                },
            ])
        );
        assert_eq!(
            batch(
                r#"{"messages":[{"body":"x","delay_ms":86400000}]}"#,
                &config
            )
            .map(|m| m[0].delay),
            Ok(Duration::from_millis(86_400_000))
        );
        // Each rule, with the reason it gives.
        for (bad, says) in [
            (r#"{"messages":[]}"#, "1 to 1000 entries, not 0"),
            (r#"{"messages":null}"#, "invalid type: null"),
            (r#"{"messages":{"body":"x"}}"#, "expected an array"),
            (r#"{"messages":"x"}"#, "expected an array"),
            (r#"{"body":"x","messages":[{"body":"y"}]}"#, "not both"),
            (r#"{"messages":[{"body":"y"}],"body":"x"}"#, "not both"),
            (
                r#"{"messages":[{"body":"y"}],"messages":[{"body":"y"}]}"#,
                "duplicate field `messages`",
            ),
            (
                r#"{"messages":[{"body":"a"},{"body":1}]}"#,
                "messages[1]: invalid type: integer `1`",
            ),
            (
                r#"{"messages":[{"body":"a"},{"body":"b"},{}]}"#,
                "messages[2]: missing field `body`",
            ),
            (
                r#"{"messages":[{"body":"a"},"b"]}"#,
                "messages[1]: invalid type: string",
            ),
            (
                r#"{"messages":[["a"]]}"#,
                "messages[0]: invalid type: sequence",
            ),
            (r#"{"messages":[null]}"#, "messages[0]: invalid type: null"),
            (
                r#"{"messages":[{"body":null}]}"#,
                "messages[0]: invalid type: null",
            ),
            (
                r#"{"messages":[{"body":"a","body":"b"}]}"#,
                "messages[0]: duplicate field `body`",
            ),
            (
                r#"{"messages":[{"body":"a","delay_ms":1,"delay_ms":1}]}"#,
                "messages[0]: duplicate field `delay_ms`",
            ),
            (
                r#"{"messages":[{"body":"a","delay_ms":-1}]}"#,
                "messages[0]: invalid value: integer `-1`",
            ),
            (
                r#"{"messages":[{"body":"a","delay_ms":1.5}]}"#,
                "messages[0]: invalid type: floating point",
            ),
            (
                r#"{"messages":[{"body":"a","delay_ms":"5"}]}"#,
                "messages[0]: invalid type: string",
            ),
            (
                r#"{"messages":[{"body":"a","delay_ms":null}]}"#,
                "messages[0]: invalid type: null",
            ),
            (
                r#"{"messages":[{"body":"a"},{"body":"a","delay_ms":86400001}]}"#,
                "messages[1]: delay_ms must be from 0 to 86400000",
            ),
            (r#"{"messages":[{"body":"\ud800"}]}"#, "messages[0]: "),
            (r#"{"messages":[{"body":"a"}"#, "EOF"),
            (r#"{"messages":[{"body":"a"},]}"#, "trailing comma"),
        ] {
            let reason = bad_body(parse_publish(bad.as_bytes(), &config));
            assert!(reason.contains(says), "{bad}: {reason}");
            // One position, not two.
            assert!(reason.matches(" at line ").count() <= 1, "{bad}: {reason}");
        }
        assert!(bad_body(parse_publish(
            b"{\"messages\":[{\"body\":\"\xff\"}]}",
            &config
        ))
        .contains("UTF-8"));
    }

    #[test]
    fn batch_sizes_follow_max_batch() {
        let mut config = Config::for_port(0);
        config.max_batch = 3;
        let entries = |n: usize| {
            format!(
                "{{\"messages\":[{}]}}",
                vec![r#"{"body":"x"}"#; n].join(",")
            )
        };
        assert_eq!(batch(&entries(1), &config).map(|m| m.len()), Ok(1));
        assert_eq!(batch(&entries(3), &config).map(|m| m.len()), Ok(3));
        assert!(bad_body(batch(&entries(4), &config)).contains("1 to 3 entries, not 4"));
        let ids = |n: usize| format!("{{\"ids\":[{}]}}", vec!["7"; n].join(","));
        assert_eq!(parse_ids(ids(3).as_bytes(), &config), Ok(vec![7, 7, 7]));
        assert!(bad_body(parse_ids(ids(4).as_bytes(), &config)).contains("1 to 3 ids, not 4"));
        assert_eq!(fetch_max(Some("max=3"), &config), Ok(Some(3)));
        assert_eq!(
            fetch_max(Some("max=4"), &config),
            Err(ApiError::BadMax { max: 3 })
        );
    }

    #[test]
    fn bodies_borrow_unescaped_strings() {
        let plain: JsonStr<'_> = serde_json::from_slice(br#""plain""#).unwrap();
        assert!(matches!(plain.0, Cow::Borrowed("plain")));
        let escaped: JsonStr<'_> = serde_json::from_slice(br#""esc\"aped""#).unwrap();
        assert!(matches!(&escaped.0, Cow::Owned(s) if s == "esc\"aped"));
        let single: PublishRequest<'_> = serde_json::from_slice(br#"{"body":"x"}"#).unwrap();
        assert!(matches!(single.body.unwrap().0, Cow::Borrowed("x")));
    }

    #[test]
    fn ids_bodies() {
        let config = Config::for_port(0);
        assert_eq!(
            parse_ids(
                br#" {"ids":[0, 18446744073709551615, 3, 3], "x": 1} "#,
                &config
            ),
            Ok(vec![0, u64::MAX, 3, 3])
        );
        for bad in [
            &br#"{"ids":[]}"#[..],
            br#"{"ids":[-1]}"#,
            br#"{"ids":[1.5]}"#,
            br#"{"ids":[18446744073709551616]}"#,
            br#"{"ids":["1"]}"#,
            br#"{"ids":[null]}"#,
            br#"{"ids":null}"#,
            br#"{"ids":1}"#,
            br#"{"ids":[1],"ids":[2]}"#,
            br#"{}"#,
            br#"[1]"#,
            br#"{"ids":[1]"#,
            b"{\"ids\":[1],\"x\":\"\xff\"}",
        ] {
            bad_body(parse_ids(bad, &config));
        }
    }
}
