//! Group commit: the hand-off between the threads that append records and
//! the one writer that makes them durable.
//!
//! Appenders encode their record into the shared pending buffer under one
//! short lock; a record whose caller waits (a publish under `--fsync
//! always`) also leaves a [`Waiter`] and wakes the writer. The writer takes
//! everything pending at once ([`CommitQueue::take`]), makes one write and
//! one sync of it ([`commit`]), and only then calls every waiter of that
//! group. Records appended while it syncs form the next group, so no timer
//! is needed and an fsync is shared by everyone who arrived during the one
//! before.
//!
//! A record's place in the log is fixed when it is appended (under the
//! lock), before its caller goes on: a caller that appends and then changes
//! the broker knows that every record appended after that change is later
//! in the log.
//!
//! # Failure
//!
//! A failed write or sync poisons the queue ([`CommitQueue::fail`]): the
//! group's waiters and every waiter still pending are answered
//! `Err(Failed)`, and every later append fails at once. The sync is never
//! retried: after a failed `fsync` Linux may have dropped the dirty pages
//! and cleared the error, so a second `fsync` "succeeding" proves nothing
//! (fsyncgate).
//!
//! # What it must never do
//!
//! Call a waiter before the sync that covers its record has returned `Ok`
//! (the loom model `w01_group_commit` checks this, and was seen to fail
//! when the waiters were answered before the sync), or leave a waiter
//! unanswered.

use std::io;
use std::time::Duration;

use bytes::Bytes;

use crate::sync::{lock, Condvar, Mutex};

/// The log has failed: the record may not be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// Called once, with the outcome of the sync that covers its record.
pub type Waiter = Box<dyn FnOnce(Result<(), Failed>) + Send>;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    waiters: Vec<Waiter>,
    /// A waiter (or a full buffer) wants the writer now.
    urgent: bool,
    closing: bool,
    failed: bool,
}

/// What the writer took in one go.
pub struct Batch {
    pub bytes: Vec<u8>,
    pub waiters: Vec<Waiter>,
    /// The log is closing: this is the last batch worth writing.
    pub closing: bool,
}

/// Where a batch goes: the active segment in the log, a model disk in loom.
pub trait Sink {
    fn write(&mut self, bytes: Bytes) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    /// The group's write (and sync, if asked) succeeded and its `waiters`
    /// are about to be answered `Ok`: figures that describe the group are
    /// brought up to date here, so that a caller who reads them after its
    /// answer sees its own record counted.
    fn before_answers(&mut self, _waiters: usize) {}
}

/// The pending buffer shared by appenders and the writer.
pub struct CommitQueue {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Lazy records wake the writer once this many bytes are pending.
    lazy_limit: usize,
}

impl CommitQueue {
    pub fn new(lazy_limit: usize) -> Self {
        CommitQueue {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            lazy_limit,
        }
    }

    /// Appends a record (`encode` writes its bytes), with a waiter if its
    /// caller waits for it to be durable. `Err` if the log has failed or is
    /// closing: then nothing was appended and `waiter` has been called with
    /// `Err`. Either way every waiter is called exactly once.
    pub fn push(
        &self,
        encode: impl FnOnce(&mut Vec<u8>),
        waiter: Option<Waiter>,
    ) -> Result<(), Failed> {
        let mut pending = lock(&self.pending);
        // After a failure, or once the writer was told to stop: nothing
        // would ever write this record, so its waiter hears so now.
        if pending.failed || pending.closing {
            drop(pending);
            if let Some(waiter) = waiter {
                waiter(Err(Failed));
            }
            return Err(Failed);
        }
        encode(&mut pending.bytes);
        let wants_writer = match waiter {
            Some(waiter) => {
                pending.waiters.push(waiter);
                true
            }
            None => pending.bytes.len() >= self.lazy_limit,
        };
        if wants_writer && !pending.urgent {
            pending.urgent = true;
            drop(pending);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Waits until a record wants the writer, the log closes, or `timeout`
    /// passes (`None`: no timeout), then takes everything pending.
    pub fn take(&self, timeout: Option<Duration>) -> Batch {
        let mut pending = lock(&self.pending);
        if !pending.urgent && !pending.closing {
            pending = match timeout {
                Some(timeout) => match self.wake.wait_timeout(pending, timeout) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                },
                None => {
                    while !pending.urgent && !pending.closing {
                        pending = match self.wake.wait(pending) {
                            Ok(guard) => guard,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                    }
                    pending
                }
            };
        }
        pending.urgent = false;
        Batch {
            bytes: std::mem::take(&mut pending.bytes),
            waiters: std::mem::take(&mut pending.waiters),
            closing: pending.closing,
        }
    }

    /// Poisons the queue; returns the waiters still pending, to be answered
    /// `Err(Failed)`.
    pub fn fail(&self) -> Vec<Waiter> {
        let mut pending = lock(&self.pending);
        pending.failed = true;
        pending.bytes = Vec::new();
        std::mem::take(&mut pending.waiters)
    }

    pub fn failed(&self) -> bool {
        lock(&self.pending).failed
    }

    /// Asks the writer to take what is pending and stop.
    pub fn close(&self) {
        lock(&self.pending).closing = true;
        self.wake.notify_one();
    }
}

/// One group: writes `batch`, syncs if `sync`, and only then answers its
/// waiters. On failure poisons `queue` and answers every waiter, of this
/// group and still pending, with `Err(Failed)`.
pub fn commit(
    queue: &CommitQueue,
    batch: Batch,
    sink: &mut impl Sink,
    sync: bool,
) -> io::Result<()> {
    let written = if batch.bytes.is_empty() {
        Ok(())
    } else {
        sink.write(Bytes::from(batch.bytes))
    };
    let result = written.and_then(|()| if sync { sink.sync() } else { Ok(()) });
    match result {
        Ok(()) => {
            sink.before_answers(batch.waiters.len());
            for waiter in batch.waiters {
                waiter(Ok(()));
            }
            Ok(())
        }
        Err(error) => {
            let rest = queue.fail();
            for waiter in batch.waiters.into_iter().chain(rest) {
                waiter(Err(Failed));
            }
            Err(error)
        }
    }
}
