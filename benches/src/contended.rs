//! The contended workload: producer and consumer threads pushing a fixed
//! number of messages through one queue of one broker, each message one full
//! cycle (publish, fetch, acknowledge).
//!
//! Shared by the criterion groups `contended` and `oversubscribed`
//! (`benches/engine.rs`) and the `contended_ratio` example, which alternates
//! the two implementations round by round so that a ratio survives a machine
//! whose load drifts.
//!
//! [`full_cycles`] times the whole run; [`oversubscribed`] also pins every
//! thread to the same two CPUs (so 8 threads contend for 2 cores whatever
//! the machine) and records each operation's latency in a histogram: with
//! more runnable threads than cores, a thread preempted while it holds a
//! lock stalls every thread that needs the lock, and that shows in the tail
//! (p99.9), not in the mean.
//!
//! What it must never do: time anything but the cycles. Threads are spawned
//! before the clock starts (they meet at a barrier) and the count of
//! consumed messages is kept off the broker's cache lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::BenchBroker;

/// A counter on its own cache line, so that consumers bumping it do not
/// slow down the broker's own atomics by false sharing.
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

/// What [`oversubscribed`] measured.
pub struct Outcome {
    /// From the start barrier to the last acknowledge.
    pub elapsed: Duration,
    /// Nanoseconds per publish call.
    pub publish: Histogram<u64>,
    /// Nanoseconds per fetch + acknowledge of one message (fetches that
    /// found the queue empty are not counted).
    pub consume: Histogram<u64>,
}

