//! Model 9: touch against expiry against acknowledge, on one lease.
//!
//! Touch moves a lease's deadline with `update_if` on the lease table, with
//! the deadline test (`now < deadline`) inside it and the timer entry moved
//! under the same lock; expiry removes the lease with `remove_if(deadline
//! <= now)`. So exactly one of them wins: a touch that wins extends the
//! lease (the sweep at the old deadline leaves it, and a later acknowledge
//! succeeds), and after an expiry that wins the touch fails.
//!
//! A consumer touches its lease (taken at time zero, deadline `TTL`) by
//! `2 * TTL` and then acknowledges it, while the timekeeper moves the clock
//! to `TTL` and sweeps.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_conserved, check, lease, new_broker, settle_checking_deadline, Outcomes, TTL,
};
use ubroker_engine::Error;

#[test]
fn m9_touch_then_acknowledge_vs_expiry() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m9_touch_then_acknowledge_vs_expiry", || {
        let broker = new_broker();
        let (delivery, deadline) = lease(&broker, "a");

        let consumer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                // A consumer that saw the deadline pass cannot touch.
                let touched = settle_checking_deadline(&broker, deadline, || {
                    broker.queue("default").touch(delivery.id, Some(2 * TTL))
                });
                let acknowledged = broker.default_queue().acknowledge(delivery.id);
                if touched.is_ok() {
                    // The clock is at most `TTL` now: only the old deadline
                    // has passed, so a touch that won must have extended it.
                    assert_eq!(
                        acknowledged,
                        Ok(()),
                        "a touch succeeded but did not extend the lease"
                    );
                }
                (touched, acknowledged)
            })
        };
        let sweeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let (touched, acknowledged) = consumer.join().unwrap();
        let sweep = sweeper.join().unwrap();

        match (touched, acknowledged, sweep.expired) {
            (Ok(()), Ok(()), 0) => {
                OUTCOMES.record("touched, then acknowledged");
                assert_conserved(&broker, &[]);
            }
            (Err(Error::InvalidId), Err(Error::InvalidId), 1) => {
                OUTCOMES.record("expired; the touch and the acknowledge failed");
                let stats = broker.stats();
                assert_eq!(
                    (stats.ready, stats.in_flight, stats.expired),
                    (1, 0, 1),
                    "{stats:?}"
                );
                assert_conserved(&broker, &["a"]);
            }
            other => panic!("not exactly one winner: (touch, acknowledge, expired) = {other:?}"),
        }
    });
    OUTCOMES.assert_seen(&[
        "expired; the touch and the acknowledge failed",
        "touched, then acknowledged",
    ]);
}
