//! The log on a faulty disk: random workloads crashed at random points
//! (unsynced bytes dropped, the write torn at a random offset), bytes
//! flipped, writes and syncs failing, and reclamation under churn.

use std::collections::{BTreeMap, HashSet};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use ubroker_wal::testing::FaultyStorage;
use ubroker_wal::{
    segment_name, Error, FsyncMode, Log, Options, Published, Record, Recovered, Settings, Storage,
    StorageFile,
};

fn options(segment_bytes: u64) -> Options {
    Options {
        fsync: FsyncMode::Always,
        interval: Duration::from_millis(5),
        segment_bytes,
        truncate_corrupt: false,
    }
}

fn publish(queue: &str, id: u64, body: &Bytes) -> Record {
    Record::Publish {
        queue: queue.into(),
        messages: vec![Published {
            id,
            due_ms: 0,
            body: body.clone(),
        }],
    }
}

/// Appends and waits until the record is durable.
fn append_durably(log: &Log, record: &Record) {
    let (tx, rx) = mpsc::channel();
    log.append(
        record,
        Some(Box::new(move |result| {
            let _ = tx.send(result);
        })),
    )
    .expect("log open");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("answered")
        .expect("durable");
}

#[derive(Debug, Clone)]
enum Op {
    Publish { queue: u8, len: u8 },
    Acknowledge(u16),
    Requeue(u16),
    Put(u8),
    Crash(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, any::<u8>()).prop_map(|(queue, len)| Op::Publish { queue, len }),
        3 => any::<u16>().prop_map(Op::Acknowledge),
        1 => any::<u16>().prop_map(Op::Requeue),
        1 => (0u8..3).prop_map(Op::Put),
        1 => any::<u32>().prop_map(Op::Crash),
    ]
}

fn body(id: u64, len: u8) -> Bytes {
    Bytes::from(format!("{id}:{}", "x".repeat(len as usize)))
}

