//! `ubroker-cli`: a broker's queues from a shell, built on
//! `ubroker-client`.
//!
//! # Layout
//!
//! * `args`: the command line ([`args::Args`], one [`args::Command`] per
//!   action), parsed by clap; `completions` prints clap_complete's script.
//! * `publish`: `publish`, from arguments or from standard input in
//!   batches, with a progress line only on a terminal.
//! * `consume`: `consume`, printing bodies or running `--exec` for each,
//!   up to `--parallel` at once, with lease heartbeats, `--until-empty`
//!   and `--count`.
//! * `admin`: `queues`, `stats` (and `--watch`), `put`, `delete`,
//!   `redrive`, as text tables or `--json`.
//! * `exit`: [`exit::Failure`] and its exit status per error code (the
//!   table `--help` prints).
//!
//! Results go to standard output, errors to standard error as
//! `error[CODE]: message`, and the exit status says which code it was.

mod admin;
mod args;
mod consume;
mod exit;
mod publish;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ubroker_client::{Client, RetryPolicy};

use crate::args::{Args, Command};
use crate::exit::{Failure, Report};

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&Failure::Io(error)),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}

fn fail(failure: &Failure) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{}", Report(failure));
    ExitCode::from(failure.status())
}

async fn run(args: Args) -> Result<(), Failure> {
    if let Command::Completions { shell } = args.command {
        let mut command = Args::command();
        clap_complete::generate(shell, &mut command, "ubroker-cli", &mut std::io::stdout());
        return Ok(());
    }
    let mut builder = Client::builder(&args.url).retry(RetryPolicy {
        max_retries: args.retries,
        ..RetryPolicy::default()
    });
    if let Some(token) = &args.token {
        builder = builder.token(token.clone());
    }
    let client = builder.build()?;
    let json = args.json;
    match args.command {
        Command::Publish {
            queue,
            body,
            batch,
            partitions,
        } => {
            let target = publish::Target::new(&client, &queue, partitions)?;
            publish::run(target, body, batch as usize, json).await
        }
        Command::Consume {
            queue,
            exec,
            until_empty,
            parallel,
            count,
            requeue_delay_ms,
            partitions,
        } => {
            let options = consume::Options {
                exec,
                until_empty,
                parallel: parallel as usize,
                count,
                requeue_delay: std::time::Duration::from_millis(requeue_delay_ms),
                json,
            };
            consume::run(&client, &queue, partitions, options).await
        }
        Command::Queues => admin::queues(&client, json).await,
        Command::Stats { watch } => admin::stats(&client, watch, json).await,
        Command::Put {
            queue,
            ttl_ms,
            max_deliveries,
        } => admin::put(&client, &queue, ttl_ms, max_deliveries, json).await,
        Command::Delete { queue } => admin::delete(&client, &queue, json).await,
        Command::Redrive { queue } => admin::redrive(&client, &queue, json).await,
        Command::Completions { .. } => unreachable!("handled above"),
    }
}
