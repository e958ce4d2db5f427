//! Per-connection guards: the header-read timeout (slowloris), the idle
//! keep-alive timeout, and the watch for a peer that goes away while its
//! request waits.
//!
//! hyper's own `header_read_timeout` starts when hyper begins waiting for a
//! request head, which on a keep-alive connection is right after the
//! previous response: it cannot tell "idle between requests" from "sending
//! headers too slowly". So hyper's timer is off, and each connection keeps an
//! [`Activity`] with four phases:
//!
//! * `Idle`: no byte of a new request yet. Closed after `--idle-timeout`.
//! * `Head`: the first byte of a request arrived (seen by [`Tracked`], the
//!   socket wrapper) but hyper has not handed the request to the service
//!   yet. Closed after `--header-read-timeout` from that first byte.
//! * `Busy`: a request is being served: no timeout here; publish bounds its
//!   own body read.
//! * `Waiting`: a request is waiting for something other than the client (a
//!   long-poll fetch, for half a minute perhaps; the route says so through
//!   [`WaitSignal`]). If the peer closes (FIN) or resets (RST) now, the
//!   connection is dropped, and the request with it.
//!
//! [`guard`] drives the connection future and a timer reset to the current
//! phase's deadline after every poll, so a deadline is exact and an idle
//! connection costs no periodic wake-ups. Closing means dropping the
//! connection: in `Idle` and `Head` no request is in flight, so nothing is
//! lost; in `Waiting` the request is a fetch that has leased nothing yet
//! (the engine's fetch is cancellation safe).
//!
//! # Why the guard reads the socket itself
//!
//! While a request is in flight hyper reads no further: it looks for EOF
//! only if its read buffer is empty, and not at all with `half_close`,
//! which answers a client that sends a request and then FIN. A waiting
//! fetch followed by any byte (a pipelined request, a stray CRLF) would
//! never learn that its client is gone, and would lease the next message
//! to a dead socket. So while a request waits the guard reads the socket:
//! the bytes go into a read-ahead buffer that [`Tracked`] hands to hyper
//! first, in order; a read of EOF or an error means the peer is gone. The
//! buffer is bounded ([`READ_AHEAD_LIMIT`]); past it the guard asks the
//! kernel whether the peer hung up (`POLLRDHUP`) every [`BLIND_RECHECK`].
//! The socket is split so the guard's read side and hyper's write side need
//! no lock between them; the read side is a `Mutex` only for the `Sync`
//! bound, and is only ever taken on the connection's own task.
//!
//! `Tracked` also answers an HTTP/2 connection preface with a bare `400`:
//! hyper recognises the preface and closes without a word.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::response::HTTP2_PREFACE_REFUSED;

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
const WAITING: u8 = 3;

/// Most bytes the guard reads ahead of hyper while a request waits: as much
/// as hyper itself would buffer.
pub const READ_AHEAD_LIMIT: usize = 64 * 1024;

/// How often the guard asks the kernel whether the peer hung up, while a
/// request waits behind a full read-ahead buffer.
pub const BLIND_RECHECK: Duration = Duration::from_millis(100);

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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

    /// The service produced its response: the connection is idle again.
    /// Returns the request's latency, from when its head began to arrive
    /// (or, for a head that arrived with the previous request's bytes, from
    /// when that one was answered) to now: the clock read that starts the
    /// idle timeout also times the request, so metrics read no clock of
    /// their own.
    pub fn request_finished(&self) -> Duration {
        let now = self.now_nanos();
        let since = self.since_nanos.swap(now, Ordering::Relaxed);
        self.phase.store(IDLE, Ordering::Relaxed);
        Duration::from_nanos(now.saturating_sub(since))
    }

    fn is_waiting(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == WAITING
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

/// Handed to the routes with each request (by reference), so that a route can
/// say when its request starts waiting on something other than the client.
#[derive(Debug, Clone)]
pub struct WaitSignal(Arc<Activity>);

impl WaitSignal {
    pub fn new(activity: Arc<Activity>) -> Self {
        WaitSignal(activity)
    }

    /// The request's response is ready: see [`Activity::request_finished`].
    pub fn request_finished(&self) -> Duration {
        self.0.request_finished()
    }

    /// The request waits until the returned scope is dropped; meanwhile a
    /// peer that closes or resets the connection ends it, and so drops the
    /// future that holds the scope.
    pub fn begin(&self) -> Waiting<'_> {
        self.0.phase.store(WAITING, Ordering::Relaxed);
        Waiting(&self.0)
    }
}

