//! [`Server`] (and [`serve`], its short form): the accept loop
//! ([`Listener`]), the per-connection HTTP/1.1 handler ([`Handler`]), the
//! drain and graceful shutdown. The split follows mini-redis: the listener
//! owns what is shared (the connection cap, the graceful-shutdown signal,
//! the handler state), a handler owns one connection.
//!
//! # Shutdown, in order
//!
//! 1. The shutdown future completes (SIGTERM in the binary). With
//!    `--drain-ms`, `/health` answers `503` from now on while everything
//!    else is served as usual for that long, so that a load balancer stops
//!    sending before the listener closes.
//! 2. Stop accepting: the listener is dropped.
//! 3. Tell every connection to finish its request in flight and then close
//!    (hyper-util's `GracefulShutdown`), and flip the `shutting_down` watch:
//!    fetches waiting for a message answer `503` at once, instead of being
//!    reset. Publishes and settlements in flight complete normally.
//! 4. Wait for the connections, at most `--shutdown-timeout`; whatever is
//!    still open then is dropped.
//! 5. Close the broker, stop the timekeeping tasks, and log the totals.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use ubroker_engine::{Broker, Clock};

use crate::config::Config;
use crate::connection::{
    self, Activity, Closing, Ended, OpenConnection, Timeouts, Tracked, WaitSignal,
};
use crate::durability::Durability;
use crate::response::TOO_MANY_CONNECTIONS;
use crate::routes::{self, State};
use crate::timekeeper::{self, ConnectionGauge, Trim};

/// Serves the broker API on `listener` until `shutdown` completes, then
/// shuts down gracefully (see the module docs) and returns. The same as
/// `Server::new(listener, broker, config).run(shutdown)`.
pub async fn serve<C: Clock>(
    listener: TcpListener,
    broker: Arc<Broker<C>>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    Server::new(listener, broker, config).run(shutdown).await
}

/// A broker server, to be run until a shutdown future completes.
pub struct Server<C: Clock> {
    listener: TcpListener,
    broker: Arc<Broker<C>>,
    config: Config,
    trim: Option<Trim>,
    durable: Option<Arc<Durability>>,
    replication: Option<Arc<crate::replication::Replication>>,
}

impl<C: Clock> Server<C> {
    /// A server of `broker` on `listener` with `config`.
    pub fn new(listener: TcpListener, broker: Arc<Broker<C>>, config: Config) -> Self {
        Server {
            listener,
            broker,
            config,
            trim: None,
            durable: None,
            replication: None,
        }
    }

    /// Serves one role of a replicated node (`replication::run`).
    pub(crate) fn with_replication(
        mut self,
        replication: Arc<crate::replication::Replication>,
    ) -> Self {
        self.replication = Some(replication);
        self
    }

    /// Logs through `durable` (`--data-dir`); `broker` must be the one it
    /// rebuilt ([`Durability::open_dir`]). Shutdown ends with a sync of the
    /// log, in every fsync mode.
    pub fn with_durability(mut self, durable: Durability) -> Self {
        self.durable = Some(Arc::new(durable));
        self
    }

    /// Calls `trim` when freed memory is worth giving back to the operating
    /// system: the broker drained, or many connections closed. The `ubroker`
    /// binary passes glibc's `malloc_trim`; a process that embeds the server
    /// decides for itself.
    pub fn with_memory_trim(mut self, trim: fn()) -> Self {
        self.trim = Some(trim);
        self
    }

