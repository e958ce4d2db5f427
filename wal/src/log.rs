//! [`Log`]: opening a log directory (recovery), appending records, the
//! writer thread (group commit, fsync modes, segment rolls) and
//! reclamation.
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
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::commit::{commit, CommitQueue, Failed, Sink, Waiter};
use crate::error::{io, Error};
use crate::record::{
    decode_written, encode, may_go_unlogged, publish_entries, Decoded, Encoded, Record, FRAME,
};
use crate::segment::{self, header, scan, HEADER_LEN};
use crate::state::{Recovered, State};
use crate::storage::{Storage, StorageFile};
use crate::tracker::Tracker;

/// How many ids one mark grants: the most a crash skips. The grant is
/// extended (every 100 ms, by the server) once half of it is used, so ids
/// would have to be handed out at 80 million a second to catch up with it.
pub const ID_BLOCK: u64 = 1 << 24;

/// Lazy records wake the writer once this much is pending.
const LAZY_LIMIT: usize = 1 << 20;

/// A drained log's active segment is rolled (and the old one deleted) once
/// it is this large.
const EMPTY_ROLL: u64 = 256 << 10;

/// What a `Gone` record takes: the room reserved per live message.
const GONE_SIZE: u64 = 17;

/// The reserve is kept this much ahead of the live messages' needs, so it
/// is grown once per many publishes, not per publish.
const RESERVE_SLACK: u64 = 64 << 10;

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
struct Counters {
    bytes: AtomicU64,
    segments: AtomicU64,
    fsyncs: AtomicU64,
    fsync_nanos: AtomicU64,
    fsync_max_nanos: AtomicU64,
    committed: AtomicU64,
    live: AtomicU64,
    failed: AtomicBool,
    disk_full: AtomicBool,
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

/// The writer thread's side: the files, the replayed state, the active
/// segment.
struct Writer<S: Storage> {
    storage: S,
    state: Tracker,
    options: Options,
    active: S::File,
    active_number: u64,
    active_len: u64,
    /// Bytes really appended to the active file (`active_len` runs ahead
    /// of it within a write).
    written_len: u64,
    /// What the reserve file holds.
    reserved: u64,
    /// Where the active segment's snapshot ends: a segment is rolled only
    /// once it holds a record beyond it.
    snapshot_end: u64,
    counters: Arc<Counters>,
    unsynced: bool,
    queue: Arc<CommitQueue>,
    /// Runs of records written but not yet applied to `state`.
    pending_replay: Vec<(u64, u64, Bytes)>,
}

impl<S: Storage> Writer<S> {
    fn run(mut self) {
        let interval = self.options.interval;
        let mut last_sync = Instant::now();
        let mut failed = false;
        loop {
            let timeout = match self.options.fsync {
                FsyncMode::Interval => interval.saturating_sub(last_sync.elapsed()),
                FsyncMode::Always | FsyncMode::Never => interval,
            };
            let batch = self.queue.take(Some(timeout.max(Duration::from_millis(1))));
            let closing = batch.closing;
            if failed {
                // Nothing more is written; answer anything that slipped in.
                for waiter in batch.waiters {
                    waiter(Err(Failed));
                }
                if closing {
                    return;
                }
                continue;
            }
            let waiters = batch.waiters.len();
            let will_write = !batch.bytes.is_empty();
            let due = last_sync.elapsed() >= interval;
            // Waiters are answered once their record is written (handed to
            // the OS) in every mode; only `Always` syncs for them.
            let sync = closing
                || (waiters > 0 && self.options.fsync == FsyncMode::Always)
                || match self.options.fsync {
                    FsyncMode::Always | FsyncMode::Interval => due && (self.unsynced || will_write),
                    FsyncMode::Never => false,
                };
            let queue = self.queue.clone();
            match commit(&queue, batch, &mut self, sync) {
                Ok(()) => {
                    if sync {
                        last_sync = Instant::now();
                    }
                    // A group without waiters was not replayed yet.
                    self.replay();
                    if let Err(error) = self.reclaim() {
                        self.fail(&error);
                        failed = true;
                    } else {
                        self.ensure_reserve();
                    }
                }
                Err(error) => {
                    self.fail(&error);
                    failed = true;
                }
            }
            self.publish_usage();
            if closing {
                return;
            }
        }
    }

