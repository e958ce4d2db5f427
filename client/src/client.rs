//! [`Client`] (the connection pool, the token, the retry policy and the
//! broker-wide routes) and [`Queue`] (every route under
//! `/queues/{queue}/`): one typed method per route of SPEC parts 1 and 2.
//!
//! Requests go through a pooled client by default, or one dedicated
//! connection (`transport`).
//!
//! Every method builds a [`Call`] (method, path, body, what a second send
//! could do) and hands it to [`Client::call`], the one place that sends,
//! reads the answer, turns error answers into [`Error::Api`] and retries
//! as the [`RetryPolicy`] says.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use serde::Deserialize;

use crate::error::{ApiError, Code, Error, Result};
use crate::model::{decode, Health, QueueInfo, Stats};
use crate::retry::{Idempotence, RetryPolicy};
use crate::transport::Transport;

mod queue;
pub use queue::Queue;

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    retry: RetryPolicy,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    connect_timeout: Option<Duration>,
    dedicated: bool,
}

impl ClientBuilder {
    /// The bearer token of a broker started with `--auth-token`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How failed calls are retried (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Idle keep-alive connections kept for reuse (default 64).
    pub fn max_idle_connections(mut self, n: usize) -> Self {
        self.max_idle_per_host = n;
        self
    }

    /// How long an idle connection is kept (default 30 s; the broker's
    /// `--idle-timeout` may close it sooner, which the pool survives).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// One dedicated connection instead of the pool: opened on the first
    /// call, reopened after a failure, one request at a time (clones take
    /// turns). Cheaper per request than the pool; for a fixed number of
    /// connections, one client each (a load generator does this).
    pub fn dedicated_connection(mut self, dedicated: bool) -> Self {
        self.dedicated = dedicated;
        self
    }

    /// A limit on connecting (default: none beyond the OS's).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Checks the URL and token and builds the client. Needs a tokio
    /// runtime only when calls are made.
    pub fn build(self) -> Result<Client> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("bad URL {:?}: {e}", self.url)))?;
        if uri.scheme_str() != Some("http") {
            return Err(Error::InvalidArgument(format!(
                "{}: only http:// URLs are supported",
                self.url
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::InvalidArgument(format!("{}: the URL needs a host", self.url)))?;
        if uri.query().is_some() {
            return Err(Error::InvalidArgument(format!(
                "{}: the base URL cannot have a query",
                self.url
            )));
        }
        // A path in the base URL prefixes every route (a broker behind a
        // reverse proxy's path).
        let base = format!("http://{authority}{}", uri.path().trim_end_matches('/'));
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| Error::InvalidArgument(format!("{}: bad host: {e}", self.url)))?;
        let authorization = match &self.token {
            Some(token) => Some(HeaderValue::from_str(&format!("Bearer {token}")).map_err(
                |_| Error::InvalidArgument("the token is not a valid header value".into()),
            )?),
            None => None,
        };
        let transport = if self.dedicated {
            let port = authority.port_u16().unwrap_or(80);
            Transport::dedicated(format!("{}:{port}", authority.host()), self.connect_timeout)
        } else {
            Transport::pooled(
                self.max_idle_per_host,
                self.idle_timeout,
                self.connect_timeout,
            )
        };
        // The pool routes on the absolute form; a dedicated connection
        // sends the origin form as is.
        let base = if transport.wants_origin_form() {
            uri.path().trim_end_matches('/').to_owned()
        } else {
            base
        };
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                base,
                host,
                authorization,
                retry: self.retry,
            }),
        })
    }
}

/// A handle on one broker: a pool of keep-alive HTTP/1.1 connections
/// (`TCP_NODELAY`), the bearer token and the retry policy. Cheap to clone;
/// clones share the pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    /// `http://host:port[/prefix]` (or only `[/prefix]` on a dedicated
    /// connection), without a trailing `/`.
    base: String,
    /// `host[:port]`, set on every request here: the pooled client would
    /// otherwise format it from the URI on every request.
    host: HeaderValue,
    authorization: Option<HeaderValue>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// One request as the client sends it, before retries.
