//! The routes: [`Route::parse`] turns (method, path) into a [`Route`], then
//! one `match` calls a function per route.
//!
//! | route | handler |
//! |---|---|
//! | `POST /publish`, `POST /queues/{queue}/publish[?delay=ms]` | [`publish`]: one message, or a batch `{"messages": [...]}` |
//! | `GET /fetch`, `GET /queues/{queue}/fetch[?wait=ms][&max=n]` | [`fetch`]: lease the head (or up to `max`), long-polling |
//! | `POST [/queues/{queue}]/acknowledge/{id}` | [`settle`] with [`Settlement::Acknowledge`] |
//! | `POST [/queues/{queue}]/requeue/{id}[?delay=ms]` | [`settle`] with [`Settlement::Requeue`] |
//! | `POST [/queues/{queue}]/touch/{id}[?ttl=ms]` | [`settle`] with [`Settlement::Touch`] |
//! | `POST [/queues/{queue}]/{acknowledge,requeue,touch}` body `{"ids": [...]}` | [`settle_batch`]: positional results |
//! | `POST /queues/{queue}.dead/redrive` | [`redrive`] |
//! | `GET /queues` | [`list_queues`] |
//! | `GET`, `PUT`, `DELETE /queues/{queue}` | [`get_queue`], [`put_queue`], [`delete_queue`] |
//! | anything else | 404, or 405 with `Allow` for a known path |
//!
//! The unprefixed routes are the queue `default`. Names are not
//! percent-decoded: a name is checked as it stands in the path.
//!
//! Handlers are generic over the request body type, so unit tests drive them
//! with in-memory bodies and no socket. A handler validates everything before
//! it calls the engine: a request that fails validation changes nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body as HttpBody;
use hyper::header::{
    GetAll, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, HOST, TRANSFER_ENCODING,
};
use hyper::{Method, Request, Response, Version};
use tokio::sync::watch;
use ubroker_engine::{
    validate_queue_name, Broker, Clock, Error as EngineError, NewMessage, QueueName,
};

use crate::config::Config;
use crate::connection::WaitSignal;
use crate::decode::{
    delay, fetch_max, fetch_wait, head_bytes, parse_id, parse_ids, parse_publish, parse_put_queue,
    query_param, touch_ttl, Publish,
};
use crate::durability::Durability;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::response::{self, Body};

/// What every request handler shares.
pub struct State<C: Clock> {
    pub(crate) broker: Arc<Broker<C>>,
    pub(crate) config: Config,
    /// Becomes `true` when shutdown begins: waiting fetches answer 503.
    pub(crate) shutting_down: watch::Receiver<bool>,
    /// Set when SIGTERM arrives, `--drain-ms` before shutdown begins:
    /// `/health` answers 503 while everything else is served as usual.
    draining: AtomicBool,
    pub(crate) metrics: Metrics,
    started: tokio::time::Instant,
    /// The write-ahead log, with `--data-dir`.
    pub(crate) durable: Option<Arc<Durability>>,
}

impl<C: Clock> State<C> {
    /// Handler state over `broker`; shutdown is signalled through `shutting_down`.
    pub fn new(
        broker: Arc<Broker<C>>,
        config: Config,
        shutting_down: watch::Receiver<bool>,
    ) -> Self {
        State {
            metrics: Metrics::new(broker.clone()),
            broker,
            config,
            shutting_down,
            draining: AtomicBool::new(false),
            started: tokio::time::Instant::now(),
            durable: None,
        }
    }

    /// Logs through `durable` (`--data-dir`).
    pub fn with_durability(mut self, durable: Option<Arc<Durability>>) -> Self {
        if let Some(durable) = &durable {
            self.metrics = self.metrics.with_log(durable.clone());
        }
        self.durable = durable;
        self
    }

    /// `503 log_failed` once the log has failed, for requests that change
    /// what it must record.
    fn check_writable(&self) -> Result<(), ApiError> {
        match &self.durable {
            Some(durable) => durable.check_writable(),
            None => Ok(()),
        }
    }

