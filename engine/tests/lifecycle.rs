//! Integration tests for the contract's part 2 sections "Queues" and
//! "Messages and the lease life cycle", through the engine's public API only.
//!
//! Time is a `ManualClock` everywhere: no test sleeps to make a TTL or a
//! delay pass. Waiting fetches are either polled by hand (with a waker that
//! counts its wake-ups) or run on a thread by a tiny `block_on`.

use std::collections::{HashMap, HashSet};
use std::future::{pending, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use common::*;
use ubroker_engine::{
    Clock, Config, Deleted, Delivery, Error, QueueUpdate, Redriven, Timestamp, MAX_ID,
    MESSAGE_OVERHEAD,
};

const NS: Duration = Duration::from_nanos(1);
const NOW: Duration = Duration::ZERO;

// ----- helpers ---------------------------------------------------------------

fn body(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn publish(b: &TestBroker, queue: &str, s: &str) -> u64 {
    b.queue(queue)
        .publish_after(body(s), NOW)
        .unwrap_or_else(|e| panic!("publish {s:?} to {queue}: {e}"))
        .message_id
}

fn publish_delayed(b: &TestBroker, queue: &str, s: &str, delay: Duration) -> u64 {
    b.queue(queue)
        .publish_after(body(s), delay)
        .unwrap_or_else(|e| panic!("publish {s:?} to {queue} after {delay:?}: {e}"))
        .message_id
}

fn fetch(b: &TestBroker, queue: &str) -> Delivery {
    b.queue(queue)
        .try_fetch()
        .unwrap_or_else(|e| panic!("fetch from {queue}: {e}"))
        .unwrap_or_else(|| panic!("a message should be ready in {queue}"))
}

fn assert_empty(b: &TestBroker, queue: &str) {
    assert_eq!(
        b.queue(queue).try_fetch(),
        Ok(None),
        "{queue} should be empty"
    );
}

fn bodies(ds: &[Delivery]) -> Vec<Bytes> {
    ds.iter().map(|d| d.body.clone()).collect()
}

fn bs(items: &[&str]) -> Vec<Bytes> {
    items.iter().map(|s| body(s)).collect()
}

fn at(d: Duration) -> Timestamp {
    Timestamp::ZERO.saturating_add(d)
}

fn max_deliveries(n: u32) -> QueueUpdate {
    QueueUpdate {
        max_deliveries: Some(n),
        ..QueueUpdate::default()
    }
}

fn ttl(d: Duration) -> QueueUpdate {
    QueueUpdate {
        ttl: Some(d),
        ..QueueUpdate::default()
    }
}

/// A timeout future that completes once its flag is set (and it is polled).
struct Flag(Arc<AtomicBool>);

impl Future for Flag {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Spins (without sleeping on time) until `cond` holds, or panics after a
/// generous wall-clock bound so that a bug hangs no CI job.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting until {what}"
        );
        thread::yield_now();
    }
}

// ----- queues: creation, names, limits ---------------------------------------

#[test]
fn publish_to_creates_a_queue_and_fetch_from_a_missing_queue_is_empty() {
    let b = broker();
    assert_eq!(b.queue("jobs").info(), Err(Error::QueueNotFound));
    assert_eq!(b.queue("jobs").stats(), Err(Error::QueueNotFound));
    assert_eq!(b.queue("jobs").try_fetch(), Ok(None));
    assert_eq!(
        b.queue("jobs").info(),
        Err(Error::QueueNotFound),
        "a fetch does not create a queue"
    );
    assert_eq!(b.queues().len(), 1, "only default exists");

    let id = publish(&b, "jobs", "a");
    let info = b.queue("jobs").info().unwrap();
    assert_eq!(info.name.as_str(), "jobs");
    assert_eq!(
        info.settings.ttl.as_millis(),
        10_000,
        "created with the configured TTL"
    );
    assert_eq!(info.settings.max_deliveries, 0);
    assert_eq!(
        (info.ready, info.in_flight, info.delayed, info.bytes),
        (1, 0, 0, 1)
    );
    assert_eq!(
        b.default_queue().try_fetch(),
        Ok(None),
        "default is another queue"
    );
    let d = fetch(&b, "jobs");
    assert_eq!((d.body, d.message_id, d.attempt), (body("a"), id, 1));
    assert_eq!(d.dead_letter, None);

    // The unprefixed API is the queue named `default`.
    let id = b.default_queue().publish(body("d")).unwrap().message_id;
    let d = fetch(&b, "default");
    assert_eq!((d.body.clone(), d.message_id), (body("d"), id));
    b.queue("default").acknowledge(d.id).unwrap();
    assert_eq!(b.queue("default").stats().unwrap().acknowledged, 1);
}

#[test]
fn every_method_refuses_an_invalid_queue_name_and_changes_nothing() {
    let b = broker();
    let too_long = "a".repeat(81);
    let too_long_dead = format!("{too_long}.dead");
    let bad = [
        "",
        " ",
        "a b",
        "a/b",
        "a%20b",
        "a.b",
        ".dead",
        "a.dead.dead",
        "a.DEAD",
        "a.dead/",
        "é",
        too_long.as_str(),
        too_long_dead.as_str(),
    ];
    for name in bad {
        let invalid = Err(Error::InvalidQueueName);
        assert_eq!(
            b.queue(name).publish_after(body("x"), NOW).map(|_| ()),
            invalid,
            "publish {name:?}"
        );
        assert_eq!(
            b.queue(name).publish_after(body("x"), ms(5)).map(|_| ()),
            invalid,
            "delayed publish {name:?}"
        );
        assert_eq!(
            b.queue(name).try_fetch().map(|_| ()),
            invalid,
            "try_fetch {name:?}"
        );
        let fired = Arc::new(AtomicBool::new(false));
        assert_eq!(
            block_on(b.queue(name).fetch(Flag(fired))).map(|_| ()),
            invalid,
            "fetch {name:?} must fail at once, not wait"
        );
        assert_eq!(b.queue(name).acknowledge(1), invalid, "ack {name:?}");
        assert_eq!(
            b.queue(name).requeue_after(1, NOW),
            invalid,
            "requeue {name:?}"
        );
        assert_eq!(b.queue(name).touch(1, None), invalid, "touch {name:?}");
        assert_eq!(b.queue(name).touch(1, Some(TTL)), invalid, "touch {name:?}");
        assert_eq!(
            b.queue(name).put(QueueUpdate::default()).map(|_| ()),
            invalid,
            "put {name:?}"
        );
        assert_eq!(b.queue(name).info().map(|_| ()), invalid, "info {name:?}");
        assert_eq!(b.queue(name).stats().map(|_| ()), invalid, "stats {name:?}");
        assert_eq!(
            b.queue(name).delete().map(|_| ()),
            invalid,
            "delete {name:?}"
        );
        assert_eq!(
            b.queue(name).redrive().map(|_| ()),
            invalid,
            "redrive {name:?}"
        );
    }
    let s = b.stats();
    assert_eq!(
        (s.queues, s.published, s.queued_bytes, s.waiting),
        (1, 0, 0, 0)
    );

    // The longest valid names, with and without `.dead`, are accepted.
    let longest = "a".repeat(80);
    let longest_dead = format!("{longest}.dead");
    for name in [
        longest.as_str(),
        longest_dead.as_str(),
        "Z-9_z",
        "default.dead",
    ] {
        publish(&b, name, "ok");
        assert_eq!(fetch(&b, name).body, body("ok"));
    }
}

#[test]
fn max_queues_counts_a_queue_and_its_dead_queue_as_one() {
    let b = broker_with(Config {
        ttl: TTL,
        max_queues: 2,
        ..Config::default()
    });
    publish(&b, "a", "1");
    b.queue("a.dead").put(QueueUpdate::default()).unwrap();
    publish(&b, "b.dead", "1");
    publish(&b, "b", "1");
    // default and default.dead never count.
    publish(&b, "default.dead", "1");
    assert_eq!(b.queues().len(), 6);

    let before = b.stats();
    assert_eq!(
        b.queue("c").publish_after(body("x"), NOW),
        Err(Error::TooManyQueues)
    );
    assert_eq!(
        b.queue("c").publish_after(body("x"), ms(5)),
        Err(Error::TooManyQueues)
    );
    assert_eq!(
        b.queue("c.dead").publish_after(body("x"), NOW),
        Err(Error::TooManyQueues)
    );
    assert_eq!(
        b.queue("c").put(QueueUpdate::default()),
        Err(Error::TooManyQueues)
    );
    assert_eq!(
        b.queue("c.dead").put(QueueUpdate::default()),
        Err(Error::TooManyQueues)
    );
    assert_eq!(b.queue("c").info(), Err(Error::QueueNotFound));
    assert_eq!(b.queue("c.dead").info(), Err(Error::QueueNotFound));
    assert_eq!(b.stats(), before, "a refused publish changes nothing");

    // Existing queues still take messages at the cap.
    publish(&b, "a", "2");
    publish(&b, "a.dead", "2");

    // Deleting `b` leaves `b.dead`, which still holds the slot.
    b.queue("b").delete().unwrap();
    assert_eq!(
        b.queue("c").publish_after(body("x"), NOW),
        Err(Error::TooManyQueues)
    );
    b.queue("b.dead").delete().unwrap();
    publish(&b, "c", "1");
    assert_eq!(
        b.queue("d").put(QueueUpdate::default()),
        Err(Error::TooManyQueues)
    );
    publish(&b, "c.dead", "1");
}

#[test]
fn max_queues_zero_leaves_default_and_default_dead() {
    let b = broker_with(Config {
        ttl: TTL,
        max_queues: 0,
        max_deliveries: 1,
        ..Config::default()
    });
    assert_eq!(
        b.queue("x").publish_after(body("x"), NOW),
        Err(Error::TooManyQueues)
    );
    b.default_queue().publish(body("m")).unwrap();
    let d = b.default_queue().try_fetch().unwrap().unwrap();
    b.default_queue().requeue(d.id).unwrap();
    let dead = fetch(&b, "default.dead");
    assert_eq!(dead.body, body("m"));
    assert_eq!(
        dead.dead_letter.as_ref().map(|q| q.as_str()),
        Some("default")
    );
    assert_eq!(
        b.queue("default.dead")
            .info()
            .unwrap()
            .settings
            .max_deliveries,
        0
    );
}

