//! Benchmarks for ubroker: the engine measured against the engine written the
//! obvious way, so that every number reads as a ratio.
//!
//! # Layout
//!
//! * `bench_broker`: [`BenchBroker`], the broker API the benches drive,
//!   implemented for both [`ubroker_engine::Broker`] and
//!   [`baseline::MutexBroker`], so each scenario is one generic function run
//!   once per implementation, side by side in one criterion group.
//! * `baseline`: [`baseline::MutexBroker`], the same contract on a
//!   `Mutex<VecDeque>` ready queue and a `Mutex<HashMap>` lease table.
//! * `contended`: [`contended::full_cycles`], producer and consumer
//!   threads pushing messages through a broker, timed from a start barrier.
//! * `memory`: [`memory::CountingAllocator`] and [`memory::measure`], broker
//!   bytes per ready message and per lease beyond the body.
//! * `benches/engine.rs`: the criterion groups (publish, fetch + acknowledge,
//!   fetch + requeue, expiry, contended full cycles).
//! * `src/bin/ubroker-mem.rs`: runs the memory measurement for both
//!   implementations with 1M messages of 32-byte bodies.
//! * `examples/contended_ratio.rs`: the contended workload, alternating the
//!   two implementations round by round and printing the ratio per round.
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
