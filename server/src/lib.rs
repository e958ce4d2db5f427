//! The ubroker HTTP server: the routes of the original ubroker API and of
//! named queues (touch, delays, dead letters, queue administration,
//! batches) over hyper 1.x, mapped onto the engine, with no web framework.
//!
//! # Layout
//!
//! * `config`: [`Config`], the command-line flags (each with an environment
//!   variable) and the settings derived from them.
//! * `server`: [`Server`] and [`serve`]: the `Listener` (accept loop,
//!   connection cap, drain) and the `Handler` (one connection's HTTP/1.1),
//!   and graceful shutdown; shutdown is a future passed in, so tests start
//!   and stop real servers on `127.0.0.1:0`.
//! * `decode`: pure functions from client bytes to typed requests (fuzzed):
//!   batch bodies are parsed into borrowed strings, each message body copied
//!   once into its own allocation.
//! * `routes`: `Route::parse` (once per request; its pattern labels
//!   metrics and logs), the one `match` on it, and a function per route,
//!   `/stats`, `/metrics` and `/health` included.
//! * `response`: one small function per kind of response; batch answers
//!   are written by hand into one pre-sized buffer (unit-tested against
//!   `serde_json`).
//! * `error`: [`ApiError`] and the one mapping from failure to HTTP status.
//! * `connection`: per-connection guards: header-read and idle timeouts,
//!   the socket wrapper that tells them apart.
//! * `console`: `GET /ui`, the web console: one HTML page with its CSS
//!   and JavaScript compiled into the binary (`src/console/`), which reads
//!   and acts through the same routes as any client.
//! * `auth`: the bearer scheme and the constant-time token check.
//! * `descriptors`: [`raise_limit`], the open-file limit raised at start,
//!   and [`connection_cap`], the connection cap kept under it.
//! * `timekeeper`: the task that drives lease expiry and delayed messages,
//!   sleeping exactly until the next due time; the task that gives memory
//!   back when the broker drains or connections close in bulk (the
//!   `ConnectionGauge`); [`TokioClock`], the engine's clock on tokio's
//!   (pausable) time.
//! * `durability`: [`Durability`], `--data-dir`: the write-ahead log
//!   (`ubroker-wal`) opened and recovered into a broker, the journal that
//!   logs what the engine changes, publishes logged (and, under `--fsync
//!   always`, synced) before they become visible, the log's `/stats` and
//!   `/health`.
//! * `replication`: `--replicas 3`: the node's Raft replica
//!   (`ubroker-replica`), the loop that serves the leader's broker or a
//!   follower's `not_leader` answers, the journal that feeds the Raft log,
//!   and the fence the routes wait on before answering.
//! * `shutdown`: [`Signals`], SIGINT / SIGTERM for the binary.
//! * `ubroker-proto` (a dependency): the error codes `error` answers with,
//!   and the error body and queue object `response` writes.
//! * `metrics`: the Prometheus exposition of `GET /metrics`: the engine's
//!   figures read at scrape time, and the per-request counters.
//!
//! The binary (`src/main.rs`) only parses flags, sets up logging, raises the
//! open-file limit, binds, prints `listening on http://HOST:PORT` and runs a
//! [`Server`] with `malloc_trim` as its memory trim.
//!
//! # Embedding
//!
//! The public API is what an embedding process needs: [`Config`] (the
//! flags, or [`Config::for_port`] for the defaults), [`serve`] or
//! [`Server`] (with a shutdown future, so tests and hosts decide when it
//! stops), [`TokioClock`] (the engine clock the timekeeper sleeps on),
//! [`ApiError`] (every failure and its HTTP status and code, the codes
//! being `ubroker-proto`'s), and what the binary does at start that a host
//! may want too: [`raise_limit`], [`connection_cap`], [`Signals`]. The
//! fuzz targets reach request decoding and the handler through the
//! `fuzzing` module, behind the `fuzzing` feature.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ubroker_engine::Broker;
//! use ubroker_server::{Config, Server, TokioClock};
//!
//! # async fn run() -> std::io::Result<()> {
//! let config = Config::for_port(8080);
//! let listener = tokio::net::TcpListener::bind((config.host, config.port)).await?;
//! let broker = Arc::new(Broker::with_clock(config.engine(), TokioClock::new()));
//! Server::new(listener, broker, config)
//!     .run(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

mod auth;
mod config;
mod connection;
mod console;
mod decode;
mod descriptors;
mod durability;
mod error;
mod metrics;
mod replication;
mod response;
mod routes;
mod server;
mod shutdown;
mod timekeeper;

pub use config::Config;
pub use descriptors::{connection_cap, raise_limit};
pub use durability::Durability;
pub use error::ApiError;
pub use replication::run as serve_replicated;
pub use server::{serve, Server};
pub use shutdown::Signals;
pub use timekeeper::TokioClock;

/// For the fuzz targets (`server/fuzz`), behind the `fuzzing` feature:
/// request decoding (pure functions) and the request handler with its
/// state, driven without a socket. Not part of the embedding API.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    /// Request decoding (pure functions, fuzzed).
    pub mod decode {
        pub use crate::decode::*;
    }
    pub use crate::routes::{handle, State};
}
