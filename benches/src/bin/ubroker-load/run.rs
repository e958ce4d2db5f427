//! One run: `connections` closed-loop tasks driving one mode against one
//! target, through a warm-up phase and a measured phase, with a progress
//! line on stderr once a second.
//!
//! Each task owns one [`Connection`] and its own latency histogram and
//! counters ([`Tally`]); the only state shared between tasks is [`Control`]
//! (the phase, and the counters behind `--messages` and the progress line),
//! so tasks never contend on anything but a few relaxed atomics. Tallies are
//! merged into a [`Measurement`] when the run ends.
//!
//! What counts: a request counts, and its latency is recorded, when its 2xx
//! response arrives during the measured phase. A `408` from a fetch is an
//! empty fetch, counted apart and not timed (in mixed mode it is a long poll
//! that waited its full time). Any other status, and any transport error, is
//! an error, counted in every phase, warm-up included.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cpu::CpuSample;
use crate::report::Measurement;
use crate::target::{delivery_id, Connection, Target};

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Every connection publishes, back to back.
    Publish,
    /// Every connection fetches (`?wait=0`) and acknowledges, from a queue
    /// filled beforehand.
    Consume,
    /// Half the connections publish; the other half fetch with a long poll
    /// and acknowledge.
    Mixed,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Publish => "publish",
            Mode::Consume => "consume",
            Mode::Mixed => "mixed",
        }
    }
}

/// Everything one run needs besides the target.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub connections: usize,
    /// Requests in this phase are sent but not counted.
    pub warmup: Duration,
    /// How long the measured phase lasts; `None`: until `messages` is reached.
    pub duration: Option<Duration>,
    /// Stop after this many messages published (publish mode) or
    /// acknowledged (consume and mixed modes), or when the queue is found
    /// empty with no publisher left.
    pub messages: Option<u64>,
    /// The whole `POST /publish` request body.
    pub payload: Bytes,
    /// Messages per publish request (`--batch`; 1: the single form).
    pub batch: u64,
    /// Prefixes the progress lines.
    pub label: String,
    /// The target's process id, to report its CPU time per request.
    pub server_pid: Option<u32>,
}

/// Latencies are recorded in microseconds, from 1 µs to an hour, to three
/// significant digits (0.1% resolution).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("the bounds are valid")
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// The state all tasks of a run share.
struct Control {
    phase: AtomicU8,
    /// Every response so far, any phase and status: the progress line.
    responses: AtomicU64,
    /// `--messages`: publishes claimed so far, acknowledgements done so far.
    limit: Option<u64>,
    publishes_claimed: AtomicU64,
    acknowledged: AtomicU64,
    /// Whether any task of the run publishes (an empty queue is final only
    /// when none does, or all are done).
    has_publishers: bool,
    /// Messages per publish request.
    batch: u64,
}

impl Control {
    fn phase(&self) -> u8 {
        self.phase.load(Relaxed)
    }

    /// Takes the right to publish one more message under `--messages`.
    fn claim_publish(&self) -> bool {
        match self.limit {
            None => true,
            Some(limit) => self.publishes_claimed.fetch_add(1, Relaxed) < limit,
        }
    }

    fn enough_acknowledged(&self) -> bool {
        self.limit
            .is_some_and(|limit| self.acknowledged.load(Relaxed) >= limit)
    }

    /// Under `--messages`, whether an empty fetch means the work is done:
    /// nothing more will be published.
    fn publishing_is_over(&self) -> bool {
        match self.limit {
            None => false,
            Some(limit) => !self.has_publishers || self.publishes_claimed.load(Relaxed) >= limit,
        }
    }
}

/// What one connection saw.
struct Tally {
    latency: Histogram<u64>,
    requests: u64,
    published: u64,
    acknowledged: u64,
    empty_fetches: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            requests: 0,
            published: 0,
            acknowledged: 0,
            empty_fetches: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// Which route a request goes to, for error messages and for telling an
/// empty fetch (408) from an error.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Publish,
    Fetch,
    Acknowledge,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Publish => "POST /publish",
            Route::Fetch => "GET /fetch",
            Route::Acknowledge => "POST /acknowledge",
        }
    }
}

/// The outcome of one request.
enum Exchange {
    /// A response; `counted` if it arrived in the measured phase.
    Answered {
        status: StatusCode,
        body: Bytes,
        counted: bool,
    },
    /// A transport error, tallied; the connection was reopened.
    Lost,
    /// A transport error, tallied, and the connection could not be reopened.
    Dead,
}

