//! [`Measurement`], the result of one run, and how results are printed: a
//! report per run, a table with per-round ratios for `--compare`, and JSON.
//!
//! Ratios are always `--url` over `--compare` (A / B): with the broker as A
//! and the bare hyper server as B, a requests/s ratio of 0.93 means the
//! broker serves 93% of the bare server's rate, and a p99 ratio of 1.40
//! means its p99 latency is 1.4 times the bare server's.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cpu::CpuSample;
use crate::run::Mode;

/// What one run measured.
#[derive(Debug)]
pub struct Measurement {
    pub target: String,
    pub mode: Mode,
    pub connections: usize,
    /// Messages per request (`--batch`).
    pub batch: usize,
    pub warmup: Duration,
    /// The measured phase.
    pub elapsed: Duration,
    /// 2xx responses in the measured phase (both requests of a fetch +
    /// acknowledge cycle count).
    pub requests: u64,
    pub published: u64,
    pub acknowledged: u64,
    /// Fetches answered `408` in the measured phase.
    pub empty_fetches: u64,
    /// Unexpected statuses and transport errors, in every phase.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Latency of the counted requests, in microseconds.
    pub latency: Histogram<u64>,
    /// CPU time of the target (with `--pid`) and of the load generator
    /// during the measured phase.
    pub cpu: CpuSample,
}

impl Measurement {
    /// Messages that made it through: published in publish mode,
    /// acknowledged (delivered end to end) in consume and mixed modes.
    pub fn messages(&self) -> u64 {
        match self.mode {
            Mode::Publish => self.published,
            Mode::Consume | Mode::Mixed => self.acknowledged,
        }
    }

    pub fn requests_per_sec(&self) -> f64 {
        per_sec(self.requests, self.elapsed)
    }

    pub fn messages_per_sec(&self) -> f64 {
        per_sec(self.messages(), self.elapsed)
    }

    /// Latency at quantile `q`, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }

    /// The target's CPU microseconds per counted request (`--pid`).
    pub fn server_us_per_request(&self) -> Option<f64> {
        self.per_request(self.cpu.server)
    }

    /// The load generator's CPU microseconds per counted request.
    pub fn client_us_per_request(&self) -> Option<f64> {
        self.per_request(self.cpu.client)
    }

    fn per_request(&self, cpu: Option<Duration>) -> Option<f64> {
        (self.requests > 0).then_some(cpu?.as_secs_f64() * 1e6 / self.requests as f64)
    }

    /// The target's CPU microseconds per message through (`--pid`).
    pub fn server_us_per_message(&self) -> Option<f64> {
        self.per_message(self.cpu.server)
    }

    /// The load generator's CPU microseconds per message through.
    pub fn client_us_per_message(&self) -> Option<f64> {
        self.per_message(self.cpu.client)
    }

    fn per_message(&self, cpu: Option<Duration>) -> Option<f64> {
        let messages = self.messages();
        (messages > 0).then_some(cpu?.as_secs_f64() * 1e6 / messages as f64)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "mode": self.mode.name(),
            "connections": self.connections,
            "batch": self.batch,
            "warmup_s": self.warmup.as_secs_f64(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests": self.requests,
            "requests_per_s": self.requests_per_sec(),
            "messages": self.messages(),
            "messages_per_s": self.messages_per_sec(),
            "published": self.published,
            "acknowledged": self.acknowledged,
            "empty_fetches": self.empty_fetches,
            "errors": self.errors,
            "first_error": self.first_error,
            "server_cpu_s": self.cpu.server.map(|d| d.as_secs_f64()),
            "server_cpu_us_per_request": self.server_us_per_request(),
            "server_cpu_us_per_message": self.server_us_per_message(),
            "client_cpu_s": self.cpu.client.map(|d| d.as_secs_f64()),
            "client_cpu_us_per_request": self.client_us_per_request(),
            "client_cpu_us_per_message": self.client_us_per_message(),
            "latency_us": {
                "p50": self.latency.value_at_quantile(0.5),
                "p99": self.latency.value_at_quantile(0.99),
                "p99_9": self.latency.value_at_quantile(0.999),
                "max": self.latency.max(),
            },
        })
    }
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

