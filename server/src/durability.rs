//! [`Durability`]: `--data-dir`. Opens the write-ahead log (`ubroker-wal`),
//! rebuilds the broker from it, attaches the journal that logs what the
//! engine changes, logs publishes before they become visible, and reports
//! the log's state (`/stats`, `/health`).
//!
//! # The order of a publish
//!
//! 1. The engine checks, charges and numbers it (`prepare_publish`):
//!    nothing visible yet.
//! 2. Its record (all entries of a batch in one record: all or nothing) is
//!    appended to the log, which fixes its place before anything that
//!    could happen to the message later.
//! 3. Under `--fsync always`, the log's writer calls back once an
//!    `fdatasync` covers the record and hands the prepared publish back to
//!    the request, which commits it into the engine (the message becomes
//!    ready) and answers `200`: the commit's work stays off the one writer
//!    thread. If the request is gone by then (its client disconnected),
//!    the hand-back fails and the writer commits it itself, so a logged
//!    message always enters the broker. Under `interval` and `never` the
//!    writer hands it back once the record is written to the file (handed
//!    to the OS), without a sync: a crash of the process alone loses
//!    nothing answered `200`.
//! 4. If the log failed, the publish is aborted (its charge given back,
//!    never visible) and answered `503 log_failed`.
//!
//! Other changes (deliveries, acknowledgements, requeues, expiries, delays,
//! dead-letter moves, redrives, queue settings and deletes) are logged
//! without waiting: a crash can forget the last of them (an acknowledged
//! message comes back, an attempt is not counted), never a published one.
//!
//! Times in the log are wall-clock milliseconds, so that a delayed message
//! keeps its due time across a restart; the engine's clock is monotonic
//! and starts at zero in every process.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use ubroker_engine::{
    Broker, Clock, Journal, NewMessage, Prepared, QueueInfo, QueueName, QueueUpdate,
    RestoredMessage,
};
use ubroker_wal::{
    DirLock, Encoded, Failed, FsStorage, FsyncMode, Log, LogStats, Options, Record, Recovered,
    RecoveryReport, Settings, Storage, Waiter,
};

use crate::error::ApiError;

/// Reads the broker's next (delivery, message) ids.
type NextIds = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

/// A log, and the lock that keeps other processes off its directory.
pub struct Durability {
    log: Arc<Log>,
    /// For the exact id mark of a clean close.
    next_ids: NextIds,
    _lock: Option<DirLock>,
}

/// The `"log"` object of `/stats`.
#[derive(Debug, Serialize)]
pub struct LogStatsBody {
    pub fsync: &'static str,
    pub bytes: u64,
    pub segments: u64,
    pub fsyncs: u64,
    pub fsync_seconds_total: f64,
    pub fsync_max_ms: f64,
    /// Publish requests answered after the sync that covered them.
    pub committed: u64,
    pub live_messages: u64,
    pub failed: bool,
    pub disk_full: bool,
}

/// Wall-clock milliseconds: due times in the log (and in replicated
/// entries) are wall-clock, so that they survive a restart or a failover.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall-clock due time of something `delay` from now (0: no delay),
/// fixed where the change is made so that a restart, or every replica,
/// holds the same one.
pub(crate) fn due_ms(delay: Duration) -> u64 {
    if delay.is_zero() {
        0
    } else {
        now_ms()
            .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            .max(1)
    }
}

/// Tells the log what the engine changes (see `ubroker_engine::Journal`).
/// A failed log refuses the record; the broker goes on in memory, and
/// publishes are refused, so nothing unlogged is ever promised.
struct LogJournal {
    log: Arc<Log>,
}

impl Journal for LogJournal {
    fn ready(&self, queue: &QueueName, id: u64, attempts: u32, dead_lettered: bool) {
        // On a full disk a requeue or expiry goes unlogged (the message
        // comes back where it was, which at least once allows): the room
        // left is kept for acknowledgements.
        if !dead_lettered && self.log.disk_full() {
            return;
        }
        let _ = self.log.append(
            &Record::Ready {
                id,
                queue: queue.as_str().to_owned(),
                attempts,
                dead_lettered,
            },
            None,
        );
    }

    fn delayed(&self, queue: &QueueName, id: u64, attempts: u32, delay: Duration) {
        if self.log.disk_full() {
            return;
        }
        let _ = self.log.append(
            &Record::Delayed {
                id,
                queue: queue.as_str().to_owned(),
                attempts,
                due_ms: due_ms(delay),
            },
            None,
        );
    }

    fn delivered(&self, id: u64, attempts: u32) {
        // On a full disk the reserve is kept for acknowledgements: a
        // delivery's attempt may be forgotten (the contract allows it).
        if !self.log.disk_full() {
            let _ = self.log.append(&Record::Leased { id, attempts }, None);
        }
    }

    fn gone(&self, id: u64) {
        let _ = self.log.append(&Record::Gone { id }, None);
    }
}

/// `--fsync`.
pub fn parse_fsync(mode: &str) -> Option<FsyncMode> {
    match mode {
        "always" => Some(FsyncMode::Always),
        "interval" => Some(FsyncMode::Interval),
        "never" => Some(FsyncMode::Never),
        _ => None,
    }
}

