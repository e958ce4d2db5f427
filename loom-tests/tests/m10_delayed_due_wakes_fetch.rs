//! Model 10: a delayed message coming due against a waiting fetch.
//!
//! A message published with a delay is held by its queue's timer. The
//! timekeeper's sweep, once the clock has passed the delay, takes it out of
//! the timer, pushes it at the tail of the ready queue and only then wakes
//! one waiter. A fetch waiting meanwhile must get it: a sweep that notified
//! before pushing (or not at all) leaves the fetch asleep beside a ready
//! message, which loom reports as a deadlock.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, msg, new_broker, spawn_waiting_fetch, Outcomes, TTL};

#[test]
fn m10_delayed_message_coming_due_wakes_a_waiting_fetch() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check(
        "m10_delayed_message_coming_due_wakes_a_waiting_fetch",
        || {
            let broker = new_broker();
            broker
                .queue("default")
                .publish_after(msg("a"), TTL)
                .expect("a model broker accepts a publish");
            assert_eq!(broker.stats().delayed, 1);

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
                .expect("the waiting fetch gets the message that came due");

            assert_eq!(delivery.body, msg("a"));
            assert_eq!(delivery.attempt, 1);
            assert_eq!(sweep.came_due, 1, "{sweep:?}");
            let stats = broker.stats();
            // The fetch reads the clock after it pops, so its lease is never
            // born past its deadline (with a clock read before the pop it
            // could be: see the note in `lib.rs`); the sweep expires nothing.
            assert_eq!(sweep.expired, 0, "a lease was born expired: {sweep:?}");
            assert_eq!(
                (stats.ready, stats.in_flight, stats.delayed, stats.delivered),
                (0, 1, 0, 1),
                "{stats:?}"
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
