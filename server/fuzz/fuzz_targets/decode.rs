//! Fuzz target `decode`: the pure request decoders of `server/src/decode.rs`.
//!
//! The same input is fed to all three decoders:
//!
//! * `parse_publish(bytes)`, checked differentially against
//!   `serde_json::Value`: when it accepts, the body is UTF-8 and is exactly
//!   the `"body"` string of the object that `Value` parses (unless `Value`
//!   refuses the input for one of the [`LENIENT_IN_IGNORED`] reasons, which
//!   can only come from an ignored field); when `Value` sees
//!   an object whose `"body"` is a string, `parse_publish` accepts it too
//!   (the one allowed exception being a duplicated `"body"` key, which
//!   `Value` resolves to the last one and `parse_publish` refuses); anything
//!   else `Value` parses is refused. Every refusal is a `BadBody` (400).
//! * `parse_id(lossy UTF-8)`: accepts exactly the non-empty ASCII-digit
//!   strings whose value fits in a `u64`, and the value prints back as the
//!   input without its leading zeros.
//! * `fetch_wait(Some(lossy UTF-8))` under a few configurations: never more
//!   than the maximum wait, the default when there is no `wait=` pair, and
//!   exactly `min(wait, max)` (saturating) for the first `wait=` pair.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ubroker_server::decode::{fetch_wait, parse_id, parse_publish};
use ubroker_server::{ApiError, Config};

fuzz_target!(|data: &[u8]| {
    check_publish(data);
    let text = String::from_utf8_lossy(data);
    check_id(&text);
    check_wait(&text);
});

/// What `parse_publish` accepts inside a field it ignores (a value of an
/// unknown key, at any depth, keys of nested objects included) although
/// `serde_json::Value` refuses it: serde_json skips ignored values by syntax
/// alone, so an out-of-range number (`1e400`) or an escaped lone surrogate
/// (`"\ud800"`) there passes. Both are valid JSON grammar (RFC 8259 leaves
/// them to implementations) and the original Go server accepts them too.
/// Invalid UTF-8 anywhere is refused (the first finding of this target).
const LENIENT_IN_IGNORED: [&str; 3] = [
    "number out of range",
    "lone leading surrogate in hex escape",
    "unexpected end of hex escape",
];

fn check_publish(data: &[u8]) {
    let decoded = parse_publish(data);
    let reference = serde_json::from_slice::<Value>(data);
    match &decoded {
        Ok(body) => {
            let body = std::str::from_utf8(body).expect("accepted body is not UTF-8");
            let value = match &reference {
                Ok(value) => value,
                // Leniencies of serde_json's skipping of ignored values,
                // kept on purpose (see the README): nothing else may differ.
                Err(error) if LENIENT_IN_IGNORED.iter().any(|l| error.to_string().starts_with(l)) => {
                    return;
                }
                Err(error) => panic!(
                    "parse_publish accepted {data:?} ({body:?}) but serde_json::Value refuses it: {error}"
                ),
            };
            assert!(value.is_object(), "accepted a non-object: {value}");
            assert_eq!(
                value.get("body").and_then(Value::as_str),
                Some(body),
                "parse_publish and serde_json::Value disagree on the body"
            );
        }
        Err(ApiError::BadBody(reason)) => {
            if let Ok(Value::Object(map)) = &reference {
                if let Some(Value::String(_)) = map.get("body") {
                    assert!(
                        reason.contains("duplicate field `body`"),
                        "refused {data:?}, which serde_json::Value reads as an object with a string body: {reason}"
                    );
                }
            }
        }
        Err(other) => panic!("parse_publish failed with a non-400 error: {other:?}"),
    }
}

fn check_id(text: &str) {
    let all_digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let significant = match text.trim_start_matches('0') {
        "" if all_digits => "0",
        rest => rest,
    };
    // u64::MAX has 20 digits; equal-length digit strings compare like numbers.
    let fits = significant.len() < 20
        || (significant.len() == 20 && significant <= "18446744073709551615");
    match parse_id(text) {
        Ok(id) => {
            assert!(all_digits, "parse_id accepted non-digits: {text:?}");
            assert_eq!(id.to_string(), significant, "parse_id({text:?}) = {id}");
        }
        Err(error) => {
            assert_eq!(error, ApiError::BadId);
            assert!(
                !(all_digits && fits),
                "parse_id refused a valid id: {text:?}"
            );
        }
    }
}

fn configs() -> [Config; 4] {
    let mut zero = Config::for_port(0);
    zero.fetch_timeout = 0;
    zero.max_fetch_wait = 0;
    let mut over = Config::for_port(0);
    over.fetch_timeout = 50_000;
    let mut huge = Config::for_port(0);
    huge.fetch_timeout = u64::MAX;
    huge.max_fetch_wait = u64::MAX;
    [Config::for_port(0), zero, over, huge]
}

fn check_wait(text: &str) {
    let first_wait = text.split('&').find_map(|pair| pair.strip_prefix("wait="));
    for config in configs() {
        let max = Duration::from_millis(config.max_fetch_wait);
        match (fetch_wait(Some(text), &config), first_wait) {
            (Ok(wait), None) => {
                assert!(wait <= max, "{wait:?} > {max:?} for {text:?}");
                assert_eq!(wait, config.default_fetch_wait());
            }
            (Ok(wait), Some(ms)) => {
                assert!(wait <= max, "{wait:?} > {max:?} for {text:?}");
                assert!(!ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()));
                let expected = ms.parse::<u64>().unwrap_or(u64::MAX);
                assert_eq!(wait, Duration::from_millis(expected).min(max));
            }
            (Err(error), first) => {
                assert_eq!(error, ApiError::BadWait);
                let ms = first.expect("BadWait without a wait= pair");
                assert!(
                    ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()),
                    "refused wait={ms:?}"
                );
            }
        }
        assert_eq!(fetch_wait(None, &config), Ok(config.default_fetch_wait()));
    }
}
