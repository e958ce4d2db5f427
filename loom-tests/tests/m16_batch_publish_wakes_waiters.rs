//! Model 16: one batch publish against two waiting fetches.
//!
//! A batch of two joins the tail with one push and then wakes as many
//! waiters in one pass (`WaitList::notify_many`). Two fetches wait: one a
//! batch fetch of at most one, one a single fetch. Each must get one of the
//! two messages, whatever the interleaving with their registrations and
//! re-checks. A wake-up pass that woke fewer waiters than messages, or that
//! ran before the push, leaves a fetch asleep beside a ready message, which
//! loom reports as a deadlock.
//!
//! Three threads that each register, re-check and sleep make this the
//! largest model: with the suite's 3 preemptions it took 2.8 million
//! interleavings and 9 minutes, so it runs with at most 2 (`check_bounded`).
//! Both seeded bugs below are found within that bound.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_conserved, check_bounded, msg, new_broker, spawn_waiting_fetch, Outcomes, SleepProbe,
};
use ubroker_engine::{NewMessage, QueueUpdate};

#[test]
fn m16_batch_publish_wakes_waiters() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check_bounded("m16_batch_publish_wakes_waiters", Some(2), || {
        let broker = new_broker();
        // The queue exists: its creation would wake every waiter by itself.
        broker.queue("default").put(QueueUpdate::default()).unwrap();

        let (single, single_probe) = spawn_waiting_fetch(&broker);
        let batch_probe = SleepProbe::new();
        let batcher = {
            let broker = Arc::clone(&broker);
            let probe = batch_probe.clone();
            thread::spawn(move || {
                loom::future::block_on(broker.queue("default").fetch_batch(1, usize::MAX, probe))
            })
        };
        let publisher = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                let batch = ["a", "b"]
                    .iter()
                    .map(|body| NewMessage {
                        body: msg(body),
                        delay: Duration::ZERO,
                    })
                    .collect();
                broker.queue("default").publish_batch(batch)
            })
        };
        publisher.join().unwrap().unwrap();
        let single = single.join().unwrap().expect("the single fetch gets one");
        let batch = batcher.join().unwrap().expect("the batch fetch gets one");

        assert_eq!(batch.len(), 1, "max 1");
        let mut bodies = vec![single.body.clone(), batch[0].body.clone()];
        bodies.sort();
        assert_eq!(bodies, [msg("a"), msg("b")]);
        OUTCOMES.record(match (single_probe.slept(), batch_probe.slept()) {
            (true, true) => "both woken from sleep",
            (true, false) => "the single fetch woken from sleep",
            (false, true) => "the batch fetch woken from sleep",
            (false, false) => "neither slept",
        });
        assert_conserved(&broker, &["a", "b"]);
    });
    OUTCOMES.assert_seen(&[
        "both woken from sleep",
        "neither slept",
        "the batch fetch woken from sleep",
        "the single fetch woken from sleep",
    ]);
}