    /// Serves until `shutdown` completes, then drains and shuts down
    /// gracefully (see the module docs).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server {
            listener,
            broker,
            config,
            trim,
            durable,
            replication,
        } = self;
        let (shutting_down_tx, shutting_down) = watch::channel(false);
        let gauge = Arc::new(ConnectionGauge::default());
        let timekeeper = tokio::spawn(timekeeper::run(broker.clone(), shutting_down.clone()));
        let reclaim = tokio::spawn(timekeeper::reclaim(
            broker.clone(),
            gauge.clone(),
            trim,
            shutting_down.clone(),
        ));
        let shutdown_timeout = config.shutdown_timeout();
        let drain = config.drain();
        let ids = durable.clone().map(|durable| {
            tokio::spawn(crate::durability::keep_ids(
                broker.clone(),
                durable,
                shutting_down.clone(),
            ))
        });
        let state = Arc::new(
            State::new(broker.clone(), config.clone(), shutting_down)
                .with_durability(durable.clone())
                .with_replication(replication),
        );
        let mut listener = Listener::new(listener, state.clone(), gauge, &config);

        listener.accept_until(shutdown, drain).await;

        let Listener { closing, .. } = listener;
        tracing::info!("shutting down: finishing requests in flight");
        closing.request();
        let _ = shutting_down_tx.send(true);
        if tokio::time::timeout(shutdown_timeout, closing.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                ?shutdown_timeout,
                "connections still open at the shutdown timeout; closing them"
            );
        }
        broker.close();
        let _ = timekeeper.await;
        let _ = reclaim.await;
        if let Some(ids) = ids {
            let _ = ids.await;
        }
        if let Some(durable) = &durable {
            // Everything logged reaches the disk before the process exits.
            let durable = durable.clone();
            let _ = tokio::task::spawn_blocking(move || durable.close()).await;
            tracing::info!("write-ahead log synced and closed");
        }
        let totals = broker.stats();
        tracing::info!(
            published = totals.published,
            delivered = totals.delivered,
            acknowledged = totals.acknowledged,
            requeued = totals.requeued,
            expired = totals.expired,
            dead_lettered = totals.dead_lettered,
            left_ready = totals.ready,
            left_in_flight = totals.in_flight,
            left_delayed = totals.delayed,
            queues = totals.queues,
            "stopped"
        );
        Ok(())
    }
}

/// The accept loop: the connection cap, the HTTP/1.1 settings, and the
/// graceful-shutdown signal ([`Closing`]) every connection is registered with.
pub struct Listener<C: Clock> {
    listener: TcpListener,
    state: Arc<State<C>>,
    http: http1::Builder,
    closing: Arc<Closing>,
    connections: Arc<Semaphore>,
    gauge: Arc<ConnectionGauge>,
    timeouts: Timeouts,
}

impl<C: Clock> Listener<C> {
    fn new(
        listener: TcpListener,
        state: Arc<State<C>>,
        gauge: Arc<ConnectionGauge>,
        config: &Config,
    ) -> Self {
        let connections = Arc::new(Semaphore::new(
            usize::try_from(config.max_connections)
                .unwrap_or(Semaphore::MAX_PERMITS)
                .min(Semaphore::MAX_PERMITS),
        ));
        // hyper's hard ceiling on a request head (answered with a bare 431):
        // above the configured limit, which routes answer with a JSON 431.
        let hard_header_limit = usize::try_from(config.max_header_bytes.saturating_mul(2))
            .unwrap_or(usize::MAX)
            .max(16_384);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .keep_alive(true)
            // A client may send its request and then FIN (`nc -N`, `shutdown
            // (SHUT_WR)`): it still gets its answer. A FIN during a wait is a
            // close all the same: `connection::guard` watches for it.
            .half_close(true)
            // Replaced by the phase-aware timeouts in `connection`.
            .header_read_timeout(None)
            .max_header_size(hard_header_limit)
            .max_buf_size(hard_header_limit.max(64 * 1024));
        Listener {
            listener,
            state,
            http,
            closing: Arc::default(),
            connections,
            gauge,
            timeouts: config.timeouts(),
        }
    }