impl Durability {
    /// Locks `dir` (refused if another process holds it), recovers the log
    /// and returns a broker rebuilt from it, with the journal attached.
    pub fn open_dir<C: Clock>(
        dir: &Path,
        options: Options,
        engine: ubroker_engine::Config,
        clock: C,
    ) -> Result<(Arc<Broker<C>>, Durability), String> {
        let storage = FsStorage::new(dir)
            .map_err(|error| format!("cannot create --data-dir {}: {error}", dir.display()))?;
        let lock =
            DirLock::acquire(dir).map_err(|error| format!("cannot lock --data-dir: {error}"))?;
        Self::open(storage, Some(lock), options, engine, clock)
    }

    /// As [`Durability::open_dir`], on any storage (tests use a faulty
    /// in-memory disk).
    pub fn open<S: Storage, C: Clock>(
        storage: S,
        lock: Option<DirLock>,
        options: Options,
        engine: ubroker_engine::Config,
        clock: C,
    ) -> Result<(Arc<Broker<C>>, Durability), String> {
        let started = std::time::Instant::now();
        let (log, recovered, report) =
            Log::open(storage, options).map_err(|error| error.to_string())?;
        let read_ms = started.elapsed().as_millis() as u64;
        let log = Arc::new(log);
        let broker = Broker::with_clock(engine, clock)
            .with_journal(Arc::new(LogJournal { log: log.clone() }));
        let queues = recovered.queues.len();
        let messages = restore(&broker, recovered)?;
        let broker = Arc::new(broker);
        let ids_of = broker.clone();
        let next_ids: NextIds = Box::new(move || ids_of.next_ids());
        let RecoveryReport {
            segments,
            records,
            torn_bytes,
            dropped_bytes,
        } = report;
        tracing::info!(
            segments,
            records,
            messages,
            queues,
            torn_bytes,
            dropped_bytes,
            read_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            fsync = fsync_name(options.fsync),
            "recovered the write-ahead log"
        );
        Ok((
            broker,
            Durability {
                log,
                next_ids,
                _lock: lock,
            },
        ))
    }

    /// Logs a publish (one record for every entry) and commits it into the
    /// broker once durable as promised; see the module docs.
    pub async fn publish<C: Clock>(
        &self,
        broker: &Arc<Broker<C>>,
        queue: &str,
        entries: Vec<NewMessage>,
    ) -> Result<Range<u64>, ApiError> {
        if self.log.failed() {
            return Err(ApiError::LogFailed);
        }
        // No room left to log this message's acknowledgement: refuse it,
        // so that acknowledgements never stop.
        if self.log.disk_full() {
            return Err(ApiError::DiskFull);
        }
        let prepared = broker.prepare_publish(queue, entries)?;
        // Encoded from the bodies borrowed: a `Record` would clone each
        // body's `Bytes`, which turns its buffer into a shared one (an
        // allocation per message, kept while it lives: 36 B a message of
        // RSS, BENCHMARKS.md issue 18, 2026-12-08).
        let record = Encoded::publish(
            prepared.queue(),
            prepared
                .ids()
                .zip(prepared.entries())
                .map(|(id, entry)| (id, due_ms(entry.delay), &entry.body[..])),
        );
        // The writer hands the prepared publish back once its record is
        // written (and under `--fsync always` synced), and this request
        // commits it. If the request is gone by
        // then (its client disconnected), the send fails and the writer
        // commits it itself: a logged message always enters the broker.
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Prepared, Prepared>>();
        let owner = broker.clone();
        let waiter: Waiter = Box::new(move |result| {
            let outcome = match result {
                Ok(()) => Ok(prepared),
                Err(Failed) => Err(prepared),
            };
            match tx.send(outcome) {
                Ok(()) => {}
                Err(Ok(prepared)) => {
                    let _ = owner.commit_publish(prepared);
                }
                Err(Err(prepared)) => owner.abort_publish(prepared),
            }
        });
        // A failed log calls the waiter at once (with Err).
        let _ = self.log.append_encoded(&record, Some(waiter));
        drop(record);
        match rx.await {
            Ok(Ok(prepared)) => Ok(broker.commit_publish(prepared)?),
            Ok(Err(prepared)) => {
                broker.abort_publish(prepared);
                Err(ApiError::LogFailed)
            }
            // The waiter is always called; a dropped sender would be a bug.
            Err(_) => Err(ApiError::LogFailed),
        }
    }

    /// `503 log_failed` once the log has failed: for requests that would
    /// change what the log must record (queue administration, redrive).
    pub fn check_writable(&self) -> Result<(), ApiError> {
        if self.log.failed() {
            Err(ApiError::LogFailed)
        } else {
            Ok(())
        }
    }

