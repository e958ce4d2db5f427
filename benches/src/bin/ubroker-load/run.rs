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
//! With `--batch N` (N > 1) each request carries N messages: a batch
//! publish encoded once and sent again by reference, `fetch?max=N`, and one
//! batch acknowledge of the ids fetched. The loop allocates per request,
//! never per message (fetched bodies are slices of the response buffer).
//!
//! What counts: a request counts, and its latency is recorded, when its 2xx
//! response arrives during the measured phase. A `408` from a fetch (an
//! empty batch) is an empty fetch, counted apart and not timed (in mixed
//! mode it is a long poll that waited its full time). Any other status, any
//! `invalid` in a batch acknowledge, and any transport error, is an error,
//! counted in every phase, warm-up included.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;
use ubroker_client::{
    Code, Delivery, EncodedBatch, EncodedMessage, Error as ClientError, Result as ClientResult,
    Settled,
};

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
    /// What is published.
    pub payload: Arc<Payload>,
    /// Messages per request (`--batch`): 1 uses the single routes of
    /// part 1; more, the batch routes.
    pub batch: usize,
    /// Prefixes the progress lines.
    pub label: String,
    /// The target's process id, to report its CPU time per request.
    pub server_pid: Option<u32>,
}

/// The message bodies a run publishes, encoded once.
#[derive(Debug)]
pub struct Payload {
    /// One message's body.
    pub body: String,
    /// The body of every single publish.
    pub single: EncodedMessage,
    /// `--batch` messages, the body of every batch publish.
    pub batch: EncodedBatch,
}

impl Payload {
    /// `batch` messages of `body_bytes` bytes each.
    pub fn new(body_bytes: usize, batch: usize) -> Result<Payload, String> {
        let body = "x".repeat(body_bytes);
        let batch = EncodedBatch::new(std::iter::repeat_n(body.as_str(), batch.max(1)))
            .map_err(|e| e.to_string())?;
        let single = EncodedMessage::new(&body).map_err(|e| e.to_string())?;
        Ok(Payload {
            body,
            single,
            batch,
        })
    }

    /// A batch of `n` (the last one under `--messages`).
    fn short(&self, n: usize) -> EncodedBatch {
        EncodedBatch::new(std::iter::repeat_n(self.body.as_str(), n.max(1)))
            .expect("a batch of a body that encoded before")
    }
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
}

impl Control {
    fn phase(&self) -> u8 {
        self.phase.load(Relaxed)
    }

    /// Takes the right to publish up to `want` more messages under
    /// `--messages`; answers how many (0: the limit is reached).
    fn claim_publish(&self, want: u64) -> u64 {
        match self.limit {
            None => want,
            Some(limit) => {
                let before = self.publishes_claimed.fetch_add(want, Relaxed);
                limit.saturating_sub(before).min(want)
            }
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

/// Which route a request goes to, for error messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Publish,
    Fetch,
    Acknowledge,
}

impl Route {
    fn name(self, batch: bool) -> &'static str {
        match (self, batch) {
            (Route::Publish, false) => "POST /publish",
            (Route::Publish, true) => "POST /publish (batch)",
            (Route::Fetch, false) => "GET /fetch",
            (Route::Fetch, true) => "GET /fetch?max",
            (Route::Acknowledge, false) => "POST /acknowledge/{id}",
            (Route::Acknowledge, true) => "POST /acknowledge (batch)",
        }
    }
}

/// A response's timing: its latency, and whether it arrived in the
/// measured phase.
#[derive(Clone, Copy)]
struct Timing {
    micros: u64,
    counted: bool,
}

/// Awaits `$call` and times it; a response (any status) moves the progress
/// counter. A macro rather than an `async fn` taking the call's future:
/// passing a future down moves (copies) all of its state once more per
/// request.
macro_rules! timed {
    ($control:expr, $call:expr) => {{
        let sent = Instant::now();
        let result = $call.await;
        let timing = timing(&$control, sent, &result);
        (result, timing)
    }};
}

/// The timing of a response that arrived now, sent at `sent`.
fn timing<T>(control: &Control, sent: Instant, result: &ClientResult<T>) -> Timing {
    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
    if !matches!(result, Err(ClientError::Transport { .. })) {
        control.responses.fetch_add(1, Relaxed);
    }
    let counted = control.phase() == MEASURE;
    Timing { micros, counted }
}

/// What the loop does after a failed request.
#[derive(PartialEq, Eq)]
enum Next {
    /// Go on: the client's pool reconnects on the next request.
    Continue,
    /// Stop this connection: the target cannot be reached.
    Dead,
}

/// One connection's loop and its tally.
struct Driver {
    target: Arc<Target>,
    control: Arc<Control>,
    connection: Connection,
    tally: Tally,
    batch: usize,
}

impl Driver {
    /// Counts a 2xx response, as described in the module docs.
    fn record(&mut self, timing: Timing) {
        if timing.counted {
            self.tally.requests += 1;
            self.tally.latency.saturating_record(timing.micros.max(1));
        }
    }

