//! Benchmarks for ubroker: the engine measured against the engine written the
//! obvious way, so that every number reads as a ratio.
//!
//! # Layout
//!
//! * `bench_broker`: [`BenchBroker`], the broker API the benches drive,
//!   implemented for both [`ubroker_engine::Broker`] and
//!   [`baseline::MutexBroker`], so each scenario is one generic function run
//!   once per implementation, side by side in one criterion group.
//! * `baseline`: [`baseline::MutexBroker`], the same contract (named
//!   queues, touch, delays, dead letters, batches) on a registry `RwLock`
//!   and, per queue, `Mutex<VecDeque>` ready, `Mutex<HashMap>` leases with a
//!   deadline `BTreeSet`, and a `Mutex<BTreeMap>` of delayed messages.
//! * `conformance` (tests only): contract tests run against both
//!   implementations, so the baseline cannot cut corners.
//! * `contended`: [`contended::full_cycles`] and
//!   [`contended::oversubscribed`], producer and consumer threads pushing
//!   messages through a broker, timed from a start barrier (the latter
//!   pinned to two CPUs, with per-operation latency histograms).
//! * `memory`: [`memory::CountingAllocator`] and [`memory::measure`], broker
//!   bytes per ready message and per lease beyond the body.
//! * `benches/engine.rs`: the criterion groups (publish, fetch + acknowledge,
//!   fetch + requeue, expiry, their batch forms, contended full cycles,
//!   oversubscribed).
//! * `src/bin/ubroker-mem.rs`: runs the memory measurement for both
//!   implementations with 1M messages of 32-byte bodies.
//! * `examples/contended_ratio.rs`: the threaded workloads, alternating the
//!   two implementations round by round, printing a table of medians.
//! * `examples/bench_ratios.rs`: the ratio table of the last criterion run.
//! * `examples/op_profile.rs`: one operation N times, for
//!   `scripts/engine-profile.sh` (callgrind instruction and atomic counts).
//!
//! # What it must never do
//!
//! Make the baseline slow on purpose. It is what a careful engineer would
//! write first, with no lock-free structures; if the engine cannot beat it,
//! the engine's complexity is not paying for itself, and the benches must be
//! able to say so.

pub mod baseline;
mod bench_broker;
#[cfg(test)]
mod conformance;
pub mod contended;
pub mod memory;

pub use bench_broker::BenchBroker;