    /// Logs a queue's settings after `PUT /queues/{queue}`.
    pub fn queue_put(&self, info: &QueueInfo) -> Result<(), ApiError> {
        self.log
            .append(
                &Record::QueuePut {
                    queue: info.name.as_str().to_owned(),
                    settings: Settings {
                        ttl_ms: Some(crate::response::ttl_ms(info.settings.ttl)),
                        max_deliveries: Some(info.settings.max_deliveries),
                    },
                },
                None,
            )
            .map_err(|Failed| ApiError::LogFailed)
    }

    /// Logs a queue's deletion (its messages were logged gone by the
    /// engine as it dropped them).
    pub fn queue_deleted(&self, queue: &str) -> Result<(), ApiError> {
        self.log
            .append(
                &Record::QueueDeleted {
                    queue: queue.to_owned(),
                },
                None,
            )
            .map_err(|Failed| ApiError::LogFailed)
    }

    /// Extends the id grant when half of it is used (called every 100 ms).
    pub fn ensure_ids<C: Clock>(&self, broker: &Broker<C>) {
        let (delivery, message) = broker.next_ids();
        self.log.ensure_ids(delivery, message, |result| {
            if result.is_err() {
                tracing::error!("could not record the id high-water mark: the log has failed");
            }
        });
    }

    pub fn failed(&self) -> bool {
        self.log.failed()
    }

    pub fn stats(&self) -> LogStats {
        self.log.stats()
    }

    pub fn stats_body(&self) -> LogStatsBody {
        let s = self.log.stats();
        LogStatsBody {
            fsync: fsync_name(self.log.mode()),
            bytes: s.bytes,
            segments: s.segments,
            fsyncs: s.fsyncs,
            fsync_seconds_total: s.fsync_seconds_total,
            fsync_max_ms: s.fsync_max_seconds * 1e3,
            committed: s.committed,
            live_messages: s.live_messages,
            failed: s.failed,
            disk_full: s.disk_full,
        }
    }

    /// Records the exact next ids, writes and syncs everything logged (in
    /// every fsync mode) and stops the log's writer: the clean shutdown.
    /// Idempotent.
    pub fn close(&self) {
        let (delivery, message) = (self.next_ids)();
        // Refused (harmlessly) if the log is already closed or failed.
        self.log.record_marks(delivery, message);
        self.log.close();
    }
}

impl Drop for Durability {
    /// A start that fails after the log was opened (a taken port) closes
    /// it cleanly too, so that it uses up no ids.
    fn drop(&mut self) {
        self.close();
    }
}

fn fsync_name(mode: FsyncMode) -> &'static str {
    match mode {
        FsyncMode::Always => "always",
        FsyncMode::Interval => "interval",
        FsyncMode::Never => "never",
    }
}

/// Drives [`Durability::ensure_ids`] every 100 ms until shutdown.
pub async fn keep_ids<C: Clock>(
    broker: Arc<Broker<C>>,
    durable: Arc<Durability>,
    mut shutting_down: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => durable.ensure_ids(&broker),
            _ = shutting_down.wait_for(|down| *down) => return,
        }
    }
}

/// Rebuilds `recovered` into `broker`, as the log's recovery and a
/// replicated node's new term both do: queues, ready messages in runs of
/// one queue (one hand-over per run), delayed ones one by one, then the id
/// marks. Returns how many messages it restored.
pub(crate) fn restore<C: Clock>(broker: &Broker<C>, recovered: Recovered) -> Result<usize, String> {
    for (name, settings) in &recovered.queues {
        broker
            .restore_queue(
                name,
                QueueUpdate {
                    ttl: settings.ttl_ms.map(Duration::from_millis),
                    max_deliveries: settings.max_deliveries,
                },
            )
            .map_err(|error| format!("cannot restore queue {name}: {error}"))?;
    }
    let now = now_ms();
    let messages = recovered.messages.len();
    // Ready messages in runs of one queue (one hand-over per run),
    // delayed ones one by one.
    let mut run: Vec<RestoredMessage> = Vec::new();
    let mut run_queue: Option<Arc<str>> = None;
    let flush = |queue: &Option<Arc<str>>, run: &mut Vec<_>| -> Result<(), String> {
        if let Some(queue) = queue {
            if !run.is_empty() {
                broker
                    .restore_ready(queue, std::mem::take(run))
                    .map_err(|error| format!("cannot restore messages of {queue}: {error}"))?;
            }
        }
        Ok(())
    };
    for m in recovered.messages {
        if m.due_ms == 0 {
            if run_queue.as_deref() != Some(&*m.queue) {
                flush(&run_queue, &mut run)?;
                run_queue = Some(m.queue.clone());
            }
            run.push(RestoredMessage {
                id: m.id,
                body: m.body,
                attempts: m.attempts,
                dead_lettered: m.dead_lettered,
            });
            continue;
        }
        let delay = Duration::from_millis(m.due_ms.saturating_sub(now));
        broker
            .restore_message(&m.queue, m.id, m.body, m.attempts, m.dead_lettered, delay)
            .map_err(|error| format!("cannot restore message {}: {error}", m.id))?;
    }
    flush(&run_queue, &mut run)?;
    broker.restore_ids(recovered.next_delivery, recovered.next_message);
    Ok(messages)
}
