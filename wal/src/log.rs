//! [`Log`]: opening a log directory (recovery), appending records, and the
//! rules the writer thread (`writer`: group commit, fsync modes, segment
//! rolls, reclamation) follows, which this doc states in one place.
//!
//! # Recovery
//!
//! Segments are read in order and every record is applied to a [`State`]
//! (what the broker is rebuilt from) and to the writer's [`Tracker`]
//! (which segment holds what; see its module docs).
//! A bad record (short, bad length, bad checksum, malformed) ends the scan.
//! In the last segment that is a torn tail, the normal result of a crash:
//! the file is cut there with a warning that says how much was dropped. In
//! any earlier segment it is corruption: opening fails with an error naming
//! the file and offset, unless `truncate_corrupt`, which cuts there, removes
//! every later segment and says what it dropped.
//!
//! The log then starts a new segment, so that no recovered file is ever
//! appended to. Every segment starts with a snapshot of the queues and of
//! the id marks, so that reclaiming older segments never loses a queue or a
//! mark.
//!
//! # Id marks
//!
//! Delivery ids must never repeat across restarts (a stale id would settle
//! another delivery), and ids stay below 2^53, so there is no room for an
//! epoch in the high bits. Instead the log keeps a high-water mark: the new
//! segment's snapshot records a grant of `next + ID_BLOCK` durably before
//! `open` returns, the broker starts handing out ids at the old mark, and
//! [`Log::ensure_ids`] extends the grant when half of it is used. A clean
//! close (and a start that fails after `open`, e.g. on a taken port)
//! records the exact next ids ([`Log::record_marks`]); the last mark in the
//! log wins. So a clean restart skips no id at all, and a crash skips at
//! most one block: 2^53 / 2^24 = 537 million crashes.
//!
//! # Reclamation
//!
//! After each group the writer deletes, oldest first, every segment with no
//! live message homed in it, after a sync so that the records that settled
//! them are durable (the [`Tracker`] counts from records already written,
//! so a count is never low). Only a prefix is ever deleted: a later
//! segment may hold the `Gone` records that keep an earlier one's messages
//! from coming back. When the files add up to more than twice the live
//! messages plus two segments, the oldest segment's live messages are
//! written forward as `Live` records (their state and place in line kept)
//! and it is deleted: one old unacknowledged message cannot pin the log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

use crate::commit::{CommitQueue, Failed, Waiter};
use crate::error::{io, Error};
use crate::record::{encode, Encoded, Record};
use crate::segment::{self, scan, HEADER_LEN};
use crate::state::{Recovered, State};
use crate::storage::{Storage, StorageFile};
use crate::tracker::Tracker;
use crate::writer::Writer;

/// How many ids one mark grants: the most a crash skips. The grant is
/// extended (every 100 ms, by the server) once half of it is used, so ids
/// would have to be handed out at 80 million a second to catch up with it.
pub const ID_BLOCK: u64 = 1 << 24;

/// Lazy records wake the writer once this much is pending.
const LAZY_LIMIT: usize = 1 << 20;

/// When a publish is answered, relative to its record reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// After an `fdatasync` that covers it (group commit).
    Always,
    /// At once; the log is synced every interval.
    Interval,
    /// At once; the log is written every interval and never synced (except
    /// at a clean shutdown).
    Never,
}

/// How to run a log.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub fsync: FsyncMode,
    /// The sync period of `Interval`, and how long lazy records (deliveries,
    /// acknowledgements, ...) wait for a sync under `Always`.
    pub interval: Duration,
    /// A segment is rolled once a record would take it past this.
    pub segment_bytes: u64,
    /// Cut the log at a bad record that is not at its tail, instead of
    /// refusing to open it.
    pub truncate_corrupt: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncMode::Always,
            interval: Duration::from_millis(100),
            segment_bytes: 16 << 20,
            truncate_corrupt: false,
        }
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from a torn tail.
    pub torn_bytes: u64,
    /// Bytes dropped by `truncate_corrupt`.
    pub dropped_bytes: u64,
}

