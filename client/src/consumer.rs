//! [`Consumer`]: runs a user's async handler over a queue.
//!
//! * **Bounded.** A semaphore of `max_in_flight` permits; a message holds
//!   one from its fetch until its settlement has been answered, so the
//!   consumer never holds more leases than that.
//! * **Batch fetches with long-poll.** The fetch loop takes every free
//!   permit (up to `fetch_max`) and asks for that many messages with
//!   `?max=n&wait=<ms>`; the server answers as soon as one is ready. With
//!   one free permit it uses the single fetch of part 1.
//! * **Settlement.** `Ok` is acknowledged: a settler task gathers the
//!   acknowledgements that are waiting into one batch request. `Err` (and
//!   a handler that panics) is requeued with a delay from a [`Backoff`] by
//!   attempt.
//! * **Heartbeat.** A handler still running after `heartbeat` × the lease
//!   TTL has its lease touched, and again every such interval, so a slow
//!   handler does not lose its message to expiry.
//! * **Graceful stop.** [`Consumer::stop`] stops fetching (an in-flight
//!   long poll is let finish, not cut, so that no answer is lost with a
//!   lease in it; what it brings is requeued at once), lets the running
//!   handlers finish for up to `stop_timeout`, then requeues what they
//!   hold, and waits until every settlement has been answered. On return
//!   the consumer holds no lease. Dropping a `Consumer` without `stop` is
//!   a crash: its leases expire and their messages are delivered again.
//!
//! * **Partitions.** Over a [`PartitionedQueue`] it fetches as that handle
//!   does (one partition at a time, moving on when one is empty or
//!   unavailable) and settles and touches each delivery on its partition.
//!
//! Handlers must be idempotent or deduplicate (see [`crate::Dedup`]): a
//! lease that expires, or an acknowledgement whose answer is lost, brings
//! the message back.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::client::Queue;
use crate::error::{Code, Error};
use crate::model::{Delivery, Settled};
use crate::partitioned::PartitionedQueue;
use crate::retry::Backoff;

/// What a consumer consumes: one queue, or a queue spread over partitions.
/// Both convert into it, so [`Consumer::builder`] takes either.
#[derive(Debug, Clone)]
pub enum ConsumerSource {
    Queue(Queue),
    Partitioned(PartitionedQueue),
}

impl From<Queue> for ConsumerSource {
    fn from(queue: Queue) -> Self {
        ConsumerSource::Queue(queue)
    }
}

impl From<PartitionedQueue> for ConsumerSource {
    fn from(queue: PartitionedQueue) -> Self {
        ConsumerSource::Partitioned(queue)
    }
}

impl ConsumerSource {
    /// The (logical) queue's name.
    pub fn name(&self) -> &str {
        match self {
            ConsumerSource::Queue(queue) => queue.name(),
            ConsumerSource::Partitioned(queue) => queue.name(),
        }
    }

    /// The queue a delivery from `partition` settles on.
    fn queue_for(&self, partition: Option<u32>) -> &Queue {
        match self {
            ConsumerSource::Queue(queue) => queue,
            ConsumerSource::Partitioned(queue) => partition
                .and_then(|k| queue.partition(k))
                .expect("a partitioned queue's deliveries carry one of its partitions"),
        }
    }
}

/// Builds a [`Consumer`]; [`ConsumerBuilder::run`] starts it.
#[derive(Debug, Clone)]
pub struct ConsumerBuilder {
    source: ConsumerSource,
    max_in_flight: usize,
    fetch_max: usize,
    wait: Duration,
    requeue_backoff: Backoff,
    lease_ttl: Option<Duration>,
    heartbeat: f64,
    stop_timeout: Duration,
    error_backoff: Backoff,
}

impl ConsumerBuilder {
    /// At most `n` messages leased at once (default 16).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// At most `n` messages per fetch (default 100; keep it within the
    /// server's `--max-batch`, default 1000, or fetches are refused). 1
    /// uses only the single fetch route.
    pub fn fetch_max(mut self, n: usize) -> Self {
        self.fetch_max = n.max(1);
        self
    }

