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
use std::task::{Context, Poll};

use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, msg, new_broker, Outcomes, SleepProbe, WakeFlag};

/// Model 6b: fetch A (polled once by hand, then dropped) and fetch B (a
/// waiting thread) race the main thread publishing two messages. A may
/// register, then find the first message on its re-check and leave with
/// it; if the second publish notifies A in that window, A must pass the
/// wake-up on, or B sleeps beside a ready message. B always gets a message.
#[test]
fn m6_fetch_leaving_with_a_message_passes_a_late_wake_up_on() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check(
        "m6_fetch_leaving_with_a_message_passes_a_late_wake_up_on",
        || {
            let broker = new_broker();

            let fetcher_a = {
                let broker = Arc::clone(&broker);
                thread::spawn(move || {
                    let (_, waker) = WakeFlag::new();
                    let mut a = Box::pin(broker.default_queue().fetch(pending()));
                    match a.as_mut().poll(&mut Context::from_waker(&waker)) {
                        Poll::Ready(result) => Some(result.expect("the broker is open")),
                        Poll::Pending => None,
                    }
                })
            };
            let b_probe = SleepProbe::new();
            let waiter_b = {
                let broker = Arc::clone(&broker);
                let probe = b_probe.clone();
                thread::spawn(move || block_on(broker.default_queue().fetch(probe)))
            };

            broker.default_queue().publish(msg("a")).unwrap();
            broker.default_queue().publish(msg("b")).unwrap();

            let a_delivery = fetcher_a.join().unwrap();
            let b_delivery = waiter_b
                .join()
                .unwrap()
                .expect("B gets a message: there are two and A took at most one");
            if let Some(a_delivery) = &a_delivery {
                assert_ne!(a_delivery.body, b_delivery.body, "delivered twice");
            }

            OUTCOMES.record(match (a_delivery.is_some(), b_probe.slept()) {
                (true, true) => "A took a message, B woken from sleep",
                (true, false) => "A took a message, B did not sleep",
                (false, true) => "A left empty-handed, B woken from sleep",
                (false, false) => "A left empty-handed, B did not sleep",
            });
            assert_conserved(&broker, &["a", "b"]);
        },
    );
    OUTCOMES.assert_seen(&[
        "A left empty-handed, B did not sleep",
        "A left empty-handed, B woken from sleep",
        "A took a message, B did not sleep",
        "A took a message, B woken from sleep",
    ]);
}
