//! Model 12: the timeout exit of a waiting fetch.
//!
//! A waiting fetch returns `Err(Timeout)` when its timeout future completes
//! first. That exit must lease nothing: a fetch that times out leaves the
//! message ready for the next fetch, and a fetch that returns a message
//! leased it exactly once. The timeout here is a [`Trigger`], a future
//! another thread completes (`SleepProbe` never completes, so with it the
//! timeout branch is never explored), racing a publish.
#![cfg(loom)]

use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, msg, new_broker, Outcomes, Trigger};
use ubroker_engine::Error;

#[test]
fn m12_fetch_timeout_vs_publish() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m12_fetch_timeout_vs_publish", || {
        let broker = new_broker();
        let timeout = Trigger::new();

        let waiter = {
            let broker = Arc::clone(&broker);
            let timeout = timeout.clone();
            thread::spawn(move || block_on(broker.default_queue().fetch(timeout)))
        };
        let timer = {
            let timeout = timeout.clone();
            thread::spawn(move || timeout.fire())
        };
        broker
            .default_queue()
            .publish(msg("a"))
            .expect("the broker is open");
        timer.join().unwrap();
        let fetched = waiter.join().unwrap();

        let stats = broker.stats();
        match &fetched {
            Err(Error::Timeout) => {
                OUTCOMES.record("timed out");
                assert_eq!(
                    (stats.ready, stats.in_flight, stats.delivered),
                    (1, 0, 0),
                    "a fetch that timed out leased the message: {stats:?}"
                );
            }
            Ok(delivery) => {
                OUTCOMES.record(if timeout.polled() {
                    "got the message after waiting"
                } else {
                    "got the message without waiting"
                });
                assert_eq!(delivery.body, msg("a"));
                assert_eq!(
                    (stats.ready, stats.in_flight, stats.delivered),
                    (0, 1, 1),
                    "a fetch that returned the message did not lease it \
                     exactly once: {stats:?}"
                );
            }
            Err(other) => panic!("unexpected fetch error {other:?}"),
        }
        assert_conserved(&broker, &["a"]);
    });
    OUTCOMES.assert_seen(&[
        "got the message after waiting",
        "got the message without waiting",
        "timed out",
    ]);
}
