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
//! | `GET /ui` | the web console ([`crate::console`]) |
//! | anything else | 404, or 405 with `Allow` for a known path |
//!
//! The unprefixed routes are the queue `default`. Names are not
//! percent-decoded: a name is checked as it stands in the path.
//!
//! Where things are: this file holds the routing (the [`Route`] of a path,
//! its pattern, the one `match`) and the handlers' shared [`State`];
//! `admit` the checks before routing, `messages` the message routes and
//! body reading, `admin` the queue administration, stats, metrics and health.
//!
//! Handlers are generic over the request body type, so unit tests drive them
//! with in-memory bodies and no socket. A handler validates everything before
//! it calls the engine: a request that fails validation changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Body as HttpBody;
use hyper::{Method, Request, Response};
use tokio::sync::watch;
use ubroker_engine::{Broker, Clock, NewMessage, QueueName};

use crate::config::Config;
use crate::connection::WaitSignal;
use crate::decode::Publish;
use crate::durability::Durability;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::replication::{GiveBack, Leased};
use crate::response::{self, Body};

mod admin;
mod admit;
mod messages;

use admin::{delete_queue, get_queue, health, list_queues, metrics, put_queue, stats};
use admit::admit;
use messages::{fetch, publish, redrive, settle, settle_batch};

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
    /// Replicated mode (`--replicas 3`): the role this server serves.
    pub(crate) replication: Option<Arc<crate::replication::Replication>>,
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
            replication: None,
        }
    }

    /// Serves as one role of a replicated node.
    pub(crate) fn with_replication(
        mut self,
        replication: Option<Arc<crate::replication::Replication>>,
    ) -> Self {
        self.replication = replication;
        self
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

    /// Publishes to `queue` one message (delayed by `delay`) or a batch (all
    /// or nothing), through the write-ahead log when there is one, which
    /// writes a batch as one record: all or nothing on disk as in the
    /// broker. Returns how many a batch published (`None` for one message).
    pub(crate) async fn publish(
        &self,
        queue: &str,
        publish: Publish,
        delay: Duration,
    ) -> Result<Option<u64>, ApiError> {
        if let Some(replication) = &self.replication {
            return Ok(match publish {
                Publish::One(body) => {
                    let entry = NewMessage { body, delay };
                    replication
                        .publish(&self.broker, queue, vec![entry])
                        .await?;
                    None
                }
                Publish::Batch(messages) => {
                    let count = messages.len() as u64;
                    replication.publish(&self.broker, queue, messages).await?;
                    Some(count)
                }
            });
        }
        match (publish, &self.durable) {
            (Publish::One(body), None) => {
                self.broker.queue(queue).publish_after(body, delay)?;
                Ok(None)
            }
            (Publish::One(body), Some(durable)) => {
                let entry = NewMessage { body, delay };
                durable.publish(&self.broker, queue, vec![entry]).await?;
                Ok(None)
            }
            (Publish::Batch(messages), durable) => {
                let count = messages.len() as u64;
                let _ids = match durable {
                    None => {
                        self.broker
                            .queue(queue)
                            .publish_batch(messages)?
                            .message_ids
                    }
                    Some(durable) => durable.publish(&self.broker, queue, messages).await?,
                };
                Ok(Some(count))
            }
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
    /// `/health/leader` (replicated mode: `200` only on the leader).
    HealthLeader,
    /// `/ui`: the web console's page.
    Console,
}

impl<'a> Route<'a> {
    /// Recognises `path`, or `None` (a 404).
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        match path {
            "/queues" => return Some(Route::Queues),
            "/stats" => return Some(Route::Stats),
            "/metrics" => return Some(Route::Metrics),
            "/health" => return Some(Route::Health),
            "/health/leader" => return Some(Route::HealthLeader),
            "/ui" => return Some(Route::Console),
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

    /// The route's pattern, for logs and metrics: never the raw path, so
    /// that ids and names cannot blow up cardinality.
    pub fn pattern(self) -> &'static str {
        use Settlement::{Acknowledge, Requeue, Touch};
        match self {
            Route::Queue {
                op,
                prefixed: false,
                ..
            } => match op {
                QueueOp::Publish => "/publish",
                QueueOp::Fetch => "/fetch",
                QueueOp::Settle(Acknowledge, _) => "/acknowledge/{id}",
                QueueOp::Settle(Requeue, _) => "/requeue/{id}",
                QueueOp::Settle(Touch, _) => "/touch/{id}",
                QueueOp::SettleBatch(Acknowledge) => "/acknowledge",
                QueueOp::SettleBatch(Requeue) => "/requeue",
                QueueOp::SettleBatch(Touch) => "/touch",
                // Redrive exists only under `/queues/` (`QueueOp::parse`).
                QueueOp::Redrive => "/queues/{queue}/redrive",
            },
            Route::Queue {
                op, prefixed: true, ..
            } => match op {
                QueueOp::Publish => "/queues/{queue}/publish",
                QueueOp::Fetch => "/queues/{queue}/fetch",
                QueueOp::Settle(Acknowledge, _) => "/queues/{queue}/acknowledge/{id}",
                QueueOp::Settle(Requeue, _) => "/queues/{queue}/requeue/{id}",
                QueueOp::Settle(Touch, _) => "/queues/{queue}/touch/{id}",
                QueueOp::SettleBatch(Acknowledge) => "/queues/{queue}/acknowledge",
                QueueOp::SettleBatch(Requeue) => "/queues/{queue}/requeue",
                QueueOp::SettleBatch(Touch) => "/queues/{queue}/touch",
                QueueOp::Redrive => "/queues/{queue}/redrive",
            },
            Route::Queues => "/queues",
            Route::QueueAdmin(_) => "/queues/{queue}",
            Route::Stats => "/stats",
            Route::Metrics => "/metrics",
            Route::Health => "/health",
            Route::HealthLeader => "/health/leader",
            Route::Console => "/ui",
        }
    }
}

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
/// failure becomes an `{"error": ..., "code": ...}` response. (The server's
/// connections go through their own path; this one-call form is for the
/// fuzz targets, hence unused without the `fuzzing` feature.)
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub async fn handle<C, B>(state: &State<C>, req: Request<B>) -> Response<Body>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    respond(state, req, None).await.1
}

/// [`handle`], also saying which route answered: its pattern (`None` for a
/// path no route matches), which is what metrics and logs label the request
/// with. The path is parsed once.
/// `signal` (absent without a connection, as in unit tests) is how a fetch
/// tells the connection that it waits.
pub(crate) async fn respond<C, B>(
    state: &State<C>,
    req: Request<B>,
    signal: Option<&WaitSignal>,
) -> (Option<&'static str>, Response<Body>)
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let admitted = admit(state, &req);
    let (parts, body) = req.into_parts();
    let route = Route::parse(parts.uri.path());
    let pattern = route.map(Route::pattern);
    let result = match (admitted, route) {
        (Err(error), _) => Err(error),
        (Ok(()), None) => Err(ApiError::NotFound),
        (Ok(()), Some(route)) => match &state.replication {
            None => dispatch(state, route, &parts, body, signal).await,
            Some(replication) => replicated(state, replication, route, &parts, body, signal).await,
        },
    };
    (
        pattern,
        result.unwrap_or_else(|error| response::error(&error)),
    )
}

/// [`dispatch`] on a replicated node: queue routes only on the leader,
/// answered after the fence (see `replication`); `/health` with the role.
async fn replicated<C, B>(
    state: &State<C>,
    replication: &crate::replication::Replication,
    route: Route<'_>,
    parts: &hyper::http::request::Parts,
    body: B,
    signal: Option<&WaitSignal>,
) -> Result<Response<Body>, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let get = parts.method == Method::GET;
    let fetching = match route {
        Route::Queue {
            queue,
            op: QueueOp::Fetch,
            ..
        } => Some(queue),
        _ => None,
    };
    let (queue_route, fence, touch) = match route {
        // From SIGTERM on, as on a single node.
        Route::Health | Route::HealthLeader if get && !state.healthy() => {
            return Ok(response::shutting_down_health())
        }
        Route::Health if get => return Ok(replication.health(false).await),
        Route::HealthLeader if get => return Ok(replication.health(true).await),
        Route::HealthLeader => return Err(ApiError::MethodNotAllowed { allow: "GET" }),
        // A publish waited for its own record already.
        Route::Queue { op, .. } => (
            true,
            op.method_ok(&parts.method) && op != QueueOp::Publish,
            matches!(
                op,
                QueueOp::Settle(Settlement::Touch, _) | QueueOp::SettleBatch(Settlement::Touch)
            ),
        ),
        Route::Queues => (true, false, false),
        Route::QueueAdmin(_) => (true, !get, false),
        _ => (false, false, false),
    };
    if queue_route {
        replication.gate()?;
    }
    let mut response = dispatch(state, route, parts, body, signal).await?;
    if fence {
        // A fetch's leases wait with its answer: while they do, a client
        // that goes away ends the request (the connection's waiting phase),
        // and the guard gives them back, as it does if the fence fails.
        let give_back = match (fetching, response.extensions_mut().remove::<Leased>()) {
            (Some(queue), Some(leased)) => Some(GiveBack::new(&state.broker, queue, leased)),
            _ => None,
        };
        let waiting = give_back.as_ref().and(signal).map(WaitSignal::begin);
        replication.fence(touch).await?;
        drop(waiting);
        if let Some(give_back) = give_back {
            give_back.answered();
        }
    }
    Ok(response)
}

