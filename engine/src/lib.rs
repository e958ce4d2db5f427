//! The ubroker engine: an in-memory, at-least-once broker of named work
//! queues with leases, touch, delays and dead letters, and nothing else: no
//! I/O, no threads, no async runtime.
//!
//! # Layout
//!
//! * `broker`: [`Broker`], the protocol over named queues: publish, fetch
//!   (with and without waiting), acknowledge, requeue, touch, each single
//!   or in batches ([`NewMessage`]), delays, dead letters, redrive, queue
//!   administration, timekeeping, close, stats.
//! * `broker/durable`: for a caller that keeps a write-ahead log: the
//!   journal hook attached, two-phase publish (`prepare_publish`, then
//!   `commit_publish` once the record is durable), and restoring queues,
//!   messages and id marks at start-up.
//! * `journal`: [`Journal`], the hook told of every change a log must
//!   record (requeues, expiries, delays coming due, dead-letter moves,
//!   redrives, deliveries, acknowledgements, deletes), and in what order.
//! * `registry`: the named queues, the `max_queues` cap, and the fetches
//!   waiting for a queue that does not exist yet.
//! * `queue`: one queue: where each of its messages is (ready, leased,
//!   delayed), its settings and counters, and its life cycle (delete).
//! * `fifo`: the queue under each ready queue: producers push runs (one
//!   message, or a whole batch, contiguous) onto a lock-free `SegQueue`;
//!   consumers pop under a small head lock that keeps a partly taken run's
//!   rest in front. A loom model stands behind the same API.
//! * `lease`: `LeaseTable`, a queue's in-flight deliveries by id (`DashMap`,
//!   or a loom model), whose atomic `remove_if` / `update_if` decide every
//!   settlement and touch.
//! * `timer`: `Timer`, a queue's lease deadlines and delayed messages in due
//!   order; settled leases leave nothing behind.
//! * `agenda`: `Agenda`, which queue has something due next across all
//!   queues, and the signal that wakes the timekeeping task early.
//! * `waiters`: `WaitList`, parked fetches, the wake-up protocol, fairness.
//! * `message`: the held message (56 bytes) and [`QueueName`].
//! * `clock`: [`Clock`], [`SystemClock`], [`ManualClock`]: time is injected.
//! * `stats`: [`Stats`], [`QueueStats`], [`QueueInfo`] and the counters.
//! * `error`: [`Error`], every way an operation fails.
//! * `sync`: the only module that chooses between `std` and `loom` types.
//!
//! # Guarantees
//!
//! * **At least once.** A fetched message is leased, not removed. It leaves
//!   the broker only when acknowledged (or when its queue is deleted); a
//!   requeue or an expired lease puts it back at the tail, to be delivered
//!   again under a new id, or, on its `max_deliveries`-th delivery, at the
//!   tail of the queue's `.dead` queue.
//! * **One settlement per delivery.** Acknowledge, requeue and expiry all
//!   settle through one atomic `remove_if` on the queue's lease table with
//!   the deadline test inside it, and touch through `update_if` with the
//!   same test, so exactly one wins, and a consumer can never settle or
//!   touch a lease whose deadline has passed.
//! * **Conservation.** At every moment each published, unacknowledged
//!   message is in exactly one place: a ready queue, one live lease, or one
//!   timer (delayed).
//! * **No lost wake-ups, fairness, cancellation safety.** See `waiters` and
//!   [`Broker::fetch_from`].
//! * **Memory follows live state.** A settled lease leaves no entry behind
//!   anywhere; see `timer` for what each lease and delayed message costs.
//!
//! # Which paths take which lock
//!
//! Not everything is lock-free, and this says exactly what is:
//!
//! * Lock-free: publishing to the ready queue (a `SegQueue` push of one
//!   run, whether one message or a batch), id allocation,
//!   the byte budget and every counter (atomic RMWs), and the check a
//!   producer makes for waiting fetches (one RMW; the wait list's mutex is
//!   taken only when someone waits).
//! * A queue's life-cycle `RwLock`, read side (two uncontended RMWs): held
//!   by every operation on that queue, so that a delete excludes them.
//! * A queue's ready-queue head `Mutex`: fetches only (single and batch),
//!   around the pop; producers never take it. Fetches of one queue already
//!   serialise on its timer lock, so it costs one uncontended lock.
//! * A `DashMap` shard lock (one of several per queue, chosen by id): fetch
//!   (insert), acknowledge, requeue, expiry (`remove_if`), touch.
//! * A queue's timer `Mutex`: fetch (schedule the deadline), acknowledge and
//!   requeue (cancel it), touch, delayed publish and requeue, the sweep.
//! * The agenda `Mutex`: only when a queue's first due time moves earlier
//!   (its first lease or delayed message, or an earlier touch), and in the
//!   sweep.
//! * The registry `RwLock`: lookups of named queues (read), creation and
//!   deletion (write). The `default` queue is found without it.
//!
//! Lock order, outermost first: life cycle, lease shard, timer, agenda,
//! signal; the ready-queue head and the wait list's mutex are leaves. No lock is held across an
//! `.await` or while calling a waker.
//!
//! # How it is checked
//!
//! Unit tests beside each module drive every rule of the contract with a
//! [`ManualClock`]. The `loom-tests` crate compiles this crate with
//! `--cfg loom`, where `sync`, `fifo` and `lease` switch to loom-visible
//! types, and model-checks the protocols (settlement, touch and expiry
//! races, delays coming due, wake-ups from every producer, fetch timeouts,
//! dead-letter moves, queue deletion, close) over every interleaving.
//!
//! # Performance
//!
//! Publish is a lock-free push plus a few uncontended atomic RMWs; fetch a
//! pop under the head lock, one shard write lock and one timer insert;
//! acknowledge one shard write lock and one timer remove. Nothing scans.
//! Batches pay the per-request costs once per batch: one byte reservation,
//! id range, clock read, push and wake-up pass per publish; one pop, id
//! range, deadline and timer lock per fetch; one timer lock and one counter
//! update per acknowledge or requeue. The `benches`
//! crate measures it against a `Mutex<VecDeque>` + `Mutex<HashMap>` engine
//! written the obvious way, and `ubroker-load` over HTTP.

mod agenda;
mod broker;
mod clock;
mod error;
mod fifo;
mod journal;
mod lease;
mod message;
mod queue;
mod registry;
mod stats;
mod sync;
mod timer;
mod waiters;

pub use broker::{Broker, Config, Delivery, NewMessage, Prepared, QueueUpdate, Sweep};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::Error;
pub use journal::Journal;
pub use message::{validate as validate_queue_name, QueueName, MAX_ID, MESSAGE_OVERHEAD};
pub use queue::QueueSettings;
pub use stats::{QueueInfo, QueueStats, Stats};
