//! The accept loop, the per-connection HTTP/1.1 handler and graceful
//! shutdown.
//!
//! # Shutdown, in order
//!
//! 1. Stop accepting: the listener is dropped.
//! 2. Tell every connection to finish its request in flight and then close
//!    (hyper-util's `GracefulShutdown`), and flip the `shutting_down` watch:
//!    fetches waiting for a message answer `503` at once, instead of being
//!    reset. Publishes and settlements in flight complete normally.
//! 3. Wait for the connections, at most `--shutdown-timeout`; whatever is
//!    still open then is dropped.
//! 4. Close the broker and stop the timekeeping tasks.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use ubroker_engine::{Broker, Clock};

use crate::config::Config;
use crate::connection::{self, Activity, Ended, Tracked, WaitSignal};
use crate::response::TOO_MANY_CONNECTIONS;
use crate::routes::{self, State};
use crate::timekeeper::{self, ConnectionGauge};

/// Serves the broker API on `listener` until `shutdown` completes, then
/// shuts down gracefully (see the module docs) and returns.
pub async fn serve<C: Clock>(
    listener: TcpListener,
    broker: Arc<Broker<C>>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (shutting_down_tx, shutting_down) = watch::channel(false);
    let gauge = Arc::new(ConnectionGauge::default());
    let timekeeper = tokio::spawn(timekeeper::run(broker.clone(), shutting_down.clone()));
    let reclaim = tokio::spawn(timekeeper::reclaim(
        broker.clone(),
        gauge.clone(),
        shutting_down.clone(),
    ));
    let shutdown_timeout = config.shutdown_timeout();
    let timeouts = config.timeouts();
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
    let state = Arc::new(State::new(broker.clone(), config, shutting_down));

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

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_failures = Quiet::default();
    let mut refusals = Quiet::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin; existing connections keep being served,
                    // and the client waits in the backlog until one closes.
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
            () = &mut shutdown => break,
        };
        // Responses are small and latency-bound: do not wait for Nagle.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "set_nodelay failed");
        }
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(refused) = refusals.hit() {
                tracing::warn!(
                    refused,
                    "connections refused: --max-connections reached (logged at most once a second)"
                );
            }
            tokio::spawn(refuse(stream));
            continue;
        };
        let activity = Activity::new();
        let state = state.clone();
        let service = service_fn({
            let activity = activity.clone();
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                let state = state.clone();
                let activity = activity.clone();
                activity.request_started();
                // Only a fetch (a GET) ever waits on something other than
                // its client; inserting the signal allocates the request's
                // extension map, so publishes and settlements skip it.
                if req.method() == hyper::Method::GET {
                    req.extensions_mut()
                        .insert(WaitSignal::new(activity.clone()));
                }
                async move {
                    let response = routes::handle(&state, req).await;
                    activity.request_finished();
                    Ok::<_, Infallible>(response)
                }
            }
        });
        let (tracked, read_side) = Tracked::new(stream, activity.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(tracked), service));
        gauge.opened();
        let gauge = gauge.clone();
        tokio::spawn(async move {
            match connection::guard(connection, &activity, &read_side, timeouts).await {
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
            drop(permit);
            gauge.closed();
        });
    }

    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    let _ = shutting_down_tx.send(true);
    if tokio::time::timeout(shutdown_timeout, graceful.shutdown())
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
    tracing::info!("stopped");
    Ok(())
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
