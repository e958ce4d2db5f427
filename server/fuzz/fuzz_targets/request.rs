//! Fuzz target `request`: whole requests through `routes::handle`, no
//! sockets, against a fresh broker (with a `ManualClock`) per input, and a
//! model of SPEC parts 1 and 2 (named queues, the lease life cycle, errors)
//! that predicts every answer.
//!
//! # Input
//!
//! Byte 0 picks the configuration: bit 0 a bearer token is required; bit 1
//! `--max-header-bytes 64`; bit 2 `--max-body-bytes 16`; bit 3
//! `--max-queue-bytes 200` (three empty messages, at 64 bytes each, fit; a
//! fourth does not); bit 4 fetches wait 5 ms instead of 0; bit 5
//! `--max-deliveries 2`; bit 6 `--max-queues 1`; bit 7 `--max-delay 100
//! --max-ttl 50`. The TTL is always 10 ms. The rest is up to [`MAX_OPS`]
//! operations separated by NUL bytes. In each, the first byte is a
//! selector: bits 0-2 the method (7: not a request, see below), bits 3-6 a
//! path prefix from [`PREFIXES`], bit 7 sends an `Authorization` header (as
//! [`Headers::token`] says). The bytes after it up to the first `\n` are
//! appended to the prefix to make the URI (operations whose URI does not
//! parse are skipped); the bytes after the `\n` are the body. Every request
//! has one `Host` header unless a toggle event changed that.
//!
//! Selector method 7 is an event instead. With bit 3 clear it moves the
//! clock by the next byte's value in ms, bits 4-5 saying how: 0 one sweep
//! (`expire_due`) after the whole move, 1 a sweep after each millisecond, 2
//! no sweep (so leases past their deadline are still in flight and delayed
//! messages past due still delayed: exact expiry), 3 a sweep without moving
//! the clock. With bit 3 set: bit 4 clear begins shutdown (the watch flips
//! and the broker closes); bit 4 set is a toggle of how later requests are
//! framed ([`Headers`]), bits 5-6 saying which: 0 the `Authorization`
//! value (right, wrong, odd case and spacing, twice), 1 `Host` (one, none,
//! two), 2 HTTP/1.0 or 1.1, 3 `Content-Encoding` / `Transfer-Encoding`.
//!
//! # Checks, after every operation
//!
//! * `handle` never panics; the response is `application/json` and JSON;
//!   every non-200 body is exactly `{"error": <string>, "code": <string>}`
//!   with a `code` from the contract's list (`ubroker_proto::Code`) and the one the model
//!   predicts; the status is one of the documented ones; 405 carries the
//!   predicted `Allow`, 401 `WWW-Authenticate`, and 429 `Retry-After`
//!   exactly when its code is `queue_full`.
//! * A non-200 response changes nothing: `Broker::stats`, every queue's
//!   `QueueStats` and `QueueInfo` are as before.
//! * No waiter is left behind.
//! * Per queue, from the broker's own figures: `published == acknowledged +
//!   dead_lettered + ready + in_flight + delayed`.
//! * The model predicts every status and code, and every 200 body: fetched
//!   body, `attempt`, `dead_letter`; `{}` of publish and the settlements;
//!   `{"moved": n}`, `{"deleted": n}`; the queue objects of `GET|PUT
//!   /queues/{queue}` and the sorted list of `GET /queues`. After every
//!   operation and event its queues equal the broker's: the set of queue
//!   names, each queue's settings, ready / in-flight / delayed counts, body
//!   bytes and every counter (`published`, `delivered`, `acknowledged`,
//!   `requeued`, `expired`, `dead_lettered`, `redriven`), and the broker's
//!   charged bytes equal the model's sum of body length + 64
//!   (`MESSAGE_OVERHEAD`) over every held message. A sweep's `expired` and
//!   `came_due` counts are predicted too.
//!
//! What the model holds: per queue, a FIFO of ready messages, leases by
//! delivery id with a deadline (fetch time + the queue's TTL at fetch time;
//! touch sets now + `?ttl=` or the queue's TTL), and delayed messages with a
//! due time and a sequence number. A lease is settled or touched only while
//! `now < deadline`, even before a sweep. A sweep handles everything due at
//! or before now, per queue in due order; a lease (or requeue) that ends
//! the `max_deliveries`-th delivery moves the message to the tail of
//! `{queue}.dead` (created as needed, outside `--max-queues`), attempts
//! reset, flagged `dead_letter`. Redrive moves the dead queue's ready
//! messages, in order, to the tail of its base queue, attempts reset.
//! `--max-queues` counts base names other than `default`; `--max-queue-bytes`
//! is one budget for all queues.
//!
//! # Where the model checks an invariant instead of a prediction
//!
//! * **Message ids.** The engine spends a message id on a publish that is
//!   then refused for too many queues, so the values are not predicted. The
//!   model checks that a message shows the same `message_id` on every
//!   delivery, that no two messages share one, and that it is below 2^53.
//! * **Delivery ids** are checked to be below 2^53 and strictly increasing
//!   (so never reused), not predicted.
//! * **Arrivals in a dead-letter queue during one sweep.** When one sweep
//!   moves messages of `{q}` to `{q}.dead` and also handles due entries of
//!   `{q}.dead` itself (its expired leases, its delayed messages), the SPEC
//!   does not order the two runs against each other (the engine's order
//!   depends on its agenda of queues). The model keeps each run in order and
//!   accepts, at the head, the head of either run (a merge of two
//!   sequences); everything else about those messages is still predicted.
//! * **Ties within a queue.** Entries of one queue due at the same
//!   millisecond: delayed messages in the order they were delayed (SPEC);
//!   an expiring lease before a delayed message, leases by id (the engine's
//!   timer order, which the SPEC leaves open; the model mirrors it).
//! * **Which error wins** when several apply is not fixed by the SPEC; the
//!   model mirrors the handlers' order (admission: head size, `Host`,
//!   `Transfer-Encoding`, token, `Content-Encoding`; then route and method,
//!   queue name, query, body size, body, shutdown, engine).
//! * **Decoding** of bodies, ids and query values is the `decode` module's
//!   (`parse_publish`, `parse_id`, `fetch_wait`, `delay`, `touch_ttl`,
//!   `parse_put_queue`), which the `decode` target checks on its own; the
//!   model calls them, as it uses `head_bytes` for the head size.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST,
    RETRY_AFTER, TRANSFER_ENCODING, WWW_AUTHENTICATE,
};
use http::{Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use ubroker_engine::{
    Broker, ManualClock, QueueInfo, QueueName, QueueStats, QueueUpdate, Stats, MAX_ID,
    MESSAGE_OVERHEAD,
};
use ubroker_server::fuzzing::decode::{
    delay, fetch_max, fetch_wait, head_bytes, parse_id, parse_ids, parse_publish, parse_put_queue,
    query_param, touch_ttl, Publish,
};
use ubroker_server::fuzzing::{handle, State};
use ubroker_server::Config;

const MAX_OPS: usize = 32;
/// `--max-batch` of every configuration: small, so that inputs reach it.
const MAX_BATCH: u64 = 4;
const TOKEN: &str = "s3cret";
const TTL_MS: u64 = 10;
const SMALL_QUEUE_BYTES: u64 = 200;
const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::PATCH,
    Method::OPTIONS,
];
const PREFIXES: [&str; 16] = [
    "",
    "/publish",
    "/fetch",
    "/fetch?wait=",
    "/acknowledge/",
    "/requeue/",
    "/touch/",
    "/",
    "http://ubroker/acknowledge/",
    "/queues/",
    "/queues/q",
    "/queues/q/",
    "/queues/q.dead/",
    "/queues/q/publish?delay=",
    "/queues/q/requeue/",
    "/queues/q.dead/redrive",
];
/// The statuses of the SPEC, plus 415 and 501 (a `Content-Encoding` or
/// `Transfer-Encoding` the server does not take, RFC 9110 and 9112).
const DOCUMENTED: [u16; 12] = [200, 400, 401, 404, 405, 408, 413, 415, 429, 431, 501, 503];

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

