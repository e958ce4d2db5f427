//! Fuzz target `request`: whole requests through `routes::handle`, no
//! sockets, against a fresh broker (with a `ManualClock`) per input.
//!
//! # Input
//!
//! Byte 0 picks the configuration (bit 0: a bearer token is required; bit
//! 1: `--max-header-bytes 64`; bit 2: `--max-body-bytes 16`; bit 3:
//! `--max-queue-bytes 32`; bit 4: fetches wait 5 ms instead of 0). The rest
//! is up to [`MAX_OPS`] operations separated by NUL bytes. In each, the
//! first byte is a selector: bits 0-2 the method (7: not a request, see
//! below), bits 3-5 a path prefix from [`PREFIXES`], bit 6 sends the right
//! bearer token and bit 7 a wrong one. The bytes after it up to the first
//! `\n` are appended to the prefix to make the URI (operations whose URI
//! does not parse are skipped); the bytes after the `\n` are the body.
//! Selector method 7 is an event instead: with bit 3 clear, the clock moves
//! by the next byte's value in ms and expired leases are swept; with bit 3
//! set, shutdown begins (the watch flips and the broker closes).
//!
//! # Checks, after every operation
//!
//! * `handle` never panics, and the response is `application/json`, its
//!   body is JSON, and every non-200 body is an object with a string
//!   `"error"`; the status is one of the documented ones; 405 carries
//!   `Allow`, 401 `WWW-Authenticate` and 429 `Retry-After`.
//! * Conservation: `ready + in_flight == published - acknowledged`.
//! * A non-200 response changes nothing in the broker.
//! * A model of the contract (FIFO queue, leases with deadlines, byte
//!   accounting, shutdown) predicts every status, and every fetched body,
//!   and agrees with the broker's stats; delivery ids strictly increase.

#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use ubroker_engine::{Broker, ManualClock, Stats};
use ubroker_server::decode::{fetch_wait, parse_id, parse_publish};
use ubroker_server::routes::{handle, State};
use ubroker_server::Config;

const MAX_OPS: usize = 32;
const TOKEN: &str = "s3cret";
const TTL_MS: u64 = 10;
const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::PATCH,
    Method::OPTIONS,
];
const PREFIXES: [&str; 8] = [
    "",
    "/publish",
    "/fetch",
    "/fetch?wait=",
    "/acknowledge/",
    "/requeue/",
    "/",
    "http://ubroker/acknowledge/",
];
const DOCUMENTED: [u16; 10] = [200, 400, 401, 404, 405, 408, 413, 429, 431, 503];

/// One runtime for the whole run. Time is paused, so a fetch that waits
/// completes at once (the timer auto-advances when nothing else can run).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
}

