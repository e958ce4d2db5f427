//! SPEC.md part 2, "Observability", over real sockets: `GET /stats` (its
//! shape and its exact figures after a known sequence of operations over
//! two queues), `GET /metrics` (parsed with `prometheus-parse`, a parser
//! independent of the library that writes it, and checked against
//! `/stats`), `GET /health` (and its `503` through `--drain-ms` and
//! shutdown), the bearer token on `/stats` and `/metrics` but not on
//! `/health`, and `405` with `Allow: GET` on the three.
//!
//! Tests of time run on tokio's paused clock (`start_paused`), which the
//! engine reads through `TokioClock`: `tokio::time::advance` moves the
//! broker's clock, so ages, uptimes and expiries are exact. Nothing sleeps
//! and then checks; every wait for an event is bounded and panics when the
//! event never comes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    advance_ms, config, paused_server, publish, Binary, Client, RawReply, Reply, TestServer,
};
use hyper::Method;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use ubroker_engine::Broker;
use ubroker_server::{serve, TokioClock};

// --- small helpers -------------------------------------------------------------

async fn get(c: &mut Client, path: &str) -> Reply {
    c.send(Method::GET, path, Bytes::new()).await
}

async fn post(c: &mut Client, path: &str) -> Reply {
    c.send(Method::POST, path, Bytes::new()).await
}

#[track_caller]
fn assert_ok_empty(r: &Reply) {
    assert_eq!((r.status.as_u16(), &r.json), (200, &json!({})), "{r:?}");
}

/// A delivery from `queue`: (id, body, attempt).
async fn fetch(c: &mut Client, queue: &str, wait_ms: u64) -> (u64, String, u64) {
    let r = get(c, &format!("/queues/{queue}/fetch?wait={wait_ms}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    (
        r.json["id"].as_u64().unwrap(),
        r.json["message"]["body"].as_str().unwrap().to_owned(),
        r.json["attempt"].as_u64().unwrap(),
    )
}

async fn settle(c: &mut Client, queue: &str, verb: &str, id: u64) {
    assert_ok_empty(&post(c, &format!("/queues/{queue}/{verb}/{id}")).await);
}

/// `GET /stats`, which must be a `200` of the shape the SPEC gives.
async fn stats(c: &mut Client) -> Value {
    let r = get(c, "/stats").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_stats_shape(&r.json);
    r.json
}

/// The fields of each queue in `/stats`, in the SPEC's order.
const QUEUE_FIELDS: [&str; 12] = [
    "ready",
    "in_flight",
    "delayed",
    "bytes",
    "oldest_ready_age_ms",
    "waiting_fetches",
    "published",
    "delivered",
    "acknowledged",
    "requeued",
    "expired",
    "dead_lettered",
];

/// `{"uptime_ms", "queues": {"<name>": {...}}}` (no `"log"`: these servers
/// run without `--data-dir`), every figure an unsigned integer.
#[track_caller]
fn assert_stats_shape(stats: &Value) {
    let top: BTreeSet<&str> = stats
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {stats}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, BTreeSet::from(["queues", "uptime_ms"]), "{stats}");
    assert!(stats["uptime_ms"].is_u64(), "{stats}");
    let queues = stats["queues"]
        .as_object()
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(
        queues.contains_key("default"),
        "default always exists: {stats}"
    );
    for (name, queue) in queues {
        let queue = queue
            .as_object()
            .unwrap_or_else(|| panic!("{name}: {stats}"));
        for field in QUEUE_FIELDS {
            assert!(
                queue.get(field).is_some_and(Value::is_u64),
                "{name}.{field} missing or not an unsigned integer: {stats}"
            );
        }
        for (field, value) in queue {
            assert!(value.is_u64(), "{name}.{field} is not a number: {stats}");
        }
    }
}

/// One queue's figures in `/stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Figures {
    ready: u64,
    in_flight: u64,
    delayed: u64,
    bytes: u64,
    oldest_ready_age_ms: u64,
    waiting_fetches: u64,
    published: u64,
    delivered: u64,
    acknowledged: u64,
    requeued: u64,
    expired: u64,
    dead_lettered: u64,
}

#[track_caller]
fn figures(stats: &Value, queue: &str) -> Figures {
    let q = &stats["queues"][queue];
    assert!(q.is_object(), "no queue {queue} in {stats}");
    let n = |field: &str| q[field].as_u64().unwrap();
    Figures {
        ready: n("ready"),
        in_flight: n("in_flight"),
        delayed: n("delayed"),
        bytes: n("bytes"),
        oldest_ready_age_ms: n("oldest_ready_age_ms"),
        waiting_fetches: n("waiting_fetches"),
        published: n("published"),
        delivered: n("delivered"),
        acknowledged: n("acknowledged"),
        requeued: n("requeued"),
        expired: n("expired"),
        dead_lettered: n("dead_lettered"),
    }
}