fn config_from(flags: u8) -> Config {
    let mut config = Config::for_port(0);
    config.ttl = TTL_MS;
    config.fetch_timeout = 0;
    config.max_fetch_wait = 0;
    config.max_queue_bytes = u64::MAX;
    config.max_batch = MAX_BATCH;
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
        config.max_queue_bytes = SMALL_QUEUE_BYTES;
    }
    if flags & 16 != 0 {
        config.fetch_timeout = 5;
        config.max_fetch_wait = 5;
    }
    if flags & 32 != 0 {
        config.max_deliveries = 2;
    }
    if flags & 64 != 0 {
        config.max_queues = 1;
    }
    if flags & 128 != 0 {
        config.max_delay = 100;
        config.max_ttl = 50;
    }
    assert_eq!(config.validate(), Ok(()));
    config
}

/// Everything the broker reports, for "a non-200 changes nothing".
#[derive(Debug, PartialEq)]
struct Snapshot {
    stats: Stats,
    queues: Vec<(QueueName, QueueStats)>,
    infos: Vec<QueueInfo>,
}

impl Snapshot {
    fn take(broker: &Broker<ManualClock>) -> Self {
        Snapshot {
            stats: broker.stats(),
            queues: broker.all_queue_stats(),
            infos: broker.queues(),
        }
    }
}

