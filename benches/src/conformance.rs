//! The contract, checked against both [`BenchBroker`] implementations with
//! the same tests: the baseline must behave as the engine does (or its
//! figures compare unlike work), and each test also runs on the engine, so
//! a test that expected something the engine does not do would fail there.
//!
//! A handful of cases that a baseline cutting corners would fail: FIFO with
//! requeue and expiry to the tail, fresh delivery ids with fixed message ids
//! and counted attempts, the deadline test on settle and touch, touch, due
//! order of delays, dead letters by requeue and by expiry, the byte budget
//! (all or nothing for a batch), named queues and `max_queues`, every batch
//! operation's contract, and the counters' identity.

use std::time::Duration;

use bytes::Bytes;
use ubroker_engine::{
    Config, Delivery, Error, ManualClock, NewMessage, QueueUpdate, Settled, MESSAGE_OVERHEAD,
};

use crate::BenchBroker;

const TTL: Duration = Duration::from_secs(10);
const NS: Duration = Duration::from_nanos(1);
const NOW: Duration = Duration::ZERO;

fn broker_with<B: BenchBroker<Clock = ManualClock>>(config: Config) -> B {
    B::with_clock(config, ManualClock::new())
}

fn broker<B: BenchBroker<Clock = ManualClock>>() -> B {
    broker_with(Config {
        ttl: TTL,
        ..Config::default()
    })
}

fn body(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn fetch<B: BenchBroker>(b: &B, queue: &str) -> Delivery {
    b.try_fetch_from(queue)
        .expect("open")
        .unwrap_or_else(|| panic!("a message should be ready in {queue}"))
}

fn bodies(ds: &[Delivery]) -> Vec<Bytes> {
    ds.iter().map(|d| d.body.clone()).collect()
}

fn entries(items: &[(&str, Duration)]) -> Vec<NewMessage> {
    items
        .iter()
        .map(|&(s, delay)| NewMessage {
            body: body(s),
            delay,
        })
        .collect()
}

/// `published = acknowledged + dead_lettered + ready + in_flight + delayed`
/// over the whole broker.
fn assert_identity<B: BenchBroker>(b: &B) {
    let s = b.stats();
    assert_eq!(
        s.published,
        s.acknowledged + s.dead_lettered + (s.ready + s.in_flight + s.delayed) as u64,
        "{s:?}"
    );
}

fn fifo_with_requeue_and_expiry_to_the_tail<B: BenchBroker<Clock = ManualClock>>() {
    let b: B = broker();
    let ids: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|s| b.publish_to("q", body(s), NOW).unwrap())
        .collect();
    let a = fetch(&b, "q");
    assert_eq!((a.message_id, a.attempt), (ids[0], 1));
    b.requeue_in("q", a.id, NOW).unwrap();
    let bd = fetch(&b, "q");
    assert_eq!(bd.body, body("b"));
    b.clock().advance(TTL);
    let sweep = b.expire_due();
    assert_eq!((sweep.expired, sweep.came_due), (1, 0));
    let again: Vec<Delivery> = (0..3).map(|_| fetch(&b, "q")).collect();
    assert_eq!(bodies(&again), vec![body("c"), body("a"), body("b")]);
    assert_eq!((again[1].message_id, again[1].attempt), (ids[0], 2));
    assert_eq!((again[2].message_id, again[2].attempt), (ids[1], 2));
    let mut delivery_ids = vec![a.id, bd.id];
    delivery_ids.extend(again.iter().map(|d| d.id));
    delivery_ids.sort();
    delivery_ids.dedup();
    assert_eq!(delivery_ids.len(), 5, "a fresh id per delivery");
    assert_eq!(b.try_fetch_from("q"), Ok(None));
    assert_eq!(b.acknowledge_in("q", a.id), Err(Error::InvalidId));
    assert_identity(&b);
}

