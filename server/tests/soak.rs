//! Soak: the real `ubroker` binary under load while consumers randomly
//! crash (fetch, then vanish without acknowledging) under a short TTL.
//!
//! Runs for `UBROKER_SOAK_SECONDS` of load (default 5, so the normal test
//! run stays quick; `.ci/run` sets 60 and runs it in release), then drains.
//! At the end every published body has been acknowledged at least once, the
//! broker holds nothing (a long-poll longer than the TTL finds nothing), and
//! its RSS is back near its idle level. It prints messages, redeliveries
//! caused by the crashes, and idle / peak / final RSS.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Binary, Client};

const TTL_MS: u64 = 250;
const PRODUCERS: usize = 3;
const CONSUMERS: usize = 6;
/// One fetch in this many is a consumer crash.
const CRASH_ONE_IN: u64 = 20;

struct Broker {
    binary: Binary,
    addr: SocketAddr,
}

impl Broker {
    fn start() -> Self {
        let ttl = TTL_MS.to_string();
        let binary = Binary::start(
            &["--port", "0", "--ttl", &ttl, "--max-fetch-wait", "5000"],
            &[],
            Stdio::inherit(),
        );
        let addr = binary.addr;
        Broker { binary, addr }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.binary.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn terminate(self) {
        self.binary.signal("TERM");
        assert_eq!(self.binary.wait(), Some(0));
    }
}

/// xorshift64*: a deterministic, dependency-free coin for the crashes.
struct Coin(u64);

impl Coin {
    fn one_in(&mut self, n: u64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n == 0
    }
}

#[derive(Default)]
struct Tally {
    published: Mutex<HashSet<String>>,
    acknowledged: Mutex<HashSet<String>>,
    fetches: AtomicU64,
    crashes: AtomicU64,
    late_acks: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_crashing_consumers() {
    let seconds: u64 = std::env::var("UBROKER_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let broker = Broker::start();
    let addr = broker.addr;

    // Warm up once so idle RSS includes the runtime's lazy setup.
    {
        let mut c = Client::connect(addr).await;
        c.publish("warm-up").await;
        let (id, _) = c.fetch(0).await.delivery();
        c.acknowledge(id).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (idle_rss, _) = broker.memory_kib();

    let tally = Arc::new(Tally::default());
    let producing = Arc::new(AtomicBool::new(true));
    let started = Instant::now();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tally = tally.clone();
            let producing = producing.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                let mut i = 0u64;
                while producing.load(Ordering::Relaxed) {
                    let body = format!("p{p}-{i}");
                    let r = c.publish(&body).await;
                    assert_eq!(r.status, 200, "{r:?}");
                    tally.published.lock().unwrap().insert(body);
                    i += 1;
                    // Keep the queue bounded: producers briefly yield when
                    // far ahead of the consumers.
                    if i % 256 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|n| {
            let tally = tally.clone();
            let producing = producing.clone();
            tokio::spawn(async move {
                let mut coin = Coin(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
                let mut c = Client::connect(addr).await;
                let mut idle_polls = 0;
                loop {
                    let r = c.fetch(2 * TTL_MS).await;
                    if r.status == 408 {
                        let done = {
                            let published = tally.published.lock().unwrap();
                            let acknowledged = tally.acknowledged.lock().unwrap();
                            published.len() == acknowledged.len()
                        };
                        if !producing.load(Ordering::Relaxed) && done {
                            idle_polls += 1;
                            if idle_polls > 2 {
                                return;
                            }
                        }
                        continue;
                    }
                    idle_polls = 0;
                    let (id, body) = r.delivery();
                    tally.fetches.fetch_add(1, Ordering::Relaxed);
                    if coin.one_in(CRASH_ONE_IN) {
                        // Crash: the connection and the lease are abandoned.
                        tally.crashes.fetch_add(1, Ordering::Relaxed);
                        c = Client::connect(addr).await;
                        continue;
                    }
                    let r = c.acknowledge(id).await;
                    match r.status.as_u16() {
                        200 => {
                            tally.acknowledged.lock().unwrap().insert(body);
                        }
                        // The lease ran out first (a slow consumer): the
                        // message was redelivered and will be acked then.
                        400 => {
                            tally.late_acks.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("acknowledge answered {other}: {r:?}"),
                    }
                }
            })
        })
        .collect();

    let mut peak_rss = 0;
    let mut ticks = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_rss = peak_rss.max(broker.memory_kib().0);
        ticks += 1;
        if ticks % 20 == 0 {
            let acked = tally.acknowledged.lock().unwrap().len();
            let published = tally.published.lock().unwrap().len();
            eprintln!(
                "soak: {:>3}s published {published:>8} acknowledged {acked:>8}",
                started.elapsed().as_secs()
            );
        }
    }
    producing.store(false, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let drain = tokio::time::timeout(Duration::from_secs(120), async {
        for c in consumers {
            c.await.unwrap();
        }
    });
    assert!(
        drain.await.is_ok(),
        "consumers drained the queue within 2 minutes"
    );

    let published = tally.published.lock().unwrap().clone();
    let acknowledged = tally.acknowledged.lock().unwrap().clone();
    let missing: Vec<_> = published.difference(&acknowledged).take(5).collect();
    assert!(
        missing.is_empty(),
        "published but never acknowledged: {missing:?}"
    );
    assert_eq!(published.len(), acknowledged.len());

    // The broker holds nothing: no ready message, and no lease that would
    // come back (the wait is longer than the TTL).
    let mut c = Client::connect(addr).await;
    let r = c.fetch(3 * TTL_MS).await;
    assert_eq!(r.status, 408, "the broker still held {r:?}");

    // Let the sweeper shrink the lease table and the allocator settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (final_rss, hwm) = broker.memory_kib();
    let fetches = tally.fetches.load(Ordering::Relaxed);
    let crashes = tally.crashes.load(Ordering::Relaxed);
    let late = tally.late_acks.load(Ordering::Relaxed);
    println!(
        "soak: {seconds}s load, {} messages published and acknowledged, {fetches} deliveries, \
         {} redeliveries ({crashes} consumer crashes, {late} acknowledgements after the TTL)",
        published.len(),
        fetches - published.len() as u64,
    );
    println!(
        "soak: RSS idle {idle_rss} KiB, peak {} KiB (sampled) / {hwm} KiB (VmHWM), final {final_rss} KiB ({:+.1}% of idle)",
        peak_rss.max(hwm),
        (final_rss as f64 / idle_rss as f64 - 1.0) * 100.0
    );
    assert!(crashes > 0, "the run exercised consumer crashes");
    assert!(
        fetches - published.len() as u64 >= crashes,
        "every crash caused a redelivery"
    );
    // "Back near idle": within 25% or 4 MiB of idle, whichever is larger.
    let allowance = (idle_rss / 4).max(4 * 1024);
    assert!(
        final_rss <= idle_rss + allowance,
        "RSS did not come back: idle {idle_rss} KiB, final {final_rss} KiB"
    );
    broker.terminate();
}
