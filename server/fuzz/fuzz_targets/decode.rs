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
//! * `delay(Some(lossy UTF-8))` under `--max-delay` 0, 100, the default and
//!   `u64::MAX`: no `delay=` pair is no delay; the first pair's value is
//!   taken exactly when it is all digits and at most the maximum (never
//!   capped: past it, or not a number, is a 400 `BadQuery` naming `delay`
//!   and the range 0 to the maximum).
//! * `touch_ttl(Some(lossy UTF-8))` under `--max-ttl` 1, 50, the default and
//!   `u64::MAX`: no `ttl=` pair is `None` (the queue's TTL); the first
//!   pair's value is taken exactly when it is all digits and from 1 to the
//!   maximum, else a 400 `BadQuery` naming `ttl` and that range.
//! * `parse_put_queue(bytes)` under the same `--max-ttl` values, checked
//!   differentially against `serde_json::Value`: a body of ASCII whitespace
//!   only (empty included) is `{}`; otherwise it accepts exactly an object
//!   whose keys are among `ttl_ms` (an integer from 1 to `--max-ttl`) and
//!   `max_deliveries` (an integer that fits a `u32`), and the update holds
//!   exactly those values. The one allowed difference: a repeated key, which
//!   `Value` resolves to the last one and `parse_put_queue` refuses. Every
//!   refusal is a `BadBody` (400).

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ubroker_engine::QueueUpdate;
use ubroker_server::internal::decode::{
    delay, fetch_wait, parse_id, parse_publish, parse_put_queue, touch_ttl,
};
use ubroker_server::{ApiError, Config};

fuzz_target!(|data: &[u8]| {
    check_publish(data);
    let text = String::from_utf8_lossy(data);
    check_id(&text);
    check_wait(&text);
    check_delay(&text);
    check_touch_ttl(&text);
    check_put_queue(data);
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
                    // A repeated "body" (whatever its first value) may be
                    // refused: `Value` keeps the last one.
                    assert!(
                        top_level_keys(data).is_some_and(|keys| repeated(&keys, "body")),
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

/// The first `name=` pair's value, as the contract reads a query.
fn first_param<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// `Some(value)` for a non-empty all-digit string (saturating), else `None`.
fn digits(ms: &str) -> Option<u64> {
    (!ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
        .then(|| ms.parse::<u64>().unwrap_or(u64::MAX))
}

fn check_delay(text: &str) {
    let first = first_param(text, "delay");
    for max_delay in [0, 100, Config::for_port(0).max_delay, u64::MAX] {
        let mut config = Config::for_port(0);
        config.max_delay = max_delay;
        let got = delay(Some(text), &config);
        let expected = match first.map(digits) {
            None => Ok(Duration::ZERO),
            Some(Some(ms)) if ms <= max_delay => Ok(Duration::from_millis(ms)),
            Some(_) => Err(ApiError::BadQuery {
                name: "delay",
                min: 0,
                max: max_delay,
            }),
        };
        assert_eq!(
            got, expected,
            "delay({text:?}) with --max-delay {max_delay}"
        );
        if let Err(error) = &got {
            assert_eq!(error.status(), 400);
        }
        assert_eq!(delay(None, &config), Ok(Duration::ZERO));
    }
}

fn check_touch_ttl(text: &str) {
    let first = first_param(text, "ttl");
    for max_ttl in [1, 50, Config::for_port(0).max_ttl, u64::MAX] {
        let mut config = Config::for_port(0);
        config.max_ttl = max_ttl;
        let got = touch_ttl(Some(text), &config);
        let expected = match first.map(digits) {
            None => Ok(None),
            Some(Some(ms)) if (1..=max_ttl).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
            Some(_) => Err(ApiError::BadQuery {
                name: "ttl",
                min: 1,
                max: max_ttl,
            }),
        };
        assert_eq!(
            got, expected,
            "touch_ttl({text:?}) with --max-ttl {max_ttl}"
        );
        if let Err(error) = &got {
            assert_eq!(error.status(), 400);
        }
        assert_eq!(touch_ttl(None, &config), Ok(None));
    }
}

fn check_put_queue(data: &[u8]) {
    let blank = data
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    let reference = serde_json::from_slice::<Value>(data);
    for max_ttl in [1, 50, Config::for_port(0).max_ttl, u64::MAX] {
        let mut config = Config::for_port(0);
        config.max_ttl = max_ttl;
        let got = parse_put_queue(data, &config);
        if blank {
            assert_eq!(got, Ok(QueueUpdate::default()), "blank body {data:?}");
            continue;
        }
        // What the contract accepts, read from the `Value`: `None` if it is
        // refused, else the update.
        let valid = match &reference {
            Ok(Value::Object(map)) => {
                let known = map
                    .keys()
                    .all(|key| key == "ttl_ms" || key == "max_deliveries");
                let ttl = map
                    .get("ttl_ms")
                    .map(|v| v.as_u64().filter(|t| (1..=max_ttl).contains(t)));
                let max = map
                    .get("max_deliveries")
                    .map(|v| v.as_u64().and_then(|m| u32::try_from(m).ok()));
                match (known, ttl, max) {
                    (true, None | Some(Some(_)), None | Some(Some(_))) => Some(QueueUpdate {
                        ttl: ttl.flatten().map(Duration::from_millis),
                        max_deliveries: max.flatten(),
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        match (got, valid) {
            (Ok(update), Some(expected)) => assert_eq!(update, expected, "{data:?}"),
            (Ok(update), None) => panic!(
                "parse_put_queue accepted {data:?} ({update:?}), which the contract refuses ({reference:?})"
            ),
            (Err(ApiError::BadBody(reason)), Some(expected)) => assert!(
                top_level_keys(data).is_some_and(|keys| keys.iter().any(|k| repeated(&keys, k))),
                "refused {data:?}, which the contract reads as {expected:?}: {reason}"
            ),
            (Err(ApiError::BadBody(_)), None) => {}
            (Err(other), _) => panic!("parse_put_queue failed with a non-400 error: {other:?}"),
        }
    }
}

/// The keys of a top-level JSON object, in order, repeats included (`None`
/// if `data` is not an object): what `Value` cannot show.
fn top_level_keys(data: &[u8]) -> Option<Vec<String>> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(KeysVisitor)
        }
    }
    struct KeysVisitor;
    impl<'de> serde::de::Visitor<'de> for KeysVisitor {
        type Value = Keys;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                keys.push(key);
            }
            Ok(Keys(keys))
        }
    }
    serde_json::from_slice::<Keys>(data).ok().map(|keys| keys.0)
}

fn repeated(keys: &[String], key: &str) -> bool {
    keys.iter().filter(|k| *k == key).count() > 1
}