    /// From now on `/health` answers 503 (the drain before shutdown).
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn healthy(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && !*self.shutting_down.borrow()
    }
}

/// How a delivery is settled (or extended) by its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Acknowledge,
    Requeue,
    Touch,
}

/// What a queue route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOp<'a> {
    Publish,
    Fetch,
    Settle(Settlement, &'a str),
    /// A settlement of the ids in the body.
    SettleBatch(Settlement),
    Redrive,
}

impl QueueOp<'_> {
    fn allow(self) -> &'static str {
        match self {
            QueueOp::Fetch => "GET",
            _ => "POST",
        }
    }

    fn method_ok(self, method: &Method) -> bool {
        match self {
            QueueOp::Fetch => method == Method::GET,
            _ => method == Method::POST,
        }
    }
}

/// A recognised path. Names and ids are carried unchecked, so that a bad one
/// is a `400` from its handler, not a `404`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// A message route of one queue (`default` for the unprefixed ones,
    /// which are not `prefixed`).
    Queue {
        queue: &'a str,
        op: QueueOp<'a>,
        prefixed: bool,
    },
    /// `/queues`.
    Queues,
    /// `/queues/{queue}`.
    QueueAdmin(&'a str),
    /// `/stats`.
    Stats,
    /// `/metrics`.
    Metrics,
    /// `/health`.
    Health,
}

impl<'a> Route<'a> {
    /// Recognises `path`, or `None` (a 404).
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        match path {
            "/queues" => return Some(Route::Queues),
            "/stats" => return Some(Route::Stats),
            "/metrics" => return Some(Route::Metrics),
            "/health" => return Some(Route::Health),
            _ => {}
        }
        if let Some(rest) = path.strip_prefix("/queues/") {
            return Some(match rest.split_once('/') {
                None => Route::QueueAdmin(rest),
                Some((queue, tail)) => Route::Queue {
                    queue,
                    op: QueueOp::parse(tail, true)?,
                    prefixed: true,
                },
            });
        }
        Some(Route::Queue {
            queue: QueueName::DEFAULT,
            op: QueueOp::parse(path.strip_prefix('/')?, false)?,
            prefixed: false,
        })
    }

    /// The index in [`PATTERNS`] of the route's pattern, for logs and
    /// metrics: never the raw path, so that ids and names cannot blow up
    /// cardinality.
    pub fn pattern_index(self) -> usize {
        match self {
            Route::Queue { op, prefixed, .. } => {
                // (unprefixed, prefixed). Batch settles were added after the
                // rest: their patterns come last in `PATTERNS`, so the
                // indices of the others stay put.
                let (plain, under_queues) = match op {
                    QueueOp::Publish => (0, 5),
                    QueueOp::Fetch => (1, 6),
                    QueueOp::Settle(Settlement::Acknowledge, _) => (2, 7),
                    QueueOp::Settle(Settlement::Requeue, _) => (3, 8),
                    QueueOp::Settle(Settlement::Touch, _) => (4, 9),
                    // Redrive exists only under `/queues/` (`QueueOp::parse`).
                    QueueOp::Redrive => (10, 10),
                    QueueOp::SettleBatch(Settlement::Acknowledge) => (16, 19),
                    QueueOp::SettleBatch(Settlement::Requeue) => (17, 20),
                    QueueOp::SettleBatch(Settlement::Touch) => (18, 21),
                };
                if prefixed {
                    under_queues
                } else {
                    plain
                }
            }
            Route::Queues => 11,
            Route::QueueAdmin(_) => 12,
            Route::Stats => 13,
            Route::Metrics => 14,
            Route::Health => 15,
        }
    }
}

