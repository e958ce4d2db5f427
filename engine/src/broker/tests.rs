//! Unit tests for every rule in the contract's Semantics section, driven by a
//! [`ManualClock`] (no test sleeps to check a TTL), plus multi-threaded runs
//! of the real lock-free structures.

use std::collections::HashSet;
use std::future::{pending, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool as StdAtomicBool, Ordering as StdOrdering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::message::MESSAGE_OVERHEAD;
use crate::stats::Stats;

const TTL: Duration = Duration::from_secs(10);

fn broker() -> Broker<ManualClock> {
    Broker::with_clock(
        Config {
            ttl: TTL,
            ..Config::default()
        },
        ManualClock::new(),
    )
}

fn msg(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn fetch_now<C: Clock>(b: &Broker<C>) -> Delivery {
    b.default_queue()
        .try_fetch()
        .expect("open")
        .expect("a message is ready")
}

/// Wakes by unparking a thread, and remembers that it was woken.
struct ThreadWaker {
    thread: thread::Thread,
    woken: StdAtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, StdOrdering::SeqCst);
        self.thread.unpark();
    }
}

fn thread_waker() -> (Arc<ThreadWaker>, Waker) {
    let w = Arc::new(ThreadWaker {
        thread: thread::current(),
        woken: StdAtomicBool::new(false),
    });
    (w.clone(), Waker::from(w))
}

/// A minimal executor: polls `fut` on this thread, parking between polls.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let (_, waker) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

/// A timeout future that completes once `flag` is set (and it is polled).
struct Flag(Arc<StdAtomicBool>);