    /// Tallies a failure and says whether the connection can go on.
    fn fail(&mut self, route: Route, error: ClientError) -> Next {
        let what = route.name(self.batch > 1);
        let next = match &error {
            // A connect error is what reopening the connection got.
            ClientError::Transport { connect: true, .. } | ClientError::InvalidArgument(_) => {
                Next::Dead
            }
            _ => Next::Continue,
        };
        match error {
            ClientError::Api(api) => {
                let text = &api.message[..api.message.len().min(200)];
                self.tally
                    .error(format!("{what}: {} {text} ({})", api.status, api.code));
            }
            error if next == Next::Dead => {
                self.tally
                    .error(format!("{what} to {}: {error}", self.target.url));
            }
            error => self.tally.error(format!("{what}: {error}")),
        }
        next
    }

    /// Publishes until the run stops, one message or one batch per request.
    async fn publish(&mut self, payload: &Payload) {
        while self.control.phase() != STOP {
            let claimed = self.control.claim_publish(self.batch as u64);
            if claimed == 0 {
                return;
            }
            let next = if let Some(queue) = &self.connection.partitioned {
                let short;
                let batch = if claimed as usize == payload.batch.len() {
                    &payload.batch
                } else {
                    short = payload.short(claimed as usize);
                    &short
                };
                // One message or a batch, to the next partition in turn.
                let sent = async {
                    if self.batch == 1 {
                        queue
                            .publish_encoded_message(&payload.single)
                            .await
                            .map(|_| 1)
                    } else {
                        queue.publish_encoded(batch).await.map(|(_, n)| n)
                    }
                };
                match timed!(self.control, sent) {
                    (Ok(published), timing) => {
                        self.record(timing);
                        if timing.counted {
                            self.tally.published += published;
                        }
                        Next::Continue
                    }
                    (Err(error), _) => self.fail(Route::Publish, error),
                }
            } else if self.batch == 1 {
                let queue = &self.connection.queue;
                match timed!(self.control, queue.publish_encoded_message(&payload.single)) {
                    (Ok(()), timing) => {
                        self.record(timing);
                        if timing.counted {
                            self.tally.published += 1;
                        }
                        Next::Continue
                    }
                    (Err(error), _) => self.fail(Route::Publish, error),
                }
            } else {
                // The last batch under --messages may be short.
                let short;
                let batch = if claimed as usize == payload.batch.len() {
                    &payload.batch
                } else {
                    short = payload.short(claimed as usize);
                    &short
                };
                let queue = &self.connection.queue;
                match timed!(self.control, queue.publish_encoded(batch)) {
                    (Ok(published), timing) => {
                        self.record(timing);
                        if timing.counted {
                            self.tally.published += published;
                        }
                        Next::Continue
                    }
                    (Err(error), _) => self.fail(Route::Publish, error),
                }
            };
            if next == Next::Dead {
                return;
            }
        }
    }

