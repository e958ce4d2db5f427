//! [`PartitionedQueue`]: one logical queue spread over P partitions, the
//! ordinary queues `Q--0` ... `Q--{P-1}` (SPEC part 3, **Cluster**), which
//! a cluster's HAProxy routes to node `k mod N`.
//!
//! * **Publish** (single and batch) goes to the partitions in turn. A
//!   partition that answered `unavailable` or `shutting_down`, or whose node
//!   could not be reached, is skipped for a while ([`PartitionedQueueBuilder::skip_for`])
//!   and the publish is sent to the next one at once: those answers mean
//!   nothing was published. An ambiguous failure (the request may have
//!   reached the node) is returned, as for a plain [`Queue`], and the
//!   partition is skipped by the next publishes.
//! * **Fetch** long-polls one partition at a time with `?max=`: it stays on
//!   a partition while it delivers (up to
//!   [`PartitionedQueueBuilder::max_stay`] fetches in a row, so that a busy
//!   partition does not starve the others) and moves on when a long poll
//!   times out or the partition is unavailable. A consumer therefore never
//!   waits on an empty partition for more than one wait while another has
//!   messages.
//! * **Settle**: every [`Delivery`] fetched here carries its partition
//!   ([`Delivery::partition`]); acknowledge, requeue and touch go to that
//!   partition's queue, the only node that knows the delivery id.
//!
//! When every partition failed with a request-was-not-done error, the
//! round is retried as the client's [`crate::RetryPolicy`] says (the whole
//! cluster restarting looks like one node restarting to a plain queue).
//!
//! State shared by clones: the skip marks, the publish turn and the fetch
//! cursor. A handle starts its turns at a random partition, so that many
//! producers and consumers spread out from the start.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Client, Queue};
use crate::error::{Error, Result};
use crate::model::{Delivery, EncodedBatch, EncodedMessage, Message, Settled};
use crate::retry::{unit_random, Idempotence};

/// The most partitions a handle takes: far more than any cluster needs
/// (see docs/cluster.md on sizing), and few enough that a round over all
/// of them stays cheap.
pub const MAX_PARTITIONS: u32 = 1024;

/// Builds a [`PartitionedQueue`]; from [`Client::partitioned_builder`].
#[derive(Debug, Clone)]
pub struct PartitionedQueueBuilder {
    client: Client,
    name: String,
    partitions: u32,
    skip_for: Duration,
    max_stay: u32,
}

impl PartitionedQueueBuilder {
    /// How long a partition that was unavailable is skipped (default 1 s).
    /// It is still tried when every partition is skipped.
    pub fn skip_for(mut self, skip: Duration) -> Self {
        self.skip_for = skip;
        self
    }

    /// How many fetches in a row may be served by one partition before
    /// moving on to the next (default 8; at least 1).
    pub fn max_stay(mut self, fetches: u32) -> Self {
        self.max_stay = fetches.max(1);
        self
    }

    /// Checks the name and the count and builds the handle.
    pub fn build(self) -> Result<PartitionedQueue> {
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(Error::InvalidArgument(format!(
                "partitions must be 1 to {MAX_PARTITIONS}, not {}",
                self.partitions
            )));
        }
        if looks_like_a_partition(&self.name) || self.name.ends_with(".dead") {
            // `a--1` is partition 1 of `a`, not a logical queue of its own;
            // a `.dead` queue is a partition's, not a logical queue's.
            return Err(Error::InvalidArgument(format!(
                "a partitioned queue's name ends neither in --<digits> nor in .dead: {:?}",
                self.name
            )));
        }
        let partitions = (0..self.partitions)
            .map(|k| {
                self.client
                    .queue(&partition_name(&self.name, k))
                    .map(Queue::into_partition)
            })
            .collect::<Result<Box<[Queue]>>>()?;
        let p = partitions.len();
        let start = (unit_random() * p as f64) as usize % p;
        Ok(PartitionedQueue {
            inner: Arc::new(Inner {
                name: self.name.into(),
                partitions,
                skips: Skips::new(p, self.skip_for),
                next_publish: AtomicUsize::new(start),
                cursor: Cursor {
                    at: AtomicUsize::new(start),
                    stays: AtomicU32::new(0),
                    max_stay: self.max_stay,
                },
            }),
        })
    }
}

