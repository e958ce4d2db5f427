//! Helpers shared by the engine's integration tests (`batches`,
//! `lifecycle`): a broker on a manual clock, the counter identity, a
//! counting waker, a minimal executor and a fetch polled by hand. Each test
//! crate uses its own subset, hence `dead_code` is allowed here.

#![allow(dead_code)]

use std::future::{pending, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use ubroker_engine::{Broker, Config, Delivery, Error, ManualClock};

pub const TTL: Duration = Duration::from_secs(10);

pub type TestBroker = Broker<ManualClock>;

pub fn broker_with(config: Config) -> TestBroker {
    Broker::with_clock(config, ManualClock::new())
}

/// A broker on a manual clock with a lease TTL of [`TTL`].
pub fn broker() -> TestBroker {
    broker_with(Config {
        ttl: TTL,
        ..Config::default()
    })
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `published = acknowledged + dead_lettered + ready + in_flight + delayed`
/// for every queue; returns how many queues were checked.
pub fn assert_identity(b: &TestBroker) -> usize {
    let all = b.all_queue_stats();
    for (name, s) in &all {
        assert_eq!(
            s.published,
            s.acknowledged
                + s.dead_lettered
                + s.ready as u64
                + s.in_flight as u64
                + s.delayed as u64,
            "counter identity broken for {name}: {s:?}"
        );
    }
    all.len()
}

/// Orders wake-ups across all wakers (for `run_woken`).
pub static WAKE_SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// Wakes by unparking a thread, and counts its wake-ups.
pub struct CountingWaker {
    pub thread: thread::Thread,
    pub wakes: AtomicUsize,
    pub last_woken: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        let seq = WAKE_SEQUENCE.fetch_add(1, Ordering::SeqCst);
        self.last_woken.store(seq, Ordering::SeqCst);
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

pub fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let w = Arc::new(CountingWaker {
        thread: thread::current(),
        wakes: AtomicUsize::new(0),
        last_woken: AtomicUsize::new(0),
    });
    (w.clone(), Waker::from(w))
}

/// A minimal executor: polls `fut` on this thread, parking between polls.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

/// A waiting fetch (single: `T` is a [`Delivery`]; batch: a `Vec` of them)
/// polled by hand, with its own counting waker.
pub struct Hand<'a, T> {
    fut: Pin<Box<dyn Future<Output = Result<T, Error>> + 'a>>,
    wake: Arc<CountingWaker>,
    waker: Waker,
    /// Wake-ups seen by the last poll (for `run_woken`).
    pub seen: usize,
    /// The fetch completed: it must not be polled again.
    pub done: bool,
}

impl<'a> Hand<'a, Delivery> {
    /// A `fetch` of `queue` that waits forever.
    pub fn new(b: &'a TestBroker, queue: &'a str) -> Self {
        Hand::of(Box::pin(b.queue(queue).fetch(pending())))
    }

    #[track_caller]
    pub fn delivery(&mut self) -> Delivery {
        match self.poll() {
            Poll::Ready(Ok(d)) => d,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
}

impl<'a> Hand<'a, Vec<Delivery>> {
    /// A `fetch_batch` of up to `max` from `queue` (no byte cap) that waits
    /// forever.
    pub fn batch(b: &'a TestBroker, queue: &'a str, max: usize) -> Self {
        Hand::of(Box::pin(b.queue(queue).fetch_batch(
            max,
            usize::MAX,
            pending(),
        )))
    }

    #[track_caller]
    pub fn deliveries(&mut self) -> Vec<Delivery> {
        match self.poll() {
            Poll::Ready(Ok(d)) => d,
            other => panic!("expected deliveries, got {other:?}"),
        }
    }
}

impl<'a, T: std::fmt::Debug> Hand<'a, T> {
    fn of(fut: Pin<Box<dyn Future<Output = Result<T, Error>> + 'a>>) -> Self {
        let (wake, waker) = counting_waker();
        Hand {
            fut,
            wake,
            waker,
            seen: 0,
            done: false,
        }
    }

    pub fn poll(&mut self) -> Poll<Result<T, Error>> {
        assert!(!self.done, "polled a completed fetch");
        let polled = self
            .fut
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker));
        self.done = polled.is_ready();
        polled
    }

    pub fn wakes(&self) -> usize {
        self.wake.wakes.load(Ordering::SeqCst)
    }

    pub fn last_woken(&self) -> usize {
        self.wake.last_woken.load(Ordering::SeqCst)
    }

    #[track_caller]
    pub fn pending(&mut self) {
        let polled = self.poll();
        assert!(
            polled.is_pending(),
            "expected the fetch to wait: {polled:?}"
        );
    }
}
