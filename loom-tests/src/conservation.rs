//! The conservation invariant every model ends with.
//!
//! Each published, unacknowledged message is in exactly one place: a ready
//! queue, one live lease, or one timer (delayed). Nothing is lost, nothing
//! is duplicated, and the stats counters agree with each other, queue by
//! queue, and with the set of messages the model says is still held.
//!
//! Both checks run after a model's threads have been joined, so they see a
//! quiescent broker and add no synchronisation to the race itself.

use std::time::Duration;

use bytes::Bytes;
use ubroker_engine::{Error, QueueStats, Stats, MESSAGE_OVERHEAD};

use crate::fixture::{msg, ModelBroker, TTL};

/// How far [`assert_conserved`] moves the clock before its final sweep: past
/// every deadline and due time a model can create (models advance the clock
/// by `TTL` at most twice, touch by at most `2 * TTL` and delay by `TTL`).
const FINAL_ADVANCE: Duration = Duration::from_nanos(100 * TTL.as_nanos() as u64);

/// Checks that the counters agree with each other and with `live`, the
/// bodies the model says are published, not acknowledged and not dropped by
/// a queue delete, over all queues.
///
/// For every queue (the contract's identity and the two flow identities
/// behind it):
///
/// * published = acknowledged + dead_lettered + ready + in_flight + delayed;
/// * the ready queue and the timer gain by publish, requeue and expiry, and
///   lose by fetch and redrive: ready + delayed + delivered + redriven =
///   published + requeued + expired;
/// * the lease table gains by fetch and loses by each kind of settlement:
///   in_flight + (acknowledged - redriven) + requeued + expired +
///   dead_lettered = delivered;
///
/// and the aggregate [`Stats`] is their sum, and the queues' timers count
/// exactly the leases in flight and the delayed messages. Counts only: it holds for a
/// closed broker too, which can no longer be drained. [`assert_conserved`]
/// also proves where each message is.
#[track_caller]
pub fn assert_counters_agree(broker: &ModelBroker, live: &[&'static str]) {
    let stats = broker.stats();
    let queues = broker.all_queue_stats();
    let mut sum = QueueStats::default();
    for (name, q) in &queues {
        let held = (q.ready + q.in_flight + q.delayed) as u64;
        assert_eq!(
            q.published,
            q.acknowledged + q.dead_lettered + held,
            "queue {}: published != acknowledged + dead_lettered + ready + \
             in_flight + delayed: {q:?}",
            name.as_str()
        );
        assert_eq!(
            (q.ready + q.delayed) as u64 + q.delivered + q.redriven,
            q.published + q.requeued + q.expired,
            "queue {}: ready-queue and timer counters disagree: {q:?}",
            name.as_str()
        );
        assert_eq!(
            q.in_flight as u64
                + (q.acknowledged - q.redriven)
                + q.requeued
                + q.expired
                + q.dead_lettered,
            q.delivered,
            "queue {}: lease counters disagree: {q:?}",
            name.as_str()
        );
        assert_eq!(
            q.waiting_fetches,
            0,
            "queue {}: a waiter is left behind: {q:?}",
            name.as_str()
        );
        sum.ready += q.ready;
        sum.in_flight += q.in_flight;
        sum.delayed += q.delayed;
        sum.bytes += q.bytes;
        sum.published += q.published;
        sum.delivered += q.delivered;
        sum.acknowledged += q.acknowledged;
        sum.requeued += q.requeued;
        sum.expired += q.expired;
        sum.dead_lettered += q.dead_lettered;
    }
    assert_eq!(
        (
            stats.ready,
            stats.in_flight,
            stats.delayed,
            stats.queues,
            stats.published,
            stats.delivered,
            stats.acknowledged,
            stats.requeued,
            stats.expired,
            stats.dead_lettered,
        ),
        (
            sum.ready,
            sum.in_flight,
            sum.delayed,
            queues.len(),
            sum.published,
            sum.delivered,
            sum.acknowledged,
            sum.requeued,
            sum.expired,
            sum.dead_lettered,
        ),
        "the aggregate stats are not the sum of the queues' {queues:?}: {stats:?}"
    );
    assert_eq!(
        stats.ready + stats.in_flight + stats.delayed,
        live.len(),
        "messages held (ready + in flight + delayed) differ from those \
         published and not acknowledged {live:?}: {stats:?}"
    );
    let body_bytes: u64 = live.iter().map(|body| body.len() as u64).sum();
    assert_eq!(
        sum.bytes, body_bytes,
        "the queues' bytes disagree with {live:?}: {queues:?}"
    );
    assert_eq!(
        stats.queued_bytes,
        body_bytes + MESSAGE_OVERHEAD * live.len() as u64,
        "queued bytes (the byte budget) disagree with {live:?}: {stats:?}"
    );
    assert_eq!(stats.waiting, 0, "a waiter is left behind: {stats:?}");
    // Every settlement counts its lease out of its timer shard at once, not
    // at the lease's old deadline: the timers count exactly the live leases
    // and delayed messages.
    assert_eq!(
        broker.timer_counts(),
        (stats.in_flight, stats.delayed),
        "the timers' (leases, delayed) disagree with the lease tables and \
         delayed messages: a settled lease left its timer entry behind? {stats:?}"
    );
}

/// Checks the conservation invariant on an open, quiescent broker: the
/// counters agree (see [`assert_counters_agree`]), and moving every message
/// out of the broker yields exactly `live`, each body once.
///
/// To find where each message is, it moves the clock past every deadline
/// and due time and sweeps: the sweep must return every live lease (to its
/// queue or its dead-letter queue) and make every delayed message ready, so
/// a lease or a delayed message that timekeeping can no longer reach is
/// caught here. It then fetches every queue empty and acknowledges each
/// delivery, which leaves the broker empty. A message that was in two
/// places comes out twice; a lost one, not at all.
#[track_caller]
pub fn assert_conserved(broker: &ModelBroker, live: &[&'static str]) {
    assert_counters_agree(broker, live);
    let before: Stats = broker.stats();

    broker.clock().advance(FINAL_ADVANCE);
    let sweep = broker.expire_due();
    let swept = broker.stats();
    assert_eq!(
        (
            sweep.expired,
            sweep.came_due,
            swept.in_flight,
            swept.delayed
        ),
        (before.in_flight, before.delayed, 0, 0),
        "the final sweep left a lease or a delayed message behind \
         (timekeeping can no longer reach it): before {before:?}, after {swept:?}"
    );
    assert_eq!(sweep.next_deadline, None, "{sweep:?}");
    assert_eq!(
        broker.timer_entries(),
        0,
        "timer entries or agenda hints are left behind"
    );
    assert_counters_agree(broker, live);

    let mut drained: Vec<Bytes> = Vec::new();
    for (queue, _) in broker.all_queue_stats() {
        let mut ids = Vec::new();
        while let Some(delivery) = broker
            .queue(queue.as_str())
            .try_fetch()
            .expect("the broker is open")
        {
            drained.push(delivery.body);
            ids.push(delivery.id);
        }
        for id in ids {
            assert_eq!(
                broker.queue(queue.as_str()).acknowledge(id),
                Ok::<(), Error>(())
            );
        }
    }
    let mut expected: Vec<Bytes> = live.iter().map(|body| msg(body)).collect();
    drained.sort();
    expected.sort();
    assert_eq!(
        drained, expected,
        "the broker holds other messages than those published and not \
         acknowledged"
    );
    assert_counters_agree(broker, &[]);
    assert_eq!(broker.stats().published, swept.published);
}