#[test]
fn dead_letter_moves_and_redrive_work_at_the_queue_cap() {
    let b = broker_with(Config {
        ttl: TTL,
        max_queues: 1,
        max_deliveries: 1,
        ..Config::default()
    });
    let id = publish(&b, "a", "m");
    assert_eq!(
        b.queue("b").publish_after(body("x"), NOW),
        Err(Error::TooManyQueues)
    );
    let d = fetch(&b, "a");
    b.queue("a").requeue_after(d.id, NOW).unwrap();
    assert_eq!(
        b.queue("a.dead").info().unwrap().ready,
        1,
        "a.dead created at the cap"
    );

    // `a` deleted, `a.dead` keeps its slot; a redrive recreates `a`.
    assert_eq!(b.queue("a").delete(), Ok(Deleted { messages: 0 }));
    assert_eq!(b.queue("a.dead").redrive(), Ok(Redriven { moved: 1 }));
    let d = fetch(&b, "a");
    assert_eq!((d.message_id, d.attempt, d.dead_letter), (id, 1, None));
    assert_eq!(
        b.queue("b").publish_after(body("x"), NOW),
        Err(Error::TooManyQueues)
    );
}

#[test]
fn delete_queue_drops_ready_leased_and_delayed_and_invalidates_its_leases() {
    let b = broker();
    for s in ["r1", "r2", "r3"] {
        publish(&b, "q", s);
    }
    publish_delayed(&b, "q", "later", ms(500));
    let leased = fetch(&b, "q");
    publish(&b, "q.dead", "kept");
    publish(&b, "other", "kept");
    let held = |s: &str| s.len() as u64 + MESSAGE_OVERHEAD;
    assert_eq!(
        b.stats().queued_bytes,
        held("r1") + held("r2") + held("r3") + held("later") + 2 * held("kept")
    );
    assert_eq!(b.stats().delayed, 1);

    assert_eq!(
        b.queue("q").delete(),
        Ok(Deleted { messages: 4 }),
        "2 ready + 1 leased + 1 delayed"
    );
    assert_eq!(
        b.stats().queued_bytes,
        2 * held("kept"),
        "their bytes are released"
    );
    assert_eq!(b.stats().delayed, 0);
    assert_eq!(b.stats().in_flight, 0);
    assert_eq!(b.queue("q").info(), Err(Error::QueueNotFound));
    assert_eq!(
        b.queue("q.dead").info().unwrap().ready,
        1,
        "the .dead queue stays"
    );
    assert_eq!(b.queue("q").acknowledge(leased.id), Err(Error::InvalidId));
    assert_eq!(
        b.queue("q").requeue_after(leased.id, NOW),
        Err(Error::InvalidId)
    );
    assert_eq!(b.queue("q").touch(leased.id, None), Err(Error::InvalidId));
    assert_eq!(b.queue("q").delete(), Err(Error::QueueNotFound));
    assert_eq!(b.queue("missing").delete(), Err(Error::QueueNotFound));
    assert_eq!(b.queue("default").delete(), Err(Error::DefaultQueue));
    assert_eq!(b.queues().len(), 3, "default, other, q.dead");

    // Neither the lease nor the delayed message comes back.
    b.clock().advance(TTL * 2);
    let sweep = b.expire_due();
    assert_eq!((sweep.expired, sweep.came_due), (0, 0));
    assert_eq!(b.timer_entries(), 0);
    assert_eq!(b.next_due(), None);

    // A publish recreates the queue, empty but for the new message; the old
    // lease id stays invalid under the new queue.
    publish(&b, "q", "new");
    assert_eq!(b.queue("q").acknowledge(leased.id), Err(Error::InvalidId));
    assert_eq!(fetch(&b, "q").body, body("new"));
    assert_empty(&b, "q");

    // A dead-letter queue can be deleted on its own.
    assert_eq!(b.queue("q.dead").delete(), Ok(Deleted { messages: 1 }));
    assert_eq!(b.stats().queued_bytes, held("kept") + held("new"));
}

#[test]
fn a_publish_after_delete_recreates_the_queue_with_default_settings() {
    let b = broker_with(Config {
        ttl: TTL,
        max_deliveries: 4,
        ..Config::default()
    });
    let info = b
        .queue("q")
        .put(QueueUpdate {
            ttl: Some(ms(1500)),
            max_deliveries: Some(9),
        })
        .unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (1500, 9)
    );
    b.queue("q").delete().unwrap();
    publish(&b, "q", "x");
    let info = b.queue("q").info().unwrap();
    assert_eq!(
        (
            info.settings.ttl.as_millis(),
            info.settings.max_deliveries,
            info.ready
        ),
        (10_000, 4, 1)
    );
}

#[test]
fn put_queue_changes_only_the_given_fields_and_a_refused_put_changes_nothing() {
    let b = broker_with(Config {
        ttl: TTL,
        max_deliveries: 7,
        ..Config::default()
    });
    let info = b.queue("q").put(QueueUpdate::default()).unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (10_000, 7),
        "defaults"
    );
    assert_eq!(info, b.queue("q").info().unwrap());

    let info = b.queue("q").put(ttl(ms(2500))).unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (2500, 7)
    );
    let info = b.queue("q").put(max_deliveries(2)).unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (2500, 2)
    );
    let info = b.queue("q").put(QueueUpdate::default()).unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (2500, 2)
    );

    // A zero TTL is refused, together with any other field.
    let zero = QueueUpdate {
        ttl: Some(Duration::ZERO),
        max_deliveries: Some(5),
    };
    assert_eq!(b.queue("q").put(zero), Err(Error::ZeroTtl));
    let info = b.queue("q").info().unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (2500, 2)
    );
    assert_eq!(b.queue("fresh").put(zero), Err(Error::ZeroTtl));
    assert_eq!(b.queue("fresh").info(), Err(Error::QueueNotFound));

    // A dead-letter queue takes no max_deliveries but 0.
    assert_eq!(
        b.queue("q.dead").put(max_deliveries(1)),
        Err(Error::DeadLetterMaxDeliveries)
    );
    assert_eq!(
        b.queue("q.dead").info(),
        Err(Error::QueueNotFound),
        "not created"
    );
    let info = b.queue("q.dead").put(ttl(ms(700))).unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (700, 0),
        "a .dead queue gets unlimited deliveries whatever the default"
    );
    assert_eq!(
        b.queue("q.dead").put(QueueUpdate {
            ttl: Some(ms(5)),
            max_deliveries: Some(3)
        }),
        Err(Error::DeadLetterMaxDeliveries)
    );
    let info = b.queue("q.dead").info().unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (700, 0),
        "unchanged"
    );
    assert_eq!(
        b.queue("q.dead")
            .put(max_deliveries(0))
            .unwrap()
            .settings
            .max_deliveries,
        0
    );
    assert_eq!(b.queues().len(), 3);

    // The queue's TTL sets the deadline of its leases.
    publish(&b, "q", "a");
    publish(&b, "q", "b");
    let a = fetch(&b, "q");
    let bb = fetch(&b, "q");
    b.clock().advance(ms(2500) - NS);
    assert_eq!(b.queue("q").acknowledge(a.id), Ok(()));
    b.clock().advance(NS);
    assert_eq!(b.queue("q").acknowledge(bb.id), Err(Error::InvalidId));

    // `default` takes settings too.
    let info = b.queue("default").put(ttl(ms(3))).unwrap();
    assert_eq!(
        (info.settings.ttl.as_millis(), info.settings.max_deliveries),
        (3, 7)
    );
}

#[test]
fn queues_are_listed_sorted_by_name_in_byte_order() {
    let b = broker();
    let names = [
        "aa",
        "a_x",
        "default.dead",
        "Zed",
        "a.dead",
        "a-x",
        "9",
        "a",
        "_",
        "-",
        "B",
        "b",
    ];
    for name in names {
        publish(&b, name, name);
    }
    let listed: Vec<String> = b
        .queues()
        .iter()
        .map(|q| q.name.as_str().to_owned())
        .collect();
    assert_eq!(
        listed,
        [
            "-",
            "9",
            "B",
            "Zed",
            "_",
            "a",
            "a-x",
            "a.dead",
            "a_x",
            "aa",
            "b",
            "default",
            "default.dead"
        ]
    );
    let stats: Vec<String> = b
        .all_queue_stats()
        .iter()
        .map(|(name, _)| name.as_str().to_owned())
        .collect();
    assert_eq!(stats, listed);
    // Each listed object is the queue's own.
    for q in b.queues() {
        assert_eq!(q, b.queue(q.name.as_str()).info().unwrap());
        let expected = if q.name.as_str() == "default" { 0 } else { 1 };
        assert_eq!(q.ready, expected, "{}", q.name);
    }
}

#[test]
fn delivery_ids_are_unique_across_queues_and_bound_to_their_queue() {
    let b = broker();
    let mut ids = HashSet::new();
    let mut message_ids = HashSet::new();
    let mut held = Vec::new();
    for round in 0..5 {
        for q in ["a", "b", "default", "a.dead"] {
            message_ids.insert(publish(&b, q, &format!("{q}{round}")));
            let d = fetch(&b, q);
            assert!(ids.insert(d.id), "delivery id {} reused", d.id);
            assert!(d.id > 0 && d.id < MAX_ID);
            assert!(d.message_id < MAX_ID);
            held.push((q, d));
        }
    }
    assert_eq!(message_ids.len(), 20, "message ids are unique too");
    for (q, d) in &held {
        for other in ["a", "b", "default", "a.dead", "nope", "nope.dead"] {
            if other == *q {
                continue;
            }
            assert_eq!(
                b.queue(other).acknowledge(d.id),
                Err(Error::InvalidId),
                "{q} id under {other}"
            );
            assert_eq!(
                b.queue(other).requeue_after(d.id, NOW),
                Err(Error::InvalidId)
            );
            assert_eq!(
                b.queue(other).requeue_after(d.id, ms(5)),
                Err(Error::InvalidId)
            );
            assert_eq!(b.queue(other).touch(d.id, None), Err(Error::InvalidId));
        }
    }
    assert_eq!(
        b.queue("nope").info(),
        Err(Error::QueueNotFound),
        "no queue created"
    );
    assert_eq!(
        b.stats().in_flight,
        20,
        "nothing was settled under a wrong queue"
    );
    for (q, d) in &held {
        assert_eq!(b.queue(q).acknowledge(d.id), Ok(()));
    }
    assert_identity(&b);
}

