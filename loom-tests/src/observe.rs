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

/// A fetch timeout that another model thread fires: unlike [`SleepProbe`],
/// it can complete, so the timeout exit of a waiting fetch is explored.
///
/// Loom-visible: its state is a loom mutex, so firing it is a model step,
/// and the fetch's waker (a loom notification under `block_on`) is woken
/// after the flag is set, so a fetch waiting on it cannot miss the firing.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    state: loom::sync::Arc<loom::sync::Mutex<(bool, Option<Waker>)>>,
    polled: std::sync::Arc<StdAtomicBool>,
}

impl Trigger {
    /// A trigger that has not fired.
    pub fn new() -> Self {
        Trigger::default()
    }

    /// Completes the timeout (and wakes the fetch polling it, if any).
    pub fn fire(&self) {
        let waker = {
            let mut state = self.state.lock().unwrap();
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether a fetch holding (a clone of) this trigger polled it, i.e.
    /// went to sleep or timed out. Observation only, like
    /// [`SleepProbe::slept`].
    pub fn polled(&self) -> bool {
        self.polled.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Future for Trigger {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state.lock().unwrap();
        if state.0 {
            Poll::Ready(())
        } else {
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        }
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
