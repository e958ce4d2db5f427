//! The engine in process: `ubroker_engine::Broker` against the mutex
//! baseline (`ubroker_benches::baseline::MutexBroker`), side by side in every
//! group, so each report reads as a ratio.
//!
//! Groups (one per scenario; ids are `impl/parameter`, throughput in
//! messages per second):
//!
//! * `publish/N`: N publishes into an empty broker.
//! * `fetch_ack/N`: N fetch + acknowledge cycles on a broker holding N.
//! * `fetch_requeue/N`: N fetch + requeue cycles on a broker holding N.
//! * `expiry/N`: one sweep that expires N leases.
//! * `publish_batch/N`: N publishes in batches of 100.
//! * `fetch_ack_batch/N`: N messages fetched 100 at a time, each batch
//!   acknowledged with one batch acknowledge.
//! * `contended/PpCc`: full publish, fetch, acknowledge cycles with P
//!   producer and C consumer threads.
//! * `oversubscribed/4p4c`: the same with 8 threads pinned to 2 CPUs; also
//!   prints each implementation's p99.9 operation latency at the end.
//!
//! Every group works on one named queue, `jobs`, which both implementations
//! find in a hash map behind a read lock (the engine finds `default`
//! without one; `scripts/engine-profile.sh` measures that path too).
//!
//! Run: `cargo bench -p ubroker-benches --bench engine` (`-- --quick` for a
//! short run), then `cargo run --release -p ubroker-benches --example
//! bench_ratios` for the table of ratios. Biases common to
//! all groups: bodies are one static 32-byte `Bytes`, so no group pays for
//! allocating or freeing bodies (a server would, equally for both
//! implementations, which would pull every ratio towards 1); and nothing
//! waits in a long-polling fetch, so the engine's wait list is exercised
//! only through its "is anyone waiting" RMW.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use ubroker_benches::baseline::MutexBroker;
use ubroker_benches::contended::{full_cycles, oversubscribed};
use ubroker_benches::BenchBroker;
use ubroker_engine::{Broker, Config, Delivery, ManualClock, NewMessage, SystemClock};

/// The queue every group works on.
const QUEUE: &str = "jobs";

/// Entries per batch in the batch groups.
const BATCH: usize = 100;

/// The body every message carries. Static, so cloning it is a copy of the
/// handle: the benches measure the broker, not the allocator.
const BODY: Bytes = Bytes::from_static(b"0123456789abcdef0123456789abcdef");

/// Queue sizes for the single-threaded groups: small enough to stay in L2,
/// large enough to spill it (and to make a `VecDeque` or a table grow).
const SIZES: [usize; 2] = [1_000, 100_000];

/// Criterion's default of 100 samples needs at least 5,050 iterations; at
/// 100,000 messages per iteration that alone would take a minute per bench.
fn sample_size(n: usize) -> usize {
    if n >= 100_000 {
        10
    } else {
        100
    }
}

fn fresh<B: BenchBroker<Clock = SystemClock>>() -> B {
    B::with_clock(Config::default(), SystemClock::new())
}

fn filled<B: BenchBroker<Clock = SystemClock>>(n: usize) -> B {
    let broker = fresh::<B>();
    for _ in 0..n {
        broker
            .publish_to(QUEUE, BODY, Duration::ZERO)
            .expect("open");
    }
    broker
}

/// `publish/N`: one thread publishes N messages into an empty broker.
///
/// Models a burst of producers' messages arriving with no consumer yet. The
/// cost includes growing the ready queue from empty (a fresh broker per
/// iteration; building and dropping it is not timed): the engine allocates
/// a `SegQueue` block per 31 messages, the baseline doubles its `VecDeque`
/// and copies. Biased towards the baseline: one thread, so its lock is
/// never contended and costs two uncontended atomics per publish.
fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(sample_size(n));
        publish_one::<Broker>(&mut group, n);
        publish_one::<MutexBroker>(&mut group, n);
    }
    group.finish();
}

fn publish_one<B: BenchBroker<Clock = SystemClock>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
) {
    group.bench_function(BenchmarkId::new(B::NAME, n), |b| {
        b.iter_batched(
            fresh::<B>,
            |broker| {
                for _ in 0..n {
                    broker
                        .publish_to(QUEUE, black_box(BODY), Duration::ZERO)
                        .expect("open");
                }
                broker
            },
            BatchSize::PerIteration,
        )
    });
}

