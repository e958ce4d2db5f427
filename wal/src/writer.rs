//! [`Writer`]: the log's writer thread. It owns the files: it takes the
//! appenders' groups from the [`CommitQueue`], writes them to the active
//! segment, syncs them as the fsync mode says (the [`Sink`] the group
//! commit drives), replays what it wrote into its [`Tracker`], rolls
//! segments, keeps the reserve for acknowledgements, and reclaims or
//! compacts old segments (the policy is in the `log` module's docs).
//!
//! It is apart from `log` (opening, recovery, the appenders' side) because
//! nothing here runs on a request thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::commit::{commit, CommitQueue, Failed, Sink};
use crate::log::{Counters, FsyncMode, Options};
use crate::record::{
    decode_written, encode, may_go_unlogged, publish_entries, Decoded, Record, FRAME,
};
use crate::segment::{self, header, scan};
use crate::storage::{Storage, StorageFile};
use crate::tracker::Tracker;

/// A drained log's active segment is rolled (and the old one deleted) once
/// it is this large.
const EMPTY_ROLL: u64 = 256 << 10;

/// What a `Gone` record takes: the room reserved per live message.
const GONE_SIZE: u64 = 17;

/// The reserve is kept this much ahead of the live messages' needs, so it
/// is grown once per many publishes, not per publish.
const RESERVE_SLACK: u64 = 64 << 10;

/// The writer thread's side: the files, the replayed state, the active
/// segment.
pub(crate) struct Writer<S: Storage> {
    pub(crate) storage: S,
    pub(crate) state: Tracker,
    pub(crate) options: Options,
    pub(crate) active: S::File,
    pub(crate) active_number: u64,
    pub(crate) active_len: u64,
    /// Bytes really appended to the active file (`active_len` runs ahead
    /// of it within a write).
    pub(crate) written_len: u64,
    /// What the reserve file holds.
    pub(crate) reserved: u64,
    /// Where the active segment's snapshot ends: a segment is rolled only
    /// once it holds a record beyond it.
    pub(crate) snapshot_end: u64,
    pub(crate) counters: Arc<Counters>,
    pub(crate) unsynced: bool,
    pub(crate) queue: Arc<CommitQueue>,
    /// Runs of records written but not yet applied to `state`.
    pub(crate) pending_replay: Vec<(u64, u64, Bytes)>,
}

impl<S: Storage> Writer<S> {
    pub(crate) fn run(mut self) {
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

    pub(crate) fn publish_usage(&self) {
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
    pub(crate) fn start_segment(&mut self, marks: (u64, u64)) -> std::io::Result<()> {
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
    pub(crate) fn ensure_reserve(&mut self) {
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