#[derive(Debug, Clone)]
pub struct Call {
    method: Method,
    /// Parsed once, whatever the retries.
    uri: Uri,
    body: Bytes,
    idempotence: Idempotence,
    retry: bool,
    /// Return at once, without retrying, an error after which another
    /// node could take the request ([`Error::is_elsewhere`]): set by a
    /// partitioned queue's publishes and fetches, which move on to
    /// another partition instead.
    failover: bool,
}

impl Call {
    /// The request body.
    pub fn body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    /// Whether the retry policy applies at all (default: yes).
    pub fn retry(mut self, retry: bool) -> Self {
        self.retry = retry;
        self
    }

    /// The request target as sent (with the base URL's prefix).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// A `2xx` answer: status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Client {
    /// A client for the broker at `url` (`http://host:port`, optionally
    /// with a path prefix), with the default settings.
    pub fn new(url: &str) -> Result<Client> {
        Client::builder(url).build()
    }

    /// A builder for the broker at `url`.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            token: None,
            retry: RetryPolicy::default(),
            max_idle_per_host: 64,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: None,
            dedicated: false,
        }
    }

    /// The retry policy calls follow.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The queue `name` (`/queues/{name}/...`). The name is checked here as
    /// the server checks it (`^[A-Za-z0-9_-]{1,80}$`, optionally followed
    /// by `.dead`), so that no name can reach another path.
    pub fn queue(&self, name: &str) -> Result<Queue> {
        if !valid_queue_name(name) {
            return Err(Error::InvalidArgument(format!(
                "invalid queue name {name:?}"
            )));
        }
        let prefix = format!("/queues/{name}");
        let publish = self
            .prepare(
                Method::POST,
                &format!("{prefix}/publish"),
                Idempotence::Publish,
            )?
            .uri;
        Ok(Queue {
            client: self.clone(),
            name: name.into(),
            prefix: prefix.into(),
            publish,
            failover: false,
        })
    }

    /// The queue `default` through the original, unprefixed routes
    /// (`/publish`, `/fetch`, ...): the same queue as `queue("default")`,
    /// and the only form a part-1 broker (the original Go ubroker) knows.
    pub fn default_queue(&self) -> Queue {
        let publish = self
            .prepare(Method::POST, "/publish", Idempotence::Publish)
            .expect("a base URL that parsed, with /publish appended, parses")
            .uri;
        Queue {
            client: self.clone(),
            name: "default".into(),
            prefix: "".into(),
            publish,
            failover: false,
        }
    }

    /// `GET /queues`: every queue, sorted by name.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>> {
        #[derive(Deserialize)]
        struct Queues {
            queues: Vec<QueueInfo>,
        }
        let reply = self
            .call(&self.prepare(Method::GET, "/queues", Idempotence::Safe)?)
            .await?;
        Ok(decode::<Queues>(&reply.body, "queues")?.queues)
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Result<Stats> {
        let reply = self
            .call(&self.prepare(Method::GET, "/stats", Idempotence::Safe)?)
            .await?;
        decode(&reply.body, "stats")
    }

    /// `GET /metrics`: the Prometheus text, as the server wrote it.
    pub async fn metrics(&self) -> Result<String> {
        let reply = self
            .call(&self.prepare(Method::GET, "/metrics", Idempotence::Safe)?)
            .await?;
        String::from_utf8(reply.body.to_vec())
            .map_err(|e| Error::InvalidArgument(format!("metrics are not UTF-8: {e}")))
    }

    /// `GET /health`, not retried: a `503` is an answer here
    /// ([`Health::Unavailable`]), not an error.
    pub async fn health(&self) -> Result<Health> {
        let call = self
            .prepare(Method::GET, "/health", Idempotence::Safe)?
            .retry(false);
        match self.call(&call).await {
            Ok(_) => Ok(Health::Ok),
            Err(Error::Api(api)) if api.status == StatusCode::SERVICE_UNAVAILABLE => {
                Ok(Health::Unavailable(api.code))
            }
            Err(error) => Err(error),
        }
    }

    /// A call of `method` to `path` (from its first `/`, query included;
    /// the base URL's prefix goes in front), parsed once so that it can be
    /// sent many times. `idempotence` says what a second send could do.
    pub fn prepare(&self, method: Method, path: &str, idempotence: Idempotence) -> Result<Call> {
        let base = &self.inner.base;
        let mut uri = String::with_capacity(base.len() + path.len());
        uri.push_str(base);
        uri.push_str(path);
        let uri = Uri::try_from(uri)
            .map_err(|e| Error::InvalidArgument(format!("bad request path {path:?}: {e}")))?;
        Ok(Call {
            method,
            uri,
            body: Bytes::new(),
            idempotence,
            retry: true,
            failover: false,
        })
    }

    /// [`Client::prepare`] of a target that already starts with the base
    /// URL: parsed without another copy.
    fn prepare_target(
        &self,
        method: Method,
        target: String,
        idempotence: Idempotence,
    ) -> Result<Call> {
        let uri = Uri::try_from(target)
            .map_err(|e| Error::InvalidArgument(format!("bad request target: {e}")))?;
        Ok(Call {
            method,
            uri,
            body: Bytes::new(),
            idempotence,
            retry: true,
            failover: false,
        })
    }

    /// Sends `call`, retrying as the policy says; a `2xx` is a [`Reply`],
    /// anything else an error. The typed methods are built on this; it is
    /// public for what they do not cover (a load generator reading a
    /// server that answers `{}` to everything, for one).
    pub async fn call(&self, call: &Call) -> Result<Reply> {
        let inner = &*self.inner;
        let policy = &inner.retry;
        let mut retries = 0;
        loop {
            // Inline rather than a helper `async fn`: each level of nested
            // futures copies the whole call's state (see `transport`).
            // Built field by field: `Request::builder()` re-validates what
            // is known to be valid, on every request.
            let mut req = Request::new(Full::new(call.body.clone()));
            *req.method_mut() = call.method.clone();
            *req.uri_mut() = call.uri.clone();
            let headers = req.headers_mut();
            headers.insert(HOST, inner.host.clone());
            if !call.body.is_empty() {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            if let Some(authorization) = &inner.authorization {
                headers.insert(AUTHORIZATION, authorization.clone());
            }
            let error = match inner.transport.send(req).await {
                Ok(answer) if answer.status.is_success() => {
                    return Ok(Reply {
                        status: answer.status,
                        body: answer.body,
                    })
                }
                Ok(answer) => Error::Api(api_error(answer.status, &answer.headers, &answer.body)),
                Err(error) => error,
            };
            let wait = if call.retry && !(call.failover && error.is_elsewhere()) {
                policy.next_wait(&error, call.idempotence, retries)
            } else {
                None
            };
            let Some(wait) = wait else {
                return Err(error);
            };
            tracing::debug!(
                method = %call.method,
                uri = %call.uri,
                retry = retries + 1,
                wait_ms = wait.as_millis() as u64,
                "retrying after: {error}"
            );
            retries += 1;
            // Boxed: the timer is rare and large; unboxed it would be part
            // of every call's future.
            Box::pin(tokio::time::sleep(wait)).await;
        }
    }
}

