//! [`Metrics`]: what `GET /metrics` exposes, in the Prometheus text format
//! written by `prometheus-client` (the official Rust client; the format is
//! never hand-written here).
//!
//! Two kinds of series:
//!
//! * **Broker state and counters**, read from the engine at scrape time by
//!   [`BrokerCollector`]: `ubroker_messages{queue, state}`,
//!   `ubroker_queue_bytes{queue}` and `ubroker_{published, delivered,
//!   acknowledged, requeued, expired, dead_lettered}_total{queue}`. The
//!   engine already counts these (one relaxed increment per event, see
//!   `engine/src/stats.rs`); mirroring them into a second set of counters
//!   would double the hot path's cost for nothing.
//! * **HTTP requests**, counted as they are answered:
//!   `ubroker_http_requests_total{route, status}` and the latency histogram
//!   `ubroker_http_request_duration_seconds{route}`. `route` is the route's
//!   pattern (`/queues/{queue}/fetch`), never the raw path, so names and ids
//!   cannot blow up cardinality; paths no route matches count as `other`.
//!
//! # Cost on the hot path
//!
//! Per request: two clock reads (start and end), one relaxed increment of a
//! counter found by array index (the handles are resolved once per
//! (route, status) pair and cached in a `OnceLock`, so `Family`'s read lock
//! and label hashing are paid only the first time), and one histogram
//! observation (an uncontended `parking_lot` mutex per route).
//! BENCHMARKS.md measures it with `ubroker-load --compare`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use ubroker_engine::{Broker, Clock, QueueStats};

/// The `Content-Type` of `GET /metrics`: the classic Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route label of requests whose path matches no route.
const OTHER_ROUTE: &str = "other";

