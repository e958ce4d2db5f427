//! Model 11a: a requeue against a waiting fetch.
//!
//! Every producer of ready messages, not only publish, must push first and
//! notify after (`Queue::make_ready`). Here the only message is leased when
//! the fetch starts waiting, and its consumer requeues it: the waiting fetch
//! must get it again, under a new id. A requeue that notifies before it
//! pushes leaves the fetch asleep beside a ready message, which loom
//! reports as a deadlock.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, lease, msg, new_broker, spawn_waiting_fetch, Outcomes};

#[test]
fn m11a_requeue_wakes_a_waiting_fetch() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m11a_requeue_wakes_a_waiting_fetch", || {
        let broker = new_broker();
        let (first, _) = lease(&broker, "a");

        let (waiter, probe) = spawn_waiting_fetch(&broker);
        let requeuer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.default_queue().requeue(first.id))
        };
        assert_eq!(requeuer.join().unwrap(), Ok(()));
        let delivery = waiter
            .join()
            .unwrap()
            .expect("the waiting fetch gets the requeued message");

        assert_eq!(delivery.body, msg("a"));
        assert_ne!(delivery.id, first.id, "a delivery id was reused");
        assert_eq!(
            (delivery.message_id, delivery.attempt),
            (first.message_id, 2)
        );
        let stats = broker.stats();
        assert_eq!(
            (stats.requeued, stats.delivered, stats.in_flight),
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