    /// The long poll of each fetch (default 1 s). A stop waits for the
    /// fetch in flight, so this bounds how long a stop waits for it.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The delay of a requeue after a failure on attempt n:
    /// `backoff.delay(n)` (default 100 ms doubling to 60 s). A zero base
    /// requeues at once.
    pub fn requeue_backoff(mut self, backoff: Backoff) -> Self {
        self.requeue_backoff = backoff;
        self
    }

    /// The lease TTL the heartbeat is timed against (default: the queue's
    /// `ttl_ms`, read with `GET /queues/{queue}` when the first message
    /// arrives).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// Touch a lease when its handler has run this fraction of the TTL,
    /// and every such interval after (default 0.5; 0 turns it off).
    pub fn heartbeat(mut self, fraction: f64) -> Self {
        self.heartbeat = fraction.clamp(0.0, 1.0);
        self
    }

    /// How long a stop lets running handlers finish before requeueing
    /// their messages (default 10 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Starts the consumer on the current tokio runtime, running `handler`
    /// for every delivery, each in a task of its own.
    pub fn run<H, F, E>(self, handler: H) -> Consumer
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let stop_timeout = self.stop_timeout;
        let shared = Arc::new(Shared {
            source: self.source.clone(),
            counters: counters.clone(),
            ttl: tokio::sync::OnceCell::new_with(self.lease_ttl.map(Some)),
            batches: AtomicBool::new(true),
            config: self,
        });
        let task = tokio::spawn(fetch_loop(shared, Arc::new(handler), stop_rx, abandon_rx));
        Consumer {
            stop: stop_tx,
            abandon: abandon_tx,
            task: Some(task),
            counters,
            stop_timeout,
        }
    }
}

/// A running consumer. See the module docs for what it guarantees.
#[derive(Debug)]
pub struct Consumer {
    stop: watch::Sender<bool>,
    abandon: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
    stop_timeout: Duration,
}

/// What a consumer has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Deliveries fetched.
    pub fetched: u64,
    /// Handlers that returned `Ok`.
    pub succeeded: u64,
    /// Handlers that returned `Err`.
    pub failed: u64,
    /// Handlers that panicked (their messages are requeued like failures).
    pub panicked: u64,
    /// Acknowledgements the server accepted.
    pub acknowledged: u64,
    /// Requeues the server accepted.
    pub requeued: u64,
    /// Settlements answered `invalid` (the lease had expired: the message
    /// was or will be delivered again).
    pub invalid: u64,
    /// Settlements that failed after the client's retries (their leases
    /// expire and the messages are delivered again).
    pub settle_errors: u64,
    /// Touches the server accepted.
    pub touched: u64,
    /// Fetches that failed after the client's retries.
    pub fetch_errors: u64,
    /// Messages requeued unhandled by a stop: fetched after it began, or
    /// whose handlers outlasted `stop_timeout`.
    pub returned_on_stop: u64,
}

#[derive(Debug, Default)]
struct Counters {
    fetched: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    acknowledged: AtomicU64,
    requeued: AtomicU64,
    invalid: AtomicU64,
    settle_errors: AtomicU64,
    touched: AtomicU64,
    fetch_errors: AtomicU64,
    returned_on_stop: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ConsumerStats {
        ConsumerStats {
            fetched: self.fetched.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            failed: self.failed.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            acknowledged: self.acknowledged.load(Relaxed),
            requeued: self.requeued.load(Relaxed),
            invalid: self.invalid.load(Relaxed),
            settle_errors: self.settle_errors.load(Relaxed),
            touched: self.touched.load(Relaxed),
            fetch_errors: self.fetch_errors.load(Relaxed),
            returned_on_stop: self.returned_on_stop.load(Relaxed),
        }
    }

    fn settled(&self, result: Result<Settled, Error>, ok: &AtomicU64) {
        match result {
            Ok(Settled::Ok) => ok.fetch_add(1, Relaxed),
            Ok(Settled::Invalid) => self.invalid.fetch_add(1, Relaxed),
            Err(_) => self.settle_errors.fetch_add(1, Relaxed),
        };
    }
}

