//! [`Metrics`]: what `GET /metrics` exposes, in the Prometheus text format
//! written by `prometheus-client` (the official Rust client; the format is
//! never hand-written here).
//!
//! Two kinds of series:
//!
//! * **Broker state and counters**, read from the engine at scrape time by
//!   [`BrokerCollector`]: `ubroker_messages{queue, state}`,
//!   `ubroker_queue_bytes{queue}`, `ubroker_waiting_fetches{queue}`,
//!   `ubroker_oldest_ready_age_ms{queue}` and `ubroker_{published,
//!   delivered, acknowledged, requeued, expired, dead_lettered}_total{queue}`,
//!   and with `--data-dir` the `log` object of `/stats` as `ubroker_log_*`
//!   ([`LogCollector`]). The
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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use ubroker_engine::{Broker, Clock, QueueStats};

use crate::durability::Durability;

use crate::routes::PATTERNS;

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
    /// Cached counter handles, by route index (`PATTERNS`, then `other`)
    /// and status index (`STATUSES`).
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
        let routes = PATTERNS.len() + 1;
        Metrics {
            registry,
            requests,
            durations,
            request_slots: (0..routes * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            duration_slots: (0..routes).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one answered request. `route` is an index into `PATTERNS`, or
    /// `None` for a path no route matches.
    pub fn observe(&self, route: Option<usize>, status: u16, elapsed: Duration) {
        let route_index = route.unwrap_or(PATTERNS.len());
        let label = route.map_or(OTHER_ROUTE, |index| PATTERNS[index]);
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

    /// Adds the write-ahead log's series (`--data-dir`).
    pub fn with_log(mut self, durable: Arc<Durability>) -> Self {
        self.registry
            .register_collector(Box::new(LogCollector { durable }));
        self
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
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

        type Level = fn(&QueueStats) -> u64;
        let levels: [(&str, &str, Level); 2] = [
            (
                "waiting_fetches",
                "Fetches parked on the queue, waiting for a message.",
                |s| s.waiting_fetches as u64,
            ),
            (
                "oldest_ready_age_ms",
                "Milliseconds the oldest ready message has waited (0: none ready).",
                |s| {
                    s.oldest_ready_age
                        .map_or(0, |age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
                },
            ),
        ];
        for (name, help, read) in levels {
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for (queue, stats) in &queues {
                ConstGauge::new(i64::try_from(read(stats)).unwrap_or(i64::MAX)).encode(
                    family.encode_family(&QueueLabel {
                        queue: queue.as_str().to_owned(),
                    })?,
                )?;
            }
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

/// The `log` object of `/stats` as series (`ubroker_log_*`), read at scrape
/// time.
struct LogCollector {
    durable: Arc<Durability>,
}

impl std::fmt::Debug for LogCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogCollector")
    }
}

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.durable.stats();
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let gauges: [(&str, &str, i64); 5] = [
            (
                "log_bytes",
                "Bytes in the write-ahead log's segments.",
                as_i64(s.bytes),
            ),
            (
                "log_segments",
                "Segment files in the write-ahead log.",
                as_i64(s.segments),
            ),
            (
                "log_live_messages",
                "Messages the write-ahead log holds live.",
                as_i64(s.live_messages),
            ),
            (
                "log_failed",
                "1 once a write or sync of the log failed (no more writes until restart).",
                i64::from(s.failed),
            ),
            (
                "log_disk_full",
                "1 while the disk is full (publishes answered 503 disk_full).",
                i64::from(s.disk_full),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counter = ConstCounter::new(s.fsyncs);
        counter.encode(encoder.encode_descriptor(
            "log_fsyncs",
            "fdatasync calls made by the log's writer.",
            None,
            counter.metric_type(),
        )?)?;
        let seconds = ConstCounter::new(s.fsync_seconds_total);
        seconds.encode(encoder.encode_descriptor(
            "log_fsync_seconds",
            "Time spent in fdatasync, in total.",
            None,
            seconds.metric_type(),
        )?)?;
        let max = ConstGauge::new(s.fsync_max_seconds);
        max.encode(encoder.encode_descriptor(
            "log_fsync_max_seconds",
            "The longest fdatasync so far.",
            None,
            max.metric_type(),
        )?)?;
        Ok(())
    }
}