// ----- waiting fetches and queue life cycle ----------------------------------

#[test]
fn a_fetch_waiting_on_a_missing_queue_is_woken_by_the_first_publish_to_it() {
    let b = broker();
    let mut waiter = Hand::new(&b, "fresh");
    waiter.pending();
    assert_eq!(b.stats().waiting, 1, "counted while waiting for the queue");
    assert_eq!(b.queue("fresh").info(), Err(Error::QueueNotFound));

    // Another queue's creation or a publish elsewhere does not serve it.
    publish(&b, "other", "not for you");
    waiter.pending();
    assert_eq!(b.stats().waiting, 1);

    let woken = waiter.wakes();
    let id = publish(&b, "fresh", "hello");
    assert!(waiter.wakes() > woken, "the publish woke the fetch");
    let d = waiter.delivery();
    assert_eq!((d.body, d.message_id, d.attempt), (body("hello"), id, 1));
    assert_eq!(b.stats().waiting, 0);
    assert_eq!(b.queue("other").info().unwrap().ready, 1);
    assert_eq!(b.queue("fresh").info().unwrap().in_flight, 1);
}

#[test]
fn a_thread_waiting_on_a_missing_queue_is_served_by_its_creation() {
    let b = Arc::new(broker());
    let waiter = {
        let b = b.clone();
        thread::spawn(move || block_on(b.queue("late").fetch(pending())))
    };
    wait_until("the fetch waits", || b.stats().waiting == 1);
    let id = publish(&b, "late", "m");
    wait_until("the waiting thread is served", || waiter.is_finished());
    let d = waiter.join().unwrap().unwrap();
    assert_eq!((d.message_id, d.body), (id, body("m")));
}

#[test]
fn several_fetches_waiting_on_a_missing_queue_each_get_one_message() {
    let b = broker();
    let mut w1 = Hand::new(&b, "new");
    let mut w2 = Hand::new(&b, "new");
    w1.pending();
    w2.pending();
    publish(&b, "new", "1");
    publish(&b, "new", "2");
    let (d1, d2) = (w1.delivery(), w2.delivery());
    let mut got = vec![d1.body, d2.body];
    got.sort();
    assert_eq!(got, bs(&["1", "2"]));
    assert_eq!(b.stats().waiting, 0);
}

#[test]
fn a_fetch_waiting_on_a_deleted_queue_keeps_waiting_and_is_served_by_its_recreation() {
    let b = broker();
    b.queue("q").put(ttl(ms(100))).unwrap();
    let mut waiter = Hand::new(&b, "q");
    waiter.pending();
    assert_eq!(b.queue("q").stats().unwrap().waiting_fetches, 1);

    assert_eq!(b.queue("q").delete(), Ok(Deleted { messages: 0 }));
    // Woken to look for the queue that replaces it, it keeps waiting. (A
    // real executor polls only when woken: without this wake-up the fetch
    // would never move to wait for the recreation.)
    assert!(waiter.wakes() > 0, "the delete woke the fetch");
    waiter.pending();
    assert_eq!(
        b.queue("q").info(),
        Err(Error::QueueNotFound),
        "waiting recreates nothing"
    );
    assert_eq!(b.stats().waiting, 1);

    let woken = waiter.wakes();
    let id = publish(&b, "q", "again");
    assert!(waiter.wakes() > woken);
    let d = waiter.delivery();
    assert_eq!((d.message_id, d.attempt), (id, 1));
    // Served by the new queue, which has default settings.
    let info = b.queue("q").info().unwrap();
    assert_eq!((info.settings.ttl.as_millis(), info.in_flight), (10_000, 1));
    assert_eq!(b.queue("q").acknowledge(d.id), Ok(()));
}

#[test]
fn a_fetch_not_polled_between_delete_and_recreation_is_still_served() {
    let b = broker();
    publish(&b, "q", "x");
    let x = fetch(&b, "q");
    let mut waiter = Hand::new(&b, "q");
    waiter.pending();
    b.queue("q").delete().unwrap();
    publish(&b, "q", "y");
    assert!(waiter.wakes() > 0, "woken to look again");
    let d = waiter.delivery();
    assert_eq!(d.body, body("y"));
    assert_eq!(b.queue("q").acknowledge(x.id), Err(Error::InvalidId));
}

#[test]
fn a_fetch_on_a_deleted_queue_still_times_out() {
    let b = broker();
    publish(&b, "q", "x");
    fetch(&b, "q");
    let fired = Arc::new(AtomicBool::new(false));
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(b.queue("q").fetch(Flag(fired.clone())));
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    b.queue("q").delete().unwrap();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(b.stats().waiting, 1);
    fired.store(true, Ordering::SeqCst);
    assert!(matches!(
        fut.as_mut().poll(&mut cx),
        Poll::Ready(Err(Error::Timeout))
    ));
    assert_eq!(b.stats().waiting, 0, "the timed-out fetch left every list");
}

// ----- identity and attempts -------------------------------------------------

#[test]
fn message_id_is_fixed_and_attempts_count_across_requeue_expiry_and_delay() {
    let b = broker();
    let id = publish(&b, "q", "m");
    let other = publish(&b, "q", "n");
    assert_ne!(id, other);

    let d1 = fetch(&b, "q");
    assert_eq!(
        (d1.message_id, d1.attempt, d1.body.clone()),
        (id, 1, body("m"))
    );
    b.queue("q").requeue_after(d1.id, NOW).unwrap();

    let n = fetch(&b, "q");
    assert_eq!(
        (n.message_id, n.attempt),
        (other, 1),
        "attempts are per message"
    );
    b.queue("q").acknowledge(n.id).unwrap();

    let d2 = fetch(&b, "q");
    assert_eq!((d2.message_id, d2.attempt), (id, 2));
    b.clock().advance(TTL);
    assert_eq!(b.expire_due().expired, 1);

    let d3 = fetch(&b, "q");
    assert_eq!((d3.message_id, d3.attempt), (id, 3));
    b.queue("q").requeue_after(d3.id, ms(10)).unwrap();
    b.clock().advance(ms(10));
    assert_eq!(b.expire_due().came_due, 1);

    let d4 = fetch(&b, "q");
    assert_eq!(
        (d4.message_id, d4.attempt, d4.body.clone()),
        (id, 4, body("m"))
    );
    let ids: HashSet<u64> = [d1.id, d2.id, d3.id, d4.id, n.id].into_iter().collect();
    assert_eq!(ids.len(), 5, "a fresh delivery id every time");
    for old in [d1.id, d2.id, d3.id] {
        assert_eq!(b.queue("q").acknowledge(old), Err(Error::InvalidId));
    }
    assert_eq!(b.queue("q").acknowledge(d4.id), Ok(()));
}

// ----- touch -----------------------------------------------------------------

#[test]
fn touch_extends_the_lease_by_the_queue_ttl_by_default() {
    let b = broker();
    b.queue("q").put(ttl(Duration::from_secs(5))).unwrap();
    publish(&b, "q", "a");
    publish(&b, "q", "b");
    let a = fetch(&b, "q");
    let bb = fetch(&b, "q");
    b.clock().advance(Duration::from_secs(3));
    assert_eq!(b.queue("q").touch(a.id, None), Ok(()));
    assert_eq!(b.queue("q").touch(bb.id, None), Ok(()));
    // Past the old deadline (5 s): nothing expires and the same id works.
    b.clock().advance(Duration::from_secs(2));
    assert_eq!(b.expire_due().expired, 0);
    assert_eq!(b.queue("q").acknowledge(a.id), Ok(()));
    b.clock().advance(Duration::from_secs(3) - NS);
    assert_eq!(b.expire_due().expired, 0);
    assert_eq!(b.queue("q").info().unwrap().in_flight, 1);
    // At the new deadline (3 s + 5 s): gone.
    b.clock().advance(NS);
    assert_eq!(b.queue("q").acknowledge(bb.id), Err(Error::InvalidId));
    assert_eq!(b.queue("q").touch(bb.id, None), Err(Error::InvalidId));
    assert_eq!(b.expire_due().expired, 1);
    let again = fetch(&b, "q");
    assert_eq!((again.message_id, again.attempt), (bb.message_id, 2));
}

#[test]
fn touch_with_an_explicit_ttl_sets_the_deadline_to_now_plus_it() {
    let b = broker();
    for s in ["long", "short", "zero"] {
        publish(&b, "q", s);
    }
    let long = fetch(&b, "q");
    let short = fetch(&b, "q");
    let zero = fetch(&b, "q");
    assert_eq!(
        b.queue("q").touch(zero.id, Some(Duration::ZERO)),
        Err(Error::ZeroTtl)
    );

    b.clock().advance(Duration::from_secs(1));
    assert_eq!(
        b.queue("q").touch(long.id, Some(Duration::from_secs(60))),
        Ok(())
    );
    // A shorter TTL shortens the lease, and the sweep finds the new deadline.
    assert_eq!(
        b.queue("q").touch(short.id, Some(Duration::from_secs(1))),
        Ok(())
    );
    assert_eq!(b.next_due(), Some(at(Duration::from_secs(2))));
    b.clock().advance(Duration::from_secs(1));
    let sweep = b.expire_due();
    assert_eq!(sweep.expired, 1, "the shortened lease ran out at 2 s");
    assert_eq!(
        b.queue("q").requeue_after(short.id, NOW),
        Err(Error::InvalidId)
    );
    let short_again = fetch(&b, "q");
    assert_eq!(short_again.message_id, short.message_id);
    b.queue("q").acknowledge(short_again.id).unwrap();

    b.clock().advance(Duration::from_secs(20)); // t = 22 s
    let sweep = b.expire_due();
    assert_eq!(sweep.expired, 1, "the untouched lease (10 s TTL) ran out");
    assert_eq!(b.queue("q").acknowledge(zero.id), Err(Error::InvalidId));
    b.clock().advance(Duration::from_secs(39) - NS); // just before 61 s
    assert_eq!(b.queue("q").touch(long.id, Some(NS)), Ok(()));
    b.clock().advance(NS); // 61 s: the last touch gave it one nanosecond
    assert_eq!(b.queue("q").acknowledge(long.id), Err(Error::InvalidId));
}

