//! The `Consumer` against a real broker: nothing lost under erroring,
//! panicking and crashed handlers; a stop leaves nothing leased; the
//! heartbeat keeps a slow handler's lease; at most N in flight.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, eventually, TestBroker};
use ubroker_client::{Backoff, Consumer, Dedup, Queue, QueueSettings};

const QUICK_REQUEUE: Backoff = Backoff {
    base: Duration::from_millis(5),
    max: Duration::from_millis(40),
};

async fn queue_with_ttl(server: &TestBroker, name: &str, ttl_ms: u64) -> Queue {
    let q = server.client().queue(name).unwrap();
    q.put(QueueSettings {
        ttl_ms: Some(ttl_ms),
        max_deliveries: None,
    })
    .await
    .unwrap();
    q
}

/// Publishes `n` messages `"0"`, `"1"`, ...
async fn publish(q: &Queue, n: usize) {
    for i in 0..n {
        q.publish(&i.to_string()).await.unwrap();
    }
}

/// Ready, in flight, delayed, acknowledged.
async fn counts(q: &Queue) -> (u64, u64, u64, u64) {
    let info = q.info().await.unwrap();
    let stats = q.client().stats().await.unwrap();
    let acked = stats.queues[q.name()].acknowledged;
    (info.ready, info.in_flight, info.delayed, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_panicking_and_crashed_handlers_lose_nothing() {
    const N: usize = 200;
    let server = TestBroker::start(config()).await;
    // A short TTL, so that the crashed consumer's leases come back soon.
    let q = queue_with_ttl(&server, "crashy", 300).await;
    publish(&q, N).await;

    // A consumer that takes messages and crashes holding them.
    let hung = Consumer::builder(q.clone())
        .max_in_flight(10)
        .heartbeat(0.0)
        .run(|_| std::future::pending::<Result<(), String>>());
    eventually("the doomed consumer holds leases", || async {
        hung.stats().fetched >= 10
    })
    .await;
    hung.abort();

    // Handlers that fail or panic on early attempts, and a dedup that
    // counts real completions.
    let done: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let dedup = Arc::new(Dedup::new(10_000));
    let handled = done.clone();
    let seen = dedup.clone();
    let consumer = Consumer::builder(q.clone())
        .max_in_flight(16)
        .requeue_backoff(QUICK_REQUEUE)
        .wait(Duration::from_millis(100))
        .run(move |d| {
            let handled = handled.clone();
            let seen = seen.clone();
            async move {
                let n: usize = d.text().parse().unwrap();
                if n % 5 == 0 && d.attempt <= 1 {
                    panic!("handler crashed on message {n}");
                }
                if n % 7 == 0 && d.attempt <= 2 {
                    return Err(format!("message {n} failed on attempt {}", d.attempt));
                }
                if seen.mark_done(d.message_id) {
                    *handled
                        .lock()
                        .unwrap()
                        .entry(d.text().to_owned())
                        .or_default() += 1;
                }
                Ok(())
            }
        });
    eventually("every message handled", || async {
        done.lock().unwrap().len() == N
    })
    .await;
    let stats = consumer.stop().await;
    assert!(stats.panicked >= (N / 5) as u64 - 2, "{stats:?}"); // some were in the crashed consumer
    assert!(stats.failed > 0, "{stats:?}");
    assert_eq!(stats.settle_errors, 0, "{stats:?}");
    let (ready, in_flight, delayed, acked) = counts(&q).await;
    assert_eq!((ready, in_flight, delayed, acked), (0, 0, 0, N as u64));
    let done = done.lock().unwrap().clone();
    for i in 0..N {
        assert_eq!(done.get(&i.to_string()), Some(&1), "message {i}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_handlers_finish_and_leaves_nothing_leased() {
    const N: usize = 60;
    let server = TestBroker::start(config()).await;
    let q = queue_with_ttl(&server, "finish", 60_000).await;
    publish(&q, N).await;
    let started = Arc::new(AtomicUsize::new(0));
    let count = started.clone();
    let consumer = Consumer::builder(q.clone()).max_in_flight(8).run(move |_| {
        count.fetch_add(1, SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<(), String>(())
        }
    });
    eventually("handlers running", || async { started.load(SeqCst) >= 8 }).await;
    let stats = consumer.stop().await;
    let (ready, in_flight, delayed, acked) = counts(&q).await;
    assert_eq!(in_flight, 0, "{stats:?}");
    assert_eq!(delayed, 0);
    assert_eq!(ready + acked, N as u64);
    assert!(acked >= 8, "running handlers were let finish: {stats:?}");
    assert_eq!(stats.acknowledged, acked);
    assert_eq!(stats.fetched, stats.acknowledged + stats.returned_on_stop);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_requeues_what_outlasts_its_timeout() {
    const N: usize = 30;
    let server = TestBroker::start(config()).await;
    let q = queue_with_ttl(&server, "stuck", 60_000).await;
    publish(&q, N).await;
    let consumer = Consumer::builder(q.clone())
        .max_in_flight(8)
        .stop_timeout(Duration::from_millis(100))
        .run(|_| std::future::pending::<Result<(), String>>());
    eventually("all permits leased", || async {
        q.info().await.unwrap().in_flight == 8
    })
    .await;
    let stats = consumer.stop().await;
    let (ready, in_flight, delayed, acked) = counts(&q).await;
    assert_eq!(
        (ready, in_flight, delayed, acked),
        (N as u64, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.returned_on_stop, 8);
    assert_eq!(stats.requeued, 8);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_long_poll_takes_nothing() {
    let server = TestBroker::start(config()).await;
    let q = queue_with_ttl(&server, "idle", 60_000).await;
    let consumer = Consumer::builder(q.clone())
        .wait(Duration::from_millis(300))
        .run(|_| async { Ok::<(), String>(()) });
    eventually("a fetch is waiting", || async {
        q.client().stats().await.unwrap().queues["idle"].waiting_fetches > 0
    })
    .await;
    // Published while the consumer's fetch waits and the stop begins: the
    // fetch may get it; then it is requeued, not left leased.
    let stopping = tokio::spawn(consumer.stop());
    q.publish("late").await.unwrap();
    let stats = stopping.await.unwrap();
    let (ready, in_flight, _, acked) = counts(&q).await;
    assert_eq!(in_flight, 0, "{stats:?}");
    assert_eq!(ready + acked, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_keeps_a_slow_handlers_lease() {
    let server = TestBroker::start(config()).await;
    for heartbeat in [0.5, 0.0] {
        let name = if heartbeat > 0.0 { "beating" } else { "silent" };
        let q = queue_with_ttl(&server, name, 200).await;
        q.publish("slow").await.unwrap();
        let consumer = Consumer::builder(q.clone())
            .max_in_flight(1)
            .heartbeat(heartbeat)
            .run(|_| async {
                // Five TTLs.
                tokio::time::sleep(Duration::from_millis(1000)).await;
                Ok::<(), String>(())
            });
        eventually("the handler finished", || async {
            let s = consumer.stats();
            s.succeeded >= 1
        })
        .await;
        eventually("its settlement answered", || async {
            let s = consumer.stats();
            s.acknowledged + s.invalid >= 1
        })
        .await;
        let stats = consumer.stop().await;
        if heartbeat > 0.0 {
            assert_eq!((stats.acknowledged, stats.invalid), (1, 0), "{stats:?}");
            assert!(stats.touched >= 3, "{stats:?}");
            let s = &q.client().stats().await.unwrap().queues[name];
            assert_eq!((s.delivered, s.expired, s.acknowledged), (1, 0, 1));
        } else {
            // Without it the lease expired under the handler (and the
            // message may have come back for a second round).
            assert!(stats.invalid >= 1, "{stats:?}");
            assert!(q.client().stats().await.unwrap().queues[name].expired >= 1);
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_in_flight() {
    const N: usize = 80;
    let server = TestBroker::start(config()).await;
    let q = queue_with_ttl(&server, "bounded", 60_000).await;
    publish(&q, N).await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let consumer = Consumer::builder(q.clone()).max_in_flight(4).run(move |_| {
        let (r, p) = (r.clone(), p.clone());
        async move {
            let now = r.fetch_add(1, SeqCst) + 1;
            p.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            r.fetch_sub(1, SeqCst);
            Ok::<(), String>(())
        }
    });
    let server_peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    eventually("all acknowledged", || async {
        let info = q.info().await.unwrap();
        server_peak.fetch_max(info.in_flight, SeqCst);
        consumer.stats().acknowledged == N as u64
    })
    .await;
    let server_peak = server_peak.load(SeqCst);
    consumer.stop().await;
    assert_eq!(peak.load(SeqCst), 4, "handlers at once");
    assert!(server_peak <= 4, "leases at once: {server_peak}");
    server.stop().await;
}

/// The `ubroker_http_requests_total` samples whose labels contain `route`.
fn requests_on(metrics: &str, route: &str) -> u64 {
    let label = format!("route=\"{route}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("ubroker_http_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_go_in_batches_where_the_server_takes_them() {
    const N: usize = 200;
    let server = TestBroker::start(config()).await;
    let q = queue_with_ttl(&server, "batched", 60_000).await;
    q.publish_batch((0..N).map(|i| i.to_string()).collect::<Vec<_>>().iter())
        .await
        .unwrap();
    let consumer = Consumer::builder(q.clone())
        .max_in_flight(50)
        .run(|_| async { Ok::<(), String>(()) });
    eventually("all acknowledged", || async {
        consumer.stats().acknowledged == N as u64
    })
    .await;
    let stats = consumer.stop().await;
    assert_eq!(stats.fetched, N as u64, "{stats:?}");
    let metrics = q.client().metrics().await.unwrap();
    let batch_acks = requests_on(&metrics, "/queues/{queue}/acknowledge");
    let single_acks = requests_on(&metrics, "/queues/{queue}/acknowledge/{id}");
    let fetches = requests_on(&metrics, "/queues/{queue}/fetch");
    assert!(batch_acks > 0, "no batch acknowledge:\n{metrics}");
    assert!(
        batch_acks + single_acks < N as u64 / 2,
        "{batch_acks} batch + {single_acks} single acknowledges for {N} messages"
    );
    assert!(fetches < N as u64 / 2, "{fetches} fetches for {N} messages");
    let (ready, in_flight, delayed, acked) = counts(&q).await;
    assert_eq!((ready, in_flight, delayed, acked), (0, 0, 0, N as u64));
    server.stop().await;
}
