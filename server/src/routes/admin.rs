//! The administrative routes: queues (list, get, create or change,
//! delete), `/stats`, `/metrics` and `/health`.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::body::Body as HttpBody;
use hyper::Response;
use ubroker_engine::{validate_queue_name, Clock};

use super::messages::read_body_in_time;
use super::State;
use crate::decode::parse_put_queue;
use crate::error::ApiError;
use crate::response::{self, Body};

/// `GET /queues`.
pub(super) fn list_queues<C: Clock>(state: &State<C>) -> Result<Response<Body>, ApiError> {
    Ok(response::queues(&state.broker.queues()))
}

/// `GET /queues/{queue}`.
pub(super) fn get_queue<C: Clock>(
    state: &State<C>,
    queue: &str,
) -> Result<Response<Body>, ApiError> {
    Ok(response::queue(&state.broker.queue(queue).info()?))
}

/// `PUT /queues/{queue}`: create, or change settings.
pub(super) async fn put_queue<C, B>(
    state: &State<C>,
    queue: &str,
    body: B,
) -> Result<Response<Body>, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    validate_queue_name(queue)?;
    let raw = read_body_in_time(state, body).await?;
    let update = parse_put_queue(&raw, &state.config)?;
    state.check_writable()?;
    let info = state.broker.queue(queue).put(update)?;
    if let Some(durable) = &state.durable {
        durable.queue_put(&info)?;
    }
    if let Some(replication) = &state.replication {
        replication.queue_put(&info)?;
    }
    Ok(response::queue(&info))
}

/// `GET /stats`: every queue's figures, for people and scripts.
pub(super) fn stats<C: Clock>(state: &State<C>) -> Response<Body> {
    let queues: BTreeMap<String, response::QueueStatsBody> = state
        .broker
        .all_queue_stats()
        .into_iter()
        .map(|(name, stats)| (name.as_str().to_owned(), stats.into()))
        .collect();
    let uptime_ms = u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let log = state.durable.as_ref().map(|durable| durable.stats_body());
    response::stats(uptime_ms, &queues, log.as_ref())
}

/// `GET /metrics`: the Prometheus text exposition.
pub(super) fn metrics<C: Clock>(state: &State<C>) -> Result<Response<Body>, ApiError> {
    let text = state
        .metrics
        .encode()
        .map_err(|_| ApiError::Internal("could not encode the metrics"))?;
    Ok(response::metrics(text))
}

/// `GET /health`: 200 while serving, 503 from SIGTERM (and through the
/// drain) on.
pub(super) fn health<C: Clock>(state: &State<C>) -> Response<Body> {
    if state
        .durable
        .as_ref()
        .is_some_and(|durable| durable.failed())
    {
        response::log_failed_health()
    } else if state.healthy() {
        response::healthy()
    } else {
        response::shutting_down_health()
    }
}

/// `DELETE /queues/{queue}`.
pub(super) fn delete_queue<C: Clock>(
    state: &State<C>,
    queue: &str,
) -> Result<Response<Body>, ApiError> {
    state.check_writable()?;
    let deleted = state.broker.queue(queue).delete()?;
    if let Some(durable) = &state.durable {
        durable.queue_deleted(queue)?;
    }
    if let Some(replication) = &state.replication {
        replication.queue_deleted(queue)?;
    }
    Ok(response::count("deleted", deleted.messages))
}
