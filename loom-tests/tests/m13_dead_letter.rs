//! Model 13: a dead-letter move.
//!
//! With `max_deliveries` 1, the first delivery that ends without an
//! acknowledge moves the message to the tail of `<queue>.dead` (created on
//! the way) instead of back to its queue. Here the consumer requeues its
//! lease while the timekeeper lets it expire: exactly one of them ends the
//! delivery, and either way the message ends in exactly one place, ready in
//! `jobs.dead` (not in `jobs`, not twice), carrying its origin, with every
//! queue's counters keeping the identity `published = acknowledged +
//! dead_lettered + ready + in_flight + delayed` (a dead-letter move counts
//! in the source's `dead_lettered`, not its `requeued` or `expired`).
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_conserved, check, lease_in, msg, new_broker_with, settle_checking_deadline, Outcomes,
    TTL,
};
use ubroker_engine::{Config, Error};

#[test]
fn m13_dead_letter_move_requeue_vs_expiry() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m13_dead_letter_move_requeue_vs_expiry", || {
        let broker = new_broker_with(Config {
            ttl: TTL,
            max_deliveries: 1,
            ..Config::default()
        });
        let (delivery, deadline) = lease_in(&broker, "jobs", "a");
        assert_eq!(delivery.attempt, 1);

        let consumer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                settle_checking_deadline(&broker, deadline, || {
                    broker.queue("jobs").requeue(delivery.id)
                })
            })
        };
        let timekeeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let requeued = consumer.join().unwrap();
        let sweep = timekeeper.join().unwrap();

        match (requeued, sweep.expired) {
            (Ok(()), 0) => OUTCOMES.record("requeue moved it"),
            (Err(Error::InvalidId), 1) => OUTCOMES.record("expiry moved it"),
            other => panic!("not exactly one winner: (requeue, expired) = {other:?}"),
        }
        let jobs = broker.queue("jobs").stats().unwrap();
        assert_eq!(
            (jobs.ready, jobs.in_flight, jobs.delayed, jobs.dead_lettered),
            (0, 0, 0, 1),
            "the message is not out of its source queue exactly once: {jobs:?}"
        );
        assert_eq!(
            (jobs.requeued, jobs.expired),
            (0, 0),
            "a dead-letter move counted as a requeue or an expiry: {jobs:?}"
        );
        let dead = broker.queue("jobs.dead").stats().unwrap();
        assert_eq!(
            (dead.ready, dead.published),
            (1, 1),
            "the message is not in the dead-letter queue exactly once: {dead:?}"
        );
        let names: Vec<String> = broker
            .all_queue_stats()
            .into_iter()
            .map(|(name, _)| name.as_str().to_owned())
            .collect();
        assert_eq!(names, ["default", "jobs", "jobs.dead"]);

        let dead_letter = broker
            .queue("jobs.dead")
            .try_fetch()
            .unwrap()
            .expect("the dead letter is ready");
        assert_eq!(dead_letter.body, msg("a"));
        assert_eq!(dead_letter.message_id, delivery.message_id);
        assert_eq!(dead_letter.attempt, 1, "attempts count afresh");
        assert_eq!(
            dead_letter.dead_letter.as_ref().map(|q| q.as_str()),
            Some("jobs")
        );
        // Leased in `jobs.dead` (unlimited deliveries): the final sweep puts
        // it back there, and the drain finds it once.
        assert_conserved(&broker, &["a"]);
    });
    OUTCOMES.assert_seen(&["expiry moved it", "requeue moved it"]);
}
