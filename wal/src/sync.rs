//! The one place that chooses between `std` and `loom` synchronisation
//! types, so that `--cfg loom` puts the group-commit hand-off (`commit`)
//! on loom's instrumented types. Only re-exports and the lock helper.

#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning: no critical section runs user code
/// halfway through an update.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