/// The full report of a single run.
pub fn single(m: &Measurement) -> String {
    let mut out = format!(
        "ubroker-load {mode} {target}\n\
         \x20 connections    {connections}, {batch} message(s) per request\n\
         \x20 measured       {elapsed:.2} s after {warmup:.2} s warm-up\n\
         \x20 requests       {requests} ({rps:.0} /s, 2xx responses)\n\
         \x20 messages       {messages} ({mps:.0} /s; published {published}, acknowledged {acknowledged})\n\
         \x20 empty fetches  {empty}\n\
         \x20 errors         {errors}\n\
         \x20 latency        p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms\n",
        mode = m.mode.name(),
        target = m.target,
        connections = m.connections,
        batch = m.batch,
        elapsed = m.elapsed.as_secs_f64(),
        warmup = m.warmup.as_secs_f64(),
        requests = m.requests,
        rps = m.requests_per_sec(),
        messages = m.messages(),
        mps = m.messages_per_sec(),
        published = m.published,
        acknowledged = m.acknowledged,
        empty = m.empty_fetches,
        errors = m.errors,
        p50 = m.latency_ms(0.5),
        p99 = m.latency_ms(0.99),
        p999 = m.latency_ms(0.999),
        max = m.max_ms(),
    );
    let cores =
        |cpu: Option<Duration>| cpu.map_or(0.0, |cpu| cpu.as_secs_f64() / m.elapsed.as_secs_f64());
    if let Some(us) = m.server_us_per_request() {
        out.push_str(&format!(
            "  server CPU     {us:.1} µs per request, {:.3} µs per message ({:.2} cores)\n",
            m.server_us_per_message().unwrap_or(f64::NAN),
            cores(m.cpu.server)
        ));
    }
    if let Some(us) = m.client_us_per_request() {
        out.push_str(&format!(
            "  client CPU     {us:.1} µs per request, {:.3} µs per message ({:.2} cores)\n",
            m.client_us_per_message().unwrap_or(f64::NAN),
            cores(m.cpu.client)
        ));
    }
    if let Some(error) = &m.first_error {
        out.push_str(&format!("  first error    {error}\n"));
    }
    out
}

/// The header of the `--compare` table.
pub fn table_header() -> String {
    format!(
        "{:<7} {:<6} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "round",
        "target",
        "requests",
        "req/s",
        "msg/s",
        "errors",
        "empty",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "srv µs",
        "cli µs",
        "srv µs/m",
        "cli µs/m"
    )
}

/// One run as a row of the `--compare` table.
pub fn table_row(round: &str, label: &str, m: &Measurement) -> String {
    format!(
        "{round:<7} {label:<6} {:>10} {:>10.0} {:>10.0} {:>7} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>8} {:>9} {:>9}",
        m.requests,
        m.requests_per_sec(),
        m.messages_per_sec(),
        m.errors,
        m.empty_fetches,
        m.latency_ms(0.5),
        m.latency_ms(0.99),
        m.latency_ms(0.999),
        m.max_ms(),
        optional(m.server_us_per_request()),
        optional(m.client_us_per_request()),
        optional3(m.server_us_per_message()),
        optional3(m.client_us_per_message()),
    )
}

fn optional(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn optional3(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// A over B for the figures that matter.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    pub requests_per_sec: f64,
    pub messages_per_sec: f64,
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    /// Target CPU per request (NaN without both pids).
    pub server_cpu: f64,
}

impl Ratio {
    pub fn of(a: &Measurement, b: &Measurement) -> Ratio {
        Ratio {
            requests_per_sec: a.requests_per_sec() / b.requests_per_sec(),
            messages_per_sec: a.messages_per_sec() / b.messages_per_sec(),
            p50: a.latency_ms(0.5) / b.latency_ms(0.5),
            p99: a.latency_ms(0.99) / b.latency_ms(0.99),
            p99_9: a.latency_ms(0.999) / b.latency_ms(0.999),
            server_cpu: match (a.server_us_per_request(), b.server_us_per_request()) {
                (Some(a), Some(b)) => a / b,
                _ => f64::NAN,
            },
        }
    }

    /// The median of each figure on its own.
    pub fn median(ratios: &[Ratio]) -> Ratio {
        let of = |figure: fn(&Ratio) -> f64| median(ratios.iter().map(figure).collect());
        Ratio {
            requests_per_sec: of(|r| r.requests_per_sec),
            messages_per_sec: of(|r| r.messages_per_sec),
            p50: of(|r| r.p50),
            p99: of(|r| r.p99),
            p99_9: of(|r| r.p99_9),
            server_cpu: of(|r| r.server_cpu),
        }
    }

    /// `ratio (A / B) requests/s 0.930, ...`, after `what`.
    pub fn line(&self, what: &str) -> String {
        let mut line = format!(
            "{what}: ratio (A / B) requests/s {:.3}, messages/s {:.3}, p50 {:.2}, p99 {:.2}, p99.9 {:.2}",
            self.requests_per_sec, self.messages_per_sec, self.p50, self.p99, self.p99_9
        );
        if !self.server_cpu.is_nan() {
            line.push_str(&format!(", server CPU per request {:.2}", self.server_cpu));
        }
        line
    }

    pub fn to_json(self) -> Value {
        json!({
            "requests_per_s": self.requests_per_sec,
            "messages_per_s": self.messages_per_sec,
            "p50": self.p50,
            "p99": self.p99,
            "p99_9": self.p99_9,
            "server_cpu_per_request": (!self.server_cpu.is_nan()).then_some(self.server_cpu),
        })
    }
}

/// The median; the mean of the middle two for an even count. NaN (a ratio
/// over zero) sorts last rather than panicking.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
