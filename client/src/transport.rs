//! How requests reach the broker: [`Transport`], one of two connection
//! strategies behind one `send`.
//!
//! * **Pooled** (the default): hyper-util's legacy client, a pool of
//!   keep-alive HTTP/1.1 connections with `TCP_NODELAY`, shared by every
//!   clone of a `Client`; concurrent calls open more connections as
//!   needed, up to the load, and idle ones are kept for reuse.
//! * **Dedicated**: exactly one connection (hyper's `client::conn::http1`
//!   over hyper-util's `TokioIo`), opened on the first call and reopened
//!   after a failure, carrying one request at a time; concurrent calls
//!   from clones wait their turn. For a load generator or a worker that
//!   wants a fixed number of connections, and the cheaper path per
//!   request: the pool's checkout, its per-request task (it watches the
//!   connection become idle again while the body is read) and its
//!   hashing are skipped (BENCHMARKS.md has the figures).
//!
//! Either way the answer's body is read to the end before `send` returns,
//! so the connection is reusable at once, and the request bytes are the
//! same.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::error::{Error, Result};

type Pool = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// An answer: status, headers and the whole body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where requests go.
pub(crate) enum Transport {
    Pooled(Pool),
    Dedicated(Dedicated),
}

impl Transport {
    /// The pooled transport.
    pub fn pooled(
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Option<Duration>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        // Requests are small and each waits for its answer: Nagle's
        // algorithm would only add delay.
        connector.set_nodelay(true);
        connector.set_connect_timeout(connect_timeout);
        let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Transport::Pooled(pool)
    }

    /// One dedicated connection to `address` (`host:port`).
    pub fn dedicated(address: String, connect_timeout: Option<Duration>) -> Self {
        Transport::Dedicated(Dedicated {
            address,
            connect_timeout,
            sender: Mutex::new(None),
        })
    }

    /// Whether requests carry the origin form (`/path`) rather than the
    /// absolute form the pool routes on.
    pub fn wants_origin_form(&self) -> bool {
        matches!(self, Transport::Dedicated(_))
    }

    /// Sends `req` and reads the whole answer.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Answer> {
        match self {
            Transport::Pooled(pool) => {
                let response = pool.request(req).await.map_err(|e| Error::Transport {
                    connect: e.is_connect(),
                    source: Box::new(e),
                })?;
                read(response).await
            }
            Transport::Dedicated(dedicated) => dedicated.send(req).await,
        }
    }
}

async fn read(response: hyper::Response<hyper::body::Incoming>) -> Result<Answer> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Error::Transport {
            connect: false,
            source: Box::new(e),
        })?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// One connection, one request at a time.
pub(crate) struct Dedicated {
    address: String,
    connect_timeout: Option<Duration>,
    // A tokio mutex: held across the request, so that clones take turns on
    // the one connection. Uncontended for a single task, where it costs
    // an atomic operation.
    sender: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Dedicated {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let connect_error = |e: std::io::Error| Error::Transport {
            connect: true,
            source: Box::new(e),
        };
        let stream = match self.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, TcpStream::connect(&self.address))
                .await
                .map_err(|_| {
                    connect_error(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    ))
                })?,
            None => TcpStream::connect(&self.address).await,
        }
        .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Error::Transport {
                    connect: true,
                    source: Box::new(e),
                })?;
        tokio::spawn(async move {
            // Its errors also reach the pending request, which reports them.
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Answer> {
        let mut slot = self.sender.lock().await;
        let sender = match slot.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        let sender = slot.insert(sender);
        // A connection that closed before this request was written fails
        // here or in `send_request` with the request unsent: `connect` is
        // then true, so it is retried like a refused connection.
        let lost = |e: hyper::Error| Error::Transport {
            connect: e.is_canceled(),
            source: Box::new(e),
        };
        let result = async {
            sender.ready().await.map_err(lost)?;
            let response = sender.send_request(req).await.map_err(lost)?;
            read(response).await
        }
        .await;
        if result.is_err() {
            // Reopened on the next call.
            *slot = None;
        }
        result
    }
}
