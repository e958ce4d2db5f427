//! The ubroker HTTP server: the routes of the original ubroker API and of
//! named queues (touch, delays, dead letters, queue administration) over
//! hyper 1.x, mapped onto the engine, with no web framework.
//!
//! # Layout
//!
//! * `config`: [`Config`], the command-line flags (each with an environment
//!   variable) and the settings derived from them.
//! * `server`: [`serve`], the accept loop, per-connection HTTP/1.1 and
//!   graceful shutdown; shutdown is a future passed in, so tests start and
//!   stop real servers on `127.0.0.1:0`.
//! * `decode`: pure functions from client bytes to typed requests (fuzzed).
//! * `routes`: `Route::parse`, the one `match` on it, and a function per
//!   route.
//! * `response`: one small function per kind of response.
//! * `error`: [`ApiError`] and the one mapping from failure to HTTP status.
//! * `connection`: per-connection guards: header-read and idle timeouts,
//!   the socket wrapper that tells them apart.
//! * `auth`: the bearer scheme and the constant-time token check.
//! * `descriptors`: the open-file limit, raised at start, and the
//!   connection cap kept under it.
//! * `timekeeper`: the task that drives lease expiry and delayed messages,
//!   sleeping exactly until the next due time; the task that gives memory
//!   back when the broker drains or connections close in bulk (the
//!   `ConnectionGauge`); [`TokioClock`], the engine's clock on tokio's
//!   (pausable) time.
//! * `shutdown`: SIGINT / SIGTERM for the binary.
//!
//! The binary (`src/main.rs`) only parses flags, sets up logging, binds,
//! prints `listening on http://HOST:PORT` and calls [`serve`].

pub mod auth;
pub mod config;
pub mod connection;
pub mod decode;
pub mod descriptors;
pub mod error;
pub mod response;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod timekeeper;

pub use config::Config;
pub use error::ApiError;
pub use server::serve;
pub use timekeeper::TokioClock;