impl Consumer {
    /// A builder for a consumer of `queue`: a [`Queue`] or a
    /// [`PartitionedQueue`].
    pub fn builder(queue: impl Into<ConsumerSource>) -> ConsumerBuilder {
        ConsumerBuilder {
            source: queue.into(),
            max_in_flight: 16,
            fetch_max: 100,
            wait: Duration::from_secs(1),
            requeue_backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(60),
            },
            lease_ttl: None,
            heartbeat: 0.5,
            stop_timeout: Duration::from_secs(10),
            error_backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
        }
    }

    /// What it has done so far.
    pub fn stats(&self) -> ConsumerStats {
        self.counters.snapshot()
    }

    /// Stops gracefully (see the module docs) and answers what it did. On
    /// return, every message it fetched is acknowledged or requeued,
    /// except where the server could not be reached (`settle_errors`).
    pub async fn stop(mut self) -> ConsumerStats {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let stop_timeout = self.stop_timeout;
            tokio::pin!(task);
            tokio::select! {
                _ = &mut task => {}
                () = tokio::time::sleep(stop_timeout) => {
                    let _ = self.abandon.send(true);
                    let _ = task.await;
                }
            }
        }
        self.counters.snapshot()
    }

    /// Stops at once, as a crash would: nothing is settled, and its leases
    /// expire. For tests of what a crash does; use [`Consumer::stop`].
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the fetch loop and the handler tasks share.
struct Shared {
    source: ConsumerSource,
    config: ConsumerBuilder,
    counters: Arc<Counters>,
    /// The lease TTL, once known.
    ttl: tokio::sync::OnceCell<Option<Duration>>,
    /// Cleared when the server turns out not to know the batch settle
    /// routes (a part-1 server: `404`/`405`); settlements go one by one.
    batches: AtomicBool,
}

impl Shared {
    /// The lease TTL, read from `queue` (a partition's settings stand
    /// for all of them: a partitioned queue's partitions are set alike).
    async fn ttl(&self, queue: &Queue) -> Option<Duration> {
        *self
            .ttl
            .get_or_init(|| async {
                match queue.info().await {
                    Ok(info) => Some(Duration::from_millis(info.ttl_ms)),
                    Err(error) => {
                        tracing::warn!(
                            queue = queue.name(),
                            "no heartbeat: cannot read the queue's TTL: {error}"
                        );
                        None
                    }
                }
            })
            .await
    }
}

/// One message's partition (if any), id and permit, on its way to the
/// settler.
type Ack = (Option<u32>, u64, OwnedSemaphorePermit);

async fn fetch_loop<H, F, E>(
    shared: Arc<Shared>,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
    abandon: watch::Receiver<bool>,
) where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let config = &shared.config;
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let (acks, ack_rx) = mpsc::unbounded_channel::<Ack>();
    let settler = tokio::spawn(settle_acks(shared.clone(), ack_rx));
    let mut handlers = JoinSet::new();
    let mut batch = Vec::with_capacity(config.fetch_max);
    let mut fetch_failures = 0u32;
    loop {
        // Reap finished handler tasks so the set does not grow.
        while handlers.try_join_next().is_some() {}
        let mut held = tokio::select! {
            biased;
            () = wait_until_set(&mut stop) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        while held.num_permits() < config.fetch_max {
            match permits.clone().try_acquire_owned() {
                Ok(more) => held.merge(more),
                Err(_) => break,
            }
        }
        let n = held.num_permits();
        batch.clear();
        // Not raced against the stop signal: cutting a fetch could lose
        // an answer that carries a lease.
        let fetched = match &shared.source {
            ConsumerSource::Queue(queue) if n == 1 => queue
                .fetch(Some(config.wait))
                .await
                .map(|d| batch.extend(d)),
            ConsumerSource::Queue(queue) => queue
                .fetch_batch_into(n, Some(config.wait), &mut batch)
                .await
                .map(drop),
            // Always `?max=`, as the SPEC's partitioned fetch says.
            ConsumerSource::Partitioned(queue) => queue
                .fetch_batch_into(n, Some(config.wait), &mut batch)
                .await
                .map(drop),
        };
        if let Err(error) = fetched {
            shared.counters.fetch_errors.fetch_add(1, Relaxed);
            fetch_failures += 1;
            tracing::warn!(queue = shared.source.name(), "fetch failed: {error}");
            drop(held);
            tokio::select! {
                () = wait_until_set(&mut stop) => break,
                () = tokio::time::sleep(config.error_backoff.jittered(fetch_failures)) => {}
            }
            continue;
        }
        fetch_failures = 0;
        shared
            .counters
            .fetched
            .fetch_add(batch.len() as u64, Relaxed);
        if *stop.borrow() {
            // Fetched after the stop began: give them back unhandled.
            return_unhandled(&shared, &batch).await;
            break;
        }
        // `held` has n permits, one per delivery; the spare ones drop with
        // it. A server that answered more than n (it must not) gets the
        // surplus back at once rather than leased and left to expire.
        let surplus = batch.len().saturating_sub(n);
        let extra: Vec<Delivery> = batch.drain(batch.len() - surplus..).collect();
        for delivery in batch.drain(..) {
            let Some(permit) = held.split(1) else {
                break;
            };
            handlers.spawn(handle_one(
                shared.clone(),
                handler.clone(),
                delivery,
                permit,
                acks.clone(),
                abandon.clone(),
            ));
        }
        if !extra.is_empty() {
            settle_grouped(
                &shared,
                Settle::Requeue,
                extra.iter().map(|d| (d.partition, d.id)).collect(),
            )
            .await;
        }
    }
    // Running handlers finish (or are abandoned by `stop`); then the
    // settler drains the acknowledgements they queued.
    while handlers.join_next().await.is_some() {}
    drop(acks);
    let _ = settler.await;
}