/// How requests are framed, changed by toggle events (each cycles one
/// field through its values).
#[derive(Debug, Default, Clone, Copy)]
struct Headers {
    /// What selector bit 7 sends: 0 `Bearer s3cret`; 1 `Bearer wrong`; 2
    /// `bEARER  s3cret` (the scheme is case-insensitive and may be followed
    /// by several spaces: accepted); 3 `Bearer s3cret` twice (refused).
    token: u8,
    /// 0 one `Host`, 1 none, 2 two.
    host: u8,
    /// HTTP/1.0 instead of HTTP/1.1 (where `Host` is optional).
    http10: bool,
    /// 0 none; 1 `Content-Encoding: gzip`; 2 `Transfer-Encoding: gzip,
    /// chunked`; 3 `Content-Encoding: Identity` and `Transfer-Encoding:
    /// chunked` (both accepted).
    coding: u8,
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, ops)) = data.split_first() else {
        return;
    };
    let config = config_from(flags);
    let broker = Arc::new(Broker::with_clock(config.engine(), ManualClock::new()));
    let (shutdown, shutting_down) = watch::channel(false);
    let state = State::new(broker.clone(), config.clone(), shutting_down);
    let mut model = Model::new(&config);
    let mut headers = Headers::default();

    for op in ops.split(|&b| b == 0).take(MAX_OPS) {
        let Some((&selector, rest)) = op.split_first() else {
            continue;
        };
        let method = selector & 7;
        if method == 7 {
            if selector & 8 == 0 {
                let ms = u64::from(rest.first().copied().unwrap_or(0));
                let (mut expired, mut came_due) = (0, 0);
                match (selector >> 4) & 3 {
                    0 => {
                        broker.clock().advance(Duration::from_millis(ms));
                        model.now_ms += ms;
                        let sweep = broker.expire_due();
                        (expired, came_due) = (sweep.expired, sweep.came_due);
                    }
                    1 => {
                        for _ in 0..ms {
                            broker.clock().advance(Duration::from_millis(1));
                            let sweep = broker.expire_due();
                            expired += sweep.expired;
                            came_due += sweep.came_due;
                            model.now_ms += 1;
                            let predicted = model.sweep();
                            assert_eq!(
                                (sweep.expired, sweep.came_due),
                                predicted,
                                "(expired, came due) at {} ms",
                                model.now_ms
                            );
                            model.check(&broker);
                        }
                    }
                    2 => {
                        broker.clock().advance(Duration::from_millis(ms));
                        model.now_ms += ms;
                    }
                    _ => {
                        let sweep = broker.expire_due();
                        (expired, came_due) = (sweep.expired, sweep.came_due);
                    }
                }
                if matches!((selector >> 4) & 3, 0 | 3) {
                    assert_eq!(
                        (expired, came_due),
                        model.sweep(),
                        "(expired, came due) at {} ms",
                        model.now_ms
                    );
                }
                if trace() {
                    eprintln!(
                        "event {selector:#04x} {ms} ms -> now {} ms, expired {expired}, came due {came_due}",
                        model.now_ms
                    );
                }
            } else if selector & 16 == 0 {
                shutdown.send_replace(true);
                broker.close();
                model.closed = true;
                if trace() {
                    eprintln!("event {selector:#04x}: shutdown");
                }
            } else {
                match (selector >> 5) & 3 {
                    0 => headers.token = (headers.token + 1) % 4,
                    1 => headers.host = (headers.host + 1) % 3,
                    2 => headers.http10 = !headers.http10,
                    _ => headers.coding = (headers.coding + 1) % 4,
                }
                if trace() {
                    eprintln!("event {selector:#04x}: {headers:?}");
                }
            }
            model.check(&broker);
            continue;
        }
        let (suffix, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let prefix = PREFIXES[usize::from((selector >> 3) & 15)];
        let Ok(uri) = Uri::try_from([prefix.as_bytes(), suffix].concat()) else {
            continue;
        };
        let mut builder = Request::builder()
            .method(METHODS[usize::from(method)].clone())
            .uri(uri);
        if headers.http10 {
            builder = builder.version(Version::HTTP_10);
        }
        for _ in 0..[1, 0, 2][usize::from(headers.host)] {
            builder = builder.header(HOST, "ubroker");
        }
        let token_sent = selector & 128 != 0;
        if token_sent {
            let (value, times) = match headers.token {
                0 => (format!("Bearer {TOKEN}"), 1),
                1 => ("Bearer wrong".to_owned(), 1),
                2 => (format!("bEARER  {TOKEN}"), 1),
                _ => (format!("Bearer {TOKEN}"), 2),
            };
            for _ in 0..times {
                builder = builder.header(AUTHORIZATION, value.as_str());
            }
        }
        match headers.coding {
            0 => {}
            1 => builder = builder.header(CONTENT_ENCODING, "gzip"),
            2 => builder = builder.header(TRANSFER_ENCODING, "gzip, chunked"),
            _ => {
                builder = builder
                    .header(CONTENT_ENCODING, "Identity")
                    .header(TRANSFER_ENCODING, "chunked")
            }
        }
        let Ok(req) = builder.body(Full::new(Bytes::copy_from_slice(body))) else {
            continue;
        };
        let before = Snapshot::take(&broker);
        let path = req.uri().path().to_owned();
        let expected = model.predict(&config, &req, headers, token_sent, body);
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
                "{line} {:?} -> {status} {} (model: {} {:?})",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&response_body),
                expected.status,
                expected.code,
            );
        }
        assert!(DOCUMENTED.contains(&status), "undocumented status {status}");
        // `/metrics` is the one answer that is not JSON.
        let metrics_text = path == "/metrics" && status == 200;
        let content_type = if metrics_text {
            "text/plain; version=0.0.4; charset=utf-8"
        } else {
            "application/json"
        };
        assert_eq!(
            parts.headers.get(CONTENT_TYPE),
            Some(&HeaderValue::from_static(content_type))
        );
        let json: Value = if metrics_text {
            let text = std::str::from_utf8(&response_body).expect("metrics are UTF-8");
            assert!(text.contains("# TYPE ubroker_messages gauge"), "{text}");
            Value::Null
        } else {
            serde_json::from_slice(&response_body)
                .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {response_body:?}"))
        };
        let code = if status == 200 {
            None
        } else {
            let object = json.as_object().expect("error body is an object");
            // `/health`'s 503 also says `"status": "shutting down"`.
            let keys = if path == "/health" && status == 503 {
                assert_eq!(object.get("status"), Some(&json!("shutting down")));
                3
            } else {
                2
            };
            assert!(
                object.len() == keys && object.get("error").is_some_and(Value::is_string),
                "error body is not {{\"error\": <string>, \"code\": ...}}: {json}"
            );
            let code = object.get("code").and_then(Value::as_str);
            let code = code.unwrap_or_else(|| panic!("error body without a code: {json}"));
            // The contract's codes (`ubroker-proto`), each with one of its
            // statuses.
            let known = ubroker_proto::Code::parse(code)
                .unwrap_or_else(|| panic!("code {code:?} is not in the contract"));
            assert!(
                known.statuses().contains(&status),
                "code {code} answered with {status}"
            );
            Some(code)
        };
        match status {
            405 => assert_eq!(
                parts.headers.get(ALLOW).and_then(|v| v.to_str().ok()),
                expected.allow,
                "Allow"
            ),
            401 => assert!(parts.headers.contains_key(WWW_AUTHENTICATE)),
            415 => assert_eq!(
                parts.headers.get(ACCEPT_ENCODING),
                Some(&HeaderValue::from_static("identity"))
            ),
            429 => assert_eq!(
                parts.headers.contains_key(RETRY_AFTER),
                code == Some("queue_full"),
                "Retry-After on a 429 {code:?}"
            ),
            _ => {}
        }

        // The broker's state, from its own figures.
        let after = Snapshot::take(&broker);
        check_identity(&after);
        if status != 200 {
            assert_eq!(before, after, "a {status} changed the broker");
        }
        assert_eq!(after.stats.waiting, 0, "a fetch left a waiter behind");

        // The model's prediction.
        assert_eq!(
            (status, code),
            (expected.status, expected.code),
            "answer {json}, the model expected {expected:?}"
        );
        model.apply(expected.effect, &json);
        model.check(&broker);
    }
});

/// `published == acknowledged + dead_lettered + ready + in_flight +
/// delayed` for every queue (SPEC, Counting).
fn check_identity(snapshot: &Snapshot) {
    for (name, q) in &snapshot.queues {
        assert_eq!(
            q.published,
            q.acknowledged
                + q.dead_lettered
                + q.ready as u64
                + q.in_flight as u64
                + q.delayed as u64,
            "counter identity of {name}: {q:?}"
        );
    }
}

#[derive(Debug)]
struct Expected {
    status: u16,
    code: Option<&'static str>,
    allow: Option<&'static str>,
    effect: Effect,
}

fn fail(status: u16, code: &'static str) -> Expected {
    Expected {
        status,
        code: Some(code),
        allow: None,
        effect: Effect::None,
    }
}

fn not_allowed(allow: &'static str) -> Expected {
    Expected {
        status: 405,
        code: Some("method_not_allowed"),
        allow: Some(allow),
        effect: Effect::None,
    }
}

fn ok(effect: Effect) -> Expected {
    Expected {
        status: 200,
        code: None,
        allow: None,
        effect,
    }
}

#[derive(Debug)]
enum Effect {
    None,
    /// One message (`{}`) or a batch (`{"published": n}`): bodies and
    /// delays in order.
    Publish {
        queue: String,
        messages: Vec<(String, u64)>,
        batch: bool,
    },
    /// A fetch, with `?max=` for a batch.
    Fetch(String, Option<usize>),
    /// A batch settle: `'a'`, `'r'` or `'t'`, the ids, the requeue delay,
    /// the touch TTL.
    SettleBatch(String, char, Vec<u64>, u64, Option<u64>),
    Acknowledge(String, u64),
    Requeue(String, u64, u64),
    Touch(String, u64, Option<u64>),
    Redrive(String),
    List,
    Get(String),
    Put(String, QueueUpdate),
    Delete(String),
    /// `GET /stats`: every queue, as the model has it.
    Stats,
    /// `GET /metrics` (checked where the answer is read) and `GET /health`.
    Observe,
}