impl Future for Flag {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.load(StdOrdering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

// Rule 1: FIFO; requeued and expired messages rejoin at the tail.

#[test]
fn delivers_in_publish_order() {
    let b = broker();
    for s in ["a", "b", "c"] {
        b.default_queue().publish(msg(s)).unwrap();
    }
    let bodies: Vec<_> = (0..3).map(|_| fetch_now(&b).body).collect();
    assert_eq!(bodies, vec![msg("a"), msg("b"), msg("c")]);
    assert_eq!(b.default_queue().try_fetch(), Ok(None));
}

#[test]
fn requeue_goes_to_the_tail() {
    let b = broker();
    for s in ["a", "b", "c"] {
        b.default_queue().publish(msg(s)).unwrap();
    }
    let a = fetch_now(&b);
    b.default_queue().requeue(a.id).unwrap();
    let order: Vec<_> = (0..3).map(|_| fetch_now(&b).body).collect();
    assert_eq!(order, vec![msg("b"), msg("c"), msg("a")]);
}

#[test]
fn expired_messages_go_to_the_tail() {
    let b = broker();
    b.default_queue().publish(msg("a")).unwrap();
    let a = fetch_now(&b);
    b.default_queue().publish(msg("b")).unwrap();
    b.clock().advance(TTL);
    assert_eq!(b.expire_due().expired, 1);
    b.default_queue().publish(msg("c")).unwrap();
    let order: Vec<_> = (0..3).map(|_| fetch_now(&b)).collect();
    assert_eq!(
        order.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        vec![msg("b"), msg("a"), msg("c")]
    );
    assert!(order.iter().all(|d| d.id != a.id));
}

// Rule 2: delivery ids are unique and fresh for every delivery.

#[test]
fn every_delivery_gets_a_fresh_id() {
    let b = broker();
    b.default_queue().publish(msg("a")).unwrap();
    let mut seen = HashSet::new();
    for round in 0..10 {
        let d = fetch_now(&b);
        assert!(seen.insert(d.id), "id {} reused", d.id);
        if round % 2 == 0 {
            b.default_queue().requeue(d.id).unwrap();
        } else {
            b.clock().advance(TTL);
            assert_eq!(b.expire_due().expired, 1);
        }
        assert_eq!(b.default_queue().acknowledge(d.id), Err(Error::InvalidId));
        assert_eq!(b.default_queue().requeue(d.id), Err(Error::InvalidId));
    }
    assert_ne!(seen.iter().min(), Some(&0), "ids start at 1");
}

// Rule 3: exactly one settlement per delivery.

#[test]
fn acknowledge_settles_once() {
    let b = broker();
    b.default_queue().publish(msg("a")).unwrap();
    let d = fetch_now(&b);
    assert_eq!(b.default_queue().acknowledge(d.id), Ok(()));
    assert_eq!(b.default_queue().acknowledge(d.id), Err(Error::InvalidId));
    assert_eq!(b.default_queue().requeue(d.id), Err(Error::InvalidId));
    b.clock().advance(TTL * 2);
    assert_eq!(
        b.expire_due().expired,
        0,
        "an acknowledged lease never expires"
    );
    assert_eq!(b.default_queue().try_fetch(), Ok(None));
}

#[test]
fn requeue_settles_once() {
    let b = broker();
    b.default_queue().publish(msg("a")).unwrap();
    let d = fetch_now(&b);
    assert_eq!(b.default_queue().requeue(d.id), Ok(()));
    assert_eq!(b.default_queue().requeue(d.id), Err(Error::InvalidId));
    assert_eq!(b.default_queue().acknowledge(d.id), Err(Error::InvalidId));
    b.clock().advance(TTL * 2);
    assert_eq!(b.expire_due().expired, 0, "a requeued lease never expires");
    assert_eq!(b.stats().ready, 1, "the message is queued exactly once");
}

#[test]
fn unknown_ids_are_invalid() {
    let b = broker();
    for id in [0, 1, 42, u64::MAX] {
        assert_eq!(b.default_queue().acknowledge(id), Err(Error::InvalidId));
        assert_eq!(b.default_queue().requeue(id), Err(Error::InvalidId));
    }
    assert_eq!(
        b.stats(),
        Stats {
            queues: 1,
            ..Stats::default()
        }
    );
}

// Rule 4: expiry is exact from the client's view.

#[test]
fn lease_is_valid_until_its_deadline_and_not_at_it() {
    let b = broker();
    b.default_queue().publish(msg("a")).unwrap();
    b.default_queue().publish(msg("b")).unwrap();
    let a = fetch_now(&b);
    let bb = fetch_now(&b);
    b.clock().advance(TTL - Duration::from_nanos(1));
    assert_eq!(
        b.default_queue().requeue(a.id),
        Ok(()),
        "one nanosecond before the deadline"
    );
    b.clock().advance(Duration::from_nanos(1));
    // At the deadline, before any sweep: both settlements fail.
    assert_eq!(b.default_queue().acknowledge(bb.id), Err(Error::InvalidId));
    assert_eq!(b.default_queue().requeue(bb.id), Err(Error::InvalidId));
    assert_eq!(b.stats().in_flight, 1, "still in the table until the sweep");
    assert_eq!(b.expire_due().expired, 1);
    assert_eq!(b.stats().in_flight, 0);
}

#[test]
fn sweep_reports_the_next_deadline_and_touches_nothing_early() {
    let b = broker();
    assert_eq!(
        b.expire_due(),
        Sweep {
            expired: 0,
            came_due: 0,
            next_deadline: None
        }
    );
    b.default_queue().publish(msg("a")).unwrap();
    let start = b.clock().now();
    fetch_now(&b);
    b.clock().advance(Duration::from_secs(3));
    b.default_queue().publish(msg("b")).unwrap();
    fetch_now(&b);
    let sweep = b.expire_due();
    assert_eq!(sweep.expired, 0);
    assert_eq!(sweep.next_deadline, Some(start.saturating_add(TTL)));
    b.clock().advance(TTL - Duration::from_secs(3));
    let sweep = b.expire_due();
    assert_eq!(sweep.expired, 1);
    assert_eq!(
        sweep.next_deadline,
        Some(start.saturating_add(TTL + Duration::from_secs(3)))
    );
}

#[test]
fn settled_leases_leave_no_timer_entry_behind() {
    let b = broker();
    for _ in 0..100 {
        b.default_queue().publish(msg("x")).unwrap();
        let d = fetch_now(&b);
        b.default_queue().acknowledge(d.id).unwrap();
    }
    // Only the agenda's hints for `default` are left, one per timer shard
    // (they go at the next sweep); no entry per settled lease.
    assert_eq!(b.timer_entries(), crate::timer::SHARDS);
    assert_eq!(b.timer_counts(), (0, 0));
    b.clock().advance(TTL);
    assert_eq!(b.expire_due().expired, 0);
    assert_eq!(b.timer_entries(), 0);
    assert_eq!(b.next_due(), None);
}

// Rule 5: conservation, and the counters agree.

#[test]
fn counters_account_for_every_message() {
    let b = broker();
    for i in 0..10 {
        b.default_queue()
            .publish(Bytes::from(vec![b'x'; i]))
            .unwrap();
    }
    assert_eq!(b.stats().queued_bytes, 45 + 10 * MESSAGE_OVERHEAD);
    let ds: Vec<_> = (0..10).map(|_| fetch_now(&b)).collect();
    b.default_queue().acknowledge(ds[0].id).unwrap();
    b.default_queue().acknowledge(ds[9].id).unwrap();
    b.default_queue().requeue(ds[1].id).unwrap();
    b.clock().advance(TTL);
    b.expire_due();
    let s = b.stats();
    assert_eq!(s.published, 10);
    assert_eq!(s.delivered, 10);
    assert_eq!(s.acknowledged, 2);
    assert_eq!(s.requeued, 1);
    assert_eq!(s.expired, 7);
    assert_eq!(s.ready, 8);
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.queued_bytes, 45 - 9 + 8 * MESSAGE_OVERHEAD);
    assert_eq!(
        s.ready + s.in_flight,
        (s.published - s.acknowledged) as usize
    );
}

// Rule 6: no lost wake-ups.

#[test]
fn a_waiting_fetch_is_woken_by_publish_requeue_and_expiry() {
    let b = Arc::new(broker());
    b.default_queue().publish(msg("first")).unwrap();
    let held = fetch_now(&b);

    for wake_by in ["publish", "requeue", "expiry"] {
        let mut fut = pin!(b.default_queue().fetch(pending()));
        let (flag, waker) = thread_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(b.stats().waiting, 1);
        let expected = match wake_by {
            "publish" => {
                b.default_queue().publish(msg("p")).unwrap();
                msg("p")
            }
            "requeue" => {
                b.default_queue().requeue(held.id).unwrap();
                msg("first")
            }
            _ => {
                b.clock().advance(TTL);
                assert_eq!(b.expire_due().expired, 1);
                msg("p")
            }
        };
        assert!(flag.woken.load(StdOrdering::SeqCst), "woken by {wake_by}");
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(d)) => {
                assert_eq!(d.body, expected);
                // The publish round keeps "p" leased for the expiry round.
                if wake_by != "publish" {
                    b.default_queue().acknowledge(d.id).unwrap();
                }
            }
            other => panic!("{wake_by}: {other:?}"),
        }
        assert_eq!(b.stats().waiting, 0);
    }
}