/// One connection's loop and its tally.
struct Driver {
    target: Arc<Target>,
    control: Arc<Control>,
    connection: Connection,
    tally: Tally,
}

impl Driver {
    /// Sends `req`, times it, and tallies it as described in the module docs.
    async fn exchange(&mut self, route: Route, req: Request<Full<Bytes>>) -> Exchange {
        let what = route.name();
        let sent = Instant::now();
        match self.connection.send(req).await {
            Ok((status, body)) => {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.control.responses.fetch_add(1, Relaxed);
                let counted = self.control.phase() == MEASURE;
                if status.is_success() {
                    if counted {
                        self.tally.requests += 1;
                        self.tally.latency.saturating_record(micros.max(1));
                    }
                } else if status != StatusCode::REQUEST_TIMEOUT || route != Route::Fetch {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    self.tally.error(format!("{what}: {status} {text}"));
                }
                Exchange::Answered {
                    status,
                    body,
                    counted,
                }
            }
            Err(error) => {
                self.tally.error(format!("{what}: {error}"));
                match Connection::open(&self.target).await {
                    Ok(connection) => {
                        self.connection = connection;
                        Exchange::Lost
                    }
                    Err(error) => {
                        self.tally
                            .error(format!("reconnect to {}: {error}", self.target.url));
                        Exchange::Dead
                    }
                }
            }
        }
    }

    /// Publishes until the run stops; false if the connection died.
    async fn publish(&mut self, payload: &Bytes) -> bool {
        while self.control.phase() != STOP && self.control.claim_publish() {
            let req = self.target.publish(payload);
            match self.exchange(Route::Publish, req).await {
                Exchange::Answered {
                    status, counted, ..
                } => {
                    if status.is_success() && counted {
                        self.tally.published += self.control.batch;
                    }
                }
                Exchange::Lost => {}
                Exchange::Dead => return false,
            }
        }
        true
    }

    /// Fetches and acknowledges until the run stops.
    async fn consume(&mut self, long_poll: bool) {
        while self.control.phase() != STOP && !self.control.enough_acknowledged() {
            let req = self.target.fetch(long_poll);
            let body = match self.exchange(Route::Fetch, req).await {
                Exchange::Answered { status, body, .. } if status.is_success() => body,
                Exchange::Answered {
                    status: StatusCode::REQUEST_TIMEOUT,
                    counted,
                    ..
                } => {
                    if counted {
                        self.tally.empty_fetches += 1;
                    }
                    if self.control.publishing_is_over() {
                        return;
                    }
                    continue;
                }
                Exchange::Answered { .. } | Exchange::Lost => continue,
                Exchange::Dead => return,
            };
            // The bare server's `{}` has no id: acknowledging 0 keeps its
            // request sequence the same as the broker's.
            let id = delivery_id(&body).unwrap_or(0);
            let req = match self.target.acknowledge(id) {
                Ok(req) => req,
                Err(error) => {
                    self.tally.error(format!("acknowledge {id}: {error}"));
                    continue;
                }
            };
            // Acknowledged even after the run stopped, so that no lease is
            // left to expire in a broker the next run measures.
            match self.exchange(Route::Acknowledge, req).await {
                Exchange::Answered {
                    status, counted, ..
                } if status.is_success() => {
                    self.control.acknowledged.fetch_add(1, Relaxed);
                    if counted {
                        self.tally.acknowledged += 1;
                    }
                }
                Exchange::Answered { .. } | Exchange::Lost => {}
                Exchange::Dead => return,
            }
        }
    }
}

/// What connection `index` of a run in `mode` does.
#[derive(Clone, Copy)]
enum Role {
    Publisher,
    Consumer { long_poll: bool },
}

fn role(mode: Mode, index: usize) -> Role {
    match mode {
        Mode::Publish => Role::Publisher,
        Mode::Consume => Role::Consumer { long_poll: false },
        // Even connections publish, odd ones consume: with an odd count,
        // one more publisher. (A bit test: `is_multiple_of` is newer than
        // the workspace's rust-version.)
        Mode::Mixed if index & 1 == 0 => Role::Publisher,
        Mode::Mixed => Role::Consumer { long_poll: true },
    }
}

