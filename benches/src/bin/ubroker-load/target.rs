//! A target broker and one connection to it, through `ubroker-client`.
//!
//! [`Target`] checks a base URL once and makes [`Connection`]s. A
//! [`Connection`] is a `ubroker_client::Client` of its own on a dedicated
//! connection (`ClientBuilder::dedicated_connection`), never retrying:
//! each task of the load generator is exactly one keep-alive TCP
//! connection (`TCP_NODELAY`) with one request in flight, never pooled or
//! pipelined, so the number of tasks is the concurrency the target sees.
//! A failure is counted, never hidden by a retry; the connection is
//! reopened on the next request.
//!
//! The requests are the client's, on the original unprefixed routes
//! (`/publish`, `/fetch`, `/acknowledge/{id}`), so the bare hyper server
//! gets the same request bytes as the broker. Its answer to a fetch is
//! `{}`, which is no delivery: single fetches are sent through
//! [`ubroker_client::Client::call`] and read leniently ([`delivery_id`]),
//! and the caller acknowledges id 0, so both targets see the same
//! request sequence.
//!
//! With `--partitions P` a connection also holds a
//! [`PartitionedQueue`] of the queue `load` on the same connection: the
//! run then publishes, fetches and acknowledges through it (one
//! keep-alive connection to the cluster's proxy, which routes each
//! request to the partition's node).

use std::time::Duration;

use hyper::Method;
use ubroker_client::{Call, Client, Idempotence, PartitionedQueue, Queue, RetryPolicy};

/// The logical queue `--partitions` spreads.
pub const PARTITIONED_QUEUE: &str = "load";

/// A broker reachable at a base URL.
#[derive(Debug)]
pub struct Target {
    /// The base URL as given, for reports.
    pub url: String,
    auth_token: Option<String>,
    long_poll_ms: u64,
    partitions: Option<u32>,
}

impl Target {
    /// Checks `url` (`http://host[:port][/prefix]`); `long_poll_ms` is the
    /// `?wait=` of the mixed mode's fetches; `auth_token`, if any, goes into
    /// an `Authorization: Bearer` header on every request.
    pub fn parse(url: &str, long_poll_ms: u64, auth_token: Option<&str>) -> Result<Target, String> {
        let target = Target {
            url: url.to_owned(),
            auth_token: auth_token.map(str::to_owned),
            long_poll_ms,
            partitions: None,
        };
        target.connection().map_err(|e| e.to_string())?;
        Ok(target)
    }

    /// Sends the load through a partitioned queue of `partitions`
    /// partitions (`None`: the queue `default`).
    pub fn with_partitions(mut self, partitions: Option<u32>) -> Result<Target, String> {
        self.partitions = partitions;
        self.connection().map_err(|e| e.to_string())?;
        Ok(self)
    }

    /// A new connection (made on its first request).
    pub fn connection(&self) -> ubroker_client::Result<Connection> {
        let mut builder = Client::builder(&self.url)
            .retry(RetryPolicy::never())
            .dedicated_connection(true);
        if let Some(token) = &self.auth_token {
            builder = builder.token(token.clone());
        }
        let client = builder.build()?;
        let queue = client.default_queue();
        let fetch = |wait: u64| {
            client
                .prepare(
                    Method::GET,
                    &format!("/fetch?wait={wait}"),
                    Idempotence::Safe,
                )
                .map(|call| call.retry(false))
        };
        let partitioned = match self.partitions {
            Some(p) => Some(client.partitioned(PARTITIONED_QUEUE, p)?),
            None => None,
        };
        Ok(Connection {
            partitioned,
            fetch_now: fetch(0)?,
            fetch_long_poll: fetch(self.long_poll_ms)?,
            long_poll: Duration::from_millis(self.long_poll_ms),
            client,
            queue,
        })
    }
}

/// One client with one keep-alive connection, and the calls it repeats.
pub struct Connection {
    pub client: Client,
    /// The queue `default` on the unprefixed routes.
    pub queue: Queue,
    /// With `--partitions`, the queue the run uses instead of `queue`.
    pub partitioned: Option<PartitionedQueue>,
    fetch_now: Call,
    fetch_long_poll: Call,
    long_poll: Duration,
}

impl Connection {
    /// `GET /fetch?wait=0` or, with `long_poll`, `GET /fetch?wait=<ms>`,
    /// answered as raw bytes (see the module docs).
    pub fn fetch_call(&self, long_poll: bool) -> &Call {
        if long_poll {
            &self.fetch_long_poll
        } else {
            &self.fetch_now
        }
    }

    /// The `wait` of a fetch.
    pub fn wait(&self, long_poll: bool) -> Duration {
        if long_poll {
            self.long_poll
        } else {
            Duration::ZERO
        }
    }
}

/// The delivery id of a `GET /fetch` response body, if it has one.
pub fn delivery_id(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Delivery {
        id: Option<u64>,
    }
    serde_json::from_slice::<Delivery>(body).ok()?.id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        let t = Target::parse("http://127.0.0.1:8080", 1000, None).unwrap();
        let c = t.connection().unwrap();
        assert_eq!(c.fetch_call(false).uri(), "/fetch?wait=0");
        assert_eq!(c.fetch_call(true).uri(), "/fetch?wait=1000");
        assert!(Target::parse("http://localhost/broker/", 5, Some("s3cret")).is_ok());
        let t = t.with_partitions(Some(3)).unwrap();
        let names: Vec<String> = t
            .connection()
            .unwrap()
            .partitioned
            .unwrap()
            .partitions()
            .iter()
            .map(|q| q.name().to_owned())
            .collect();
        assert_eq!(names, ["load--0", "load--1", "load--2"]);
        assert!(Target::parse("http://localhost/", 5, Some("bad\ntoken")).is_err());
        for bad in [
            "https://x:1",
            "127.0.0.1:8080",
            "http://x:1/?a=b",
            "not a url",
        ] {
            assert!(Target::parse(bad, 0, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn delivery_ids_are_read_from_fetch_responses() {
        assert_eq!(
            delivery_id(br#"{"message":{"body":"\"id\":3"},"id":42}"#),
            Some(42)
        );
        assert_eq!(delivery_id(b"{}"), None);
        assert_eq!(delivery_id(b"not json"), None);
    }
}