    fn fail(&self, error: &std::io::Error) {
        tracing::error!(%error, "the write-ahead log failed: no more writes until restart");
        self.counters.failed.store(true, Ordering::Relaxed);
        for waiter in self.queue.fail() {
            waiter(Err(Failed));
        }
    }

    fn publish_usage(&self) {
        let (mut bytes, mut segments) = (0, 0);
        for (_, usage) in self.state.usage() {
            bytes += usage.bytes;
            segments += 1;
        }
        self.counters.bytes.store(bytes, Ordering::Relaxed);
        self.counters.segments.store(segments, Ordering::Relaxed);
        self.counters
            .live
            .store(self.state.live(), Ordering::Relaxed);
    }

    /// Writes the header and the snapshot (queues, marks) of the new active
    /// segment.
    fn start_segment(&mut self, marks: (u64, u64)) -> std::io::Result<()> {
        let mut head = header(self.active_number).to_vec();
        let mut records = self.state.queue_records();
        records.push(Record::Marks {
            next_delivery: marks.0,
            next_message: marks.1,
        });
        let mut offsets = Vec::with_capacity(records.len());
        for record in &records {
            offsets.push(head.len() as u64);
            encode(record, &mut head);
        }
        self.written_len = 0;
        self.append_active(&head, Appended::Whole)?;
        self.unsynced = true;
        for (record, offset) in records.into_iter().zip(offsets) {
            self.state.apply(self.active_number, offset, &record);
        }
        self.active_len = head.len() as u64;
        self.snapshot_end = self.active_len;
        self.state.segment_grew(self.active_number, self.active_len);
        Ok(())
    }

    /// Closes the active segment (synced, unless `Never`) and starts the
    /// next.
    fn roll(&mut self) -> std::io::Result<()> {
        if self.options.fsync != FsyncMode::Never {
            self.sync()?;
        }
        let number = self.active_number + 1;
        self.active = self.storage.create(&segment::name(number))?;
        self.active_number = number;
        let marks = self.state.marks();
        self.start_segment(marks)?;
        self.storage.sync_dir()
    }

    /// Writes records (whole ones, as encoded by `encode`), rolling
    /// segments between them. Only their frames are read here; the records
    /// are replayed into the state later ([`Writer::replay`]), during the
    /// sync when there is one, so that the per-message work of the replay
    /// overlaps the `fdatasync` instead of adding to it.
    fn write_records(&mut self, data: Bytes) -> std::io::Result<()> {
        let limit = self.options.segment_bytes;
        let mut at = 0;
        let mut run_start = 0;
        let mut run_offset = self.active_len;
        while at < data.len() {
            let len = frame_len(&data, at).ok_or_else(|| {
                std::io::Error::other("internal error: an appended record has no whole frame")
            })?;
            if self.active_len + len as u64 > limit && self.active_len > self.snapshot_end {
                if run_start < at {
                    self.append_active(&data[run_start..at], Appended::Records)?;
                    self.pending_replay.push((
                        self.active_number,
                        run_offset,
                        data.slice(run_start..at),
                    ));
                }
                self.state.segment_grew(self.active_number, self.active_len);
                run_start = at;
                // The new segment's snapshot is taken from the state.
                self.replay();
                self.roll()?;
                run_offset = self.active_len;
            }
            self.active_len += len as u64;
            at += len;
        }
        if run_start < at {
            // Records dropped on a full disk leave `active_len` a little
            // ahead of the file: positions stay in log order, and the
            // usage figures err on the side of reclaiming.
            self.append_active(&data[run_start..at], Appended::Records)?;
            self.pending_replay
                .push((self.active_number, run_offset, data.slice(run_start..at)));
            self.unsynced = true;
        }
        self.state.segment_grew(self.active_number, self.active_len);
        Ok(())
    }

    /// Applies the records written since the last replay to the state.
    fn replay(&mut self) {
        replay_runs(&mut self.state, std::mem::take(&mut self.pending_replay));
    }

