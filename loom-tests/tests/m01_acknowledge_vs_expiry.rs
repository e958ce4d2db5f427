//! Who settles a delivery (models 1 to 4 race the three settlements).
//!
//! Acknowledge, requeue and expiry all settle a delivery through one atomic
//! `remove_if` on the lease table, with the deadline test inside it. These
//! models race them two at a time on one lease, taken at time zero (so its
//! deadline is one `TTL`), and check that exactly one wins, that the loser
//! sees `InvalidId`, that no consumer settles a lease whose deadline it has
//! already seen pass, and that the message ends up in exactly one place.
//!
//! One model per file: each file is its own test binary, so a model that
//! fails (or deadlocks, which aborts the binary) cannot hide the others.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_conserved, check, lease, new_broker, settle_checking_deadline, Outcomes, TTL,
};
use ubroker_engine::Error;

/// Model 1: acknowledge races expiry (clock advance then sweep) on one
/// lease. Exactly one wins.
#[test]
fn m1_acknowledge_vs_expiry() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m1_acknowledge_vs_expiry", || {
        let broker = new_broker();
        let (delivery, deadline) = lease(&broker, "a");

        let consumer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                settle_checking_deadline(&broker, deadline, || {
                    broker.default_queue().acknowledge(delivery.id)
                })
            })
        };
        let sweeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let acked = consumer.join().unwrap();
        let sweep = sweeper.join().unwrap();

        match (acked, sweep.expired) {
            (Ok(()), 0) => {
                OUTCOMES.record("acknowledged");
                assert_conserved(&broker, &[]);
            }
            (Err(Error::InvalidId), 1) => {
                OUTCOMES.record("expired");
                let stats = broker.stats();
                assert_eq!((stats.ready, stats.in_flight), (1, 0));
                assert_conserved(&broker, &["a"]);
            }
            other => panic!("not exactly one winner: (acknowledge, expired) = {other:?}"),
        }
    });
    OUTCOMES.assert_seen(&["acknowledged", "expired"]);
}
