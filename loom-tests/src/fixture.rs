//! What every model starts from: a broker on a model clock, message bodies,
//! and [`check`], which runs a model and reports how many interleavings loom
//! explored.
//!
//! Everything here runs either before a model's threads start or after they
//! have been joined (except [`settle_checking_deadline`], a consumer's own
//! steps); none of it may add synchronisation of its own between model
//! threads, or it would hide the races the models exist to find.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use loom::sync::Arc;
use ubroker_engine::{Broker, Clock as _, Config, Delivery, Error, ManualClock, Timestamp};

use crate::observe::SleepProbe;

/// The lease TTL of every model broker. Only its ratio to the clock's
/// advances matters: models advance by exactly `TTL`, so a lease taken at
/// time zero is due (`deadline <= now`) right after one advance, and so is
/// a message delayed by `TTL` at time zero.
pub const TTL: Duration = Duration::from_nanos(10);

/// The broker under test: the real engine on a loom-visible clock.
pub type ModelBroker = Broker<ManualClock>;

/// A fresh broker with [`TTL`], no byte limit and unlimited deliveries, its
/// clock at zero.
pub fn new_broker() -> Arc<ModelBroker> {
    new_broker_with(Config {
        ttl: TTL,
        ..Config::default()
    })
}

/// A fresh broker with `config`, its clock at zero.
pub fn new_broker_with(config: Config) -> Arc<ModelBroker> {
    Arc::new(Broker::with_clock(config, ManualClock::new()))
}

/// A message body. Models give every message a distinct body, so that a
/// duplicate or a loss shows up in the conservation check.
pub fn msg(body: &'static str) -> Bytes {
    Bytes::from_static(body.as_bytes())
}

/// Publishes `body` to `default` and leases it, returning the delivery and
/// its deadline. See [`lease_in`].
pub fn lease(broker: &ModelBroker, body: &'static str) -> (Delivery, Timestamp) {
    lease_in(broker, "default", body)
}

/// Publishes `body` to `queue` and leases it, returning the delivery and
/// its deadline.
///
/// For a model's set-up, before its threads start: the deadline is computed
/// from the clock as it stands, which is only exact while nobody else moves
/// it.
pub fn lease_in(broker: &ModelBroker, queue: &str, body: &'static str) -> (Delivery, Timestamp) {
    broker
        .queue(queue)
        .publish(msg(body))
        .expect("a model broker accepts a publish");
    let deadline = broker.clock().now().saturating_add(TTL);
    let delivery = broker
        .queue(queue)
        .try_fetch()
        .expect("a model broker is open")
        .expect("the message just published is ready");
    assert_eq!(delivery.body, msg(body));
    (delivery, deadline)
}

/// Consumer side of a race against expiry: reads the clock, then settles
/// (or touches) with `settle`. If the consumer already saw `deadline` pass,
/// the engine must have refused (expiry is exact from the client's view).
pub fn settle_checking_deadline(
    broker: &ModelBroker,
    deadline: Timestamp,
    settle: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    let seen_late = broker.clock().now() >= deadline;
    let result = settle();
    if seen_late {
        assert_eq!(
            result,
            Err(Error::InvalidId),
            "a consumer settled or touched a lease after seeing its deadline pass"
        );
    }
    result
}

/// Runs `model` under [`loom::model()`] (so with the `LOOM_*` settings from the
/// environment) and prints how many interleavings it took and how long.
pub fn check<F>(name: &str, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    check_bounded(name, None, model)
}

/// Branches per run that [`check`] allows (see `check_bounded`).
const MAX_BRANCHES: usize = 20_000;

/// [`check`] with at most `max_preemptions` preemptions per run (or fewer, if
/// `LOOM_MAX_PREEMPTIONS` says so): for a model too large to explore with
/// the suite's default bound in the suite's time budget. A model that uses
/// it says so, and why, in its docs.
pub fn check_bounded<F>(name: &str, max_preemptions: Option<usize>, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    // Loom's default of 1000 branches (atomic loads, lock and scheduling
    // points) per run is too few for a model with a few queues: the final
    // checks alone read every queue's counters several times. They run after
    // the joins, so a longer path costs time per run, not more runs.
    builder.max_branches = builder.max_branches.max(MAX_BRANCHES);
    if let Some(max) = max_preemptions {
        builder.preemption_bound = Some(builder.preemption_bound.map_or(max, |env| env.min(max)));
    }
    eprintln!(
        "{name}: exploring (at most {:?} preemptions)",
        builder.preemption_bound
    );
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model();
    });
    eprintln!(
        "{name}: {} interleavings in {:.2?}",
        runs.load(Ordering::Relaxed),
        start.elapsed()
    );
}

/// Starts a model thread that waits in `fetch` on `default` until a message
/// comes, with a [`SleepProbe`] timeout that never fires and tells whether
/// the fetch went to sleep. A lost wake-up leaves this thread blocked, which
/// loom reports as a deadlock.
pub fn spawn_waiting_fetch(
    broker: &Arc<ModelBroker>,
) -> (
    loom::thread::JoinHandle<Result<Delivery, Error>>,
    SleepProbe,
) {
    spawn_waiting_fetch_from(broker, "default")
}

/// [`spawn_waiting_fetch`] on the queue `queue`.
pub fn spawn_waiting_fetch_from(
    broker: &Arc<ModelBroker>,
    queue: &'static str,
) -> (
    loom::thread::JoinHandle<Result<Delivery, Error>>,
    SleepProbe,
) {
    let probe = SleepProbe::new();
    let waiter = {
        let broker = Arc::clone(broker);
        let probe = probe.clone();
        loom::thread::spawn(move || loom::future::block_on(broker.queue(queue).fetch(probe)))
    };
    (waiter, probe)
}