    /// Appends records (or a segment's header and snapshot, `Whole`) to the
    /// active file. A full disk (`ENOSPC`) is not a failure of the log: the
    /// partial write is cut back, publishes are refused from now on
    /// (`disk_full`), the records that may go unlogged (deliveries,
    /// expiries, requeues, delays: at least once allows forgetting them)
    /// are dropped, and exactly the room the rest need is taken from the
    /// reserve, which is kept for acknowledgements. Only if that fails too
    /// does the log fail.
    fn append_active(&mut self, data: &[u8], what: Appended) -> std::io::Result<()> {
        let at = self.written_len;
        let written = match self.active.append(data) {
            Ok(()) => data.len(),
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => {
                self.active.truncate(at)?;
                self.note_disk_full();
                let kept = match what {
                    Appended::Records => essential_records(data),
                    Appended::Whole => data.to_vec(),
                };
                if !kept.is_empty() {
                    let left = self.reserved.saturating_sub(kept.len() as u64);
                    if left == self.reserved {
                        return Err(error);
                    }
                    self.storage.reserve(left)?;
                    self.reserved = left;
                    self.active.append(&kept)?;
                }
                kept.len()
            }
            Err(error) => return Err(error),
        };
        self.written_len = at + written as u64;
        Ok(())
    }

    fn note_disk_full(&self) {
        if !self.counters.disk_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "disk full: publishes get 503 disk_full and deliveries, expiries and requeues go unlogged until space is freed; acknowledgements use the reserve"
            );
        }
    }

    /// Keeps room for a `Gone` record of every live message in the
    /// reserve file. While it cannot grow, the disk is full: publishes are
    /// refused, acknowledgements use the reserve.
    fn ensure_reserve(&mut self) {
        let need = self.state.live() * GONE_SIZE + RESERVE_SLACK;
        let grow = need > self.reserved;
        let shrink = self.reserved > 2 * need;
        if !grow && !shrink && !self.counters.disk_full.load(Ordering::Relaxed) {
            return;
        }
        let target = need.div_ceil(RESERVE_SLACK) * RESERVE_SLACK;
        match self.storage.reserve(target) {
            Ok(()) => {
                self.reserved = target;
                if self.counters.disk_full.swap(false, Ordering::Relaxed) {
                    tracing::info!("disk space is back: publishes accepted again");
                }
            }
            Err(error) => {
                if !self.counters.disk_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "disk full: cannot reserve room for acknowledgements; publishes get 503 disk_full");
                }
            }
        }
    }

    /// Deletes settled segments from the front; compacts the oldest when
    /// the log is more than twice the live data plus two segments.
    fn reclaim(&mut self) -> std::io::Result<()> {
        let mut removed = false;
        loop {
            let Some((oldest, usage)) = self.state.usage().next() else {
                break;
            };
            if oldest == self.active_number {
                break;
            }
            if usage.live == 0 {
                // The records that settled its messages must be durable
                // before it goes (under `Never`, a process crash keeps them
                // in the page cache, and power loss is not promised).
                if self.unsynced && self.options.fsync != FsyncMode::Never {
                    self.sync()?;
                }
                self.storage.remove(&segment::name(oldest))?;
                self.state.segment_removed(oldest);
                removed = true;
                continue;
            }
            // Compaction writes before it frees: not on a full disk, where
            // it would eat the acknowledgements' reserve.
            if self.counters.disk_full.load(Ordering::Relaxed) {
                break;
            }
            // Bytes and files both stay within about twice the live data
            // plus two segments: a start adds a small segment each time, so
            // a bound on bytes alone would let one old live message pin any
            // number of them.
            let (mut total, mut files) = (0, 0u64);
            for (_, usage) in self.state.usage() {
                total += usage.bytes;
                files += 1;
            }
            let live = self.state.live_bytes();
            let bound = 2 * live + 2 * self.options.segment_bytes;
            let file_bound = 2 + (2 * live).div_ceil(self.options.segment_bytes.max(1));
            if total <= bound && files <= file_bound {
                break;
            }
            self.compact(oldest)?;
        }
        // Nothing live at all, and the active segment has grown: start a
        // new one so that this one can go too, and the disk goes back to
        // next to nothing once the broker is drained.
        if self.state.live() == 0 && self.active_len > self.snapshot_end + EMPTY_ROLL {
            self.roll()?;
            return self.reclaim();
        }
        if removed {
            self.storage.sync_dir()?;
        }
        Ok(())
    }

    /// Writes every live message homed in `segment` forward as a `Live`
    /// record, after which `segment` holds nothing live.
    fn compact(&mut self, number: u64) -> std::io::Result<()> {
        let data = Bytes::from(self.storage.read(&segment::name(number))?);
        let mut records = Vec::new();
        // A bad record here was written by this process and read back
        // differently: the disk is lying, stop.
        let scanned = scan(&data, number, |offset, record| {
            if matches!(record, Record::Publish { .. } | Record::Live(_)) {
                records.push((offset as u64, record));
            }
        });
        if let Err(bad) = scanned {
            return Err(std::io::Error::other(format!(
                "segment {} reads back corrupt at offset {} ({})",
                segment::name(number),
                bad.offset,
                bad.reason
            )));
        }
        let forward = self.state.forward(number, records);
        drop(data);
        let moved = forward.len();
        let mut out = Vec::new();
        for live in &forward {
            encode(live, &mut out);
        }
        drop(forward);
        tracing::debug!(segment = number, moved, "compacted a log segment forward");
        self.write_records(Bytes::from(out))?;
        self.replay();
        if self
            .state
            .usage()
            .next()
            .is_some_and(|(n, u)| n == number && u.live > 0)
        {
            return Err(std::io::Error::other(format!(
                "compaction left live messages in {}",
                segment::name(number)
            )));
        }
        Ok(())
    }
}

