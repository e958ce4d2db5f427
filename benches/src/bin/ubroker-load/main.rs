//! `ubroker-load`: an HTTP load generator for any broker that speaks the
//! ubroker API, and for the bare hyper server that is its baseline.
//!
//! N keep-alive HTTP/1.1 connections, each a tokio task sending requests
//! back to back (closed loop) through `ubroker-client`, in one of three
//! modes: `publish`, `consume` (fetch + acknowledge from a queue filled
//! beforehand) and `mixed` (half the connections publish, half consume with
//! a long poll), one message per request or, with `--batch N`, N. It
//! reports requests/s, messages/s, p50/p99/p99.9/max latency, and the CPU
//! per request and per message of the target (`--pid`) and of itself, and
//! prints a
//! progress line to stderr once a second. `--compare URL2` alternates runs
//! against two targets and prints the ratio A / B of each pair and their
//! median. It exits non-zero if any request failed, so CI uses a short run
//! as a smoke test (`scripts/load-smoke.sh`).
//!
//! # Layout
//!
//! * `main.rs`: the flags, the order of runs (prefill, rounds), the exit
//!   status.
//! * `target.rs`: a target's URL and one connection (a `ubroker-client`
//!   client kept to one keep-alive connection, never retrying).
//! * `run.rs`: one run: the connection loops per mode, phases, progress.
//! * `report.rs`: results, ratios, and how they are printed.
//! * `cpu.rs`: the CPU time of the target (`--pid`) and of the generator.
//!
//! # Where it is biased
//!
//! The load generator shares the machine with the server it measures, so
//! both targets pay for the client's CPU time; ratios are meaningful, while
//! absolute rates are a floor. The bare server's answers (`{}`) are shorter
//! than the broker's fetch responses, and its ids are all 0; the requests
//! themselves are the same bytes, in the same order, to both.

mod cpu;
mod report;
mod run;
mod target;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use report::{Measurement, Ratio};
use run::{Mode, Payload, Plan};
use target::Target;

/// HTTP load generator for the ubroker API.
#[derive(Debug, Parser)]
#[command(name = "ubroker-load", version, about, long_about = None)]
struct Args {
    /// Base URL of the target (A).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,

    /// What the connections do.
    #[arg(long, value_enum, default_value_t = Mode::Publish)]
    mode: Mode,

    /// Keep-alive connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,

    /// Length of the measured phase: `10s`, `500ms`, `2m`, or plain seconds
    /// [default: 10s; with --messages, no time limit].
    #[arg(long, visible_alias = "seconds", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Warm-up before measuring, not counted (same format as --duration).
    #[arg(long, default_value = "2", value_parser = parse_duration)]
    warmup: Duration,

    /// Length of each published message body, in bytes.
    #[arg(long, default_value_t = 32)]
    body_bytes: usize,

    /// Messages per request: 1 uses the single routes of part 1; N > 1
    /// publishes batches of N, fetches with `?max=N` and acknowledges the
    /// ids fetched in one batch request.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,

    /// Messages published before a consume run [default: publish for 3/4
    /// of warm-up + duration, which outlasts the run because a fetch +
    /// acknowledge cycle takes two requests; with --messages, that many].
    #[arg(long)]
    prefill: Option<u64>,

    /// Stop after this many messages published (publish) or acknowledged
    /// (consume, mixed), or once the queue is empty; no warm-up then.
    #[arg(long)]
    messages: Option<u64>,

    /// Second target (B): runs alternate A, B, A, B, ... and each pair
    /// prints the ratio A / B.
    #[arg(long)]
    compare: Option<String>,

    /// Process id of the target (A), to report its CPU time per request:
    /// the figure that stays put when other work shares the machine.
    #[arg(long)]
    pid: Option<u32>,

    /// Process id of the --compare target (B).
    #[arg(long, requires = "compare")]
    compare_pid: Option<u32>,

    /// Pairs of runs with --compare.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,

    /// The `?wait=` of mixed mode's fetches, in ms.
    #[arg(long, default_value_t = 1000)]
    long_poll_ms: u64,