/// An error answer as [`ApiError`]. A body without a `code` (a part-1
/// server) gets the code its status meant in part 1.
fn api_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<String>,
        code: Option<String>,
        /// `not_leader` answers name the leader (a node index, or null);
        /// read loosely, so that an odd value loses only itself.
        leader: Option<serde_json::Value>,
    }
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let (message, code, leader) = match parsed {
        Some(ErrorBody {
            error,
            code,
            leader,
        }) => (error, code, leader),
        None => (None, None, None),
    };
    let message =
        message.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
    let code = match code {
        Some(code) => match Code::parse(&code) {
            Code::NotLeader { .. } => Code::NotLeader {
                leader: leader
                    .and_then(|v| v.as_u64())
                    .and_then(|v| u32::try_from(v).ok()),
            },
            code => code,
        },
        None => match status {
            StatusCode::REQUEST_TIMEOUT => Code::Timeout,
            StatusCode::SERVICE_UNAVAILABLE => Code::ShuttingDown,
            _ => Code::Other(String::new()),
        },
    };
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    ApiError {
        status,
        code,
        message,
        retry_after,
    }
}

/// The contract's queue-name rule (`ubroker-proto`).
fn valid_queue_name(name: &str) -> bool {
    ubroker_proto::is_valid_queue_name(name)
}