#[test]
fn touch_fails_exactly_when_acknowledge_would() {
    let b = broker();
    for s in ["acked", "requeued", "expired", "touched"] {
        publish(&b, "q", s);
    }
    let acked = fetch(&b, "q");
    let requeued = fetch(&b, "q");
    let expired = fetch(&b, "q");
    b.queue("q").acknowledge(acked.id).unwrap();
    assert_eq!(b.queue("q").touch(acked.id, None), Err(Error::InvalidId));
    b.queue("q").requeue_after(requeued.id, NOW).unwrap();
    assert_eq!(b.queue("q").touch(requeued.id, None), Err(Error::InvalidId));
    for unknown in [0, 999_999, MAX_ID, u64::MAX] {
        assert_eq!(b.queue("q").touch(unknown, None), Err(Error::InvalidId));
    }
    // "requeued" is back at the tail, after "touched".
    let touched = fetch(&b, "q");
    assert_eq!(touched.body, body("touched"));
    let requeued_again = fetch(&b, "q");
    assert_eq!(requeued_again.attempt, 2);

    // At its deadline, before any sweep: touch fails like acknowledge, and
    // does not revive the lease.
    b.clock().advance(TTL - NS);
    assert_eq!(b.queue("q").touch(touched.id, None), Ok(()));
    b.clock().advance(NS);
    assert_eq!(b.queue("q").touch(expired.id, None), Err(Error::InvalidId));
    assert_eq!(
        b.queue("q").touch(expired.id, Some(TTL)),
        Err(Error::InvalidId)
    );
    assert_eq!(b.queue("q").acknowledge(expired.id), Err(Error::InvalidId));
    assert_eq!(
        b.expire_due().expired,
        2,
        "the unswept lease still expires (with requeued_again, due at the same time)"
    );
    assert_eq!(b.queue("q").touch(expired.id, None), Err(Error::InvalidId));

    // Touch settles nothing: acknowledge and requeue work after it.
    assert_eq!(b.queue("q").touch(touched.id, None), Ok(()));
    assert_eq!(b.queue("q").acknowledge(touched.id), Ok(()));
    assert_eq!(b.queue("q").touch(touched.id, None), Err(Error::InvalidId));
    assert_eq!(
        b.queue("q").touch(requeued_again.id, None),
        Err(Error::InvalidId),
        "its lease ran out too"
    );
    let d = fetch(&b, "q");
    assert_eq!(b.queue("q").touch(d.id, Some(ms(1))), Ok(()));
    assert_eq!(b.queue("q").requeue_after(d.id, NOW), Ok(()));
    assert_eq!(b.queue("q").touch(d.id, None), Err(Error::InvalidId));
    let s = b.queue("q").stats().unwrap();
    assert_eq!((s.acknowledged, s.requeued), (2, 2));
    assert_identity(&b);
}

#[test]
fn touch_and_expiry_at_the_deadline_have_exactly_one_winner() {
    let b = broker();
    publish(&b, "q", "early");
    publish(&b, "q", "late");
    let early = fetch(&b, "q");
    let late = fetch(&b, "q");
    b.clock().advance(TTL - NS);
    assert_eq!(
        b.queue("q").touch(early.id, None),
        Ok(()),
        "touch wins before the deadline"
    );
    b.clock().advance(NS);
    assert_eq!(
        b.queue("q").touch(late.id, None),
        Err(Error::InvalidId),
        "expiry wins at it"
    );
    let sweep = b.expire_due();
    assert_eq!(sweep.expired, 1, "only the untouched lease expires");
    assert_eq!(fetch(&b, "q").message_id, late.message_id);
    assert_eq!(b.queue("q").acknowledge(early.id), Ok(()));
    assert_eq!(b.stats().expired, 1);
}

#[test]
fn touch_racing_expiry_on_threads_has_exactly_one_winner() {
    // The clock jumps past every deadline and a sweep runs while another
    // thread touches each lease: every lease is either touched (and then
    // alive) or expired (and then back in the queue), never both, never
    // neither.
    const N: usize = 3_000;
    for round in 0..5 {
        let b = Arc::new(broker_with(Config {
            ttl: ms(10),
            ..Config::default()
        }));
        for i in 0..N {
            publish(&b, "race", &i.to_string());
        }
        let leases: Vec<Delivery> = (0..N).map(|_| fetch(&b, "race")).collect();
        let ids: Vec<u64> = leases.iter().map(|d| d.id).collect();
        let start = Arc::new(Barrier::new(2));
        let toucher = {
            let (b, start, ids) = (b.clone(), start.clone(), ids.clone());
            thread::spawn(move || {
                start.wait();
                ids.iter()
                    .map(|&id| b.queue("race").touch(id, Some(Duration::from_secs(3600))))
                    .collect::<Vec<_>>()
            })
        };
        start.wait();
        // Let the toucher get going for a varying head start, then jump.
        for _ in 0..round * 200 {
            thread::yield_now();
        }
        b.clock().advance(ms(10));
        let expired = b.expire_due().expired;
        let results = toucher.join().unwrap();

        let touched = results.iter().filter(|r| r.is_ok()).count();
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(Error::InvalidId))),
            "{results:?}"
        );
        assert_eq!(touched + expired, N, "round {round}: one winner per lease");
        let info = b.queue("race").info().unwrap();
        assert_eq!((info.in_flight, info.ready), (touched, expired));
        for (id, result) in ids.iter().zip(&results) {
            let ack = b.queue("race").acknowledge(*id);
            if result.is_ok() {
                assert_eq!(ack, Ok(()), "a touched lease is alive");
            } else {
                assert_eq!(ack, Err(Error::InvalidId), "an expired lease stays dead");
            }
        }
        assert_eq!(b.queue("race").stats().unwrap().expired as usize, expired);
        assert_identity(&b);
    }
}

// ----- delay -----------------------------------------------------------------

#[test]
fn a_delayed_publish_becomes_ready_only_when_due() {
    let b = broker();
    let id = publish_delayed(&b, "q", "later", Duration::from_secs(5));
    let info = b.queue("q").info().unwrap();
    assert_eq!(
        (info.ready, info.in_flight, info.delayed, info.bytes),
        (0, 0, 1, 5)
    );
    assert_eq!(b.stats().delayed, 1);
    assert_eq!(b.queue("q").stats().unwrap().delayed, 1);
    assert_eq!(b.next_due(), Some(at(Duration::from_secs(5))));
    assert_empty(&b, "q");

    b.clock().advance(Duration::from_secs(5) - NS);
    let sweep = b.expire_due();
    assert_eq!(sweep.came_due, 0);
    assert_eq!(sweep.next_deadline, Some(at(Duration::from_secs(5))));
    assert_empty(&b, "q");

    b.clock().advance(NS);
    let sweep = b.expire_due();
    assert_eq!((sweep.came_due, sweep.next_deadline), (1, None));
    let info = b.queue("q").info().unwrap();
    assert_eq!((info.ready, info.delayed), (1, 0));
    let d = fetch(&b, "q");
    assert_eq!((d.message_id, d.attempt, d.body), (id, 1, body("later")));

    // A delay of zero is no delay.
    publish_delayed(&b, "q", "now", Duration::ZERO);
    assert_eq!(b.queue("q").info().unwrap().delayed, 0);
    assert_eq!(fetch(&b, "q").body, body("now"));
}

#[test]
fn delayed_messages_come_due_in_due_order_ties_in_the_order_delayed() {
    let b = broker();
    publish(&b, "q", "r");
    let r = fetch(&b, "q");
    publish_delayed(&b, "q", "a30", ms(30));
    publish_delayed(&b, "q", "b10", ms(10));
    b.queue("q").requeue_after(r.id, ms(10)).unwrap(); // "r", due at 10 too
    publish_delayed(&b, "q", "c20", ms(20));
    publish_delayed(&b, "q", "d10", ms(10));
    publish_delayed(&b, "q", "e20", ms(20));
    assert_eq!(b.queue("q").info().unwrap().delayed, 6);
    publish(&b, "q", "ready-first");

    // One sweep past everything: due order, ties in the order delayed; and
    // they join the tail, behind what was already ready.
    b.clock().advance(ms(30));
    assert_eq!(b.expire_due().came_due, 6);
    let got: Vec<Delivery> = (0..7).map(|_| fetch(&b, "q")).collect();
    assert_eq!(
        bodies(&got),
        bs(&["ready-first", "b10", "r", "d10", "c20", "e20", "a30"])
    );
    assert_eq!(
        got[2].attempt, 2,
        "the requeued one is on its second delivery"
    );

    // Sweeps in steps: each step releases only what is due.
    let b = broker();
    for (s, d) in [("x25", 25), ("y5", 5), ("z15", 15), ("w5", 5)] {
        publish_delayed(&b, "q", s, ms(d));
    }
    let mut order = Vec::new();
    for step in [5, 10, 10] {
        b.clock().advance(ms(step));
        let came = b.expire_due().came_due;
        let batch: Vec<Delivery> = (0..came).map(|_| fetch(&b, "q")).collect();
        assert_empty(&b, "q");
        order.push(bodies(&batch));
    }
    assert_eq!(order, [bs(&["y5", "w5"]), bs(&["z15"]), bs(&["x25"])]);
}

