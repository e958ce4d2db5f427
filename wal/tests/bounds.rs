//! The log at its limits: a full disk (deliveries, expiries and requeues
//! never eat the room kept for acknowledgements; a log opens on a full
//! disk), a segment missing from the middle (refused, naming it), and
//! restarts that must not pile up segment files.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use ubroker_wal::testing::FaultyStorage;
use ubroker_wal::{segment_name, FsyncMode, Log, Options, Published, Record, Storage};

/// What a `Gone` record takes: frame, kind, id.
const GONE_SIZE: u64 = 8 + 1 + 8;

fn options(segment_bytes: u64) -> Options {
    Options {
        fsync: FsyncMode::Always,
        interval: Duration::from_millis(5),
        segment_bytes,
        truncate_corrupt: false,
    }
}

fn publish(id: u64, due_ms: u64, body: &Bytes) -> Record {
    Record::Publish {
        queue: "q".into(),
        messages: vec![Published {
            id,
            due_ms,
            body: body.clone(),
        }],
    }
}

/// Appends with a waiter and returns what it was answered.
fn append_waiting(log: &Log, record: &Record) -> bool {
    let (tx, rx) = mpsc::channel();
    let _ = log.append(
        record,
        Some(Box::new(move |result| {
            let _ = tx.send(result);
        })),
    );
    rx.recv_timeout(Duration::from_secs(10))
        .expect("every waiter is answered")
        .is_ok()
}

fn wal_files(disk: &FaultyStorage) -> Vec<String> {
    disk.files()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.ends_with(".wal"))
        .collect()
}

/// Publishes 400-byte messages until the log says the disk is full;
/// returns their ids.
fn fill(log: &Log) -> Vec<u64> {
    let body = Bytes::from(vec![b'x'; 400]);
    let mut ids = Vec::new();
    while !log.disk_full() {
        let id = ids.len() as u64 + 1;
        assert!(append_waiting(log, &publish(id, 0, &body)), "publish {id}");
        ids.push(id);
        assert!(ids.len() < 5000, "the disk never filled up");
    }
    ids
}

#[test]
fn deliveries_expiries_and_requeues_on_a_full_disk_never_eat_the_acknowledgement_reserve() {
    let disk = FaultyStorage::new();
    disk.set_space(Some(300_000));
    let (log, _, _) = Log::open(disk.clone(), options(32 << 10)).unwrap();
    let ids = fill(&log);
    assert!(ids.len() > 10);
    // The reproduction: only fetches, leases running out, again
    // and again: a delivery, then an expiry (the message ready again) per
    // message per round.
    for round in 1..=40u32 {
        for &id in &ids {
            let _ = log.append(
                &Record::Leased {
                    id,
                    attempts: round,
                },
                None,
            );
            let _ = log.append(
                &Record::Ready {
                    id,
                    queue: "q".into(),
                    attempts: round,
                    dead_lettered: false,
                },
                None,
            );
        }
        // A waiter is answered once this round is written.
        assert!(
            append_waiting(
                &log,
                &Record::Leased {
                    id: 1,
                    attempts: round
                }
            ),
            "round {round}: the log failed"
        );
        assert!(!log.failed());
        assert!(
            disk.reserved() >= ids.len() as u64 * GONE_SIZE,
            "round {round}: the reserve ({} bytes) no longer covers {} acknowledgements",
            disk.reserved(),
            ids.len()
        );
    }
    // Every message can still be acknowledged.
    for &id in &ids {
        assert!(append_waiting(&log, &Record::Gone { id }), "ack {id}");
    }
    assert!(!log.failed());
    log.close();
    // A start on the (still) full disk works and finds them all settled.
    disk.set_space(Some(0));
    let (log, recovered, _) = Log::open(disk.clone(), options(32 << 10)).unwrap();
    assert!(
        recovered.messages.is_empty(),
        "{:?}",
        recovered.messages.len()
    );
    log.close();
}

#[test]
fn a_log_opens_on_a_full_disk_and_acknowledgements_go_on() {
    let disk = FaultyStorage::new();
    disk.set_space(Some(200_000));
    let (log, _, _) = Log::open(disk.clone(), options(32 << 10)).unwrap();
    let ids = fill(&log);
    log.close();
    // Not one byte free: the start must use what was reserved.
    disk.set_space(Some(0));
    let (log, recovered, _) = Log::open(disk.clone(), options(32 << 10)).unwrap();
    assert_eq!(recovered.messages.len(), ids.len());
    assert!(log.disk_full(), "publishes must be refused");
    for &id in &ids {
        assert!(append_waiting(&log, &Record::Gone { id }), "ack {id}");
    }
    assert!(!log.failed());
    log.close();
    let (log, recovered, _) = Log::open(disk.clone(), options(32 << 10)).unwrap();
    assert!(recovered.messages.is_empty());
    log.close();
}

