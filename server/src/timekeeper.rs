//! The background tasks that keep time and memory: [`run`] drives lease
//! expiry and delayed messages, [`reclaim`] gives memory back once the
//! broker drains or connections close in bulk.
//!
//! # Timekeeping without polling
//!
//! [`run`] asks the engine to handle everything due
//! ([`Broker::expire_due`]), then sleeps until the next due time the engine
//! reports, or until the engine signals that something earlier was scheduled
//! ([`Broker::due_changed`]), whichever comes first. An idle broker's
//! timekeeper sleeps until woken; a busy one wakes about once per lease TTL
//! (when the oldest outstanding lease would run out) plus once per delayed
//! message due time. Expired and delayed messages are back in their queue
//! within about a millisecond (tokio's timer resolution) of their due time.
//!
//! Durations come from the broker's clock, so with [`TokioClock`] under
//! tokio's paused test clock, `tokio::time::advance` moves both together
//! and tests of time never sleep.
//!
//! # Giving memory back
//!
//! glibc's allocator keeps freed memory in its per-thread arenas; after a
//! burst of a million messages the process would stay at its peak RSS.
//! When the engine reports that it holds nothing ([`Broker::drained`]),
//! [`reclaim`] waits [`RECLAIM_DELAY`] (so a queue that empties and fills
//! many times a second is not trimmed each time), and if the broker is still
//! empty, shrinks the lease tables and calls the [`Trim`] hook (the binary
//! passes glibc's `malloc_trim`; an embedding process chooses its own). Connections'
//! buffers (a partial head may hold tens of kilobytes) are freed when they
//! close, busy broker or not: when [`BULK_CLOSE`] connections have closed
//! since the peak, the [`ConnectionGauge`] wakes [`reclaim`] to trim too.
//! Trims are at least [`MIN_TRIM_INTERVAL`] apart: `malloc_trim` walks the
//! heap.
//!
//! A broker rarely drains to exactly nothing (a consumer that stops leaves
//! a few leases behind), so a third trigger looks at what it holds once a
//! [`SHRINK_CHECK`]: a trim follows when the bytes held have fallen by
//! [`SHRINK_BYTES`] and to a quarter of their high since the last trim, or
//! when [`SHRINK_MESSAGES`] were published since the last trim and none in
//! the last check (a burst that came and went between two checks). One
//! relaxed read of the engine's totals a second; a trim only after a fall.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use ubroker_engine::{Broker, Clock, Timestamp};

/// How long the broker must stay empty before memory is given back.
pub const RECLAIM_DELAY: Duration = Duration::from_millis(250);

/// The least time between two trims.
pub const MIN_TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// How often [`reclaim`] reads how much the broker holds.
pub const SHRINK_CHECK: Duration = Duration::from_secs(1);

/// A fall of the bytes held worth a trim (with a fall to a quarter).
pub const SHRINK_BYTES: u64 = 4 << 20;

/// Publishes since the last trim that are worth one once they stop.
pub const SHRINK_MESSAGES: u64 = 1 << 16;

/// How far the number of open connections must fall below its peak since
/// the last trim to count as closing in bulk: a few hundred connections'
/// buffers are worth a trim, and a steady churn never triggers one.
pub const BULK_CLOSE: usize = 256;

/// Open connections, and the signal that many have closed since the last
/// trim. The accept loop calls [`opened`](Self::opened) and each
/// connection's task [`closed`](Self::closed).
#[derive(Debug, Default)]
pub struct ConnectionGauge {
    open: AtomicUsize,
    /// The most open at once since the last trim.
    peak: AtomicUsize,
    bulk_closed: Notify,
}