/// The scope of a wait; see [`WaitSignal::begin`].
#[derive(Debug)]
pub struct Waiting<'a>(&'a Activity);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Back to an ordinary request in flight: a FIN from here on is a
        // half-close, and the response is still owed.
        let _ = self
            .0
            .phase
            .compare_exchange(WAITING, BUSY, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// What the read side has learnt about the peer.
struct ReadState {
    half: OwnedReadHalf,
    /// Bytes the guard read that hyper has not, oldest first.
    ahead: BytesMut,
    /// The peer's FIN was read (after the bytes in `ahead`).
    eof: bool,
    /// A read failed (a reset): the error, until hyper has seen it.
    error: Option<io::Error>,
    failed: bool,
    /// hyper's last read was pending: a read by the guard must wake it, as
    /// the socket's readiness would have.
    hyper_parked: bool,
    /// How many leading bytes of the connection match the HTTP/2 preface;
    /// `None` once one does not.
    preface_matched: Option<usize>,
}

/// The read side of a connection, shared by [`Tracked`] (hyper's reads)
/// and [`guard`] (the watch while a request waits).
pub struct ReadSide(Mutex<ReadState>);

impl ReadSide {
    fn lock(&self) -> MutexGuard<'_, ReadState> {
        // Only the connection's task takes this lock, and nothing in it can
        // panic half-way; a poisoned state is still consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// While a request waits: reads ahead of hyper until the socket has no
    /// more, and says whether the peer is gone.
    fn watch(&self, cx: &mut Context<'_>) -> Watch {
        let mut state = self.lock();
        let state = &mut *state;
        loop {
            if state.failed || state.eof {
                return Watch::Gone;
            }
            if state.ahead.len() >= READ_AHEAD_LIMIT {
                return if peer_hung_up(&state.half) {
                    Watch::Gone
                } else {
                    Watch::Blind
                };
            }
            let mut chunk = [0u8; 4096];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut state.half).poll_read(cx, &mut buf) {
                Poll::Pending => return Watch::Open,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => state.eof = true,
                Poll::Ready(Ok(())) => {
                    state.ahead.extend_from_slice(buf.filled());
                    if state.hyper_parked {
                        state.hyper_parked = false;
                        cx.waker().wake_by_ref();
                    }
                }
                Poll::Ready(Err(error)) => {
                    state.failed = true;
                    state.error = Some(error);
                }
            }
        }
    }
}

/// What [`ReadSide::watch`] found.
enum Watch {
    /// The peer is there, as far as the socket says; the task is woken when
    /// that may change.
    Open,
    /// The peer closed or reset the connection.
    Gone,
    /// The read-ahead buffer is full: check again after [`BLIND_RECHECK`].
    Blind,
}

/// Whether the kernel has seen the peer's FIN or RST, behind unread data.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn peer_hung_up(half: &OwnedReadHalf) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: half.as_ref().as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; the descriptor is open for
    // as long as `half` is borrowed.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Without `POLLRDHUP`, a peer that hangs up behind a full read-ahead
/// buffer is noticed when its request ends.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn peer_hung_up(_half: &OwnedReadHalf) -> bool {
    false
}

/// A socket that reports reads to an [`Activity`] and shares its read side
/// with [`guard`].
pub struct Tracked {
    read: Arc<ReadSide>,
    write: OwnedWriteHalf,
    activity: Arc<Activity>,
}

