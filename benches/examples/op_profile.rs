//! One broker operation, repeated N times, for an instruction-count profile:
//! `valgrind --tool=callgrind --toggle-collect='*op_profile::measure*'`
//! counts only the timed phase, so the setup (filling the queue, leasing
//! what the phase settles) is left out and the figure divided by N is the
//! cost of one operation. Callgrind counts are repeatable on a noisy
//! machine where wall-clock figures are not; `scripts/engine-profile.sh`
//! runs every operation for both implementations and prints the table.
//!
//! Usage: `op_profile IMPL OP [N]` with IMPL `ubroker` or `baseline`, OP
//! one of `publish`, `fetch` (N leases held at the end), `acknowledge`,
//! `requeue` (of N held leases), `fetch_ack`, `fetch_requeue` (N cycles on
//! a queue of N, one lease at a time, as the criterion groups), `expiry`,
//! `publish_batch`, `fetch_batch`, `acknowledge_batch` (batches of 100), and
//! N messages (default 100,000). Bodies are one static 32-byte `Bytes`, as
//! in the criterion groups. All but `expiry` run on the system clock.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use ubroker_benches::baseline::MutexBroker;

use ubroker_benches::BenchBroker;
use ubroker_engine::{Broker, Config, Delivery, ManualClock, NewMessage, SystemClock};

const BODY: Bytes = Bytes::from_static(b"0123456789abcdef0123456789abcdef");
const BATCH: usize = 100;

/// The queue every operation uses: `$QUEUE`, or `jobs`, a named queue, which
/// both implementations find in a hash map under a read lock (the engine
/// finds `default` without one; `QUEUE=default` measures that path).
fn queue() -> &'static str {
    static QUEUE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    QUEUE.get_or_init(|| std::env::var("QUEUE").unwrap_or_else(|_| "jobs".to_owned()))
}

/// The timed phase: the only code callgrind counts. Also prints its
/// wall-clock time per message to stderr (meaningless under valgrind).
#[inline(never)]
fn measure<R>(phase: impl FnOnce() -> R) -> R {
    let began = std::time::Instant::now();
    let result = phase();
    let elapsed = began.elapsed();
    MEASURED.with(|m| m.set(Some(elapsed)));
    result
}

thread_local! {
    static MEASURED: std::cell::Cell<Option<std::time::Duration>> = const { std::cell::Cell::new(None) };
}

fn leased<B: BenchBroker>(broker: &B, n: usize) -> Vec<u64> {
    for _ in 0..n {
        broker
            .publish_to(queue(), BODY, Duration::ZERO)
            .expect("open");
    }
    (0..n)
        .map(|_| {
            broker
                .try_fetch_from(queue())
                .expect("open")
                .expect("queued")
                .id
        })
        .collect()
}

fn run<B: BenchBroker>(op: &str, n: usize, clock: B::Clock, advance: impl Fn(&B)) {
    let broker = B::with_clock(Config::default(), clock);
    match op {
        "publish" => measure(|| {
            for _ in 0..n {
                broker
                    .publish_to(queue(), black_box(BODY), Duration::ZERO)
                    .expect("open");
            }
        }),
        "fetch" => {
            for _ in 0..n {
                broker
                    .publish_to(queue(), BODY, Duration::ZERO)
                    .expect("open");
            }
            let mut out: Vec<Delivery> = Vec::with_capacity(n);
            measure(|| {
                for _ in 0..n {
                    out.push(
                        broker
                            .try_fetch_from(queue())
                            .expect("open")
                            .expect("queued"),
                    );
                }
            });
            black_box(out);
        }
        "acknowledge" => {
            let ids = leased(&broker, n);
            measure(|| {
                for &id in &ids {
                    broker.acknowledge_in(queue(), black_box(id)).expect("live");
                }
            });
        }
        "requeue" => {
            let ids = leased(&broker, n);
            measure(|| {
                for &id in &ids {
                    broker
                        .requeue_in(queue(), black_box(id), Duration::ZERO)
                        .expect("live");
                }
            });
        }
        "fetch_ack" | "fetch_requeue" => {
            for _ in 0..n {
                broker
                    .publish_to(queue(), BODY, Duration::ZERO)
                    .expect("open");
            }
            measure(|| {
                for _ in 0..n {
                    let id = broker
                        .try_fetch_from(queue())
                        .expect("open")
                        .expect("queued")
                        .id;
                    if op == "fetch_ack" {
                        broker.acknowledge_in(queue(), black_box(id)).expect("live");
                    } else {
                        broker
                            .requeue_in(queue(), black_box(id), Duration::ZERO)
                            .expect("live");
                    }
                }
            });
        }
        "expiry" => {
            leased(&broker, n);
            advance(&broker);
            let sweep = measure(|| broker.expire_due());
            assert_eq!(sweep.expired, n);
        }
        "publish_batch" => {
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
            measure(|| {
                for batch in batches {
                    broker
                        .publish_batch(queue(), black_box(batch))
                        .expect("open");
                }
            });
        }
        "fetch_batch" => {
            for _ in 0..n {
                broker
                    .publish_to(queue(), BODY, Duration::ZERO)
                    .expect("open");
            }
            let mut out: Vec<Vec<Delivery>> = Vec::with_capacity(n / BATCH);
            measure(|| {
                for _ in 0..n / BATCH {
                    let got = broker
                        .try_fetch_batch_from(queue(), BATCH, usize::MAX)
                        .expect("open");
                    assert_eq!(got.len(), BATCH);
                    out.push(got);
                }
            });
            black_box(out);
        }
        "acknowledge_batch" => {
            let ids = leased(&broker, n);
            measure(|| {
                for chunk in ids.chunks(BATCH) {
                    let results = broker.acknowledge_batch_in(queue(), chunk).expect("open");
                    black_box(results);
                }
            });
        }
        other => {
            eprintln!("unknown OP {other:?}");
            std::process::exit(2);
        }
    }
    black_box(broker.stats());
    if let Some(elapsed) = MEASURED.with(|m| m.get()) {
        eprintln!(
            "{} {op}: {:.1} ns per message",
            B::NAME,
            elapsed.as_nanos() as f64 / n as f64
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(imp), Some(op)) = (args.next(), args.next()) else {
        eprintln!("usage: op_profile ubroker|baseline OP [N]");
        std::process::exit(2);
    };
    let n: usize = args
        .next()
        .map_or(100_000, |text| text.replace('_', "").parse().expect("N"));
    let ttl = Config::default().ttl;
    match (imp.as_str(), op == "expiry") {
        ("ubroker", false) => run::<Broker>(&op, n, SystemClock::new(), |_| {}),
        ("ubroker", true) => {
            run::<Broker<ManualClock>>(&op, n, ManualClock::new(), |b| b.clock().advance(ttl))
        }
        ("baseline", false) => run::<MutexBroker>(&op, n, SystemClock::new(), |_| {}),
        ("baseline", true) => {
            run::<MutexBroker<ManualClock>>(&op, n, ManualClock::new(), |b| b.clock().advance(ttl))
        }
        _ => {
            eprintln!("IMPL must be ubroker or baseline");
            std::process::exit(2);
        }
    }
}
