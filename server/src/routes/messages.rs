//! The message routes: publish, fetch (single and batch, long-polling),
//! the settlements (single and batch) and redrive, and reading a request
//! body within its limits.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body as HttpBody;
use hyper::Response;
use ubroker_engine::{validate_queue_name, Clock, Delivery, Error as EngineError};

use super::{Settlement, State};
use crate::connection::WaitSignal;
use crate::decode::{
    delay, fetch_max, fetch_wait, parse_id, parse_ids, parse_publish, query_param, touch_ttl,
    Publish,
};
use crate::error::ApiError;
use crate::replication::Leased;
use crate::response::{self, Body};

/// `POST [/queues/{queue}]/publish[?delay=ms]`.
pub(super) async fn publish<C, B>(
    state: &State<C>,
    queue: &str,
    query: Option<&str>,
    body: B,
) -> Result<Response<Body>, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    validate_queue_name(queue)?;
    let delay = delay(query, &state.config)?;
    let raw = read_body_in_time(state, body).await?;
    let publish = parse_publish(&raw, &state.config)?;
    if matches!(publish, Publish::Batch(_)) && query_param(query, "delay").is_some() {
        return Err(ApiError::DelayOnBatch);
    }
    let count = state.publish(queue, publish, delay).await?;
    Ok(match count {
        None => response::ok_empty(),
        Some(count) => response::published(count),
    })
}

/// Reads the whole request body within `--header-read-timeout`.
pub(super) async fn read_body_in_time<C, B>(state: &State<C>, body: B) -> Result<Bytes, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut read = pin!(read_body(body, state.config.max_body_bytes));
    // A small body is usually in hand already (hyper reads it with the
    // head): no timer for it. Making and dropping one costs more than the
    // rest of the read.
    if let Poll::Ready(read) = poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        return read;
    }
    tokio::time::timeout(state.config.timeouts().header_read, read)
        .await
        .map_err(|_| ApiError::BodyTimeout)?
}

/// Reads the whole request body, refusing to read past `limit` bytes.
async fn read_body<B>(body: B, limit: u64) -> Result<Bytes, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    // A declared length over the limit is refused before reading a byte.
    if body.size_hint().lower() > limit {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let mut limited = pin!(Limited::new(
        body,
        usize::try_from(limit).unwrap_or(usize::MAX)
    ));
    let failed = |error: Box<dyn std::error::Error + Send + Sync>| {
        if error.is::<LengthLimitError>() {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BodyRead
        }
    };
    // The common case, one data frame and the end, is returned as it came,
    // with no list of chunks to gather it in.
    let mut first = None;
    while first.is_none() {
        match limited.frame().await {
            None => return Ok(Bytes::new()),
            Some(Err(error)) => return Err(failed(error)),
            Some(Ok(frame)) => first = frame.into_data().ok().filter(|data| !data.is_empty()),
        }
    }
    let first = first.unwrap_or_default();
    if limited.is_end_stream() {
        return Ok(first);
    }
    let mut all = BytesMut::from(&first[..]);
    while let Some(frame) = limited.frame().await {
        if let Ok(data) = frame.map_err(failed)?.into_data() {
            all.extend_from_slice(&data);
        }
    }
    Ok(all.freeze())
}

/// `GET [/queues/{queue}]/fetch[?wait=ms]`. `signal` (absent when no
/// connection serves the request, as in unit tests) tells the connection
/// when the fetch waits, so that a client that goes away meanwhile ends it.
pub(super) async fn fetch<C: Clock>(
    state: &State<C>,
    queue: &str,
    query: Option<&str>,
    signal: Option<&WaitSignal>,
) -> Result<Response<Body>, ApiError> {
    validate_queue_name(queue)?;
    let wait = fetch_wait(query, &state.config)?;
    if let Some(max) = fetch_max(query, &state.config)? {
        return fetch_batch(state, queue, wait, max, signal).await;
    }
    // Fast path: a ready message needs no timer and no shutdown watch.
    if let Some(delivery) = state.broker.queue(queue).try_fetch()? {
        return Ok(leased(state, response::delivery(&delivery), || {
            vec![delivery.id]
        }));
    }
    let give_up = give_up_after(state, wait)?;
    let waiting = signal.map(WaitSignal::begin);
    let fetched = state.broker.queue(queue).fetch(give_up).await;
    drop(waiting);
    waited(state, fetched)
        .map(|delivery| leased(state, response::delivery(&delivery), || vec![delivery.id]))
}

/// On a replicated node, tags a fetch's answer with the delivery ids it
/// carries ([`Leased`]): if the answer never reaches the client, they are
/// given back. A single node's fetch answers at once and pays nothing.
fn leased<C: Clock>(
    state: &State<C>,
    mut response: Response<Body>,
    ids: impl FnOnce() -> Vec<u64>,
) -> Response<Body> {
    if state.replication.is_some() {
        response.extensions_mut().insert(Leased(ids()));
    }
    response
}