fn queue_names(stats: &Value) -> Vec<&str> {
    stats["queues"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// Asks `/stats` until `condition` holds of it, without sleeping (so the
/// paused clock does not move); panics after 10,000 tries.
async fn stats_until(c: &mut Client, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..10_000 {
        last = stats(c).await;
        if condition(&last) {
            return last;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}; last /stats: {last}");
}

// --- /metrics: scraping and reading ---------------------------------------------

/// A parsed scrape, with the raw text for messages.
struct Metrics {
    text: String,
    scrape: prometheus_parse::Scrape,
}

/// Stands in for `}` inside quoted label values while `prometheus-parse`
/// reads the text: its sample pattern ends the label set at the first `}`,
/// so `route="/queues/{queue}/fetch"` would otherwise make it drop the
/// whole line without a word. The text format allows any character in a
/// quoted value; this is a limit of the parser, not of the exposition.
const CLOSE_BRACE: char = '\u{2983}';

fn protect_braces(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let (mut quoted, mut escaped) = (false, false);
    for ch in line.chars() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if quoted => {
                out.push(CLOSE_BRACE);
                continue;
            }
            _ => {}
        }
        out.push(ch);
    }
    out
}

fn unprotect(value: &str) -> String {
    value.replace(CLOSE_BRACE, "}")
}

/// `GET /metrics` with `headers`: the classic text format, every line of
/// which is a comment or a sample the parser reads.
async fn scrape_with(c: &mut Client, headers: &[(&str, &str)]) -> Metrics {
    let r: RawReply = c
        .request(Method::GET, "/metrics", headers, Bytes::new())
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let content_type = r.content_type().unwrap_or_default().to_owned();
    let mut parts = content_type.split(';').map(str::trim);
    assert_eq!(parts.next(), Some("text/plain"), "{content_type}");
    assert!(
        parts.any(|p| p == "version=0.0.4"),
        "the classic Prometheus text format: {content_type}"
    );
    let text = r.text().to_owned();
    let lines: Vec<String> = text.lines().map(protect_braces).collect();
    for line in &lines {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        assert!(
            matches!(
                prometheus_parse::LineInfo::parse(line),
                prometheus_parse::LineInfo::Sample { .. }
            ),
            "a line the parser does not read as a sample: {line:?}"
        );
    }
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
    Metrics { text, scrape }
}

async fn scrape(c: &mut Client) -> Metrics {
    scrape_with(c, &[]).await
}

fn plain(value: &prometheus_parse::Value) -> f64 {
    match value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("not a single value: {other:?}"),
    }
}

impl Metrics {
    /// Every sample of `metric`, as (labels, sample).
    fn samples(&self, metric: &str) -> Vec<(BTreeMap<String, String>, &prometheus_parse::Sample)> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .map(|s| {
                let labels = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), unprotect(v)))
                    .collect();
                (labels, s)
            })
            .collect()
    }

    /// The one sample of `metric` with exactly `labels`; panics if there is
    /// none or more than one.
    #[track_caller]
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<f64> = self
            .samples(metric)
            .into_iter()
            .filter(|(l, _)| *l == want)
            .map(|(_, s)| plain(&s.value))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{metric}{want:?}: {found:?} in\n{}",
            self.text
        );
        found[0]
    }

    /// `ubroker_http_requests_total` as {(route, status): count}.
    fn requests(&self) -> BTreeMap<(String, String), u64> {
        self.samples("ubroker_http_requests_total")
            .into_iter()
            .map(|(l, s)| {
                let keys: BTreeSet<&str> = l.keys().map(String::as_str).collect();
                assert_eq!(keys, BTreeSet::from(["route", "status"]), "{l:?}");
                (
                    (l["route"].clone(), l["status"].clone()),
                    plain(&s.value) as u64,
                )
            })
            .collect()
    }

    /// The `# TYPE` of `family`.
    fn type_of(&self, family: &str) -> Option<&str> {
        self.text.lines().find_map(|line| {
            let rest = line.strip_prefix("# TYPE ")?;
            let (name, kind) = rest.split_once(' ')?;
            (name == family).then_some(kind.trim())
        })
    }
}

