//! [`Queue`]: one queue of a broker, every route under `/queues/{queue}/`
//! (publish, fetch, acknowledge, requeue, touch, single and batch, and the
//! queue's administration), each building a [`Call`] for [`Client::call`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Uri};

use super::{Call, Client};
use crate::error::{Code, Error, Result};
use crate::model::{
    decode, decode_count, decode_deliveries, decode_delivery, decode_results, ids_body, millis,
    single_publish_body, Delivery, EncodedBatch, EncodedMessage, Message, QueueInfo, QueueSettings,
    Settled,
};
use crate::retry::Idempotence;

/// One queue of a broker: every route under `/queues/{queue}/`. Cheap to
/// clone. Obtained from [`Client::queue`] or [`Client::default_queue`].
#[derive(Debug, Clone)]
pub struct Queue {
    pub(super) client: Client,
    // Shared, so that a clone (one per consumer task) allocates nothing.
    pub(super) name: Arc<str>,
    /// `/queues/{name}`, or empty for the unprefixed routes.
    pub(super) prefix: Arc<str>,
    /// `.../publish`, parsed once.
    pub(super) publish: Uri,
    /// Set on the partitions of a [`crate::PartitionedQueue`]: publishes
    /// and fetches fail fast where another partition could serve them.
    pub(super) failover: bool,
}

/// Appends `?name=value` or `&name=value` to `path`.
pub(super) fn query(path: &mut String, name: &str, value: u64) {
    let sep = if path.contains('?') { '&' } else { '?' };
    // Writing into a String cannot fail.
    let _ = write!(path, "{sep}{name}={value}");
}