    /// Fetches and acknowledges until the run stops. Messages fetched are
    /// acknowledged even after the run stopped, so that no lease is left to
    /// expire in a broker the next run measures.
    async fn consume(&mut self, long_poll: bool) {
        let mut deliveries = Vec::with_capacity(self.batch);
        let mut ids = Vec::with_capacity(self.batch);
        while self.control.phase() != STOP && !self.control.enough_acknowledged() {
            ids.clear();
            if self.connection.partitioned.is_some() {
                match self.fetch_partitioned(long_poll, &mut deliveries).await {
                    Fetched::Some => {}
                    Fetched::Empty { counted } => {
                        if counted {
                            self.tally.empty_fetches += 1;
                        }
                        if self.control.publishing_is_over() {
                            return;
                        }
                        continue;
                    }
                    Fetched::Failed(Next::Continue) => continue,
                    Fetched::Failed(Next::Dead) => return,
                }
                let next = self.acknowledge_partitioned(&deliveries).await;
                deliveries.clear();
                if next == Next::Dead {
                    return;
                }
                continue;
            }
            let next = if self.batch == 1 {
                self.fetch_one(long_poll, &mut ids).await
            } else {
                self.fetch_many(long_poll, &mut deliveries, &mut ids).await
            };
            match next {
                Fetched::Some => {}
                Fetched::Empty { counted } => {
                    if counted {
                        self.tally.empty_fetches += 1;
                    }
                    if self.control.publishing_is_over() {
                        return;
                    }
                    continue;
                }
                Fetched::Failed(Next::Continue) => continue,
                Fetched::Failed(Next::Dead) => return,
            }
            let next = if self.batch == 1 {
                self.acknowledge_one(ids[0]).await
            } else {
                self.acknowledge_many(&ids).await
            };
            if next == Next::Dead {
                return;
            }
        }
    }

    async fn fetch_one(&mut self, long_poll: bool, ids: &mut Vec<u64>) -> Fetched {
        let call = self.connection.fetch_call(long_poll);
        match timed!(self.control, self.connection.client.call(call)) {
            (Ok(reply), timing) => {
                self.record(timing);
                // The bare server's `{}` has no id: acknowledging 0 keeps
                // its request sequence the same as the broker's.
                ids.push(delivery_id(&reply.body).unwrap_or(0));
                Fetched::Some
            }
            (Err(error), timing) if error.is(&Code::Timeout) => Fetched::Empty {
                counted: timing.counted,
            },
            (Err(error), _) => Fetched::Failed(self.fail(Route::Fetch, error)),
        }
    }

    async fn fetch_many(
        &mut self,
        long_poll: bool,
        deliveries: &mut Vec<Delivery>,
        ids: &mut Vec<u64>,
    ) -> Fetched {
        let queue = &self.connection.queue;
        let wait = self.connection.wait(long_poll);
        deliveries.clear();
        let fetched = queue.fetch_batch_into(self.batch, Some(wait), deliveries);
        match timed!(self.control, fetched) {
            (Ok(0), timing) => Fetched::Empty {
                counted: timing.counted,
            },
            (Ok(_), timing) => {
                self.record(timing);
                ids.extend(deliveries.iter().map(|d| d.id));
                // The bodies are slices of the response buffer: dropping
                // them frees it.
                deliveries.clear();
                Fetched::Some
            }
            (Err(error), _) => Fetched::Failed(self.fail(Route::Fetch, error)),
        }
    }

