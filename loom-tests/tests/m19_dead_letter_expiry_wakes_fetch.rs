//! Model 19: a dead-letter move by the expiry sweep wakes a fetch waiting
//! on the dead-letter queue.
//!
//! As model 18, but the last allowed delivery runs out: the timekeeper
//! moves the clock to its deadline and sweeps, and the sweep moves the
//! message to `jobs.dead`. A sweep that wakes the dead-letter queue's
//! fetches before the message is there leaves the fetch asleep beside it:
//! loom reports a deadlock.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_conserved, check, lease_in, msg, new_broker_with, spawn_waiting_fetch_from, Outcomes,
    TTL,
};
use ubroker_engine::{Config, QueueUpdate};

#[test]
fn m19_dead_letter_move_by_expiry_wakes_a_waiting_fetch() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check(
        "m19_dead_letter_move_by_expiry_wakes_a_waiting_fetch",
        || {
            let broker = new_broker_with(Config {
                ttl: TTL,
                max_deliveries: 1,
                ..Config::default()
            });
            broker
                .queue("jobs.dead")
                .put(QueueUpdate::default())
                .unwrap();
            let (delivery, _) = lease_in(&broker, "jobs", "a");

            let (waiter, probe) = spawn_waiting_fetch_from(&broker, "jobs.dead");
            let timekeeper = {
                let broker = Arc::clone(&broker);
                thread::spawn(move || {
                    broker.clock().advance(TTL);
                    broker.expire_due()
                })
            };
            let sweep = timekeeper.join().unwrap();
            assert_eq!(sweep.expired, 1, "{sweep:?}");
            let dead = waiter
                .join()
                .unwrap()
                .expect("the waiting fetch gets the dead-lettered message");
            assert_eq!(dead.body, msg("a"));
            assert_eq!((dead.message_id, dead.attempt), (delivery.message_id, 1));
            let jobs = broker.queue("jobs").stats().unwrap();
            assert_eq!(
                (jobs.dead_lettered, jobs.expired, jobs.ready),
                (1, 0, 0),
                "{jobs:?}"
            );
            OUTCOMES.record(if probe.slept() {
                "woken from sleep"
            } else {
                "found the message without sleeping"
            });
            assert_conserved(&broker, &["a"]);
        },
    );
    OUTCOMES.assert_seen(&["found the message without sleeping", "woken from sleep"]);
}