/// Checks every `ubroker_*` series of each queue against `/stats`, and that
/// they exist for exactly the queues `/stats` lists.
#[track_caller]
fn assert_metrics_match_stats(metrics: &Metrics, stats: &Value) {
    let names: BTreeSet<String> = queue_names(stats).into_iter().map(str::to_owned).collect();
    for queue in &names {
        let f = figures(stats, queue);
        let q = queue.as_str();
        let v = |metric: &str, labels: &[(&str, &str)]| metrics.value(metric, labels) as u64;
        for (state, want) in [
            ("ready", f.ready),
            ("in_flight", f.in_flight),
            ("delayed", f.delayed),
        ] {
            assert_eq!(
                v("ubroker_messages", &[("queue", q), ("state", state)]),
                want,
                "{q} {state}"
            );
        }
        assert_eq!(v("ubroker_queue_bytes", &[("queue", q)]), f.bytes, "{q}");
        for (counter, want) in [
            ("published", f.published),
            ("delivered", f.delivered),
            ("acknowledged", f.acknowledged),
            ("requeued", f.requeued),
            ("expired", f.expired),
            ("dead_lettered", f.dead_lettered),
        ] {
            assert_eq!(
                v(&format!("ubroker_{counter}_total"), &[("queue", q)]),
                want,
                "{q} {counter}"
            );
        }
    }
    for metric in [
        "ubroker_messages",
        "ubroker_queue_bytes",
        "ubroker_published_total",
        "ubroker_delivered_total",
        "ubroker_acknowledged_total",
        "ubroker_requeued_total",
        "ubroker_expired_total",
        "ubroker_dead_lettered_total",
    ] {
        let queues: BTreeSet<String> = metrics
            .samples(metric)
            .into_iter()
            .map(|(l, _)| l.get("queue").cloned().unwrap_or_default())
            .collect();
        assert_eq!(queues, names, "{metric}: the queues /stats lists");
    }
}

