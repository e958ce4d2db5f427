//! `publish`: the bodies given as arguments, or one message per line of
//! standard input sent in batches, with a progress line on standard error
//! only when it is a terminal.

use std::io::{IsTerminal, Write};

use tokio::io::{AsyncBufReadExt, BufReader};
use ubroker_client::{Client, PartitionedQueue, Queue};

use crate::admin::print_json;
use crate::exit::Failure;

/// A batch is sent once it holds this many bytes of bodies, whatever
/// `--batch` says, so that it stays well under the broker's
/// `--max-body-bytes` (1 MiB by default) once JSON-encoded.
const BATCH_BYTES: usize = 256 * 1024;

/// Where messages go: one queue, or the partitions of one in turn.
pub enum Target {
    One(Queue),
    Partitioned(PartitionedQueue),
}

impl Target {
    /// `queue` (checked as the broker checks names), or with `partitions`
    /// its partitions `QUEUE--0` ... `QUEUE--{P-1}`.
    pub fn new(client: &Client, queue: &str, partitions: Option<u32>) -> Result<Self, Failure> {
        Ok(match partitions {
            None => Target::One(client.queue(queue)?),
            Some(p) => Target::Partitioned(client.partitioned(queue, p)?),
        })
    }

    fn name(&self) -> &str {
        match self {
            Target::One(queue) => queue.name(),
            Target::Partitioned(queue) => queue.name(),
        }
    }

    async fn send(&self, bodies: &[String]) -> Result<u64, Failure> {
        let batch = bodies.iter().map(String::as_str);
        Ok(match (self, bodies) {
            (Target::One(queue), [one]) => queue.publish(one).await.map(|()| 1)?,
            (Target::One(queue), _) => queue.publish_batch(batch).await?,
            (Target::Partitioned(queue), [one]) => queue.publish(one).await.map(|_| 1)?,
            (Target::Partitioned(queue), _) => queue.publish_batch(batch).await?.1,
        })
    }
}

/// Progress on standard error, when it is a terminal.
struct Progress {
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn update(&self, queue: &str, published: u64) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\rpublished {published} message(s) to {queue}…");
            let _ = err.flush();
        }
    }

    fn finish(&self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// `publish`: answers once every message is published, or with the first
/// failure (after saying on standard error how many went before it).
pub async fn run(
    target: Target,
    bodies: Vec<String>,
    batch: usize,
    json: bool,
) -> Result<(), Failure> {
    let mut published = 0u64;
    let outcome = if bodies.is_empty() {
        from_stdin(&target, batch, &mut published).await
    } else {
        from_args(&target, &bodies, batch, &mut published).await
    };
    if let Err(failure) = outcome {
        if published > 0 {
            eprintln!(
                "{published} message(s) were published to {} before the error",
                target.name()
            );
        }
        return Err(failure);
    }
    if json {
        return print_json(&serde_json::json!({ "queue": target.name(), "published": published }));
    }
    println!("published {published} message(s) to {}", target.name());
    Ok(())
}

async fn from_args(
    target: &Target,
    bodies: &[String],
    batch: usize,
    published: &mut u64,
) -> Result<(), Failure> {
    for chunk in bodies.chunks(batch) {
        *published += target.send(chunk).await?;
    }
    Ok(())
}

async fn from_stdin(target: &Target, batch: usize, published: &mut u64) -> Result<(), Failure> {
    let progress = Progress::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending: Vec<String> = Vec::with_capacity(batch);
    let mut pending_bytes = 0;
    loop {
        let line = lines.next_line().await?;
        let done = line.is_none();
        if let Some(mut line) = line {
            // `lines` drops the `\n`; a file with CRLF endings keeps its
            // `\r`, which is no part of the message.
            if line.ends_with('\r') {
                line.pop();
            }
            pending_bytes += line.len();
            pending.push(line);
        }
        if !pending.is_empty() && (done || pending.len() >= batch || pending_bytes >= BATCH_BYTES) {
            *published += target.send(&pending).await?;
            pending.clear();
            pending_bytes = 0;
            progress.update(target.name(), *published);
        }
        if done {
            progress.finish();
            return Ok(());
        }
    }
}