/// `GET [/queues/{queue}]/fetch?max=n[&wait=ms]`: as [`fetch`], answering
/// with up to `max` deliveries as soon as one is ready.
async fn fetch_batch<C: Clock>(
    state: &State<C>,
    queue: &str,
    wait: Duration,
    max: usize,
    signal: Option<&WaitSignal>,
) -> Result<Response<Body>, ApiError> {
    let max_bytes = state.config.max_body_len();
    let ready = state.broker.queue(queue).try_fetch_batch(max, max_bytes)?;
    if !ready.is_empty() {
        return Ok(leased(state, response::deliveries(&ready), || ids(&ready)));
    }
    let give_up = give_up_after(state, wait)?;
    let waiting = signal.map(WaitSignal::begin);
    let fetched = state
        .broker
        .queue(queue)
        .fetch_batch(max, max_bytes, give_up)
        .await;
    drop(waiting);
    waited(state, fetched).map(|deliveries| {
        leased(state, response::deliveries(&deliveries), || {
            ids(&deliveries)
        })
    })
}

fn ids(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.id).collect()
}

/// For a fetch that found nothing ready: `Timeout` at once for `wait=0`,
/// `ShuttingDown` if shutdown has begun, else the future that ends its
/// wait. The engine's fetch ends when this future does: at the wait, when
/// shutdown begins, or when the connection drops it because its client
/// went away. Either way it leases nothing once it gives up.
fn give_up_after<C: Clock>(
    state: &State<C>,
    wait: Duration,
) -> Result<impl std::future::Future<Output = ()>, ApiError> {
    if wait.is_zero() {
        return Err(EngineError::Timeout.into());
    }
    let mut shutting_down = state.shutting_down.clone();
    if *shutting_down.borrow_and_update() {
        return Err(ApiError::ShuttingDown);
    }
    Ok(async move {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutting_down.wait_for(|down| *down) => {}
        }
    })
}

/// What a waiting fetch's outcome answers: a wait cut short by shutdown is
/// `ShuttingDown`, not `Timeout`.
fn waited<C: Clock, T>(state: &State<C>, fetched: Result<T, EngineError>) -> Result<T, ApiError> {
    match fetched {
        Ok(taken) => Ok(taken),
        Err(EngineError::Timeout) if *state.shutting_down.borrow() => Err(ApiError::ShuttingDown),
        Err(error) => Err(error.into()),
    }
}

/// `POST [/queues/{queue}]/{acknowledge,requeue,touch}` body `{"ids": [...]}`:
/// `200 {"results": [...]}`, one per id, even when some are invalid. The
/// query (`?delay=`, `?ttl=`) applies to every id.
pub(super) async fn settle_batch<C, B>(
    state: &State<C>,
    queue: &str,
    settlement: Settlement,
    query: Option<&str>,
    body: B,
) -> Result<Response<Body>, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    validate_queue_name(queue)?;
    // The query is checked before the body is read, as for a single settle.
    let settle: SettleBy = match settlement {
        Settlement::Acknowledge => SettleBy::Acknowledge,
        Settlement::Requeue => SettleBy::Requeue(delay(query, &state.config)?),
        Settlement::Touch => SettleBy::Touch(touch_ttl(query, &state.config)?),
    };
    let raw = read_body_in_time(state, body).await?;
    let ids = parse_ids(&raw, &state.config)?;
    let results = match settle {
        SettleBy::Acknowledge => state.broker.queue(queue).acknowledge_batch(&ids)?,
        SettleBy::Requeue(delay) => state.broker.queue(queue).requeue_batch(&ids, delay)?,
        SettleBy::Touch(ttl) => state.broker.queue(queue).touch_batch(&ids, ttl)?,
    };
    Ok(response::results(&results))
}

/// A settlement with its query applied.
enum SettleBy {
    Acknowledge,
    Requeue(Duration),
    Touch(Option<Duration>),
}

/// `POST [/queues/{queue}]/{acknowledge,requeue,touch}/{id}`.
pub(super) fn settle<C: Clock>(
    state: &State<C>,
    queue: &str,
    settlement: Settlement,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    validate_queue_name(queue)?;
    let id = parse_id(id)?;
    match settlement {
        Settlement::Acknowledge => state.broker.queue(queue).acknowledge(id)?,
        Settlement::Requeue => {
            let delay: Duration = delay(query, &state.config)?;
            state.broker.queue(queue).requeue_after(id, delay)?
        }
        Settlement::Touch => {
            let ttl = touch_ttl(query, &state.config)?;
            state.broker.queue(queue).touch(id, ttl)?
        }
    }
    Ok(response::ok_empty())
}

/// `POST /queues/{queue}.dead/redrive`.
pub(super) fn redrive<C: Clock>(state: &State<C>, queue: &str) -> Result<Response<Body>, ApiError> {
    state.check_writable()?;
    let moved = state.broker.queue(queue).redrive()?;
    Ok(response::count("moved", moved.moved))
}