#[test]
fn requeue_with_a_delay_holds_the_message_back() {
    let b = broker();
    let id = publish(&b, "q", "m");
    let d = fetch(&b, "q");
    assert_eq!(
        b.queue("q").requeue_after(d.id, Duration::from_secs(2)),
        Ok(())
    );
    assert_eq!(b.queue("q").acknowledge(d.id), Err(Error::InvalidId));
    let info = b.queue("q").info().unwrap();
    assert_eq!(
        (info.ready, info.in_flight, info.delayed, info.bytes),
        (0, 0, 1, 1)
    );
    let s = b.queue("q").stats().unwrap();
    assert_eq!((s.requeued, s.delayed), (1, 1));
    publish(&b, "q", "n");
    assert_eq!(fetch(&b, "q").body, body("n"));

    b.clock().advance(Duration::from_secs(2) - NS);
    b.expire_due();
    assert_empty(&b, "q");
    b.clock().advance(NS);
    assert_eq!(b.expire_due().came_due, 1);
    let again = fetch(&b, "q");
    assert_eq!((again.message_id, again.attempt), (id, 2));
    assert_ne!(again.id, d.id);
}

#[test]
fn delayed_messages_count_towards_max_queue_bytes() {
    let per = 3 + MESSAGE_OVERHEAD;
    let b = broker_with(Config {
        ttl: TTL,
        max_queue_bytes: 2 * per,
        ..Config::default()
    });
    publish_delayed(&b, "q1", "abc", ms(10));
    publish_delayed(&b, "q2", "abc", ms(20));
    assert_eq!(b.stats().queued_bytes, 2 * per);
    assert_eq!(b.queue("q1").info().unwrap().bytes, 3);
    // One budget for all queues: even an empty message does not fit.
    assert_eq!(
        b.queue("q3").publish_after(Bytes::new(), NOW),
        Err(Error::QueueFull)
    );
    assert_eq!(
        b.queue("q1").publish_after(Bytes::new(), ms(1)),
        Err(Error::QueueFull)
    );
    assert_eq!(
        b.default_queue().publish(Bytes::new()),
        Err(Error::QueueFull)
    );
    assert_eq!(b.queue("q3").info(), Err(Error::QueueNotFound));

    // Coming due does not free the bytes; acknowledging does.
    b.clock().advance(ms(10));
    assert_eq!(b.expire_due().came_due, 1);
    assert_eq!(
        b.queue("q3").publish_after(Bytes::new(), NOW),
        Err(Error::QueueFull)
    );
    let d = fetch(&b, "q1");
    // A requeue with a delay keeps the charge too.
    b.queue("q1").requeue_after(d.id, ms(50)).unwrap();
    assert_eq!(
        b.queue("q3").publish_after(Bytes::new(), NOW),
        Err(Error::QueueFull)
    );
    assert_eq!(b.stats().queued_bytes, 2 * per);
    // Deleting a queue with a delayed message frees its charge.
    assert_eq!(b.queue("q1").delete(), Ok(Deleted { messages: 1 }));
    assert_eq!(b.stats().queued_bytes, per);
    publish_delayed(&b, "q3", "xyz", ms(5));
    assert_eq!(b.stats().queued_bytes, 2 * per);
}

#[test]
fn a_waiting_fetch_is_woken_when_a_delayed_message_comes_due() {
    let b = broker();
    b.queue("q").put(QueueUpdate::default()).unwrap();
    let mut waiter = Hand::new(&b, "q");
    waiter.pending();
    let id = publish_delayed(&b, "q", "m", ms(100));
    waiter.pending();
    b.clock().advance(ms(99));
    b.expire_due();
    waiter.pending();
    let woken = waiter.wakes();
    b.clock().advance(ms(1));
    assert_eq!(b.expire_due().came_due, 1);
    assert!(waiter.wakes() > woken, "coming due woke the fetch");
    let d = waiter.delivery();
    assert_eq!((d.message_id, d.attempt), (id, 1));
}

#[test]
fn a_waiting_fetch_on_a_missing_queue_is_served_by_a_delayed_publish_when_due() {
    let b = broker();
    let mut waiter = Hand::new(&b, "q");
    waiter.pending();
    publish_delayed(&b, "q", "m", ms(5));
    waiter.pending();
    b.clock().advance(ms(5));
    b.expire_due();
    assert_eq!(waiter.delivery().body, body("m"));
}

// ----- dead letters ----------------------------------------------------------

#[test]
fn the_timekeeper_is_signalled_when_something_comes_due_earlier() {
    // A delayed message joins its queue "within a few milliseconds" only if
    // the sleeping timekeeper learns of a due time earlier than it sleeps to.
    let b = broker();
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut changed = Box::pin(b.due_changed());
    // Drain any signal left from before (none expected on a new broker).
    let _ = changed.as_mut().poll(&mut cx);
    let mut changed = Box::pin(b.due_changed());
    assert!(
        changed.as_mut().poll(&mut cx).is_pending(),
        "nothing scheduled"
    );

    publish_delayed(&b, "q", "a", ms(50));
    assert!(changed.as_mut().poll(&mut cx).is_ready(), "first due time");
    assert_eq!(b.next_due(), Some(at(ms(50))));

    let mut changed = Box::pin(b.due_changed());
    publish_delayed(&b, "q", "later", ms(80));
    publish_delayed(&b, "other", "later", ms(90));
    assert!(
        changed.as_mut().poll(&mut cx).is_pending(),
        "later: no signal"
    );
    publish_delayed(&b, "other", "sooner", ms(20));
    assert!(changed.as_mut().poll(&mut cx).is_ready(), "earlier: signal");
    assert_eq!(b.next_due(), Some(at(ms(20))));

    b.clock().advance(ms(20));
    let sweep = b.expire_due();
    assert_eq!((sweep.came_due, sweep.next_deadline), (1, Some(at(ms(50)))));
    assert_eq!(fetch(&b, "other").body, body("sooner"));
}

#[test]
fn fetches_waiting_for_a_dead_queue_or_its_base_are_woken_by_moves_and_redrive() {
    let b = broker();
    b.queue("q").put(max_deliveries(1)).unwrap();
    let mut on_dead = Hand::new(&b, "q.dead");
    on_dead.pending();
    assert_eq!(b.stats().waiting, 1);
    let id = publish(&b, "q", "m");
    let d = fetch(&b, "q");
    on_dead.pending();
    b.queue("q").requeue_after(d.id, NOW).unwrap();
    assert!(on_dead.wakes() > 0, "creating q.dead by a move woke it");
    let dead = on_dead.delivery();
    assert_eq!((dead.message_id, dead.attempt), (id, 1));
    b.queue("q.dead").requeue_after(dead.id, NOW).unwrap();

    let mut on_base = Hand::new(&b, "q");
    on_base.pending();
    assert_eq!(b.queue("q.dead").redrive(), Ok(Redriven { moved: 1 }));
    assert!(on_base.wakes() > 0, "a redrive wakes fetches on the target");
    let back = on_base.delivery();
    assert_eq!(
        (back.message_id, back.attempt, back.dead_letter),
        (id, 1, None)
    );
}

#[test]
fn the_nth_delivery_ending_by_requeue_moves_the_message_to_the_dead_queue() {
    let b = broker();
    b.queue("q").put(max_deliveries(3)).unwrap();
    let id = publish(&b, "q", "m");
    for attempt in 1..=2 {
        let d = fetch(&b, "q");
        assert_eq!(d.attempt, attempt);
        b.queue("q").requeue_after(d.id, NOW).unwrap();
        assert_eq!(b.queue("q.dead").info(), Err(Error::QueueNotFound));
    }
    let third = fetch(&b, "q");
    assert_eq!(third.attempt, 3);
    b.queue("q").requeue_after(third.id, NOW).unwrap();
    assert_empty(&b, "q");
    let info = b.queue("q").info().unwrap();
    assert_eq!(
        (info.ready, info.in_flight, info.delayed, info.bytes),
        (0, 0, 0, 0)
    );
    let dead = b.queue("q.dead").info().unwrap();
    assert_eq!(
        (dead.ready, dead.settings.max_deliveries, dead.bytes),
        (1, 0, 1)
    );

    let s = b.queue("q").stats().unwrap();
    assert_eq!(
        (s.delivered, s.requeued, s.dead_lettered, s.expired),
        (3, 2, 1, 0)
    );
    assert_eq!(b.queue("q.dead").stats().unwrap().published, 1);
    assert_eq!(b.stats().queued_bytes, 1 + MESSAGE_OVERHEAD, "still held");

    let d = fetch(&b, "q.dead");
    assert_eq!(
        (d.message_id, d.attempt, d.body.clone()),
        (id, 1, body("m"))
    );
    assert_eq!(d.dead_letter.as_ref().map(|q| q.as_str()), Some("q"));
    assert_eq!(b.queue("q").acknowledge(third.id), Err(Error::InvalidId));
    assert_identity(&b);
}

#[test]
fn the_nth_delivery_ending_by_a_delayed_requeue_moves_at_once() {
    let b = broker();
    b.queue("q").put(max_deliveries(1)).unwrap();
    publish(&b, "q", "m");
    let d = fetch(&b, "q");
    b.queue("q")
        .requeue_after(d.id, Duration::from_secs(60))
        .unwrap();
    assert_eq!(b.queue("q").info().unwrap().delayed, 0, "not delayed in q");
    let dead = b.queue("q.dead").info().unwrap();
    assert_eq!(
        (dead.ready, dead.delayed),
        (1, 0),
        "ready in q.dead at once"
    );
    let s = b.queue("q").stats().unwrap();
    assert_eq!((s.requeued, s.dead_lettered), (0, 1));
    assert_eq!(fetch(&b, "q.dead").body, body("m"));
    assert_identity(&b);
}

#[test]
fn the_nth_delivery_ending_by_expiry_moves_the_message_to_the_dead_queue() {
    let b = broker();
    b.queue("q").put(max_deliveries(2)).unwrap();
    let id = publish(&b, "q", "m");
    fetch(&b, "q");
    b.clock().advance(TTL);
    assert_eq!(b.expire_due().expired, 1);
    assert_eq!(fetch(&b, "q").attempt, 2);
    assert_eq!(b.queue("q.dead").info(), Err(Error::QueueNotFound));
    b.clock().advance(TTL);
    assert_eq!(
        b.expire_due().expired,
        1,
        "a dead-lettering expiry is reported"
    );
    assert_empty(&b, "q");
    let s = b.queue("q").stats().unwrap();
    assert_eq!((s.expired, s.dead_lettered, s.requeued), (1, 1, 0));
    let d = fetch(&b, "q.dead");
    assert_eq!((d.message_id, d.attempt), (id, 1));
    assert_eq!(d.dead_letter.as_ref().map(|q| q.as_str()), Some("q"));
    assert_identity(&b);
}