/// Returns once the flag in `rx` is set (or its sender is gone, which
/// `Consumer::drop` aborting us makes moot).
async fn wait_until_set(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|set| *set).await;
}

/// Which settlement [`settle_many`] makes.
#[derive(Clone, Copy)]
enum Settle {
    Acknowledge,
    Requeue,
}

/// Settles `(partition, id)` pairs: one [`settle_many`] per partition.
async fn settle_grouped(shared: &Shared, kind: Settle, mut items: Vec<(Option<u32>, u64)>) {
    // Stable: each partition's ids keep their order.
    items.sort_by_key(|(partition, _)| *partition);
    let mut ids = Vec::with_capacity(items.len());
    for group in items.chunk_by(|a, b| a.0 == b.0) {
        ids.clear();
        ids.extend(group.iter().map(|(_, id)| *id));
        settle_many(shared, kind, group[0].0, &ids).await;
    }
}

/// Acknowledges or requeues (at once) `ids` of `partition` (`None`: the
/// one queue): in one batch request, or one by one for a single id or a
/// server without batches. Counts the results.
async fn settle_many(shared: &Shared, kind: Settle, partition: Option<u32>, ids: &[u64]) {
    let queue = shared.source.queue_for(partition);
    let counters = &shared.counters;
    let ok = match kind {
        Settle::Acknowledge => &counters.acknowledged,
        Settle::Requeue => &counters.requeued,
    };
    if ids.len() > 1 && shared.batches.load(Relaxed) {
        let result = match kind {
            Settle::Acknowledge => queue.acknowledge_batch(ids).await,
            Settle::Requeue => queue.requeue_batch(ids, None).await,
        };
        match result {
            Ok(results) => {
                for result in results {
                    counters.settled(Ok(result), ok);
                }
                return;
            }
            Err(error) if matches!(error.code(), Some(Code::NotFound | Code::MethodNotAllowed)) => {
                tracing::info!("the server has no batch settlements; settling one by one");
                shared.batches.store(false, Relaxed);
            }
            Err(error) => {
                tracing::warn!("batch settlement failed: {error}");
                counters.settle_errors.fetch_add(ids.len() as u64, Relaxed);
                return;
            }
        }
    }
    for &id in ids {
        let result = match kind {
            Settle::Acknowledge => queue.acknowledge(id).await,
            Settle::Requeue => queue.requeue(id, None).await,
        };
        counters.settled(single_result(result), ok);
    }
}

/// Requeues deliveries that will not be handled, at once.
async fn return_unhandled(shared: &Shared, batch: &[Delivery]) {
    shared
        .counters
        .returned_on_stop
        .fetch_add(batch.len() as u64, Relaxed);
    let items = batch.iter().map(|d| (d.partition, d.id)).collect();
    settle_grouped(shared, Settle::Requeue, items).await;
}

