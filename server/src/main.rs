//! The `ubroker` binary: parse flags, set up logging, bind, serve until
//! SIGINT or SIGTERM, and give freed memory back with glibc's `malloc_trim`
//! (a choice for this process, not for every host that embeds the server).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use ubroker_engine::Broker;
use ubroker_server::{connection_cap, raise_limit, Signals};
use ubroker_server::{Config, Durability, Server, TokioClock};

fn main() -> ExitCode {
    let mut config = Config::parse();
    if let Err(message) = config.validate() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    // Each connection holds a descriptor: keep the cap where accept can
    // still answer past it with a 503.
    if let Some(open_files) = raise_limit() {
        let cap = connection_cap(open_files);
        if config.max_connections > cap {
            tracing::warn!(
                open_files,
                requested = config.max_connections,
                "--max-connections lowered to {cap}: the open-file limit leaves room for no more"
            );
            config.max_connections = cap;
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(error) => {
                tracing::error!(%error, "cannot install the SIGINT/SIGTERM handlers");
                return ExitCode::FAILURE;
            }
        };
        if config.replicas.is_some() {
            return match ubroker_server::serve_replicated(
                config,
                signals.recv(),
                release_free_memory,
            )
            .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        // Recovery comes before the listening line: a broker that answers
        // has every message of its log back.
        let (broker, durable) = match &config.data_dir {
            None => (
                Arc::new(Broker::with_clock(config.engine(), TokioClock::new())),
                None,
            ),
            Some(dir) => {
                match Durability::open_dir(
                    dir,
                    config.log_options(),
                    config.engine(),
                    TokioClock::new(),
                ) {
                    Ok((broker, durable)) => {
                        // Recovery's tables are freed now: give their pages
                        // back, or a restored broker keeps its peak.
                        release_free_memory();
                        (broker, Some(durable))
                    }
                    Err(error) => {
                        tracing::error!("{error}");
                        eprintln!("error: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        };
        let listener = match TcpListener::bind((config.host, config.port)).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, host = %config.host, port = config.port, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let address = match listener.local_addr() {
            Ok(address) => address,
            Err(error) => {
                tracing::error!(%error, "cannot read the listening address");
                return ExitCode::FAILURE;
            }
        };
        // The one line on stdout; scripts wait for it.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on http://{address}");
        let _ = stdout.flush();
        drop(stdout);
        // One line with every effective setting (after the open-file
        // limit may have lowered --max-connections); never the token.
        tracing::info!(
            %address,
            ttl_ms = config.ttl,
            fetch_timeout_ms = config.fetch_timeout,
            max_fetch_wait_ms = config.max_fetch_wait,
            max_body_bytes = config.max_body_bytes,
            max_queue_bytes = config.max_queue_bytes,
            shutdown_timeout_ms = config.shutdown_timeout,
            max_header_bytes = config.max_header_bytes,
            header_read_timeout_ms = config.header_read_timeout,
            idle_timeout_ms = config.idle_timeout,
            max_connections = config.max_connections,
            auth = config.auth_token.is_some(),
            max_queues = config.max_queues,
            max_deliveries = config.max_deliveries,
            max_ttl_ms = config.max_ttl,
            max_delay_ms = config.max_delay,
            drain_ms = config.drain_ms,
            data_dir = config.data_dir.as_ref().map(|dir| dir.display().to_string()),
            fsync = config.data_dir.as_ref().map(|_| config.fsync.as_str()),
            fsync_interval_ms = config.fsync_interval_ms,
            segment_bytes = config.segment_bytes,
            "ubroker started"
        );
        // Where a new user looks first (the console asks for the token
        // itself when one is set).
        tracing::info!("web console at http://{address}/ui");

        // The engine reads tokio's clock: the same instant the timekeeper
        // sleeps on.
        let mut server =
            Server::new(listener, broker, config).with_memory_trim(release_free_memory);
        if let Some(durable) = durable {
            server = server.with_durability(durable);
        }
        match server.run(signals.recv()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its first allocation: background threads
/// purge dirty pages after a second, with no muzzy stage, so that freed
/// memory goes back to the OS by itself.
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Gives the allocator's free pages back to the OS (jemalloc does it by
/// itself).
#[cfg(feature = "jemalloc")]
fn release_free_memory() {}

/// Gives the allocator's free pages back to the OS.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
fn release_free_memory() {
    // SAFETY: malloc_trim only inspects and releases the allocator's own
    // free lists; it takes no pointers from us and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(any(all(target_os = "linux", target_env = "gnu"), feature = "jemalloc")))]
fn release_free_memory() {}
