//! Model 11b: an expiry against a waiting fetch.
//!
//! Like 11a, but the lease runs out instead: the timekeeper moves the clock
//! past its deadline and sweeps, which puts the message back at the tail and
//! then wakes one waiter. An expiry that notifies before it pushes leaves the
//! fetch asleep beside a ready message, which loom reports as a deadlock.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_conserved, check, lease, msg, new_broker, spawn_waiting_fetch, Outcomes, TTL,
};

#[test]
fn m11b_expiry_wakes_a_waiting_fetch() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m11b_expiry_wakes_a_waiting_fetch", || {
        let broker = new_broker();
        let (first, _) = lease(&broker, "a");

        let (waiter, probe) = spawn_waiting_fetch(&broker);
        let timekeeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let sweep = timekeeper.join().unwrap();
        let delivery = waiter
            .join()
            .unwrap()
            .expect("the waiting fetch gets the expired message");

        assert_eq!(delivery.body, msg("a"));
        assert_ne!(delivery.id, first.id, "a delivery id was reused");
        assert_eq!(
            (delivery.message_id, delivery.attempt),
            (first.message_id, 2)
        );
        let stats = broker.stats();
        // The fetch reads the clock after it pops, so its new lease is
        // never born past its deadline (with a clock read before the pop it
        // could be: see the note in `lib.rs`); one expiry, not two.
        assert_eq!(sweep.expired, 1, "a lease was born expired: {sweep:?}");
        assert_eq!(
            (stats.expired, stats.delivered, stats.in_flight),
            (1, 2, 1),
            "{stats:?}"
        );
        OUTCOMES.record(if probe.slept() {
            "woken from sleep"
        } else {
            "found the message without sleeping"
        });
        assert_conserved(&broker, &["a"]);
    });
    OUTCOMES.assert_seen(&["found the message without sleeping", "woken from sleep"]);
}