/// Checks a recovery against what was acknowledged durable and what was
/// ever appended; returns the recovered messages by id.
fn check(
    recovered: &Recovered,
    required: &BTreeMap<u64, (String, Bytes)>,
    appended: &BTreeMap<u64, (String, Bytes)>,
) -> BTreeMap<u64, (String, Bytes)> {
    let mut seen = BTreeMap::new();
    for m in &recovered.messages {
        let (queue, body) = appended
            .get(&m.id)
            .unwrap_or_else(|| panic!("message {} was never published", m.id));
        assert_eq!(&m.body, body, "message {}", m.id);
        let _ = queue;
        assert!(
            seen.insert(m.id, (m.queue.to_string(), m.body.clone()))
                .is_none(),
            "message {} recovered twice",
            m.id
        );
    }
    for id in required.keys() {
        assert!(seen.contains_key(id), "durable message {id} lost");
    }
    let max = appended.keys().next_back().copied().unwrap_or(0);
    assert!(recovered.next_message > max, "message ids would repeat");
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every publish answered durable and never acknowledged survives any
    /// crash, torn at any offset; nothing comes back twice or unpublished;
    /// ids never repeat.
    #[test]
    fn durable_publishes_survive_crashes(
        ops in proptest::collection::vec(op(), 1..80),
        segment_bytes in 200u64..3000,
    ) {
        let mut disk = FaultyStorage::new();
        disk.set_sync_delay(Duration::from_micros(300));
        let (mut log, recovered, _) = Log::open(disk.clone(), options(segment_bytes)).unwrap();
        let mut outstanding = 0usize;
        let mut next_id = recovered.next_message;
        let mut next_delivery = recovered.next_delivery;
        // Appended and not acknowledged (what may be live).
        let mut live: BTreeMap<u64, (String, Bytes)> = BTreeMap::new();
        let mut appended: BTreeMap<u64, (String, Bytes)> = BTreeMap::new();
        // Durable and not acknowledged: must survive.
        let mut required: BTreeMap<u64, (String, Bytes)> = BTreeMap::new();
        let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let mut crashes = ops.iter().filter(|op| matches!(op, Op::Crash(_))).count();
        let mut ops = ops;
        // End every run with a crash.
        ops.push(Op::Crash(7));
        crashes += 1;
        prop_assert!(crashes >= 1);
        for op in ops {
            match op {
                Op::Publish { queue, len } => {
                    let id = next_id;
                    next_id += 1;
                    let queue = format!("q{queue}");
                    let body = body(id, len);
                    let acked = acked.clone();
                    log.append(&publish(&queue, id, &body), Some(Box::new(move |result| {
                        if result.is_ok() {
                            acked.lock().unwrap().insert(id);
                        }
                    }))).unwrap();
                    outstanding += 1;
                    live.insert(id, (queue.clone(), body.clone()));
                    appended.insert(id, (queue, body));
                }
                Op::Acknowledge(pick) if !live.is_empty() => {
                    let id = *live.keys().nth(pick as usize % live.len()).unwrap();
                    live.remove(&id);
                    required.remove(&id);
                    log.append(&Record::Gone { id }, None).unwrap();
                }
                Op::Requeue(pick) if !live.is_empty() => {
                    let id = *live.keys().nth(pick as usize % live.len()).unwrap();
                    let queue = live[&id].0.clone();
                    log.append(&Record::Leased { id, attempts: 1 }, None).unwrap();
                    log.append(&Record::Ready { id, queue, attempts: 1, dead_lettered: false }, None).unwrap();
                }
                Op::Put(queue) => {
                    log.append(&Record::QueuePut {
                        queue: format!("q{queue}"),
                        settings: Settings { ttl_ms: Some(1000), max_deliveries: None },
                    }, None).unwrap();
                }
                Op::Crash(seed) => {
                    // Crash as soon as a publish is answered: right where a
                    // premature answer would be caught.
                    let started = std::time::Instant::now();
                    while outstanding > 0
                        && acked.lock().unwrap().is_empty()
                        && started.elapsed() < Duration::from_secs(5)
                    {
                        std::thread::yield_now();
                    }
                    outstanding = 0;
                    // What was answered durable before the crash.
                    for id in acked.lock().unwrap().drain() {
                        if let Some(entry) = live.get(&id) {
                            required.insert(id, entry.clone());
                        }
                    }
                    let mut seed = seed as usize;
                    let image = disk.crash_image(|_, unsynced| {
                        seed = seed.wrapping_mul(31).wrapping_add(17);
                        seed % (unsynced + 1)
                    });
                    log.close();
                    disk = image;
                    disk.set_sync_delay(Duration::from_micros(300));
                    let (reopened, recovered, _) = Log::open(disk.clone(), options(segment_bytes)).unwrap();
                    log = reopened;
                    let seen = check(&recovered, &required, &appended);
                    prop_assert!(recovered.next_delivery >= next_delivery);
                    next_delivery = recovered.next_delivery + 1;
                    next_id = recovered.next_message;
                    // After recovery what came back is on disk and live.
                    live = seen.clone();
                    required = seen;
                    acked.lock().unwrap().clear();
                }
                _ => {}
            }
        }
    }

    /// A flipped byte anywhere in a segment before the last stops opening
    /// with an error naming that file and an offset at or before the flip;
    /// with `truncate_corrupt` the log opens.
    #[test]
    fn corruption_before_the_tail_is_an_error(flip_at in 16usize..400, bit in 0u8..8) {
        let disk = FaultyStorage::new();
        {
            let (log, _, _) = Log::open(disk.clone(), options(256)).unwrap();
            for id in 1..40u64 {
                append_durably(&log, &publish("q", id, &body(id, 20)));
            }
        }
        let files = disk.files();
        let (first, len) = files.iter().find(|(name, _)| name.ends_with(".wal")).unwrap().clone();
        prop_assume!(flip_at < len);
        disk.flip(&first, flip_at, bit);
        match Log::open(disk.clone(), options(256)) {
            Err(Error::Corrupt { file, offset, .. }) => {
                prop_assert_eq!(file, first);
                prop_assert!(offset <= flip_at);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
            Ok(_) => prop_assert!(false, "opened a corrupt log"),
        }
        let (_, recovered, report) = Log::open(disk.clone(), Options { truncate_corrupt: true, ..options(256) }).unwrap();
        prop_assert!(report.dropped_bytes > 0);
        prop_assert!(recovered.messages.len() < 39);
    }
}

#[test]
fn a_torn_tail_is_cut_with_the_bytes_dropped_reported() {
    let disk = FaultyStorage::new();
    let (log, _, _) = Log::open(disk.clone(), options(1 << 20)).unwrap();
    append_durably(&log, &publish("q", 1, &body(1, 10)));
    log.close();
    // A second record written but torn by the crash: half of it.
    let mut record = Vec::new();
    let (name, len) = disk.files().into_iter().last().unwrap();
    {
        let mut bytes = Vec::new();
        ubroker_wal_encode(&publish("q", 2, &body(2, 10)), &mut bytes);
        record.extend_from_slice(&bytes[..bytes.len() / 2]);
    }
    append_raw(&disk, &name, &record);
    let (_, recovered, report) = Log::open(disk.clone(), options(1 << 20)).unwrap();
    assert_eq!(report.torn_bytes, record.len() as u64);
    let ids: Vec<_> = recovered.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1]);
    assert_eq!(
        disk.files().iter().find(|(n, _)| *n == name).unwrap().1,
        len,
        "cut back to the last whole record"
    );
}

