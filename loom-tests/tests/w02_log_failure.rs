//! Model w02: a failed sync poisons the log.
//!
//! Two publishers append a record each, with a waiter, while the writer's
//! sync fails. Every waiter is answered exactly once, and never `Ok`: one in
//! the failed group, one still pending when the log was poisoned, or one
//! refused at append (`Err` from `push`, its waiter answered `Err` at
//! once). Nothing after the failure is synced again.
#![cfg(loom)]

use std::io;

use bytes::Bytes;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, Outcomes};
use ubroker_wal::testing::{commit, CommitQueue, Sink};
use ubroker_wal::Failed;

struct FailingSink {
    syncs: usize,
}

impl Sink for FailingSink {
    fn write(&mut self, _: Bytes) -> io::Result<()> {
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        Err(io::Error::other("injected"))
    }
}

#[test]
fn w02_log_failure() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("w02_log_failure", || {
        let queue = Arc::new(CommitQueue::new(usize::MAX));
        // Answered `Err` by the writer, refused at append.
        let failed = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let publishers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|record| {
                let queue = queue.clone();
                let failed = failed.clone();
                let refused = refused.clone();
                thread::spawn(move || {
                    let counted = failed.clone();
                    let waiter = Box::new(move |result: Result<(), Failed>| {
                        assert_eq!(result, Err(Failed), "a waiter heard Ok from a failed log");
                        counted.fetch_add(1, Ordering::AcqRel);
                    });
                    if queue.push(|out| out.push(record), Some(waiter)).is_err() {
                        refused.fetch_add(1, Ordering::AcqRel);
                    }
                })
            })
            .collect();
        let mut sink = FailingSink { syncs: 0 };
        // The writer's first group fails; it writes no more after that.
        let batch = queue.take(None);
        assert!(commit(&queue, batch, &mut sink, true).is_err());
        for publisher in publishers {
            publisher.join().unwrap();
        }
        assert!(queue.failed());
        assert_eq!(sink.syncs, 1, "a failed sync was retried");
        let (failed, refused) = (
            failed.load(Ordering::Acquire),
            refused.load(Ordering::Acquire),
        );
        assert_eq!(failed, 2, "every publisher heard of the failure once");
        assert!(refused <= 2);
        OUTCOMES.record(match refused {
            0 => "both answered Err",
            _ => "one refused at append",
        });
    });
    OUTCOMES.assert_seen(&["both answered Err", "one refused at append"]);
}
