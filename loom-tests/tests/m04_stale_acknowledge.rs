//! Who settles a delivery (models 1 to 4 race the three settlements).
//!
//! Acknowledge, requeue and expiry all settle a delivery through one atomic
//! `remove_if` on the lease table, with the deadline test inside it. These
//! models race them two at a time on one lease, taken at time zero (so its
//! deadline is one `TTL`), and check that exactly one wins, that the loser
//! sees `InvalidId`, that no consumer settles a lease whose deadline it has
//! already seen pass, and that the message ends up in exactly one place.
//!
//! One model per file: each file is its own test binary, so a model that
//! fails (or deadlocks, which aborts the binary) cannot hide the others.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_conserved, check, lease, new_broker, settle_checking_deadline, Outcomes, TTL,
};
use ubroker_engine::Error;

/// Model 4: a slow consumer acknowledges its old delivery id while the
/// lease expires and the message is fetched again. If the expiry won, the
/// old id fails (also when it arrives after the message is leased again) and
/// the new, different id succeeds; if the acknowledge won, nothing is
/// redelivered.
#[test]
fn m4_stale_acknowledge_after_redelivery() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m4_stale_acknowledge_after_redelivery", || {
        let broker = new_broker();
        let (first, deadline) = lease(&broker, "a");
        // Set once the message is leased again; read by the slow consumer
        // only to know that its acknowledge comes after the redelivery.
        let redelivered = Arc::new(AtomicBool::new(false));

        let slow_consumer = {
            let broker = Arc::clone(&broker);
            let redelivered = Arc::clone(&redelivered);
            thread::spawn(move || {
                let after_redelivery = redelivered.load(Ordering::Acquire);
                let result = settle_checking_deadline(&broker, deadline, || {
                    broker.default_queue().acknowledge(first.id)
                });
                if after_redelivery {
                    assert_eq!(
                        result,
                        Err(Error::InvalidId),
                        "a stale id settled the redelivered message"
                    );
                }
                (result, after_redelivery)
            })
        };
        let sweeper_and_consumer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due();
                let second = broker
                    .default_queue()
                    .try_fetch()
                    .expect("the broker is open")?;
                redelivered.store(true, Ordering::Release);
                assert_ne!(second.id, first.id, "a delivery id was reused");
                assert_eq!(second.body, first.body);
                assert_eq!(
                    broker.default_queue().acknowledge(second.id),
                    Ok(()),
                    "the new delivery id was refused"
                );
                Some(second.id)
            })
        };
        let (stale_acked, after_redelivery) = slow_consumer.join().unwrap();
        let redelivered = sweeper_and_consumer.join().unwrap();

        match (stale_acked, redelivered) {
            (Ok(()), None) => OUTCOMES.record("acknowledged in time"),
            (Err(Error::InvalidId), Some(_)) if after_redelivery => {
                OUTCOMES.record("stale acknowledge after redelivery")
            }
            (Err(Error::InvalidId), Some(_)) => OUTCOMES.record("expired and redelivered"),
            other => panic!("not exactly one winner: (old acknowledge, new id) = {other:?}"),
        }
        // Acknowledged once, by one consumer or the other.
        assert_eq!(broker.stats().acknowledged, 1);
        assert_conserved(&broker, &[]);
    });
    OUTCOMES.assert_seen(&[
        "acknowledged in time",
        "expired and redelivered",
        "stale acknowledge after redelivery",
    ]);
}