impl ConnectionGauge {
    pub fn opened(&self) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(open, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        let open = self.open.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        if self.peak.load(Ordering::Relaxed).saturating_sub(open) >= BULK_CLOSE {
            // A stored permit if `reclaim` is busy: the event is kept.
            self.bulk_closed.notify_one();
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn trimmed(&self) {
        self.peak.store(self.open(), Ordering::Relaxed);
    }
}

/// The engine's clock on tokio's time: `tokio::time::Instant`, which is
/// `std::time::Instant` in a normal build and the paused, manually advanced
/// clock in tests that use `start_paused`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.origin.elapsed().as_nanos();
        Timestamp::from_nanos(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

/// Keeps time until `shutting_down` becomes `true` (or its sender is
/// dropped).
pub async fn run<C: Clock>(broker: Arc<Broker<C>>, mut shutting_down: watch::Receiver<bool>) {
    loop {
        let sweep = broker.expire_due();
        if sweep.expired > 0 || sweep.came_due > 0 {
            tracing::debug!(
                expired = sweep.expired,
                came_due = sweep.came_due,
                "timekeeping"
            );
        }
        let sleep = sweep
            .next_deadline
            .map(|due| due.saturating_duration_since(broker.clock().now()));
        tokio::select! {
            () = sleep_or_forever(sleep) => {}
            () = broker.due_changed() => {}
            _ = shutting_down.wait_for(|down| *down) => return,
        }
    }
}

async fn sleep_or_forever(sleep: Option<Duration>) {
    match sleep {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// What gives freed memory back to the operating system (`malloc_trim` in
/// the binary).
pub type Trim = fn();

/// Gives memory back each time the broker drains or connections close in
/// bulk, until `shutting_down`. Without a `trim`, only the lease tables are
/// compacted.
pub async fn reclaim<C: Clock>(
    broker: Arc<Broker<C>>,
    gauge: Arc<ConnectionGauge>,
    trim: Option<Trim>,
    mut shutting_down: watch::Receiver<bool>,
) {
    let mut last_trim: Option<tokio::time::Instant> = None;
    let mut shrink = Shrink::new(&broker.stats());
    let mut check = tokio::time::interval(SHRINK_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (bulk_close, shrunk) = tokio::select! {
            () = broker.drained() => (false, false),
            () = gauge.bulk_closed.notified() => (true, false),
            _ = check.tick() => {
                if !shrink.observe(&broker.stats()) {
                    continue;
                }
                (false, true)
            }
            _ = shutting_down.wait_for(|down| *down) => return,
        };
        let since = last_trim.map_or(MIN_TRIM_INTERVAL, |at| at.elapsed());
        let settle = if shrunk {
            Duration::ZERO
        } else {
            RECLAIM_DELAY
        };
        tokio::time::sleep(settle.max(MIN_TRIM_INTERVAL.saturating_sub(since))).await;
        let stats = broker.stats();
        let empty = stats.queued_bytes == 0;
        if empty {
            broker.compact();
        }
        if empty || bulk_close || shrunk {
            shrink = Shrink::new(&stats);
            if let Some(trim) = trim {
                trim();
            }
            gauge.trimmed();
            last_trim = Some(tokio::time::Instant::now());
            tracing::debug!(empty, bulk_close, shrunk, "memory given back");
        }
    }
}

/// The third trigger's memory: what the broker held and had published at
/// the last trim, and the high since.
#[derive(Debug, Clone, Copy)]
struct Shrink {
    high: u64,
    published_at_trim: u64,
    published_at_check: u64,
}

impl Shrink {
    fn new(stats: &ubroker_engine::Stats) -> Self {
        Shrink {
            high: stats.queued_bytes,
            published_at_trim: stats.published,
            published_at_check: stats.published,
        }
    }

    /// Takes one check's reading; `true` if it calls for a trim.
    fn observe(&mut self, stats: &ubroker_engine::Stats) -> bool {
        let held = stats.queued_bytes;
        self.high = self.high.max(held);
        let quiet = stats.published == self.published_at_check;
        self.published_at_check = stats.published;
        let fell = self.high >= held.saturating_mul(4).saturating_add(SHRINK_BYTES);
        let burst_over = quiet && stats.published - self.published_at_trim >= SHRINK_MESSAGES;
        fell || burst_over
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ubroker_engine::Config as EngineConfig;

    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn broker() -> Arc<Broker<TokioClock>> {
        Arc::new(Broker::with_clock(
            EngineConfig {
                ttl: TTL,
                ..EngineConfig::default()
            },
            TokioClock::new(),
        ))
    }

    /// Lets spawned tasks run without moving the paused clock.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_comes_back_at_its_deadline_not_before() {
        let b = broker();
        let (_tx, rx) = watch::channel(false);
        tokio::spawn(run(b.clone(), rx));
        b.default_queue().publish(Bytes::from_static(b"a")).unwrap();
        let first = b.default_queue().try_fetch().unwrap().unwrap();
        settle().await;
        tokio::time::advance(TTL - Duration::from_millis(2)).await;
        settle().await;
        assert_eq!(b.stats().in_flight, 1, "not before the deadline");
        tokio::time::advance(Duration::from_millis(3)).await;
        settle().await;
        let stats = b.stats();
        assert_eq!((stats.in_flight, stats.ready, stats.expired), (0, 1, 1));
        let again = b.default_queue().try_fetch().unwrap().unwrap();
        assert_ne!(again.id, first.id);
        assert_eq!(again.attempt, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_sleeping_timekeeper() {
        let b = broker();
        let (_tx, rx) = watch::channel(false);
        tokio::spawn(run(b.clone(), rx));
        // The timekeeper is asleep until a delayed message an hour away...
        b.queue("q")
            .publish_after(Bytes::from_static(b"late"), Duration::from_secs(3600))
            .unwrap();
        settle().await;
        // ...when one due in 5 ms appears: it must wake for it.
        b.queue("q")
            .publish_after(Bytes::from_static(b"soon"), Duration::from_millis(5))
            .unwrap();
        settle().await;
        tokio::time::advance(Duration::from_millis(6)).await;
        settle().await;
        let d = b
            .queue("q")
            .try_fetch()
            .unwrap()
            .expect("came due after 5 ms");
        assert_eq!(d.body, Bytes::from_static(b"soon"));
        assert_eq!(b.queue("q").info().unwrap().delayed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timekeeper_does_not_wake() {
        let b = broker();
        let (_tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(b.clone(), rx));
        settle().await;
        // A year passes with nothing scheduled: the task stays parked (a
        // polling loop would have run its sweep millions of times, and with
        // a paused clock, advancing would have to fire each of its sleeps).
        let before = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
        settle().await;
        assert!(!task.is_finished());
        assert_eq!(before.elapsed(), Duration::from_secs(365 * 24 * 3600));
        // And it still answers: a lease scheduled now expires on time.
        b.default_queue().publish(Bytes::from_static(b"a")).unwrap();
        b.default_queue().try_fetch().unwrap().unwrap();
        settle().await;
        tokio::time::advance(TTL).await;
        settle().await;
        assert_eq!(b.stats().expired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timekeeper_stops_at_shutdown() {
        let b = broker();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(b, rx));
        settle().await;
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stopped")
            .unwrap();
    }

    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    fn count_trim() {
        TRIMS.fetch_add(1, Ordering::Relaxed);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_given_back_once_only_a_few_messages_are_left() {
        let b = broker();
        let (_tx, rx) = watch::channel(false);
        tokio::spawn(reclaim(
            b.clone(),
            Arc::new(ConnectionGauge::default()),
            Some(count_trim),
            rx,
        ));
        settle().await;
        let body = Bytes::from(vec![b'x'; 1024]);
        for _ in 0..6000 {
            b.default_queue().publish(body.clone()).unwrap();
        }
        // Seen at its high by a check.
        tokio::time::advance(SHRINK_CHECK).await;
        settle().await;
        let before = TRIMS.load(Ordering::Relaxed);
        // Consumed, all but three left in flight: never empty.
        for _ in 0..6000 - 3 {
            let d = b.default_queue().try_fetch().unwrap().unwrap();
            b.default_queue().acknowledge(d.id).unwrap();
        }
        for _ in 0..3 {
            b.default_queue().try_fetch().unwrap().unwrap();
        }
        for _ in 0..3 {
            tokio::time::advance(SHRINK_CHECK).await;
            settle().await;
        }
        assert!(b.stats().queued_bytes > 0);
        assert_eq!(
            TRIMS.load(Ordering::Relaxed),
            before + 1,
            "one trim after the fall"
        );
        // Nothing more falls: no more trims.
        for _ in 0..5 {
            tokio::time::advance(SHRINK_CHECK).await;
            settle().await;
        }
        assert_eq!(TRIMS.load(Ordering::Relaxed), before + 1);
    }
}
