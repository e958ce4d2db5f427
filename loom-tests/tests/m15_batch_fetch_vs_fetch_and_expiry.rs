//! Model 15: a batch fetch racing a single fetch and an expiry sweep.
//!
//! `a` is leased before the threads start (deadline `TTL`); `b` and `c`
//! were published as one batch. One thread fetches a batch of up to two,
//! one fetches a single message, and the timekeeper moves the clock to
//! `TTL` and sweeps, which expires `a` back to the tail. Whatever the
//! interleaving:
//!
//! * the batch is in the queue's order `b, c, a` (not necessarily
//!   contiguous: each of its pops is a lock-free pop of its own, and the
//!   single fetch may pop between them), and no message goes to both
//!   fetches;
//! * `a`'s lease expires exactly once;
//! * a fetch that takes `a` after its expiry gets a live lease (attempt 2,
//!   a deadline after the sweep's clock): a batch fetch that read the clock
//!   before it popped would hand out a lease born expired;
//! * every lease stays reachable by timekeeping (the conservation check's
//!   final sweep): a batch that scheduled its deadlines before inserting
//!   its leases could lose one to a sweep in between.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check_bounded, lease, msg, new_broker, Outcomes, TTL};
use ubroker_engine::{Delivery, NewMessage};

const ORDER: [&str; 3] = ["b", "c", "a"];

fn position(delivery: &Delivery) -> usize {
    ORDER
        .iter()
        .position(|body| msg(body) == delivery.body)
        .expect("a known body")
}

#[test]
fn m15_batch_fetch_vs_fetch_and_expiry() {
    static OUTCOMES: Outcomes = Outcomes::new();
    // At most 2 preemptions (see the module docs): with 3 this model
    // took over 1.4 million interleavings once the ready queue's pops
    // and the timer went lock-free and sharded.
    check_bounded("m15_batch_fetch_vs_fetch_and_expiry", Some(2), || {
        let broker = new_broker();
        let (first, _) = lease(&broker, "a");
        let batch = ["b", "c"]
            .iter()
            .map(|body| NewMessage {
                body: msg(body),
                delay: std::time::Duration::ZERO,
            })
            .collect();
        broker.queue("default").publish_batch(batch).unwrap();

        let batcher = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker
                    .default_queue()
                    .try_fetch_batch(2, usize::MAX)
                    .unwrap()
            })
        };
        let single = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.default_queue().try_fetch().unwrap())
        };
        let timekeeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let batch = batcher.join().unwrap();
        let single = single.join().unwrap();
        let sweep = timekeeper.join().unwrap();

        assert!(batch.len() <= 2);
        let positions: Vec<usize> = batch.iter().map(position).collect();
        // In queue order; since the ready queue's pops are each lock-free
        // and on their own, the single fetch may take one in between.
        assert!(
            positions.windows(2).all(|w| w[1] > w[0]),
            "the batch is not in queue order: {positions:?}"
        );
        let mut all: Vec<&Delivery> = batch.iter().chain(single.iter()).collect();
        all.sort_by_key(|d| position(d));
        assert!(
            all.windows(2).all(|w| position(w[0]) != position(w[1])),
            "a message went to two fetches"
        );
        if let Some(single) = &single {
            assert!(
                !positions.contains(&position(single)),
                "the single fetch took a message inside the batch"
            );
        }
        assert!(
            sweep.expired >= 1,
            "a's lease, due at TTL, survived the sweep"
        );
        for delivery in &all {
            assert_ne!(delivery.id, first.id, "a delivery id was reused");
            if delivery.body == msg("a") {
                assert_eq!(delivery.attempt, 2);
                // Taken after the sweep made it ready again, so after the
                // clock reached TTL: its lease must still be live there.
                assert_eq!(
                    broker.queue("default").touch(delivery.id, None),
                    Ok(()),
                    "a lease taken after its message expired was born expired"
                );
            } else {
                assert_eq!(delivery.attempt, 1);
            }
        }
        let a_again = all.iter().any(|d| d.body == msg("a"));
        OUTCOMES.record(match (batch.len(), single.is_some(), a_again) {
            // Three deliveries are all three messages, `a` after its expiry.
            (2, true, true) => "batch of two and a single, one of them the expired a",
            (2, true, false) => unreachable!("three deliveries without a"),
            (2, false, _) => "batch of two, the single fetch found nothing",
            // `a` comes after `b` and `c`, so a batch of one beside a single
            // fetch can only be one of those two.
            (1, true, true) => unreachable!("a overtook b or c"),
            (1, true, false) => "batch of one and a single",
            (1, false, _) => "batch of one, the single fetch found nothing",
            (0, _, _) => "the batch found nothing",
            _ => unreachable!("at most two"),
        });
        assert_conserved(&broker, &["a", "b", "c"]);
    });
    OUTCOMES.assert_seen(&[
        "batch of one and a single",
        "batch of two and a single, one of them the expired a",
        "batch of two, the single fetch found nothing",
    ]);
}