fn ubroker_wal_encode(record: &Record, out: &mut Vec<u8>) {
    // The log's own encoding, through a log on a scratch disk.
    let scratch = FaultyStorage::new();
    let (log, _, _) = Log::open(scratch.clone(), options(1 << 20)).unwrap();
    let before = scratch.files()[0].1;
    append_durably(&log, record);
    log.close();
    let name = scratch.files()[0].0.clone();
    let data = scratch.read(&name).unwrap();
    out.extend_from_slice(&data[before..]);
}

fn append_raw(disk: &FaultyStorage, name: &str, bytes: &[u8]) {
    // Re-create the file with extra bytes, as a crash mid-write leaves it.
    let mut data = disk.read(name).unwrap();
    data.extend_from_slice(bytes);
    disk.remove(name).unwrap();
    let mut file = disk.create(name).unwrap();
    file.append(&data).unwrap();
    file.sync().unwrap();
    disk.sync_dir().unwrap();
}

#[test]
fn a_failed_sync_poisons_the_log_and_no_waiter_hears_ok() {
    let disk = FaultyStorage::new();
    let (log, _, _) = Log::open(disk.clone(), options(1 << 20)).unwrap();
    append_durably(&log, &publish("q", 1, &body(1, 1)));
    disk.fail_syncs(true);
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    log.append(
        &publish("q", 2, &body(2, 1)),
        Some(Box::new(move |r| tx.send(r).unwrap())),
    )
    .unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_err());
    // Syncs work again: the log stays failed, nothing is retried.
    disk.fail_syncs(false);
    let syncs = disk.syncs();
    assert!(log
        .append(
            &publish("q", 3, &body(3, 1)),
            Some(Box::new(move |r| tx2.send(r).unwrap()))
        )
        .is_err());
    assert!(log.append(&Record::Gone { id: 1 }, None).is_err());
    assert!(log.failed());
    assert!(log.stats().failed);
    log.close();
    assert_eq!(disk.syncs(), syncs, "a failed log synced again");
}

#[test]
fn an_append_after_close_is_refused_and_its_waiter_answered() {
    let disk = FaultyStorage::new();
    let (log, _, _) = Log::open(disk.clone(), options(1 << 20)).unwrap();
    log.close();
    let (tx, rx) = mpsc::channel();
    assert!(log
        .append(
            &publish("q", 1, &body(1, 1)),
            Some(Box::new(move |r| tx.send(r).unwrap()))
        )
        .is_err());
    assert!(rx.recv_timeout(Duration::from_secs(1)).unwrap().is_err());
}