impl Outcome {
    /// Every operation, publishes and fetch + acknowledge cycles together.
    pub fn operations(&self) -> Histogram<u64> {
        let mut all = self.publish.clone();
        all.add(&self.consume).expect("same bounds");
        all
    }
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// Pushes `messages` copies of `body` through `queue` of `broker` with
/// `producers` and `consumers` threads and returns the time from the start
/// barrier to the last acknowledge.
///
/// Producers split the messages evenly and publish as fast as they can (no
/// back-pressure: the queue may grow). Consumers fetch and acknowledge until
/// every message is acknowledged; one that finds the queue empty yields its
/// time slice and retries, the same for every implementation.
pub fn full_cycles<B: BenchBroker>(
    broker: &B,
    queue: &str,
    producers: usize,
    consumers: usize,
    body: Bytes,
    messages: u64,
) -> Duration {
    run(broker, queue, producers, consumers, body, messages, None).elapsed
}

/// [`full_cycles`] with every thread pinned to the same two CPUs (the first
/// two the process may run on; Linux only, elsewhere unpinned) and the
/// latency of every operation recorded.
pub fn oversubscribed<B: BenchBroker>(
    broker: &B,
    queue: &str,
    producers: usize,
    consumers: usize,
    body: Bytes,
    messages: u64,
) -> Outcome {
    run(broker, queue, producers, consumers, body, messages, Some(2))
}

fn run<B: BenchBroker>(
    broker: &B,
    queue: &str,
    producers: usize,
    consumers: usize,
    body: Bytes,
    messages: u64,
    // Pin to this many CPUs and record latencies.
    pin: Option<usize>,
) -> Outcome {
    let cpus = pin.map(affinity::first_cpus);
    let record = pin.is_some();
    let consumed = PaddedCounter(AtomicU64::new(0));
    let start = Barrier::new(producers + consumers + 1);
    let publish = Mutex::new(histogram());
    let consume = Mutex::new(histogram());
    let began = std::thread::scope(|s| {
        for p in 0..producers as u64 {
            let (start, share) = (&start, share(messages, producers as u64, p));
            let (body, cpus, publish) = (body.clone(), &cpus, &publish);
            s.spawn(move || {
                affinity::pin(cpus.as_deref());
                let mut mine = histogram();
                start.wait();
                for _ in 0..share {
                    let t = record.then(Instant::now);
                    broker
                        .publish_to(queue, body.clone(), Duration::ZERO)
                        .expect("open");
                    if let Some(t) = t {
                        mine.saturating_record(t.elapsed().as_nanos() as u64);
                    }
                }
                publish
                    .lock()
                    .expect("no panics")
                    .add(&mine)
                    .expect("same bounds");
            });
        }
        for _ in 0..consumers {
            let (start, consumed, cpus, consume) = (&start, &consumed.0, &cpus, &consume);
            s.spawn(move || {
                affinity::pin(cpus.as_deref());
                let mut latencies = histogram();
                start.wait();
                // Count locally and publish the count only when the queue
                // looks empty: a shared counter bumped per message would be
                // a second contended cache line that both sides pay for.
                let mut mine = 0;
                loop {
                    let t = record.then(Instant::now);
                    match broker.try_fetch_from(queue).expect("open") {
                        Some(delivery) => {
                            broker
                                .acknowledge_in(queue, delivery.id)
                                .expect("live lease");
                            if let Some(t) = t {
                                latencies.saturating_record(t.elapsed().as_nanos() as u64);
                            }
                            mine += 1;
                        }
                        None => {
                            let total = consumed.fetch_add(mine, Ordering::AcqRel) + mine;
                            mine = 0;
                            if total >= messages {
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                }
                consume
                    .lock()
                    .expect("no panics")
                    .add(&latencies)
                    .expect("same bounds");
            });
        }
        start.wait();
        Instant::now()
    });
    // The scope has joined every thread by now; the last to finish is a
    // consumer, which exits only once every message is acknowledged.
    Outcome {
        elapsed: began.elapsed(),
        publish: publish.into_inner().expect("no panics"),
        consume: consume.into_inner().expect("no panics"),
    }
}

/// Messages producer `p` of `producers` publishes, so the shares add up to
/// `messages` exactly.
fn share(messages: u64, producers: u64, p: u64) -> u64 {
    messages / producers + u64::from(p < messages % producers)
}

/// Pinning threads to CPUs (Linux `sched_setaffinity`; a no-op elsewhere).
mod affinity {
    /// The first `n` CPUs this process may run on.
    #[cfg(target_os = "linux")]
    pub(super) fn first_cpus(n: usize) -> Vec<usize> {
        // SAFETY: `set` is a plain bit set, zeroed, and the call writes at
        // most `size_of::<cpu_set_t>()` bytes into it.
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            set
        };
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .take(n)
            .collect()
    }

    /// Restricts the calling thread to `cpus` (all of them, not one each:
    /// the scheduler still moves threads between the two).
    #[cfg(target_os = "linux")]
    pub(super) fn pin(cpus: Option<&[usize]>) {
        let Some(cpus) = cpus.filter(|cpus| !cpus.is_empty()) else {
            return;
        };
        // SAFETY: as above; `pid` 0 is the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            let result = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            assert_eq!(result, 0, "sched_setaffinity to {cpus:?}");
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn first_cpus(_n: usize) -> Vec<usize> {
        Vec::new()
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn pin(_cpus: Option<&[usize]>) {}
}

#[cfg(test)]
mod tests {
    use ubroker_engine::{Broker, Config};

    use super::*;
    use crate::baseline::MutexBroker;

    #[test]
    fn shares_add_up() {
        for (messages, producers) in [(10, 3), (2, 4), (1_000, 1), (0, 2)] {
            let total: u64 = (0..producers).map(|p| share(messages, producers, p)).sum();
            assert_eq!(total, messages);
        }
    }

    fn check<B: BenchBroker>(broker: &B) {
        full_cycles(broker, "q", 2, 3, Bytes::from_static(b"m"), 5_000);
        let outcome = oversubscribed(broker, "q", 3, 2, Bytes::from_static(b"m"), 5_000);
        assert_eq!(outcome.publish.len(), 5_000, "every publish timed");
        assert_eq!(outcome.consume.len(), 5_000, "every consumed message timed");
        let stats = broker.stats();
        assert_eq!((stats.published, stats.acknowledged), (10_000, 10_000));
        assert_eq!(
            (stats.ready, stats.in_flight, stats.queued_bytes),
            (0, 0, 0)
        );
    }

    #[test]
    fn every_message_is_consumed_once() {
        check(&Broker::new(Config::default()));
        check(&MutexBroker::new(Config::default()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinned_threads_run_only_on_the_chosen_cpus() {
        let cpus = affinity::first_cpus(1);
        assert_eq!(cpus.len(), 1);
        std::thread::spawn(move || {
            affinity::pin(Some(&cpus));
            assert_eq!(affinity::first_cpus(4), cpus);
        })
        .join()
        .unwrap();
    }
}
