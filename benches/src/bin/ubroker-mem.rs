//! `ubroker-mem`: broker heap bytes per ready message and per in-flight
//! lease, beyond the body, for the engine and the mutex baseline, and per
//! delayed message for the engine.
//!
//! Usage: `cargo run --release -p ubroker-benches --bin ubroker-mem [N] [BODY]`
//! (defaults: 1,000,000 messages of 32 bytes). Single-threaded on purpose:
//! the counting allocator is process-wide, so nothing else may allocate
//! while a stage is measured. The targets (at most 128 bytes per ready
//! message and 192 per lease, beyond the body) are checked and reported, not
//! asserted: this is a measurement, not a test.

use ubroker_benches::baseline::MutexBroker;
use ubroker_benches::memory::{measure, measure_delayed, CountingAllocator, MemoryReport, Stage};
use ubroker_engine::{Broker, ManualClock};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator::new();

const READY_TARGET: f64 = 128.0;
const LEASE_TARGET: f64 = 192.0;

fn main() {
    let mut args = std::env::args().skip(1);
    let n = parse_arg(args.next(), 1_000_000, "N");
    let body_len = parse_arg(args.next(), 32, "BODY");
    println!("{n} messages of {body_len}-byte bodies; heap bytes beyond the body, per message");
    for report in [
        measure::<Broker<ManualClock>>(n, body_len, &ALLOC),
        measure::<MutexBroker<ManualClock>>(n, body_len, &ALLOC),
    ] {
        print_report(&report);
    }
    let (delayed, due) = measure_delayed(n, body_len, &ALLOC);
    println!("\nubroker-engine, delayed");
    println!(
        "  delayed       : {:>7.1} B beyond body (peak {:>7.1})",
        delayed.per_message_beyond_body(n, body_len),
        delayed.peak as f64 / n as f64 - body_len as f64,
    );
    println!(
        "  came due      : {:>7.1} B beyond body, now ready",
        due.per_message_beyond_body(n, body_len),
    );
}

fn parse_arg(arg: Option<String>, default: usize, name: &str) -> usize {
    match arg {
        None => default,
        Some(text) => text.replace('_', "").parse().unwrap_or_else(|_| {
            eprintln!("{name} must be a positive integer, got {text:?}");
            std::process::exit(2);
        }),
    }
}

fn print_report(r: &MemoryReport) {
    let per = |stage: &Stage| stage.per_message_beyond_body(r.messages, r.body_len);
    // After acknowledge and sweep the bodies are gone, so what is left is
    // all broker overhead: report it per message without subtracting.
    let left = |stage: &Stage| stage.bytes as f64 / r.messages as f64;
    let peak = |stage: &Stage| stage.peak as f64 / r.messages as f64 - r.body_len as f64;
    let verdict = |value: f64, target: f64| if value <= target { "met" } else { "MISSED" };
    println!("\n{}", r.name);
    println!(
        "  ready message : {:>7.1} B beyond body (peak {:>7.1}; target <= {READY_TARGET}: {})",
        per(&r.ready),
        peak(&r.ready),
        verdict(per(&r.ready), READY_TARGET),
    );
    println!(
        "  lease         : {:>7.1} B beyond body (peak {:>7.1}; target <= {LEASE_TARGET}: {})",
        per(&r.leased),
        peak(&r.leased),
        verdict(per(&r.leased), LEASE_TARGET),
    );
    println!(
        "  acknowledged  : {:>7.1} B per message still held ({} bytes), before the sweep",
        left(&r.acknowledged),
        r.acknowledged.bytes
    );
    println!(
        "  swept         : {:>7.1} B per message still held ({} bytes)",
        left(&r.swept),
        r.swept.bytes
    );
}