fn a_lease_is_valid_until_its_deadline_and_not_at_it<B: BenchBroker<Clock = ManualClock>>() {
    let b: B = broker();
    for s in ["a", "b", "c"] {
        b.publish_to("q", body(s), NOW).unwrap();
    }
    let (a, bd, c) = (fetch(&b, "q"), fetch(&b, "q"), fetch(&b, "q"));
    b.clock().advance(TTL - NS);
    b.acknowledge_in("q", a.id).unwrap();
    b.touch_in("q", c.id, None).unwrap();
    b.clock().advance(NS);
    assert_eq!(b.requeue_in("q", bd.id, NOW), Err(Error::InvalidId));
    assert_eq!(b.acknowledge_in("q", bd.id), Err(Error::InvalidId));
    assert_eq!(b.touch_in("q", bd.id, None), Err(Error::InvalidId));
    assert_eq!(b.touch_in("q", c.id, Some(NOW)), Err(Error::ZeroTtl));
    // Before any sweep, b's lease is dead and c's touched one lives on.
    let sweep = b.expire_due();
    assert_eq!(sweep.expired, 1);
    assert_eq!(
        sweep.next_deadline,
        Some(ubroker_engine::Timestamp::ZERO.saturating_add(TTL - NS + TTL))
    );
    b.clock().advance(TTL - 2 * NS);
    b.touch_in("q", c.id, Some(Duration::from_secs(1))).unwrap();
    b.clock().advance(Duration::from_secs(1) - NS);
    b.acknowledge_in("q", c.id).unwrap();
    assert_eq!(fetch(&b, "q").body, body("b"));
    assert_identity(&b);
}

fn delayed_messages_come_due_in_due_order<B: BenchBroker<Clock = ManualClock>>() {
    let b: B = broker();
    let ms = Duration::from_millis;
    b.publish_to("q", body("late"), ms(20)).unwrap();
    b.publish_to("q", body("tie1"), ms(10)).unwrap();
    b.publish_to("q", body("now"), NOW).unwrap();
    b.publish_to("q", body("tie2"), ms(10)).unwrap();
    assert_eq!(fetch(&b, "q").body, body("now"));
    assert_eq!(b.try_fetch_from("q"), Ok(None));
    assert_eq!(b.stats().delayed, 3);
    b.clock().advance(ms(10) - NS);
    assert_eq!(b.expire_due().came_due, 0);
    b.clock().advance(NS);
    let sweep = b.expire_due();
    assert_eq!((sweep.came_due, sweep.next_deadline.is_some()), (2, true));
    assert_eq!(fetch(&b, "q").body, body("tie1"));
    assert_eq!(fetch(&b, "q").body, body("tie2"));
    b.clock().advance(ms(10));
    assert_eq!(b.expire_due().came_due, 1);
    let late = fetch(&b, "q");
    assert_eq!((late.body, late.attempt), (body("late"), 1));
    // A delayed requeue holds the message back the same way.
    b.requeue_in("q", late.id, ms(5)).unwrap();
    assert_eq!(b.try_fetch_from("q"), Ok(None));
    b.clock().advance(ms(5));
    b.expire_due();
    assert_eq!(fetch(&b, "q").attempt, 2);
    assert_identity(&b);
}

fn dead_letters_after_max_deliveries<B: BenchBroker<Clock = ManualClock>>() {
    let b: B = broker();
    b.put_queue(
        "q",
        QueueUpdate {
            max_deliveries: Some(2),
            ..QueueUpdate::default()
        },
    )
    .unwrap();
    let by_requeue = b.publish_to("q", body("r"), NOW).unwrap();
    let by_expiry = b.publish_to("q", body("e"), NOW).unwrap();
    for _ in 0..2 {
        let d = fetch(&b, "q");
        assert_eq!(d.message_id, by_requeue);
        b.requeue_in("q", d.id, NOW).unwrap();
        fetch(&b, "q");
        b.clock().advance(TTL);
        b.expire_due();
    }
    assert_eq!(b.try_fetch_from("q"), Ok(None));
    let s = b.queue_stats("q").unwrap();
    assert_eq!(
        (s.delivered, s.requeued, s.expired, s.dead_lettered),
        (4, 1, 1, 2)
    );
    let dead: Vec<Delivery> = (0..2).map(|_| fetch(&b, "q.dead")).collect();
    assert_eq!(
        dead.iter()
            .map(|d| (d.message_id, d.attempt))
            .collect::<Vec<_>>(),
        vec![(by_requeue, 1), (by_expiry, 1)]
    );
    for d in &dead {
        assert_eq!(d.dead_letter.as_ref().map(|q| q.as_str()), Some("q"));
    }
    assert_eq!(b.stats().queued_bytes, 2 * (1 + MESSAGE_OVERHEAD));
    assert_identity(&b);
}