/// A route as the SPEC names them.
enum Route<'a> {
    /// `/queues`.
    Queues,
    /// `/queues/{queue}`.
    Admin(&'a str),
    /// A message route of a queue (`default` unprefixed).
    Queue(&'a str, Op<'a>),
    /// `/stats`, `/metrics`, `/health`.
    Stats,
    Metrics,
    Health,
}

enum Op<'a> {
    Publish,
    Fetch,
    Acknowledge(&'a str),
    Requeue(&'a str),
    Touch(&'a str),
    /// `acknowledge`, `requeue` or `touch` with the ids in the body.
    SettleBatch(char),
    Redrive,
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "/queues" => return Some(Route::Queues),
        "/stats" => return Some(Route::Stats),
        "/metrics" => return Some(Route::Metrics),
        "/health" => return Some(Route::Health),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/queues/") {
        return match rest.find('/') {
            None => Some(Route::Admin(rest)),
            Some(slash) => op(&rest[slash + 1..], true).map(|op| Route::Queue(&rest[..slash], op)),
        };
    }
    op(path.strip_prefix('/')?, false).map(|op| Route::Queue("default", op))
}

fn op(tail: &str, prefixed: bool) -> Option<Op<'_>> {
    match tail {
        "publish" => return Some(Op::Publish),
        "fetch" => return Some(Op::Fetch),
        "redrive" if prefixed => return Some(Op::Redrive),
        "acknowledge" => return Some(Op::SettleBatch('a')),
        "requeue" => return Some(Op::SettleBatch('r')),
        "touch" => return Some(Op::SettleBatch('t')),
        _ => {}
    }
    let (kind, id) = tail.split_once('/')?;
    if id.contains('/') {
        return None;
    }
    match kind {
        "acknowledge" => Some(Op::Acknowledge(id)),
        "requeue" => Some(Op::Requeue(id)),
        "touch" => Some(Op::Touch(id)),
        _ => None,
    }
}

/// The contract's queue-name rule (`ubroker-proto`).
fn valid_name(name: &str) -> bool {
    ubroker_proto::is_valid_queue_name(name)
}

fn base_of(name: &str) -> &str {
    name.strip_suffix(".dead").unwrap_or(name)
}

fn is_dead(name: &str) -> bool {
    name.ends_with(".dead")
}

#[derive(Debug, Clone)]
struct Msg {
    /// The model's own identity of the message.
    key: u64,
    body: String,
    /// Deliveries so far from the queue it is in.
    attempts: u32,
    /// Reached its `.dead` queue by exhausting `max_deliveries`.
    dead_lettered: bool,
}

impl Msg {
    fn charge(&self) -> u64 {
        self.body.len() as u64 + MESSAGE_OVERHEAD
    }
}

/// A stretch of a ready queue.
#[derive(Debug)]
enum Seg {
    One(Msg),
    /// Two runs that arrived in one sweep in an unspecified interleaving:
    /// each run in order, the head of either may come first.
    Merge(VecDeque<Msg>, VecDeque<Msg>),
}

impl Seg {
    fn len(&self) -> usize {
        match self {
            Seg::One(_) => 1,
            Seg::Merge(a, b) => a.len() + b.len(),
        }
    }

    fn msgs(&self) -> Box<dyn Iterator<Item = &Msg> + '_> {
        match self {
            Seg::One(m) => Box::new(std::iter::once(m)),
            Seg::Merge(a, b) => Box::new(a.iter().chain(b)),
        }
    }

    fn msgs_mut(&mut self) -> Box<dyn Iterator<Item = &mut Msg> + '_> {
        match self {
            Seg::One(m) => Box::new(std::iter::once(m)),
            Seg::Merge(a, b) => Box::new(a.iter_mut().chain(b.iter_mut())),
        }
    }
}

#[derive(Debug)]
struct Lease {
    msg: Msg,
    deadline: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    published: u64,
    delivered: u64,
    acknowledged: u64,
    requeued: u64,
    expired: u64,
    dead_lettered: u64,
    redriven: u64,
}

#[derive(Debug)]
struct MQueue {
    ttl_ms: u64,
    max_deliveries: u32,
    ready: VecDeque<Seg>,
    leases: BTreeMap<u64, Lease>,
    /// Delayed messages by (due time, sequence).
    delayed: BTreeMap<(u64, u64), Msg>,
    counters: Counters,
}

impl MQueue {
    fn ready_len(&self) -> usize {
        self.ready.iter().map(Seg::len).sum()
    }

    fn msgs(&self) -> impl Iterator<Item = &Msg> {
        self.ready
            .iter()
            .flat_map(Seg::msgs)
            .chain(self.leases.values().map(|lease| &lease.msg))
            .chain(self.delayed.values())
    }

    fn held(&self) -> usize {
        self.ready_len() + self.leases.len() + self.delayed.len()
    }

    fn body_bytes(&self) -> u64 {
        self.msgs().map(|m| m.body.len() as u64).sum()
    }

    fn info(&self, name: &str) -> Value {
        json!({
            "name": name,
            "ttl_ms": self.ttl_ms,
            "max_deliveries": self.max_deliveries,
            "ready": self.ready_len(),
            "in_flight": self.leases.len(),
            "delayed": self.delayed.len(),
            "bytes": self.body_bytes(),
        })
    }

    /// A live lease: one whose deadline has not passed, swept or not.
    fn live(&self, id: u64, now: u64) -> bool {
        self.leases.get(&id).is_some_and(|l| now < l.deadline)
    }
}

struct Model {
    queues: BTreeMap<String, MQueue>,
    default_ttl_ms: u64,
    default_max_deliveries: u32,
    max_queues: u64,
    /// `--max-body-bytes`: also the cap on a batch fetch's bodies.
    max_body_bytes: u64,
    now_ms: u64,
    closed: bool,
    last_id: Option<u64>,
    next_key: u64,
    next_seq: u64,
    /// Message ids seen, both ways.
    message_ids: HashMap<u64, u64>,
    owners: HashMap<u64, u64>,
}

impl Model {
    fn new(config: &Config) -> Self {
        let mut model = Model {
            queues: BTreeMap::new(),
            default_ttl_ms: config.ttl,
            default_max_deliveries: config.max_deliveries,
            max_queues: config.max_queues,
            max_body_bytes: config.max_body_bytes,
            now_ms: 0,
            closed: false,
            last_id: None,
            next_key: 0,
            next_seq: 0,
            message_ids: HashMap::new(),
            owners: HashMap::new(),
        };
        model.ensure("default");
        model
    }

