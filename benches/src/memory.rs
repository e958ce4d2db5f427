//! Broker memory per message: [`CountingAllocator`] and [`measure`].
//!
//! The measure is the change in live heap bytes, as seen by a global
//! allocator that counts every allocation and deallocation, between a freshly
//! built broker and the same broker holding `n` messages (ready, then all
//! leased, then all acknowledged, then swept). Dividing by `n` and
//! subtracting the body length gives the broker's own bytes per message:
//! queue slots, lease-table entries and spare capacity, expiry entries, and
//! the shared-body header that `bytes` allocates when the lease clones a
//! `Vec`-backed body.
//!
//! Heap bytes, not RSS: they are exact, repeatable and independent of the
//! allocator's page retention. They exclude the allocator's own per-block
//! overhead (malloc adds 8 to 16 bytes to every block, bodies included),
//! which no broker design controls.
//!
//! The counter is process-wide: run [`measure`] from a single thread with
//! nothing else allocating, as the `ubroker-mem` binary does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ubroker_engine::{Broker, Config, ManualClock};

use crate::BenchBroker;

/// A global allocator that forwards to [`System`] and keeps the number of
/// live heap bytes and its high-water mark.
pub struct CountingAllocator {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl CountingAllocator {
    /// A counter at zero. Install it with `#[global_allocator]`.
    pub const fn new() -> Self {
        CountingAllocator {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Heap bytes allocated and not yet freed.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The most live bytes since the last [`CountingAllocator::reset_peak`].
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new high-water mark from the current live bytes.
    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Ordering::Relaxed);
    }

    fn grow(&self, bytes: usize) {
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    fn shrink(&self, bytes: usize) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Default for CountingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            self.grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            self.grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        self.shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            // Count the old block as freed only once the move succeeded.
            self.grow(new_size);
            self.shrink(layout.size());
        }
        new
    }
}

/// Live broker bytes at one stage of [`measure`], beyond the empty broker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// Live heap bytes above the freshly built broker.
    pub bytes: usize,
    /// The high-water mark of those bytes while getting to this stage
    /// (growth of a table or queue briefly holds old and new storage).
    pub peak: usize,
}

impl Stage {
    /// Bytes per message beyond a body of `body_len`, over `n` messages.
    pub fn per_message_beyond_body(&self, n: usize, body_len: usize) -> f64 {
        self.bytes as f64 / n as f64 - body_len as f64
    }
}

/// What [`measure`] found for one implementation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryReport {
    /// The implementation ([`BenchBroker::NAME`]).
    pub name: &'static str,
    /// Messages measured.
    pub messages: usize,
    /// Body length of each message.
    pub body_len: usize,
    /// All `messages` published, none fetched.
    pub ready: Stage,
    /// All fetched and leased (the consumer kept only the ids).
    pub leased: Stage,
    /// All acknowledged; the sweep has not run yet.
    pub acknowledged: Stage,
    /// After one sweep past every deadline (stale expiry entries dropped).
    pub swept: Stage,
}

/// Publishes `n` messages of `body_len` bytes into a fresh `B`, fetches them
/// all, acknowledges them all and sweeps, recording the live heap bytes
/// (read by `live`, high-water mark by `peak`) at each stage.
///
/// Every body is its own `Vec`-backed allocation, as a server decoding
/// requests would produce, so body bytes are exactly `n * body_len`.
/// `reset_peak` starts a new high-water mark before each stage.
pub fn measure<B: BenchBroker<Clock = ManualClock>>(
    n: usize,
    body_len: usize,
    alloc: &CountingAllocator,
) -> MemoryReport {
    let config = Config::default();
    // Allocated before the baseline reading, so the consumer's bookkeeping
    // is not charged to the broker.
    let mut ids = Vec::with_capacity(n);
    let broker = B::with_clock(config, ManualClock::new());
    let base = alloc.live();
    let stage = |alloc: &CountingAllocator| Stage {
        bytes: alloc.live().saturating_sub(base),
        peak: alloc.peak().saturating_sub(base),
    };

    alloc.reset_peak();
    for i in 0..n {
        let body = Bytes::from(vec![i as u8; body_len]);
        broker
            .publish(body)
            .expect("the broker is open and unbounded");
    }
    let ready = stage(alloc);

    alloc.reset_peak();
    while let Some(delivery) = broker.try_fetch().expect("the broker is open") {
        // The consumer drops its handle on the body: what stays is the
        // broker's lease.
        ids.push(delivery.id);
    }
    assert_eq!(ids.len(), n, "every message is delivered once");
    let leased = stage(alloc);

    alloc.reset_peak();
    for &id in &ids {
        broker
            .acknowledge(id)
            .expect("no lease expires on a clock that stands still");
    }
    let acknowledged = stage(alloc);

    alloc.reset_peak();
    broker.clock().advance(config.ttl + Duration::from_nanos(1));
    let sweep = broker.expire_due();
    assert_eq!(sweep.expired, 0, "every lease was acknowledged");
    let swept = stage(alloc);
    drop(broker);

    MemoryReport {
        name: B::NAME,
        messages: n,
        body_len,
        ready,
        leased,
        acknowledged,
        swept,
    }
}

/// The engine's heap bytes per *delayed* message beyond its body: `n`
/// messages published to one queue with delays spread over an hour (so the
/// timer holds them in due order, none due yet), then all come due.
///
/// Returns (delayed, after they came due and sat ready). The mutex baseline
/// has no delays, so there is nothing to compare against.
pub fn measure_delayed(n: usize, body_len: usize, alloc: &CountingAllocator) -> (Stage, Stage) {
    let broker = Broker::with_clock(Config::default(), ManualClock::new());
    let base = alloc.live();
    let stage = |alloc: &CountingAllocator| Stage {
        bytes: alloc.live().saturating_sub(base),
        peak: alloc.peak().saturating_sub(base),
    };
    alloc.reset_peak();
    for i in 0..n {
        let body = Bytes::from(vec![i as u8; body_len]);
        // Due times spread over an hour, in a scrambled order, as retries
        // with backoff would be.
        let delay_ms = 1 + (i as u64).wrapping_mul(2_654_435_761) % 3_600_000;
        broker
            .publish_to("default", body, Duration::from_millis(delay_ms))
            .expect("the broker is open and unbounded");
    }
    let delayed = stage(alloc);
    alloc.reset_peak();
    broker.clock().advance(Duration::from_secs(3601));
    let sweep = broker.expire_due();
    assert_eq!(sweep.came_due, n, "every delayed message came due");
    let due = stage(alloc);
    (delayed, due)
}
