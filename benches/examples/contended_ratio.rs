//! The contended full-cycle workload, engine against baseline, alternated
//! round by round: `ubroker` then `mutex-baseline`, again and again, with
//! the ratio printed per round and the median at the end.
//!
//! Criterion runs one implementation for seconds, then the other, so on a
//! shared machine whose load drifts (other builds, other tests) the two
//! sides of a ratio can see different machines. Alternating short rounds
//! puts both sides of each ratio under the same load; the median discards
//! the rounds a burst of outside load hit.
//!
//! Usage: `cargo run --release -p ubroker-benches --example contended_ratio
//! -- [THREADS] [ROUNDS] [MESSAGES]` (defaults: 2 producers + 2 consumers,
//! 9 rounds, 500,000 messages per round and implementation).

use bytes::Bytes;
use ubroker_benches::baseline::MutexBroker;
use ubroker_benches::contended::full_cycles;
use ubroker_benches::BenchBroker;
use ubroker_engine::{Broker, Config};

const BODY: Bytes = Bytes::from_static(b"0123456789abcdef0123456789abcdef");

fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |name: &str, default: u64| -> u64 {
        args.next().map_or(default, |text| {
            text.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("{name} must be a positive integer, got {text:?}");
                std::process::exit(2);
            })
        })
    };
    let threads = next("THREADS", 2) as usize;
    let rounds = next("ROUNDS", 9).max(1);
    let messages = next("MESSAGES", 500_000).max(1);

    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let engine = ns_per_message(&Broker::new(Config::default()), threads, messages);
        let baseline = ns_per_message(&MutexBroker::new(Config::default()), threads, messages);
        let ratio = baseline / engine;
        println!(
            "round {round}: {threads}p{threads}c  {} {engine:.0} ns/msg  {} {baseline:.0} ns/msg  \
             ubroker/baseline throughput {ratio:.2}x",
            Broker::<ubroker_engine::SystemClock>::NAME,
            MutexBroker::<ubroker_engine::SystemClock>::NAME,
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ubroker/baseline throughput over {rounds} rounds: {:.2}x",
        ratios[ratios.len() / 2]
    );
}

fn ns_per_message<B: BenchBroker>(broker: &B, threads: usize, messages: u64) -> f64 {
    let elapsed = full_cycles(broker, threads, threads, BODY, messages);
    elapsed.as_nanos() as f64 / messages as f64
}