/// A single settlement's answer as a batch entry's: `invalid_id` is
/// [`Settled::Invalid`].
fn single_result(result: Result<(), Error>) -> Result<Settled, Error> {
    match result {
        Ok(()) => Ok(Settled::Ok),
        Err(error) if error.is(&crate::error::Code::InvalidId) => Ok(Settled::Invalid),
        Err(error) => Err(error),
    }
}

/// A handler's task, aborted if its `handle_one` is dropped (the consumer
/// was dropped or aborted: a crash), so that no handler runs on orphaned.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a handler ended.
enum Outcome {
    Succeeded,
    Failed,
    /// Cut short by a stop's timeout.
    Abandoned,
}

async fn handle_one<H, F, E>(
    shared: Arc<Shared>,
    handler: Arc<H>,
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
    acks: mpsc::UnboundedSender<Ack>,
    mut abandon: watch::Receiver<bool>,
) where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let id = delivery.id;
    let attempt = delivery.attempt;
    let partition = delivery.partition;
    let queue = shared.source.queue_for(partition);
    let counters = &shared.counters;
    // A task of its own, so that a panic is caught as a JoinError and the
    // message is requeued rather than left to expire.
    let mut work = AbortOnDrop(tokio::spawn(handler(delivery)));
    let heartbeat = match shared.config.heartbeat {
        f if f > 0.0 => shared.ttl(queue).await.map(|ttl| ttl.mul_f64(f)),
        _ => None,
    };
    let mut beats =
        heartbeat.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let outcome = loop {
        tokio::select! {
            joined = &mut work.0 => break match joined {
                Ok(Ok(())) => {
                    counters.succeeded.fetch_add(1, Relaxed);
                    Outcome::Succeeded
                }
                Ok(Err(error)) => {
                    counters.failed.fetch_add(1, Relaxed);
                    tracing::debug!(id, attempt, "handler failed: {error}");
                    Outcome::Failed
                }
                Err(join) => {
                    counters.panicked.fetch_add(1, Relaxed);
                    tracing::warn!(id, attempt, "handler panicked: {join}");
                    Outcome::Failed
                }
            },
            () = wait_until_set(&mut abandon) => {
                work.0.abort();
                counters.returned_on_stop.fetch_add(1, Relaxed);
                break Outcome::Abandoned;
            }
            _ = async { beats.as_mut().expect("guarded").tick().await }, if beats.is_some() => {
                match queue.touch(id, None).await {
                    Ok(()) => {
                        counters.touched.fetch_add(1, Relaxed);
                    }
                    Err(error) => {
                        // The lease is gone (expired) or the server
                        // unreachable: the handler runs on; its
                        // settlement will tell.
                        tracing::warn!(id, "touch failed: {error}");
                        beats = None;
                    }
                }
            }
        }
    };
    match outcome {
        Outcome::Succeeded => {
            // The settler answers and drops the permit. If it is gone
            // (the consumer task was aborted), the lease expires.
            let _ = acks.send((partition, id, permit));
        }
        Outcome::Failed => {
            let delay = shared.config.requeue_backoff.delay(attempt.max(1));
            let delay = (!delay.is_zero()).then_some(delay);
            let result = queue.requeue(id, delay).await;
            counters.settled(single_result(result), &counters.requeued);
            drop(permit);
        }
        Outcome::Abandoned => {
            let result = queue.requeue(id, None).await;
            counters.settled(single_result(result), &counters.requeued);
            drop(permit);
        }
    }
}

/// Gathers acknowledgements into batches: whatever is queued when the
/// previous request returns goes in the next one.
async fn settle_acks(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Ack>) {
    let max = shared.config.fetch_max.max(1);
    let mut pending: Vec<Ack> = Vec::with_capacity(max);
    let mut ids: Vec<u64> = Vec::with_capacity(max);
    while rx.recv_many(&mut pending, max).await > 0 {
        if matches!(shared.source, ConsumerSource::Queue(_)) {
            ids.clear();
            ids.extend(pending.iter().map(|(_, id, _)| *id));
            settle_many(&shared, Settle::Acknowledge, None, &ids).await;
        } else {
            let items = pending.iter().map(|(k, id, _)| (*k, *id)).collect();
            settle_grouped(&shared, Settle::Acknowledge, items).await;
        }
        // Dropping the permits frees their slots for the fetch loop.
        pending.clear();
    }
}
