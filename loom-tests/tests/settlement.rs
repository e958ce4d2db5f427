//! Models 1 to 4: who settles a delivery.
//!
//! Acknowledge, requeue and expiry all settle a delivery through one atomic
//! `remove_if` on the lease table, with the deadline test inside it. These
//! models race them two at a time on one lease, taken at time zero (so its
//! deadline is one `TTL`), and check that exactly one wins, that the loser
//! sees `InvalidId`, that no consumer settles a lease whose deadline it has
//! already seen pass, and that the message ends up in exactly one place.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, lease, new_broker, Outcomes, TTL};
use ubroker_engine::{Clock as _, Error, Timestamp};

/// Consumer side of a race: settles `id` with `settle`, after reading the
/// clock itself. If it already saw the deadline pass, the engine must have
/// refused (rule 4: expiry is exact from the client's view).
fn settle_checking_deadline(
    broker: &loom_tests::ModelBroker,
    deadline: Timestamp,
    settle: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    let seen_late = broker.clock().now() >= deadline;
    let result = settle();
    if seen_late {
        assert_eq!(
            result,
            Err(Error::InvalidId),
            "a consumer settled a lease after seeing its deadline pass"
        );
    }
    result
}

/// Model 1: acknowledge races expiry (clock advance then sweep) on one
/// lease. Exactly one wins.
#[test]
fn m1_acknowledge_vs_expiry() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m1_acknowledge_vs_expiry", || {
        let broker = new_broker();
        let (delivery, deadline) = lease(&broker, "a");

        let consumer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                settle_checking_deadline(&broker, deadline, || broker.acknowledge(delivery.id))
            })
        };
        let sweeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let acked = consumer.join().unwrap();
        let sweep = sweeper.join().unwrap();

        match (acked, sweep.expired) {
            (Ok(()), 0) => {
                OUTCOMES.record("acknowledged");
                assert_conserved(&broker, &[]);
            }
            (Err(Error::InvalidId), 1) => {
                OUTCOMES.record("expired");
                let stats = broker.stats();
                assert_eq!((stats.ready, stats.in_flight), (1, 0));
                assert_conserved(&broker, &["a"]);
            }
            other => panic!("not exactly one winner: (acknowledge, expired) = {other:?}"),
        }
    });
    OUTCOMES.assert_seen(&["acknowledged", "expired"]);
}

/// Model 2: requeue races expiry. Exactly one wins, and the message is back
/// in the ready queue exactly once either way.
#[test]
fn m2_requeue_vs_expiry() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m2_requeue_vs_expiry", || {
        let broker = new_broker();
        let (delivery, deadline) = lease(&broker, "a");

        let consumer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                settle_checking_deadline(&broker, deadline, || broker.requeue(delivery.id))
            })
        };
        let sweeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let requeued = consumer.join().unwrap();
        let sweep = sweeper.join().unwrap();

        match (requeued, sweep.expired) {
            (Ok(()), 0) => OUTCOMES.record("requeued"),
            (Err(Error::InvalidId), 1) => OUTCOMES.record("expired"),
            other => panic!("not exactly one winner: (requeue, expired) = {other:?}"),
        }
        let stats = broker.stats();
        assert_eq!(
            (stats.ready, stats.in_flight, stats.requeued + stats.expired),
            (1, 0, 1),
            "the message is not in the ready queue exactly once: {stats:?}"
        );
        assert_conserved(&broker, &["a"]);
    });
    OUTCOMES.assert_seen(&["expired", "requeued"]);
}

/// Model 3: acknowledge races requeue of the same delivery, before its
/// deadline. Exactly one wins; the other sees `InvalidId`.
#[test]
fn m3_acknowledge_vs_requeue() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m3_acknowledge_vs_requeue", || {
        let broker = new_broker();
        let (delivery, _) = lease(&broker, "a");

        let acker = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.acknowledge(delivery.id))
        };
        let requeuer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.requeue(delivery.id))
        };
        let acked = acker.join().unwrap();
        let requeued = requeuer.join().unwrap();

        match (acked, requeued) {
            (Ok(()), Err(Error::InvalidId)) => {
                OUTCOMES.record("acknowledged");
                assert_conserved(&broker, &[]);
            }
            (Err(Error::InvalidId), Ok(())) => {
                OUTCOMES.record("requeued");
                let stats = broker.stats();
                assert_eq!((stats.ready, stats.in_flight), (1, 0));
                assert_conserved(&broker, &["a"]);
            }
            other => panic!("not exactly one winner: (acknowledge, requeue) = {other:?}"),
        }
    });
    OUTCOMES.assert_seen(&["acknowledged", "requeued"]);
}

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
                let result =
                    settle_checking_deadline(&broker, deadline, || broker.acknowledge(first.id));
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
                let second = broker.try_fetch().expect("the broker is open")?;
                redelivered.store(true, Ordering::Release);
                assert_ne!(second.id, first.id, "a delivery id was reused");
                assert_eq!(second.body, first.body);
                assert_eq!(
                    broker.acknowledge(second.id),
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