/// Segments are numbered consecutively and only ever removed from the
/// front, so a number missing between two present ones is damage: its
/// records are gone, and replaying past it would bring back messages it
/// settled or lose messages it held. Refused (naming the gap) unless
/// `truncate_corrupt`, which drops every segment after the gap and says
/// how much.
fn check_gaps<S: Storage>(
    storage: &S,
    numbers: &mut Vec<u64>,
    options: &Options,
    report: &mut RecoveryReport,
) -> Result<(), Error> {
    let Some(gap) = numbers.windows(2).position(|pair| pair[1] != pair[0] + 1) else {
        return Ok(());
    };
    let later = numbers[gap + 1..].to_vec();
    let mut later_bytes = 0;
    for n in &later {
        later_bytes += storage
            .read(&segment::name(*n))
            .map_or(0, |d| d.len() as u64);
    }
    let before = segment::name(numbers[gap]);
    let missing = segment::name(numbers[gap] + 1);
    if !options.truncate_corrupt {
        return Err(Error::Gap {
            before,
            missing,
            after: segment::name(later[0]),
            later_bytes,
        });
    }
    tracing::warn!(
        missing = %missing,
        dropped_bytes = later_bytes,
        dropped_segments = later.len(),
        "corrupt log: a segment is missing; --truncate-corrupt-log drops every segment after it"
    );
    for n in later {
        storage
            .remove(&segment::name(n))
            .map_err(io(format!("cannot remove {}", segment::name(n))))?;
    }
    report.dropped_bytes += later_bytes;
    numbers.truncate(gap + 1);
    Ok(())
}

/// The log's figures, for `/stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogStats {
    pub bytes: u64,
    pub segments: u64,
    pub fsyncs: u64,
    pub fsync_seconds_total: f64,
    pub fsync_max_seconds: f64,
    /// Waiters answered: after the write, and under `Always` after the
    /// sync that covers it. Counted before they are answered.
    pub committed: u64,
    pub live_messages: u64,
    pub failed: bool,
    /// The disk could not make room for more acknowledgement records:
    /// publishes are refused until it can.
    pub disk_full: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) bytes: AtomicU64,
    pub(crate) segments: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsync_nanos: AtomicU64,
    pub(crate) fsync_max_nanos: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) live: AtomicU64,
    pub(crate) failed: AtomicBool,
    pub(crate) disk_full: AtomicBool,
}

/// An open write-ahead log. Appends come from any thread; one writer thread
/// owns the files.
pub struct Log {
    queue: Arc<CommitQueue>,
    counters: Arc<Counters>,
    mode: FsyncMode,
    writer: Mutex<Option<JoinHandle<()>>>,
    granted_delivery: Arc<AtomicU64>,
    granted_message: Arc<AtomicU64>,
}