// --- GET /stats ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn stats_counts_a_known_sequence_over_two_queues_exactly() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    let zero = Figures::default();

    // A fresh server: only `default`, all zeros; uptime moves with the clock.
    let s = stats(&mut c).await;
    assert_eq!(queue_names(&s), ["default"]);
    assert_eq!(figures(&s, "default"), zero);
    let uptime = s["uptime_ms"].as_u64().unwrap();
    advance_ms(1_234).await;
    let s = stats(&mut c).await;
    assert_eq!(s["uptime_ms"].as_u64().unwrap(), uptime + 1_234);

    // beta: leases of 1 s, two deliveries at most.
    let r = c
        .send(
            Method::PUT,
            "/queues/beta",
            r#"{"ttl_ms": 1000, "max_deliveries": 2}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let s = stats(&mut c).await;
    assert_eq!(queue_names(&s), ["beta", "default"], "keyed by name");
    assert_eq!(figures(&s, "beta"), zero);

    // alpha: two ready (pushed into an empty queue now) and one delayed.
    assert_ok_empty(&publish(&mut c, "alpha", "", "hello").await);
    assert_ok_empty(&publish(&mut c, "alpha", "", "world!").await);
    assert_ok_empty(&publish(&mut c, "alpha", "?delay=60000", "later").await);
    let s = stats(&mut c).await;
    assert_eq!(
        figures(&s, "alpha"),
        Figures {
            ready: 2,
            delayed: 1,
            bytes: 16,
            published: 3,
            ..zero
        }
    );
    advance_ms(700).await;
    let s = stats(&mut c).await;
    assert_eq!(
        figures(&s, "alpha").oldest_ready_age_ms,
        700,
        "the head was pushed into an empty queue 700 ms ago"
    );

    // Acknowledge one; requeue the other, which goes back to an empty
    // queue: its age starts again from 0.
    let (hello, body, _) = fetch(&mut c, "alpha", 0).await;
    assert_eq!(body, "hello");
    settle(&mut c, "alpha", "acknowledge", hello).await;
    let (world, body, _) = fetch(&mut c, "alpha", 0).await;
    assert_eq!(body, "world!");
    let s = stats(&mut c).await;
    assert_eq!(
        figures(&s, "alpha"),
        Figures {
            in_flight: 1,
            delayed: 1,
            bytes: 11,
            published: 3,
            delivered: 2,
            acknowledged: 1,
            ..zero
        },
        "nothing ready: oldest_ready_age_ms is 0"
    );
    settle(&mut c, "alpha", "requeue", world).await;
    advance_ms(250).await;
    let s = stats(&mut c).await;
    assert_eq!(
        figures(&s, "alpha"),
        Figures {
            ready: 1,
            delayed: 1,
            bytes: 11,
            oldest_ready_age_ms: 250,
            published: 3,
            delivered: 2,
            acknowledged: 1,
            requeued: 1,
            ..zero
        }
    );
    // Leased again, and left in flight (its TTL is 20 s).
    let (_, body, attempt) = fetch(&mut c, "alpha", 0).await;
    assert_eq!((body.as_str(), attempt), ("world!", 2));

    // beta: a fetch waits, and counts while it waits.
    let addr = server.addr;
    let waiter = tokio::spawn(async move {
        let mut w = Client::connect(addr).await;
        let got = fetch(&mut w, "beta", 60_000).await;
        (w, got)
    });
    let s = stats_until(&mut c, "the fetch on beta waits", |s| {
        s["queues"]["beta"]["waiting_fetches"] == 1
    })
    .await;
    assert_eq!(
        figures(&s, "beta"),
        Figures {
            waiting_fetches: 1,
            ..zero
        }
    );
    assert_eq!(figures(&s, "alpha").waiting_fetches, 0);
    assert_ok_empty(&publish(&mut c, "beta", "", "b1").await);
    let (mut w, (b1, body, attempt)) = waiter.await.unwrap();
    assert_eq!((body.as_str(), attempt), ("b1", 1));
    // The first of b1's two deliveries ends in a requeue.
    settle(&mut w, "beta", "requeue", b1).await;
    let (_, body, attempt) = fetch(&mut c, "beta", 0).await;
    assert_eq!((body.as_str(), attempt), ("b1", 2));
    assert_ok_empty(&publish(&mut c, "beta", "", "b2").await);
    let (_, body, attempt) = fetch(&mut c, "beta", 0).await;
    assert_eq!((body.as_str(), attempt), ("b2", 1));
    let s = stats(&mut c).await;
    assert_eq!(
        figures(&s, "beta"),
        Figures {
            in_flight: 2,
            bytes: 4,
            published: 2,
            delivered: 3,
            requeued: 1,
            ..zero
        }
    );

    // Both leases run out: b1's last delivery dead-letters it (counted in
    // dead_lettered, not expired), b2 expires back to the queue.
    advance_ms(1_000).await;
    let s = stats_until(&mut c, "both beta leases ended", |s| {
        s["queues"]["beta"]["in_flight"] == 0
    })
    .await;
    assert_eq!(
        figures(&s, "beta"),
        Figures {
            ready: 1,
            bytes: 2,
            published: 2,
            delivered: 3,
            requeued: 1,
            expired: 1,
            dead_lettered: 1,
            ..zero
        }
    );
    let (b2, body, attempt) = fetch(&mut c, "beta", 0).await;
    assert_eq!((body.as_str(), attempt), ("b2", 2));
    settle(&mut c, "beta", "acknowledge", b2).await;
    advance_ms(400).await;

    // The end state, every queue.
    let s = stats(&mut c).await;
    assert_eq!(
        queue_names(&s),
        ["alpha", "beta", "beta.dead", "default"],
        "keyed by name, the dead-letter queue included"
    );
    let alpha = Figures {
        in_flight: 1,
        delayed: 1,
        bytes: 11,
        published: 3,
        delivered: 3,
        acknowledged: 1,
        requeued: 1,
        ..zero
    };
    let beta = Figures {
        published: 2,
        delivered: 4,
        acknowledged: 1,
        requeued: 1,
        expired: 1,
        dead_lettered: 1,
        ..zero
    };
    let beta_dead = Figures {
        ready: 1,
        bytes: 2,
        // Moved in when the lease ran out, into an empty queue, 400 ms ago.
        oldest_ready_age_ms: 400,
        published: 1,
        ..zero
    };
    assert_eq!(figures(&s, "alpha"), alpha);
    assert_eq!(figures(&s, "beta"), beta);
    assert_eq!(figures(&s, "beta.dead"), beta_dead);
    assert_eq!(figures(&s, "default"), zero);
    for queue in queue_names(&s) {
        let f = figures(&s, queue);
        assert_eq!(
            f.published,
            f.acknowledged + f.dead_lettered + f.ready + f.in_flight + f.delayed,
            "{queue}: published = acknowledged + dead_lettered + ready + in_flight + delayed"
        );
    }
    // `bytes` is what GET /queues/{queue} reports too.
    for queue in ["alpha", "beta", "beta.dead", "default"] {
        let r = get(&mut c, &format!("/queues/{queue}")).await;
        assert_eq!(r.json["bytes"], s["queues"][queue]["bytes"], "{queue}");
    }

    // /metrics carries the same figures.
    let m = scrape(&mut c).await;
    assert_metrics_match_stats(&m, &s);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn oldest_ready_age_grows_with_the_clock_and_is_0_when_nothing_is_ready() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    assert_ok_empty(&publish(&mut c, "q", "", "a").await);
    let mut elapsed = 0;
    for step in [0, 1, 998, 59_001] {
        advance_ms(step).await;
        elapsed += step;
        let s = stats(&mut c).await;
        assert_eq!(figures(&s, "q").oldest_ready_age_ms, elapsed);
    }
    let (id, _, _) = fetch(&mut c, "q", 0).await;
    assert_eq!(figures(&stats(&mut c).await, "q").oldest_ready_age_ms, 0);
    settle(&mut c, "q", "acknowledge", id).await;
    // A delayed message is not ready: its age starts when it comes due.
    assert_ok_empty(&publish(&mut c, "q", "?delay=500", "d").await);
    advance_ms(499).await;
    let s = stats(&mut c).await;
    assert_eq!(
        (
            figures(&s, "q").delayed,
            figures(&s, "q").oldest_ready_age_ms
        ),
        (1, 0)
    );
    advance_ms(1).await;
    let s = stats_until(&mut c, "the delayed message comes due", |s| {
        s["queues"]["q"]["ready"] == 1
    })
    .await;
    assert_eq!(figures(&s, "q").oldest_ready_age_ms, 0);
    advance_ms(30).await;
    assert_eq!(figures(&stats(&mut c).await, "q").oldest_ready_age_ms, 30);
    server.stop().await;
}

