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

use std::future::{pending, Future};
use std::task::Context;

use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, msg, new_broker, Outcomes, SleepProbe, WakeFlag};

/// Model 6c: waiter A registers first (polled once by hand), waiter B waits
/// on its own thread, one message is published, and A is dropped without
/// being polled again. When the publish woke A, A's drop must wake B in its
/// place; in every interleaving B gets the message.
#[test]
fn m6_woken_then_cancelled_waiter_passes_the_wake_up_on() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check(
        "m6_woken_then_cancelled_waiter_passes_the_wake_up_on",
        || {
            let broker = new_broker();

            let (a_woken, a_waker) = WakeFlag::new();
            let mut a = Box::pin(broker.default_queue().fetch(pending()));
            assert!(
                a.as_mut()
                    .poll(&mut Context::from_waker(&a_waker))
                    .is_pending(),
                "nothing is published yet, so A registers and waits"
            );

            let b_probe = SleepProbe::new();
            let waiter_b = {
                let broker = Arc::clone(&broker);
                let probe = b_probe.clone();
                thread::spawn(move || block_on(broker.default_queue().fetch(probe)))
            };
            let publisher = {
                let broker = Arc::clone(&broker);
                thread::spawn(move || broker.default_queue().publish(msg("a")))
            };

            // Cancel A, concurrently with B and the publish.
            let a_woken_before_cancel = a_woken.is_woken();
            drop(a);

            publisher.join().unwrap().unwrap();
            let delivery = waiter_b
                .join()
                .unwrap()
                .expect("B gets the message A was woken for");
            assert_eq!(delivery.body, msg("a"));

            OUTCOMES.record(match (a_woken_before_cancel, b_probe.slept()) {
                (true, true) => "A woken then cancelled, B woken from sleep",
                (true, false) => "A woken then cancelled, B did not sleep",
                (false, true) => "A cancelled unwoken, B woken from sleep",
                (false, false) => "A cancelled unwoken, B did not sleep",
            });
            assert_conserved(&broker, &["a"]);
        },
    );
    OUTCOMES.assert_seen(&[
        "A cancelled unwoken, B did not sleep",
        "A cancelled unwoken, B woken from sleep",
        "A woken then cancelled, B did not sleep",
        "A woken then cancelled, B woken from sleep",
    ]);
}
