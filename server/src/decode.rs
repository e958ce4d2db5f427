//! Request decoding: turning client bytes (bodies, path segments, query
//! strings) into typed values, or a 400-class [`ApiError`].
//!
//! Everything here is a pure function of its input, with no I/O and no
//! broker, so it is unit-tested exhaustively and fuzzed (`server/fuzz`). It
//! must never panic, whatever the input.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

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
    // serde's derived struct visitor also accepts a JSON array; the contract
    // asks for an object.
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        _ => {
            return Err(ApiError::BadBody(
                "expected a JSON object with a string field \"body\"".into(),
            ))
        }
    }
    // JSON text is UTF-8 (RFC 8259, section 8.1). `from_slice` checks only
    // the strings it keeps: invalid UTF-8 in an ignored field's string would
    // pass, so the whole body is checked here, once (found by fuzzing).
    let text = std::str::from_utf8(raw)
        .map_err(|error| ApiError::BadBody(format!("not UTF-8: {error}")))?;
    let request: PublishRequest<'_> =
        serde_json::from_str(text).map_err(|error| ApiError::BadBody(error.to_string()))?;
    Ok(Bytes::copy_from_slice(request.body.as_bytes()))
}

/// The wait for this fetch: `?wait=` if given (capped), else the default.
pub fn fetch_wait(query: Option<&str>, config: &Config) -> Result<Duration, ApiError> {
    let requested = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("wait="));
    match requested {
        None => Ok(config.default_fetch_wait()),
        Some(ms) => {
            let ms = parse_unsigned(ms).ok_or(ApiError::BadWait)?;
            Ok(Duration::from_millis(ms).min(config.max_fetch_wait()))
        }
    }
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
