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
use loom_tests::{assert_conserved, check, lease, new_broker, Outcomes};
use ubroker_engine::Error;

/// Model 3: acknowledge races requeue of the same delivery, before its
/// deadline. Exactly one wins; the other sees `InvalidId`.
#[test]
fn m3_acknowledge_vs_requeue() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m3_acknowledge_vs_requeue", || {
        let broker = new_broker();
        let (delivery, _) = lease(&broker, "a");

        let acker = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.default_queue().acknowledge(delivery.id))
        };
        let requeuer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.default_queue().requeue(delivery.id))
        };
        let acked = acker.join().unwrap();
        let requeued = requeuer.join().unwrap();

        match (acked, requeued) {
            (Ok(()), Err(Error::InvalidId)) => {
                OUTCOMES.record("acknowledged");
                assert_conserved(&broker, &[]);
            }
            (Err(Error::InvalidId), Ok(())) => {
                OUTCOMES.record("requeued");
                let stats = broker.stats();
                assert_eq!((stats.ready, stats.in_flight), (1, 0));
                assert_conserved(&broker, &["a"]);
            }
            other => panic!("not exactly one winner: (acknowledge, requeue) = {other:?}"),
        }
    });
    OUTCOMES.assert_seen(&["acknowledged", "requeued"]);
}