impl Log {
    /// Opens (recovers) the log in `storage`; see the module docs. The
    /// caller takes the directory lock first (`DirLock`).
    pub fn open<S: Storage>(
        storage: S,
        options: Options,
    ) -> Result<(Log, Recovered, RecoveryReport), Error> {
        let mut state = State::new(true);
        let mut tracker = Tracker::new();
        let mut report = RecoveryReport::default();
        let mut numbers: Vec<u64> = storage
            .list()
            .map_err(io("cannot list the log directory"))?
            .iter()
            .filter_map(|name| segment::parse_name(name))
            .collect();
        numbers.sort_unstable();
        check_gaps(&storage, &mut numbers, &options, &mut report)?;
        let mut last = 0;
        let mut index = 0;
        while index < numbers.len() {
            let number = numbers[index];
            let name = segment::name(number);
            let data = Bytes::from(
                storage
                    .read(&name)
                    .map_err(io(format!("cannot read {name}")))?,
            );
            let mut records = 0;
            let scanned = scan(&data, number, |offset, record| {
                records += 1;
                tracker.apply(number, offset as u64, &record);
                state.apply(number, offset as u64, record);
            });
            report.records += records;
            report.segments += 1;
            last = number;
            let valid = match scanned {
                Ok(()) => data.len(),
                Err(bad) => {
                    let is_last = index + 1 == numbers.len();
                    let later: Vec<u64> = numbers[index + 1..].to_vec();
                    let mut later_bytes = 0;
                    for n in &later {
                        later_bytes += storage
                            .read(&segment::name(*n))
                            .map_or(0, |d| d.len() as u64);
                    }
                    let cut = (data.len() - bad.offset) as u64;
                    if is_last {
                        tracing::warn!(
                            file = %name,
                            offset = bad.offset,
                            reason = bad.reason,
                            dropped_bytes = cut,
                            "torn tail: truncating the log's last segment"
                        );
                        report.torn_bytes += cut;
                    } else if options.truncate_corrupt {
                        tracing::warn!(
                            file = %name,
                            offset = bad.offset,
                            reason = bad.reason,
                            dropped_bytes = cut + later_bytes,
                            dropped_segments = later.len(),
                            "corrupt log: --truncate-corrupt-log drops everything from here on"
                        );
                        report.dropped_bytes += cut + later_bytes;
                        for n in later {
                            storage
                                .remove(&segment::name(n))
                                .map_err(io(format!("cannot remove {}", segment::name(n))))?;
                        }
                        numbers.truncate(index + 1);
                    } else {
                        return Err(Error::Corrupt {
                            file: name,
                            offset: bad.offset,
                            reason: bad.reason,
                            later_bytes,
                        });
                    }
                    if bad.offset < HEADER_LEN {
                        storage
                            .remove(&name)
                            .map_err(io(format!("cannot remove {name}")))?;
                        state.segment_removed(number);
                        tracker.segment_removed(number);
                        // The next segment takes its number: every later
                        // one is gone, and a number skipped here would be
                        // a hole that stops the next start.
                        last = number.saturating_sub(1);
                        index += 1;
                        continue;
                    }
                    storage
                        .truncate(&name, bad.offset as u64)
                        .map_err(io(format!("cannot truncate {name}")))?;
                    bad.offset
                }
            };
            tracker.segment_grew(number, valid as u64);
            index += 1;
        }
        storage
            .sync_dir()
            .map_err(io("cannot sync the log directory"))?;

        let (next_delivery, next_message) = state.marks();
        let mut recovered = state.take_recovered();
        // The recovery state (an entry and a body per message) goes; the
        // writer goes on with the tracker, built from the same records.
        drop(state);
        tracker.ensure_queues(&recovered.queues);
        recovered.next_delivery = next_delivery;
        recovered.next_message = next_message;
        let granted = (
            next_delivery.saturating_add(ID_BLOCK),
            next_message.saturating_add(ID_BLOCK),
        );

        let counters = Arc::new(Counters::default());
        let queue = Arc::new(CommitQueue::new(LAZY_LIMIT));
        let number = last + 1;
        let reserved = storage.reserve_len().unwrap_or(0);
        let mut writer = Writer {
            active: storage
                .create(&segment::name(number))
                .map_err(io(format!("cannot create {}", segment::name(number))))?,
            storage,
            state: tracker,
            options,
            active_number: number,
            active_len: 0,
            written_len: 0,
            reserved,
            snapshot_end: 0,
            counters: counters.clone(),
            unsynced: false,
            queue: queue.clone(),
            pending_replay: Vec::new(),
        };
        writer.ensure_reserve();
        writer
            .start_segment(granted)
            .and_then(|()| writer.active.sync())
            .and_then(|()| writer.storage.sync_dir())
            .map_err(io("cannot start a new log segment"))?;
        writer.publish_usage();

        let granted_delivery = Arc::new(AtomicU64::new(granted.0));
        let granted_message = Arc::new(AtomicU64::new(granted.1));
        let handle = std::thread::Builder::new()
            .name("ubroker-wal".into())
            .spawn(move || writer.run())
            .map_err(io("cannot start the log writer thread"))?;
        Ok((
            Log {
                queue,
                counters,
                mode: options.fsync,
                writer: Mutex::new(Some(handle)),
                granted_delivery,
                granted_message,
            },
            recovered,
            report,
        ))
    }

