//! The threaded workloads, engine against baseline, alternated round by
//! round: `ubroker` then `mutex-baseline`, again and again, with the ratio
//! printed per round and a table of medians at the end.
//!
//! Criterion runs one implementation for seconds, then the other, so on a
//! shared machine whose load drifts (other builds, other tests) the two
//! sides of a ratio can see different machines. Alternating short rounds
//! puts both sides of each ratio under the same load; the median discards
//! the rounds a burst of outside load hit.
//!
//! Workloads: `contended` 1p1c, 2p2c and 4p4c (full publish, fetch,
//! acknowledge cycles, as the criterion group `contended`), and
//! `oversubscribed` 4p4c (8 threads pinned to 2 CPUs, every operation
//! timed), for which it also prints the p99.9 operation latency and its
//! ratio. All on one named queue, `jobs`.
//!
//! Usage: `cargo run --release -p ubroker-benches --example contended_ratio
//! -- [ROUNDS] [MESSAGES] [WORKLOAD...]` (defaults: 9 rounds, 500,000
//! messages per round and implementation, every workload; name workloads as
//! `contended/2p2c` or `oversubscribed/4p4c`). With `WARM=1` in the
//! environment each measured round runs on a broker that has run the same
//! round once before (steady-state memory; see `measured`).

use bytes::Bytes;
use ubroker_benches::baseline::MutexBroker;
use ubroker_benches::contended::{full_cycles, oversubscribed};
use ubroker_benches::BenchBroker;
use ubroker_engine::{Broker, Config};

const BODY: Bytes = Bytes::from_static(b"0123456789abcdef0123456789abcdef");
const QUEUE: &str = "jobs";
const WORKLOADS: [&str; 4] = [
    "contended/1p1c",
    "contended/2p2c",
    "contended/4p4c",
    "oversubscribed/4p4c",
];

/// One round of one implementation: ns per message, and p99.9 operation
/// latency in µs where the workload records it.
fn round<B: BenchBroker>(broker: &B, workload: &str, messages: u64) -> (f64, Option<f64>) {
    let (kind, threads) = workload.split_once('/').expect("kind/NpNc");
    let threads: usize = threads[..1].parse().expect("NpNc");
    let per = |elapsed: std::time::Duration| elapsed.as_nanos() as f64 / messages as f64;
    match kind {
        "contended" => (
            per(full_cycles(broker, QUEUE, threads, threads, BODY, messages)),
            None,
        ),
        "oversubscribed" => {
            let outcome = oversubscribed(broker, QUEUE, threads, threads, BODY, messages);
            let us = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.999) as f64 / 1_000.0;
            // Which side of the cycle the tail is on.
            let all = outcome.operations();
            println!(
                "  {}: p99.9 publish {:.1} us, fetch+ack {:.1} us; all operations p99.99 {:.1} us, max {:.1} us",
                B::NAME,
                us(&outcome.publish),
                us(&outcome.consume),
                all.value_at_quantile(0.9999) as f64 / 1_000.0,
                all.max() as f64 / 1_000.0
            );
            (per(outcome.elapsed), Some(us(&outcome.operations())))
        }
        other => {
            eprintln!("unknown workload {other:?}; known: {WORKLOADS:?}");
            std::process::exit(2);
        }
    }
}

/// One measured round on a fresh broker, or with `WARM` set in the
/// environment, on a broker that has already run the same round once: its
/// queue blocks, tables and the allocator's free lists are then warm, which
/// separates the cost of growing memory (fresh pages fault) from the steady
/// state.
fn measured<B: BenchBroker>(broker: B, workload: &str, messages: u64) -> (f64, Option<f64>) {
    if std::env::var_os("WARM").is_some() {
        round(&broker, workload, messages);
    }
    round(&broker, workload, messages)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut number = |name: &str, default: u64| -> u64 {
        args.next().map_or(default, |text| {
            text.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("{name} must be a positive integer, got {text:?}");
                std::process::exit(2);
            })
        })
    };
    let rounds = number("ROUNDS", 9).max(1);
    let messages = number("MESSAGES", 500_000).max(1);
    let named: Vec<String> = std::env::args().skip(3).collect();
    let workloads: Vec<&str> = if named.is_empty() {
        WORKLOADS.to_vec()
    } else {
        named.iter().map(String::as_str).collect()
    };

    let mut table = Vec::new();
    for workload in &workloads {
        let (mut ratios, mut tails) = (Vec::new(), Vec::new());
        let (mut engine_ns, mut baseline_ns) = (Vec::new(), Vec::new());
        for r in 1..=rounds {
            let (engine, engine_p999) =
                measured(Broker::new(Config::default()), workload, messages);
            let (baseline, baseline_p999) =
                measured(MutexBroker::new(Config::default()), workload, messages);
            let ratio = baseline / engine;
            print!(
                "round {r}: {workload}  ubroker {engine:.0} ns/msg  baseline {baseline:.0} ns/msg  \
                 throughput ratio {ratio:.2}x"
            );
            if let (Some(e), Some(b)) = (engine_p999, baseline_p999) {
                print!(
                    "  p99.9 ubroker {e:.1} us  baseline {b:.1} us  ratio {:.2}",
                    e / b
                );
                tails.push(e / b);
            }
            println!();
            ratios.push(ratio);
            engine_ns.push(engine);
            baseline_ns.push(baseline);
        }
        table.push((
            workload,
            median(engine_ns),
            median(baseline_ns),
            median(ratios),
            (!tails.is_empty()).then(|| median(tails)),
        ));
    }
    println!();
    println!(
        "medians of {rounds} alternating rounds, {messages} messages each, load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| workload | ubroker ns/msg | baseline ns/msg | throughput ubroker / baseline | p99.9 ubroker / baseline |");
    println!("|---|---|---|---|---|");
    for (workload, engine, baseline, ratio, tail) in table {
        let tail = tail.map_or("".to_owned(), |t| format!("{t:.2}"));
        println!("| {workload} | {engine:.0} | {baseline:.0} | **{ratio:.2}** | {tail} |");
    }
}