/// Statuses the server answers, in the order of their cache slots; anything
/// else takes the uncached path.
const STATUSES: [u16; 14] = [
    200, 400, 401, 404, 405, 408, 413, 415, 429, 431, 500, 501, 503, 504,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// The registry and the request series; shared by every connection.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    /// Route patterns in the order of their first request: a pattern's
    /// position is its slot in the caches below.
    routes: RouteSlots,
    /// Cached counter handles, by route slot and status index (`STATUSES`).
    request_slots: Box<[OnceLock<Counter>]>,
    duration_slots: Box<[OnceLock<Histogram>]>,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s, doubling: long-polling fetches land in the top.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    /// A registry with the request series and `broker`'s collector.
    pub fn new<C: Clock>(broker: Arc<Broker<C>>) -> Self {
        let mut registry = Registry::with_prefix("ubroker");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's head to its response, by route pattern",
            durations.clone(),
        );
        registry.register_collector(Box::new(BrokerCollector { broker }));
        Metrics {
            registry,
            requests,
            durations,
            routes: RouteSlots::default(),
            request_slots: (0..ROUTE_SLOTS * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            duration_slots: (0..ROUTE_SLOTS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one answered request. `route` is the route's pattern, or
    /// `None` for a path no route matches.
    pub fn observe(&self, route: Option<&'static str>, status: u16, elapsed: Duration) {
        let label = route.unwrap_or(OTHER_ROUTE);
        let Some(route_index) = self.routes.slot(label) else {
            // More patterns than slots: not with this server's routes, but
            // counted all the same, through the family's lock.
            self.uncached(label, status, elapsed);
            return;
        };
        match STATUSES.iter().position(|&s| s == status) {
            Some(status_index) => {
                let slot = &self.request_slots[route_index * STATUSES.len() + status_index];
                slot.get_or_init(|| {
                    self.requests
                        .get_or_create(&RequestLabels {
                            route: label,
                            status,
                        })
                        .clone()
                })
                .inc();
            }
            None => {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: label,
                        status,
                    })
                    .inc();
            }
        }
        self.duration_slots[route_index]
            .get_or_init(|| {
                self.durations
                    .get_or_create(&RouteLabel { route: label })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
    }

    fn uncached(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.durations
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Room for this many route patterns (the routes have 22, and `other`).
const ROUTE_SLOTS: usize = 32;

/// Gives each route pattern a slot, in the order of first requests, with
/// no hashing: a lookup compares the pattern with those already seen (a
/// pointer comparison for the same literal), and the routes a server is
/// busy with are seen first.
#[derive(Default)]
struct RouteSlots {
    patterns: [OnceLock<&'static str>; ROUTE_SLOTS],
    len: AtomicUsize,
    adding: Mutex<()>,
}

impl RouteSlots {
    /// `pattern`'s slot, given one at its first request; `None` when every
    /// slot is taken.
    fn slot(&self, pattern: &'static str) -> Option<usize> {
        if let Some(slot) = self.find(pattern, self.len.load(Ordering::Acquire)) {
            return Some(slot);
        }
        let _adding = self
            .adding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let len = self.len.load(Ordering::Acquire);
        if let Some(slot) = self.find(pattern, len) {
            return Some(slot);
        }
        self.patterns.get(len)?.set(pattern).ok()?;
        self.len.store(len + 1, Ordering::Release);
        Some(len)
    }

    fn find(&self, pattern: &str, len: usize) -> Option<usize> {
        self.patterns[..len].iter().position(|seen| {
            seen.get().is_some_and(|seen| {
                seen.len() == pattern.len()
                    && (std::ptr::eq(seen.as_ptr(), pattern.as_ptr()) || *seen == pattern)
            })
        })
    }
}

/// Reads every queue's figures from the engine at scrape time.
struct BrokerCollector<C: Clock> {
    broker: Arc<Broker<C>>,
}

impl<C: Clock> std::fmt::Debug for BrokerCollector<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerCollector")
    }
}

// Owned: the derive takes no lifetimes. Built once per queue per scrape,
// never on the request path.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: &'static str,
}

impl<C: Clock> Collector for BrokerCollector<C> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let queues = self.broker.all_queue_stats();

        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "messages",
            "Messages held, by queue and state (ready, in_flight, delayed).",
            None,
            gauge.metric_type(),
        )?;
        for (name, stats) in &queues {
            for (state, value) in [
                ("ready", stats.ready),
                ("in_flight", stats.in_flight),
                ("delayed", stats.delayed),
            ] {
                let labels = QueueStateLabels {
                    queue: name.as_str().to_owned(),
                    state,
                };
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "queue_bytes",
            "Body bytes held by the queue (ready, in flight and delayed).",
            None,
            gauge.metric_type(),
        )?;
        for (name, stats) in &queues {
            ConstGauge::new(i64::try_from(stats.bytes).unwrap_or(i64::MAX)).encode(
                family.encode_family(&QueueLabel {
                    queue: name.as_str().to_owned(),
                })?,
            )?;
        }

        type Read = fn(&QueueStats) -> u64;
        let counters: [(&str, &str, Read); 6] = [
            (
                "published",
                "Messages accepted by the queue (publishes, dead-letter moves and redrives in).",
                |s| s.published,
            ),
            (
                "delivered",
                "Deliveries handed out (redeliveries included).",
                |s| s.delivered,
            ),
            (
                "acknowledged",
                "Deliveries acknowledged (and, on a dead-letter queue, messages redriven out).",
                |s| s.acknowledged,
            ),
            ("requeued", "Deliveries requeued by their consumer.", |s| {
                s.requeued
            }),
            ("expired", "Deliveries whose lease ran out.", |s| s.expired),
            (
                "dead_lettered",
                "Messages moved to the queue's dead-letter queue.",
                |s| s.dead_lettered,
            ),
        ];
        for (name, help, read) in counters {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (queue, stats) in &queues {
                ConstCounter::new(read(stats)).encode(family.encode_family(&QueueLabel {
                    queue: queue.as_str().to_owned(),
                })?)?;
            }
        }
        Ok(())
    }
}
