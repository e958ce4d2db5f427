//! The one place that chooses between `std` and `loom` synchronisation types.
//!
//! Every other module imports atomics, `Mutex` and the reader-writer lock
//! from here and never from `std` directly, so that `RUSTFLAGS="--cfg
//! loom"` swaps the whole engine onto loom's instrumented types at once
//! (the pattern of tokio's `src/loom/mod.rs` and concurrent-queue's
//! `src/sync.rs`). `Arc` is the exception: modules take it from `std`, as
//! no protocol of ours depends on a reference count (operations borrow
//! their queue under the registry's guard and touch no count; the counts
//! that remain, of queues, names and the journal, only free memory), so
//! loom need not see them. Nothing in this module may contain protocol
//! logic: it only re-exports.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

/// A reader-writer lock whose readers rarely meet: crossbeam's
/// `ShardedLock` keeps one lock per shard and a reader takes only its
/// thread's, so readers share no cache line; a writer takes them all.
/// Under loom, a plain `RwLock` stands in for it: the contract the engine
/// relies on (readers together, a writer alone) is the same.
#[cfg(not(loom))]
pub(crate) use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
#[cfg(loom)]
pub(crate) use loom::sync::{
    RwLock as ShardedLock, RwLockReadGuard as ShardedLockReadGuard,
    RwLockWriteGuard as ShardedLockWriteGuard,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

/// Locks `mutex`, ignoring poisoning.
///
/// Every critical section in the engine leaves its data consistent at each
/// step (no user code runs while a lock is held), so a panic in another
/// thread cannot leave the protected state half-updated.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Read-locks a [`ShardedLock`], ignoring poisoning (see [`lock`]).
pub(crate) fn read_sharded<T>(rwlock: &ShardedLock<T>) -> ShardedLockReadGuard<'_, T> {
    match rwlock.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Write-locks a [`ShardedLock`], ignoring poisoning (see [`lock`]).
pub(crate) fn write_sharded<T>(rwlock: &ShardedLock<T>) -> ShardedLockWriteGuard<'_, T> {
    match rwlock.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