/// `UBROKER_FUZZ_TRACE=1` prints every request's outcome (for reading a
/// crash or a seed; far too slow for fuzzing).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("UBROKER_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, ops)) = data.split_first() else {
        return;
    };
    let mut config = Config::for_port(0);
    config.ttl = TTL_MS;
    config.fetch_timeout = 0;
    config.max_fetch_wait = 0;
    config.max_queue_bytes = u64::MAX;
    if flags & 1 != 0 {
        config.auth_token = Some(TOKEN.into());
    }
    if flags & 2 != 0 {
        config.max_header_bytes = 64;
    }
    if flags & 4 != 0 {
        config.max_body_bytes = 16;
    }
    if flags & 8 != 0 {
        config.max_queue_bytes = 32;
    }
    if flags & 16 != 0 {
        config.fetch_timeout = 5;
        config.max_fetch_wait = 5;
    }
    let broker = Arc::new(Broker::with_clock(config.engine(), ManualClock::new()));
    let (shutdown, shutting_down) = watch::channel(false);
    let state = State::new(broker.clone(), config.clone(), shutting_down);
    let mut model = Model::default();

    for op in ops.split(|&b| b == 0).take(MAX_OPS) {
        let Some((&selector, rest)) = op.split_first() else {
            continue;
        };
        let before = broker.stats();
        let method = selector & 7;
        if method == 7 {
            if selector & 8 == 0 {
                let ms = u64::from(rest.first().copied().unwrap_or(0));
                broker.clock().advance(Duration::from_millis(ms));
                let sweep = broker.expire_due();
                assert_eq!(sweep.expired, model.tick(ms), "expired count");
            } else {
                shutdown.send_replace(true);
                broker.close();
                model.closed = true;
            }
            if trace() {
                eprintln!("event {selector:#04x} {rest:?} -> {:?}", broker.stats());
            }
            model.check(&broker.stats());
            continue;
        }
        let (suffix, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let prefix = PREFIXES[usize::from((selector >> 3) & 7)];
        let Ok(uri) = Uri::try_from([prefix.as_bytes(), suffix].concat()) else {
            continue;
        };
        let mut builder = Request::builder()
            .method(METHODS[usize::from(method)].clone())
            .uri(uri);
        if selector & 64 != 0 {
            builder = builder.header(AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        if selector & 128 != 0 {
            builder = builder.header(AUTHORIZATION, "Bearer wrong");
        }
        let Ok(req) = builder.body(Full::new(Bytes::copy_from_slice(body))) else {
            continue;
        };
        let expected = model.predict(&config, &req, body);
        let request_line = trace().then(|| format!("{} {}", req.method(), req.uri()));

        let (parts, response_body) = runtime().block_on(async {
            let res = handle(&state, req).await;
            let (parts, body) = res.into_parts();
            let bytes = body.collect().await.expect("Full never fails").to_bytes();
            (parts, bytes)
        });

        // The response's shape.
        let status = parts.status.as_u16();
        if let Some(line) = &request_line {
            eprintln!(
                "{line} {:?} -> {status} {} (model: {})",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&response_body),
                expected.status,
            );
        }
        assert!(DOCUMENTED.contains(&status), "undocumented status {status}");
        assert_eq!(
            parts.headers.get(CONTENT_TYPE),
            Some(&HeaderValue::from_static("application/json"))
        );
        let json: Value = serde_json::from_slice(&response_body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {response_body:?}"));
        if status != 200 {
            assert!(
                json.get("error").is_some_and(Value::is_string),
                "error response without an \"error\" string: {json}"
            );
        }
        match status {
            405 => assert!(parts.headers.contains_key(ALLOW)),
            401 => assert!(parts.headers.contains_key(WWW_AUTHENTICATE)),
            429 => assert!(parts.headers.contains_key(RETRY_AFTER)),
            _ => {}
        }

        // The broker's state.
        let after = broker.stats();
        assert_eq!(
            after.ready as u64 + after.in_flight as u64,
            after.published - after.acknowledged,
            "conservation: {after:?}"
        );
        if status != 200 {
            assert_eq!(before, after, "a {status} changed the broker");
        }
        assert_eq!(after.waiting, 0, "a fetch left a waiter behind");

        // The model's prediction.
        assert_eq!(
            status, expected.status,
            "status {status} ({json}), the model expected {expected:?}"
        );
        model.apply(expected.effect, &json);
        model.check(&after);
    }
});

#[derive(Debug)]
struct Expected {
    status: u16,
    effect: Effect,
}

#[derive(Debug)]
enum Effect {
    None,
    Publish(String),
    Fetch,
    Acknowledge(u64),
    Requeue(u64),
}

#[derive(Default)]
struct Model {
    ready: VecDeque<String>,
    /// Live leases by id: body and deadline (ms on the manual clock).
    leases: BTreeMap<u64, (String, u64)>,
    bytes: u64,
    now_ms: u64,
    closed: bool,
    last_id: Option<u64>,
}

impl Model {
    fn predict(&self, config: &Config, req: &Request<Full<Bytes>>, raw: &[u8]) -> Expected {
        let fail = |status| Expected {
            status,
            effect: Effect::None,
        };
        // Admission: the head size, then the token.
        // How the head is measured is a definition, shared with the server;
        // what the model checks is the decision made with it.
        let head = ubroker_server::decode::head_bytes(req);
        if head as u64 > config.max_header_bytes {
            return fail(431);
        }
        if let Some(token) = &config.auth_token {
            let presented = req
                .headers()
                .get(AUTHORIZATION)
                .map(|value| value.as_bytes());
            if presented != Some(format!("Bearer {token}").as_bytes()) {
                return fail(401);
            }
        }
        let post = req.method() == Method::POST;
        let path = req.uri().path();
        if path == "/publish" {
            if !post {
                return fail(405);
            }
            if raw.len() as u64 > config.max_body_bytes {
                return fail(413);
            }
            let Ok(message) = parse_publish(raw) else {
                return fail(400);
            };
            if self.closed {
                return fail(503);
            }
            if self.bytes.saturating_add(message.len() as u64) > config.max_queue_bytes {
                return fail(429);
            }
            let message = String::from_utf8(message.to_vec()).expect("UTF-8 body");
            return Expected {
                status: 200,
                effect: Effect::Publish(message),
            };
        }
        if path == "/fetch" {
            if req.method() != Method::GET {
                return fail(405);
            }
            if fetch_wait(req.uri().query(), config).is_err() {
                return fail(400);
            }
            if self.closed {
                return fail(503);
            }
            if self.ready.is_empty() {
                return fail(408);
            }
            return Expected {
                status: 200,
                effect: Effect::Fetch,
            };
        }
        let (acknowledge, id) = if let Some(id) = path.strip_prefix("/acknowledge/") {
            (true, id)
        } else if let Some(id) = path.strip_prefix("/requeue/") {
            (false, id)
        } else {
            return fail(404);
        };
        if id.contains('/') {
            return fail(404);
        }
        if !post {
            return fail(405);
        }
        let Ok(id) = parse_id(id) else {
            return fail(400);
        };
        if self.closed {
            return fail(503);
        }
        match self.leases.get(&id) {
            Some(&(_, deadline)) if self.now_ms < deadline => Expected {
                status: 200,
                effect: if acknowledge {
                    Effect::Acknowledge(id)
                } else {
                    Effect::Requeue(id)
                },
            },
            _ => fail(400),
        }
    }

    fn apply(&mut self, effect: Effect, response: &Value) {
        match effect {
            Effect::None => {}
            Effect::Publish(body) => {
                assert_eq!(response, &serde_json::json!({}));
                self.bytes += body.len() as u64;
                self.ready.push_back(body);
            }
            Effect::Fetch => {
                let body = self.ready.pop_front().expect("predicted a ready message");
                assert_eq!(
                    response["message"]["body"].as_str(),
                    Some(body.as_str()),
                    "fetched out of order or altered: {response}"
                );
                let id = response["id"].as_u64().expect("delivery id");
                assert!(
                    self.last_id.is_none_or(|last| id > last),
                    "delivery id {id} reused or out of order (last {:?})",
                    self.last_id
                );
                self.last_id = Some(id);
                self.leases.insert(id, (body, self.now_ms + TTL_MS));
            }
            Effect::Acknowledge(id) => {
                assert_eq!(response, &serde_json::json!({}));
                let (body, _) = self.leases.remove(&id).expect("predicted a live lease");
                self.bytes -= body.len() as u64;
            }
            Effect::Requeue(id) => {
                assert_eq!(response, &serde_json::json!({}));
                let (body, _) = self.leases.remove(&id).expect("predicted a live lease");
                self.ready.push_back(body);
            }
        }
    }

    /// Moves the clock and sweeps: due leases rejoin the tail in deadline
    /// (that is, fetch) order. Returns how many expired.
    fn tick(&mut self, ms: u64) -> usize {
        self.now_ms += ms;
        let due: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= self.now_ms)
            .map(|(&id, _)| id)
            .collect();
        for id in &due {
            let (body, _) = self.leases.remove(id).expect("due lease");
            self.ready.push_back(body);
        }
        due.len()
    }

    fn check(&self, stats: &Stats) {
        assert_eq!(stats.ready, self.ready.len(), "ready: {stats:?}");
        assert_eq!(stats.in_flight, self.leases.len(), "in flight: {stats:?}");
        assert_eq!(stats.queued_bytes, self.bytes, "queued bytes: {stats:?}");
        assert_eq!(
            stats.ready as u64 + stats.in_flight as u64,
            stats.published - stats.acknowledged,
            "conservation: {stats:?}"
        );
    }
}