/// The length of the whole record (frame included) at `at`, if its frame
/// is there.
fn frame_len(data: &[u8], at: usize) -> Option<usize> {
    let frame = data.get(at..at + FRAME)?;
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let end = at.checked_add(FRAME + len)?;
    (end <= data.len() && len > 0).then_some(FRAME + len)
}

/// Replays runs of records (segment, offset of the run, its bytes) into
/// `state`. The bytes are what this process encoded, so the checksum is
/// not computed again.
fn replay_runs(state: &mut Tracker, runs: Vec<(u64, u64, Bytes)>) {
    for (segment, offset, run) in runs {
        let mut at = 0;
        while at < run.len() {
            // Publishes, the bulk, from their entries alone.
            if let Some(len) = frame_len(&run, at) {
                if let Some((queue, entries)) = publish_entries(&run[at + FRAME..at + len]) {
                    state.apply_published(segment, queue, &entries);
                    at += len;
                    continue;
                }
            }
            let Decoded::Record(record, next) = decode_written(&run, at) else {
                debug_assert!(false, "an appended record does not decode");
                break;
            };
            state.apply(segment, offset + at as u64, &record);
            at = next;
        }
    }
}

/// Replays on the writer thread below this many bytes, beside the sync
/// (on a scoped thread) from here up: a thread costs tens of microseconds,
/// the replay of 16 KiB of small messages about a hundred.
const REPLAY_BESIDE_SYNC: usize = 16 << 10;

/// What [`Writer::append_active`] is given.
#[derive(Clone, Copy)]
enum Appended {
    /// Whole records, as encoded by `encode`: on a full disk, the ones
    /// that may go unlogged are dropped.
    Records,
    /// A segment's header and snapshot: all of it is needed.
    Whole,
}

/// The records of `data` (whole records, as encoded by `encode`) that must
/// be logged even on a full disk: all but deliveries, delays and the
/// requeues and expiries that make a message ready (dead-letter moves are
/// kept: forgetting one could deliver a message past its limit).
fn essential_records(data: &[u8]) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut at = 0;
    while at + FRAME < data.len() {
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let end = (at + FRAME + len).min(data.len());
        if !may_go_unlogged(&data[at + FRAME..end]) {
            kept.extend_from_slice(&data[at..end]);
        }
        at = end;
    }
    kept
}

impl<S: Storage> Sink for Writer<S> {
    fn write(&mut self, bytes: Bytes) -> std::io::Result<()> {
        self.write_records(bytes)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let runs = std::mem::take(&mut self.pending_replay);
        let big = runs.iter().map(|(_, _, run)| run.len()).sum::<usize>() >= REPLAY_BESIDE_SYNC;
        let (active, state) = (&mut self.active, &mut self.state);
        let mut timed_sync = move || {
            let started = Instant::now();
            active.sync().map(|()| started.elapsed().as_nanos() as u64)
        };
        let synced = if big {
            std::thread::scope(|scope| {
                let syncing = scope.spawn(timed_sync);
                replay_runs(state, runs);
                syncing
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread panicked")))
            })
        } else {
            replay_runs(state, runs);
            timed_sync()
        };
        let nanos = synced?;
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .fsync_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        self.counters
            .fsync_max_nanos
            .fetch_max(nanos, Ordering::Relaxed);
        self.unsynced = false;
        Ok(())
    }

    fn before_answers(&mut self, waiters: usize) {
        // Without a sync (`interval`, `never`) the replay is still due.
        self.replay();
        self.counters
            .committed
            .fetch_add(waiters as u64, Ordering::Relaxed);
        self.publish_usage();
    }
}
