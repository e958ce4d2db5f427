//! Model 7: close against publish, fetch and acknowledge.
//!
//! `close` sets the closed flag, then wakes every waiter. From the moment it
//! returns, every publish, fetch, acknowledge and requeue must fail with
//! `Closed`: on the closing thread, and on any thread that knows (through a
//! happens-before edge) that close has returned. A fetch waiting at the time
//! must wake up and see it, not sleep forever. Operations that raced close
//! may have gone either way, but each one that succeeded is accounted for.
#![cfg(loom)]

use loom::future::block_on;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{
    assert_counters_agree, check, lease, msg, new_broker, spawn_waiting_fetch, Outcomes,
};
use ubroker_engine::Error;

/// Model 7: one thread closes the broker, one waits in fetch, one publishes
/// and then acknowledges a delivery leased before the race.
#[test]
fn m7_close_vs_publish_fetch_acknowledge() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m7_close_vs_publish_fetch_acknowledge", || {
        let broker = new_broker();
        let (leased, _) = lease(&broker, "a");
        // Set (Release) right after close returns; a thread that reads it set
        // (Acquire) is after close, and must see every call fail.
        let close_returned = Arc::new(AtomicBool::new(false));

        let closer = {
            let broker = Arc::clone(&broker);
            let close_returned = Arc::clone(&close_returned);
            thread::spawn(move || {
                broker.close();
                close_returned.store(true, Ordering::Release);
                assert!(broker.is_closed());
                assert_eq!(broker.default_queue().publish(msg("x")), Err(Error::Closed));
                assert_eq!(broker.default_queue().try_fetch(), Err(Error::Closed));
                assert_eq!(
                    broker.default_queue().acknowledge(leased.id),
                    Err(Error::Closed)
                );
                assert_eq!(
                    broker.default_queue().requeue(leased.id),
                    Err(Error::Closed)
                );
                assert_eq!(
                    block_on(broker.default_queue().fetch(std::future::pending())),
                    Err(Error::Closed)
                );
            })
        };
        let (waiter, probe) = spawn_waiting_fetch(&broker);
        let client = {
            let broker = Arc::clone(&broker);
            let close_returned = Arc::clone(&close_returned);
            thread::spawn(move || {
                let after_close = close_returned.load(Ordering::Acquire);
                let published = broker.default_queue().publish(msg("b"));
                if after_close {
                    assert_eq!(published, Err(Error::Closed), "publish after close");
                }
                let after_close = close_returned.load(Ordering::Acquire);
                let acknowledged = broker.default_queue().acknowledge(leased.id);
                if after_close {
                    assert_eq!(acknowledged, Err(Error::Closed), "acknowledge after close");
                }
                (published, acknowledged)
            })
        };
        closer.join().unwrap();
        let fetched = waiter.join().unwrap();
        let (published, acknowledged) = client.join().unwrap();

        assert!(matches!(published, Ok(_) | Err(Error::Closed)));
        assert!(matches!(acknowledged, Ok(()) | Err(Error::Closed)));
        let mut live = Vec::new();
        if acknowledged.is_err() {
            live.push("a");
        }
        if published.is_ok() {
            live.push("b");
        }
        match &fetched {
            Ok(delivery) => {
                assert_eq!(delivery.body, msg("b"), "only b was ever ready");
                assert!(published.is_ok());
            }
            Err(error) => assert_eq!(*error, Error::Closed),
        }
        let stats = broker.stats();
        assert_eq!(stats.published, 1 + u64::from(published.is_ok()));
        assert_eq!(stats.acknowledged, u64::from(acknowledged.is_ok()));
        assert_eq!(stats.delivered, 1 + u64::from(fetched.is_ok()));
        // Closed: the broker can no longer be drained, so the counters
        // (ready + in flight = held, and the flow identities) are the check.
        assert_counters_agree(&broker, &live);

        OUTCOMES.record(match (&fetched, probe.slept()) {
            (Ok(_), _) => "waiter got the message before close",
            (Err(_), true) => "waiter woken from sleep by close",
            (Err(_), false) => "waiter saw close without sleeping",
        });
    });
    OUTCOMES.assert_seen(&[
        "waiter got the message before close",
        "waiter saw close without sleeping",
        "waiter woken from sleep by close",
    ]);
}