    /// A fetch of up to `--batch` from the partitioned queue (always
    /// `?max=`, from one partition); the deliveries stay in `deliveries`
    /// for [`Driver::acknowledge_partitioned`].
    async fn fetch_partitioned(
        &mut self,
        long_poll: bool,
        deliveries: &mut Vec<Delivery>,
    ) -> Fetched {
        let Some(queue) = &self.connection.partitioned else {
            return Fetched::Failed(Next::Dead);
        };
        let wait = self.connection.wait(long_poll);
        deliveries.clear();
        let fetched = queue.fetch_batch_into(self.batch, Some(wait), deliveries);
        match timed!(self.control, fetched) {
            (Ok(0), timing) => Fetched::Empty {
                counted: timing.counted,
            },
            (Ok(_), timing) => {
                self.record(timing);
                Fetched::Some
            }
            (Err(error), _) => Fetched::Failed(self.fail(Route::Fetch, error)),
        }
    }

    /// Acknowledges `deliveries` (all from one partition) on their
    /// partition: one request, single or batch as `--batch` says.
    async fn acknowledge_partitioned(&mut self, deliveries: &[Delivery]) -> Next {
        let Some(queue) = &self.connection.partitioned else {
            return Next::Dead;
        };
        if self.batch == 1 {
            return match timed!(self.control, queue.acknowledge(&deliveries[0])) {
                (Ok(()), timing) => {
                    self.record(timing);
                    self.acknowledged(1, timing);
                    Next::Continue
                }
                (Err(error), _) => self.fail(Route::Acknowledge, error),
            };
        }
        match timed!(self.control, queue.acknowledge_batch(deliveries)) {
            (Ok(results), timing) => {
                self.record(timing);
                let ok = results.iter().filter(|r| **r == Settled::Ok).count() as u64;
                self.acknowledged(ok, timing);
                let invalid = deliveries.len() as u64 - ok;
                if invalid > 0 {
                    self.tally.errors += invalid - 1;
                    self.tally.error(format!(
                        "{}: {invalid} of {} ids invalid",
                        Route::Acknowledge.name(true),
                        deliveries.len()
                    ));
                }
                Next::Continue
            }
            (Err(error), _) => self.fail(Route::Acknowledge, error),
        }
    }

    fn acknowledged(&mut self, n: u64, timing: Timing) {
        self.control.acknowledged.fetch_add(n, Relaxed);
        if timing.counted {
            self.tally.acknowledged += n;
        }
    }

    async fn acknowledge_one(&mut self, id: u64) -> Next {
        let queue = &self.connection.queue;
        match timed!(self.control, queue.acknowledge(id)) {
            (Ok(()), timing) => {
                self.record(timing);
                self.acknowledged(1, timing);
                Next::Continue
            }
            (Err(error), _) => self.fail(Route::Acknowledge, error),
        }
    }

    async fn acknowledge_many(&mut self, ids: &[u64]) -> Next {
        let queue = &self.connection.queue;
        match timed!(self.control, queue.acknowledge_batch(ids)) {
            (Ok(results), timing) => {
                self.record(timing);
                let ok = results.iter().filter(|r| **r == Settled::Ok).count() as u64;
                self.acknowledged(ok, timing);
                let invalid = ids.len() as u64 - ok;
                if invalid > 0 {
                    // A lease that expired under the load generator.
                    self.tally.errors += invalid - 1;
                    self.tally.error(format!(
                        "{}: {invalid} of {} ids invalid",
                        Route::Acknowledge.name(true),
                        ids.len()
                    ));
                }
                Next::Continue
            }
            (Err(error), _) => self.fail(Route::Acknowledge, error),
        }
    }
}

/// What a fetch brought.
enum Fetched {
    /// One or more deliveries, their ids pushed.
    Some,
    /// Nothing within the wait (`408`, or an empty batch).
    Empty {
        counted: bool,
    },
    Failed(Next),
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

async fn drive(
    target: Arc<Target>,
    control: Arc<Control>,
    role: Role,
    plan: Arc<Payload>,
    batch: usize,
) -> Tally {
    let mut tally = Tally::new();
    let connection = match target.connection() {
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
        batch,
    };
    match role {
        Role::Publisher => driver.publish(&plan).await,
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
            plan.batch,
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
        batch: plan.batch,
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