    /// Sent as `Authorization: Bearer <token>` to every target (the bare
    /// server ignores it, and gets the same request bytes as the broker).
    #[arg(long, env = "UBROKER_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,

    /// Worker threads of the load generator [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,

    /// Spread the load over a cluster's partitions: the queue `load`
    /// as `load--0` ... `load--{P-1}` through `ubroker-client`'s
    /// partitioned queue (publishes in turn, fetches one partition at a
    /// time with `?max=`, acknowledgements to each delivery's partition).
    /// Without it, the queue `default` on the unprefixed routes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    partitions: Option<u32>,

    /// Print the results as one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// `10s`, `250ms`, `2m`, `1.5` (seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

/// How a consume run's queue is filled first.
#[derive(Debug, Clone, Copy)]
enum Prefill {
    Nothing,
    Messages(u64),
    For(Duration),
}

fn prefill(args: &Args, plan: &Plan) -> Prefill {
    if plan.mode != Mode::Consume {
        return Prefill::Nothing;
    }
    match (args.prefill, plan.messages, plan.duration) {
        (Some(0), _, _) => Prefill::Nothing,
        (Some(n), _, _) | (None, Some(n), _) => Prefill::Messages(n),
        (None, None, Some(duration)) => Prefill::For((plan.warmup + duration).mul_f64(0.75)),
        (None, None, None) => Prefill::Nothing,
    }
}

/// One run and the prefill before it.
struct Outcome {
    prefill: Option<Measurement>,
    result: Measurement,
}

async fn measure(target: &Arc<Target>, plan: &Plan, fill: Prefill) -> Outcome {
    let prefill = match fill {
        Prefill::Nothing => None,
        Prefill::Messages(_) | Prefill::For(_) => {
            let fill_plan = Plan {
                mode: Mode::Publish,
                warmup: Duration::ZERO,
                duration: match fill {
                    Prefill::For(duration) => Some(duration),
                    _ => None,
                },
                messages: match fill {
                    Prefill::Messages(n) => Some(n),
                    _ => None,
                },
                label: format!("{} prefill", plan.label),
                ..plan.clone()
            };
            let filled = run::run(target.clone(), &fill_plan).await;
            eprintln!(
                "{}: published {} messages in {:.2} s ({:.0} /s), {} errors",
                fill_plan.label,
                filled.published,
                filled.elapsed.as_secs_f64(),
                filled.messages_per_sec(),
                filled.errors
            );
            Some(filled)
        }
    };
    let result = run::run(target.clone(), plan).await;
    Outcome { prefill, result }
}

/// Why the run failed, if it did: errors anywhere, or no message through.
fn failures(outcomes: &[&Outcome]) -> Vec<String> {
    let mut failures = Vec::new();
    for outcome in outcomes {
        for m in outcome.prefill.iter().chain([&outcome.result]) {
            if m.errors > 0 {
                failures.push(format!(
                    "{}: {} errors; first: {}",
                    m.target,
                    m.errors,
                    m.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
        if outcome.result.messages() == 0 {
            failures.push(format!(
                "{}: no message went through in {} mode",
                outcome.result.target,
                outcome.result.mode.name()
            ));
        }
    }
    failures
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

async fn execute(args: Args) -> Result<Vec<String>, String> {
    if args.mode == Mode::Mixed && args.connections < 2 {
        return Err("mixed mode needs at least 2 connections".into());
    }
    let a = Arc::new(
        Target::parse(&args.url, args.long_poll_ms, args.auth_token.as_deref())?
            .with_partitions(args.partitions)?,
    );
    let b = match &args.compare {
        Some(url) => Some(Arc::new(
            Target::parse(url, args.long_poll_ms, args.auth_token.as_deref())?
                .with_partitions(args.partitions)?,
        )),
        None => None,
    };
    let payload = Arc::new(Payload::new(args.body_bytes, args.batch as usize)?);
    let plan = Plan {
        mode: args.mode,
        connections: args.connections as usize,
        // Under --messages every message counts, so nothing is warm-up.
        warmup: if args.messages.is_some() {
            Duration::ZERO
        } else {
            args.warmup
        },
        duration: match (args.duration, args.messages) {
            (Some(duration), _) => Some(duration),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        },
        messages: args.messages,
        payload,
        batch: args.batch as usize,
        label: args.mode.name().to_owned(),
        server_pid: args.pid,
    };
    let fill = prefill(&args, &plan);

    let Some(b) = b else {
        let outcome = measure(&a, &plan, fill).await;
        if args.json {
            print(
                &json!({ "body_bytes": args.body_bytes, "run": outcome.result.to_json() })
                    .to_string(),
            );
        } else {
            print(&report::single(&outcome.result));
        }
        return Ok(failures(&[&outcome]));
    };

    if !args.json {
        print(&format!(
            "ubroker-load --compare: {} mode, {} connections, batches of {}, {}, {}-byte bodies, rounds: {}\n  A = {}\n  B = {}\n",
            plan.mode.name(),
            plan.connections,
            plan.batch,
            match plan.duration {
                Some(d) => format!("{:.1} s after {:.1} s warm-up", d.as_secs_f64(), plan.warmup.as_secs_f64()),
                None => format!("{} messages", plan.messages.unwrap_or(0)),
            },
            args.body_bytes,
            args.rounds,
            a.url,
            b.url
        ));
        print(&report::table_header());
    }
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let mut pair = Vec::new();
        for (label, target, pid) in [("A", &a, args.pid), ("B", &b, args.compare_pid)] {
            let plan = Plan {
                label: format!("round {round} {label}"),
                server_pid: pid,
                ..plan.clone()
            };
            let outcome = measure(target, &plan, fill).await;
            if !args.json {
                print(&report::table_row(
                    &round.to_string(),
                    label,
                    &outcome.result,
                ));
            }
            pair.push(outcome);
        }
        let ratio = Ratio::of(&pair[0].result, &pair[1].result);
        if !args.json {
            print(&ratio.line(&format!("round {round}")));
        }
        rounds.push((pair, ratio));
    }
    let ratios: Vec<Ratio> = rounds.iter().map(|(_, r)| *r).collect();
    let median = Ratio::median(&ratios);
    let median_of = |index: usize, figure: fn(&Measurement) -> f64| {
        report::median(
            rounds
                .iter()
                .map(|(pair, _)| figure(&pair[index].result))
                .collect(),
        )
    };
    if args.json {
        let runs: Vec<_> = rounds
            .iter()
            .enumerate()
            .flat_map(|(round, (pair, ratio))| {
                pair.iter().zip(["A", "B"]).map(move |(outcome, label)| {
                    json!({
                        "round": round + 1,
                        "label": label,
                        "prefill": outcome.prefill.as_ref().map(Measurement::to_json),
                        "result": outcome.result.to_json(),
                        "ratio": ratio.to_json(),
                    })
                })
            })
            .collect();
        print(
            &json!({
                "a": a.url,
                "b": b.url,
                "body_bytes": args.body_bytes,
                "runs": runs,
                "median_ratio": median.to_json(),
            })
            .to_string(),
        );
    } else {
        print("");
        for (index, label) in [(0, "A"), (1, "B")] {
            print(&format!(
                "median {label}: requests/s {:.0}, messages/s {:.0}, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
                median_of(index, Measurement::requests_per_sec),
                median_of(index, Measurement::messages_per_sec),
                median_of(index, |m| m.latency_ms(0.5)),
                median_of(index, |m| m.latency_ms(0.99)),
                median_of(index, |m| m.latency_ms(0.999)),
            ));
        }
        print(&median.line(&format!("median over rounds ({})", args.rounds)));
    }
    let all: Vec<&Outcome> = rounds.iter().flat_map(|(pair, _)| pair.iter()).collect();
    Ok(failures(&all))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ubroker-load: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(failures) if failures.is_empty() => ExitCode::SUCCESS,
        Ok(failures) => {
            for failure in failures {
                eprintln!("ubroker-load: FAILED: {failure}");
            }
            ExitCode::FAILURE
        }
        Err(usage) => {
            eprintln!("ubroker-load: {usage}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