#[test]
fn the_dead_queue_is_an_ordinary_queue_with_unlimited_deliveries() {
    let b = broker_with(Config {
        ttl: TTL,
        max_deliveries: 1,
        ..Config::default()
    });
    // Something published straight to q.dead first: moves join the tail.
    publish(&b, "q.dead", "direct");
    publish(&b, "q", "m1");
    publish(&b, "q", "m2");
    let m1 = fetch(&b, "q");
    let m2 = fetch(&b, "q");
    b.queue("q").requeue_after(m2.id, NOW).unwrap();
    b.queue("q").requeue_after(m1.id, NOW).unwrap();
    let got: Vec<Delivery> = (0..3).map(|_| fetch(&b, "q.dead")).collect();
    assert_eq!(bodies(&got), bs(&["direct", "m2", "m1"]));
    assert_eq!(got[0].dead_letter, None, "not dead-lettered, published");
    assert_eq!(got[1].dead_letter.as_ref().map(|q| q.as_str()), Some("q"));

    b.queue("q.dead").acknowledge(got[0].id).unwrap();
    b.queue("q.dead").acknowledge(got[2].id).unwrap();

    // Requeue, expiry, delay and touch on the dead queue; never dead again.
    let mut d = got[1].clone();
    for attempt in 2..=10u32 {
        match attempt % 3 {
            0 => b.queue("q.dead").requeue_after(d.id, NOW).unwrap(),
            1 => {
                b.queue("q.dead").requeue_after(d.id, ms(5)).unwrap();
                b.clock().advance(ms(5));
                assert_eq!(b.expire_due().came_due, 1);
            }
            _ => {
                b.queue("q.dead").touch(d.id, None).unwrap();
                b.clock().advance(TTL);
                assert_eq!(b.expire_due().expired, 1);
            }
        }
        d = fetch(&b, "q.dead");
        assert_eq!((d.body.clone(), d.attempt), (body("m2"), attempt));
        assert_eq!(d.dead_letter.as_ref().map(|q| q.as_str()), Some("q"));
        assert_empty(&b, "q.dead");
    }
    assert_eq!(b.queue("q.dead").acknowledge(d.id), Ok(()));
    assert_eq!(b.queue("q.dead.dead").info(), Err(Error::InvalidQueueName));
    assert_eq!(b.queues().len(), 3, "default, q, q.dead");
    assert_eq!(b.queue("q.dead").stats().unwrap().dead_lettered, 0);
    assert_identity(&b);
}

#[test]
fn a_lowered_max_deliveries_applies_as_each_delivery_next_ends() {
    let b = broker();
    b.queue("q").put(max_deliveries(5)).unwrap();
    publish(&b, "q", "held");
    publish(&b, "q", "waiting");
    publish(&b, "q", "expiring");
    let held = fetch(&b, "q");
    let waiting = fetch(&b, "q");
    b.queue("q").requeue_after(waiting.id, NOW).unwrap();
    let expiring = fetch(&b, "q");
    b.queue("q").requeue_after(expiring.id, NOW).unwrap();
    let waiting = fetch(&b, "q");
    assert_eq!(waiting.attempt, 2);
    b.queue("q").requeue_after(waiting.id, NOW).unwrap();
    let expiring = fetch(&b, "q");
    assert_eq!(expiring.attempt, 2);
    // Ready: "waiting" (2 deliveries so far). Leased: "held" (1), "expiring" (2).

    b.queue("q").put(max_deliveries(1)).unwrap();
    b.queue("q").requeue_after(held.id, NOW).unwrap();
    assert_eq!(b.queue("q.dead").info().unwrap().ready, 1, "held: 1 >= 1");
    // A ready message is delivered once more, and dead when that ends.
    let waiting = fetch(&b, "q");
    assert_eq!(
        (waiting.body.clone(), waiting.attempt),
        (body("waiting"), 3)
    );
    b.queue("q").requeue_after(waiting.id, ms(5)).unwrap();
    assert_eq!(b.queue("q.dead").info().unwrap().ready, 2);
    b.clock().advance(TTL);
    assert_eq!(b.expire_due().expired, 1);
    assert_eq!(b.queue("q.dead").info().unwrap().ready, 3);
    assert_empty(&b, "q");
    let order: Vec<Delivery> = (0..3).map(|_| fetch(&b, "q.dead")).collect();
    assert_eq!(bodies(&order), bs(&["held", "waiting", "expiring"]));
    assert_eq!(b.queue("q").stats().unwrap().dead_lettered, 3);

    // Raised again (0: unlimited), nothing more goes dead.
    b.queue("q").put(max_deliveries(0)).unwrap();
    publish(&b, "q", "free");
    for _ in 0..10 {
        let d = fetch(&b, "q");
        b.queue("q").requeue_after(d.id, NOW).unwrap();
    }
    assert_eq!(b.queue("q").stats().unwrap().dead_lettered, 3);
    assert_identity(&b);
}

#[test]
fn config_max_deliveries_is_the_default_of_every_queue_but_dead_ones() {
    let b = broker_with(Config {
        ttl: TTL,
        max_deliveries: 2,
        ..Config::default()
    });
    assert_eq!(
        b.queue("default").info().unwrap().settings.max_deliveries,
        2
    );
    b.default_queue().publish(body("d")).unwrap();
    publish(&b, "q", "m");
    assert_eq!(b.queue("q").info().unwrap().settings.max_deliveries, 2);
    for q in ["default", "q"] {
        for _ in 0..2 {
            let d = fetch(&b, q);
            b.queue(q).requeue_after(d.id, NOW).unwrap();
        }
        assert_empty(&b, q);
        let dead = format!("{q}.dead");
        let info = b.queue(&dead).info().unwrap();
        assert_eq!((info.ready, info.settings.max_deliveries), (1, 0));
        let d = fetch(&b, &dead);
        assert_eq!(d.dead_letter.as_ref().map(|n| n.as_str()), Some(q));
    }
}

#[test]
fn redrive_moves_every_ready_dead_message_back_with_attempts_reset() {
    let b = broker();
    b.queue("q").put(max_deliveries(1)).unwrap();
    let ids: Vec<u64> = ["a", "b", "c", "d"]
        .iter()
        .map(|s| publish(&b, "q", s))
        .collect();
    for _ in 0..4 {
        let d = fetch(&b, "q");
        b.queue("q").requeue_after(d.id, NOW).unwrap();
    }
    // In q.dead: a (leased), b (delayed by a requeue), c and d (ready).
    let a = fetch(&b, "q.dead");
    let bb = fetch(&b, "q.dead");
    b.queue("q.dead").requeue_after(bb.id, ms(50)).unwrap();
    publish(&b, "q", "x");

    assert_eq!(b.queue("q.dead").redrive(), Ok(Redriven { moved: 2 }));
    let dead = b.queue("q.dead").info().unwrap();
    assert_eq!((dead.ready, dead.in_flight, dead.delayed), (0, 1, 1));
    let ds = b.queue("q.dead").stats().unwrap();
    assert_eq!((ds.redriven, ds.acknowledged), (2, 2));
    assert_eq!(b.queue("q").stats().unwrap().published, 4 + 1 + 2);

    let got: Vec<Delivery> = (0..3).map(|_| fetch(&b, "q")).collect();
    assert_eq!(bodies(&got), bs(&["x", "c", "d"]), "to the tail, in order");
    assert_eq!(
        got[1..]
            .iter()
            .map(|d| (d.message_id, d.attempt, d.dead_letter.clone()))
            .collect::<Vec<_>>(),
        [(ids[2], 1, None), (ids[3], 1, None)]
    );
    // Redriven messages count deliveries afresh: max 1 sends them back.
    b.queue("q").requeue_after(got[1].id, NOW).unwrap();
    let again = fetch(&b, "q.dead");
    assert_eq!((again.message_id, again.attempt), (ids[2], 1));
    assert_eq!(again.dead_letter.as_ref().map(|q| q.as_str()), Some("q"));

    assert_eq!(
        b.queue("q.dead").acknowledge(a.id),
        Ok(()),
        "leased messages stay"
    );
    assert_eq!(
        b.queue("q.dead").redrive(),
        Ok(Redriven { moved: 0 }),
        "nothing ready"
    );
    b.clock().advance(ms(50));
    b.expire_due();
    assert_eq!(
        b.queue("q.dead").redrive(),
        Ok(Redriven { moved: 1 }),
        "the delayed one, once due"
    );
    assert_eq!(fetch(&b, "q").message_id, ids[1]);

    assert_eq!(b.queue("q").redrive(), Err(Error::NotDeadLetterQueue));
    assert_eq!(b.queue("default").redrive(), Err(Error::NotDeadLetterQueue));
    assert_eq!(b.queue("nope").redrive(), Err(Error::NotDeadLetterQueue));
    assert_eq!(b.queue("nope.dead").redrive(), Err(Error::QueueNotFound));
    assert_eq!(b.queue("nope").info(), Err(Error::QueueNotFound));
    assert_identity(&b);
}

#[test]
fn redrive_into_a_deleted_base_queue_recreates_it() {
    let b = broker_with(Config {
        ttl: TTL,
        max_deliveries: 1,
        ..Config::default()
    });
    b.queue("q").put(ttl(ms(5))).unwrap();
    let id = publish(&b, "q", "m");
    let d = fetch(&b, "q");
    b.queue("q").requeue_after(d.id, NOW).unwrap();
    b.queue("q").delete().unwrap();
    assert_eq!(b.queue("q.dead").redrive(), Ok(Redriven { moved: 1 }));
    let info = b.queue("q").info().unwrap();
    assert_eq!((info.ready, info.settings.ttl.as_millis()), (1, 10_000));
    let d = fetch(&b, "q");
    assert_eq!((d.message_id, d.attempt, d.dead_letter), (id, 1, None));
    b.default_queue().publish(body("z")).unwrap();
    let z = b.default_queue().try_fetch().unwrap().unwrap();
    b.default_queue().requeue(z.id).unwrap();
    assert_eq!(b.queue("default.dead").redrive(), Ok(Redriven { moved: 1 }));
    assert_eq!(
        b.default_queue().try_fetch().unwrap().unwrap().body,
        body("z")
    );
    assert_identity(&b);
}