    /// The queue `name`, created with the defaults if it does not exist.
    fn ensure(&mut self, name: &str) -> &mut MQueue {
        let (ttl_ms, max) = (self.default_ttl_ms, self.default_max_deliveries);
        self.queues
            .entry(name.to_owned())
            .or_insert_with(|| MQueue {
                ttl_ms,
                max_deliveries: if is_dead(name) { 0 } else { max },
                ready: VecDeque::new(),
                leases: BTreeMap::new(),
                delayed: BTreeMap::new(),
                counters: Counters::default(),
            })
    }

    /// Whether a client may create `name` (it does not exist): `default`'s
    /// base is not counted; a base already in use costs nothing.
    fn can_create(&self, name: &str) -> bool {
        let base = base_of(name);
        if base == "default" {
            return true;
        }
        let bases: BTreeSet<&str> = self
            .queues
            .keys()
            .map(|n| base_of(n))
            .filter(|b| *b != "default")
            .collect();
        bases.contains(base) || (bases.len() as u64) < self.max_queues
    }

    /// What the broker charges against `--max-queue-bytes`.
    fn charged(&self) -> u64 {
        self.queues
            .values()
            .flat_map(MQueue::msgs)
            .map(Msg::charge)
            .sum()
    }

    fn predict(
        &self,
        config: &Config,
        req: &Request<Full<Bytes>>,
        headers: Headers,
        token_sent: bool,
        raw: &[u8],
    ) -> Expected {
        // Admission: the head size, `Host`, `Transfer-Encoding`, the token,
        // `Content-Encoding`. How the head is measured is a definition,
        // shared with the server; what the model checks is the decision
        // made with it.
        if head_bytes(req) as u64 > config.max_header_bytes {
            return fail(431, "headers_too_large");
        }
        if headers.host == 2 || (headers.host == 1 && !headers.http10) {
            return fail(400, "invalid_request");
        }
        if headers.coding == 2 {
            return fail(501, "invalid_request");
        }
        // `/health` is the one route the token does not guard.
        if config.auth_token.is_some() && req.uri().path() != "/health" {
            match (token_sent, headers.token) {
                (true, 3) => return fail(400, "invalid_request"),
                (true, 0 | 2) => {}
                _ => return fail(401, "unauthorized"),
            }
        }
        if headers.coding == 1 {
            return fail(415, "invalid_request");
        }
        let method = req.method();
        let query = req.uri().query();
        let Some(route) = route(req.uri().path()) else {
            return fail(404, "not_found");
        };
        match route {
            Route::Queues if method == Method::GET => ok(Effect::List),
            Route::Stats if method == Method::GET => ok(Effect::Stats),
            Route::Metrics if method == Method::GET => ok(Effect::Observe),
            Route::Health if method == Method::GET && self.closed => fail(503, "shutting_down"),
            Route::Health if method == Method::GET => ok(Effect::Observe),
            Route::Queues | Route::Stats | Route::Metrics | Route::Health => not_allowed("GET"),
            Route::Admin(name) => match *method {
                Method::GET => self.predict_get(name),
                Method::PUT => self.predict_put(config, name, raw),
                Method::DELETE => self.predict_delete(name),
                _ => not_allowed("GET, PUT, DELETE"),
            },
            Route::Queue(name, op) => {
                let fetch = matches!(op, Op::Fetch);
                if fetch && method != Method::GET {
                    return not_allowed("GET");
                }
                if !fetch && method != Method::POST {
                    return not_allowed("POST");
                }
                match op {
                    Op::Publish => self.predict_publish(config, name, query, raw),
                    Op::Fetch => self.predict_fetch(config, name, query),
                    Op::Acknowledge(id) => self.predict_settle(config, name, id, query, 'a'),
                    Op::Requeue(id) => self.predict_settle(config, name, id, query, 'r'),
                    Op::Touch(id) => self.predict_settle(config, name, id, query, 't'),
                    Op::SettleBatch(kind) => {
                        self.predict_settle_batch(config, name, query, raw, kind)
                    }
                    Op::Redrive => self.predict_redrive(name),
                }
            }
        }
    }

    fn predict_publish(
        &self,
        config: &Config,
        name: &str,
        query: Option<&str>,
        raw: &[u8],
    ) -> Expected {
        if !valid_name(name) {
            return fail(400, "invalid_queue_name");
        }
        let Ok(delay) = delay(query, config) else {
            return fail(400, "invalid_request");
        };
        if raw.len() as u64 > config.max_body_bytes {
            return fail(413, "body_too_large");
        }
        let Ok(publish) = parse_publish(raw, config) else {
            return fail(400, "invalid_request");
        };
        let utf8 = |body: &Bytes| String::from_utf8(body.to_vec()).expect("UTF-8 body");
        let ms = |d: Duration| u64::try_from(d.as_millis()).expect("delay in ms");
        let (messages, batch) = match publish {
            Publish::One(body) => (vec![(utf8(&body), ms(delay))], false),
            // A batch's entries carry their own delays.
            Publish::Batch(_) if query_param(query, "delay").is_some() => {
                return fail(400, "invalid_request");
            }
            Publish::Batch(entries) => (
                entries
                    .iter()
                    .map(|m| (utf8(&m.body), ms(m.delay)))
                    .collect(),
                true,
            ),
        };
        if self.closed {
            return fail(503, "shutting_down");
        }
        // All or nothing: the whole batch is charged at once.
        let charge: u64 = messages
            .iter()
            .map(|(body, _)| body.len() as u64 + MESSAGE_OVERHEAD)
            .sum();
        if self.charged().saturating_add(charge) > config.max_queue_bytes {
            return fail(429, "queue_full");
        }
        if !self.queues.contains_key(name) && !self.can_create(name) {
            return fail(429, "too_many_queues");
        }
        ok(Effect::Publish {
            queue: name.to_owned(),
            messages,
            batch,
        })
    }

    fn predict_fetch(&self, config: &Config, name: &str, query: Option<&str>) -> Expected {
        if !valid_name(name) {
            return fail(400, "invalid_queue_name");
        }
        if fetch_wait(query, config).is_err() {
            return fail(400, "invalid_request");
        }
        let Ok(max) = fetch_max(query, config) else {
            return fail(400, "invalid_request");
        };
        if self.closed {
            return fail(503, "shutting_down");
        }
        // A queue that does not exist is waited on as an empty one.
        match self.queues.get(name) {
            Some(q) if q.ready_len() > 0 => ok(Effect::Fetch(name.to_owned(), max)),
            _ => fail(408, "timeout"),
        }
    }

