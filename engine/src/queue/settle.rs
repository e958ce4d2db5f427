//! Settlement inside one queue: acknowledge, requeue and touch (single and
//! batch), expiry and delays coming due ([`Queue::run_due`]), and the one
//! dead-letter decision they share ([`Queue::end_delivery`]). Each settles
//! through one atomic `remove_if` / `update_if` on the lease table with the
//! deadline test inside it, so exactly one of them wins per delivery.

use std::time::Duration;

use super::{Counters, DueRun, Ended, Queue, Shared};
use crate::broker::Settled;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::lease::Lease;
use crate::message::Message;
use crate::sync::Ordering;
use crate::timer::{lease_ids, Entry};

/// Where [`Queue::end_delivery`] sends a delivery that ended without an
/// acknowledge.
enum Verdict {
    /// Back to this queue (journalled already): the caller puts it back.
    Back(Message),
    /// Its last allowed delivery: out of this queue, for its `.dead` queue.
    Dead(Message),
}

impl Queue {
    /// Removes the live lease `id`: the one place a consumer wins a
    /// delivery against expiry.
    fn take_lease(&self, id: u64, now: Timestamp) -> Result<Lease, Error> {
        let lease = self
            .leases
            .remove_if(id, |lease| now < lease.deadline)
            .ok_or(Error::InvalidId)?;
        self.timer.cancel_lease(lease.deadline, id);
        Ok(lease)
    }

    /// Acknowledges `id`; returns what the message was charged, for the
    /// caller to release from the byte budget.
    pub(crate) fn acknowledge(
        &self,
        shared: &Shared,
        id: u64,
        now: Timestamp,
    ) -> Result<u64, Error> {
        let lease = self.take_lease(id, now)?;
        if let Some(journal) = &shared.journal {
            journal.gone(lease.message.id);
        }
        self.bytes
            .fetch_sub(lease.message.body.len() as u64, Ordering::Relaxed);
        Counters::bump(&self.counters.acknowledged);
        Ok(lease.message.charge())
    }

    /// Acknowledges each of `ids`, pushing one result per id onto
    /// `results`; returns what the settled messages were charged.
    pub(crate) fn acknowledge_all(
        &self,
        shared: &Shared,
        ids: &[u64],
        now: Timestamp,
        results: &mut Vec<Settled>,
    ) -> u64 {
        let mut keys = Vec::with_capacity(ids.len());
        let (mut bytes, mut charge) = (0u64, 0u64);
        for &id in ids {
            let lease = self.leases.remove_if(id, |lease| now < lease.deadline);
            results.push(Settled::from_ok(lease.is_some()));
            if let Some(lease) = lease {
                if let Some(journal) = &shared.journal {
                    journal.gone(lease.message.id);
                }
                keys.push((lease.deadline, id));
                bytes += lease.message.body.len() as u64;
                charge += lease.message.charge();
            }
        }
        self.timer.cancel_leases(&keys);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        Counters::add(&self.counters.acknowledged, keys.len() as u64);
        charge
    }

    /// Requeues each of `ids` (see [`Queue::requeue`]), pushing one result
    /// per id onto `results`. Those requeued at once join the tail as one
    /// run; returns the messages whose last allowed delivery this was, for
    /// the caller to move to the dead-letter queue.
    pub(crate) fn requeue_all(
        &self,
        shared: &Shared,
        ids: &[u64],
        delay: Duration,
        now: Timestamp,
        results: &mut Vec<Settled>,
    ) -> Vec<Message> {
        let mut keys = Vec::with_capacity(ids.len());
        let mut ended = Vec::with_capacity(ids.len());
        for &id in ids {
            let lease = self.leases.remove_if(id, |lease| now < lease.deadline);
            results.push(Settled::from_ok(lease.is_some()));
            if let Some(lease) = lease {
                keys.push((lease.deadline, id));
                ended.push(lease.message);
            }
        }
        self.timer.cancel_leases(&keys);
        let max = self.max_deliveries.load(Ordering::Relaxed);
        let mut dead = Vec::new();
        let mut back = Vec::with_capacity(ended.len());
        for message in ended {
            match self.end_delivery(shared, message, delay, max) {
                Verdict::Back(message) => back.push(message),
                Verdict::Dead(message) => dead.push(message),
            }
        }
        Counters::add(&self.counters.requeued, back.len() as u64);
        if delay.is_zero() {
            self.make_all_ready(back, now);
        } else {
            let due = now.saturating_add(delay);
            self.timer.schedule_delayed_all(
                back.into_iter().map(|message| (due, message)),
                &self.hint(shared),
            );
        }
        dead
    }

