//! Model 18: a dead-letter move by requeue wakes a fetch waiting on the
//! dead-letter queue.
//!
//! With `max_deliveries` 1, `jobs.dead` is created first (so its creation
//! wakes nobody), one thread waits in `fetch_from("jobs.dead", ..)`, and
//! another requeues the last allowed delivery of a `jobs` message, which
//! moves it to `jobs.dead`. A move that wakes the dead-letter queue's
//! fetches before the message is there leaves the fetch asleep beside it:
//! loom reports a deadlock. Model 13 has no such waiter, and the engine
//! test of this path polls its futures on one thread, where waking before
//! or after the push looks the same.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_conserved, check, lease_in, msg, new_broker_with, spawn_waiting_fetch_from, Outcomes,
    TTL,
};
use ubroker_engine::{Config, QueueUpdate};

#[test]
fn m18_dead_letter_move_by_requeue_wakes_a_waiting_fetch() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check(
        "m18_dead_letter_move_by_requeue_wakes_a_waiting_fetch",
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
            let consumer = {
                let broker = Arc::clone(&broker);
                thread::spawn(move || broker.queue("jobs").requeue(delivery.id))
            };
            assert_eq!(consumer.join().unwrap(), Ok(()));
            let dead = waiter
                .join()
                .unwrap()
                .expect("the waiting fetch gets the dead-lettered message");
            assert_eq!(dead.body, msg("a"));
            assert_eq!((dead.message_id, dead.attempt), (delivery.message_id, 1));
            assert_eq!(
                dead.dead_letter.as_ref().map(|q| q.as_str()),
                Some("jobs"),
                "the delivery names its origin"
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