    fn predict_settle(
        &self,
        config: &Config,
        name: &str,
        id: &str,
        query: Option<&str>,
        kind: char,
    ) -> Expected {
        if !valid_name(name) {
            return fail(400, "invalid_queue_name");
        }
        let Ok(id) = parse_id(id) else {
            return fail(400, "invalid_id");
        };
        let mut delay_ms = 0;
        let mut ttl_ms = None;
        match kind {
            'r' => match delay(query, config) {
                Ok(d) => delay_ms = u64::try_from(d.as_millis()).expect("delay in ms"),
                Err(_) => return fail(400, "invalid_request"),
            },
            't' => match touch_ttl(query, config) {
                Ok(t) => ttl_ms = t.map(|t| u64::try_from(t.as_millis()).expect("ttl in ms")),
                Err(_) => return fail(400, "invalid_request"),
            },
            _ => {}
        }
        if self.closed {
            return fail(503, "shutting_down");
        }
        // Valid only under its own queue, and only before its deadline.
        if !self
            .queues
            .get(name)
            .is_some_and(|q| q.live(id, self.now_ms))
        {
            return fail(400, "invalid_id");
        }
        let name = name.to_owned();
        ok(match kind {
            'a' => Effect::Acknowledge(name, id),
            'r' => Effect::Requeue(name, id, delay_ms),
            _ => Effect::Touch(name, id, ttl_ms),
        })
    }

    fn predict_settle_batch(
        &self,
        config: &Config,
        name: &str,
        query: Option<&str>,
        raw: &[u8],
        kind: char,
    ) -> Expected {
        if !valid_name(name) {
            return fail(400, "invalid_queue_name");
        }
        let mut delay_ms = 0;
        let mut ttl_ms = None;
        match kind {
            'r' => match delay(query, config) {
                Ok(d) => delay_ms = u64::try_from(d.as_millis()).expect("delay in ms"),
                Err(_) => return fail(400, "invalid_request"),
            },
            't' => match touch_ttl(query, config) {
                Ok(t) => ttl_ms = t.map(|t| u64::try_from(t.as_millis()).expect("ttl in ms")),
                Err(_) => return fail(400, "invalid_request"),
            },
            _ => {}
        }
        if raw.len() as u64 > config.max_body_bytes {
            return fail(413, "body_too_large");
        }
        let Ok(ids) = parse_ids(raw, config) else {
            return fail(400, "invalid_request");
        };
        if self.closed {
            return fail(503, "shutting_down");
        }
        // Each id's result is predicted as the batch is applied, in order.
        ok(Effect::SettleBatch(
            name.to_owned(),
            kind,
            ids,
            delay_ms,
            ttl_ms,
        ))
    }

    fn predict_redrive(&self, name: &str) -> Expected {
        if self.closed {
            return fail(503, "shutting_down");
        }
        if !valid_name(name) {
            return fail(400, "invalid_queue_name");
        }
        if !is_dead(name) {
            return fail(400, "invalid_request");
        }
        if !self.queues.contains_key(name) {
            return fail(404, "not_found");
        }
        ok(Effect::Redrive(name.to_owned()))
    }

    fn predict_get(&self, name: &str) -> Expected {
        if !valid_name(name) {
            return fail(400, "invalid_queue_name");
        }
        if !self.queues.contains_key(name) {
            return fail(404, "not_found");
        }
        ok(Effect::Get(name.to_owned()))
    }

    fn predict_put(&self, config: &Config, name: &str, raw: &[u8]) -> Expected {
        if !valid_name(name) {
            return fail(400, "invalid_queue_name");
        }
        if raw.len() as u64 > config.max_body_bytes {
            return fail(413, "body_too_large");
        }
        let Ok(update) = parse_put_queue(raw, config) else {
            return fail(400, "invalid_request");
        };
        if self.closed {
            return fail(503, "shutting_down");
        }
        if is_dead(name) && update.max_deliveries.is_some_and(|max| max != 0) {
            return fail(400, "invalid_request");
        }
        if !self.queues.contains_key(name) && !self.can_create(name) {
            return fail(429, "too_many_queues");
        }
        ok(Effect::Put(name.to_owned(), update))
    }

    fn predict_delete(&self, name: &str) -> Expected {
        if self.closed {
            return fail(503, "shutting_down");
        }
        if !valid_name(name) {
            return fail(400, "invalid_queue_name");
        }
        if name == "default" {
            return fail(400, "invalid_request");
        }
        if !self.queues.contains_key(name) {
            return fail(404, "not_found");
        }
        ok(Effect::Delete(name.to_owned()))
    }

    fn apply(&mut self, effect: Effect, response: &Value) {
        let now = self.now_ms;
        match effect {
            Effect::None => {}
            Effect::Publish {
                queue,
                messages,
                batch,
            } => {
                if batch {
                    assert_eq!(response, &json!({ "published": messages.len() }));
                } else {
                    assert_eq!(response, &json!({}));
                }
                for (body, delay_ms) in messages {
                    let msg = Msg {
                        key: self.next_key,
                        body,
                        attempts: 0,
                        dead_lettered: false,
                    };
                    self.next_key += 1;
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let q = self.ensure(&queue);
                    q.counters.published += 1;
                    if delay_ms == 0 {
                        q.ready.push_back(Seg::One(msg));
                    } else {
                        q.delayed.insert((now + delay_ms, seq), msg);
                    }
                }
            }
            Effect::Fetch(queue, None) => self.apply_fetch(&queue, response),
            Effect::Fetch(queue, Some(max)) => self.apply_fetch_batch(&queue, max, response),
            Effect::SettleBatch(queue, kind, ids, delay_ms, ttl_ms) => {
                let mut results = Vec::with_capacity(ids.len());
                for id in ids {
                    let live = self.queues.get(&queue).is_some_and(|q| q.live(id, now));
                    results.push(if live { "ok" } else { "invalid" });
                    if live {
                        match kind {
                            'a' => self.acknowledge(&queue, id),
                            'r' => self.requeue(&queue, id, delay_ms),
                            _ => self.touch(&queue, id, ttl_ms),
                        }
                    }
                }
                assert_eq!(response, &json!({ "results": results }));
            }
            Effect::Acknowledge(queue, id) => {
                assert_eq!(response, &json!({}));
                self.acknowledge(&queue, id);
            }
            Effect::Requeue(queue, id, delay_ms) => {
                assert_eq!(response, &json!({}));
                self.requeue(&queue, id, delay_ms);
            }
            Effect::Touch(queue, id, ttl_ms) => {
                assert_eq!(response, &json!({}));
                self.touch(&queue, id, ttl_ms);
            }
            Effect::Redrive(dead) => {
                let q = self.queues.get_mut(&dead).expect("queue");
                let mut segs: Vec<Seg> = q.ready.drain(..).collect();
                let moved: usize = segs.iter().map(Seg::len).sum();
                q.counters.acknowledged += moved as u64;
                q.counters.redriven += moved as u64;
                assert_eq!(response, &json!({ "moved": moved }));
                if moved > 0 {
                    for seg in &mut segs {
                        for m in seg.msgs_mut() {
                            m.attempts = 0;
                            m.dead_lettered = false;
                        }
                    }
                    let target = self.ensure(base_of(&dead));
                    target.counters.published += moved as u64;
                    target.ready.extend(segs);
                }
            }
            Effect::Stats => {
                let queues = response["queues"].as_object().expect("a queues object");
                let names: Vec<&String> = self.queues.keys().collect();
                assert_eq!(queues.keys().collect::<Vec<_>>(), names, "/stats queues");
                for (name, q) in &self.queues {
                    let info = q.info(name);
                    for field in ["ready", "in_flight", "delayed", "bytes"] {
                        assert_eq!(queues[name][field], info[field], "/stats {name} {field}");
                    }
                }
            }
            Effect::Observe => {}
            Effect::List => {
                let all: Vec<Value> = self.queues.iter().map(|(n, q)| q.info(n)).collect();
                assert_eq!(response, &json!({ "queues": all }));
            }
            Effect::Get(queue) => {
                assert_eq!(response, &self.queues[&queue].info(&queue));
            }
            Effect::Put(queue, update) => {
                let q = self.ensure(&queue);
                if let Some(ttl) = update.ttl {
                    q.ttl_ms = u64::try_from(ttl.as_millis()).expect("ttl in ms");
                }
                if let Some(max) = update.max_deliveries {
                    q.max_deliveries = max;
                }
                assert_eq!(response, &q.info(&queue));
            }
            Effect::Delete(queue) => {
                let q = self.queues.remove(&queue).expect("queue");
                assert_eq!(response, &json!({ "deleted": q.held() }));
            }
        }
    }