fn the_byte_budget_refuses_whole_batches<B: BenchBroker<Clock = ManualClock>>() {
    let b: B = broker_with(Config {
        ttl: TTL,
        max_queue_bytes: 3 * (1 + MESSAGE_OVERHEAD),
        ..Config::default()
    });
    b.publish_to("q", body("a"), NOW).unwrap();
    b.publish_to("q", body("b"), Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        b.publish_batch("q", entries(&[("c", NOW), ("d", NOW)])),
        Err(Error::QueueFull)
    );
    assert_eq!(b.stats().published, 2, "nothing of the batch published");
    b.publish_batch("q", entries(&[("c", NOW)])).unwrap();
    assert_eq!(b.publish_to("q", body("d"), NOW), Err(Error::QueueFull));
    let a = fetch(&b, "q");
    b.acknowledge_in("q", a.id).unwrap();
    b.publish_to("q", body("d"), NOW).unwrap();
    assert_eq!(b.stats().queued_bytes, 3 * (1 + MESSAGE_OVERHEAD));
}

fn queues_are_separate_and_ids_bound_to_theirs<B: BenchBroker<Clock = ManualClock>>() {
    let b: B = broker_with(Config {
        ttl: TTL,
        max_queues: 1,
        ..Config::default()
    });
    b.publish_to("x", body("x"), NOW).unwrap();
    b.publish_to("default", body("d"), NOW).unwrap();
    assert_eq!(b.publish_to("y", body("y"), NOW), Err(Error::TooManyQueues));
    assert_eq!(
        b.publish_to("no such", body("y"), NOW),
        Err(Error::InvalidQueueName)
    );
    assert_eq!(b.try_fetch_from("y"), Ok(None));
    let x = fetch(&b, "x");
    let d = fetch(&b, "default");
    assert_ne!(x.id, d.id);
    assert_eq!(b.acknowledge_in("default", x.id), Err(Error::InvalidId));
    assert_eq!(b.acknowledge_in("y", x.id), Err(Error::InvalidId));
    b.acknowledge_in("x", x.id).unwrap();
    assert_eq!(b.stats().queues, 2);
    assert_identity(&b);
}

/// A batch fetch appended to `out`, answering how many it took: what the
/// checks below were written against.
fn fetch_into<B: BenchBroker>(
    b: &B,
    queue: &str,
    max: usize,
    max_bytes: usize,
    out: &mut Vec<Delivery>,
) -> Result<usize, Error> {
    let got = b.try_fetch_batch_from(queue, max, max_bytes)?;
    let taken = got.len();
    out.extend(got);
    Ok(taken)
}

