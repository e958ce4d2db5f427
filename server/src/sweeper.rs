//! The background task that drives lease expiry.
//!
//! The engine does no work on its own; this task calls
//! [`Broker::expire_due`] at the next pending deadline, so expired messages
//! are back in the queue within about a millisecond (tokio's timer
//! resolution) of their deadline. With no lease pending it sleeps one TTL at
//! most: no lease handed out meanwhile can expire sooner. The sleep is also
//! capped at [`MAX_SWEEP_INTERVAL`], which bounds the delay if the broker's
//! clock is not the wall clock (tests inject a manual one).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use ubroker_engine::{Broker, Clock};

/// The longest the sweeper sleeps between sweeps.
pub const MAX_SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// How often, at most, freed memory is handed back to the OS.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps until `shutting_down` becomes `true` (or its sender is dropped).
pub async fn run<C: Clock>(broker: Arc<Broker<C>>, mut shutting_down: watch::Receiver<bool>) {
    let ttl = broker.config().ttl;
    let mut trim = Trim::new();
    loop {
        let sweep = broker.expire_due();
        trim.when_drained(&broker);
        if sweep.expired > 0 {
            tracing::debug!(expired = sweep.expired, "leases expired");
        }
        let now = broker.clock().now();
        let sleep = sweep
            .next_deadline
            .map_or(ttl, |deadline| deadline.saturating_duration_since(now))
            .min(MAX_SWEEP_INTERVAL);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = shutting_down.wait_for(|down| *down) => return,
        }
    }
}

/// Gives freed heap memory back to the OS once the broker has drained.
///
/// glibc's allocator keeps freed memory in its per-thread arenas; after a
/// burst of a million messages the process would stay at its peak RSS
/// forever. `malloc_trim` returns the free pages. It walks the heap, so it
/// runs only when nothing is ready or in flight, at most once per
/// [`TRIM_INTERVAL`], and only if something was freed since the last trim:
/// deliveries happened, or expiry entries (which outlive their leases by up
/// to one TTL) were swept. A drained broker is thus trimmed again as its
/// last expiry entries go, and then left alone.
struct Trim {
    /// (deliveries, pending expiry entries) at the last trim.
    last_state: (u64, usize),
    last_trim: tokio::time::Instant,
}

impl Trim {
    fn new() -> Self {
        Trim {
            last_state: (0, 0),
            last_trim: tokio::time::Instant::now(),
        }
    }

    fn when_drained<C: Clock>(&mut self, broker: &Broker<C>) {
        if self.last_trim.elapsed() < TRIM_INTERVAL {
            return;
        }
        let stats = broker.stats();
        if stats.ready != 0 || stats.in_flight != 0 {
            return;
        }
        let state = (stats.delivered, broker.pending_expiry_entries());
        if state == self.last_state {
            return;
        }
        self.last_state = state;
        self.last_trim = tokio::time::Instant::now();
        release_free_memory();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim only inspects and releases the allocator's own
    // free lists; it takes no pointers from us and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}
