//! Fetching: leasing the head of a queue, one message or a batch, without
//! waiting or waiting until a timeout future completes. The waiting fetch
//! polls [`Broker::poll_fetch`], parked on the queue's `WaitList` (or the
//! registry's list of creations) through a `Parked` place, which
//! `waiters.rs` owns together with its drop hand-off.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use super::{Broker, Delivery, ID_HEADROOM};
use crate::clock::Clock;
use crate::error::Error;
use crate::message::MAX_ID;
use crate::queue::{Leased, Queue};
use crate::registry::QueueRef;
use crate::sync::Ordering;
use crate::waiters::{Parked, Place};

impl<C: Clock> Broker<C> {
    /// Leases the head of `queue`, if there is one, without waiting. A
    /// queue that does not exist is empty.
    pub(crate) fn try_fetch_from(&self, queue: &str) -> Result<Option<Delivery>, Error> {
        self.check_open()?;
        match self.known(queue)? {
            Some(found) => self.lease_from(&found),
            None => Ok(None),
        }
    }

    pub(super) fn lease_from(&self, queue: &Queue) -> Result<Option<Delivery>, Error> {
        self.check_ids()?;
        Ok(queue
            .try_fetch(&self.shared, || self.clock.now())
            .map(|leased| self.delivered(queue, leased)))
    }

    pub(super) fn check_ids(&self) -> Result<(), Error> {
        if self.shared.next_id.load(Ordering::Relaxed) >= MAX_ID - ID_HEADROOM {
            Err(Error::IdsExhausted)
        } else {
            Ok(())
        }
    }

    /// Leases up to `max` messages from the head of `queue`, into `out`.
    pub(super) fn lease_batch_from(
        &self,
        queue: &Queue,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<usize, Error> {
        self.check_ids()?;
        let mut leased = Vec::new();
        let taken = queue.try_fetch_batch(
            &self.shared,
            max,
            max_bytes,
            || self.clock.now(),
            &mut leased,
        );
        out.extend(
            leased
                .into_iter()
                .map(|leased| self.delivered(queue, leased)),
        );
        Ok(taken)
    }

    /// Leases the head of `queue`, waiting for a message until `timeout`
    /// completes. A queue that does not exist is waited on as an empty one:
    /// its creation wakes the fetch.
    ///
    /// Runtime-agnostic: pass any timer future (`tokio::time::sleep(d)`,
    /// `std::future::pending()` to wait forever). Fails with
    /// [`Error::Timeout`] if `timeout` completes first and
    /// [`Error::Closed`] if the broker closes meanwhile.
    ///
    /// Fair: waiting fetches on a queue are served in the order they began
    /// waiting, and one that was woken but lost the message to a racing
    /// fetch keeps its place.
    ///
    /// Cancellation safe: dropping the returned future at any point leases
    /// nothing, and if this fetch had already been woken for a message it
    /// passes the wake-up on to the next waiter.
    pub(crate) async fn fetch_from<T: Future<Output = ()>>(
        &self,
        queue: &str,
        timeout: T,
    ) -> Result<Delivery, Error> {
        let mut timeout = pin!(timeout);
        let mut parked = Parked::default();
        let mut take = |found: &Queue| self.lease_from(found);
        poll_fn(|cx| self.poll_fetch(cx, queue, &mut parked, &mut take, timeout.as_mut())).await
    }

    /// Leases up to `max` messages from the head of `queue`, in queue
    /// order, without waiting, stopping before their bodies pass
    /// `max_bytes` in total (the first always fits). Appends them to `out`
    /// and returns how many (0: the queue is empty or does not exist).
    ///
    /// The batch costs a lock-free pop per message, one clock read, one
    /// range of delivery ids, one deadline and one lock per timer shard its
    /// ids reach.
    pub(crate) fn try_fetch_batch_from(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<usize, Error> {
        self.check_open()?;
        match self.known(queue)? {
            Some(found) if max > 0 => self.lease_batch_from(&found, max, max_bytes, out),
            _ => Ok(0),
        }
    }

    /// As [`crate::QueueHandle::fetch`] (fair, cancellation safe, the same
    /// errors), but answers with 1 to `max` deliveries as soon as at least
    /// one message is ready: it never lingers for more. See
    /// [`crate::QueueHandle::try_fetch_batch`] for `max_bytes`.
    pub(crate) async fn fetch_batch_from<T: Future<Output = ()>>(
        &self,
        queue: &str,
        max: usize,
        max_bytes: usize,
        timeout: T,
    ) -> Result<Vec<Delivery>, Error> {
        let max = max.max(1);
        let mut timeout = pin!(timeout);
        let mut parked = Parked::default();
        let mut take = |found: &Queue| {
            let mut out = Vec::new();
            self.lease_batch_from(found, max, max_bytes, &mut out)
                .map(|taken| (taken > 0).then_some(out))
        };
        poll_fn(|cx| self.poll_fetch(cx, queue, &mut parked, &mut take, timeout.as_mut())).await
    }

    /// One poll of a waiting fetch; `take` leases whatever the fetch takes
    /// from a queue found by name (`None`: nothing ready).
    pub(super) fn poll_fetch<'a, R, T: Future<Output = ()>>(
        &'a self,
        cx: &mut Context<'_>,
        name: &str,
        parked: &mut Parked<'a>,
        take: &mut impl FnMut(&Queue) -> Result<Option<R>, Error>,
        timeout: Pin<&mut T>,
    ) -> Poll<Result<R, Error>> {
        loop {
            if let Err(error) = self.check_open() {
                // `Parked::drop` deregisters and passes on any wake-up.
                return Poll::Ready(Err(error));
            }
            let queue = match self.known(name) {
                Ok(queue) => queue,
                Err(error) => return Poll::Ready(Err(error)),
            };
            if let Some(found) = &queue {
                match take(found) {
                    Ok(Some(taken)) => {
                        parked.leave();
                        return Poll::Ready(Ok(taken));
                    }
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
            }
            // Wait on the right list: the queue's, or, if it does not exist
            // (or was just replaced), the registry's creations.
            if !parked.is_on(queue.as_ref().map(QueueRef::arc)) {
                let place = match &queue {
                    Some(found) => {
                        Place::Queue(found.arc().clone(), found.waiters.register(cx.waker()))
                    }
                    None => {
                        let creations = &self.registry.creations;
                        Place::Creations(creations, creations.register(cx.waker()))
                    }
                };
                parked.park(place);
                // Re-check after registering: a creation or publish that
                // raced the registration is seen either way.
                continue;
            }
            if parked.poll_notified(cx) {
                // Woken, and re-armed in our old place: look again.
                continue;
            }
            break;
        }
        match timeout.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::Timeout)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What a consumer is told of a message leased from `queue`.
pub(super) fn delivery(queue: &Queue, leased: Leased) -> Delivery {
    Delivery {
        id: leased.id,
        message_id: leased.message.id,
        attempt: leased.message.attempts,
        dead_letter: if leased.message.dead_lettered {
            queue.dead_letter_origin()
        } else {
            None
        },
        body: leased.message.body,
    }
}
