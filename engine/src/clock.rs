//! Time, injected: the [`Clock`] trait, the real [`SystemClock`] and the
//! test [`ManualClock`].
//!
//! The engine never reads the system time itself. Every deadline comes from
//! the clock the broker was built with, so unit tests and loom models move
//! time forward explicitly instead of sleeping, and a lease's expiry is a
//! pure function of the clock's value.

use std::time::Duration;
#[cfg(not(unix))]
use std::time::Instant;

use crate::sync::{AtomicU64, Ordering};

/// A point in time: nanoseconds since the clock's own origin.
///
/// A plain `u64` keeps a lease deadline at 8 bytes and makes comparisons
/// branch-free; it covers 584 years of uptime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating instead of overflowing.
    pub fn saturating_add(self, duration: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_nanos(duration)))
    }

    /// How long from `earlier` until `self`; zero if `self` is not later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// `duration` in nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A monotonic source of [`Timestamp`]s.
///
/// Implementations must never go backwards: the expiry queue relies on
/// deadlines arriving in (almost) nondecreasing order.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real clock: the monotonic clock (`CLOCK_MONOTONIC` on Unix, what
/// `std::time::Instant` reads), relative to when it was created.
///
/// On Unix it calls `clock_gettime` itself and subtracts its origin in
/// plain `u64` nanoseconds: `Instant::elapsed` goes through checked
/// `Timespec` arithmetic and a `Duration`, about 100 instructions a read
/// against about 50, and a fetch and its acknowledge read the clock twice.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    #[cfg(unix)]
    origin: u64,
    #[cfg(not(unix))]
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock {
            #[cfg(unix)]
            origin: monotonic_nanos(),
            #[cfg(not(unix))]
            origin: Instant::now(),
        }
    }
}

/// Nanoseconds on `CLOCK_MONOTONIC`, which never goes backwards.
#[cfg(unix)]
fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always
    // supported on the Unix systems Rust targets, so this cannot fail (and
    // were it to, `ts` stays zero: time would stand still, not go back).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[cfg(unix)]
    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp(monotonic_nanos().saturating_sub(self.origin))
    }

    #[cfg(not(unix))]
    fn now(&self) -> Timestamp {
        Timestamp(duration_nanos(self.origin.elapsed()))
    }
}

/// A clock that only moves when told to: for tests and loom models.
///
/// Its value is an atomic from the `sync` facade, so under `cfg(loom)` loom
/// sees every read and every advance as a separate step to interleave.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at its origin.
    pub fn new() -> Self {
        ManualClock {
            nanos: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(duration_nanos(by), Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::Acquire))
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        assert_eq!(clock.now(), Timestamp::ZERO);
        clock.advance(Duration::from_millis(5));
        assert_eq!(clock.now(), Timestamp::from_nanos(5_000_000));
    }

    #[test]
    fn system_clock_is_monotonic_and_follows_instant() {
        let clock = SystemClock::new();
        let start = std::time::Instant::now();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = clock.now();
        let elapsed = start.elapsed();
        assert!(b >= a);
        // It measures the same clock as `Instant`: at least the 20 ms slept,
        // and no more than the `Instant` around it saw.
        let moved = b.saturating_duration_since(a);
        assert!(moved >= Duration::from_millis(20), "{moved:?}");
        assert!(moved <= elapsed, "{moved:?} > {elapsed:?}");
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_nanos(u64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)),
            Timestamp::from_nanos(u64::MAX)
        );
        assert_eq!(Timestamp::ZERO.saturating_duration_since(t), Duration::ZERO);
        assert_eq!(
            Timestamp::from_nanos(3_000).saturating_duration_since(Timestamp::from_nanos(1_000)),
            Duration::from_nanos(2_000)
        );
    }
}
