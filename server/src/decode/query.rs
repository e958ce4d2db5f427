//! Decoding the parts of a request besides its body: query parameters
//! (`?wait=`, `?max=`, `?delay=`, `?ttl=`), delivery ids from the path, and
//! the size of the request head. Pure functions, fuzzed with the rest of
//! `decode`; none may panic.

use std::time::Duration;

use crate::config::Config;
use crate::error::ApiError;

/// `?max=` of a fetch: `None` (the single form) if absent, else 1 to
/// `--max-batch`.
pub fn fetch_max(query: Option<&str>, config: &Config) -> Result<Option<usize>, ApiError> {
    match query_param(query, "max") {
        None => Ok(None),
        Some(n) => match parse_unsigned(n) {
            Some(n) if (1..=config.max_batch).contains(&n) => {
                Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
            }
            _ => Err(ApiError::BadMax {
                max: config.max_batch,
            }),
        },
    }
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
/// gone, and this is within a few bytes of it.) Used by the fuzz model.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub fn head_bytes<B>(req: &hyper::Request<B>) -> usize {
    head_bytes_without_headers(req)
        + req
            .headers()
            .iter()
            .map(|(name, value)| header_bytes(name, value))
            .sum::<usize>()
}

/// The part of [`head_bytes`] before the headers: method and target.
pub fn head_bytes_without_headers<B>(req: &hyper::Request<B>) -> usize {
    req.method().as_str().len() + req.uri().path_and_query().map_or(1, |pq| pq.as_str().len())
}

/// One header's part of [`head_bytes`]: name, value, `": "` and CRLF.
pub fn header_bytes(name: &hyper::header::HeaderName, value: &hyper::header::HeaderValue) -> usize {
    name.as_str().len() + value.len() + 4
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
    fn fetch_max_is_optional_and_bounded() {
        let config = Config::for_port(0);
        assert_eq!(fetch_max(None, &config), Ok(None));
        assert_eq!(fetch_max(Some("wait=5"), &config), Ok(None));
        assert_eq!(fetch_max(Some("wait=5&max=1"), &config), Ok(Some(1)));
        assert_eq!(fetch_max(Some("max=1000"), &config), Ok(Some(1000)));
        for bad in [
            "max=0",
            "max=1001",
            "max=",
            "max=-1",
            "max=x",
            "max=99999999999999999999999",
        ] {
            assert_eq!(
                fetch_max(Some(bad), &config),
                Err(ApiError::BadMax { max: 1000 }),
                "{bad}"
            );
        }
    }
}
