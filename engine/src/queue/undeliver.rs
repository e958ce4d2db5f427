//! Giving a delivery back that never reached its consumer
//! ([`Queue::undeliver_all`]): a replicated fetch whose client went away
//! (or whose fence failed) before the answer was written. The message goes
//! back to the tail with the attempt uncounted: no consumer saw it, so it
//! must not move it closer to the dead-letter queue. The stats count it
//! as a requeue.

use super::{Counters, Queue, Shared};
use crate::broker::Settled;
use crate::clock::Timestamp;

impl Queue {
    /// Gives back each of `ids` that is still a live lease, pushing one
    /// result per id onto `results`: the message joins the tail (journalled
    /// as `undelivered` first, with its attempts less this delivery) and
    /// wakes a waiting fetch. A lease already settled or expired is left to
    /// whoever ended it (`Invalid`): an expiry counted the attempt as any
    /// expiry does.
    pub(crate) fn undeliver_all(
        &self,
        shared: &Shared,
        ids: &[u64],
        now: Timestamp,
        results: &mut Vec<Settled>,
    ) {
        let mut keys = Vec::with_capacity(ids.len());
        let mut back = Vec::with_capacity(ids.len());
        for &id in ids {
            let lease = self.leases.remove_if(id, |lease| now < lease.deadline);
            results.push(Settled::from_ok(lease.is_some()));
            if let Some(lease) = lease {
                keys.push((lease.deadline, id));
                let mut message = lease.message;
                message.attempts = message.attempts.saturating_sub(1);
                if let Some(journal) = &shared.journal {
                    journal.undelivered(
                        &self.name,
                        message.id,
                        message.attempts,
                        message.dead_lettered,
                    );
                }
                back.push(message);
            }
        }
        self.timer.cancel_leases(&keys);
        // Counted as a requeue: the delivery was counted when it was handed
        // out, counters only grow, and the stats' flow identities
        // (`ready + delayed + delivered + redriven = published + requeued +
        // expired`) must keep holding.
        Counters::add(&self.counters.requeued, back.len() as u64);
        self.make_all_ready(back, now);
    }
}
