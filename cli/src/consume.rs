//! `consume`: fetches with long-polling and hands each message to a
//! handler, up to `--parallel` at once: printing its body, or running
//! `sh -c CMD` with the body on standard input. A message is acknowledged
//! once printed or when the command exits 0, and requeued otherwise. A
//! handler still running at half its lease touches the lease, so a slow
//! command does not lose its message to expiry.
//!
//! It stops on Ctrl-C (SIGINT) or SIGTERM, after `--count` messages, or
//! with `--until-empty` once the queue has nothing ready or in flight; in
//! every case after the running handlers finish, so it holds no lease when
//! it exits. A fetch under way is let finish, not cut, so that no answer
//! with leases in it is dropped.

use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use ubroker_client::{Client, Code, Delivery, Error, PartitionedQueue, Queue};

use crate::exit::Failure;

/// How long one fetch waits for a message: short enough that a stop is
/// noticed soon, long enough not to poll.
const WAIT: Duration = Duration::from_millis(500);

/// The command-line options of `consume`.
pub struct Options {
    pub exec: Option<String>,
    pub until_empty: bool,
    pub parallel: usize,
    pub count: Option<u64>,
    pub requeue_delay: Duration,
    pub json: bool,
}

/// What happened to the messages.
#[derive(Debug, Default)]
struct Tally {
    acknowledged: u64,
    requeued: u64,
}

/// A handler's outcome for one message.
enum Outcome {
    Acknowledged,
    Requeued,
}

/// Where messages come from: one queue, or the partitions of one.
enum Source {
    One(Queue),
    Partitioned(PartitionedQueue),
}

impl Source {
    fn name(&self) -> &str {
        match self {
            Source::One(queue) => queue.name(),
            Source::Partitioned(queue) => queue.name(),
        }
    }

    async fn fetch_batch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, Error> {
        match self {
            Source::One(queue) => queue.fetch_batch(max, Some(wait)).await,
            Source::Partitioned(queue) => queue.fetch_batch(max, Some(wait)).await,
        }
    }

    /// The queue `delivery` settles on (its partition's).
    fn queue_of(&self, delivery: &Delivery) -> Result<&Queue, Error> {
        match self {
            Source::One(queue) => Ok(queue),
            Source::Partitioned(queue) => queue.queue_of(delivery),
        }
    }

    /// Every queue that holds its messages.
    fn queues(&self) -> &[Queue] {
        match self {
            Source::One(queue) => std::slice::from_ref(queue),
            Source::Partitioned(queue) => queue.partitions(),
        }
    }
}

/// What every handler shares.
struct Shared {
    queue: Source,
    options: Options,
    /// The queue's lease TTL, read once the first message arrives.
    ttl: OnceCell<Duration>,
}

/// `consume`.
pub async fn run(
    client: &Client,
    queue: &str,
    partitions: Option<u32>,
    options: Options,
) -> Result<(), Failure> {
    let source = match partitions {
        None => Source::One(client.queue(queue)?),
        Some(p) => Source::Partitioned(client.partitioned(queue, p)?),
    };
    let shared = Arc::new(Shared {
        queue: source,
        options,
        ttl: OnceCell::new(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn(stop_on_signal(stop.clone()));
    let mut tally = Tally::default();
    let outcome = fetch_loop(&shared, &stop, &mut tally).await;
    eprintln!(
        "consumed {} message(s) from {}: {} acknowledged, {} requeued",
        tally.acknowledged + tally.requeued,
        shared.queue.name(),
        tally.acknowledged,
        tally.requeued
    );
    outcome
}

async fn stop_on_signal(stop: Arc<AtomicBool>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
    stop.store(true, Ordering::Relaxed);
}

async fn fetch_loop(
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let parallel = shared.options.parallel;
    let mut running: JoinSet<Result<Outcome, Failure>> = JoinSet::new();
    let mut fetched = 0u64;
    let mut failure = None;
    while failure.is_none() && !stop.load(Ordering::Relaxed) {
        while let Some(done) = running.try_join_next() {
            record(done, tally, &mut failure);
        }
        let left = shared.options.count.map(|count| count - fetched);
        if left == Some(0) {
            break;
        }
        let free = parallel - running.len();
        if free == 0 {
            if let Some(done) = running.join_next().await {
                record(done, tally, &mut failure);
            }
            continue;
        }
        let max = left.map_or(free, |left| {
            free.min(usize::try_from(left).unwrap_or(usize::MAX))
        });
        let deliveries = match shared.queue.fetch_batch(max, WAIT).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                failure = Some(error.into());
                break;
            }
        };
        if deliveries.is_empty() && running.is_empty() && shared.options.until_empty {
            match drained(&shared.queue).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => failure = Some(error),
            }
        }
        for delivery in deliveries {
            fetched += 1;
            let shared = shared.clone();
            running.spawn(async move { handle(&shared, delivery).await });
        }
    }
    // Whatever stopped the loop, the handlers under way finish and settle.
    while let Some(done) = running.join_next().await {
        record(done, tally, &mut failure);
    }
    failure.map_or(Ok(()), Err)
}