// --- GET /metrics --------------------------------------------------------------

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_documented_families() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_eq!(get(&mut c, "/health").await.status, 200);
    let m = scrape(&mut c).await;
    // Classic text: a counter's family is named as its samples, `_total`
    // included.
    for (family, kind) in [
        ("ubroker_messages", "gauge"),
        ("ubroker_queue_bytes", "gauge"),
        ("ubroker_published_total", "counter"),
        ("ubroker_delivered_total", "counter"),
        ("ubroker_acknowledged_total", "counter"),
        ("ubroker_requeued_total", "counter"),
        ("ubroker_expired_total", "counter"),
        ("ubroker_dead_lettered_total", "counter"),
        ("ubroker_http_requests_total", "counter"),
        ("ubroker_http_request_duration_seconds", "histogram"),
    ] {
        assert_eq!(m.type_of(family), Some(kind), "{family} in\n{}", m.text);
    }
    // A fresh server: `default` at zero, and one request answered.
    assert_metrics_match_stats(
        &m,
        &json!({"queues": {"default": {
        "ready": 0, "in_flight": 0, "delayed": 0, "bytes": 0,
        "oldest_ready_age_ms": 0, "waiting_fetches": 0, "published": 0,
        "delivered": 0, "acknowledged": 0, "requeued": 0, "expired": 0,
        "dead_lettered": 0}}}),
    );
    assert_eq!(
        m.requests(),
        BTreeMap::from([(("/health".to_owned(), "200".to_owned()), 1)]),
        "{}",
        m.text
    );
    server.stop().await;
}

/// Counts one expected request of `route` answered `status`.
fn count(expected: &mut BTreeMap<(String, String), u64>, route: &str, status: u16) {
    *expected
        .entry((route.to_owned(), status.to_string()))
        .or_default() += 1;
}

