//! The ubroker engine: an in-memory, at-least-once broker of named work
//! queues with leases, touch, delays and dead letters, and nothing else: no
//! I/O, no threads, no async runtime.
//!
//! # Layout
//!
//! * `broker`: [`Broker`], the protocol over named queues: its state and
//!   settings ([`Config`]), the name lookups every operation shares, close.
//!   Beside it, one file per concern:
//!   * `broker/handle`: the API's one grammar, [`QueueHandle`]
//!     (`broker.queue(name).publish(..)`, [`Broker::default_queue`] for the
//!     part-1 queue), and the named outcomes: [`Published`],
//!     [`PublishedBatch`], [`Settled`], [`Deleted`], [`Redriven`];
//!   * `broker/publish`: single and batch publish ([`NewMessage`]), the
//!     byte-budget reservation and the ready/delayed split, each written
//!     once;
//!   * `broker/fetch`: fetch with and without waiting, single and batch;
//!   * `broker/settle`: acknowledge, requeue, touch, single and batch, and
//!     the move to a dead-letter queue;
//!   * `broker/timekeeping`: expiry and delays coming due ([`Sweep`]), and
//!     the signals a timekeeping task waits on;
//!   * `broker/admin`: create or configure ([`QueueUpdate`]), look up,
//!     list, delete and redrive queues;
//!   * `broker/stats`: the counters and snapshots.
//! * `broker/durable`: for a caller that keeps a write-ahead log: the
//!   journal hook attached, two-phase publish (`prepare_publish`, then
//!   `commit_publish` once the record is durable), and restoring queues,
//!   messages and id marks at start-up.
//! * `journal`: [`Journal`], the hook told of every change a log must
//!   record (requeues, expiries, delays coming due, dead-letter moves,
//!   redrives, deliveries, acknowledgements, deletes), and in what order.
//! * `registry`: the named queues behind a sharded lock, lent out without
//!   a reference count; the `max_queues` cap, and the fetches waiting for a
//!   queue that does not exist yet.
//! * `queue`: one queue: where each of its messages is (ready, leased,
//!   delayed), its settings ([`QueueSettings`]) and counters, and its life
//!   cycle (delete). `queue/settle`: acknowledge, requeue, touch and expiry
//!   inside the queue, and `end_delivery`, the one dead-letter decision.
//! * `fifo`: the queue under each ready queue: a lock-free `SegQueue`, one
//!   message per slot; batch pushes and pops are runs of single ones. Under
//!   loom a model of `SegQueue`'s contract stands behind `push` and `pop`,
//!   and the rest runs unchanged.
//! * `lease`: `LeaseTable`, a queue's in-flight deliveries by id (`DashMap`,
//!   or a loom model), whose atomic `remove_if` / `update_if` decide every
//!   settlement and touch.
//! * `timer`: `Timer`, a queue's lease deadlines and delayed messages in due
//!   order, in 8 shards by id; settled leases leave nothing behind.
//! * `agenda`: `Agenda`, which queue (and which of its timer shards) has
//!   something due next across all queues, and the signal that wakes the
//!   timekeeping task early.
//! * `waiters`: `WaitList`, parked fetches, the wake-up protocol, fairness;
//!   and `Parked`, where a waiting fetch is registered, whose drop passes
//!   an unused wake-up on.
//! * `message`: the held message (56 bytes) and [`QueueName`], checked by
//!   the contract's name rule (`ubroker-proto`, shared with the server, the
//!   client and the fuzz model).
//! * `clock`: [`Clock`], [`SystemClock`], [`ManualClock`]: time is injected.
//! * `stats`: [`Stats`], [`QueueStats`], [`QueueInfo`] and the counters.
//! * `error`: [`Error`], every way an operation fails.
//! * `sync`: the only module that chooses between `std` (and crossbeam's
//!   `ShardedLock`) and `loom` types.
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
//!   [`QueueHandle::fetch`].
//! * **Memory follows live state.** A settled lease leaves no entry behind
//!   anywhere; see `timer` for what each lease and delayed message costs.
//!
//! # Which paths take which lock
//!
//! SPEC part 3 ("The engine's message path"): publish, fetch, acknowledge,
//! requeue and touch of a queue take no lock that every operation on that
//! queue shares. What each takes, exactly (normal build; under loom the
//! same code runs on loom-visible twins, see below):
//!
//! * **Lock-free**: the ready queue (crossbeam `SegQueue` push and pop, one
//!   message per slot, batches included), delivery and message id
//!   allocation, the byte budget and every counter (atomic RMWs), finding
//!   `default`, and a producer's check for waiting fetches (one RMW on the
//!   queue's waiter count).
//! * **A queue's life cycle, read side**: the timekeeper's sweep of that
//!   queue only (it reaches the queue through the agenda, not the
//!   registry). A crossbeam `ShardedLock`; delete takes the write side.
//!   Client operations do not take it: the registry's read guard below
//!   already keeps a delete out (`default` is never deleted).
//! * **The registry, read side**: finding a named queue. Also a
//!   `ShardedLock`, held for the operation (the queue is borrowed under it,
//!   so no `Arc` count is touched per operation); creating or deleting a
//!   queue takes the write side, and a dead-letter move or a redrive drops
//!   the read side first (it may create the target).
//! * **A lease-table shard** (`DashMap`, chosen by a hash of the delivery
//!   id): fetch (insert), acknowledge, requeue and expiry (`remove_if`),
//!   touch (`update_if`).
//! * **A timer shard** (one of 8 per queue, lease id mod 8; a delayed
//!   message by its delay sequence mod 8): fetch (schedule the deadline),
//!   acknowledge and requeue (cancel it), touch (move it, inside the lease
//!   shard's lock), delayed publish and delayed requeue, the sweep (the
//!   shards it was hinted). A batch fetch takes each shard its ids reach
//!   once; a batch settle likewise.
//! * **The agenda** (one per broker): when a timer shard's first due time
//!   moves earlier (its first entry, an earlier delay or touch), and in the
//!   sweep. With a queue's TTL fixed, deadlines only grow, so steady fetch
//!   traffic does not take it.
//! * **A queue's wait list**: only while fetches are parked on it
//!   (registering, re-arming, a producer waking a parked fetch).
//! * **The drained signal**: when the byte budget returns to zero (the
//!   broker holds nothing), to wake the server's memory trim.
//! * **The journal** (only with a write-ahead log): called with the queue's
//!   life-cycle read guard held (in a delete, the write guard and the lease
//!   shards' read locks); the log's commit queue is its own lock (SPEC: the
//!   log's path is its own).
//!
//! Lock order, outermost first: registry, life cycle, lease shard, timer
//! shard, agenda, due signal; the wait lists and the drained signal are
//! leaves, and the journal is called under the life cycle only (and never
//! calls back). No lock is held across an `.await` or while calling a
//! waker.
//!
//! # How it is checked
//!
//! Unit tests beside each module drive every rule of the contract with a
//! [`ManualClock`]. The `loom-tests` crate compiles this crate with
//! `--cfg loom`, where `sync` switches to loom's atomics, mutexes and
//! `RwLock` (the twin of `ShardedLock`), and the two structures loom
//! cannot run are replaced by twins of their documented contracts: the
//! `SegQueue` under `fifo` (a linearizable FIFO whose pop may find it
//! empty without synchronising) and the `DashMap` under `lease` (per-id
//! atomic `remove_if` / `update_if`). Everything of ours around them runs
//! as in production: timer shards (two under loom), sweeps, settlement,
//! touch, the life cycle against delete, wake-ups. The models cover
//! settlement, touch and expiry races, a batch's leases across timer
//! shards, delays coming due, wake-ups from every producer (dead-letter
//! moves included), fetch timeouts, queue deletion and close, over every
//! interleaving.
//!
//! # Performance
//!
//! Publish is a lock-free push plus a few atomic RMWs; fetch a lock-free
//! pop, one lease-shard lock and one timer-shard lock; acknowledge one
//! lease-shard lock and one timer-shard lock. Nothing scans. Batches pay
//! the per-request costs once per batch where they can: one byte
//! reservation, id range, clock read and wake-up pass per publish; one id
//! range, deadline and one lock per timer shard reached per fetch,
//! acknowledge or requeue. The `benches` crate measures it against a
//! `Mutex<VecDeque>` + `Mutex<HashMap>` engine written the obvious way
//! (`contended_ratio` for threads racing on one queue), and `ubroker-load`
//! over HTTP.

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

pub use broker::{
    Broker, Config, Deleted, Delivery, NewMessage, Prepared, Published, PublishedBatch,
    QueueHandle, QueueUpdate, Redriven, RestoredMessage, Settled, Sweep,
};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::Error;
pub use journal::Journal;
pub use message::{validate as validate_queue_name, QueueName, MAX_ID, MESSAGE_OVERHEAD};
pub use queue::QueueSettings;
pub use stats::{QueueInfo, QueueStats, Stats};
