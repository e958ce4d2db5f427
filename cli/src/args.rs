//! The command line: [`Args`], its global options and one [`Command`] per
//! route of the broker that an operator uses by hand.

use clap::{Parser, Subcommand};
use clap_complete::Shell;

use crate::exit::EXIT_STATUS_HELP;

/// Publish, consume and administer the queues of a ubroker broker (or of a
/// cluster, through its HAProxy).
#[derive(Debug, Parser)]
#[command(name = "ubroker-cli", version, about, after_long_help = EXIT_STATUS_HELP)]
pub struct Args {
    /// The broker (or the cluster's HAProxy).
    #[arg(
        long,
        env = "UBROKER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The broker's --auth-token, sent as a bearer token.
    #[arg(long, env = "UBROKER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// How many times a call that failed without effect (a refused
    /// connection, `queue_full`, `shutting_down`, ...) is sent again.
    #[arg(long, default_value_t = 3, global = true)]
    pub retries: u32,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish each BODY as a message; with no BODY, one message per line
    /// of standard input, sent in batches.
    Publish {
        queue: String,
        body: Vec<String>,
        /// The most messages in one batch request (the broker's
        /// --max-batch bounds it too).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
        /// Spread over the P partitions `QUEUE--0` ... `QUEUE--{P-1}` of a
        /// cluster.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: Option<u32>,
    },
    /// Print each message's body (one per line), or run `sh -c CMD` with
    /// the body on its standard input; acknowledge on exit status 0 (or
    /// once printed), requeue otherwise.
    Consume {
        queue: String,
        /// Run `sh -c CMD` for each message, its body on standard input and
        /// UBROKER_QUEUE, UBROKER_MESSAGE_ID and UBROKER_ATTEMPT set.
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
        /// Stop once the queue has nothing ready or in flight.
        #[arg(long)]
        until_empty: bool,
        /// How many messages are handled at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        parallel: u32,
        /// Stop after this many messages.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Requeue a message whose command failed with this delay, in ms.
        #[arg(long, default_value_t = 0)]
        requeue_delay_ms: u64,
        /// Consume the P partitions `QUEUE--0` ... `QUEUE--{P-1}` of a
        /// cluster.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: Option<u32>,
    },
    /// List the queues with their figures and settings.
    Queues,
    /// Every queue's figures and counters, once or refreshed.
    Stats {
        /// Refresh every SECS seconds (2 if no value) until interrupted.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// Create QUEUE or change its settings.
    Put {
        queue: String,
        /// The lease TTL of its deliveries, in ms.
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// Deliveries before a message moves to `QUEUE.dead` (0: unlimited).
        #[arg(long)]
        max_deliveries: Option<u32>,
    },
    /// Delete QUEUE and all its messages.
    Delete { queue: String },
    /// Move the ready messages of `QUEUE.dead` back to QUEUE (QUEUE may be
    /// given as the source or as its `.dead` queue).
    Redrive { queue: String },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell).
    Completions { shell: Shell },
}
