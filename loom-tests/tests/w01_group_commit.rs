//! Model w01: the write-ahead log's group commit hand-off.
//!
//! Two publishers append a record each, with a waiter; the writer takes
//! whatever is pending, writes it, syncs it and answers the group. Every
//! waiter must be answered exactly once, with `Ok`, and only once a sync
//! covering its record has returned: a publish answered `200` under
//! `--fsync always` is on disk. Whether the two records share one sync or
//! take two depends on the interleaving; both outcomes are reached.
#![cfg(loom)]

use std::io;

use bytes::Bytes;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use loom_tests::{check, Outcomes};
use ubroker_wal::testing::{commit, CommitQueue, Sink};

/// A disk: what was written, and how much of it a sync has covered.
#[derive(Default)]
struct Disk {
    written: Vec<u8>,
    synced: usize,
    syncs: usize,
}

struct ModelSink(Arc<Mutex<Disk>>);

impl Sink for ModelSink {
    fn write(&mut self, bytes: Bytes) -> io::Result<()> {
        self.0.lock().unwrap().written.extend_from_slice(&bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut disk = self.0.lock().unwrap();
        disk.synced = disk.written.len();
        disk.syncs += 1;
        Ok(())
    }
}

#[test]
fn w01_group_commit() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("w01_group_commit", || {
        let queue = Arc::new(CommitQueue::new(usize::MAX));
        let disk = Arc::new(Mutex::new(Disk::default()));
        let answered = Arc::new(AtomicUsize::new(0));
        let publishers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|record| {
                let queue = queue.clone();
                let disk = disk.clone();
                let answered = answered.clone();
                thread::spawn(move || {
                    let waiter = Box::new(move |result: Result<(), ubroker_wal::Failed>| {
                        assert_eq!(result, Ok(()));
                        let disk = disk.lock().unwrap();
                        let position = disk.written.iter().position(|b| *b == record);
                        assert!(
                            position.is_some_and(|at| at < disk.synced),
                            "record {record} answered before a sync covered it \
                             (written {:?}, synced {})",
                            disk.written,
                            disk.synced
                        );
                        answered.fetch_add(1, Ordering::AcqRel);
                    });
                    queue.push(|out| out.push(record), Some(waiter)).unwrap();
                })
            })
            .collect();
        let mut sink = ModelSink(disk.clone());
        while answered.load(Ordering::Acquire) < 2 {
            let batch = queue.take(None);
            commit(&queue, batch, &mut sink, true).unwrap();
        }
        for publisher in publishers {
            publisher.join().unwrap();
        }
        let disk = disk.lock().unwrap();
        assert_eq!(answered.load(Ordering::Acquire), 2);
        assert_eq!(disk.written.len(), 2, "each record written once");
        OUTCOMES.record(if disk.syncs == 1 {
            "one sync for both"
        } else {
            "a sync each"
        });
    });
    OUTCOMES.assert_seen(&["one sync for both", "a sync each"]);
}