// ----- counters --------------------------------------------------------------

#[test]
fn counters_keep_their_identity_through_a_mixed_scenario() {
    let b = broker();
    b.queue("mix").put(max_deliveries(2)).unwrap();
    b.queue("slow").put(ttl(ms(100))).unwrap();
    for i in 0..12 {
        publish(&b, "mix", &format!("m{i}"));
        publish_delayed(&b, "slow", &format!("s{i}"), ms(10 * (i % 4)));
    }
    b.default_queue().publish(body("d")).unwrap();
    assert_identity(&b);

    // mix: 4 acked, 4 requeued (2 of them with a delay), 4 left to expire.
    let ds: Vec<Delivery> = (0..12).map(|_| fetch(&b, "mix")).collect();
    for (i, d) in ds.iter().enumerate() {
        match i % 3 {
            0 => b.queue("mix").acknowledge(d.id).unwrap(),
            1 => b
                .queue("mix")
                .requeue_after(d.id, if i % 2 == 0 { NOW } else { ms(20) })
                .unwrap(),
            _ => b.queue("mix").touch(d.id, Some(ms(30))).unwrap(),
        }
    }
    assert_identity(&b);
    b.clock().advance(ms(30));
    let sweep = b.expire_due();
    assert_eq!(sweep.expired, 4);
    assert_identity(&b);
    let s = b.queue("mix").stats().unwrap();
    assert_eq!(
        (s.acknowledged, s.requeued, s.expired, s.dead_lettered),
        (4, 4, 4, 0)
    );

    // Second deliveries of the 8 left: all end without an acknowledge.
    let second: Vec<Delivery> = (0..8).map(|_| fetch(&b, "mix")).collect();
    assert!(second.iter().all(|d| d.attempt == 2));
    for (i, d) in second.iter().enumerate() {
        if i % 2 == 0 {
            b.queue("mix").requeue_after(d.id, ms(i as u64)).unwrap();
        }
    }
    assert_identity(&b);
    b.clock().advance(TTL);
    assert_eq!(b.expire_due().expired, 4);
    let s = b.queue("mix").stats().unwrap();
    assert_eq!((s.dead_lettered, s.requeued, s.expired), (8, 4, 4));
    assert_eq!(b.queue("mix.dead").stats().unwrap().published, 8);
    assert_identity(&b);

    // slow: every delayed one is due by now; lease a few, let them expire.
    assert_eq!(b.queue("slow").info().unwrap().ready, 12);
    for _ in 0..6 {
        let d = fetch(&b, "slow");
        b.queue("slow").acknowledge(d.id).unwrap();
    }
    for _ in 0..3 {
        fetch(&b, "slow");
    }
    b.clock().advance(ms(100));
    assert_eq!(b.expire_due().expired, 3);
    assert_identity(&b);

    // Redrive half the dead letters' worth after fetching some of them.
    let dl = fetch(&b, "mix.dead");
    b.queue("mix.dead").acknowledge(dl.id).unwrap();
    let kept = fetch(&b, "mix.dead");
    assert_eq!(b.queue("mix.dead").redrive(), Ok(Redriven { moved: 6 }));
    assert_identity(&b);
    b.queue("mix.dead").requeue_after(kept.id, ms(1)).unwrap();
    assert_identity(&b);

    let all: HashMap<String, _> = b
        .all_queue_stats()
        .into_iter()
        .map(|(n, s)| (n.as_str().to_owned(), s))
        .collect();
    let (mix, dead, slow) = (&all["mix"], &all["mix.dead"], &all["slow"]);
    assert_eq!(mix.published, 12 + 6);
    assert_eq!((mix.ready, mix.in_flight, mix.delayed), (6, 0, 0));
    assert_eq!(
        (dead.published, dead.acknowledged, dead.redriven),
        (8, 7, 6)
    );
    assert_eq!((dead.ready, dead.in_flight, dead.delayed), (0, 0, 1));
    assert_eq!(
        (slow.published, slow.acknowledged, slow.expired),
        (12, 6, 3)
    );
    let total = b.stats();
    assert_eq!(
        total.published,
        all.values().map(|s| s.published).sum::<u64>()
    );
    assert_eq!(total.dead_lettered, 8);
    assert_eq!(
        total.ready + total.in_flight + total.delayed,
        6 + 1 + 6 + 1,
        "mix 6, mix.dead 1 delayed, slow 6, default 1"
    );
    assert_eq!(assert_identity(&b), 4);
}

// ----- memory ----------------------------------------------------------------

#[test]
fn timer_memory_follows_live_state() {
    let b = broker();
    for i in 0..100_000u32 {
        b.queue("q")
            .publish_after(Bytes::from(i.to_le_bytes().to_vec()), NOW)
            .unwrap();
        let d = fetch(&b, "q");
        b.queue("q").acknowledge(d.id).unwrap();
    }
    // At most one agenda hint per timer shard (8), whatever the count.
    assert_eq!(b.timer_counts(), (0, 0));
    assert!(
        b.timer_entries() <= 8,
        "at most one agenda hint per timer shard after 100k settled leases, got {}",
        b.timer_entries()
    );
    b.clock().advance(TTL);
    assert_eq!(b.expire_due().expired, 0);
    assert_eq!(b.timer_entries(), 0);
    assert_eq!(b.next_due(), None);

    // Live leases and delayed messages each hold an entry, and give it back.
    for i in 0..1000 {
        publish_delayed(&b, "q", "x", ms(1 + i % 7));
    }
    publish(&b, "q", "leased");
    let leased = fetch(&b, "q");
    assert!(b.timer_entries() >= 1001);
    for _ in 0..500 {
        b.clock().advance(ms(1));
        b.queue("q").touch(leased.id, None).unwrap();
    }
    b.expire_due();
    let mut n = 0;
    while let Some(d) = b.queue("q").try_fetch().unwrap() {
        b.queue("q").acknowledge(d.id).unwrap();
        n += 1;
    }
    assert_eq!(n, 1000);
    assert_eq!(
        b.timer_counts(),
        (1, 0),
        "the one lease is all the timers hold"
    );
    assert!(
        b.timer_entries() <= 1 + 8,
        "one lease's run and at most one hint per timer shard: {}",
        b.timer_entries()
    );
    b.queue("q").acknowledge(leased.id).unwrap();
    b.clock().advance(TTL);
    b.expire_due();
    assert_eq!(b.timer_entries(), 0);
}

// ----- fairness --------------------------------------------------------------

/// A model of an executor with a FIFO run queue: polls, in the order they
/// were woken, every fetch woken since its last poll, until none is left.
/// Returns which fetch got which message.
fn run_woken(hands: &mut [Hand<'_, Delivery>]) -> Vec<(usize, Bytes)> {
    let mut served = Vec::new();
    loop {
        let next = hands
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.done && h.wakes() > h.seen)
            .min_by_key(|(_, h)| h.last_woken())
            .map(|(i, _)| i);
        let Some(i) = next else {
            return served;
        };
        hands[i].seen = hands[i].wakes();
        if let Poll::Ready(result) = hands[i].poll() {
            served.push((i, result.expect("a delivery").body));
        }
    }
}

#[test]
fn waiting_fetches_are_served_in_the_order_they_began_waiting() {
    let b = broker();
    b.queue("f").put(QueueUpdate::default()).unwrap();

    // One message at a time.
    let mut w: Vec<Hand<'_, Delivery>> = (0..3).map(|_| Hand::new(&b, "f")).collect();
    for h in &mut w {
        h.pending();
    }
    assert_eq!(b.queue("f").stats().unwrap().waiting_fetches, 3);
    let mut served = Vec::new();
    for s in ["m0", "m1", "m2"] {
        publish(&b, "f", s);
        served.extend(run_woken(&mut w));
    }
    assert_eq!(
        served,
        [(0, body("m0")), (1, body("m1")), (2, body("m2"))],
        "served in the order they began waiting"
    );
    assert_eq!(b.stats().waiting, 0);

    // Three messages at once.
    let mut w: Vec<Hand<'_, Delivery>> = (0..3).map(|_| Hand::new(&b, "f")).collect();
    for h in &mut w {
        h.pending();
    }
    for s in ["n0", "n1", "n2"] {
        publish(&b, "f", s);
    }
    assert_eq!(
        run_woken(&mut w),
        [(0, body("n0")), (1, body("n1")), (2, body("n2"))]
    );

    // The first publish wakes the oldest waiter, and only it.
    let mut w: Vec<Hand<'_, Delivery>> = (0..3).map(|_| Hand::new(&b, "f")).collect();
    for h in &mut w {
        h.pending();
    }
    publish(&b, "f", "o0");
    assert_eq!(w.iter().map(Hand::wakes).collect::<Vec<_>>(), [1, 0, 0]);
    assert_eq!(run_woken(&mut w), [(0, body("o0"))]);
}

#[test]
fn a_woken_fetch_that_loses_its_message_to_try_fetch_keeps_its_place() {
    let b = broker();
    b.queue("f").put(QueueUpdate::default()).unwrap();
    let mut w: Vec<Hand<'_, Delivery>> = (0..2).map(|_| Hand::new(&b, "f")).collect();
    for h in &mut w {
        h.pending();
    }

    publish(&b, "f", "stolen");
    assert_eq!((w[0].wakes(), w[1].wakes()), (1, 0));
    assert_eq!(fetch(&b, "f").body, body("stolen"), "a racing try_fetch");
    assert_eq!(run_woken(&mut w), [], "the woken fetch found nothing");

    publish(&b, "f", "next");
    assert_eq!(
        (w[0].wakes(), w[1].wakes()),
        (2, 0),
        "the next publish goes to the first waiter, not the one behind it"
    );
    assert_eq!(run_woken(&mut w), [(0, body("next"))]);
    publish(&b, "f", "last");
    assert_eq!(run_woken(&mut w), [(1, body("last"))]);
    assert_eq!(b.stats().waiting, 0);
}

// ----- many threads ----------------------------------------------------------

