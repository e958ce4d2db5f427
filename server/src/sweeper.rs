//! The background task that drives lease expiry.
//!
//! The engine does no work on its own; this task calls
//! [`Broker::expire_due`] at the next pending deadline, so expired messages
//! are back in the queue within about a millisecond (tokio's timer
//! resolution) of their deadline. With no lease pending it sleeps one TTL at
//! most: no lease handed out meanwhile can expire sooner. The sleep is also
//! capped at [`MAX_SWEEP_INTERVAL`], which bounds the delay if the broker's
//! clock is not the wall clock (tests inject a manual one).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use ubroker_engine::{Broker, Clock};

/// The longest the sweeper sleeps between sweeps.
pub const MAX_SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// Sweeps until `shutting_down` becomes `true` (or its sender is dropped).
pub async fn run<C: Clock>(broker: Arc<Broker<C>>, mut shutting_down: watch::Receiver<bool>) {
    let ttl = broker.config().ttl;
    loop {
        let sweep = broker.expire_due();
        if sweep.expired > 0 {
            tracing::debug!(expired = sweep.expired, "leases expired");
        }
        let now = broker.clock().now();
        let sleep = sweep
            .next_deadline
            .map_or(ttl, |deadline| deadline.saturating_duration_since(now))
            .min(MAX_SWEEP_INTERVAL);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = shutting_down.wait_for(|down| *down) => return,
        }
    }
}