    /// Settles a live lease for good.
    fn acknowledge(&mut self, queue: &str, id: u64) {
        let q = self.queues.get_mut(queue).expect("queue");
        q.leases.remove(&id).expect("predicted a live lease");
        q.counters.acknowledged += 1;
    }

    /// Ends a live lease: back to the tail (now or after `delay_ms`), or
    /// to the dead-letter queue on its last allowed delivery.
    fn requeue(&mut self, queue: &str, id: u64, delay_ms: u64) {
        let now = self.now_ms;
        let seq = self.next_seq;
        self.next_seq += 1;
        let q = self.queues.get_mut(queue).expect("queue");
        let lease = q.leases.remove(&id).expect("predicted a live lease");
        // A delay does not hold back a dead-letter move.
        match q.end_delivery(lease.msg, false) {
            Ended::DeadLetter(msg) => self.dead_letter(queue, msg),
            Ended::Back(msg) if delay_ms == 0 => q.ready.push_back(Seg::One(msg)),
            Ended::Back(msg) => {
                q.delayed.insert((now + delay_ms, seq), msg);
            }
        }
    }

    /// Extends a live lease to now plus `ttl_ms` (the queue's TTL if none).
    fn touch(&mut self, queue: &str, id: u64, ttl_ms: Option<u64>) {
        let now = self.now_ms;
        let q = self.queues.get_mut(queue).expect("queue");
        let ttl = ttl_ms.unwrap_or(q.ttl_ms);
        q.leases
            .get_mut(&id)
            .expect("predicted a live lease")
            .deadline = now + ttl;
    }

    /// A batch fetch's answer: 1 to `max` deliveries, each checked as a
    /// single fetch's, taken from the head in order; their bodies within
    /// `--max-body-bytes` unless there is one; and when it stopped short
    /// of `max` with messages still ready, it stopped because the next one
    /// would not fit (under an unordered merge, one of the two heads).
    fn apply_fetch_batch(&mut self, queue: &str, max: usize, response: &Value) {
        let object = response.as_object().expect("fetch answer is an object");
        assert_eq!(object.len(), 1, "batch fetch answer's fields: {response}");
        let entries = response["messages"].as_array().expect("messages array");
        assert!(
            (1..=max).contains(&entries.len()),
            "{} deliveries for max={max}",
            entries.len()
        );
        // SPEC "Batches": the answer stops once its bodies reach
        // --max-body-bytes, and the message that crosses the line is the
        // last one in it: every body but the last adds up to less.
        let mut bytes = 0u64;
        for (i, entry) in entries.iter().enumerate() {
            assert!(
                i == 0 || bytes < self.max_body_bytes,
                "a message after the one that reached --max-body-bytes ({bytes} bytes)"
            );
            self.apply_fetch(queue, entry);
            bytes += entry["message"]["body"].as_str().expect("body").len() as u64;
        }
        let q = &self.queues[queue];
        if entries.len() < max && q.ready.front().is_some() {
            assert!(
                bytes >= self.max_body_bytes,
                "stopped at {} of {max} with messages ready and only {bytes} bytes",
                entries.len()
            );
        }
    }

