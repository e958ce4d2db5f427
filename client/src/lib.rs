//! The Rust client of ubroker: a typed async API for every route of the
//! contract (SPEC parts 1 and 2), retries decided by the server's error
//! code, and a [`Consumer`] that runs an async handler over a queue with
//! bounded concurrency, batch fetches, a lease heartbeat and a graceful
//! stop.
//!
//! # Layout
//!
//! * `client`: [`Client`] (the bearer token, the retry loop, `/queues`,
//!   `/stats`, `/metrics`, `/health`); `client/queue`: [`Queue`] (publish,
//!   fetch, acknowledge, requeue, touch, single and batch; queue settings,
//!   delete, redrive).
//! * `ubroker-proto` (a dependency): the contract's codes, name rule and
//!   wire types, which `error` and `model` re-export or map.
//! * `transport`: the two ways to the broker: hyper-util's pooled client
//!   (the default) or one dedicated connection.
//! * `model`: the bodies as Rust types (the shared ones are
//!   `ubroker-proto`'s), and how each answer is decoded (fetched bodies are
//!   slices of the response buffer, not copies).
//! * `error`: [`Error`], one enum for every failure, keeping the server's
//!   status, [`Code`] and message; [`Result`].
//! * `retry`: [`RetryPolicy`] and [`Backoff`]: which failures are sent
//!   again, and when.
//! * `partitioned`: [`PartitionedQueue`], one queue spread over a
//!   cluster's partitions `Q--0` ... `Q--{P-1}`: publishes in turn,
//!   skipping unavailable partitions; fetches one partition at a time;
//!   settles where each delivery came from.
//! * `consumer`: [`Consumer`], the handler loop (over a [`Queue`] or a
//!   [`PartitionedQueue`]), and [`ConsumerStats`].
//! * `dedup`: [`Dedup`], a bounded set of finished `message_id`s.
//!
//! # Example
//!
//! A worker that publishes two messages and handles them (run against a
//! real broker by `examples/worker.rs`, which CI runs):
//!
//! ```no_run
//! use std::time::Duration;
//! use ubroker_client::{Client, Consumer};
//!
//! # async fn run() -> ubroker_client::Result<()> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let jobs = client.queue("jobs")?;
//! jobs.publish("resize image 42").await?;
//! jobs.publish_batch(["send mail 1", "send mail 2"]).await?;
//!
//! let consumer = Consumer::builder(jobs.clone())
//!     .max_in_flight(8)
//!     .run(|delivery| async move {
//!         println!("attempt {}: {}", delivery.attempt, delivery.text());
//!         Ok::<(), String>(()) // Err(..) requeues it with a backoff
//!     });
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let stats = consumer.stop().await; // nothing is left leased
//! println!("{} acknowledged", stats.acknowledged);
//! # Ok(()) }
//! ```
//!
//! # Retries
//!
//! Every call goes through one loop ([`Client::call`]) that retries what
//! the [`RetryPolicy`] allows, with exponential backoff and jitter, and
//! waits what a `Retry-After` header asks, up to a cap:
//!
//! * `queue_full`, `too_many_connections`, `shutting_down` and (in a
//!   cluster) `unavailable` answers, and failures to connect, are retried
//!   for every call: the server changed nothing (or never saw the
//!   request). A [`PartitionedQueue`] sends a publish or fetch that got
//!   `unavailable`, `shutting_down` or no connection to another partition
//!   at once instead.
//! * `too_many_queues`, `log_failed`, `disk_full` and every `4xx` about
//!   the request are never retried.
//! * A connection lost after the request was sent is retried for fetches,
//!   settlements and reads. A publish is then retried only with
//!   [`RetryPolicy::retry_ambiguous_publishes`]: **a retried publish may
//!   be published twice** (the first send may have reached the broker),
//!   which at-least-once delivery allows; the copy has a `message_id` of
//!   its own.
//! * Settlements are retried freely: a second acknowledge of an id is
//!   `invalid`, never a second effect. So an acknowledge retried after a
//!   lost answer may report `invalid_id` although the first one worked.
//!
//! # Delivery
//!
//! ubroker delivers at least once: a message whose lease expires, or whose
//! acknowledgement is lost, comes back. Handlers should be idempotent, or
//! check [`Delivery::message_id`] against a [`Dedup`].

mod client;
mod consumer;
mod dedup;
mod error;
mod model;
mod partitioned;
mod retry;
mod transport;

pub use client::{Call, Client, ClientBuilder, Queue, Reply};
pub use consumer::{Consumer, ConsumerBuilder, ConsumerSource, ConsumerStats};
pub use dedup::Dedup;
pub use error::{ApiError, Code, Error, Result};
pub use model::{
    DeadLetter, Delivery, EncodedBatch, EncodedMessage, Health, Message, QueueInfo, QueueSettings,
    QueueStats, Settled, Stats,
};
pub use partitioned::{partition_name, PartitionedQueue, PartitionedQueueBuilder, MAX_PARTITIONS};
pub use retry::{Backoff, Idempotence, RetryPolicy};
