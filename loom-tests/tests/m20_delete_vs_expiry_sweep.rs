//! Model 20: a queue delete against the expiry sweep of one of its leases.
//!
//! Operations that find a queue by name hold the registry's read side for
//! their whole length, so a delete (which removes the queue under the write
//! side first) never overlaps them. The timekeeper is different: it reaches
//! a queue through the agenda's `Weak` reference, not the registry, and
//! only the queue's own life-cycle lock keeps its sweep and a delete apart.
//!
//! `jobs` holds a leased message `a` due at `TTL`. One thread deletes
//! `jobs`; the timekeeper moves the clock to `TTL` and sweeps. Whichever
//! runs first, the delete counts `a` (still leased, or back in the ready
//! queue after its expiry) and releases its charge from the byte budget; a
//! sweep that ignored the life cycle could take the lease out of the table
//! while the delete empties it and push `a` into the dropped queue, where
//! it would be in no count and still charged.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{assert_conserved, check, lease_in, new_broker, Outcomes, TTL};
use ubroker_engine::Deleted;

#[test]
fn m20_delete_vs_expiry_sweep() {
    static OUTCOMES: Outcomes = Outcomes::new();
    check("m20_delete_vs_expiry_sweep", || {
        let broker = new_broker();
        let (_, _) = lease_in(&broker, "jobs", "a");

        let deleter = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || broker.queue("jobs").delete())
        };
        let timekeeper = {
            let broker = Arc::clone(&broker);
            thread::spawn(move || {
                broker.clock().advance(TTL);
                broker.expire_due()
            })
        };
        let deleted = deleter.join().unwrap();
        let sweep = timekeeper.join().unwrap();

        assert_eq!(
            deleted,
            Ok(Deleted { messages: 1 }),
            "the delete did not count the message it dropped ({sweep:?})"
        );
        assert_eq!(
            broker.stats().queued_bytes,
            0,
            "the dropped message is still charged: it landed in the dropped queue"
        );
        assert!(broker.queue("jobs").stats().is_err(), "jobs came back");
        OUTCOMES.record(if sweep.expired == 1 {
            "expired, then dropped"
        } else {
            "dropped while leased"
        });
        assert_conserved(&broker, &[]);
    });
    OUTCOMES.assert_seen(&["expired, then dropped", "dropped while leased"]);
}
