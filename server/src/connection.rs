//! Per-connection guards: the header-read timeout (slowloris), the idle
//! keep-alive timeout, and the cap on concurrent connections.
//!
//! hyper's own `header_read_timeout` starts when hyper begins waiting for a
//! request head, which on a keep-alive connection is right after the
//! previous response: it cannot tell "idle between requests" from "sending
//! headers too slowly". So hyper's timer is off, and each connection keeps an
//! [`Activity`] with three phases:
//!
//! * `Idle`: no byte of a new request yet. Closed after `--idle-timeout`.
//! * `Head`: the first byte of a request arrived (seen by [`Tracked`], the
//!   socket wrapper) but hyper has not handed the request to the service
//!   yet. Closed after `--header-read-timeout` from that first byte.
//! * `Busy`: a request is being served (a long-poll fetch may wait for
//!   half a minute): no timeout here; publish bounds its own body read.
//!
//! [`guard`] drives the connection future and a timer reset to the current
//! phase's deadline after every poll, so a deadline is exact and an idle
//! connection costs no periodic wake-ups. Closing means dropping the
//! connection: in `Idle` and `Head` no request is in flight, so nothing is
//! lost.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// The timeouts that apply to one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Which phase a connection is in, and since when.
///
/// Updated by the socket wrapper and the service, read by [`guard`]; all on
/// the connection's own task, so `Relaxed` suffices (the atomics only make
/// the type `Sync` for hyper's `Send` bounds).
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    phase: AtomicU8,
    since_nanos: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            origin: Instant::now(),
            phase: AtomicU8::new(IDLE),
            since_nanos: AtomicU64::new(0),
        })
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn enter(&self, phase: u8) {
        self.since_nanos.store(self.now_nanos(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.enter(HEAD);
        }
    }

    /// hyper handed a complete request head to the service.
    pub fn request_started(&self) {
        self.phase.store(BUSY, Ordering::Relaxed);
    }

    /// The service produced its response.
    pub fn request_finished(&self) {
        self.enter(IDLE);
    }

    /// When the current phase times out, if it can.
    fn deadline(&self, timeouts: Timeouts) -> Option<Instant> {
        let limit = match self.phase.load(Ordering::Relaxed) {
            IDLE => timeouts.idle,
            HEAD => timeouts.header_read,
            _ => return None,
        };
        let since = Duration::from_nanos(self.since_nanos.load(Ordering::Relaxed));
        Some(self.origin + since + limit)
    }
}

/// A socket that reports reads to an [`Activity`].
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a guarded connection ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// The connection future completed.
    Completed(T),
    /// It sat idle for `--idle-timeout`.
    IdleTimeout,
    /// A request head took longer than `--header-read-timeout`.
    HeaderTimeout,
}

/// Drives `connection` until it completes or its current phase times out.
pub async fn guard<F: Future>(
    connection: F,
    activity: &Activity,
    timeouts: Timeouts,
) -> Ended<F::Output> {
    let mut connection = pin!(connection);
    let mut timer = pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    let mut armed: Option<Instant> = None;
    poll_fn(|cx| {
        if let Poll::Ready(output) = connection.as_mut().poll(cx) {
            return Poll::Ready(Ended::Completed(output));
        }
        // Polling the connection may have moved the phase: re-aim the timer.
        let deadline = activity.deadline(timeouts);
        if deadline != armed {
            if let Some(at) = deadline {
                timer.as_mut().reset(at.into());
            }
            armed = deadline;
        }
        if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(match activity.phase.load(Ordering::Relaxed) {
                HEAD => Ended::HeaderTimeout,
                _ => Ended::IdleTimeout,
            });
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_set_the_deadline() {
        let timeouts = Timeouts {
            header_read: Duration::from_secs(1),
            idle: Duration::from_secs(60),
        };
        let a = Activity::new();
        let idle = a.deadline(timeouts).unwrap();
        assert!(idle >= a.origin + Duration::from_secs(60));
        a.on_read();
        let head = a.deadline(timeouts).unwrap();
        assert!(head < idle);
        a.on_read();
        assert_eq!(
            a.deadline(timeouts),
            Some(head),
            "more bytes do not extend it"
        );
        a.request_started();
        assert_eq!(a.deadline(timeouts), None);
        a.on_read();
        assert_eq!(a.deadline(timeouts), None, "body bytes do not start a head");
        a.request_finished();
        assert!(a.deadline(timeouts).unwrap() >= idle);
    }
}