/// A tiny deterministic generator (no dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[derive(Default)]
struct ConsumerLog {
    acked: Vec<(u64, Bytes)>,
    deliveries: Vec<(&'static str, u64, u32, u64)>,
    requeues: usize,
}

#[test]
fn concurrent_producers_and_consumers_over_named_queues_lose_and_duplicate_nothing() {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    const PER_PRODUCER: usize = 1_500;
    const QUEUES: [&str; 3] = ["mt-a", "mt-b", "mt-c"];
    const FETCH_FROM: [&str; 4] = ["mt-a", "mt-b", "mt-c", "mt-c.dead"];
    let lease_ttl = ms(40);
    let b = Arc::new(broker_with(Config {
        ttl: lease_ttl,
        ..Config::default()
    }));
    b.queue("mt-c").put(max_deliveries(3)).unwrap();
    let total = PRODUCERS * PER_PRODUCER;
    let acked_count = Arc::new(AtomicUsize::new(0));
    let stop_time = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(PRODUCERS + CONSUMERS + 1));

    // Timekeeper: the only thread that moves time, 1 ms per pass.
    let timekeeper = {
        let (b, stop) = (b.clone(), stop_time.clone());
        thread::spawn(move || {
            let mut sweeps = 0u64;
            while !stop.load(Ordering::SeqCst) {
                b.clock().advance(ms(1));
                b.expire_due();
                sweeps += 1;
                for _ in 0..20 {
                    thread::yield_now();
                }
            }
            sweeps
        })
    };

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (b, start) = (b.clone(), start.clone());
            thread::spawn(move || {
                let mut rng = Lcg(p as u64 + 1);
                start.wait();
                let mut published = Vec::with_capacity(PER_PRODUCER);
                for i in 0..PER_PRODUCER {
                    let queue = QUEUES[(p + i) % 3];
                    let text = format!("{p}:{i}");
                    let delay = if rng.next(10) == 0 {
                        ms(1 + rng.next(20))
                    } else {
                        NOW
                    };
                    let id = b
                        .queue(queue)
                        .publish_after(body(&text), delay)
                        .unwrap()
                        .message_id;
                    published.push((id, body(&text)));
                }
                published
            })
        })
        .collect();

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let (b, start, acked_count) = (b.clone(), start.clone(), acked_count.clone());
            thread::spawn(move || {
                let mut rng = Lcg(100 + c as u64);
                let mut log = ConsumerLog::default();
                start.wait();
                let began = Instant::now();
                let mut turn = c;
                while acked_count.load(Ordering::SeqCst) < total {
                    assert!(
                        began.elapsed() < Duration::from_secs(120),
                        "consumer {c} never finished: {} of {total} acknowledged",
                        acked_count.load(Ordering::SeqCst)
                    );
                    turn += 1;
                    let queue = FETCH_FROM[turn % FETCH_FROM.len()];
                    let before = b.clock().now();
                    let Some(d) = b.queue(queue).try_fetch().unwrap() else {
                        thread::yield_now();
                        continue;
                    };
                    log.deliveries.push((queue, d.message_id, d.attempt, d.id));
                    let dead = queue.ends_with(".dead");
                    assert_eq!(d.dead_letter.is_some(), dead, "{queue}: {d:?}");
                    // A settlement may fail only if the lease ran out.
                    let lapsed =
                        |b: &TestBroker| b.clock().now() >= before.saturating_add(lease_ttl);
                    let roll = if dead {
                        rng.next(100) % 70
                    } else {
                        rng.next(100)
                    };
                    let result = match roll {
                        0..=54 => {
                            let r = b.queue(queue).acknowledge(d.id);
                            if r.is_ok() {
                                log.acked.push((d.message_id, d.body.clone()));
                                acked_count.fetch_add(1, Ordering::SeqCst);
                            }
                            r
                        }
                        55..=69 => {
                            let r = b.queue(queue).requeue_after(d.id, NOW);
                            log.requeues += usize::from(r.is_ok());
                            r
                        }
                        70..=79 => {
                            let r = b.queue(queue).requeue_after(d.id, ms(1 + rng.next(5)));
                            log.requeues += usize::from(r.is_ok());
                            r
                        }
                        80..=89 => b.queue(queue).touch(d.id, None).and_then(|()| {
                            let r = b.queue(queue).acknowledge(d.id);
                            if r.is_ok() {
                                log.acked.push((d.message_id, d.body.clone()));
                                acked_count.fetch_add(1, Ordering::SeqCst);
                            }
                            r
                        }),
                        90..=94 => b.queue(queue).touch(d.id, Some(ms(2))),
                        _ => Ok(()), // dropped: left to expire
                    };
                    if let Err(e) = result {
                        assert_eq!(e, Error::InvalidId, "{queue}: {d:?}");
                        assert!(lapsed(&b), "{queue}: a live lease was refused: {d:?}");
                    }
                }
                log
            })
        })
        .collect();

    start.wait();
    let mut published: HashMap<u64, Bytes> = HashMap::new();
    for p in producers {
        for (id, body) in p.join().unwrap() {
            assert!(
                published.insert(id, body).is_none(),
                "message id {id} reused"
            );
        }
    }
    let logs: Vec<ConsumerLog> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    stop_time.store(true, Ordering::SeqCst);
    let sweeps = timekeeper.join().unwrap();
    assert!(sweeps > 0);

    // Nothing lost, nothing duplicated, nothing altered.
    let mut acked: HashMap<u64, Bytes> = HashMap::new();
    for (id, body) in logs.iter().flat_map(|l| l.acked.iter()) {
        assert!(
            acked.insert(*id, body.clone()).is_none(),
            "message {id} acknowledged twice"
        );
    }
    assert_eq!(acked.len(), total);
    assert_eq!(acked, published);

    // Delivery ids never repeat; attempts count 1, 2, ... per message and queue.
    let mut delivery_ids = HashSet::new();
    let mut attempts: HashMap<(&str, u64), Vec<u32>> = HashMap::new();
    for &(queue, message_id, attempt, id) in logs.iter().flat_map(|l| l.deliveries.iter()) {
        assert!(delivery_ids.insert(id), "delivery id {id} handed out twice");
        attempts
            .entry((queue, message_id))
            .or_default()
            .push(attempt);
    }
    for ((queue, message_id), mut seen) in attempts {
        seen.sort_unstable();
        let expected: Vec<u32> = (1..=seen.len() as u32).collect();
        assert_eq!(seen, expected, "attempts of {message_id} in {queue}");
        if queue == "mt-c" {
            assert!(
                seen.len() <= 3,
                "mt-c delivered {message_id} {} times",
                seen.len()
            );
        }
    }

    // Drain anything left (nothing should be) and check the counters.
    b.clock().advance(Duration::from_secs(3600));
    b.expire_due();
    let deliveries: usize = logs.iter().map(|l| l.deliveries.len()).sum();
    let stats = b.all_queue_stats();
    let get = |name: &str| {
        stats
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, s)| *s)
    };
    let mut delivered = 0;
    let mut producer_published = 0;
    for (name, s) in &stats {
        assert_eq!(
            (s.ready, s.in_flight, s.delayed, s.bytes),
            (0, 0, 0, 0),
            "{name}: {s:?}"
        );
        assert_eq!(
            s.published,
            s.acknowledged + s.dead_lettered,
            "{name}: every message acknowledged or moved on"
        );
        assert_eq!(
            s.delivered,
            s.acknowledged + s.requeued + s.expired + s.dead_lettered,
            "{name}: every delivery ended exactly one way"
        );
        delivered += s.delivered;
        if QUEUES.contains(&name.as_str()) {
            producer_published += s.published;
        }
    }
    assert_eq!(producer_published as usize, total);
    assert_eq!(delivered as usize, deliveries);
    let (c, dead) = (get("mt-c").unwrap(), get("mt-c.dead"));
    assert_eq!(dead.map_or(0, |d| d.published), c.dead_lettered);
    assert!(c.dead_lettered > 0, "the run moved dead letters: {c:?}");
    let expired: u64 = stats.iter().map(|(_, s)| s.expired).sum();
    assert!(expired > 0, "the run expired leases");
    assert_eq!(get("mt-a").unwrap().dead_lettered, 0);
    assert_eq!(get("mt-b").unwrap().dead_lettered, 0);
    let requeues: usize = logs.iter().map(|l| l.requeues).sum();
    let counted_requeues: u64 = stats.iter().map(|(_, s)| s.requeued).sum();
    assert!(
        counted_requeues as usize <= requeues,
        "dead-letter moves are not requeues"
    );
    let s = b.stats();
    assert_eq!(s.queued_bytes, 0);
    assert_eq!(
        s.acknowledged as usize, total,
        "each message acknowledged once"
    );
    assert_eq!(b.timer_entries(), 0);
    assert_eq!(assert_identity(&b), stats.len());
}

/// A fetch that takes the message it was woken for wakes nobody else: with
/// three fetches waiting, the first publish is served by the first and the
/// second waiter stays first in line: the second publish wakes it, and only
/// it, so an executor that polls the newest woken task first (as tokio's
/// LIFO slot does) has no third waiter to prefer.
#[test]
fn a_fetch_served_its_message_wakes_nobody_for_nothing() {
    let b = broker();
    b.queue("g").put(QueueUpdate::default()).unwrap();
    let mut w: Vec<Hand<'_, Delivery>> = (0..3).map(|_| Hand::new(&b, "g")).collect();
    for h in &mut w {
        h.pending();
    }
    publish(&b, "g", "p0");
    assert_eq!((w[0].wakes(), w[1].wakes(), w[2].wakes()), (1, 0, 0));
    let Poll::Ready(Ok(d)) = w[0].poll() else {
        panic!("the first waiter gets the message it was woken for");
    };
    assert_eq!(d.body, body("p0"));
    assert_eq!(
        (w[1].wakes(), w[2].wakes()),
        (0, 0),
        "nothing is ready: the wake-up is not passed on"
    );
    // The next message wakes the second waiter only.
    publish(&b, "g", "p1");
    assert_eq!((w[1].wakes(), w[2].wakes()), (1, 0));
    let Poll::Ready(Ok(d)) = w[1].poll() else {
        panic!("the second waiter gets the second message");
    };
    assert_eq!(d.body, body("p1"));
}