    fn apply_fetch(&mut self, queue: &str, response: &Value) {
        let object = response.as_object().expect("fetch answer is an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let dead_letter = object.contains_key("dead_letter");
        let mut expected_keys = vec!["attempt", "id", "message", "message_id"];
        if dead_letter {
            expected_keys.insert(1, "dead_letter");
        }
        assert_eq!(keys, expected_keys, "fetch answer's fields: {response}");
        let id = response["id"].as_u64().expect("delivery id");
        assert!(id < MAX_ID, "delivery id {id} not below 2^53");
        assert!(
            self.last_id.is_none_or(|last| id > last),
            "delivery id {id} reused or out of order (last {:?})",
            self.last_id
        );
        self.last_id = Some(id);
        let message_id = response["message_id"].as_u64().expect("message_id");
        assert!(
            message_id < MAX_ID,
            "message id {message_id} not below 2^53"
        );

        let q = self.queues.get_mut(queue).expect("queue");
        let fits = |m: &Msg| {
            let dead = m
                .dead_lettered
                .then(|| json!({"queue": base_of(queue), "reason": "max_deliveries"}));
            response["message"] == json!({ "body": m.body })
                && response["attempt"].as_u64() == Some(u64::from(m.attempts) + 1)
                && response.get("dead_letter") == dead.as_ref()
                && match self.message_ids.get(&m.key) {
                    Some(&known) => known == message_id,
                    None => !self.owners.contains_key(&message_id),
                }
        };
        let mut msg = match q.ready.pop_front().expect("predicted a ready message") {
            Seg::One(m) => {
                assert!(
                    fits(&m),
                    "fetched out of order or altered: {response}, the model expected {m:?} (message ids {:?})",
                    self.message_ids.get(&m.key)
                );
                m
            }
            Seg::Merge(mut a, mut b) => {
                let m = if a.front().is_some_and(fits) {
                    a.pop_front()
                } else if b.front().is_some_and(fits) {
                    b.pop_front()
                } else {
                    panic!("fetched {response}, the model expected the head of {a:?} or of {b:?}");
                };
                match (a.len(), b.len()) {
                    (0, 0) => {}
                    (_, 0) | (0, _) => {
                        for m in b.into_iter().rev().chain(a.into_iter().rev()) {
                            q.ready.push_front(Seg::One(m));
                        }
                    }
                    _ => q.ready.push_front(Seg::Merge(a, b)),
                }
                m.expect("a run's head")
            }
        };
        self.message_ids.insert(msg.key, message_id);
        self.owners.insert(message_id, msg.key);
        msg.attempts += 1;
        q.counters.delivered += 1;
        let deadline = self.now_ms + q.ttl_ms;
        q.leases.insert(id, Lease { msg, deadline });
    }

    /// Moves `msg` (already counted out of `source`) to the tail of
    /// `{source}.dead`, created as needed.
    fn dead_letter(&mut self, source: &str, msg: Msg) {
        let dead = self.ensure(&format!("{source}.dead"));
        dead.counters.published += 1;
        dead.ready.push_back(Seg::One(msg));
    }

    /// What a sweep at `now_ms` does; returns (expired, came due).
    fn sweep(&mut self) -> (usize, usize) {
        let now = self.now_ms;
        let (mut expired, mut came_due) = (0, 0);
        // Per queue: what rejoins its own tail, and what it sends to its
        // dead-letter queue, each in due order.
        let mut own: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
        let mut dead_in: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
        for (name, q) in &mut self.queues {
            // Due order: time, then leases (by id) before delayed messages
            // (by sequence).
            let mut due: Vec<(u64, u8, u64)> = q
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(&id, l)| (l.deadline, 0, id))
                .chain(
                    q.delayed
                        .keys()
                        .filter(|(at, _)| *at <= now)
                        .map(|&(at, seq)| (at, 1, seq)),
                )
                .collect();
            due.sort_unstable();
            for (at, class, seq) in due {
                if class == 0 {
                    expired += 1;
                    let lease = q.leases.remove(&seq).expect("due lease");
                    match q.end_delivery(lease.msg, true) {
                        Ended::DeadLetter(msg) => {
                            dead_in.entry(format!("{name}.dead")).or_default().push(msg)
                        }
                        Ended::Back(msg) => own.entry(name.clone()).or_default().push(msg),
                    }
                } else {
                    came_due += 1;
                    let msg = q.delayed.remove(&(at, seq)).expect("due message");
                    own.entry(name.clone()).or_default().push(msg);
                }
            }
        }
        let names: BTreeSet<String> = own.keys().chain(dead_in.keys()).cloned().collect();
        for name in names {
            let a = own.remove(&name).unwrap_or_default();
            let b = dead_in.remove(&name).unwrap_or_default();
            let q = self.ensure(&name);
            q.counters.published += b.len() as u64;
            if !a.is_empty() && !b.is_empty() {
                q.ready.push_back(Seg::Merge(a.into(), b.into()));
            } else {
                q.ready.extend(a.into_iter().chain(b).map(Seg::One));
            }
        }
        (expired, came_due)
    }

    /// The model equals the broker.
    fn check(&self, broker: &Broker<ManualClock>) {
        let stats = broker.stats();
        assert_eq!(stats.waiting, 0, "a fetch left a waiter behind");
        assert_eq!(
            stats.queued_bytes,
            self.charged(),
            "charged bytes (body + {MESSAGE_OVERHEAD} per message): {stats:?}"
        );
        assert_eq!(stats.queues, self.queues.len(), "queue count: {stats:?}");
        let all = broker.all_queue_stats();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        let model_names: Vec<&str> = self.queues.keys().map(String::as_str).collect();
        assert_eq!(names, model_names, "queues");
        for (name, s) in &all {
            let q = &self.queues[name.as_str()];
            let c = q.counters;
            assert_eq!(
                (s.ready, s.in_flight, s.delayed, s.bytes, s.waiting_fetches),
                (
                    q.ready_len(),
                    q.leases.len(),
                    q.delayed.len(),
                    q.body_bytes(),
                    0
                ),
                "{name}: (ready, in flight, delayed, bytes, waiting): {s:?}"
            );
            assert_eq!(
                Counters {
                    published: s.published,
                    delivered: s.delivered,
                    acknowledged: s.acknowledged,
                    requeued: s.requeued,
                    expired: s.expired,
                    dead_lettered: s.dead_lettered,
                    redriven: s.redriven,
                },
                c,
                "{name}: counters"
            );
        }
        for info in broker.queues() {
            let q = &self.queues[info.name.as_str()];
            assert_eq!(
                (
                    u64::try_from(info.settings.ttl.as_millis()).unwrap_or(u64::MAX),
                    info.settings.max_deliveries
                ),
                (q.ttl_ms, q.max_deliveries),
                "{}: settings",
                info.name
            );
        }
        assert_eq!(
            stats.published,
            stats.acknowledged
                + stats.dead_lettered
                + stats.ready as u64
                + stats.in_flight as u64
                + stats.delayed as u64,
            "broker-wide counter identity: {stats:?}"
        );
    }
}

/// How a delivery that ended without an acknowledge ends.
enum Ended {
    /// Back to this queue (its tail, or delayed).
    Back(Msg),
    /// Its `max_deliveries`-th delivery: to the dead-letter queue, reset.
    DeadLetter(Msg),
}

impl MQueue {
    /// A delivery of `msg` ended without an acknowledge (a requeue, or an
    /// expiry if `expired`), counted here. The queue's `max_deliveries` at
    /// this moment decides.
    fn end_delivery(&mut self, mut msg: Msg, expired: bool) -> Ended {
        if self.max_deliveries > 0 && msg.attempts >= self.max_deliveries {
            self.counters.dead_lettered += 1;
            msg.attempts = 0;
            msg.dead_lettered = true;
            return Ended::DeadLetter(msg);
        }
        if expired {
            self.counters.expired += 1;
        } else {
            self.counters.requeued += 1;
        }
        Ended::Back(msg)
    }
}