/// Every route pattern, as metrics and logs label them (indexed by
/// [`Route::pattern_index`]).
pub const PATTERNS: [&str; 22] = [
    "/publish",
    "/fetch",
    "/acknowledge/{id}",
    "/requeue/{id}",
    "/touch/{id}",
    "/queues/{queue}/publish",
    "/queues/{queue}/fetch",
    "/queues/{queue}/acknowledge/{id}",
    "/queues/{queue}/requeue/{id}",
    "/queues/{queue}/touch/{id}",
    "/queues/{queue}/redrive",
    "/queues",
    "/queues/{queue}",
    "/stats",
    "/metrics",
    "/health",
    "/acknowledge",
    "/requeue",
    "/touch",
    "/queues/{queue}/acknowledge",
    "/queues/{queue}/requeue",
    "/queues/{queue}/touch",
];

impl<'a> QueueOp<'a> {
    /// The part of a queue route after the queue: `publish`, `fetch`,
    /// `acknowledge[/{id}]`, `requeue[/{id}]`, `touch[/{id}]`, and (under
    /// `/queues/`) `redrive`. An id is one segment of any text.
    fn parse(tail: &'a str, prefixed: bool) -> Option<QueueOp<'a>> {
        match tail {
            "publish" => return Some(QueueOp::Publish),
            "fetch" => return Some(QueueOp::Fetch),
            "redrive" if prefixed => return Some(QueueOp::Redrive),
            "acknowledge" => return Some(QueueOp::SettleBatch(Settlement::Acknowledge)),
            "requeue" => return Some(QueueOp::SettleBatch(Settlement::Requeue)),
            "touch" => return Some(QueueOp::SettleBatch(Settlement::Touch)),
            _ => {}
        }
        let (kind, id) = tail.split_once('/')?;
        let settlement = match kind {
            "acknowledge" => Settlement::Acknowledge,
            "requeue" => Settlement::Requeue,
            "touch" => Settlement::Touch,
            _ => return None,
        };
        (!id.contains('/')).then_some(QueueOp::Settle(settlement, id))
    }
}

/// Answers one request. Never fails and never panics on client input: every
/// failure becomes an `{"error": ..., "code": ...}` response.
pub async fn handle<C, B>(state: &State<C>, req: Request<B>) -> Response<Body>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    respond(state, req).await.1
}

/// [`handle`], also saying which route answered: the index of its pattern
/// in [`PATTERNS`] (`None` for a path no route matches), which is what
/// metrics and logs label the request with. The path is parsed once.
pub(crate) async fn respond<C, B>(
    state: &State<C>,
    req: Request<B>,
) -> (Option<usize>, Response<Body>)
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let admitted = admit(state, &req);
    let (parts, body) = req.into_parts();
    let route = Route::parse(parts.uri.path());
    let index = route.map(Route::pattern_index);
    let result = match (admitted, route) {
        (Err(error), _) => Err(error),
        (Ok(()), None) => Err(ApiError::NotFound),
        (Ok(()), Some(route)) => dispatch(state, route, &parts, body).await,
    };
    (
        index,
        result.unwrap_or_else(|error| response::error(&error)),
    )
}

async fn dispatch<C, B>(
    state: &State<C>,
    route: Route<'_>,
    parts: &hyper::http::request::Parts,
    body: B,
) -> Result<Response<Body>, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let query = parts.uri.query();
    let method = &parts.method;
    match route {
        Route::Queue { op, .. } if !op.method_ok(method) => {
            Err(ApiError::MethodNotAllowed { allow: op.allow() })
        }
        Route::Queue { queue, op, .. } => match op {
            QueueOp::Publish => publish(state, queue, query, body).await,
            QueueOp::Fetch => fetch(state, queue, query, parts.extensions.get()).await,
            QueueOp::Settle(settlement, id) => settle(state, queue, settlement, id, query),
            QueueOp::SettleBatch(settlement) => {
                settle_batch(state, queue, settlement, query, body).await
            }
            QueueOp::Redrive => redrive(state, queue),
        },
        Route::Queues if method == Method::GET => list_queues(state),
        Route::Stats if method == Method::GET => Ok(stats(state)),
        Route::Metrics if method == Method::GET => metrics(state),
        Route::Health if method == Method::GET => Ok(health(state)),
        Route::Queues | Route::Stats | Route::Metrics | Route::Health => {
            Err(ApiError::MethodNotAllowed { allow: "GET" })
        }
        Route::QueueAdmin(queue) => match *method {
            Method::GET => get_queue(state, queue),
            Method::PUT => put_queue(state, queue, body).await,
            Method::DELETE => delete_queue(state, queue),
            _ => Err(ApiError::MethodNotAllowed {
                allow: "GET, PUT, DELETE",
            }),
        },
    }
}