fn is_timeout(error: &Error) -> bool {
    error.is(&Code::Timeout)
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it calls through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn publish_call(&self) -> Call {
        Call {
            method: Method::POST,
            uri: self.publish.clone(),
            body: Bytes::new(),
            idempotence: Idempotence::Publish,
            retry: true,
            failover: self.failover,
        }
    }

    /// The whole request target of `route` under this queue, base URL
    /// included, with room for an id and a query: one allocation per
    /// call, parsed by [`Client::prepare_target`].
    fn path(&self, route: &str) -> String {
        let base = &self.client.inner.base;
        let mut path = String::with_capacity(base.len() + self.prefix.len() + route.len() + 32);
        path.push_str(base);
        path.push_str(&self.prefix);
        path.push_str(route);
        path
    }

    /// `POST .../publish`. Retried only after answers that mean nothing
    /// was published, or, with [`RetryPolicy::retry_ambiguous_publishes`],
    /// after a lost answer too (then it may be published twice).
    pub async fn publish(&self, body: &str) -> Result<()> {
        self.publish_message(Message::new(body)).await
    }

    /// `POST .../publish?delay=<ms>`.
    pub async fn publish_delayed(&self, body: &str, delay: Duration) -> Result<()> {
        self.publish_message(Message::delayed(body, delay)).await
    }

    async fn publish_message(&self, message: Message<'_>) -> Result<()> {
        let call = match message.delay {
            // The common case, on a URI parsed when the queue was made.
            None => self.publish_call(),
            Some(delay) => {
                let mut path = self.path("/publish");
                query(&mut path, "delay", millis(delay));
                let mut call =
                    self.client
                        .prepare_target(Method::POST, path, Idempotence::Publish)?;
                call.failover = self.failover;
                call
            }
        }
        .body(single_publish_body(message.body)?);
        self.client.call(&call).await.map(drop)
    }

    /// `POST .../publish` with `{"messages": [...]}`: all or nothing;
    /// answers how many were published. Each message may carry its own
    /// delay.
    pub async fn publish_batch<'m, I, M>(&self, messages: I) -> Result<u64>
    where
        I: IntoIterator<Item = M>,
        M: Into<Message<'m>>,
    {
        self.publish_encoded(&EncodedBatch::new(messages)?).await
    }

    /// Publishes one message encoded beforehand (`{"body": ...}`, sent
    /// again without copying), on the single route.
    pub async fn publish_encoded_message(&self, message: &EncodedMessage) -> Result<()> {
        let call = self.publish_call().body(message.body().clone());
        self.client.call(&call).await.map(drop)
    }

    /// Publishes a batch encoded beforehand (sent again without copying).
    pub async fn publish_encoded(&self, batch: &EncodedBatch) -> Result<u64> {
        let call = self.publish_call().body(batch.body().clone());
        let reply = self.client.call(&call).await?;
        decode_count(&reply.body, "published")
    }

    fn fetch_call(&self, max: Option<usize>, wait: Option<Duration>) -> Result<Call> {
        let mut path = self.path("/fetch");
        if let Some(max) = max {
            query(&mut path, "max", max as u64);
        }
        if let Some(wait) = wait {
            query(&mut path, "wait", millis(wait));
        }
        let mut call = self
            .client
            .prepare_target(Method::GET, path, Idempotence::Safe)?;
        call.failover = self.failover;
        Ok(call)
    }

    /// `GET .../fetch[?wait=<ms>]`: the head of the queue, now leased, or
    /// `None` if nothing arrived within the wait (`None`: the server's
    /// `--fetch-timeout`). A fetch whose answer is lost in transit is
    /// retried; the lease it may have taken expires after the TTL and the
    /// message is delivered again (at least once).
    pub async fn fetch(&self, wait: Option<Duration>) -> Result<Option<Delivery>> {
        match self.client.call(&self.fetch_call(None, wait)?).await {
            Ok(reply) => decode_delivery(&reply.body).map(Some),
            Err(error) if is_timeout(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET .../fetch?max=<n>[&wait=<ms>]`: 1 to `max` deliveries, as soon
    /// as one is ready; empty if none arrived within the wait.
    pub async fn fetch_batch(&self, max: usize, wait: Option<Duration>) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        self.fetch_batch_into(max, wait, &mut out).await?;
        Ok(out)
    }

    /// [`Queue::fetch_batch`] appending to `out`; answers how many were
    /// appended.
    pub async fn fetch_batch_into(
        &self,
        max: usize,
        wait: Option<Duration>,
        out: &mut Vec<Delivery>,
    ) -> Result<usize> {
        if max == 0 {
            return Err(Error::InvalidArgument(
                "fetch max must be at least 1".into(),
            ));
        }
        match self.client.call(&self.fetch_call(Some(max), wait)?).await {
            Ok(reply) => {
                let before = out.len();
                decode_deliveries(&reply.body, out)?;
                Ok(out.len() - before)
            }
            Err(error) if is_timeout(&error) => Ok(0),
            Err(error) => Err(error),
        }
    }

    async fn settle_one(&self, route: &str, id: u64, param: Option<(&str, u64)>) -> Result<()> {
        let mut path = self.path(route);
        let _ = write!(path, "/{id}");
        if let Some((name, value)) = param {
            query(&mut path, name, value);
        }
        // Settlements are retried freely: a second acknowledge or requeue
        // of the same id is `invalid`, never a second effect.
        let call = self
            .client
            .prepare_target(Method::POST, path, Idempotence::Safe)?;
        self.client.call(&call).await.map(drop)
    }

    async fn settle_batch(
        &self,
        route: &str,
        ids: &[u64],
        param: Option<(&str, u64)>,
    ) -> Result<Vec<Settled>> {
        let mut path = self.path(route);
        if let Some((name, value)) = param {
            query(&mut path, name, value);
        }
        let call = self
            .client
            .prepare_target(Method::POST, path, Idempotence::Safe)?
            .body(ids_body(ids)?);
        let reply = self.client.call(&call).await?;
        let results = decode_results(&reply.body)?;
        if results.len() != ids.len() {
            return Err(Error::Decode {
                route: "settle batch",
                source: serde::de::Error::invalid_length(results.len(), &"one result per id"),
            });
        }
        Ok(results)
    }

    /// `POST .../acknowledge/{id}`: the message is gone for good. A retry
    /// after a lost answer may see `invalid_id` for an acknowledge that
    /// did succeed.
    pub async fn acknowledge(&self, id: u64) -> Result<()> {
        self.settle_one("/acknowledge", id, None).await
    }

    /// `POST .../requeue/{id}[?delay=<ms>]`: back to the tail, after
    /// `delay` if given.
    pub async fn requeue(&self, id: u64, delay: Option<Duration>) -> Result<()> {
        self.settle_one("/requeue", id, delay.map(|d| ("delay", millis(d))))
            .await
    }

    /// `POST .../touch/{id}[?ttl=<ms>]`: the lease now ends `ttl` from now
    /// (default: the queue's TTL).
    pub async fn touch(&self, id: u64, ttl: Option<Duration>) -> Result<()> {
        self.settle_one("/touch", id, ttl.map(|d| ("ttl", millis(d))))
            .await
    }

    /// `POST .../acknowledge` with `{"ids": [...]}`: one result per id.
    pub async fn acknowledge_batch(&self, ids: &[u64]) -> Result<Vec<Settled>> {
        self.settle_batch("/acknowledge", ids, None).await
    }

    /// `POST .../requeue[?delay=<ms>]` with `{"ids": [...]}`.
    pub async fn requeue_batch(
        &self,
        ids: &[u64],
        delay: Option<Duration>,
    ) -> Result<Vec<Settled>> {
        self.settle_batch("/requeue", ids, delay.map(|d| ("delay", millis(d))))
            .await
    }

    /// `POST .../touch[?ttl=<ms>]` with `{"ids": [...]}`.
    pub async fn touch_batch(&self, ids: &[u64], ttl: Option<Duration>) -> Result<Vec<Settled>> {
        self.settle_batch("/touch", ids, ttl.map(|d| ("ttl", millis(d))))
            .await
    }

    fn admin_path(&self) -> String {
        format!("/queues/{}", self.name)
    }

    /// `PUT /queues/{queue}`: creates the queue or changes its settings.
    pub async fn put(&self, settings: QueueSettings) -> Result<QueueInfo> {
        let body = serde_json::to_vec(&settings)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode settings: {e}")))?;
        let call = self
            .client
            .prepare(Method::PUT, &self.admin_path(), Idempotence::Safe)?
            .body(Bytes::from(body));
        let reply = self.client.call(&call).await?;
        decode(&reply.body, "put queue")
    }

    /// `GET /queues/{queue}`: `Err` with code `not_found` if it does not
    /// exist.
    pub async fn info(&self) -> Result<QueueInfo> {
        let call = self
            .client
            .prepare(Method::GET, &self.admin_path(), Idempotence::Safe)?;
        let reply = self.client.call(&call).await?;
        decode(&reply.body, "get queue")
    }

    /// `DELETE /queues/{queue}`: drops it with all its messages; answers
    /// how many. Retried like the rest: a retry after a lost answer gets
    /// `not_found`.
    pub async fn delete(&self) -> Result<u64> {
        let call = self
            .client
            .prepare(Method::DELETE, &self.admin_path(), Idempotence::Safe)?;
        let reply = self.client.call(&call).await?;
        decode_count(&reply.body, "deleted")
    }

    /// `POST /queues/{queue}.dead/redrive` (call it on the `.dead` queue):
    /// moves its ready messages back to the source queue; answers how many.
    pub async fn redrive(&self) -> Result<u64> {
        let call = self.client.prepare(
            Method::POST,
            &format!("{}/redrive", self.admin_path()),
            Idempotence::Safe,
        )?;
        let reply = self.client.call(&call).await?;
        decode_count(&reply.body, "moved")
    }

    /// This queue as a partition of a [`crate::PartitionedQueue`]:
    /// publishes and fetches fail fast where another partition could
    /// serve them.
    pub(crate) fn into_partition(mut self) -> Queue {
        self.failover = true;
        self
    }

    /// The dead-letter queue of this queue (`{name}.dead`).
    pub fn dead_letters(&self) -> Result<Queue> {
        self.client.queue(&format!("{}.dead", self.name))
    }
}
