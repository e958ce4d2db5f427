//! Request decoding: turning client bytes (bodies, path segments, query
//! strings) into typed values, or a 400-class [`ApiError`].
//!
//! Everything here is a pure function of its input, with no I/O and no
//! broker, so it is unit-tested exhaustively and fuzzed (`server/fuzz`). It
//! must never panic, whatever the input.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use ubroker_engine::QueueUpdate;

use crate::config::Config;
use crate::error::ApiError;

#[derive(Deserialize)]
struct PublishRequest<'a> {
    #[serde(borrow)]
    body: Cow<'a, str>,
}

/// Parses `{"body": "<string>"}` into the message body.
///
/// Extra fields are ignored (as the original did). The body is copied into
/// an allocation of its own: slicing the request buffer would pin hyper's
/// whole read buffer for as long as the message is queued.
pub fn parse_publish(raw: &[u8]) -> Result<Bytes, ApiError> {
    let request: PublishRequest<'_> =
        parse_object(raw, "a JSON object with a string field \"body\"")?;
    Ok(Bytes::copy_from_slice(request.body.as_bytes()))
}

/// The value of query parameter `name` (its first occurrence), undecoded.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The wait for this fetch: `?wait=` if given (capped), else the default.
pub fn fetch_wait(query: Option<&str>, config: &Config) -> Result<Duration, ApiError> {
    match query_param(query, "wait") {
        None => Ok(config.default_fetch_wait()),
        Some(ms) => {
            let ms = parse_unsigned(ms).ok_or(ApiError::BadWait)?;
            Ok(Duration::from_millis(ms).min(config.max_fetch_wait()))
        }
    }
}

/// `?delay=` of a publish or requeue: 0 (no delay) if absent, refused past
/// `--max-delay` (a delay is a promise about when work runs, so it is not
/// silently shortened the way a fetch's wait is).
pub fn delay(query: Option<&str>, config: &Config) -> Result<Duration, ApiError> {
    let bad = ApiError::BadQuery {
        name: "delay",
        min: 0,
        max: config.max_delay,
    };
    match query_param(query, "delay") {
        None => Ok(Duration::ZERO),
        Some(ms) => match parse_unsigned(ms) {
            Some(ms) if ms <= config.max_delay => Ok(Duration::from_millis(ms)),
            _ => Err(bad),
        },
    }
}

/// `?ttl=` of a touch: `None` (the queue's TTL) if absent; 1 to `--max-ttl`.
pub fn touch_ttl(query: Option<&str>, config: &Config) -> Result<Option<Duration>, ApiError> {
    let bad = ApiError::BadQuery {
        name: "ttl",
        min: 1,
        max: config.max_ttl,
    };
    match query_param(query, "ttl") {
        None => Ok(None),
        Some(ms) => match parse_unsigned(ms) {
            Some(ms) if (1..=config.max_ttl).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
            _ => Err(bad),
        },
    }
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

/// A delivery id: ASCII digits only, fitting in a `u64`. No sign, no
/// spaces, no percent-encoding; anything else is a 400.
pub fn parse_id(text: &str) -> Result<u64, ApiError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadId);
    }
    text.parse().map_err(|_| ApiError::BadId)
}

/// Digits only; values past `u64::MAX` saturate (they are capped anyway).
fn parse_unsigned(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// The size of a request head as `--max-header-bytes` counts it: method,
/// path and query, and each header's name and value plus 4 bytes for `: `
/// and CRLF. (hyper has already parsed the head; the exact wire size is
/// gone, and this is within a few bytes of it.)
pub fn head_bytes<B>(req: &hyper::Request<B>) -> usize {
    req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |pq| pq.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict_unsigned_integers() {
        assert_eq!(parse_id("0"), Ok(0));
        assert_eq!(parse_id("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1.0",
            "18446744073709551616",
            "1e3",
            "0x10",
            "%31",
        ] {
            assert_eq!(parse_id(bad), Err(ApiError::BadId), "{bad:?}");
        }
    }

    #[test]
    fn wait_is_parsed_capped_and_defaulted() {
        let config = Config::for_port(0);
        assert_eq!(fetch_wait(None, &config), Ok(Duration::from_millis(1_000)));
        assert_eq!(
            fetch_wait(Some("x=1"), &config),
            Ok(Duration::from_millis(1_000))
        );
        assert_eq!(fetch_wait(Some("wait=0"), &config), Ok(Duration::ZERO));
        assert_eq!(
            fetch_wait(Some("a=b&wait=250"), &config),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            fetch_wait(Some("wait=99999999"), &config),
            Ok(Duration::from_millis(30_000))
        );
        assert_eq!(
            fetch_wait(Some("wait=999999999999999999999999"), &config),
            Ok(Duration::from_millis(30_000))
        );
        for bad in ["wait=", "wait=-1", "wait=1.5", "wait=abc", "wait= 1"] {
            assert_eq!(
                fetch_wait(Some(bad), &config),
                Err(ApiError::BadWait),
                "{bad}"
            );
        }
    }

    #[test]
    fn delay_and_ttl_are_checked_against_their_ranges() {
        let config = Config::for_port(0);
        assert_eq!(delay(None, &config), Ok(Duration::ZERO));
        assert_eq!(delay(Some("delay=0"), &config), Ok(Duration::ZERO));
        assert_eq!(
            delay(Some("x=1&delay=250"), &config),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            delay(Some("delay=86400000"), &config),
            Ok(Duration::from_millis(86_400_000))
        );
        for bad in [
            "delay=86400001",
            "delay=",
            "delay=-1",
            "delay=1.5",
            "delay=1e3",
        ] {
            assert!(delay(Some(bad), &config).is_err(), "{bad}");
        }
        assert_eq!(touch_ttl(None, &config), Ok(None));
        assert_eq!(
            touch_ttl(Some("ttl=1"), &config),
            Ok(Some(Duration::from_millis(1)))
        );
        for bad in ["ttl=0", "ttl=43200001", "ttl=", "ttl=x"] {
            assert!(touch_ttl(Some(bad), &config).is_err(), "{bad}");
        }
        // A parameter whose name only starts like ours is not ours.
        assert_eq!(delay(Some("delayed=5"), &config), Ok(Duration::ZERO));
    }

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

    #[test]
    fn publish_bodies_must_be_objects_with_a_string_body() {
        assert_eq!(
            parse_publish(br#" {"body":"x","other":1} "#),
            Ok(Bytes::from_static(b"x"))
        );
        assert_eq!(parse_publish(br#"{"body":"\u00e9"}"#), Ok(Bytes::from("é")));
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
                matches!(parse_publish(bad), Err(ApiError::BadBody(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
