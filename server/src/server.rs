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
//! 4. Close the broker and stop the expiry task.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use ubroker_engine::{Broker, Clock};

use crate::config::Config;
use crate::routes::{self, State};
use crate::sweeper;

/// Serves the broker API on `listener` until `shutdown` completes, then
/// shuts down gracefully (see the module docs) and returns.
pub async fn serve<C: Clock>(
    listener: TcpListener,
    broker: Arc<Broker<C>>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (shutting_down_tx, shutting_down) = watch::channel(false);
    let sweeper = tokio::spawn(sweeper::run(broker.clone(), shutting_down.clone()));
    let shutdown_timeout = config.shutdown_timeout();
    let state = Arc::new(State::new(broker.clone(), config, shutting_down));

    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).keep_alive(true);

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin; existing connections keep being served.
                    tracing::warn!(%error, "accept failed");
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
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(routes::handle(&state, req).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
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
    let _ = sweeper.await;
    tracing::info!("stopped");
    Ok(())
}