#[test]
fn a_failed_write_poisons_the_log() {
    let disk = FaultyStorage::new();
    let (log, _, _) = Log::open(disk.clone(), options(1 << 20)).unwrap();
    disk.fail_writes(true);
    let (tx, rx) = mpsc::channel();
    log.append(
        &publish("q", 1, &body(1, 1)),
        Some(Box::new(move |r| tx.send(r).unwrap())),
    )
    .unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_err());
    assert!(log.failed());
}

#[test]
fn queues_settings_order_attempts_and_marks_come_back() {
    let disk = FaultyStorage::new();
    let (log, recovered, _) = Log::open(disk.clone(), options(300)).unwrap();
    let first_delivery = recovered.next_delivery;
    for id in 1..=5 {
        log.append(&publish("q", id, &body(id, 30)), None).unwrap();
    }
    log.append(&Record::Leased { id: 2, attempts: 1 }, None)
        .unwrap();
    log.append(
        &Record::Ready {
            id: 2,
            queue: "q".into(),
            attempts: 1,
            dead_lettered: false,
        },
        None,
    )
    .unwrap();
    log.append(
        &Record::QueuePut {
            queue: "empty".into(),
            settings: Settings {
                ttl_ms: Some(7),
                max_deliveries: Some(3),
            },
        },
        None,
    )
    .unwrap();
    log.append(&Record::Gone { id: 4 }, None).unwrap();
    log.close();
    let (_, recovered, _) = Log::open(disk.clone(), options(300)).unwrap();
    let order: Vec<_> = recovered
        .messages
        .iter()
        .map(|m| (m.id, m.attempts))
        .collect();
    assert_eq!(order, vec![(1, 0), (3, 0), (5, 0), (2, 1)]);
    let empty = recovered
        .queues
        .iter()
        .find(|(n, _)| &**n == "empty")
        .unwrap();
    assert_eq!(empty.1.max_deliveries, Some(3));
    assert!(recovered.next_delivery >= first_delivery + ubroker_wal::ID_BLOCK);
    assert!(recovered.next_message >= 6);
}

#[test]
fn disk_follows_live_data() {
    let disk = FaultyStorage::new();
    let segment = 4096;
    let (log, _, _) = Log::open(disk.clone(), options(segment)).unwrap();
    // One old message that is never acknowledged, then churn.
    append_durably(&log, &publish("q", 1, &body(1, 50)));
    let mut peak = 0;
    for id in 2..3000u64 {
        log.append(&publish("q", id, &body(id, 50)), None).unwrap();
        log.append(&Record::Gone { id }, None).unwrap();
        if id % 100 == 0 {
            append_durably(&log, &Record::Leased { id: 1, attempts: 1 });
            let bytes: usize = disk.files().iter().map(|(_, len)| len).sum();
            peak = peak.max(bytes);
        }
    }
    append_durably(&log, &Record::Leased { id: 1, attempts: 1 });
    append_durably(&log, &Record::Leased { id: 1, attempts: 1 });
    let files = disk.files();
    let bytes: usize = files.iter().map(|(_, len)| len).sum();
    // At most twice the live data plus two segments (plus the segment
    // being written).
    assert!(
        bytes as u64 <= 3 * segment + 400,
        "{bytes} bytes on disk in {files:?}"
    );
    assert!(peak as u64 <= 4 * segment, "peak {peak}");
    assert_eq!(log.stats().live_messages, 1);
    log.close();
    let (_, recovered, _) = Log::open(disk.clone(), options(segment)).unwrap();
    let ids: Vec<_> = recovered.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1], "the straggler moved forward, the rest gone");
    assert_eq!(recovered.messages[0].attempts, 1);
    assert!(!files.iter().any(|(n, _)| *n == segment_name(1)));
}