/// Checks what applies to every route, before routing: the size of the
/// request head, the framing rules hyper leaves to the application, the
/// bearer token if one is configured, and the content coding.
fn admit<C: Clock, B>(state: &State<C>, req: &Request<B>) -> Result<(), ApiError> {
    // hyper enforces a hard ceiling with a bare 431; this is the configured
    // limit, answered with a JSON body like every other error.
    let limit = state.config.max_header_bytes;
    if head_bytes(req) as u64 > limit {
        return Err(ApiError::HeadersTooLarge { limit });
    }
    let headers = req.headers();
    // RFC 9112, section 3.2: exactly one Host in HTTP/1.1, at most one in
    // HTTP/1.0.
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ApiError::RepeatedHeader { name: "Host" }),
        (None, _) if req.version() >= Version::HTTP_11 => return Err(ApiError::MissingHost),
        _ => {}
    }
    // hyper frames a body by its final `chunked` and ignores the codings
    // before it (`gzip, chunked`): those would reach the JSON parser still
    // encoded. RFC 9112, section 6.1: 501 for a coding not understood.
    if !codings_are(headers.get_all(TRANSFER_ENCODING), "chunked") {
        return Err(ApiError::UnsupportedTransferEncoding);
    }
    // `/health` is for load balancers and orchestrators, which hold no
    // token: the one route the token does not guard.
    let guarded = req.uri().path() != "/health";
    if let (Some(token), true) = (&state.config.auth_token, guarded) {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let presented = values.next();
        if values.next().is_some() {
            // Two credentials: whichever one were checked, the other would
            // be ignored silently.
            return Err(ApiError::RepeatedHeader {
                name: "Authorization",
            });
        }
        let presented = presented
            .and_then(|value| crate::auth::bearer_token(value.as_bytes()))
            .unwrap_or_default();
        if !crate::auth::token_matches(presented, token.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    if !codings_are(headers.get_all(CONTENT_ENCODING), "identity") {
        return Err(ApiError::UnsupportedContentEncoding);
    }
    Ok(())
}

/// Whether every coding listed in `values` (comma-separated, in any number
/// of header lines) is `only`, ignoring ASCII case. No header at all is fine.
fn codings_are(values: GetAll<'_, HeaderValue>, only: &str) -> bool {
    values.iter().all(|value| {
        value
            .as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|coding| !coding.is_empty())
            .all(|coding| coding.eq_ignore_ascii_case(only.as_bytes()))
    })
}

/// `POST [/queues/{queue}]/publish[?delay=ms]`.
async fn publish<C, B>(
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
    match parse_publish(&raw, &state.config)? {
        Publish::One(message) => {
            match &state.durable {
                None => {
                    state.broker.publish_to(queue, message, delay)?;
                }
                Some(durable) => {
                    let entry = NewMessage {
                        body: message,
                        delay,
                    };
                    durable.publish(&state.broker, queue, vec![entry]).await?;
                }
            }
            Ok(response::ok_empty())
        }
        Publish::Batch(_) if query_param(query, "delay").is_some() => Err(ApiError::DelayOnBatch),
        Publish::Batch(messages) => {
            let count = messages.len() as u64;
            match &state.durable {
                None => {
                    state.broker.publish_batch(queue, messages)?;
                }
                // One record for the whole batch: all or nothing on disk
                // as in the broker.
                Some(durable) => {
                    durable.publish(&state.broker, queue, messages).await?;
                }
            }
            Ok(response::published(count))
        }
    }
}

