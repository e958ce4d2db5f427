//! Model 5: fetch racing the expiry sweep.
//!
//! A fetch pops the message, takes a fresh id, reads the clock, inserts the
//! lease and only then queues its deadline for expiry; the sweep pops due
//! deadlines and expires whatever lease is still there. Whatever the
//! interleaving, a lease must be reachable by every sweep that runs after
//! its fetch and its deadline (none is missed), and must expire at most once
//! even with two sweeps racing (none expires twice).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, msg, new_broker, Outcomes, TTL};
use ubroker_engine::{Clock as _, Timestamp};

/// Model 5: one fetch, one thread that advances the clock past the lease's
/// deadline and sweeps, and a second sweep.
#[test]
fn m5_fetch_vs_expiry_sweep() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m5_fetch_vs_expiry_sweep", || {
        let broker = new_broker();
        broker.default_queue().publish(msg("a")).unwrap();
        // Set by the fetcher once its lease is in place with deadline `TTL`
        // (the clock still read zero after the fetch, so the fetch read zero).
        let fetched_due_at_ttl = Arc::new(AtomicBool::new(false));

        let fetcher = {
            let broker = Arc::clone(&broker);
            let flag = Arc::clone(&fetched_due_at_ttl);
            thread::spawn(move || {
                let delivery = broker
                    .default_queue()
                    .try_fetch()
                    .unwrap()
                    .expect("the message is ready and only this thread fetches");
                if broker.clock().now() == Timestamp::ZERO {
                    flag.store(true, Ordering::Release);
                }
                delivery
            })
        };
        let sweeper = {
            let broker = Arc::clone(&broker);
            let flag = Arc::clone(&fetched_due_at_ttl);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                let fetch_done_and_due = flag.load(Ordering::Acquire);
                let sweep = broker.expire_due();
                // With the fetch done before this sweep and its deadline (TTL)
                // not after the sweep's clock (TTL), this sweep expires the
                // lease, unless the second sweep took its agenda hint first
                // and is still on its way to the lease (so it must expire it:
                // checked after the join).
                let left_in_flight = broker.stats().in_flight;
                (sweep.expired, fetch_done_and_due, left_in_flight)
            })
        };
        let second_sweeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.expire_due().expired)
        };
        let delivery = fetcher.join().unwrap();
        let (expired_first, fetch_done_and_due, left_in_flight) = sweeper.join().unwrap();
        let expired_second = second_sweeper.join().unwrap();

        assert_eq!(delivery.body, msg("a"));
        let expired = expired_first + expired_second;
        assert!(expired <= 1, "one lease expired {expired} times");
        if fetch_done_and_due {
            assert_eq!(
                expired, 1,
                "a due lease survived every sweep that ran after its fetch"
            );
        }
        let stats = broker.stats();
        assert_eq!(stats.expired, expired as u64);
        assert_eq!(
            (stats.ready, stats.in_flight),
            (expired, 1 - expired),
            "the message is not in exactly one place: {stats:?}"
        );
        OUTCOMES.record(match (expired_first, expired_second, fetch_done_and_due) {
            (0, 0, _) => "not yet due at either sweep",
            (1, 0, false) => "expired by the sweeper",
            (1, 0, true) => "expired by the sweeper, fetch seen done",
            (0, 1, false) => "expired by the second sweeper",
            (0, 1, true) if left_in_flight == 1 => {
                "fetch seen done, expired by the second sweeper while the sweeper ran"
            }
            (0, 1, true) => "expired by the second sweeper, fetch seen done",
            _ => unreachable!("checked above"),
        });
        // The final sweep inside finds the lease if it is still live: a lease
        // whose expiry entry was lost would stay in flight and fail here.
        assert_conserved(&broker, &["a"]);
    });
    OUTCOMES.assert_seen(&[
        "expired by the second sweeper",
        "expired by the second sweeper, fetch seen done",
        "expired by the sweeper",
        "expired by the sweeper, fetch seen done",
        "fetch seen done, expired by the second sweeper while the sweeper ran",
        "not yet due at either sweep",
    ]);
}