impl Tracked {
    /// Wraps `stream`; the [`ReadSide`] is for [`guard`].
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> (Self, Arc<ReadSide>) {
        let (half, write) = stream.into_split();
        let read = Arc::new(ReadSide(Mutex::new(ReadState {
            half,
            ahead: BytesMut::new(),
            eof: false,
            error: None,
            failed: false,
            hyper_parked: false,
            preface_matched: Some(0),
        })));
        let tracked = Tracked {
            read: read.clone(),
            write,
            activity,
        };
        (tracked, read)
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.read.lock();
        let state = &mut *state;
        if !state.ahead.is_empty() {
            let n = state.ahead.len().min(buf.remaining());
            buf.put_slice(&state.ahead[..n]);
            state.ahead.advance(n);
            this.activity.on_read();
            return Poll::Ready(Ok(()));
        }
        if let Some(error) = state.error.take() {
            return Poll::Ready(Err(error));
        }
        if state.eof || state.failed {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut state.half).poll_read(cx, buf);
        state.hyper_parked = result.is_pending();
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() == before => state.eof = true,
            Poll::Ready(Ok(())) => {
                if let Some(matched) = state.preface_matched {
                    let read = &buf.filled()[before..];
                    state.preface_matched = match_preface(matched, read);
                    if state.preface_matched == Some(HTTP2_PREFACE.len()) {
                        // hyper would close without a word. Answer, and show
                        // hyper the end of the stream instead of the preface.
                        let _ = this.write.try_write(HTTP2_PREFACE_REFUSED);
                        buf.set_filled(before);
                        state.eof = true;
                        return Poll::Ready(Ok(()));
                    }
                }
                this.activity.on_read();
            }
            Poll::Ready(Err(_)) => state.failed = true,
            Poll::Pending => {}
        }
        result
    }
}