#[cfg(test)]
mod tests {
    use super::queue::query;
    use super::*;

    #[test]
    fn queue_names_are_checked_as_the_server_does() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        for good in ["jobs", "a-b_C9", "jobs.dead", &"x".repeat(80)] {
            assert!(client.queue(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "a b",
            "jobs.dead.dead",
            ".dead",
            "é",
            &"x".repeat(81),
        ] {
            assert!(client.queue(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_checked() {
        for bad in [
            "https://x:1",
            "127.0.0.1:8080",
            "http://x:1/?a=b",
            "not a url",
        ] {
            assert!(Client::new(bad).is_err(), "{bad}");
        }
        let c = Client::new("http://localhost:8080/broker/").unwrap();
        assert_eq!(c.inner.base, "http://localhost:8080/broker");
        assert!(Client::builder("http://x:1").token("a\nb").build().is_err());
    }

    #[test]
    fn error_bodies_keep_status_code_message_and_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let e = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"error":"queue full","code":"queue_full"}"#,
        );
        assert_eq!(e.status, 429);
        assert_eq!(e.code, Code::QueueFull);
        assert_eq!(e.message, "queue full");
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        // A part-1 server's bodies have no code.
        let e = api_error(
            StatusCode::REQUEST_TIMEOUT,
            &HeaderMap::new(),
            br#"{"error":"timeout"}"#,
        );
        assert_eq!(e.code, Code::Timeout);
        let e = api_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>");
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::Other(String::new()), "<html>")
        );
    }

    #[test]
    fn not_leader_answers_carry_the_leader_they_name() {
        let e = |body: &[u8]| api_error(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), body);
        let named = e(br#"{"error":"not the leader","code":"not_leader","leader":4}"#);
        assert_eq!(named.code, Code::NotLeader { leader: Some(4) });
        assert_eq!(named.message, "not the leader");
        let none = e(br#"{"error":"not the leader","code":"not_leader","leader":null}"#);
        assert_eq!(none.code, Code::NotLeader { leader: None });
        let missing = e(br#"{"error":"not the leader","code":"not_leader"}"#);
        assert_eq!(missing.code, Code::NotLeader { leader: None });
        // An odd leader loses only itself, not the code or the message.
        for odd in [&br#""four""#[..], b"-1", b"4294967296", b"1.5"] {
            let body = [
                &br#"{"error":"x","code":"not_leader","leader":"#[..],
                odd,
                b"}",
            ]
            .concat();
            let odd = e(&body);
            assert_eq!(odd.code, Code::NotLeader { leader: None });
            assert_eq!(odd.message, "x");
        }
        // A leader field on any other code is not a not_leader.
        let other = e(br#"{"error":"down","code":"unavailable","leader":1}"#);
        assert_eq!(other.code, Code::Unavailable);
    }

    #[test]
    fn queries_join() {
        let mut p = "/fetch".to_owned();
        query(&mut p, "max", 10);
        query(&mut p, "wait", 0);
        assert_eq!(p, "/fetch?max=10&wait=0");
    }
}