async fn drive(target: Arc<Target>, control: Arc<Control>, role: Role, payload: Bytes) -> Tally {
    let mut tally = Tally::new();
    let connection = match Connection::open(&target).await {
        Ok(connection) => connection,
        Err(error) => {
            tally.error(format!("connect to {}: {error}", target.url));
            return tally;
        }
    };
    let mut driver = Driver {
        target,
        control,
        connection,
        tally,
    };
    match role {
        Role::Publisher => {
            driver.publish(&payload).await;
        }
        Role::Consumer { long_poll } => driver.consume(long_poll).await,
    }
    driver.tally
}

/// Runs `plan` against `target` and measures it.
pub async fn run(target: Arc<Target>, plan: &Plan) -> Measurement {
    let control = Arc::new(Control {
        phase: AtomicU8::new(if plan.warmup.is_zero() {
            MEASURE
        } else {
            WARMUP
        }),
        responses: AtomicU64::new(0),
        limit: plan.messages,
        publishes_claimed: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        has_publishers: plan.mode != Mode::Consume,
        batch: plan.batch,
    });
    let start = Instant::now();
    let mut measuring_since = plan.warmup.is_zero().then_some(start);
    let mut stopped_at = None;
    let mut cpu_at_start = CpuSample::take(plan.server_pid);
    let mut cpu_at_stop = None;

    let mut tasks = JoinSet::new();
    for index in 0..plan.connections {
        tasks.spawn(drive(
            target.clone(),
            control.clone(),
            role(plan.mode, index),
            plan.payload.clone(),
        ));
    }
    let progress = tokio::spawn(progress(control.clone(), plan.label.clone(), start));

    let mut tallies = Vec::with_capacity(plan.connections);
    loop {
        let next_phase_at = match (measuring_since, stopped_at) {
            (None, _) => Some(start + plan.warmup),
            (Some(since), None) => plan.duration.map(|d| since + d),
            (Some(_), Some(_)) => None,
        };
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(tally)) => tallies.push(tally),
                Some(Err(error)) => {
                    let mut tally = Tally::new();
                    tally.error(format!("connection task failed: {error}"));
                    tallies.push(tally);
                }
                None => break,
            },
            () = tokio::time::sleep_until(next_phase_at.unwrap_or(start)), if next_phase_at.is_some() => {
                if measuring_since.is_none() {
                    control.phase.store(MEASURE, Relaxed);
                    measuring_since = Some(Instant::now());
                    cpu_at_start = CpuSample::take(plan.server_pid);
                } else {
                    control.phase.store(STOP, Relaxed);
                    stopped_at = Some(Instant::now());
                    cpu_at_stop = Some(CpuSample::take(plan.server_pid));
                }
            }
        }
    }
    progress.abort();
    // Without a time limit, the run ends when its last connection does.
    let end = stopped_at.unwrap_or_else(Instant::now);
    let elapsed = measuring_since.map_or(Duration::ZERO, |since| end - since);
    let cpu = cpu_at_stop
        .unwrap_or_else(|| CpuSample::take(plan.server_pid))
        .since(cpu_at_start);

    let mut m = Measurement {
        target: target.url.clone(),
        mode: plan.mode,
        connections: plan.connections,
        warmup: plan.warmup,
        elapsed,
        requests: 0,
        published: 0,
        acknowledged: 0,
        empty_fetches: 0,
        errors: 0,
        first_error: None,
        latency: new_histogram(),
        cpu,
    };
    for tally in tallies {
        m.latency
            .add(&tally.latency)
            .expect("every histogram has the same bounds");
        m.requests += tally.requests;
        m.published += tally.published;
        m.acknowledged += tally.acknowledged;
        m.empty_fetches += tally.empty_fetches;
        m.errors += tally.errors;
        if m.first_error.is_none() {
            m.first_error = tally.first_error;
        }
    }
    m
}

/// Prints a progress line to stderr about once a second until aborted.
async fn progress(control: Arc<Control>, label: String, start: Instant) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let mut last = (start, 0);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let responses = control.responses.load(Relaxed);
        let rate = (responses - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, responses);
        let phase = match control.phase() {
            WARMUP => "warm-up",
            MEASURE => "measuring",
            _ => "stopping",
        };
        eprintln!(
            "{label}: {:>5.1} s {phase:<9} {responses:>10} responses {rate:>10.0} /s",
            (now - start).as_secs_f64()
        );
    }
}