fn record(
    done: Result<Result<Outcome, Failure>, tokio::task::JoinError>,
    tally: &mut Tally,
    failure: &mut Option<Failure>,
) {
    match done {
        Ok(Ok(Outcome::Acknowledged)) => tally.acknowledged += 1,
        Ok(Ok(Outcome::Requeued)) => tally.requeued += 1,
        Ok(Err(error)) => {
            failure.get_or_insert(error);
        }
        Err(join) => {
            failure.get_or_insert(Failure::Io(std::io::Error::other(join.to_string())));
        }
    }
}

/// Whether the queue (every partition) has nothing ready or in flight (a
/// queue that does not exist has nothing).
async fn drained(source: &Source) -> Result<bool, Failure> {
    for queue in source.queues() {
        match queue.info().await {
            Ok(info) if info.ready == 0 && info.in_flight == 0 => {}
            Ok(_) => return Ok(false),
            Err(error) if error.is(&Code::NotFound) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(true)
}

/// Runs the handler for one delivery, touching its lease while it runs,
/// then settles it.
async fn handle(shared: &Shared, delivery: Delivery) -> Result<Outcome, Failure> {
    let queue = shared.queue.queue_of(&delivery)?;
    let ttl = *shared
        .ttl
        .get_or_try_init(|| async {
            queue
                .info()
                .await
                .map(|info| Duration::from_millis(info.ttl_ms))
        })
        .await?;
    let work = work(shared, &delivery);
    tokio::pin!(work);
    let heartbeat = (ttl / 2).max(Duration::from_millis(1));
    let succeeded = loop {
        tokio::select! {
            result = &mut work => break result,
            () = tokio::time::sleep(heartbeat) => {
                // A lost lease is not fatal: the message comes back and is
                // delivered again (at least once); the settle will say so.
                let _ = queue.touch(delivery.id, None).await;
            }
        }
    };
    match succeeded {
        Ok(true) => {
            queue.acknowledge(delivery.id).await?;
            Ok(Outcome::Acknowledged)
        }
        Ok(false) => {
            let delay = Some(shared.options.requeue_delay).filter(|d| !d.is_zero());
            queue.requeue(delivery.id, delay).await?;
            Ok(Outcome::Requeued)
        }
        Err(error) => {
            // The message was not handled: give it back before failing.
            let _ = queue.requeue(delivery.id, None).await;
            Err(error)
        }
    }
}

/// Prints the body or runs the command: `Ok(true)` to acknowledge,
/// `Ok(false)` to requeue, `Err` when this consumer cannot go on (standard
/// output closed, the shell cannot start).
async fn work(shared: &Shared, delivery: &Delivery) -> Result<bool, Failure> {
    let Some(command) = &shared.options.exec else {
        let mut out = std::io::stdout().lock();
        if shared.options.json {
            let line = serde_json::json!({
                "id": delivery.id, "message_id": delivery.message_id,
                "attempt": delivery.attempt, "body": delivery.text(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", delivery.text())?;
        }
        out.flush()?;
        return Ok(true);
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("UBROKER_QUEUE", shared.queue.name())
        .env("UBROKER_MESSAGE_ID", delivery.message_id.to_string())
        .env("UBROKER_ATTEMPT", delivery.attempt.to_string())
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe early:
        // that is its business, not a failure.
        match stdin.write_all(&delivery.body).await {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(error.into())
            }
            _ => {}
        }
    }
    let status = child.wait().await?;
    Ok(status.success())
}
