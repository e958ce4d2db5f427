//! ubroker's write-ahead log: what `--data-dir` keeps on disk, and how it
//! comes back after a crash. It knows records and files, not the broker:
//! the server appends a record for every change the broker must survive
//! and rebuilds the broker from [`Recovered`] at start-up.
//!
//! # Layout
//!
//! * `record`: [`Record`], its bytes (`[len][crc32c][kind][payload]`), and
//!   a decoder that rejects anything not whole and checksummed.
//! * `segment`: segment files, named by sequence number, with a header;
//!   `scan` reads one up to its first bad record.
//! * `state`: `State`, the replay of records in log order (the replay
//!   contract): what recovery hands the broker.
//! * `tracker`: `Tracker`, the writer's bookkeeping by the same contract
//!   (which segment each live message is homed in, per-segment counts,
//!   what compaction writes forward) at about a bit per live message plus
//!   a little per 64 ids, instead of an entry per message.
//! * `commit`: group commit: the pending buffer appenders share, the one
//!   writer's hand-off (`CommitQueue`, `commit`), and poisoning on
//!   failure. Loom-checked (`loom-tests`, models `w01` and `w02`, through
//!   the `testing` feature).
//! * `log`: [`Log`]: opening and recovery (torn tails, corruption, gaps),
//!   the appenders' side, id marks; the policy the writer follows.
//! * `writer`: the writer thread: group commit's sink (fsync modes),
//!   segment rolls, the reserve, reclamation and compaction.
//! * `storage`: [`Storage`], the file operations the log needs, the real
//!   directory [`FsStorage`] (with its `reserve` file, preallocated room
//!   for acknowledgement records), and [`DirLock`] (one process per
//!   directory).
//! * `faulty`: `FaultyStorage`, an in-memory disk that drops unsynced
//!   bytes, tears writes, flips bytes and fails writes and syncs, for
//!   tests (exported from [`testing`] under the `testing` feature).
//! * `error`: [`Error`], every way opening a log fails.
//! * `sync`: the one place that picks `std` or `loom` types.
//!
//! # What is promised
//!
//! A record whose waiter was answered `Ok` under [`FsyncMode::Always`] is
//! on disk (an `fdatasync` covering it returned); a process crash loses
//! nothing the log's writer had written; a torn tail is cut with a warning;
//! corruption before the tail stops `open` with the file and offset. A
//! failed write or sync poisons the log: no later waiter is answered `Ok`.
//! A full disk is not a failure: deliveries, expiries and requeues go
//! unlogged, the records that must be written take exactly their room from
//! the reserve kept for acknowledgement records, and [`Log::disk_full`]
//! tells the caller to refuse publishes until the reserve can be rebuilt.
//! A log opens on a full disk. A segment missing between two others stops
//! `open` (naming it) unless `truncate_corrupt`.
//!
//! # How it is checked
//!
//! Unit tests beside each module; property tests in `tests/` run random
//! workloads on `FaultyStorage` and crash it at random points, tearing
//! the unsynced tail at random offsets and flipping bytes; loom checks the
//! group-commit hand-off.

mod commit;
mod error;
#[cfg(any(test, feature = "testing"))]
mod faulty;
mod log;
mod record;
mod segment;
mod state;
mod storage;
mod sync;
mod tracker;
mod writer;

pub use commit::{Failed, Waiter};
pub use error::Error;
pub use log::{FsyncMode, Log, LogStats, Options, RecoveryReport, ID_BLOCK};
pub use record::{Encoded, LiveState, Published, Record, Settings};
pub use segment::name as segment_name;
pub use state::{Recovered, RecoveredMessage};
pub use storage::{DirLock, FsStorage, Storage, StorageFile, RESERVE_FILE};

/// What tests outside this crate need and users do not: the group-commit
/// internals the loom models drive (`loom-tests`, models `w01`, `w02`) and
/// the fault-injecting disk the durability tests crash. Behind the
/// `testing` feature so that the log's public API is only the log.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::commit::{commit, Batch, CommitQueue, Sink};
    pub use crate::faulty::FaultyStorage;
}