    /// Accepts connections until `shutdown` completes and then `drain` has
    /// passed (during which `/health` answers 503).
    async fn accept_until(&mut self, shutdown: impl Future<Output = ()>, drain: Duration) {
        let mut shutdown = pin!(shutdown);
        let mut drained = pin!(tokio::time::sleep(Duration::ZERO));
        let mut draining = false;
        let mut accept_failures = Quiet::default();
        let mut refusals = Quiet::default();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off
                        // rather than spin; existing connections keep being
                        // served, and the client waits in the backlog until
                        // one closes.
                        if let Some(failures) = accept_failures.hit() {
                            tracing::warn!(
                                %error,
                                failures,
                                "accept failed; retrying every 10 ms (logged at most once a second)"
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = &mut shutdown, if !draining => {
                    if drain.is_zero() {
                        return;
                    }
                    tracing::info!(?drain, "draining: /health answers 503, serving as usual");
                    self.state.begin_drain();
                    draining = true;
                    drained.as_mut().reset(tokio::time::Instant::now() + drain);
                    continue;
                }
                () = &mut drained, if draining => return,
            };
            // Responses are small and latency-bound: do not wait for Nagle.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, %peer, "set_nodelay failed");
            }
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                if let Some(refused) = refusals.hit() {
                    tracing::warn!(
                        refused,
                        "connections refused: --max-connections reached (logged at most once a second)"
                    );
                }
                tokio::spawn(refuse(stream));
                continue;
            };
            let handler = Handler {
                stream,
                peer,
                state: self.state.clone(),
                gauge: self.gauge.clone(),
                timeouts: self.timeouts,
                _permit: permit,
            };
            self.gauge.opened();
            let connection = handler.serve(&self.http, &self.closing);
            tokio::spawn(connection);
        }
    }
}

/// One connection: its socket, the shared state, and its slot under
/// `--max-connections` (released when the handler is dropped).
pub struct Handler<C: Clock> {
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State<C>>,
    gauge: Arc<ConnectionGauge>,
    timeouts: Timeouts,
    _permit: OwnedSemaphorePermit,
}

impl<C: Clock> Handler<C> {
    /// The future that serves the connection to its end; registered with
    /// `closing` now, so shutdown reaches it even before it first runs.
    fn serve(
        self,
        http: &http1::Builder,
        closing: &Arc<Closing>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let Handler {
            stream,
            peer,
            state,
            gauge,
            timeouts,
            _permit,
        } = self;
        let activity = Activity::new();
        let service = service_fn({
            let activity = activity.clone();
            move |req: hyper::Request<hyper::body::Incoming>| {
                let state = state.clone();
                activity.request_started();
                // Lets a fetch say when it waits on something other than its
                // client; passed down by reference, not in the request's
                // extensions (inserting one allocates their map).
                let signal = WaitSignal::new(activity.clone());
                async move {
                    let (route, response) = routes::respond(&state, req, Some(&signal)).await;
                    let elapsed = signal.request_finished();
                    let status = response.status().as_u16();
                    state.metrics.observe(route, status, elapsed);
                    tracing::debug!(
                        route = route.unwrap_or("other"),
                        status,
                        latency_us = elapsed.as_micros() as u64,
                        "request"
                    );
                    Ok::<_, Infallible>(response)
                }
            }
        });
        let (tracked, read_side) = Tracked::new(stream, activity.clone());
        let connection = http.serve_connection(TokioIo::new(tracked), service);
        let open: OpenConnection = closing.open();
        let closing = closing.clone();
        async move {
            let ended = connection::guard(connection, &activity, &read_side, timeouts, &closing);
            match ended.await {
                Ended::Completed(Ok(())) => {}
                Ended::Completed(Err(error)) => {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                Ended::IdleTimeout => tracing::debug!(%peer, "closed an idle connection"),
                Ended::HeaderTimeout => {
                    tracing::info!(%peer, "closed a connection that sent its headers too slowly");
                }
                Ended::PeerGone => {
                    tracing::debug!(%peer, "the client went away while its request waited");
                }
            }
            drop(_permit);
            gauge.closed();
            drop(open);
        }
    }
}

/// Answers a connection over `--max-connections` with a 503 and closes it,
/// without reading its request (a bounded write, so a client that never
/// reads cannot hold the task).
async fn refuse(mut stream: TcpStream) {
    let write = async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// A condition that may recur thousands of times a second (accept failing,
/// connections refused): logged when it starts and then at most once a
/// second, with how many times it happened since the last line.
#[derive(Default)]
struct Quiet {
    last_logged: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl Quiet {
    /// Counts one occurrence; `Some(count)` when it is time to log.
    fn hit(&mut self) -> Option<u64> {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}
