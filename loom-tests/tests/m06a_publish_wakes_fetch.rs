//! Model 6: publish against a waiting fetch.
//!
//! A fetch that finds the queue empty registers in the wait list, re-checks
//! the queue, and sleeps; publish pushes, then notifies one waiter (see
//! `waiters.rs` in the engine for why that cannot lose a wake-up). Waiting
//! threads block in `loom::future::block_on`, so a lost wake-up is a thread
//! that nothing will ever wake: loom reports it as a deadlock.
//!
//! * 6a: one waiting fetch against one publish.
//! * 6b: a fetch that registers, then finds a message on its own re-check,
//!   can be notified for *another* message before it deregisters; leaving
//!   with its message, it must pass that wake-up on. (This model found the
//!   engine keeping such a wake-up; see `Parked::leave` in `broker.rs`.)
//! * 6c: cancellation. A waiter woken for a message and then dropped
//!   without taking it must pass the wake-up on.
//!
//! In 6b and 6c, failing to pass a wake-up on leaves the other waiter asleep
//! beside a ready message.
//!
//! One model per file: each file is its own test binary, so a model that
//! deadlocks (which aborts the binary) cannot hide the others.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, msg, new_broker, spawn_waiting_fetch, Outcomes};

/// Model 6a: one fetch waits while one publish races its registration. The
/// fetch must return the message, whichever side goes first.
#[test]
fn m6_publish_wakes_a_waiting_fetch() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m6_publish_wakes_a_waiting_fetch", || {
        let broker = new_broker();
        let (waiter, probe) = spawn_waiting_fetch(&broker);
        let publisher = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.default_queue().publish(msg("a")))
        };
        publisher.join().unwrap().unwrap();
        let delivery = waiter
            .join()
            .unwrap()
            .expect("the waiting fetch gets the message");

        assert_eq!(delivery.body, msg("a"));
        OUTCOMES.record(if probe.slept() {
            "woken from sleep"
        } else {
            "found the message without sleeping"
        });
        assert_conserved(&broker, &["a"]);
    });
    OUTCOMES.assert_seen(&["found the message without sleeping", "woken from sleep"]);
}
