//! What a model observes besides the broker: wake-ups of futures polled by
//! hand, whether a fetch went to sleep, and which outcomes its interleavings
//! reached.
//!
//! Most models wait with `loom::future::block_on`, whose waker is a loom
//! notification: a lost wake-up leaves that thread blocked and loom reports
//! a deadlock. [`WakeFlag`] is for a future polled once and then dropped,
//! where the question is only whether it was woken.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::Mutex;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicBool, Ordering};

/// A waker that records that it was woken, in a loom atomic (so reading it
/// is a model step like any other).
#[derive(Debug, Default)]
pub struct WakeFlag {
    woken: AtomicBool,
}

impl WakeFlag {
    /// A new flag and a [`Waker`] that sets it.
    pub fn new() -> (std::sync::Arc<WakeFlag>, Waker) {
        let flag = std::sync::Arc::new(WakeFlag::default());
        let waker = Waker::from(flag.clone());
        (flag, waker)
    }

    /// Whether the waker was woken (by this thread, or by one that
    /// happened-before this call).
    pub fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }
}

impl Wake for WakeFlag {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.woken.store(true, Ordering::Release);
    }
}

/// A fetch timeout that never fires and records that it was polled.
///
/// `Broker::fetch` polls its timeout only once it has registered as a
/// waiter and re-checked the queue, so a polled probe means the fetch went to
/// sleep at least once. Observation only: the flag is a `std` atomic,
/// invisible to loom, read by the model after its threads are joined.
#[derive(Debug, Default, Clone)]
pub struct SleepProbe {
    slept: std::sync::Arc<StdAtomicBool>,
}

impl SleepProbe {
    /// A probe that has not been polled.
    pub fn new() -> Self {
        SleepProbe::default()
    }

    /// Whether a fetch holding (a clone of) this probe went to sleep.
    pub fn slept(&self) -> bool {
        self.slept.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Future for SleepProbe {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        self.slept.store(true, std::sync::atomic::Ordering::Relaxed);
        Poll::Pending
    }
}

/// The outcomes a model saw over all its interleavings.
///
/// A model that never reaches the interleaving it exists for passes
/// vacuously; recording each run's outcome and asserting at the end that
/// every expected one occurred rules that out. Lives outside loom (a plain
/// `std` mutex, never held across a model step), in a `static` per model.
#[derive(Debug)]
pub struct Outcomes {
    seen: Mutex<BTreeSet<&'static str>>,
}

impl Outcomes {
    /// No outcome seen yet.
    pub const fn new() -> Self {
        Outcomes {
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records that one interleaving ended in `outcome`.
    pub fn record(&self, outcome: &'static str) {
        self.lock().insert(outcome);
    }

    /// Asserts that every outcome in `expected` occurred, and no other.
    #[track_caller]
    pub fn assert_seen(&self, expected: &[&'static str]) {
        let seen = self.lock();
        let expected: BTreeSet<&'static str> = expected.iter().copied().collect();
        assert_eq!(*seen, expected, "the model did not reach every outcome");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<&'static str>> {
        match self.seen.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Default for Outcomes {
    fn default() -> Self {
        Self::new()
    }
}