#[test]
fn fetch_returns_at_once_when_a_message_is_ready() {
    let b = broker();
    b.default_queue().publish(msg("a")).unwrap();
    let d = block_on(b.default_queue().fetch(pending())).unwrap();
    assert_eq!(d.body, msg("a"));
    assert_eq!(b.stats().waiting, 0);
}

#[test]
fn fetch_times_out_with_nothing_leased() {
    let b = broker();
    let fired = Arc::new(StdAtomicBool::new(true));
    assert_eq!(
        block_on(b.default_queue().fetch(Flag(fired))),
        Err(Error::Timeout)
    );
    let s = b.stats();
    assert_eq!((s.waiting, s.in_flight, s.delivered), (0, 0, 0));
}

#[test]
fn a_message_ready_when_the_timeout_fires_is_still_delivered() {
    let b = broker();
    let fired = Arc::new(StdAtomicBool::new(false));
    let mut fut = pin!(b.default_queue().fetch(Flag(fired.clone())));
    let (_, waker) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    b.default_queue().publish(msg("a")).unwrap();
    fired.store(true, StdOrdering::SeqCst);
    // The queue is checked before the timeout: the waiter never times out
    // while a message sat ready.
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
}

#[test]
fn parallel_waiters_each_get_their_own_message() {
    let b = Arc::new(broker());
    let waiters = 8;
    let barrier = Arc::new(Barrier::new(waiters + 1));
    let handles: Vec<_> = (0..waiters)
        .map(|_| {
            let b = b.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                block_on(b.default_queue().fetch(pending())).unwrap()
            })
        })
        .collect();
    barrier.wait();
    for i in 0..waiters {
        b.default_queue()
            .publish(Bytes::from(i.to_string()))
            .unwrap();
    }
    let mut bodies: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap().body)
        .collect();
    bodies.sort();
    let mut expected: Vec<_> = (0..waiters).map(|i| Bytes::from(i.to_string())).collect();
    expected.sort();
    assert_eq!(bodies, expected);
}

// Rule 7: cancellation safety.

#[test]
fn a_dropped_waiting_fetch_leases_nothing() {
    let b = broker();
    {
        let mut fut = pin!(b.default_queue().fetch(pending()));
        let (_, waker) = thread_waker();
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(b.stats().waiting, 1);
    }
    assert_eq!(b.stats().waiting, 0);
    b.default_queue().publish(msg("a")).unwrap();
    let s = b.stats();
    assert_eq!((s.ready, s.in_flight), (1, 0));
}