#[tokio::test]
async fn http_requests_are_counted_by_route_pattern_and_status() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();

    for _ in 0..3 {
        assert_eq!(c.publish("d").await.status, 200);
        count(&mut expected, "/publish", 200);
    }
    for queue in ["jobs", "other-queue", "jobs"] {
        assert_ok_empty(&publish(&mut c, queue, "", "x").await);
        count(&mut expected, "/queues/{queue}/publish", 200);
    }
    let r = c
        .send(Method::POST, "/queues/jobs/publish", "not json")
        .await;
    assert_eq!(r.status, 400);
    count(&mut expected, "/queues/{queue}/publish", 400);
    let (id, _, _) = fetch(&mut c, "jobs", 0).await;
    count(&mut expected, "/queues/{queue}/fetch", 200);
    let (other, _, _) = fetch(&mut c, "other-queue", 0).await;
    count(&mut expected, "/queues/{queue}/fetch", 200);
    assert_eq!(get(&mut c, "/queues/empty/fetch?wait=0").await.status, 408);
    count(&mut expected, "/queues/{queue}/fetch", 408);
    settle(&mut c, "jobs", "acknowledge", id).await;
    count(&mut expected, "/queues/{queue}/acknowledge/{id}", 200);
    settle(&mut c, "other-queue", "requeue", other).await;
    count(&mut expected, "/queues/{queue}/requeue/{id}", 200);
    assert_eq!(post(&mut c, "/queues/jobs/touch/123456").await.status, 400);
    count(&mut expected, "/queues/{queue}/touch/{id}", 400);
    let (d, _, _) = fetch(&mut c, "default", 0).await;
    count(&mut expected, "/queues/{queue}/fetch", 200);
    assert_eq!(c.acknowledge(d).await.status, 200);
    count(&mut expected, "/acknowledge/{id}", 200);
    assert_eq!(c.fetch(0).await.status, 200);
    count(&mut expected, "/fetch", 200);
    assert_eq!(c.requeue(987_654).await.status, 400);
    count(&mut expected, "/requeue/{id}", 400);
    assert_eq!(post(&mut c, "/touch/5").await.status, 400);
    count(&mut expected, "/touch/{id}", 400);
    assert_eq!(get(&mut c, "/publish").await.status, 405);
    count(&mut expected, "/publish", 405);
    assert_eq!(post(&mut c, "/queues/jobs.dead/redrive").await.status, 404);
    count(&mut expected, "/queues/{queue}/redrive", 404);
    assert_eq!(get(&mut c, "/queues").await.status, 200);
    count(&mut expected, "/queues", 200);
    assert_eq!(get(&mut c, "/queues/jobs").await.status, 200);
    count(&mut expected, "/queues/{queue}", 200);
    assert_eq!(get(&mut c, "/queues/nope").await.status, 404);
    count(&mut expected, "/queues/{queue}", 404);
    for path in ["/nope", "/queues/jobs/nope", "/acknowledge/1/2", "/stats/x"] {
        assert_eq!(get(&mut c, path).await.status, 404, "{path}");
        count(&mut expected, "other", 404);
    }
    assert_eq!(get(&mut c, "/stats").await.status, 200);
    count(&mut expected, "/stats", 200);
    assert_eq!(post(&mut c, "/stats").await.status, 405);
    count(&mut expected, "/stats", 405);
    assert_eq!(get(&mut c, "/health").await.status, 200);
    count(&mut expected, "/health", 200);
    // A second connection counts into the same series.
    let mut c2 = server.client().await;
    assert_eq!(get(&mut c2, "/health").await.status, 200);
    count(&mut expected, "/health", 200);

    let m = scrape(&mut c).await;
    assert_eq!(m.requests(), expected, "\n{}", m.text);
    // The scrape itself is counted once it is answered.
    let m = scrape(&mut c).await;
    count(&mut expected, "/metrics", 200);
    assert_eq!(m.requests(), expected, "\n{}", m.text);

    // No label carries a queue name or an id.
    for (route, _) in expected.keys() {
        assert!(
            !route.contains("jobs") && !route.chars().any(|ch| ch.is_ascii_digit()),
            "{route}"
        );
    }

    // The latency histogram: one observation per request, by route only.
    let mut per_route: BTreeMap<String, u64> = BTreeMap::new();
    for ((route, _), n) in &expected {
        *per_route.entry(route.clone()).or_default() += n;
    }
    let counts: BTreeMap<String, u64> = m
        .samples("ubroker_http_request_duration_seconds_count")
        .into_iter()
        .map(|(l, s)| {
            let keys: Vec<&str> = l.keys().map(String::as_str).collect();
            assert_eq!(keys, ["route"], "{l:?}");
            (l["route"].clone(), plain(&s.value) as u64)
        })
        .collect();
    assert_eq!(counts, per_route, "\n{}", m.text);
    let histograms = m.samples("ubroker_http_request_duration_seconds");
    assert_eq!(histograms.len(), counts.len(), "\n{}", m.text);
    for (labels, sample) in histograms {
        let prometheus_parse::Value::Histogram(buckets) = &sample.value else {
            panic!("not a histogram: {sample:?}");
        };
        let route = &labels["route"];
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "{route}"
        );
        let inf = buckets.last().unwrap();
        assert!(inf.less_than.is_infinite(), "{route}: {buckets:?}");
        assert_eq!(
            inf.count as u64, counts[route],
            "{route}: +Inf bucket = _count"
        );
    }
    let sums = m.samples("ubroker_http_request_duration_seconds_sum");
    assert_eq!(sums.len(), counts.len());
    for (labels, sample) in sums {
        let sum = plain(&sample.value);
        assert!(sum.is_finite() && sum >= 0.0, "{labels:?}: {sum}");
    }
    server.stop().await;
}

#[tokio::test]
async fn metrics_figures_agree_with_stats_on_a_real_clock() {
    // Delays and expiry on the real clock too: a long-poll is woken by the
    // expiry, nothing sleeps and then checks.
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    let r = c
        .send(
            Method::PUT,
            "/queues/short",
            r#"{"ttl_ms": 50, "max_deliveries": 3}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_ok_empty(&publish(&mut c, "short", "", "e").await);
    assert_ok_empty(&publish(&mut c, "short", "?delay=3600000", "delayed").await);
    let (first, _, _) = fetch(&mut c, "short", 0).await;
    // The lease runs out after 50 ms; the long-poll gets the message back.
    let (second, body, attempt) = fetch(&mut c, "short", 10_000).await;
    assert_ne!(first, second);
    assert_eq!((body.as_str(), attempt), ("e", 2));
    settle(&mut c, "short", "acknowledge", second).await;
    assert_ok_empty(&publish(&mut c, "default", "", "left").await);
    let s = stats(&mut c).await;
    assert_eq!(
        figures(&s, "short"),
        Figures {
            delayed: 1,
            bytes: 7,
            published: 2,
            delivered: 2,
            acknowledged: 1,
            expired: 1,
            ..Figures::default()
        }
    );
    let m = scrape(&mut c).await;
    assert_metrics_match_stats(&m, &s);
    server.stop().await;
}

// --- GET /health and the drain -------------------------------------------------

#[tokio::test]
async fn health_is_200_ok_while_serving() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    let r = get(&mut c, "/health").await;
    assert_eq!(
        (r.status.as_u16(), &r.json),
        (200, &json!({"status": "ok"}))
    );
    server.stop().await;
}

