//! The conservation invariant every model ends with.
//!
//! Each published, unacknowledged message is in exactly one place: the ready
//! queue or one live lease. Nothing is lost, nothing is duplicated, and the
//! stats counters agree with each other and with the set of messages the
//! model says is still held.
//!
//! Both checks run after a model's threads have been joined, so they see a
//! quiescent broker and add no synchronisation to the race itself.

use bytes::Bytes;
use ubroker_engine::{Error, Stats};

use crate::fixture::{msg, ModelBroker, TTL};

/// Checks that the counters in `stats` agree with each other and with
/// `live`, the bodies the model says are published and not acknowledged.
///
/// Counts only: it holds for a closed broker too, which can no longer be
/// drained. [`assert_conserved`] also proves where each message is.
#[track_caller]
pub fn assert_counters_agree(stats: &Stats, live: &[&'static str]) {
    let ready = stats.ready as u64;
    let in_flight = stats.in_flight as u64;
    assert_eq!(
        stats.ready + stats.in_flight,
        live.len(),
        "messages held (ready + in flight) differ from those published and \
         not acknowledged {live:?}: {stats:?}"
    );
    // The ready queue gains by publish, requeue and expiry, loses by fetch.
    assert_eq!(
        ready + stats.delivered,
        stats.published + stats.requeued + stats.expired,
        "ready-queue counters disagree: {stats:?}"
    );
    // The lease table gains by fetch, loses by each kind of settlement.
    assert_eq!(
        in_flight + stats.acknowledged + stats.requeued + stats.expired,
        stats.delivered,
        "lease counters disagree: {stats:?}"
    );
    let bytes: u64 = live.iter().map(|body| body.len() as u64).sum();
    assert_eq!(
        stats.queued_bytes, bytes,
        "queued bytes disagree with {live:?}: {stats:?}"
    );
    assert_eq!(stats.waiting, 0, "a waiter is left behind: {stats:?}");
}

/// Checks the conservation invariant on an open, quiescent broker: the
/// counters agree (see [`assert_counters_agree`]), and moving every message
/// out of the broker yields exactly `live`, each body once.
///
/// To find where each message is, it moves the clock one TTL on (every
/// lease taken so far is now due) and sweeps: the sweep must return every
/// live lease to the ready queue, so a lease that expiry can no longer
/// reach is caught here. It then fetches the whole ready queue and
/// acknowledges each delivery, which leaves the broker empty. A message
/// that was both ready and leased comes out twice; a lost one, not at all.
#[track_caller]
pub fn assert_conserved(broker: &ModelBroker, live: &[&'static str]) {
    let before = broker.stats();
    assert_counters_agree(&before, live);

    broker.clock().advance(TTL);
    let sweep = broker.expire_due();
    let swept = broker.stats();
    assert_eq!(
        (sweep.expired, swept.in_flight),
        (before.in_flight, 0),
        "the final sweep left a lease behind (expiry can no longer reach it): \
         before {before:?}, after {swept:?}"
    );
    assert_eq!(sweep.next_deadline, None, "{sweep:?}");
    assert_eq!(broker.pending_expiry_entries(), 0);

    let mut drained: Vec<Bytes> = Vec::new();
    let mut ids = Vec::new();
    while let Some(delivery) = broker.try_fetch().expect("the broker is open") {
        drained.push(delivery.body);
        ids.push(delivery.id);
    }
    let mut expected: Vec<Bytes> = live.iter().map(|body| msg(body)).collect();
    drained.sort();
    expected.sort();
    assert_eq!(
        drained, expected,
        "the broker holds other messages than those published and not \
         acknowledged"
    );
    for id in ids {
        assert_eq!(broker.acknowledge(id), Ok::<(), Error>(()));
    }
    let after = broker.stats();
    assert_counters_agree(&after, &[]);
    assert_eq!(after.published, before.published);
}