fn batches_keep_the_contract<B: BenchBroker<Clock = ManualClock>>() {
    let b: B = broker();
    let later = Duration::from_secs(1);
    let ids = b
        .publish_batch(
            "q",
            entries(&[
                ("a", NOW),
                ("bb", NOW),
                ("late", later),
                ("ccc", NOW),
                ("d", NOW),
            ]),
        )
        .unwrap();
    assert_eq!(ids.end - ids.start, 5);
    let mut out = Vec::new();
    // "a" alone is under the cap of 3; "bb" reaches it and is the last one
    // taken (SPEC "Batches": the message that crosses the line may end the
    // answer).
    assert_eq!(fetch_into(&b, "q", 10, 3, &mut out), Ok(2));
    assert_eq!(bodies(&out), vec![body("a"), body("bb")]);
    assert_eq!(out[0].message_id, ids.start);
    // The first message is always taken, and alone once it reaches the cap.
    assert_eq!(fetch_into(&b, "q", 10, 1, &mut out), Ok(1));
    assert_eq!(out[2].body, body("ccc"));
    assert_eq!(fetch_into(&b, "q", 10, 1_000, &mut out), Ok(1));
    assert_eq!(fetch_into(&b, "q", 10, 1_000, &mut out), Ok(0));
    assert_eq!(fetch_into(&b, "none", 10, 1_000, &mut out), Ok(0));
    let (a, bb, ccc, d) = (out[0].id, out[1].id, out[2].id, out[3].id);
    assert_eq!(
        b.acknowledge_batch_in("q", &[a, a, 999_999]),
        Ok(vec![Settled::Ok, Settled::Invalid, Settled::Invalid])
    );
    assert_eq!(
        b.touch_batch_in("q", &[bb, bb, a], Some(Duration::from_secs(60))),
        Ok(vec![Settled::Ok, Settled::Ok, Settled::Invalid])
    );
    assert_eq!(b.touch_batch_in("q", &[bb], Some(NOW)), Err(Error::ZeroTtl));
    assert_eq!(
        b.requeue_batch_in("q", &[ccc, d, ccc], NOW),
        Ok(vec![Settled::Ok, Settled::Ok, Settled::Invalid])
    );
    assert_eq!(
        b.acknowledge_batch_in("missing", &[bb, 7]),
        Ok(vec![Settled::Invalid, Settled::Invalid])
    );
    assert_eq!(
        b.acknowledge_batch_in("bad name", &[bb]),
        Err(Error::InvalidQueueName)
    );
    out.clear();
    assert_eq!(fetch_into(&b, "q", 1, 1_000, &mut out), Ok(1));
    assert_eq!(fetch_into(&b, "q", 1, 1_000, &mut out), Ok(1));
    assert_eq!(bodies(&out), vec![body("ccc"), body("d")]);
    assert_eq!(out[0].attempt, 2);
    // One TTL on, only the touched lease is alive, and the delayed entry
    // has come due.
    b.clock().advance(TTL);
    let sweep = b.expire_due();
    assert_eq!((sweep.expired, sweep.came_due), (2, 1));
    assert_eq!(b.acknowledge_batch_in("q", &[bb]), Ok(vec![Settled::Ok]));
    out.clear();
    assert_eq!(fetch_into(&b, "q", 10, 1_000, &mut out), Ok(3));
    // In due order: the delayed entry (1 s) before the leases (one TTL).
    assert_eq!(bodies(&out), vec![body("late"), body("ccc"), body("d")]);
    assert_identity(&b);
}

macro_rules! conformance {
    ($module:ident, $ty:ty) => {
        mod $module {
            #[test]
            fn fifo_with_requeue_and_expiry_to_the_tail() {
                super::fifo_with_requeue_and_expiry_to_the_tail::<$ty>();
            }

            #[test]
            fn a_lease_is_valid_until_its_deadline_and_not_at_it() {
                super::a_lease_is_valid_until_its_deadline_and_not_at_it::<$ty>();
            }

            #[test]
            fn delayed_messages_come_due_in_due_order() {
                super::delayed_messages_come_due_in_due_order::<$ty>();
            }

            #[test]
            fn dead_letters_after_max_deliveries() {
                super::dead_letters_after_max_deliveries::<$ty>();
            }

            #[test]
            fn the_byte_budget_refuses_whole_batches() {
                super::the_byte_budget_refuses_whole_batches::<$ty>();
            }

            #[test]
            fn queues_are_separate_and_ids_bound_to_theirs() {
                super::queues_are_separate_and_ids_bound_to_theirs::<$ty>();
            }

            #[test]
            fn batches_keep_the_contract() {
                super::batches_keep_the_contract::<$ty>();
            }
        }
    };
}

conformance!(engine, ubroker_engine::Broker<ubroker_engine::ManualClock>);
conformance!(
    baseline,
    crate::baseline::MutexBroker<ubroker_engine::ManualClock>
);