/// Whether `name` ends in `--<digits>`, the suffix of a partition.
fn looks_like_a_partition(name: &str) -> bool {
    name.rsplit_once("--")
        .is_some_and(|(_, k)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// The name of partition `k` of `name`: `{name}--{k}`.
pub fn partition_name(name: &str, k: u32) -> String {
    format!("{name}--{k}")
}

impl Client {
    /// The queue `name` spread over `partitions` partitions
    /// (`{name}--0` ...), with the default settings.
    pub fn partitioned(&self, name: &str, partitions: u32) -> Result<PartitionedQueue> {
        self.partitioned_builder(name, partitions).build()
    }

    /// A builder for the queue `name` spread over `partitions` partitions.
    pub fn partitioned_builder(&self, name: &str, partitions: u32) -> PartitionedQueueBuilder {
        PartitionedQueueBuilder {
            client: self.clone(),
            name: name.to_owned(),
            partitions,
            skip_for: Duration::from_secs(1),
            max_stay: 8,
        }
    }
}

/// A queue spread over partitions: see the module docs. Cheap to clone;
/// clones share the skip marks and the turns.
#[derive(Debug, Clone)]
pub struct PartitionedQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: Box<str>,
    partitions: Box<[Queue]>,
    skips: Skips,
    /// The partition the next publish tries first (modulo P).
    next_publish: AtomicUsize,
    cursor: Cursor,
}

/// Until when each partition is skipped, in nanoseconds since `epoch` (0:
/// not skipped). Atomics, so that publishers on many tasks share them
/// without a lock.
#[derive(Debug)]
struct Skips {
    epoch: Instant,
    until: Box<[AtomicU64]>,
    skip_for: Duration,
}

impl Skips {
    fn new(p: usize, skip_for: Duration) -> Self {
        Skips {
            epoch: Instant::now(),
            until: (0..p).map(|_| AtomicU64::new(0)).collect(),
            skip_for,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn skipped(&self, k: usize, now: u64) -> bool {
        self.until[k].load(Relaxed) > now
    }

    fn skip(&self, k: usize) {
        let until = self
            .now()
            .saturating_add(u64::try_from(self.skip_for.as_nanos()).unwrap_or(u64::MAX));
        self.until[k].store(until.max(1), Relaxed);
    }

    fn clear(&self, k: usize) {
        // A load first: the common case (not skipped) then writes nothing
        // to a cache line every publisher reads.
        if self.until[k].load(Relaxed) != 0 {
            self.until[k].store(0, Relaxed);
        }
    }
}

/// The partition fetches long-poll, and how many fetches in a row it has
/// served.
#[derive(Debug)]
struct Cursor {
    at: AtomicUsize,
    stays: AtomicU32,
    max_stay: u32,
}

impl Cursor {
    /// Partition `k` delivered (it was the cursor's, or stood in for a
    /// skipped one): stay on it, unless it has served `max_stay` in a row.
    fn delivered(&self, k: usize, p: usize) {
        if self.at.swap(k, Relaxed) != k {
            self.stays.store(0, Relaxed);
        }
        if self.stays.fetch_add(1, Relaxed) + 1 >= self.max_stay {
            self.move_past(k, p);
        }
    }

    /// Partition `k` had nothing or failed: the next fetch starts after
    /// it. Only if the cursor is still there, so that concurrent fetchers
    /// of one handle that all saw `k` empty move it once, not P times.
    fn move_past(&self, k: usize, p: usize) {
        if self
            .at
            .compare_exchange(k, (k + 1) % p, Relaxed, Relaxed)
            .is_ok()
        {
            self.stays.store(0, Relaxed);
        }
    }
}

/// The order in which one call tries the partitions: from `start` round
/// the ring, first those not skipped, then (as a last resort, so that stale
/// marks never fail a call on their own) the skipped ones.
struct Candidates<'a> {
    skips: &'a Skips,
    now: u64,
    start: usize,
    p: usize,
    next: usize,
    /// The skipped partitions met on the first pass, tried after it
    /// (allocated only when one is skipped).
    skipped: Vec<usize>,
    retried: usize,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.next < self.p {
            let k = (self.start + self.next) % self.p;
            self.next += 1;
            if self.skips.skipped(k, self.now) {
                self.skipped.push(k);
            } else {
                return Some(k);
            }
        }
        let k = self.skipped.get(self.retried).copied();
        self.retried += 1;
        k
    }
}

/// Whether a fetch that failed so may be tried on another partition: any
/// failure of the node or the way to it (a fetch is safe to send again:
/// a lease taken by a lost answer expires and the message comes back). A
/// refused request (`401`, `400`) would be refused everywhere.
fn fetch_elsewhere(error: &Error) -> bool {
    match error {
        Error::Api(api) => error.is_elsewhere() || api.status.is_server_error(),
        Error::Transport { .. } => true,
        Error::Decode { .. } | Error::InvalidArgument(_) => false,
    }
}

/// Whether the node of a partition looks unhealthy after `error`, so that
/// the next calls should skip it for a while.
fn looks_down(error: &Error) -> bool {
    match error {
        Error::Api(api) => error.is_elsewhere() || api.status.is_server_error(),
        Error::Transport { .. } => true,
        Error::Decode { .. } | Error::InvalidArgument(_) => false,
    }
}

impl PartitionedQueue {
    /// The logical queue's name (without a partition suffix).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many partitions it has.
    pub fn len(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    /// Always false: a partitioned queue has at least one partition.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Partition `k`'s queue (`{name}--{k}`), for what this handle does not
    /// cover (settings, counts, dead letters). Its publishes and fetches
    /// fail fast on `unavailable` instead of retrying.
    pub fn partition(&self, k: u32) -> Option<&Queue> {
        self.inner.partitions.get(k as usize)
    }

    /// Every partition's queue, in order.
    pub fn partitions(&self) -> &[Queue] {
        &self.inner.partitions
    }

    /// Whether partition `k` is being skipped now (it answered
    /// `unavailable` or could not be reached within the skip time).
    pub fn is_skipped(&self, k: u32) -> bool {
        let skips = &self.inner.skips;
        (k as usize) < skips.until.len() && skips.skipped(k as usize, skips.now())
    }

    /// The client it calls through.
    pub fn client(&self) -> &Client {
        self.inner.partitions[0].client()
    }

    fn candidates(&self, start: usize) -> Candidates<'_> {
        let skips = &self.inner.skips;
        Candidates {
            skips,
            now: skips.now(),
            start,
            p: self.inner.partitions.len(),
            next: 0,
            skipped: Vec::new(),
            retried: 0,
        }
    }

    fn publish_start(&self) -> usize {
        self.inner.next_publish.fetch_add(1, Relaxed) % self.inner.partitions.len()
    }

    /// Publishes one message to the next partition in turn; answers the
    /// partition that took it.
    pub async fn publish(&self, body: &str) -> Result<u32> {
        self.publish_encoded_message(&EncodedMessage::new(body)?)
            .await
    }

    /// Publishes one message, ready after `delay`, to the next partition
    /// in turn; answers the partition that took it.
    pub async fn publish_delayed(&self, body: &str, delay: Duration) -> Result<u32> {
        self.publish_rounds(
            |queue| async move { queue.publish_delayed(body, delay).await.map(|()| 0) },
        )
        .await
        .map(|(k, _)| k)
    }

    /// Publishes a message encoded beforehand to the next partition in
    /// turn; answers the partition that took it.
    pub async fn publish_encoded_message(&self, message: &EncodedMessage) -> Result<u32> {
        self.publish_rounds(|queue| async move {
            queue.publish_encoded_message(message).await.map(|()| 0)
        })
        .await
        .map(|(k, _)| k)
    }

    /// Publishes a batch, all or nothing, to the next partition in turn
    /// (one partition takes the whole batch; successive batches spread);
    /// answers the partition and how many were published.
    pub async fn publish_batch<'m, I, M>(&self, messages: I) -> Result<(u32, u64)>
    where
        I: IntoIterator<Item = M>,
        M: Into<Message<'m>>,
    {
        self.publish_encoded(&EncodedBatch::new(messages)?).await
    }

    /// Publishes a batch encoded beforehand; as [`PartitionedQueue::publish_batch`].
    pub async fn publish_encoded(&self, batch: &EncodedBatch) -> Result<(u32, u64)> {
        self.publish_rounds(|queue| async move { queue.publish_encoded(batch).await })
            .await
    }

    /// Sends a publish to the partitions in turn until one takes it (see
    /// the module docs); answers the partition and what it answered.
    async fn publish_rounds<'q, F, Fut>(&'q self, send: F) -> Result<(u32, u64)>
    where
        F: Fn(&'q Queue) -> Fut,
        Fut: std::future::Future<Output = Result<u64>>,
    {
        let policy = *self.client().retry_policy();
        let mut round = 0;
        loop {
            let candidates = self.candidates(self.publish_start());
            let mut last = None;
            for k in candidates {
                match send(&self.inner.partitions[k]).await {
                    Ok(answer) => {
                        self.inner.skips.clear(k);
                        return Ok((k as u32, answer));
                    }
                    Err(error) => {
                        if looks_down(&error) {
                            self.inner.skips.skip(k);
                        }
                        if !error.is_elsewhere() {
                            // Refused, or it may have been published:
                            // sending it elsewhere could publish it twice.
                            return Err(error);
                        }
                        tracing::debug!(queue = %self.name(), partition = k, "publish elsewhere after: {error}");
                        last = Some(error);
                    }
                }
            }
            let error = last.expect("a round tries at least one partition");
            match policy.next_wait(&error, Idempotence::Publish, round) {
                Some(wait) => {
                    round += 1;
                    Box::pin(tokio::time::sleep(wait)).await;
                }
                None => return Err(error),
            }
        }
    }

    /// Long-polls one partition for up to `wait` (`None`: the server's
    /// `--fetch-timeout`) for 1 to `max` deliveries (see the module docs
    /// for which partition); empty if none arrived. Each delivery carries
    /// its partition.
    pub async fn fetch_batch(&self, max: usize, wait: Option<Duration>) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        self.fetch_batch_into(max, wait, &mut out).await?;
        Ok(out)
    }

    /// [`PartitionedQueue::fetch_batch`] appending to `out`; answers how
    /// many were appended.
    pub async fn fetch_batch_into(
        &self,
        max: usize,
        wait: Option<Duration>,
        out: &mut Vec<Delivery>,
    ) -> Result<usize> {
        let p = self.inner.partitions.len();
        let cursor = &self.inner.cursor;
        let policy = *self.client().retry_policy();
        let mut round = 0;
        loop {
            let candidates = self.candidates(cursor.at.load(Relaxed) % p);
            let mut last = None;
            for k in candidates {
                let before = out.len();
                match self.inner.partitions[k]
                    .fetch_batch_into(max, wait, out)
                    .await
                {
                    Ok(n) => {
                        self.inner.skips.clear(k);
                        for delivery in &mut out[before..] {
                            delivery.partition = Some(k as u32);
                        }
                        if n == 0 {
                            cursor.move_past(k, p);
                        } else {
                            cursor.delivered(k, p);
                        }
                        return Ok(n);
                    }
                    Err(error) => {
                        out.truncate(before);
                        if looks_down(&error) {
                            self.inner.skips.skip(k);
                        }
                        if !fetch_elsewhere(&error) {
                            return Err(error);
                        }
                        cursor.move_past(k, p);
                        tracing::debug!(queue = %self.name(), partition = k, "fetch elsewhere after: {error}");
                        last = Some(error);
                    }
                }
            }
            let error = last.expect("a round tries at least one partition");
            match policy.next_wait(&error, Idempotence::Safe, round) {
                Some(wait) => {
                    round += 1;
                    Box::pin(tokio::time::sleep(wait)).await;
                }
                None => return Err(error),
            }
        }
    }

    /// The queue a delivery fetched here settles on.
    pub fn queue_of(&self, delivery: &Delivery) -> Result<&Queue> {
        delivery
            .partition
            .and_then(|k| self.partition(k))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "delivery {} was not fetched from a partition of {}",
                    delivery.id,
                    self.name()
                ))
            })
    }

    /// Acknowledges `delivery` on its partition.
    pub async fn acknowledge(&self, delivery: &Delivery) -> Result<()> {
        self.queue_of(delivery)?.acknowledge(delivery.id).await
    }

    /// Requeues `delivery` on its partition, after `delay` if given.
    pub async fn requeue(&self, delivery: &Delivery, delay: Option<Duration>) -> Result<()> {
        self.queue_of(delivery)?.requeue(delivery.id, delay).await
    }

    /// Touches `delivery`'s lease on its partition.
    pub async fn touch(&self, delivery: &Delivery, ttl: Option<Duration>) -> Result<()> {
        self.queue_of(delivery)?.touch(delivery.id, ttl).await
    }

    /// Acknowledges `deliveries`, one batch request per partition they
    /// came from; one result per delivery, in order. Fails as a whole if
    /// one partition's request fails (the others may have been settled:
    /// a second acknowledge of them answers `invalid`).
    pub async fn acknowledge_batch(&self, deliveries: &[Delivery]) -> Result<Vec<Settled>> {
        self.settle_batch(deliveries, |queue, ids| async move {
            queue.acknowledge_batch(&ids).await
        })
        .await
    }

    /// Requeues `deliveries` (after `delay` if given), one batch request
    /// per partition; as [`PartitionedQueue::acknowledge_batch`].
    pub async fn requeue_batch(
        &self,
        deliveries: &[Delivery],
        delay: Option<Duration>,
    ) -> Result<Vec<Settled>> {
        self.settle_batch(deliveries, |queue, ids| async move {
            queue.requeue_batch(&ids, delay).await
        })
        .await
    }

    async fn settle_batch<'q, F, Fut>(
        &'q self,
        deliveries: &[Delivery],
        send: F,
    ) -> Result<Vec<Settled>>
    where
        F: Fn(&'q Queue, Vec<u64>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Settled>>>,
    {
        for delivery in deliveries {
            self.queue_of(delivery)?;
        }
        let mut results = vec![Settled::Invalid; deliveries.len()];
        for (k, queue) in self.inner.partitions.iter().enumerate() {
            let (indices, ids): (Vec<usize>, Vec<u64>) = deliveries
                .iter()
                .enumerate()
                .filter(|(_, d)| d.partition == Some(k as u32))
                .map(|(i, d)| (i, d.id))
                .unzip();
            if ids.is_empty() {
                continue;
            }
            let answers = send(queue, ids).await?;
            for (i, answer) in indices.into_iter().zip(answers) {
                results[i] = answer;
            }
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(p: u32) -> PartitionedQueue {
        Client::new("http://127.0.0.1:1")
            .unwrap()
            .partitioned("jobs", p)
            .unwrap()
    }

    #[test]
    fn names_and_counts_are_checked() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let q = client.partitioned("jobs", 3).unwrap();
        let names: Vec<&str> = q.partitions().iter().map(Queue::name).collect();
        assert_eq!(names, ["jobs--0", "jobs--1", "jobs--2"]);
        assert!(client.partitioned("jobs", 0).is_err());
        assert!(client.partitioned("jobs", MAX_PARTITIONS + 1).is_err());
        assert!(client.partitioned("a--1", 2).is_err());
        assert!(client.partitioned("a--b", 2).is_ok());
        assert!(client.partitioned("a--", 2).is_ok());
        assert!(client.partitioned("jobs.dead", 2).is_err());
        assert!(client.partitioned("a/b", 2).is_err());
        // The suffix must fit in the 80 bytes of a name.
        assert!(client.partitioned(&"x".repeat(77), 10).is_ok());
        assert!(client.partitioned(&"x".repeat(78), 11).is_err());
    }

    #[test]
    fn candidates_go_round_from_the_start_with_skipped_ones_last() {
        let q = handle(5);
        let all: Vec<usize> = q.candidates(3).collect();
        assert_eq!(all, [3, 4, 0, 1, 2]);
        q.inner.skips.skip(4);
        q.inner.skips.skip(1);
        let all: Vec<usize> = q.candidates(3).collect();
        assert_eq!(all, [3, 0, 2, 4, 1]);
        q.inner.skips.clear(4);
        let all: Vec<usize> = q.candidates(3).collect();
        assert_eq!(all, [3, 4, 0, 2, 1]);
    }

    #[test]
    fn skips_expire() {
        let q = Client::new("http://127.0.0.1:1")
            .unwrap()
            .partitioned_builder("jobs", 2)
            .skip_for(Duration::ZERO)
            .build()
            .unwrap();
        q.inner.skips.skip(0);
        // A zero skip ends at once: nothing is skipped.
        assert!(!q.is_skipped(0));
        let q = handle(2);
        q.inner.skips.skip(0);
        assert!(q.is_skipped(0) && !q.is_skipped(1) && !q.is_skipped(7));
    }

    #[test]
    fn the_cursor_stays_while_delivering_up_to_max_stay_and_moves_once() {
        let cursor = Cursor {
            at: AtomicUsize::new(0),
            stays: AtomicU32::new(0),
            max_stay: 3,
        };
        cursor.delivered(0, 4);
        cursor.delivered(0, 4);
        assert_eq!(cursor.at.load(Relaxed), 0);
        cursor.delivered(0, 4);
        assert_eq!(cursor.at.load(Relaxed), 1, "moved on after 3 in a row");
        // Two fetchers saw partition 1 empty: it moves past 1 once.
        cursor.move_past(1, 4);
        cursor.move_past(1, 4);
        assert_eq!(cursor.at.load(Relaxed), 2);
        // A stand-in partition that delivers takes the cursor, fresh.
        cursor.delivered(3, 4);
        assert_eq!(cursor.at.load(Relaxed), 3);
        assert_eq!(cursor.stays.load(Relaxed), 1);
        cursor.move_past(3, 4);
        assert_eq!(cursor.at.load(Relaxed), 0, "wraps round");
    }
}
