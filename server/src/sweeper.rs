//! The background task that drives lease expiry.
//!
//! The engine does no work on its own; this task calls
//! [`Broker::expire_due`] at the next pending deadline, so expired messages
//! are back in the queue within about a millisecond (tokio's timer
//! resolution) of their deadline. With no lease pending it sleeps one TTL at
//! most: no lease handed out meanwhile can expire sooner. The sleep is also
//! capped at [`MAX_SWEEP_INTERVAL`], which bounds the delay if the broker's
//! clock is not the wall clock (tests inject a manual one).
//!
//! It also hands freed heap memory back to the OS ([`Trim`]), after the
//! broker drains and after connections close in bulk.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use ubroker_engine::{Broker, Clock};

/// The longest the sweeper sleeps between sweeps.
pub const MAX_SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// How often, at most, freed memory is handed back to the OS.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// How far the number of open connections must fall below its peak since
/// the last trim to count as closing in bulk. Each connection may have held
/// tens of kilobytes of buffers (a partial head of up to twice
/// `--max-header-bytes`); a few hundred of them are worth a trim, and a
/// steady churn of connections never triggers one.
const BULK_CLOSE: usize = 256;

/// Sweeps until `shutting_down` becomes `true` (or its sender is dropped).
/// `open_connections` says how many connections are open now.
pub async fn run<C: Clock>(
    broker: Arc<Broker<C>>,
    mut shutting_down: watch::Receiver<bool>,
    open_connections: impl Fn() -> usize,
) {
    let ttl = broker.config().ttl;
    let mut trim = Trim::new();
    loop {
        let sweep = broker.expire_due();
        trim.when_idle(&broker, open_connections());
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

/// Gives freed heap memory back to the OS once the broker has drained, or
/// once many connections have closed.
///
/// glibc's allocator keeps freed memory in its per-thread arenas; after a
/// burst of a million messages the process would stay at its peak RSS
/// forever. `malloc_trim` returns the free pages. It walks the heap, so it
/// runs only when nothing is ready or in flight, at most once per
/// [`TRIM_INTERVAL`], and only if something was freed since the last trim:
/// deliveries happened, or expiry entries (which outlive their leases by up
/// to one TTL) were swept. A drained broker is thus trimmed again as its
/// last expiry entries go, and then left alone. Connections' buffers are
/// freed when they close, busy broker or not: when [`BULK_CLOSE`] of them
/// have closed since the peak, that is a trim too.
struct Trim {
    /// (deliveries, pending expiry entries) at the last trim.
    last_state: (u64, usize),
    last_trim: tokio::time::Instant,
    /// The most connections open at once since the last trim.
    peak_connections: usize,
}

impl Trim {
    fn new() -> Self {
        Trim {
            last_state: (0, 0),
            last_trim: tokio::time::Instant::now(),
            peak_connections: 0,
        }
    }

    fn when_idle<C: Clock>(&mut self, broker: &Broker<C>, open_connections: usize) {
        self.peak_connections = self.peak_connections.max(open_connections);
        if self.last_trim.elapsed() < TRIM_INTERVAL {
            return;
        }
        let closed_in_bulk = self.peak_connections - open_connections >= BULK_CLOSE;
        let stats = broker.stats();
        let drained = stats.ready == 0 && stats.in_flight == 0;
        let state = (stats.delivered, broker.pending_expiry_entries());
        let freed_on_a_drained_broker = drained && state != self.last_state;
        if !closed_in_bulk && !freed_on_a_drained_broker {
            return;
        }
        if drained {
            self.last_state = state;
        }
        self.peak_connections = open_connections;
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
