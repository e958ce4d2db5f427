//! Model 8: concurrent publishers and consumers.
//!
//! Two publishers and two consumers share the broker with no other
//! coordination. Messages must leave the queue in publish order per
//! publisher (FIFO), every delivery id must be unique, and every message is
//! delivered once and accounted for.
#![cfg(loom)]

use std::collections::HashSet;

use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check_bounded, msg, new_broker, ModelBroker, Outcomes};
use ubroker_engine::Delivery;

/// Bodies are `<publisher><sequence number>`: `a1`, `a2`, `b1`.
fn origin(delivery: &Delivery) -> (u8, u8) {
    (delivery.body[0], delivery.body[1])
}

/// Up to `n` non-blocking fetches, in order.
fn fetch_up_to(broker: &ModelBroker, n: usize) -> Vec<Delivery> {
    (0..n)
        .filter_map(|_| {
            broker
                .default_queue()
                .try_fetch()
                .expect("the broker is open")
        })
        .collect()
}

/// Asserts that `earlier` left the queue before `later` is allowed by FIFO
/// per publisher.
#[track_caller]
fn assert_fifo_pair(earlier: &Delivery, later: &Delivery) {
    let (publisher, seq) = origin(earlier);
    let (later_publisher, later_seq) = origin(later);
    assert!(
        publisher != later_publisher || seq < later_seq,
        "fetched {:?} before {:?}: not FIFO per publisher",
        earlier.body,
        later.body
    );
}

/// Asserts FIFO per publisher within the fetches of one thread, in the order
/// it made them.
#[track_caller]
fn assert_in_publish_order(deliveries: &[Delivery]) {
    for (i, earlier) in deliveries.iter().enumerate() {
        for later in &deliveries[i + 1..] {
            assert_fifo_pair(earlier, later);
        }
    }
}

/// Model 8: publisher P1 publishes `a1`, `a2`; thread P2C publishes `b1`,
/// then fetches once; consumer C fetches twice. The main thread then fetches
/// what is left.
#[test]
fn m8_publishers_and_consumers() {
    static OUTCOMES: Outcomes = Outcomes::new();
    // At most 2 preemptions (see the module docs): with 3 this model
    // took over 1.4 million interleavings once the ready queue's pops
    // and the timer went lock-free and sharded.
    check_bounded("m8_publishers_and_consumers", Some(2), || {
        let broker = new_broker();

        let publisher = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.default_queue().publish(msg("a1")).unwrap();
                broker.default_queue().publish(msg("a2")).unwrap();
            })
        };
        let publisher_consumer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.default_queue().publish(msg("b1")).unwrap();
                fetch_up_to(&broker, 1)
            })
        };
        let consumer = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || fetch_up_to(&broker, 2))
        };
        publisher.join().unwrap();
        let fetched_by_p2c = publisher_consumer.join().unwrap();
        let fetched_by_c = consumer.join().unwrap();
        // Everything the main thread fetches now left the queue after
        // everything the two consumers fetched.
        let fetched_after = fetch_up_to(&broker, 3);

        assert_in_publish_order(&fetched_by_p2c);
        assert_in_publish_order(&fetched_by_c);
        assert_in_publish_order(&fetched_after);
        for earlier in fetched_by_p2c.iter().chain(&fetched_by_c) {
            for later in &fetched_after {
                assert_fifo_pair(earlier, later);
            }
        }

        let all: Vec<&Delivery> = fetched_by_p2c
            .iter()
            .chain(&fetched_by_c)
            .chain(&fetched_after)
            .collect();
        let ids: HashSet<u64> = all.iter().map(|d| d.id).collect();
        assert_eq!(ids.len(), all.len(), "delivery ids are not unique: {all:?}");
        let mut bodies: Vec<_> = all.iter().map(|d| d.body.clone()).collect();
        bodies.sort();
        assert_eq!(
            bodies,
            [msg("a1"), msg("a2"), msg("b1")],
            "each message delivered once"
        );

        let stats = broker.stats();
        assert_eq!(
            (stats.published, stats.delivered),
            (3, 3),
            "counters lost an update: {stats:?}"
        );
        OUTCOMES.record(match (fetched_by_p2c.is_empty(), fetched_by_c.is_empty()) {
            (false, false) => "both consumers fetched",
            (true, false) => "only C fetched",
            (false, true) => "only P2C fetched",
            // P2C fetches after its own publish: if it got nothing, C did.
            (true, true) => panic!("P2C's fetch missed the message it had just published"),
        });
        assert_conserved(&broker, &["a1", "a2", "b1"]);
    });
    OUTCOMES.assert_seen(&[
        "both consumers fetched",
        "only C fetched",
        "only P2C fetched",
    ]);
}