/// `fetch_ack/N`: one thread fetches and acknowledges each of N queued
/// messages.
///
/// Models a consumer draining a backlog. Each cycle is a ready-queue pop, a
/// lease insert, an expiry entry, a clock read and a settling remove; the
/// lease table stays at one entry, so it never grows. Biased towards the
/// baseline: uncontended locks, and a one-entry hash table that is always
/// in L1 (the engine's DashMap pays a shard lock that is just as
/// uncontended).
fn fetch_ack(c: &mut Criterion) {
    cycle_group(c, "fetch_ack", |broker, id| {
        broker.acknowledge_in(QUEUE, id)
    });
}

/// `fetch_requeue/N`: one thread fetches and requeues each of N queued
/// messages, so the queue stays N long and every message goes round once.
///
/// Models a consumer that cannot handle what it fetches (the worst case for
/// a redelivery loop). Same biases as `fetch_ack`; in addition the requeue
/// pushes back onto the ready queue, so the baseline takes its ready lock
/// twice per cycle and the engine does two lock-free queue operations.
fn fetch_requeue(c: &mut Criterion) {
    cycle_group(c, "fetch_requeue", |broker, id| {
        broker.requeue_in(QUEUE, id, Duration::ZERO)
    });
}

/// Shared body of `fetch_ack` and `fetch_requeue`: `settle` is called with
/// each fetched id, for each implementation and queue size.
fn cycle_group(
    c: &mut Criterion,
    name: &str,
    settle: fn(&dyn Settle, u64) -> Result<(), ubroker_engine::Error>,
) {
    let mut group = c.benchmark_group(name);
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(sample_size(n));
        cycle_one::<Broker>(&mut group, n, settle);
        cycle_one::<MutexBroker>(&mut group, n, settle);
    }
    group.finish();
}

/// The two settling calls, object-safe, so one cycle function serves both
/// groups. The indirect call costs the same for both implementations.
trait Settle {
    fn acknowledge_in(&self, queue: &str, id: u64) -> Result<(), ubroker_engine::Error>;
    fn requeue_in(
        &self,
        queue: &str,
        id: u64,
        delay: Duration,
    ) -> Result<(), ubroker_engine::Error>;
}

impl<B: BenchBroker> Settle for B {
    fn acknowledge_in(&self, queue: &str, id: u64) -> Result<(), ubroker_engine::Error> {
        BenchBroker::acknowledge_in(self, queue, id)
    }

    fn requeue_in(
        &self,
        queue: &str,
        id: u64,
        delay: Duration,
    ) -> Result<(), ubroker_engine::Error> {
        BenchBroker::requeue_in(self, queue, id, delay)
    }
}

fn cycle_one<B: BenchBroker<Clock = SystemClock>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
    settle: fn(&dyn Settle, u64) -> Result<(), ubroker_engine::Error>,
) {
    group.bench_function(BenchmarkId::new(B::NAME, n), |b| {
        // A fresh broker per iteration: the expiry queue keeps one entry per
        // fetch until a sweep, so a reused broker would grow without bound.
        b.iter_batched(
            || filled::<B>(n),
            |broker| {
                for _ in 0..n {
                    let delivery = broker.try_fetch_from(QUEUE).expect("open").expect("queued");
                    settle(&broker, black_box(delivery.id)).expect("live lease");
                }
                broker
            },
            BatchSize::PerIteration,
        )
    });
}

/// `expiry/N`: one sweep finds N leases past their deadline and returns
/// them all to the ready queue.
///
/// Models the background expiry task after a consumer fleet died holding N
/// leases. The clock is a `ManualClock`, moved one TTL forward after the
/// untimed setup (publish N, fetch N). Biased towards the baseline: one
/// thread, so its single critical section over all N leases blocks nobody
/// here, whereas in a server it would stall every acknowledge and fetch
/// for the sweep's duration; the engine's sweep takes no broker-wide lock.
/// The engine's sweep also gives the emptied lease table's memory back
/// (`shrink_if_sparse`, a rehash once the table is mostly empty, which
/// happens at N = 10,000 here), and that is timed; the baseline never
/// shrinks its map.
fn expiry(c: &mut Criterion) {
    let mut group = c.benchmark_group("expiry");
    for n in [1_000, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        expiry_one::<Broker<ManualClock>>(&mut group, n);
        expiry_one::<MutexBroker<ManualClock>>(&mut group, n);
    }
    group.finish();
}