#[test]
fn a_woken_then_dropped_fetch_passes_the_wake_up_on() {
    let b = broker();
    let (_, w1) = thread_waker();
    let (flag2, w2) = thread_waker();
    let mut second = Box::pin(b.default_queue().fetch(pending()));
    {
        let mut first = pin!(b.default_queue().fetch(pending()));
        assert!(first
            .as_mut()
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        assert!(second
            .as_mut()
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        b.default_queue().publish(msg("a")).unwrap();
        assert!(
            !flag2.woken.load(StdOrdering::SeqCst),
            "only the oldest waiter is woken"
        );
        // `first` is dropped here, woken but never polled again.
    }
    assert!(
        flag2.woken.load(StdOrdering::SeqCst),
        "the wake-up was passed on"
    );
    match second.as_mut().poll(&mut Context::from_waker(&w2)) {
        Poll::Ready(Ok(d)) => assert_eq!(d.body, msg("a")),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.stats().in_flight, 1);
}

// Close.

#[test]
fn after_close_every_call_fails_and_waiters_wake() {
    let b = broker();
    b.default_queue().publish(msg("a")).unwrap();
    let d = fetch_now(&b);
    b.default_queue().publish(msg("b")).unwrap();
    let mut fut = pin!(b.default_queue().fetch(pending()));
    let (_, w) = thread_waker();
    let mut cx = Context::from_waker(&w);
    // Ready message: the first poll succeeds, so use a second fetch to wait.
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    let mut waiting = pin!(b.default_queue().fetch(pending()));
    let (flag, w2) = thread_waker();
    let mut cx2 = Context::from_waker(&w2);
    assert!(waiting.as_mut().poll(&mut cx2).is_pending());

    b.close();
    assert!(b.is_closed());
    assert!(flag.woken.load(StdOrdering::SeqCst));
    assert_eq!(
        waiting.as_mut().poll(&mut cx2),
        Poll::Ready(Err(Error::Closed))
    );
    assert_eq!(b.default_queue().publish(msg("c")), Err(Error::Closed));
    assert_eq!(b.default_queue().try_fetch(), Err(Error::Closed));
    assert_eq!(b.default_queue().acknowledge(d.id), Err(Error::Closed));
    assert_eq!(b.default_queue().requeue(d.id), Err(Error::Closed));
    assert_eq!(
        block_on(b.default_queue().fetch(pending())),
        Err(Error::Closed)
    );
    b.close();
    assert_eq!(b.stats().waiting, 0);
}

// Limits.

#[test]
fn queue_bytes_limit_refuses_and_recovers() {
    let b = Broker::with_clock(
        Config {
            ttl: TTL,
            max_queue_bytes: 10 + 2 * MESSAGE_OVERHEAD,
            ..Config::default()
        },
        ManualClock::new(),
    );
    b.default_queue()
        .publish(Bytes::from_static(b"12345"))
        .unwrap();
    b.default_queue()
        .publish(Bytes::from_static(b"12345"))
        .unwrap();
    assert_eq!(
        b.default_queue().publish(Bytes::from_static(b"1")),
        Err(Error::QueueFull)
    );
    assert_eq!(b.stats().published, 2);
    assert_eq!(b.stats().queued_bytes, 10 + 2 * MESSAGE_OVERHEAD);
    // In-flight bytes still count; a requeue does not free them.
    let d = fetch_now(&b);
    b.default_queue().requeue(d.id).unwrap();
    assert_eq!(
        b.default_queue().publish(Bytes::from_static(b"1")),
        Err(Error::QueueFull)
    );
    let d = fetch_now(&b);
    b.default_queue().acknowledge(d.id).unwrap();
    b.default_queue().publish(Bytes::from_static(b"1")).unwrap();
    assert_eq!(b.stats().queued_bytes, 6 + 2 * MESSAGE_OVERHEAD);
}

// Many threads on the real lock-free structures.

#[test]
fn concurrent_producers_and_consumers_lose_and_duplicate_nothing() {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    const PER_PRODUCER: usize = 5_000;
    let b = Arc::new(Broker::new(Config::default()));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let b = b.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    b.default_queue()
                        .publish(Bytes::from(format!("{p}:{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    let done = Arc::new(StdAtomicBool::new(false));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let b = b.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let finished = done.load(StdOrdering::SeqCst);
                    match b.default_queue().try_fetch().unwrap() {
                        Some(d) => {
                            // Every third delivery is requeued once, to mix
                            // requeue traffic into the race.
                            if d.id % 3 == c as u64 % 3 {
                                b.default_queue().requeue(d.id).unwrap();
                            } else {
                                b.default_queue().acknowledge(d.id).unwrap();
                                got.push(d.body);
                            }
                        }
                        None if finished => return got,
                        None => thread::yield_now(),
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    done.store(true, StdOrdering::SeqCst);
    let mut all = HashSet::new();
    for c in consumers {
        for body in c.join().unwrap() {
            assert!(all.insert(body), "a message was acknowledged twice");
        }
    }
    assert_eq!(all.len(), PRODUCERS * PER_PRODUCER);
    let s = b.stats();
    assert_eq!((s.ready, s.in_flight, s.queued_bytes), (0, 0, 0));
    assert_eq!(s.acknowledged, (PRODUCERS * PER_PRODUCER) as u64);
    assert_eq!(s.delivered, s.acknowledged + s.requeued);
}

#[test]
fn per_publisher_fifo_holds_under_concurrency() {
    let b = Arc::new(Broker::new(Config::default()));
    let producers: Vec<_> = (0..3u8)
        .map(|p| {
            let b = b.clone();
            thread::spawn(move || {
                for i in 0..2_000u32 {
                    let mut body = vec![p];
                    body.extend_from_slice(&i.to_be_bytes());
                    b.default_queue().publish(Bytes::from(body)).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut last = [None::<u32>; 3];
    while let Some(d) = b.default_queue().try_fetch().unwrap() {
        let p = d.body[0] as usize;
        let i = u32::from_be_bytes(d.body[1..5].try_into().unwrap());
        assert!(
            last[p].map_or(true, |prev| prev < i),
            "publisher {p} out of order"
        );
        last[p] = Some(i);
    }
    assert_eq!(last, [Some(1_999); 3]);
}

#[test]
fn expiry_races_acknowledge_and_exactly_one_wins() {
    // Real threads, real clock: consumers acknowledge while a sweeper runs.
    // Whatever the interleaving, every message ends acknowledged exactly once
    // or back in the queue, never both and never neither.
    let b = Arc::new(Broker::new(Config {
        ttl: Duration::from_micros(50),
        ..Config::default()
    }));
    const N: usize = 20_000;
    for i in 0..N {
        b.default_queue()
            .publish(Bytes::from(i.to_string()))
            .unwrap();
    }
    let stop = Arc::new(StdAtomicBool::new(false));
    let sweeper = {
        let b = b.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(StdOrdering::SeqCst) {
                b.expire_due();
                thread::yield_now();
            }
        })
    };
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            thread::spawn(move || {
                let mut acked = Vec::new();
                while let Some(d) = b.default_queue().try_fetch().unwrap() {
                    if b.default_queue().acknowledge(d.id).is_ok() {
                        acked.push(d.body);
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = HashSet::new();
    for c in consumers {
        for body in c.join().unwrap() {
            assert!(acked.insert(body));
        }
    }
    stop.store(true, StdOrdering::SeqCst);
    sweeper.join().unwrap();
    // Let every remaining lease run out, then count.
    thread::sleep(Duration::from_millis(1));
    b.expire_due();
    let s = b.stats();
    assert_eq!(s.in_flight, 0);
    assert_eq!(acked.len() + s.ready, N);
    assert_eq!(s.acknowledged as usize, acked.len());
    assert_eq!(s.delivered, s.acknowledged + s.expired);
}

// Observability: how long the head of a queue has been ready.

#[test]
fn oldest_ready_age_is_exact_into_an_empty_queue_and_an_upper_bound_after_a_fetch() {
    let b = broker();
    let age = |b: &Broker<ManualClock>| b.queue("default").stats().unwrap().oldest_ready_age;
    assert_eq!(age(&b), None, "nothing ready");
    b.default_queue().publish(msg("a")).unwrap();
    b.clock().advance(Duration::from_secs(3));
    assert_eq!(age(&b), Some(Duration::from_secs(3)));
    fetch_now(&b);
    assert_eq!(age(&b), None, "empty again");
    b.default_queue().publish(msg("b")).unwrap(); // ready at 3 s, into an empty queue
    b.clock().advance(Duration::from_secs(1));
    b.default_queue().publish(msg("c")).unwrap(); // ready at 4 s
    b.clock().advance(Duration::from_secs(6));
    assert_eq!(age(&b), Some(Duration::from_secs(7)), "b, exact");
    fetch_now(&b);
    // The head is now c (6 s old); the figure is bounded by b's 7 s, over
    // by at most the gap between b and c.
    let reported = age(&b).unwrap();
    assert!(
        (Duration::from_secs(6)..=Duration::from_secs(7)).contains(&reported),
        "{reported:?}"
    );
    // A requeued message is ready from its requeue, not its publish.
    let d = fetch_now(&b);
    b.clock().advance(Duration::from_secs(2));
    b.default_queue().requeue(d.id).unwrap();
    assert_eq!(age(&b), Some(Duration::ZERO));
}
