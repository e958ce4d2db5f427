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
//! * **HTTP requests**, counted as they are answered ([`RequestCounts`]):
//!   `ubroker_http_requests_total{route, status}` and the latency histogram
//!   `ubroker_http_request_duration_seconds{route}`. `route` is the route's
//!   pattern (`/queues/{queue}/fetch`), never the raw path, so names and ids
//!   cannot blow up cardinality; paths no route matches count as `other`.
//!
//! # Cost on the hot path
//!
//! Per request: no clock read of its own (the latency comes from the clock
//! reads the connection makes for its timeouts, see
//! `connection::Activity::request_finished`), a lookup of the route's slot
//! (a comparison with the patterns seen so far, no hashing), and three
//! relaxed additions (the status counter, the latency bucket, the latency
//! sum) to counters of the calling thread's shard. Shards are summed at
//! scrape time ([`RequestSeries`]), so the worker threads do not bounce one
//! cache line between them on every request. No lock and no allocation.
//! BENCHMARKS.md ("The request path at the bare server's speed") measures
//! it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use ubroker_engine::{Broker, Clock, QueueStats};

use crate::durability::Durability;

/// The `Content-Type` of `GET /metrics`: the classic Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route label of requests whose path matches no route.
const OTHER_ROUTE: &str = "other";

/// Statuses the server answers, in the order of their counters; anything
/// else is counted through a lock ([`RequestCounts::rare`]).
const STATUSES: [u16; 14] = [
    200, 400, 401, 404, 405, 408, 413, 415, 429, 431, 500, 501, 503, 504,
];

/// The latency histogram's finite buckets: 50 µs to about 26 s, doubling
/// (long-polling fetches land in the top ones).
const BUCKETS: usize = 20;
const FIRST_BUCKET_NANOS: u64 = 50_000;

/// The finite upper bounds, in seconds, exactly as `prometheus-client`
/// computes them for a histogram of its own (the exposition is unchanged).
fn bucket_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(FIRST_BUCKET_NANOS as f64 / 1e9, 2.0, BUCKETS as u16)
}