fn expiry_one<B: BenchBroker<Clock = ManualClock>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
) {
    let config = Config::default();
    group.bench_function(BenchmarkId::new(B::NAME, n), |b| {
        b.iter_batched(
            || {
                let broker = B::with_clock(config, ManualClock::new());
                for _ in 0..n {
                    broker
                        .publish_to(QUEUE, BODY, Duration::ZERO)
                        .expect("open");
                }
                for _ in 0..n {
                    broker.try_fetch_from(QUEUE).expect("open").expect("queued");
                }
                broker.clock().advance(config.ttl);
                broker
            },
            |broker| {
                let sweep = broker.expire_due();
                assert_eq!(sweep.expired, n);
                broker
            },
            BatchSize::PerIteration,
        )
    });
}

/// `contended/PpCc`: P producer threads publish a fixed number of messages
/// between them while C consumer threads fetch and acknowledge until all
/// are consumed; one element is one message's full cycle.
///
/// Models a busy broker with several producers and consumers (what the
/// server does under load, minus HTTP). The time runs from a barrier that
/// releases all threads to the last consumer finishing; thread spawn and
/// join are outside it. A consumer that finds the queue empty yields its
/// time slice and retries, for both implementations alike.
///
/// Where it is biased: this machine has fewer cores than 4+4 threads (and
/// 2+2 fills them), so at 4+4 the OS preempts threads at random, sometimes
/// while the baseline holds a lock, which parks everyone queued behind it;
/// the engine's lock-free queue has no such convoy. That is real behaviour
/// on an oversubscribed host, but it exaggerates the ratio compared with a
/// machine that has a core per thread. Consumers also poll instead of
/// waiting in `fetch`, which favours neither side but burns a core whenever
/// the queue runs dry. And every fetch leaves an expiry entry that only a
/// sweep one TTL (20 s) later drops, so a run never reaches the steady state
/// where freed entries are reused: both sides pay for growing their expiry
/// structure from empty (the engine 24 bytes per entry in `SegQueue` blocks
/// of 31, fresh pages included; the baseline 16 in a doubling `VecDeque`).
fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended");
    group.throughput(Throughput::Elements(1));
    for threads in [1, 2, 4] {
        contended_one::<Broker>(&mut group, threads);
        contended_one::<MutexBroker>(&mut group, threads);
    }
    group.finish();
}

fn contended_one<B: BenchBroker<Clock = SystemClock>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    threads: usize,
) {
    let param = format!("{threads}p{threads}c");
    group.bench_function(BenchmarkId::new(B::NAME, param), |b| {
        b.iter_custom(|iters| full_cycles(&fresh::<B>(), QUEUE, threads, threads, BODY, iters))
    });
}

/// `publish_batch/N`: one thread publishes N messages in batches of 100
/// into an empty broker.
///
/// Models a producer using `POST .../publish` with `{"messages": [...]}`.
/// The batches are built in the untimed setup (a server builds them from the
/// request either way). Biased as `publish`.
fn publish_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_batch");
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(sample_size(n));
        publish_batch_one::<Broker>(&mut group, n);
        publish_batch_one::<MutexBroker>(&mut group, n);
    }
    group.finish();
}

fn publish_batch_one<B: BenchBroker<Clock = SystemClock>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
) {
    group.bench_function(BenchmarkId::new(B::NAME, n), |b| {
        b.iter_batched(
            || {
                let batches: Vec<Vec<NewMessage>> = (0..n / BATCH)
                    .map(|_| {
                        (0..BATCH)
                            .map(|_| NewMessage {
                                body: BODY,
                                delay: Duration::ZERO,
                            })
                            .collect()
                    })
                    .collect();
                (fresh::<B>(), batches)
            },
            |(broker, batches)| {
                for batch in batches {
                    broker.publish_batch(QUEUE, black_box(batch)).expect("open");
                }
                broker
            },
            BatchSize::PerIteration,
        )
    });
}