async fn dispatch<C, B>(
    state: &State<C>,
    route: Route<'_>,
    parts: &hyper::http::request::Parts,
    body: B,
    signal: Option<&WaitSignal>,
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
            QueueOp::Fetch => fetch(state, queue, query, signal).await,
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
        // Only a replicated node has a leader to ask about; the route
        // exists either way, so another method is still a 405.
        Route::HealthLeader if method == Method::GET => Err(ApiError::NotFound),
        Route::HealthLeader => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        Route::Console if method == Method::GET => Ok(crate::console::page()),
        Route::Queues | Route::Stats | Route::Metrics | Route::Health | Route::Console => {
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

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};
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

    /// Every route's pattern.
    const PATTERNS: [&str; 23] = [
        "/publish",
        "/fetch",
        "/acknowledge/{id}",
        "/requeue/{id}",
        "/touch/{id}",
        "/acknowledge",
        "/requeue",
        "/touch",
        "/queues/{queue}/publish",
        "/queues/{queue}/fetch",
        "/queues/{queue}/acknowledge/{id}",
        "/queues/{queue}/requeue/{id}",
        "/queues/{queue}/touch/{id}",
        "/queues/{queue}/acknowledge",
        "/queues/{queue}/requeue",
        "/queues/{queue}/touch",
        "/queues/{queue}/redrive",
        "/queues",
        "/queues/{queue}",
        "/stats",
        "/metrics",
        "/health",
        "/ui",
    ];

    #[test]
    fn every_pattern_parses_back_to_itself() {
        for pattern in PATTERNS {
            let path = pattern.replace("{queue}", "q").replace("{id}", "1");
            let route = Route::parse(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(route.pattern(), pattern);
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
