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
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex as StdMutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

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
            slot: StdMutex::new(Slot::Free(None)),
            waiting: AtomicUsize::new(0),
            turn: Notify::new(),
        })
    }

    /// Whether requests carry the origin form (`/path`) rather than the
    /// absolute form the pool routes on.
    pub fn wants_origin_form(&self) -> bool {
        matches!(self, Transport::Dedicated(_))
    }

    /// Sends `req` and reads the whole answer.
    ///
    /// One `async fn` with everything inline, on purpose: each level of
    /// nested futures is a copy of the whole request's future state on
    /// every call (measured with callgrind: ~300 instructions per request
    /// in memcpy before this was flattened).
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Answer> {
        let response = match self {
            Transport::Pooled(pool) => pool.request(req).await.map_err(|e| Error::Transport {
                connect: e.is_connect(),
                source: Box::new(e),
            })?,
            Transport::Dedicated(dedicated) => {
                let mut turn = dedicated.take_turn().await;
                let mut sender = match turn.sender.take() {
                    Some(sender) if !sender.is_closed() => sender,
                    // Boxed: connecting is rare, and its future (name
                    // lookup, handshake) would otherwise make every
                    // request's future larger.
                    _ => Box::pin(dedicated.connect()).await?,
                };
                // A connection that closed before this request was written
                // fails with the request unsent (`is_canceled`): `connect`
                // is then true, so it is retried like a refused connection.
                let lost = |e: hyper::Error| Error::Transport {
                    connect: e.is_canceled(),
                    source: Box::new(e),
                };
                sender.ready().await.map_err(lost)?;
                let response = sender.send_request(req).await.map_err(lost)?;
                let (parts, mut body) = response.into_parts();
                let body = read_body(&mut body).await?;
                // Only a connection that completed its exchange is kept;
                // after a failure (returned above) the turn drops it, and
                // the next call opens a new one.
                turn.sender = Some(sender);
                return Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                });
            }
        };
        let (parts, mut body) = response.into_parts();
        let body = read_body(&mut body).await?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Reads a body to its end: one frame for the broker's answers (a
/// `Content-Length` body that arrived with the head), so no copy.
async fn read_body(body: &mut Incoming) -> Result<Bytes> {
    let lost = |e: hyper::Error| Error::Transport {
        connect: false,
        source: Box::new(e),
    };
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(lost)?.into_data() else {
            continue; // trailers
        };
        match &first {
            None => first = Some(data),
            Some(head) => {
                if rest.is_empty() {
                    rest.extend_from_slice(head);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    })
}

/// One connection, one request at a time.
pub(crate) struct Dedicated {
    address: String,
    connect_timeout: Option<Duration>,
    // A std mutex, held only to take the connection out or put it back,
    // never across an await: cheaper than an async mutex on the path every
    // request takes.
    slot: StdMutex<Slot>,
    /// Calls waiting for their turn (clones sharing the connection).
    waiting: AtomicUsize,
    turn: Notify,
}

enum Slot {
    /// Nobody is using the connection; `None` until (re)opened.
    Free(Option<SendRequest<Full<Bytes>>>),
    /// A call has it.
    Taken,
}

/// The turn of one call: gives the connection back (or drops it, after a
/// failure or a cancelled call) and wakes the next call waiting.
struct Turn<'a> {
    owner: &'a Dedicated,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let sender = self.sender.take();
        *self.owner.lock() = Slot::Free(sender);
        if self.owner.waiting.load(SeqCst) > 0 {
            self.owner.turn.notify_one();
        }
    }
}

impl Dedicated {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // Nothing panics while it is held.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no other call has the connection, and takes it.
    async fn take_turn(&self) -> Turn<'_> {
        loop {
            if let Slot::Free(sender) = std::mem::replace(&mut *self.lock(), Slot::Taken) {
                return Turn {
                    owner: self,
                    sender,
                };
            }
            // Taken (and left so by the replace above). Counted before
            // looking again, so that the holder's drop notifies; a
            // permit left by `notify_one` makes a late wait return at once.
            self.waiting.fetch_add(1, SeqCst);
            let free = matches!(*self.lock(), Slot::Free(_));
            if !free {
                self.turn.notified().await;
            }
            self.waiting.fetch_sub(1, SeqCst);
        }
    }

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
}
