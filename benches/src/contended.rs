//! The contended workload: producer and consumer threads pushing a fixed
//! number of messages through one broker, each message one full cycle
//! (publish, fetch, acknowledge).
//!
//! Shared by the criterion group `contended` (`benches/engine.rs`) and the
//! `contended_ratio` example, which alternates the two implementations
//! round by round so that a ratio survives a machine whose load drifts.
//!
//! What it must never do: time anything but the cycles. Threads are spawned
//! before the clock starts (they meet at a barrier) and the count of
//! consumed messages is kept off the broker's cache lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::BenchBroker;

/// A counter on its own cache line, so that consumers bumping it do not
/// slow down the broker's own atomics by false sharing.
#[repr(align(128))]
struct PaddedCounter(AtomicU64);

/// Pushes `messages` copies of `body` through `broker` with `producers` and
/// `consumers` threads and returns the time from the start barrier to the
/// last acknowledge.
///
/// Producers split the messages evenly and publish as fast as they can (no
/// back-pressure: the queue may grow). Consumers fetch and acknowledge until
/// every message is acknowledged; one that finds the queue empty yields its
/// time slice and retries, the same for every implementation.
pub fn full_cycles<B: BenchBroker>(
    broker: &B,
    producers: usize,
    consumers: usize,
    body: Bytes,
    messages: u64,
) -> Duration {
    let consumed = PaddedCounter(AtomicU64::new(0));
    let start = Barrier::new(producers + consumers + 1);
    let began = std::thread::scope(|s| {
        for p in 0..producers as u64 {
            let (start, share) = (&start, share(messages, producers as u64, p));
            let body = body.clone();
            s.spawn(move || {
                start.wait();
                for _ in 0..share {
                    broker.publish(body.clone()).expect("open");
                }
            });
        }
        for _ in 0..consumers {
            let (start, consumed) = (&start, &consumed.0);
            s.spawn(move || {
                start.wait();
                // Count locally and publish the count only when the queue
                // looks empty: a shared counter bumped per message would be
                // a second contended cache line that both sides pay for.
                let mut mine = 0;
                loop {
                    match broker.try_fetch().expect("open") {
                        Some(delivery) => {
                            broker.acknowledge(delivery.id).expect("live lease");
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
            });
        }
        start.wait();
        Instant::now()
    });
    // The scope has joined every thread by now; the last to finish is a
    // consumer, which exits only once every message is acknowledged.
    began.elapsed()
}

/// Messages producer `p` of `producers` publishes, so the shares add up to
/// `messages` exactly.
fn share(messages: u64, producers: u64, p: u64) -> u64 {
    messages / producers + u64::from(p < messages % producers)
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
        full_cycles(broker, 2, 3, Bytes::from_static(b"m"), 5_000);
        let stats = broker.stats();
        assert_eq!((stats.published, stats.acknowledged), (5_000, 5_000));
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
}