/// Extends a match of the HTTP/2 preface by `read`: the new length, or
/// `None` if the connection does not start with the preface.
fn match_preface(matched: usize, read: &[u8]) -> Option<usize> {
    let rest = HTTP2_PREFACE.get(matched..).unwrap_or_default();
    let n = rest.len().min(read.len());
    (rest[..n] == read[..n]).then_some(matched + n)
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

/// Shutdown's request to every connection: finish the request in flight,
/// then close. Replaces hyper-util's `GracefulShutdown`, which polled a
/// watch channel on every wake-up of every connection; here a connection
/// registers once and then reads a flag.
#[derive(Debug, Default)]
pub struct Closing {
    requested: AtomicBool,
    notify: Notify,
    /// Connections not yet ended, and the signal that the last one did.
    open: AtomicUsize,
    all_closed: Notify,
}

impl Closing {
    /// Asks every connection, present and future, to close.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenConnection(self.clone())
    }

    /// Completes once every connection counted by [`Closing::open`] ended.
    pub async fn all_closed(&self) {
        loop {
            let mut closed = pin!(self.all_closed.notified());
            closed.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// An open connection, counted by [`Closing`] until dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<Closing>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
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
    /// The peer closed or reset the connection while its request waited.
    PeerGone,
}

/// Drives `connection` until it completes, its current phase times out, or
/// its peer goes away while a request waits; once `closing` is requested,
/// the connection finishes its request in flight and closes.
pub async fn guard<F: GracefulConnection>(
    connection: F,
    activity: &Activity,
    read: &ReadSide,
    timeouts: Timeouts,
    closing: &Closing,
) -> Ended<F::Output> {
    let mut connection = pin!(connection);
    // Registered at the first poll, so that `Closing::request` wakes the
    // task; after that only the flag is read.
    let mut close_notified = pin!(closing.notify.notified());
    let mut close_registered = false;
    let mut close_sent = false;
    let mut timer = pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    // When the timer fires, if it is armed: never after the current phase's
    // deadline, and possibly before it. A phase change moves the deadline;
    // the timer is moved only when the deadline comes before it, and it is
    // armed at most one `header_read` ahead, so a request head that starts
    // later never needs it moved earlier (moving a tokio timer earlier takes
    // the timer driver's lock; two per request before this). A timer that
    // fires early finds nothing due and is armed again.
    let mut armed: Option<Instant> = None;
    // Whether the armed timer has been polled since it was armed (a poll
    // registers the task's waker; after that `is_elapsed` says it fired).
    let mut registered = false;
    // When the blind watch looks again, while it is blind.
    let mut recheck: Option<Instant> = None;
    poll_fn(|cx| loop {
        if !close_sent {
            if !close_registered {
                close_registered = true;
                let _ = close_notified.as_mut().poll(cx);
            }
            if closing.requested() {
                close_sent = true;
                connection.as_mut().graceful_shutdown();
            }
        }
        if let Poll::Ready(output) = connection.as_mut().poll(cx) {
            return Poll::Ready(Ended::Completed(output));
        }
        // Polling the connection may have moved the phase: check the timer.
        let mut deadline = activity.deadline(timeouts);
        if activity.is_waiting() {
            match read.watch(cx) {
                Watch::Gone => return Poll::Ready(Ended::PeerGone),
                Watch::Open => recheck = None,
                Watch::Blind => {
                    let now = Instant::now();
                    deadline = recheck.filter(|at| *at > now);
                    if deadline.is_none() {
                        deadline = Some(now + BLIND_RECHECK);
                    }
                    recheck = deadline;
                }
            }
        } else {
            recheck = None;
        }
        let Some(due) = deadline else {
            // Nothing can time out now; an armed timer may still fire, and
            // then finds nothing due.
            if armed.is_some() && timer_fired(timer.as_mut(), &mut registered, cx) {
                armed = None;
            }
            return Poll::Pending;
        };
        if armed.is_none_or(|at| at > due) {
            // (At least a millisecond ahead: a zero timeout from an embedding
            // process must not make the early re-arming spin.)
            let horizon = timeouts.header_read.max(Duration::from_millis(1));
            let at = due.min(Instant::now() + horizon);
            timer.as_mut().reset(at.into());
            armed = Some(at);
            registered = false;
        }
        if !timer_fired(timer.as_mut(), &mut registered, cx) {
            return Poll::Pending;
        }
        armed = None;
        if Instant::now() < due {
            // Fired early (the deadline moved later since it was armed), or
            // a blind recheck is due: look again, and arm it again.
            continue;
        }
        match activity.phase.load(Ordering::Relaxed) {
            HEAD => return Poll::Ready(Ended::HeaderTimeout),
            IDLE => return Poll::Ready(Ended::IdleTimeout),
            // A blind recheck is due: look again.
            _ => {}
        }
    })
    .await
}

/// Whether the armed `timer` has fired; the first call after it is armed
/// polls it (registering the task's waker), later ones only look.
fn timer_fired(
    mut timer: Pin<&mut tokio::time::Sleep>,
    registered: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    if *registered {
        return timer.is_elapsed();
    }
    *registered = true;
    timer.as_mut().poll(cx).is_ready()
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

    #[test]
    fn a_wait_has_no_deadline_and_ends_in_busy() {
        let timeouts = Timeouts {
            header_read: Duration::from_secs(1),
            idle: Duration::from_secs(60),
        };
        let a = Activity::new();
        a.request_started();
        let signal = WaitSignal::new(a.clone());
        let waiting = signal.begin();
        assert!(a.is_waiting());
        assert_eq!(a.deadline(timeouts), None);
        drop(waiting);
        assert!(!a.is_waiting());
        assert_eq!(a.phase.load(Ordering::Relaxed), BUSY);
    }

    #[test]
    fn the_http2_preface_is_matched_across_reads() {
        assert_eq!(match_preface(0, b"PRI * HTTP/2.0\r\n"), Some(16));
        assert_eq!(match_preface(16, b"\r\nSM\r\n\r\n\0\0\x12"), Some(24));
        assert_eq!(match_preface(0, HTTP2_PREFACE), Some(24));
        assert_eq!(match_preface(0, b"POST /publish"), None);
        assert_eq!(match_preface(0, b"PRI * HTTP/1.1\r\n"), None);
        assert_eq!(match_preface(3, b" *"), Some(5));
    }
}
