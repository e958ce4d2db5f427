//! A worker: publishes 100 jobs in one batch, handles them with a
//! [`Consumer`] (every job ending in 7 fails on its first attempt and is
//! requeued with a backoff), stops, and checks that every job was handled
//! and nothing is left in the queue. Exits non-zero otherwise, so CI runs
//! it against a real broker (`scripts/load-smoke.sh`).
//!
//! ```text
//! cargo run -p ubroker-client --example worker -- http://127.0.0.1:8080
//! ```

use std::collections::HashSet;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ubroker_client::{Client, Consumer};

const JOBS: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("UBROKER_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let client = Client::new(&url)?;
    let jobs = client.queue("example-jobs")?;

    let bodies: Vec<String> = (0..JOBS).map(|i| format!("job {i}")).collect();
    let published = jobs.publish_batch(&bodies).await?;
    println!("published {published} jobs to {url}");

    let done = Arc::new(Mutex::new(HashSet::new()));
    let handled = done.clone();
    let consumer = Consumer::builder(jobs.clone())
        .max_in_flight(8)
        .run(move |job| {
            let handled = handled.clone();
            async move {
                if job.attempt == 1 && job.text().ends_with('7') {
                    return Err(format!("{} failed on its first attempt", job.text()));
                }
                handled.lock().unwrap().insert(job.text().to_owned());
                Ok(())
            }
        });

    let start = Instant::now();
    while done.lock().unwrap().len() < JOBS {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("not every job was handled within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = consumer.stop().await;
    println!(
        "handled {} jobs: {} acknowledged, {} failed and requeued",
        done.lock().unwrap().len(),
        stats.acknowledged,
        stats.failed
    );

    let left = jobs.info().await?;
    if left.ready + left.in_flight + left.delayed != 0 {
        return Err(format!("messages left in the queue: {left:?}").into());
    }
    jobs.delete().await?;
    Ok(())
}
