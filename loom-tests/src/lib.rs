//! Loom models of the ubroker engine's concurrency protocols.
//!
//! Built with `RUSTFLAGS="--cfg loom"`, the engine takes its atomics and
//! `Mutex` from loom (its `sync` facade), backs the ready queue and the lease
//! table with loom-visible models (`fifo.rs`, `lease.rs`), and its
//! `ManualClock` becomes a model clock: every read and advance of time is a
//! step loom can interleave. Each test in `tests/` then runs a scenario of two
//! or three threads under `loom::model`, which executes it once for every
//! distinct interleaving and every value a weakly ordered load may return
//! (with at most `LOOM_MAX_PREEMPTIONS` forced context switches per run). A
//! lost wake-up shows up as loom's "deadlock" error: a model thread blocked in
//! `loom::future::block_on` that nothing will ever wake.
//!
//! In a normal build this crate and its tests compile to nothing.
//!
//! # Layout
//!
//! * `fixture`: the model broker and its settings, message bodies, and
//!   `check`, `loom::model` with an iteration count.
//! * `conservation`: `assert_conserved` and `assert_counters_agree`, the
//!   invariant every model ends with.
//! * `observe`: `WakeFlag`, a waker for futures polled by hand;
//!   `SleepProbe`, a timeout that tells whether a fetch went to sleep; and
//!   `Outcomes`, which proves that a model reached the interleavings it
//!   exists for.
//!
//! # The models
//!
//! | # | file | race | asserts |
//! |---|---|---|---|
//! | 1 | `settlement.rs` | acknowledge vs. expiry of one lease | exactly one wins; an acknowledge that starts after the deadline fails |
//! | 2 | `settlement.rs` | requeue vs. expiry | exactly one wins; the message is in the ready queue once |
//! | 3 | `settlement.rs` | acknowledge vs. requeue | exactly one wins; the loser gets `InvalidId` |
//! | 4 | `settlement.rs` | stale acknowledge vs. expiry + redelivery | the old id fails, the new id (a fresh one) succeeds |
//! | 5 | `fetch_expiry.rs` | fetch (pop + lease insert) vs. two sweeps | a due lease is never missed, never expired twice |
//! | 6 | `wakeup.rs` | publish vs. waiting fetches; a fetch leaving with a message; a woken fetch cancelled | no lost wake-up; a wake-up on a leaving fetch is passed on |
//! | 7 | `close.rs` | close vs. publish, fetch, acknowledge | after close, every call fails `Closed`; waiters wake |
//! | 8 | `traffic.rs` | two publishers, two consumers | FIFO per publisher; delivery ids unique |
//!
//! Every model ends with the conservation invariant: each published,
//! unacknowledged message is in exactly one place (the ready queue or one
//! live lease), nothing is lost or duplicated, and the stats counters agree
//! with each other and with what the model's threads saw.
//!
//! # Running
//!
//! ```sh
//! scripts/loom.sh                 # every model, as CI runs them
//! scripts/loom.sh --test wakeup   # one file; extra arguments go to cargo test
//! ```
//!
//! which runs `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p
//! loom-tests --release --target-dir target/loom` (a separate target
//! directory, so the normal build cache survives). On a 2-core machine
//! shared with other work it took 59 s with the build cached and 2 min 47 s
//! from an empty target directory (1 min 27 s of it building); the largest
//! models are 7 and 8 (about 175 000 and 200 000 interleavings). Each model
//! prints its number of interleavings (`-- --nocapture` to see them). To
//! debug a failure, rerun one test with `LOOM_LOG=trace LOOM_LOCATION=1`.
//!
//! # Proof that they bite
//!
//! Each model was seen to fail on a deliberate bug in the engine (not
//! committed); re-introduce one to check that a model still has teeth:
//!
//! | # | bug | failure |
//! |---|---|---|
//! | 1 | expiry peeks the lease, then removes it unconditionally (check-then-act) | "not exactly one winner: (acknowledge, expired) = (Ok(()), 1)" |
//! | 2 | requeue pushes the message back before removing the lease | "the message is not in the ready queue exactly once" (`ready: 2`) |
//! | 3 | settle validates with a peek and removes separately | "not exactly one winner: (acknowledge, requeue) = (Ok(()), Ok(()))" |
//! | 4 | acknowledge without the deadline check; ids as slot numbers (reused) | "a consumer settled a lease after seeing its deadline pass"; "a delivery id was reused" |
//! | 5 | the expiry entry is queued before the lease is inserted | "the final sweep left a lease behind" |
//! | 6 | notify before push; no re-check after registering; `load(Relaxed)` for `fetch_add(0, AcqRel)` in `notify_one`; no pass-on in `Waiter::drop` or in `finish_with_message` | loom: "deadlock" (a waiter asleep beside a ready message) |
//! | 7 | close wakes the waiters before setting the flag | loom: "deadlock" |
//! | 8 | delivery id allocated by load then store; a LIFO queue; a lost-update counter | "delivery ids are not unique"; "not FIFO per publisher"; counters disagree |
//!
//! # How faithful the models are
//!
//! The ready queue's loom model lets a pop find the queue empty without
//! synchronising with any push, as `SegQueue::pop` does (a fence and a
//! relaxed load of the tail). A model that always took its lock would order
//! every pop after every earlier push and hide lost wake-ups such as a
//! `Relaxed` waiter count in `notify_one`.
//!
//! # What loom does not check
//!
//! Loom treats `SeqCst` accesses as `AcqRel` and does not explore load
//! buffering; the engine's protocols rely on neither (see `waiters.rs`). The
//! `SegQueue` and `DashMap` themselves are not checked here: the models
//! check the engine's protocol on top of their narrow APIs.

#[cfg(loom)]
mod conservation;
#[cfg(loom)]
mod fixture;
#[cfg(loom)]
mod observe;

#[cfg(loom)]
pub use conservation::{assert_conserved, assert_counters_agree};
#[cfg(loom)]
pub use fixture::{check, lease, msg, new_broker, ModelBroker, TTL};
#[cfg(loom)]
pub use observe::{Outcomes, SleepProbe, WakeFlag};
