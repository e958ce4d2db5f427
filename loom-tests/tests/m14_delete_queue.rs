//! Model 14: a queue delete against publish, fetch and acknowledge.
//!
//! `jobs` holds a leased message `a` and a ready message `b` when the race
//! starts. One thread deletes `jobs`, one publishes `c` to it, one
//! acknowledges `a` and then fetches from `jobs`. A delete holds the queue's
//! life-cycle lock for writing while it empties the queue, and every other
//! operation holds it for reading, so each message ends either counted in
//! the delete's return, acknowledged, or held by the queue that a later
//! publish recreates; none lands in the dropped queue (where it would be in
//! no count and unreachable), and the byte budget releases exactly what the
//! delete dropped. An acknowledge that starts after the delete returned
//! fails: the deleted queue's lease ids are invalid.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, lease_in, msg, new_broker, Outcomes};
use ubroker_engine::Error;

#[test]
fn m14_delete_vs_publish_fetch_acknowledge() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m14_delete_vs_publish_fetch_acknowledge", || {
        let broker = new_broker();
        let (leased, _) = lease_in(&broker, "jobs", "a");
        broker.queue("jobs").publish(msg("b")).unwrap();
        // Set (Release) once the delete has returned.
        let deleted = Arc::new(AtomicBool::new(false));

        let deleter = {
            let broker = Arc::clone(&broker);
            let deleted = Arc::clone(&deleted);
            thread::spawn(move || {
                let count = broker.queue("jobs").delete().map(|d| d.messages);
                deleted.store(true, Ordering::Release);
                count
            })
        };
        let publisher = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.queue("jobs").publish(msg("c")))
        };
        let consumer = {
            let broker = Arc::clone(&broker);
            let deleted = Arc::clone(&deleted);
            thread::spawn(move || {
                let after_delete = deleted.load(Ordering::Acquire);
                let acknowledged = broker.queue("jobs").acknowledge(leased.id);
                if after_delete {
                    assert_eq!(
                        acknowledged,
                        Err(Error::InvalidId),
                        "a lease of a deleted queue was acknowledged"
                    );
                }
                let fetched = broker.queue("jobs").try_fetch().unwrap();
                (acknowledged, fetched)
            })
        };
        let count = deleter.join().unwrap().expect("jobs exists");
        publisher.join().unwrap().expect("a publish is accepted");
        let (acknowledged, fetched) = consumer.join().unwrap();

        let stats = broker.stats();
        let held = (stats.ready + stats.in_flight + stats.delayed) as u64;
        let acked = u64::from(acknowledged.is_ok());
        assert_eq!(
            acked + count + held,
            3,
            "every message is acknowledged, counted by the delete, or held by \
             the recreated queue (acknowledged {acked}, deleted {count}): {stats:?}"
        );
        // Everything published before the delete went with the queue (or was
        // acknowledged): only `c` can be held, by the recreated queue.
        let live: &[&str] = if held == 1 { &["c"] } else { &[] };
        OUTCOMES.record(if held == 1 {
            "publish: recreated the queue"
        } else {
            "publish: to the deleted queue, counted by the delete"
        });
        OUTCOMES.record(if acknowledged.is_ok() {
            "acknowledge: before the delete"
        } else {
            "acknowledge: failed, the queue was deleted"
        });
        OUTCOMES.record(match &fetched {
            None => "fetch: nothing",
            Some(delivery) if delivery.body == msg("b") => "fetch: b, from the deleted queue",
            Some(delivery) => {
                assert_eq!(delivery.body, msg("c"));
                if held == 1 {
                    "fetch: c, from the recreated queue"
                } else {
                    "fetch: c, from the deleted queue"
                }
            }
        });
        assert_conserved(&broker, live);
    });
    OUTCOMES.assert_seen(&[
        "acknowledge: before the delete",
        "acknowledge: failed, the queue was deleted",
        "fetch: b, from the deleted queue",
        "fetch: c, from the recreated queue",
        "fetch: nothing",
        "publish: recreated the queue",
        "publish: to the deleted queue, counted by the delete",
    ]);
}
