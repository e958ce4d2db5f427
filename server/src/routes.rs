//! The four routes: one `match` on (method, path), one function per route.
//!
//! | route | handler |
//! |---|---|
//! | `POST /publish` | [`publish`]: parse `{"body": "<string>"}`, publish |
//! | `GET /fetch[?wait=ms]` | [`fetch`]: lease the head, long-polling |
//! | `POST /acknowledge/{id}` | [`settle`] with [`Settlement::Acknowledge`] |
//! | `POST /requeue/{id}` | [`settle`] with [`Settlement::Requeue`] |
//! | anything else | 404, or 405 with `Allow` for a known path |
//!
//! Handlers are generic over the request body type, so unit tests drive them
//! with in-memory bodies and no socket. A handler validates everything before
//! it calls the engine: a request that fails validation changes nothing.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body as HttpBody;
use hyper::header::{
    GetAll, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, HOST, TRANSFER_ENCODING,
};
use hyper::{Method, Request, Response, Version};
use tokio::sync::watch;
use ubroker_engine::{Broker, Clock, Error as EngineError};

use crate::config::Config;
use crate::connection::WaitSignal;
use crate::decode::{fetch_wait, head_bytes, parse_id, parse_publish};
use crate::error::ApiError;
use crate::response::{self, Body};

/// What every request handler shares.
pub struct State<C: Clock> {
    pub(crate) broker: Arc<Broker<C>>,
    pub(crate) config: Config,
    /// Becomes `true` when shutdown begins: waiting fetches answer 503.
    pub(crate) shutting_down: watch::Receiver<bool>,
}

impl<C: Clock> State<C> {
    /// Handler state over `broker`; shutdown is signalled through `shutting_down`.
    pub fn new(
        broker: Arc<Broker<C>>,
        config: Config,
        shutting_down: watch::Receiver<bool>,
    ) -> Self {
        State {
            broker,
            config,
            shutting_down,
        }
    }
}

/// How a delivery is settled by its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Acknowledge,
    Requeue,
}

/// Answers one request. Never fails and never panics on client input: every
/// failure becomes an `{"error": ...}` response.
pub async fn handle<C, B>(state: &State<C>, req: Request<B>) -> Response<Body>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Err(error) = admit(state, &req) {
        return response::error(&error);
    }
    let result = match (req.method(), req.uri().path()) {
        (&Method::POST, "/publish") => publish(state, req.into_body()).await,
        (_, "/publish") => Err(ApiError::MethodNotAllowed { allow: "POST" }),
        (&Method::GET, "/fetch") => fetch(state, req.uri().query(), req.extensions().get()).await,
        (_, "/fetch") => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        (method, path) => match settlement_route(path) {
            Some((settlement, id)) if method == Method::POST => settle(state, settlement, id),
            Some(_) => Err(ApiError::MethodNotAllowed { allow: "POST" }),
            None => Err(ApiError::NotFound),
        },
    };
    result.unwrap_or_else(|error| response::error(&error))
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
    if let Some(token) = &state.config.auth_token {
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

/// Recognises `/acknowledge/{id}` and `/requeue/{id}` (one segment, any
/// text; it is validated as an id later, so a bad id is a 400, not a 404).
fn settlement_route(path: &str) -> Option<(Settlement, &str)> {
    let (settlement, id) = if let Some(id) = path.strip_prefix("/acknowledge/") {
        (Settlement::Acknowledge, id)
    } else if let Some(id) = path.strip_prefix("/requeue/") {
        (Settlement::Requeue, id)
    } else {
        return None;
    };
    (!id.contains('/')).then_some((settlement, id))
}

/// `POST /publish`.
async fn publish<C, B>(state: &State<C>, body: B) -> Result<Response<Body>, ApiError>
where
    C: Clock,
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let read = read_body(body, state.config.max_body_bytes);
    let raw = tokio::time::timeout(state.config.timeouts().header_read, read)
        .await
        .map_err(|_| ApiError::BodyTimeout)??;
    let message = parse_publish(&raw)?;
    state.broker.publish(message)?;
    Ok(response::ok_empty())
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

/// `GET /fetch[?wait=ms]`. `signal` (absent when no connection serves the
/// request, as in unit tests) tells the connection when the fetch waits, so
/// that a client that goes away meanwhile ends it.
async fn fetch<C: Clock>(
    state: &State<C>,
    query: Option<&str>,
    signal: Option<&WaitSignal>,
) -> Result<Response<Body>, ApiError> {
    let wait = fetch_wait(query, &state.config)?;
    // Fast path: a ready message needs no timer and no shutdown watch.
    if let Some(delivery) = state.broker.try_fetch()? {
        return Ok(response::delivery(&delivery));
    }
    if wait.is_zero() {
        return Err(EngineError::Timeout.into());
    }
    let mut shutting_down = state.shutting_down.clone();
    if *shutting_down.borrow_and_update() {
        return Err(ApiError::ShuttingDown);
    }
    // The engine's fetch ends when this future does: at the wait, when
    // shutdown begins, or when the connection drops it because its client
    // went away. Either way it leases nothing once it gives up.
    let give_up = async move {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutting_down.wait_for(|down| *down) => {}
        }
    };
    let waiting = signal.map(WaitSignal::begin);
    let fetched = state.broker.fetch(give_up).await;
    drop(waiting);
    match fetched {
        Ok(delivery) => Ok(response::delivery(&delivery)),
        Err(EngineError::Timeout) if *state.shutting_down.borrow() => Err(ApiError::ShuttingDown),
        Err(error) => Err(error.into()),
    }
}

/// `POST /acknowledge/{id}` and `POST /requeue/{id}`.
fn settle<C: Clock>(
    state: &State<C>,
    settlement: Settlement,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    match settlement {
        Settlement::Acknowledge => state.broker.acknowledge(id)?,
        Settlement::Requeue => state.broker.requeue(id)?,
    }
    Ok(response::ok_empty())
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
                max_queue_bytes: u64::MAX,
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
        assert_eq!(body, r#"{"message":{"body":"hi \"you\""},"id":1}"#);
        assert_eq!(
            call(&s, Method::POST, "/acknowledge/1", "").await,
            (200, "{}".into())
        );
        assert_eq!(
            call(&s, Method::POST, "/acknowledge/1", "").await,
            (400, r#"{"error":"id is invalid"}"#.into())
        );
    }

    #[test]
    fn settlement_paths_take_exactly_one_segment() {
        assert_eq!(
            settlement_route("/acknowledge/5"),
            Some((Settlement::Acknowledge, "5"))
        );
        assert_eq!(
            settlement_route("/requeue/x"),
            Some((Settlement::Requeue, "x"))
        );
        assert_eq!(
            settlement_route("/requeue/"),
            Some((Settlement::Requeue, ""))
        );
        assert_eq!(settlement_route("/requeue/1/2"), None);
        assert_eq!(settlement_route("/acknowledge"), None);
        assert_eq!(settlement_route("/ack/1"), None);
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