    /// Appends `record`. With a `waiter`, it is called exactly once: when
    /// the record is durable (under [`FsyncMode::Always`]; under the other
    /// modes once it is written), or with `Err` when the log fails (at once
    /// if it has failed already, and then this returns `Err` too).
    pub fn append(&self, record: &Record, waiter: Option<Waiter>) -> Result<(), Failed> {
        self.queue.push(|out| encode(record, out), waiter)
    }

    /// As [`Log::append`], of a record encoded ahead ([`Encoded`]).
    pub fn append_encoded(&self, record: &Encoded, waiter: Option<Waiter>) -> Result<(), Failed> {
        self.queue
            .push(|out| out.extend_from_slice(record.bytes()), waiter)
    }

    pub fn mode(&self) -> FsyncMode {
        self.mode
    }

    /// Whether the disk is full: the room reserved for acknowledgement
    /// records cannot grow, so publishes must be refused (`503 disk_full`)
    /// while everything else goes on.
    pub fn disk_full(&self) -> bool {
        self.counters.disk_full.load(Ordering::Relaxed)
    }

    /// Whether the log has failed (a write or sync error).
    pub fn failed(&self) -> bool {
        // The queue is poisoned before any waiter hears of the failure.
        self.queue.failed()
    }

    /// Extends the id grant if `next_delivery` or `next_message` has used
    /// half of it. Returns `false` if nothing was needed; else `done` is
    /// called once the new mark is durable (or the log failed).
    pub fn ensure_ids(
        &self,
        next_delivery: u64,
        next_message: u64,
        done: impl FnOnce(Result<(), Failed>) + Send + 'static,
    ) -> bool {
        let granted_d = self.granted_delivery.load(Ordering::Relaxed);
        let granted_m = self.granted_message.load(Ordering::Relaxed);
        if next_delivery.saturating_add(ID_BLOCK / 2) <= granted_d
            && next_message.saturating_add(ID_BLOCK / 2) <= granted_m
        {
            return false;
        }
        let d = granted_d.max(next_delivery).saturating_add(ID_BLOCK);
        let m = granted_m.max(next_message).saturating_add(ID_BLOCK);
        let (gd, gm) = (self.granted_delivery.clone(), self.granted_message.clone());
        let record = Record::Marks {
            next_delivery: d,
            next_message: m,
        };
        let waiter: Waiter = Box::new(move |result| {
            if result.is_ok() {
                gd.fetch_max(d, Ordering::Relaxed);
                gm.fetch_max(m, Ordering::Relaxed);
            }
            done(result);
        });
        // A failed log answers the waiter itself.
        let _ = self.append(&record, Some(waiter));
        true
    }

    /// Records the exact next ids (at a clean close, when no more ids will
    /// be handed out), so that the next start resumes right there instead
    /// of past the grant.
    pub fn record_marks(&self, next_delivery: u64, next_message: u64) {
        let _ = self.append(
            &Record::Marks {
                next_delivery,
                next_message,
            },
            None,
        );
    }

    /// The delivery and message ids granted so far.
    pub fn granted(&self) -> (u64, u64) {
        (
            self.granted_delivery.load(Ordering::Relaxed),
            self.granted_message.load(Ordering::Relaxed),
        )
    }

    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            bytes: c.bytes.load(Ordering::Relaxed),
            segments: c.segments.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            fsync_seconds_total: c.fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            fsync_max_seconds: c.fsync_max_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            committed: c.committed.load(Ordering::Relaxed),
            live_messages: c.live.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed) || self.queue.failed(),
            disk_full: c.disk_full.load(Ordering::Relaxed),
        }
    }

    /// Writes and syncs everything appended so far (in every mode) and
    /// stops the writer. Idempotent; appends after it fail.
    pub fn close(&self) {
        self.queue.close();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}