#[track_caller]
fn assert_shutting_down(r: &Reply) {
    assert_eq!(r.status, 503, "{r:?}");
    let keys: BTreeSet<&str> = r
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["code", "error", "status"]), "{r:?}");
    assert!(
        r.json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{r:?}"
    );
    assert_eq!(r.json["code"], "shutting_down", "{r:?}");
    assert_eq!(r.json["status"], "shutting down", "{r:?}");
}

/// Asks `/health` until it is not a 200, without sleeping; panics after
/// 10,000 tries.
async fn health_until_unhealthy(c: &mut Client) -> Reply {
    for _ in 0..10_000 {
        let r = get(c, "/health").await;
        if r.status != 200 {
            return r;
        }
        assert_eq!(r.json, json!({"status": "ok"}));
        tokio::task::yield_now().await;
    }
    panic!("/health never stopped answering 200");
}

#[tokio::test(start_paused = true)]
async fn drain_ms_answers_health_503_and_serves_the_rest_then_stops() {
    let mut cfg = config();
    cfg.drain_ms = 5_000;
    cfg.idle_timeout = 30 * 24 * 3600 * 1000;
    let broker = Arc::new(Broker::with_clock(cfg.engine(), TokioClock::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, broker.clone(), cfg, async {
        let _ = stopped.await;
    }));
    let mut c = Client::connect(addr).await;
    assert_eq!(get(&mut c, "/health").await.status, 200);
    // A fetch that waits across the start of the drain.
    let waiter = tokio::spawn(async move {
        let mut w = Client::connect(addr).await;
        fetch(&mut w, "jobs", 60_000).await
    });
    for tries in 0.. {
        if broker.stats().waiting == 1 {
            break;
        }
        assert!(tries < 10_000, "the fetch never waited");
        tokio::task::yield_now().await;
    }

    stop.send(()).unwrap();
    let began = tokio::time::Instant::now();
    assert_shutting_down(&health_until_unhealthy(&mut c).await);
    // Everything else is served as usual: the waiting fetch is woken by a
    // publish (not answered 503), fetches and settlements work, and new
    // connections are accepted.
    assert_ok_empty(&publish(&mut c, "jobs", "", "one").await);
    let (_, body, _) = waiter.await.unwrap();
    assert_eq!(body, "one");
    assert_ok_empty(&publish(&mut c, "jobs", "", "two").await);
    let (id, body, _) = fetch(&mut c, "jobs", 0).await;
    assert_eq!(body, "two");
    settle(&mut c, "jobs", "acknowledge", id).await;
    let mut fresh = Client::connect(addr).await;
    assert_eq!(get(&mut fresh, "/stats").await.status, 200);
    assert_shutting_down(&get(&mut fresh, "/health").await);

    // Until the last millisecond of the drain.
    advance_ms(4_999).await;
    assert_shutting_down(&get(&mut c, "/health").await);
    assert_eq!(c.publish("three").await.status, 200);
    assert_eq!(c.fetch(0).await.status, 200);
    assert!(!task.is_finished(), "stopped before the drain was over");
    assert_eq!(began.elapsed(), Duration::from_millis(4_999));

    // Then it shuts down as in part 1: the listener closes and serve
    // returns.
    advance_ms(1).await;
    drop((c, fresh));
    match tokio::time::timeout(Duration::from_secs(60), task).await {
        Ok(result) => result.unwrap().unwrap(),
        Err(_) => panic!("the server did not stop after the drain"),
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_drain_ms_shutdown_begins_at_once() {
    // The default drain of 0: shutdown begins at once, and a fetch waiting
    // then is answered 503 (as in part 1), not held through a drain.
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_eq!(get(&mut c, "/health").await.status, 200);
    let addr = server.addr;
    let waiter = tokio::spawn(async move { Client::connect(addr).await.fetch(20_000).await });
    server
        .until("the fetch waits", |b| b.stats().waiting == 1)
        .await;
    let mut server = server;
    server.begin_shutdown();
    let r = waiter.await.unwrap();
    assert_eq!(
        (r.status.as_u16(), &r.json["code"]),
        (503, &json!("shutting_down"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_drains_on_sigterm_for_drain_ms_then_exits_0() {
    const DRAIN: Duration = Duration::from_millis(1_500);
    let running = Binary::start(&["--port", "0", "--drain-ms", "1500"], &[], Stdio::null());
    let mut c = Client::connect(running.addr).await;
    assert_eq!(get(&mut c, "/health").await.status, 200);
    // Taken before the signal: the drain starts when the binary receives it,
    // so a test thread descheduled after sending it must not see a drain
    // that looks shorter than it was.
    let signalled = Instant::now();
    running.signal("TERM");
    let mut tries = 0;
    let r = loop {
        let r = get(&mut c, "/health").await;
        if r.status != 200 {
            break r;
        }
        tries += 1;
        assert!(tries < 1_000, "/health still 200 long after SIGTERM");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_shutting_down(&r);
    assert!(
        signalled.elapsed() < DRAIN,
        "the drain must be observable; slow machine?"
    );
    assert_eq!(c.publish("during the drain").await.status, 200);
    let (id, body) = c.fetch(0).await.delivery();
    assert_eq!(body, "during the drain");
    assert_eq!(c.acknowledge(id).await.status, 200);
    drop(c);
    let mut child = running.child;
    let code = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the binary did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    assert!(
        signalled.elapsed() >= DRAIN,
        "exited {:?} after SIGTERM, before the drain of {DRAIN:?} was over",
        signalled.elapsed()
    );
}

// --- auth and methods ------------------------------------------------------------

#[tokio::test]
async fn the_auth_token_guards_stats_and_metrics_but_not_health() {
    let mut cfg = config();
    cfg.auth_token = Some("s3cret-token".into());
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    let good = [("authorization", "Bearer s3cret-token")];
    for path in ["/stats", "/metrics"] {
        for headers in [
            &[][..],
            &[("authorization", "Bearer wrong")][..],
            &[("authorization", "s3cret-token")][..],
        ] {
            let r = c
                .request(Method::GET, path, headers, Bytes::new())
                .await
                .json();
            assert_eq!(r.status, 401, "{path} {headers:?}: {r:?}");
            assert_eq!(r.json["code"], "unauthorized", "{path}");
            assert!(r.headers.contains_key("www-authenticate"), "{path}");
        }
    }
    let r = c
        .request(Method::GET, "/stats", &good, Bytes::new())
        .await
        .json();
    assert_eq!(r.status, 200, "{r:?}");
    assert_stats_shape(&r.json);
    scrape_with(&mut c, &good).await;
    for headers in [&[][..], &[("authorization", "Bearer wrong")][..], &good[..]] {
        let r = c
            .request(Method::GET, "/health", headers, Bytes::new())
            .await
            .json();
        assert_eq!(
            (r.status.as_u16(), &r.json),
            (200, &json!({"status": "ok"})),
            "{headers:?}"
        );
    }
    // Unguarded, /health still routes: a wrong method is a 405, not a 401.
    let r = c
        .request(Method::POST, "/health", &[], Bytes::new())
        .await
        .json();
    assert_eq!(r.status, 405, "{r:?}");
    // Replication's leader check is HAProxy's, which holds no token either:
    // a single node answers it 404 (no leader to ask about), never 401.
    for headers in [&[][..], &[("authorization", "Bearer wrong")][..], &good[..]] {
        let r = c
            .request(Method::GET, "/health/leader", headers, Bytes::new())
            .await
            .json();
        assert_eq!(
            (r.status.as_u16(), &r.json["code"]),
            (404, &json!("not_found")),
            "{headers:?}"
        );
    }
    // The token still guards every other route.
    let r = c
        .request(Method::GET, "/queues", &[], Bytes::new())
        .await
        .json();
    assert_eq!(r.status, 401, "{r:?}");
    server.stop().await;
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow_get() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for path in ["/stats", "/metrics", "/health"] {
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
            Method::HEAD,
        ] {
            let r = c.request(method.clone(), path, &[], Bytes::new()).await;
            assert_eq!(r.status, 405, "{method} {path}: {r:?}");
            assert_eq!(
                r.headers.get("allow").map(|v| v.to_str().unwrap()),
                Some("GET"),
                "{method} {path}"
            );
            if method != Method::HEAD {
                let r = r.json();
                assert_eq!(r.json["code"], "method_not_allowed", "{method} {path}");
            }
        }
        // And GET still answers.
        let r = c.request(Method::GET, path, &[], Bytes::new()).await;
        assert_eq!(r.status, 200, "{path}");
    }
    server.stop().await;
}
