//! [`Broker::undeliver_batch_in`]: the entry point for a delivery whose
//! answer never reached its consumer (a replicated fetch whose client left
//! while the answer waited for its majority). See `queue::undeliver`.

use super::{Broker, Settled};
use crate::clock::Clock;
use crate::error::Error;

impl<C: Clock> Broker<C> {
    /// Gives each of `ids` in `queue` back: the message is ready again at
    /// the tail with this delivery's attempt uncounted, and the id is
    /// invalid from now on. One result per id, `Ok` where the lease was
    /// still live; an expired or settled one is `Invalid` and untouched. A
    /// queue that does not exist answers all `Invalid`.
    pub(crate) fn undeliver_batch_in(
        &self,
        queue: &str,
        ids: &[u64],
    ) -> Result<Vec<Settled>, Error> {
        let mut results = Vec::with_capacity(ids.len());
        match self.settling(queue)? {
            Some(found) => found.undeliver_all(&self.shared, ids, self.clock.now(), &mut results),
            None => results.resize(ids.len(), Settled::Invalid),
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;

    use crate::clock::ManualClock;
    use crate::journal::Journal;
    use crate::message::QueueName;
    use crate::{Broker, Config, QueueUpdate, Settled};

    const TTL: Duration = Duration::from_secs(10);

    fn broker() -> Broker<ManualClock> {
        Broker::with_clock(
            Config {
                ttl: TTL,
                ..Config::default()
            },
            ManualClock::new(),
        )
    }

    #[test]
    fn a_given_back_delivery_is_ready_again_with_its_attempt_uncounted() {
        let b = broker();
        let q = b.queue("q");
        q.put(QueueUpdate {
            ttl: None,
            max_deliveries: Some(1),
        })
        .unwrap();
        q.publish(Bytes::from_static(b"a")).unwrap();
        q.publish(Bytes::from_static(b"b")).unwrap();
        let first = q.try_fetch().unwrap().unwrap();
        assert_eq!(first.attempt, 1);
        assert_eq!(
            q.undeliver_batch(&[first.id, first.id, 999]).unwrap(),
            vec![Settled::Ok, Settled::Invalid, Settled::Invalid]
        );
        // The old id is settled for good, and its timer entry went with it.
        assert!(q.acknowledge(first.id).is_err());
        assert_eq!(b.timer_counts(), (0, 0));
        // Back at the tail, behind "b"; its one allowed delivery is still
        // ahead of it (max_deliveries 1), so it is not dead-lettered.
        let second = q.try_fetch().unwrap().unwrap();
        assert_eq!(second.body, Bytes::from_static(b"b"));
        let again = q.try_fetch().unwrap().unwrap();
        assert_eq!(again.message_id, first.message_id);
        assert_eq!(again.attempt, 1);
        assert_ne!(again.id, first.id);
        let stats = q.stats().unwrap();
        assert_eq!(
            (stats.in_flight, stats.requeued, stats.delivered),
            (2, 1, 3)
        );
    }

    #[test]
    fn an_expired_lease_is_left_to_the_expiry() {
        let b = broker();
        let q = b.queue("q");
        q.publish(Bytes::from_static(b"a")).unwrap();
        let first = q.try_fetch().unwrap().unwrap();
        b.clock().advance(TTL);
        assert_eq!(
            q.undeliver_batch(&[first.id]).unwrap(),
            vec![Settled::Invalid]
        );
        b.expire_due();
        // The expiry put it back, counting the attempt.
        assert_eq!(q.try_fetch().unwrap().unwrap().attempt, 2);
        assert_eq!(
            b.queue("none").undeliver_batch(&[1, 2]).unwrap(),
            vec![Settled::Invalid, Settled::Invalid]
        );
    }

    #[derive(Default)]
    struct Readies(Mutex<Vec<(u64, u32)>>);

    impl Journal for Readies {
        fn ready(&self, _: &QueueName, id: u64, attempts: u32, _: bool) {
            self.0.lock().unwrap().push((id, attempts));
        }
        fn delayed(&self, _: &QueueName, _: u64, _: u32, _: Duration) {}
        fn delivered(&self, _: u64, _: u32) {}
        fn gone(&self, _: u64) {}
    }

    #[test]
    fn a_journal_without_its_own_undelivered_records_a_ready_with_the_uncounted_attempts() {
        let readies = Arc::new(Readies::default());
        let b = broker().with_journal(readies.clone());
        let q = b.queue("q");
        q.publish(Bytes::from_static(b"a")).unwrap();
        let first = q.try_fetch().unwrap().unwrap();
        q.undeliver_batch(&[first.id]).unwrap();
        assert_eq!(*readies.0.lock().unwrap(), vec![(first.message_id, 0)]);
    }
}