/// The bucket of a latency: the first whose bound is at least `nanos`, or
/// `BUCKETS` for `+Inf`. The bounds double, so this is a base-2 logarithm.
fn bucket_of(nanos: u64) -> usize {
    let units = nanos.div_ceil(FIRST_BUCKET_NANOS);
    if units <= 1 {
        return 0;
    }
    ((u64::BITS - (units - 1).leading_zeros()) as usize).min(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// The registry and the request series; shared by every connection.
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestCounts>,
}

impl Metrics {
    /// A registry with the request series and `broker`'s collector.
    pub fn new<C: Clock>(broker: Arc<Broker<C>>) -> Self {
        let mut registry = Registry::with_prefix("ubroker");
        let requests = Arc::new(RequestCounts::new());
        registry.register_collector(Box::new(RequestSeries(requests.clone())));
        registry.register_collector(Box::new(BrokerCollector { broker }));
        Metrics { registry, requests }
    }

    /// Counts one answered request. `route` is the route's pattern, or
    /// `None` for a path no route matches.
    pub fn observe(&self, route: Option<&'static str>, status: u16, elapsed: Duration) {
        self.requests
            .observe(route.unwrap_or(OTHER_ROUTE), status, elapsed);
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

/// Room for this many route patterns (the routes have 22, and `other`).
pub(crate) const ROUTE_SLOTS: usize = 32;

/// How many shards the request counters are spread over: threads take
/// them in turn, so with up to this many worker threads none shares one.
const SHARDS: usize = 4;

/// One route's counts in one shard.
#[derive(Default)]
struct RouteCounts {
    by_status: [AtomicU64; STATUSES.len()],
    /// Observations per latency bucket, `+Inf` last (not cumulative).
    buckets: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

/// One shard: every route's counts, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    routes: [RouteCounts; ROUTE_SLOTS],
}

/// The HTTP request series: per-thread shards of plain counters, summed at
/// scrape time.
struct RequestCounts {
    routes: RouteSlots,
    shards: Box<[Shard]>,
    /// Requests with a status outside `STATUSES`, or a route past the
    /// slots: counted under a lock (not in the latency histogram if the
    /// route has no slot).
    rare: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

thread_local! {
    /// The calling thread's shard, given at its first request.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

impl RequestCounts {
    fn new() -> Self {
        RequestCounts {
            routes: RouteSlots::default(),
            shards: (0..SHARDS)
                .map(|_| Shard {
                    routes: std::array::from_fn(|_| RouteCounts::default()),
                })
                .collect(),
            rare: Mutex::new(BTreeMap::new()),
        }
    }

    fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        let status_index = STATUSES.iter().position(|&s| s == status);
        let Some(slot) = self.routes.slot(route) else {
            self.count_rare(route, status);
            return;
        };
        let shard = SHARD.with(|shard| *shard);
        let counts = &self.shards[shard].routes[slot];
        match status_index {
            Some(index) => {
                counts.by_status[index].fetch_add(1, Ordering::Relaxed);
            }
            None => self.count_rare(route, status),
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        counts.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn count_rare(&self, route: &'static str, status: u16) {
        let mut rare = self
            .rare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *rare.entry((route, status)).or_default() += 1;
    }

    /// A route's counts summed over the shards.
    fn total(&self, slot: usize) -> Totals {
        let mut by_status = vec![0; STATUSES.len()];
        let mut buckets = vec![0; BUCKETS + 1];
        let mut sum_nanos = 0u64;
        for shard in &self.shards {
            let counts = &shard.routes[slot];
            for (total, count) in by_status.iter_mut().zip(&counts.by_status) {
                *total += count.load(Ordering::Relaxed);
            }
            for (total, count) in buckets.iter_mut().zip(&counts.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(counts.sum_nanos.load(Ordering::Relaxed));
        }
        (by_status, buckets, sum_nanos)
    }
}

/// A route's counts over every shard: by status (as `STATUSES`), by latency
/// bucket (not cumulative, `+Inf` last), and the latency sum in nanoseconds.
type Totals = (Vec<u64>, Vec<u64>, u64);

/// Writes `ubroker_http_requests_total{route, status}` and
/// `ubroker_http_request_duration_seconds{route}` from [`RequestCounts`]:
/// a series appears once its first request is counted.
struct RequestSeries(Arc<RequestCounts>);

impl std::fmt::Debug for RequestSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestSeries")
    }
}

impl Collector for RequestSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        let routes: Vec<(&'static str, Totals)> = counts
            .routes
            .seen()
            .map(|(slot, route)| (route, counts.total(slot)))
            .collect();
        let rare = counts
            .rare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();

        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "http_requests",
            "HTTP requests answered, by route pattern and status",
            None,
            counter.metric_type(),
        )?;
        for (route, (by_status, _, _)) in &routes {
            for (&status, &count) in STATUSES.iter().zip(by_status) {
                if count > 0 {
                    ConstCounter::new(count)
                        .encode(family.encode_family(&RequestLabels { route, status })?)?;
                }
            }
        }
        for (&(route, status), &count) in &rare {
            ConstCounter::new(count)
                .encode(family.encode_family(&RequestLabels { route, status })?)?;
        }

        let mut family = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "Time from a request's head to its response, by route pattern",
            None,
            MetricType::Histogram,
        )?;
        let bounds: Vec<f64> = bucket_bounds().chain([f64::INFINITY]).collect();
        for (route, (_, buckets, sum_nanos)) in &routes {
            let count: u64 = buckets.iter().sum();
            if count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = bounds
                .iter()
                .copied()
                .zip(buckets.iter().copied())
                .collect();
            family
                .encode_family(&RouteLabel { route })?
                .encode_histogram::<NoLabelSet>(*sum_nanos as f64 / 1e9, count, &buckets, None)?;
        }
        Ok(())
    }
}

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

    /// Every pattern seen so far, with its slot.
    fn seen(&self) -> impl Iterator<Item = (usize, &'static str)> + '_ {
        let len = self.len.load(Ordering::Acquire);
        self.patterns[..len]
            .iter()
            .enumerate()
            .filter_map(|(slot, pattern)| pattern.get().map(|pattern| (slot, *pattern)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_holds_it() {
        let bounds: Vec<f64> = bucket_bounds().collect();
        assert_eq!(bounds.len(), BUCKETS);
        for nanos in [
            0,
            1,
            49_999,
            50_000,
            50_001,
            99_999,
            100_000,
            100_001,
            1_000_000,
            26_214_400_000,
            26_214_400_001,
            u64::MAX,
        ] {
            let seconds = nanos as f64 / 1e9;
            let expected = bounds
                .iter()
                .position(|bound| seconds <= *bound * (1.0 + 1e-12))
                .unwrap_or(BUCKETS);
            assert_eq!(bucket_of(nanos), expected, "{nanos} ns");
        }
    }

    #[test]
    fn shards_are_summed_and_rare_statuses_counted() {
        let counts = Arc::new(RequestCounts::new());
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        counts.observe("/publish", 200, Duration::from_micros(70));
                    }
                    counts.observe("/fetch", 418, Duration::from_secs(100));
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let slot = counts.routes.slot("/publish").unwrap();
        let (by_status, buckets, sum_nanos) = counts.total(slot);
        assert_eq!(by_status[0], 300);
        assert_eq!(by_status[1..].iter().sum::<u64>(), 0);
        assert_eq!(buckets[1], 300, "70 µs is in the 100 µs bucket");
        assert_eq!(sum_nanos, 300 * 70_000);
        let fetch = counts.routes.slot("/fetch").unwrap();
        let (by_status, buckets, _) = counts.total(fetch);
        assert_eq!(by_status.iter().sum::<u64>(), 0);
        assert_eq!(buckets[BUCKETS], 3, "+Inf");
        let rare = counts.rare.lock().unwrap();
        assert_eq!(rare.get(&("/fetch", 418)), Some(&3));
    }

    #[test]
    fn a_pattern_keeps_its_slot_and_slots_run_out_without_a_panic() {
        let slots = RouteSlots::default();
        let a = slots.slot("/a").unwrap();
        // The same text from another allocation finds the same slot.
        let leaked: &'static str = String::from("/a").leak();
        assert_eq!(slots.slot(leaked), Some(a));
        for n in 1..ROUTE_SLOTS {
            let pattern: &'static str = format!("/p{n}").leak();
            assert_eq!(slots.slot(pattern), Some(n));
        }
        assert_eq!(slots.slot("/one-too-many"), None);
        assert_eq!(slots.seen().count(), ROUTE_SLOTS);
    }
}