/// `fetch_ack_batch/N`: one thread drains N queued messages 100 at a time,
/// acknowledging each batch with one batch acknowledge.
///
/// Models a consumer using `GET .../fetch?max=100` and `POST
/// .../acknowledge` with `{"ids": [...]}`. The delivery and id vectors are
/// reused across batches, as a server would reuse its buffers.
fn fetch_ack_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_ack_batch");
    for n in SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(sample_size(n));
        fetch_ack_batch_one::<Broker>(&mut group, n);
        fetch_ack_batch_one::<MutexBroker>(&mut group, n);
    }
    group.finish();
}

fn fetch_ack_batch_one<B: BenchBroker<Clock = SystemClock>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
) {
    group.bench_function(BenchmarkId::new(B::NAME, n), |b| {
        b.iter_batched(
            || filled::<B>(n),
            |broker| {
                let mut ids = Vec::with_capacity(BATCH);
                for _ in 0..n / BATCH {
                    let out: Vec<Delivery> = broker
                        .try_fetch_batch_from(QUEUE, BATCH, usize::MAX)
                        .expect("open");
                    assert_eq!(out.len(), BATCH);
                    ids.clear();
                    ids.extend(out.iter().map(|d| d.id));
                    let results = broker.acknowledge_batch_in(QUEUE, &ids).expect("open");
                    debug_assert!(results.iter().all(|ok| ok.is_ok()));
                    black_box(results);
                }
                broker
            },
            BatchSize::PerIteration,
        )
    });
}

/// `oversubscribed/4p4c`: the contended workload with 4 producer and 4
/// consumer threads pinned to the same 2 CPUs, whatever the machine has.
///
/// Models a busy host with more runnable threads than cores: the OS
/// preempts threads at random, and a preempted holder of the baseline's
/// lock stalls every thread queued on it, which a lock-free path does not.
/// Throughput is what criterion reports; every publish and every fetch +
/// acknowledge is also timed (two clock reads each, the same for both
/// sides), and after the group the p99.9 of each implementation, over every
/// operation of every iteration (warm-up included), is printed with its
/// ratio.
fn oversubscribed_group(c: &mut Criterion) {
    let mut group = c.benchmark_group("oversubscribed");
    group.throughput(Throughput::Elements(1));
    let engine = oversubscribed_one::<Broker>(&mut group);
    let baseline = oversubscribed_one::<MutexBroker>(&mut group);
    group.finish();
    let p999 = |h: &Histogram<u64>| h.value_at_quantile(0.999) as f64 / 1_000.0;
    for (name, h) in [
        (Broker::<SystemClock>::NAME, &engine),
        (MutexBroker::<SystemClock>::NAME, &baseline),
    ] {
        println!(
            "oversubscribed/4p4c {name}: {} operations, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1_000.0,
            h.value_at_quantile(0.99) as f64 / 1_000.0,
            p999(h)
        );
    }
    println!(
        "oversubscribed/4p4c p99.9 operation latency, ubroker / baseline: {:.2}",
        p999(&engine) / p999(&baseline)
    );
}

fn oversubscribed_one<B: BenchBroker<Clock = SystemClock>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
) -> Histogram<u64> {
    let all = RefCell::new(None::<Histogram<u64>>);
    group.bench_function(BenchmarkId::new(B::NAME, "4p4c"), |b| {
        b.iter_custom(|iters| {
            // At least 100,000 messages per sample, so that every sample has
            // a tail to measure (criterion's first samples are a handful of
            // iterations); the time is scaled back to `iters`.
            let messages = iters.max(100_000);
            let outcome = oversubscribed(&fresh::<B>(), QUEUE, 4, 4, BODY, messages);
            let operations = outcome.operations();
            let mut all = all.borrow_mut();
            match all.as_mut() {
                Some(all) => all.add(&operations).expect("same bounds"),
                None => *all = Some(operations),
            }
            outcome.elapsed.mul_f64(iters as f64 / messages as f64)
        })
    });
    all.into_inner().expect("criterion ran the bench")
}

criterion_group!(
    benches,
    publish,
    fetch_ack,
    fetch_requeue,
    expiry,
    publish_batch,
    fetch_ack_batch,
    contended,
    oversubscribed_group
);
criterion_main!(benches);
