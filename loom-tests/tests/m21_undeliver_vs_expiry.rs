//! Model 21: a give-back (`undeliver_batch`, a replicated fetch whose
//! client left before its answer) races the expiry of the same lease.
//!
//! Both settle through the lease table's atomic `remove_if`, so exactly one
//! wins: the give-back returns the message with its attempt uncounted (the
//! next delivery is attempt 1), the expiry with it counted (attempt 2). The
//! message is in the ready queue exactly once either way.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, lease, new_broker, Outcomes, TTL};
use ubroker_engine::Settled;

#[test]
fn m21_undeliver_vs_expiry() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m21_undeliver_vs_expiry", || {
        let broker = new_broker();
        let (delivery, _deadline) = lease(&broker, "a");

        let giver = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.default_queue().undeliver_batch(&[delivery.id]))
        };
        let sweeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let given = giver.join().unwrap().unwrap();
        let sweep = sweeper.join().unwrap();

        let attempt = match (given.as_slice(), sweep.expired) {
            ([Settled::Ok], 0) => {
                OUTCOMES.record("given back");
                1
            }
            ([Settled::Invalid], 1) => {
                OUTCOMES.record("expired");
                2
            }
            other => panic!("not exactly one winner: (give-back, expired) = {other:?}"),
        };
        let stats = broker.stats();
        assert_eq!(
            (stats.ready, stats.in_flight, stats.requeued + stats.expired),
            (1, 0, 1),
            "the message is not in the ready queue exactly once: {stats:?}"
        );
        let again = broker
            .default_queue()
            .try_fetch()
            .unwrap()
            .expect("the message is ready");
        assert_eq!(
            again.attempt, attempt,
            "the attempt count does not match the winner"
        );
        // Leased again: the final sweep puts it back, and the drain finds it
        // once.
        assert_conserved(&broker, &["a"]);
    });
    OUTCOMES.assert_seen(&["expired", "given back"]);
}