    /// Requeues `id` to the tail, now or after `delay`, unless that was its
    /// last allowed delivery.
    pub(crate) fn requeue(
        &self,
        shared: &Shared,
        id: u64,
        delay: Duration,
        now: Timestamp,
    ) -> Result<Ended, Error> {
        let lease = self.take_lease(id, now)?;
        let max = self.max_deliveries.load(Ordering::Relaxed);
        let message = match self.end_delivery(shared, lease.message, delay, max) {
            Verdict::Back(message) => message,
            Verdict::Dead(message) => return Ok(Ended::DeadLetter(message)),
        };
        Counters::bump(&self.counters.requeued);
        if delay.is_zero() {
            self.make_ready(message, now);
            Ok(Ended::Ready)
        } else {
            self.timer
                .schedule_delayed(now.saturating_add(delay), message, &self.hint(shared));
            Ok(Ended::Delayed)
        }
    }

    /// Extends lease `id` to `now + ttl`; exactly one of this and the
    /// lease's expiry wins.
    pub(crate) fn touch(
        &self,
        shared: &Shared,
        id: u64,
        ttl: Option<Duration>,
        now: Timestamp,
    ) -> Result<(), Error> {
        let new = now.saturating_add(ttl.unwrap_or_else(|| self.settings().ttl));
        let touched = self.leases.update_if(id, |lease| {
            if now >= lease.deadline {
                return false;
            }
            // Under the lease's table lock, so no settlement or expiry of
            // this lease runs until its timer entry has moved too.
            self.timer
                .reschedule_lease(lease.deadline, new, id, &self.hint(shared));
            lease.deadline = new;
            true
        });
        if touched {
            Ok(())
        } else {
            Err(Error::InvalidId)
        }
    }

    /// A delivery ended without an acknowledge (a requeue, single or
    /// batch, or an expiry): the one place the dead-letter decision is
    /// made. On its `max_deliveries`-th delivery (`max`, read once by the
    /// caller; 0: unlimited) the message leaves this queue (its bytes, one
    /// `dead_lettered`) for the caller to move to `<queue>.dead`; otherwise
    /// it is journalled as coming back after `delay` and handed back for
    /// the caller to put back (the caller counts it and pushes it, in runs
    /// where it has many).
    fn end_delivery(
        &self,
        shared: &Shared,
        message: Message,
        delay: Duration,
        max: u32,
    ) -> Verdict {
        if max > 0 && message.attempts >= max {
            self.bytes
                .fetch_sub(message.body.len() as u64, Ordering::Relaxed);
            Counters::bump(&self.counters.dead_lettered);
            return Verdict::Dead(message);
        }
        if let Some(journal) = &shared.journal {
            self.journal_back(journal.as_ref(), &message, delay);
        }
        Verdict::Back(message)
    }

    /// Handles everything of this queue due at `now`: expired leases and
    /// delayed messages, in due order; see [`DueRun`].
    pub(crate) fn run_due(&self, shared: &Shared, now: Timestamp, shards: u64) -> DueRun {
        let Some(_alive) = self.alive() else {
            return DueRun::default();
        };
        let due = self.timer.take_due(now, shards, &self.hint(shared));
        let max = self.max_deliveries.load(Ordering::Relaxed);
        // Everything that comes back joins the tail as one run, in due
        // order, with one wake-up pass: a sweep of many pays per sweep what
        // it can (the push, the counters, the notification).
        let mut back = Vec::with_capacity(due.len());
        let (mut expired, mut came_due, mut dead) = (0, 0, Vec::new());
        for (key, entry) in due {
            match entry {
                Entry::Leases(len) => {
                    // A lease touched since this entry was taken has a later
                    // deadline and stays; one settled since is gone.
                    for id in lease_ids(&key, len) {
                        let Some(lease) = self.leases.remove_if(id, |lease| lease.deadline <= now)
                        else {
                            continue;
                        };
                        expired += 1;
                        match self.end_delivery(shared, lease.message, Duration::ZERO, max) {
                            Verdict::Back(message) => back.push(message),
                            Verdict::Dead(message) => dead.push(message),
                        }
                    }
                }
                Entry::Delayed(message) => {
                    came_due += 1;
                    if let Some(journal) = &shared.journal {
                        self.journal_back(journal.as_ref(), &message, Duration::ZERO);
                    }
                    back.push(message);
                }
            }
        }
        Counters::add(&self.counters.expired, (expired - dead.len()) as u64);
        self.make_all_ready(back, now);
        self.leases.shrink_if_sparse();
        DueRun {
            expired,
            came_due,
            dead,
        }
    }
}