#[test]
fn a_segment_missing_from_the_middle_stops_open_naming_it_unless_truncation_is_asked_for() {
    let disk = FaultyStorage::new();
    let (log, _, _) = Log::open(disk.clone(), options(1024)).unwrap();
    let body = Bytes::from(vec![b'm'; 100]);
    for id in 1..=200 {
        assert!(append_waiting(&log, &publish(id, 0, &body)));
    }
    log.close();
    let files = wal_files(&disk);
    assert!(files.len() > 10, "{files:?}");
    let missing = files[files.len() / 2].clone();
    disk.remove(&missing).unwrap();

    let error = match Log::open(disk.clone(), options(1024)) {
        Ok(_) => panic!("a log with {missing} missing opened"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains(&missing), "{error}");
    assert!(error.contains("--truncate-corrupt-log"), "{error}");
    // Refusing changed nothing.
    assert_eq!(wal_files(&disk).len(), files.len() - 1);

    let mut truncate = options(1024);
    truncate.truncate_corrupt = true;
    let (log, recovered, report) = Log::open(disk.clone(), truncate).unwrap();
    assert!(report.dropped_bytes > 0, "{report:?}");
    let ids: Vec<u64> = recovered.messages.iter().map(|m| m.id).collect();
    assert!(!ids.is_empty() && ids.len() < 200, "{}", ids.len());
    // What is left is a prefix of the log: the messages before the gap.
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    log.close();
    // Everything after the gap is gone; the new segment of this start
    // takes the missing number.
    let files = wal_files(&disk);
    assert_eq!(files.last(), Some(&missing), "{files:?}");
}

#[test]
fn restarts_do_not_pile_up_segments_while_one_message_lives() {
    let disk = FaultyStorage::new();
    let (log, _, _) = Log::open(disk.clone(), options(16 << 20)).unwrap();
    // One message delayed a day.
    let due = 86_400_000u64 + 1_900_000_000_000;
    assert!(append_waiting(
        &log,
        &publish(1, due, &Bytes::from_static(b"later"))
    ));
    log.close();
    for start in 0..40 {
        let (log, recovered, _) = Log::open(disk.clone(), options(16 << 20)).unwrap();
        assert_eq!(recovered.messages.len(), 1, "start {start}");
        assert_eq!(recovered.messages[0].due_ms, due);
        log.close();
        let files = wal_files(&disk);
        assert!(files.len() <= 3, "start {start}: {files:?}");
    }
    assert!(!wal_files(&disk).contains(&segment_name(1)));
}

/// A kill between creating a segment and writing its header leaves an
/// empty last file (the process died, the file system did not). Recovery
/// removes it; the segment it starts next must take its number, or the
/// start after that finds a hole where it was and refuses to open.
#[test]
fn an_empty_last_segment_left_by_a_kill_does_not_leave_a_hole() {
    let disk = FaultyStorage::new();
    let (log, _, _) = Log::open(disk.clone(), options(16 << 20)).unwrap();
    assert!(append_waiting(
        &log,
        &publish(1, 0, &Bytes::from_static(b"kept"))
    ));
    log.close();
    for start in 0..3 {
        let files = wal_files(&disk);
        let last = files
            .iter()
            .filter_map(|name| name.strip_suffix(".wal")?.parse::<u64>().ok())
            .max()
            .expect("a segment");
        drop(disk.create(&segment_name(last + 1)).unwrap());
        let (log, recovered, _) = Log::open(disk.clone(), options(16 << 20))
            .unwrap_or_else(|error| panic!("start {start}: {error} ({files:?})"));
        assert_eq!(recovered.messages.len(), 1, "start {start}");
        log.close();
    }
    let (log, recovered, _) = Log::open(disk.clone(), options(16 << 20))
        .unwrap_or_else(|error| panic!("last start: {error} ({:?})", wal_files(&disk)));
    assert_eq!(recovered.messages.len(), 1);
    log.close();
}