/// Reads the whole request body within `--header-read-timeout`.
async fn read_body_in_time<C, B>(state: &State<C>, body: B) -> Result<Bytes, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let read = read_body(body, state.config.max_body_bytes);
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
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(ApiError::BodyTooLarge { limit }),
        Err(_) => Err(ApiError::BodyRead),
    }
}

/// `GET [/queues/{queue}]/fetch[?wait=ms]`. `signal` (absent when no
/// connection serves the request, as in unit tests) tells the connection
/// when the fetch waits, so that a client that goes away meanwhile ends it.
async fn fetch<C: Clock>(
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
    if let Some(delivery) = state.broker.try_fetch_from(queue)? {
        return Ok(response::delivery(&delivery));
    }
    let give_up = give_up_after(state, wait)?;
    let waiting = signal.map(WaitSignal::begin);
    let fetched = state.broker.fetch_from(queue, give_up).await;
    drop(waiting);
    waited(state, fetched).map(|delivery| response::delivery(&delivery))
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
    let mut ready = Vec::new();
    if state
        .broker
        .try_fetch_batch_from(queue, max, max_bytes, &mut ready)?
        > 0
    {
        return Ok(response::deliveries(&ready));
    }
    let give_up = give_up_after(state, wait)?;
    let waiting = signal.map(WaitSignal::begin);
    let fetched = state
        .broker
        .fetch_batch_from(queue, max, max_bytes, give_up)
        .await;
    drop(waiting);
    waited(state, fetched).map(|deliveries| response::deliveries(&deliveries))
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
async fn settle_batch<C, B>(
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
        SettleBy::Acknowledge => state.broker.acknowledge_batch_in(queue, &ids)?,
        SettleBy::Requeue(delay) => state.broker.requeue_batch_in(queue, &ids, delay)?,
        SettleBy::Touch(ttl) => state.broker.touch_batch_in(queue, &ids, ttl)?,
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
fn settle<C: Clock>(
    state: &State<C>,
    queue: &str,
    settlement: Settlement,
    id: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    validate_queue_name(queue)?;
    let id = parse_id(id)?;
    match settlement {
        Settlement::Acknowledge => state.broker.acknowledge_in(queue, id)?,
        Settlement::Requeue => {
            let delay: Duration = delay(query, &state.config)?;
            state.broker.requeue_in(queue, id, delay)?
        }
        Settlement::Touch => {
            let ttl = touch_ttl(query, &state.config)?;
            state.broker.touch_in(queue, id, ttl)?
        }
    }
    Ok(response::ok_empty())
}

/// `POST /queues/{queue}.dead/redrive`.
fn redrive<C: Clock>(state: &State<C>, queue: &str) -> Result<Response<Body>, ApiError> {
    state.check_writable()?;
    let moved = state.broker.redrive(queue)?;
    Ok(response::count("moved", moved))
}

/// `GET /queues`.
fn list_queues<C: Clock>(state: &State<C>) -> Result<Response<Body>, ApiError> {
    Ok(response::queues(&state.broker.queues()))
}

/// `GET /queues/{queue}`.
fn get_queue<C: Clock>(state: &State<C>, queue: &str) -> Result<Response<Body>, ApiError> {
    Ok(response::queue(&state.broker.queue_info(queue)?))
}

/// `PUT /queues/{queue}`: create, or change settings.
async fn put_queue<C, B>(state: &State<C>, queue: &str, body: B) -> Result<Response<Body>, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    validate_queue_name(queue)?;
    let raw = read_body_in_time(state, body).await?;
    let update = parse_put_queue(&raw, &state.config)?;
    state.check_writable()?;
    let info = state.broker.put_queue(queue, update)?;
    if let Some(durable) = &state.durable {
        durable.queue_put(&info)?;
    }
    Ok(response::queue(&info))
}

/// `GET /stats`: every queue's figures, for people and scripts.
fn stats<C: Clock>(state: &State<C>) -> Response<Body> {
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
fn metrics<C: Clock>(state: &State<C>) -> Result<Response<Body>, ApiError> {
    let text = state
        .metrics
        .encode()
        .map_err(|_| ApiError::Internal("could not encode the metrics"))?;
    Ok(response::metrics(text))
}

/// `GET /health`: 200 while serving, 503 from SIGTERM (and through the
/// drain) on.
fn health<C: Clock>(state: &State<C>) -> Response<Body> {
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
fn delete_queue<C: Clock>(state: &State<C>, queue: &str) -> Result<Response<Body>, ApiError> {
    state.check_writable()?;
    let deleted = state.broker.delete_queue(queue)?;
    if let Some(durable) = &state.durable {
        durable.queue_deleted(queue)?;
    }
    Ok(response::count("deleted", deleted))
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;
    use std::time::Duration;

    use ubroker_engine::{Config as EngineConfig, ManualClock};

    use super::*;

    fn state() -> (State<ManualClock>, watch::Sender<bool>) {
        let config = Config::for_port(0);
        let broker = Arc::new(Broker::with_clock(
            EngineConfig {
                ttl: Duration::from_secs(1),
                ..EngineConfig::default()
            },
            ManualClock::new(),
        ));
        let (tx, rx) = watch::channel(false);
        (State::new(broker, config, rx), tx)
    }

    async fn call(
        state: &State<ManualClock>,
        method: Method,
        uri: &str,
        body: &str,
    ) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, "x")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let res = handle(state, req).await;
        let status = res.status().as_u16();
        assert_eq!(
            res.headers()[hyper::header::CONTENT_TYPE],
            "application/json"
        );
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn publish_fetch_acknowledge() {
        let (s, _tx) = state();
        assert_eq!(
            call(&s, Method::POST, "/publish", r#"{"body":"hi \"you\""}"#).await,
            (200, "{}".into())
        );
        let (status, body) = call(&s, Method::GET, "/fetch", "").await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            r#"{"message":{"body":"hi \"you\""},"id":1,"message_id":1,"attempt":1}"#
        );
        assert_eq!(
            call(&s, Method::POST, "/acknowledge/1", "").await,
            (200, "{}".into())
        );
        assert_eq!(
            call(&s, Method::POST, "/acknowledge/1", "").await,
            (
                400,
                r#"{"error":"id is invalid","code":"invalid_id"}"#.into()
            )
        );
    }

    #[test]
    fn paths_parse_into_routes() {
        use QueueOp::*;
        use Settlement::*;
        let d = |op| {
            Some(Route::Queue {
                queue: "default",
                op,
                prefixed: false,
            })
        };
        let q = |queue, op| {
            Some(Route::Queue {
                queue,
                op,
                prefixed: true,
            })
        };
        assert_eq!(Route::parse("/publish"), d(Publish));
        assert_eq!(Route::parse("/fetch"), d(Fetch));
        assert_eq!(Route::parse("/acknowledge/5"), d(Settle(Acknowledge, "5")));
        assert_eq!(Route::parse("/requeue/x"), d(Settle(Requeue, "x")));
        assert_eq!(Route::parse("/requeue/"), d(Settle(Requeue, "")));
        assert_eq!(Route::parse("/touch/7"), d(Settle(Touch, "7")));
        assert_eq!(Route::parse("/acknowledge"), d(SettleBatch(Acknowledge)));
        assert_eq!(Route::parse("/requeue"), d(SettleBatch(Requeue)));
        assert_eq!(Route::parse("/touch"), d(SettleBatch(Touch)));
        assert_eq!(
            Route::parse("/queues/j/acknowledge"),
            q("j", SettleBatch(Acknowledge))
        );
        assert_eq!(Route::parse("/stats"), Some(Route::Stats));
        assert_eq!(Route::parse("/metrics"), Some(Route::Metrics));
        assert_eq!(Route::parse("/health"), Some(Route::Health));
        assert_eq!(Route::parse("/queues/jobs/publish"), q("jobs", Publish));
        assert_eq!(Route::parse("/queues/jobs/fetch"), q("jobs", Fetch));
        assert_eq!(
            Route::parse("/queues/j.dead/touch/1"),
            q("j.dead", Settle(Touch, "1"))
        );
        assert_eq!(Route::parse("/queues/j.dead/redrive"), q("j.dead", Redrive));
        assert_eq!(Route::parse("/queues//publish"), q("", Publish));
        assert_eq!(Route::parse("/queues"), Some(Route::Queues));
        assert_eq!(
            Route::parse("/queues/jobs"),
            Some(Route::QueueAdmin("jobs"))
        );
        assert_eq!(Route::parse("/queues/"), Some(Route::QueueAdmin("")));
        for unknown in [
            "/",
            "",
            "/redrive",
            "/requeue/1/2",
            "/ack/1",
            "/redrive/1",
            "/queues/jobs/",
            "/queues/jobs/other",
            "/queues/jobs/publish/x",
            "/publishx",
            "/queuesx",
        ] {
            assert_eq!(Route::parse(unknown), None, "{unknown}");
        }
    }

    impl Route<'_> {
        fn pattern(self) -> &'static str {
            PATTERNS[self.pattern_index()]
        }
    }

    #[test]
    fn patterns_never_carry_names_or_ids() {
        assert_eq!(
            Route::parse("/acknowledge/5").unwrap().pattern(),
            "/acknowledge/{id}"
        );
        assert_eq!(
            Route::parse("/queues/default/acknowledge/5")
                .unwrap()
                .pattern(),
            "/queues/{queue}/acknowledge/{id}"
        );
        assert_eq!(
            Route::parse("/queues/x").unwrap().pattern(),
            "/queues/{queue}"
        );
    }

    #[test]
    fn every_pattern_parses_back_to_itself() {
        for (index, pattern) in PATTERNS.iter().enumerate() {
            let path = pattern.replace("{queue}", "q").replace("{id}", "1");
            let route = Route::parse(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!((route.pattern_index(), route.pattern()), (index, *pattern));
        }
    }

    #[tokio::test]
    async fn unknown_paths_and_wrong_methods() {
        let (s, _tx) = state();
        assert_eq!(call(&s, Method::GET, "/", "").await.0, 404);
        assert_eq!(call(&s, Method::GET, "/publishx", "").await.0, 404);
        let req = Request::builder()
            .method(Method::GET)
            .uri("/publish")
            .header(hyper::header::HOST, "x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = handle(&s, req).await;
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()[hyper::header::ALLOW], "POST");
        assert_eq!(call(&s, Method::POST, "/fetch", "").await.0, 405);
        assert_eq!(call(&s, Method::GET, "/requeue/abc", "").await.0, 405);
        assert_eq!(call(&s, Method::DELETE, "/acknowledge/1", "").await.0, 405);
        assert_eq!(call(&s, Method::POST, "/queues", "").await.0, 405);
        assert_eq!(call(&s, Method::POST, "/queues/jobs", "").await.0, 405);
        assert_eq!(
            call(&s, Method::GET, "/queues/jobs.dead/redrive", "")
                .await
                .0,
            405
        );
    }

    #[tokio::test]
    async fn shutdown_answers_waiting_fetches_with_503() {
        let (s, tx) = state();
        let s = Arc::new(s);
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { call(&s, Method::GET, "/fetch?wait=30000", "").await }
        });
        while s.broker.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        tx.send(true).unwrap();
        let (status, body) = waiting.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(s.broker.stats().in_flight, 0);
    }
}
