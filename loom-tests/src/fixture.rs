//! What every model starts from: a broker on a model clock, message bodies,
//! and [`check`], which runs a model and reports how many interleavings loom
//! explored.
//!
//! Everything here runs either before a model's threads start or after they
//! have been joined; none of it may add synchronisation of its own between
//! model threads, or it would hide the races the models exist to find.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use loom::sync::Arc;
use ubroker_engine::{Broker, Config, Delivery, ManualClock, Timestamp};

/// The lease TTL of every model broker. Only its ratio to the clock's
/// advances matters: models advance by exactly `TTL`, so a lease taken at
/// time zero is due (`deadline <= now`) right after one advance.
pub const TTL: Duration = Duration::from_nanos(10);

/// The broker under test: the real engine on a loom-visible clock.
pub type ModelBroker = Broker<ManualClock>;

/// A fresh broker with [`TTL`] and no byte limit, its clock at zero.
pub fn new_broker() -> Arc<ModelBroker> {
    Arc::new(Broker::with_clock(
        Config {
            ttl: TTL,
            max_queue_bytes: u64::MAX,
        },
        ManualClock::new(),
    ))
}

/// A message body. Models give every message a distinct body, so that a
/// duplicate or a loss shows up in the conservation check.
pub fn msg(body: &'static str) -> Bytes {
    Bytes::from_static(body.as_bytes())
}

/// Publishes `body` and leases it, returning the delivery and its deadline.
///
/// For a model's set-up, before its threads start: the deadline is computed
/// from the clock as it stands, which is only exact while nobody else moves
/// it.
pub fn lease(broker: &ModelBroker, body: &'static str) -> (Delivery, Timestamp) {
    use ubroker_engine::Clock as _;

    broker
        .publish(msg(body))
        .expect("a model broker accepts a publish");
    let deadline = broker.clock().now().saturating_add(TTL);
    let delivery = broker
        .try_fetch()
        .expect("a model broker is open")
        .expect("the message just published is ready");
    assert_eq!(delivery.body, msg(body));
    (delivery, deadline)
}

/// Runs `model` under [`loom::model()`] (so with the `LOOM_*` settings from the
/// environment) and prints how many interleavings it took and how long.
pub fn check<F>(name: &str, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let start = Instant::now();
    loom::model(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model();
    });
    eprintln!(
        "{name}: {} interleavings in {:.2?}",
        runs.load(Ordering::Relaxed),
        start.elapsed()
    );
}
