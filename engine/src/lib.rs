//! The ubroker engine: an in-memory, at-least-once work queue with leases,
//! and nothing else: no I/O, no threads, no async runtime.
//!
//! # Layout
//!
//! * `broker`: [`Broker`], the protocol: publish, fetch (with and without
//!   waiting), acknowledge, requeue, expiry, close, stats.
//! * `fifo`: the lock-free queue (`SegQueue`) under the ready queue and the
//!   expiry queue, with a loom model behind the same API.
//! * `lease`: `LeaseTable`, in-flight deliveries by id (`DashMap`, or a loom
//!   model), whose atomic `remove_if` decides every settlement.
//! * `expiry`: `ExpiryQueue`, lease deadlines in fetch order, swept in O(1)
//!   per lease.
//! * `waiters`: `WaitList`, parked fetches and the wake-up protocol.
//! * `clock`: [`Clock`], [`SystemClock`], [`ManualClock`]: time is injected.
//! * `stats`: [`Stats`] snapshots and the event counters.
//! * `error`: [`Error`], every way an operation fails.
//! * `sync`: the only module that chooses between `std` and `loom` types.
//!
//! # Guarantees
//!
//! * **At least once.** A fetched message is leased, not removed. It leaves
//!   the broker only when acknowledged; a requeue or an expired lease puts it
//!   back at the tail, to be delivered again under a new id.
//! * **One settlement per delivery.** Acknowledge, requeue and expiry all
//!   settle through one atomic `remove_if` on the lease table with the
//!   deadline test inside it, so exactly one wins, and a consumer can never
//!   settle a lease whose deadline has passed.
//! * **Conservation.** At every moment each published, unacknowledged
//!   message is in exactly one place: the ready queue or one live lease.
//! * **No lost wake-ups, cancellation safety.** See `waiters` and
//!   [`Broker::fetch`].
//!
//! # How it is checked
//!
//! Unit tests beside each module drive every rule of the contract with a
//! [`ManualClock`]. The `loom-tests` crate compiles this crate with
//! `--cfg loom`, where `sync`, `fifo` and `lease` switch to loom-visible
//! types, and model-checks the protocols (settlement races, expiry against
//! fetch, wake-ups, close) over every interleaving.
//!
//! # Performance
//!
//! Publish is a lock-free push plus three uncontended atomic RMWs; fetch a
//! lock-free pop, one `DashMap` shard write lock and a push; acknowledge one
//! shard write lock. Nothing scans, and the wait list's lock is touched only
//! when a fetch is actually waiting. The `benches` crate measures all of it
//! against a `Mutex<VecDeque>` + `Mutex<HashMap>` engine written the obvious
//! way.

mod broker;
mod clock;
mod error;
mod expiry;
mod fifo;
mod lease;
mod stats;
mod sync;
mod waiters;

pub use broker::{Broker, Config, Delivery, Sweep};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::Error;
pub use stats::Stats;
