//! Model 17: a batch's leases, spread over the timer's shards, settled and
//! touched while the timekeeper sweeps.
//!
//! Three messages are leased by one batch fetch before the threads start:
//! their consecutive ids land in both of the (two, under loom) timer shards,
//! so the batch is one strided run per shard. Then, concurrently:
//!
//! * a consumer acknowledges the first and third leases in one batch (both
//!   in one shard's run) and touches the second (the other shard's run);
//! * the timekeeper moves the clock to the deadline and sweeps.
//!
//! Whatever the interleaving, every lease has exactly one winner (a
//! settlement that starts after the consumer saw the deadline pass fails),
//! a touched lease survives the sweep, and, at once after the joins (the
//! conservation check's counts, before its final sweep), the timers count
//! exactly the leases still in flight: a settlement that left its run's
//! count behind, or a touch that moved the lease out of the wrong run,
//! shows up here and not only at the final sweep.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, msg, new_broker, Outcomes, TTL};
use ubroker_engine::{Clock as _, NewMessage, Settled, Timestamp};

#[test]
fn m17_sharded_timer_settle_vs_sweep() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m17_sharded_timer_settle_vs_sweep", || {
        let broker = new_broker();
        let batch = ["a", "b", "c"]
            .iter()
            .map(|body| NewMessage {
                body: msg(body),
                delay: Duration::ZERO,
            })
            .collect();
        broker.queue("default").publish_batch(batch).unwrap();
        let leased = broker
            .default_queue()
            .try_fetch_batch(3, usize::MAX)
            .unwrap();
        assert_eq!(leased.len(), 3);
        assert_eq!(broker.timer_counts(), (3, 0));
        let ids: Vec<u64> = leased.iter().map(|d| d.id).collect();

        let consumer = {
            let broker = Arc::clone(&broker);
            let ids = ids.clone();
            thread::spawn(move || {
                let late = broker.clock().now() >= Timestamp::ZERO.saturating_add(TTL);
                let acked = broker
                    .queue("default")
                    .acknowledge_batch(&[ids[0], ids[2]])
                    .unwrap();
                let touched = broker.queue("default").touch(ids[1], Some(TTL * 3));
                if late {
                    assert_eq!(
                        acked,
                        [Settled::Invalid, Settled::Invalid],
                        "settled after the deadline"
                    );
                    assert!(touched.is_err(), "touched after the deadline");
                }
                (acked, touched.is_ok())
            })
        };
        let timekeeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let (acked, touched) = consumer.join().unwrap();
        let sweep = timekeeper.join().unwrap();

        let won = acked.iter().filter(|ok| ok.is_ok()).count() + usize::from(touched);
        assert_eq!(
            won + sweep.expired,
            3,
            "not exactly one winner per lease: acked {acked:?}, touched {touched}, {sweep:?}"
        );
        let stats = broker.stats();
        assert_eq!(stats.in_flight, usize::from(touched), "{stats:?}");
        let mut live: Vec<&'static str> = vec![];
        for (ok, body) in acked.iter().zip(["a", "c"]) {
            if !ok.is_ok() {
                live.push(body);
            }
        }
        live.push("b");
        OUTCOMES.record(match (acked.as_slice(), touched) {
            ([Settled::Ok, Settled::Ok], true) => "all settled before the sweep",
            ([Settled::Invalid, Settled::Invalid], false) => "the sweep took all three",
            _ => "split between settlements and the sweep",
        });
        assert_conserved(&broker, &live);
    });
    OUTCOMES.assert_seen(&[
        "all settled before the sweep",
        "the sweep took all three",
        "split between settlements and the sweep",
    ]);
}
