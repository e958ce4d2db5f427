//! The `ubroker-cli` binary, run as a user runs it, against a real broker
//! (`ubroker_server::Server` on `127.0.0.1:0`, in a runtime of its own on
//! another thread): what each command prints, what it changes, and the
//! exit status and code of each kind of failure.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;
use ubroker_engine::Broker;
use ubroker_server::{Config, Server, TokioClock};

/// A broker on its own thread; stopped (and joined) on drop.
struct TestBroker {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestBroker {
    fn start() -> Self {
        Self::with(Config::for_port(0))
    }

    fn with(config: Config) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, address) = std::sync::mpsc::channel::<SocketAddr>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                bound.send(listener.local_addr().unwrap()).unwrap();
                let broker = Arc::new(Broker::with_clock(config.engine(), TokioClock::new()));
                Server::new(listener, broker, config)
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = address.recv().unwrap();
        TestBroker {
            url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `ubroker-cli --url <this broker> args...`, with no token from the
    /// environment.
    fn cli(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ubroker-cli"));
        command
            .env_remove("UBROKER_TOKEN")
            .env("UBROKER_URL", &self.url)
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cli(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs and expects success; answers standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// The queue's figures from `queues --json`, or `None`.
    fn queue(&self, name: &str) -> Option<Value> {
        let list = self.json(&["queues"]);
        list["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
    }

    fn ready(&self, name: &str) -> u64 {
        self.queue(name).map_or(0, |q| q["ready"].as_u64().unwrap())
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs with `input` on standard input.
fn with_stdin(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn publish_arguments_and_stdin_lines_then_consume_prints_them_in_order() {
    let b = TestBroker::start();
    assert_eq!(
        b.ok(&["publish", "jobs", "one", "two words"]),
        "published 2 message(s) to jobs\n"
    );
    // 1,201 lines in batches of 500 (three requests), CRLF endings.
    let lines: String = (0..1201).map(|i| format!("line {i}\r\n")).collect();
    let out = with_stdin(
        b.cli(&["publish", "jobs", "--batch", "500"]),
        lines.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "published 1201 message(s) to jobs\n");
    // Piped: no progress line, nothing on standard error.
    assert_eq!(text(&out.stderr), "");
    assert_eq!(b.ready("jobs"), 1203);

    let out = b.run(&["consume", "jobs", "--count", "3"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "one\ntwo words\nline 0\n");
    assert!(text(&out.stderr).contains("3 acknowledged"));
    let printed = b.ok(&["consume", "jobs", "--until-empty", "--parallel", "8"]);
    assert_eq!(printed.lines().count(), 1200);
    let q = b.queue("jobs").unwrap();
    assert_eq!(
        (q["ready"].as_u64(), q["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn consume_json_prints_deliveries() {
    let b = TestBroker::start();
    b.ok(&["publish", "q", "hé \"x\""]);
    let line = b.json(&["consume", "q", "--count", "1"]);
    assert_eq!(line["body"], "hé \"x\"");
    assert_eq!(line["attempt"], 1);
    assert!(line["message_id"].is_u64() && line["id"].is_u64());
}

#[test]
fn exec_acknowledges_on_zero_requeues_otherwise_and_until_empty_stops() {
    let b = TestBroker::start();
    let dir = std::env::temp_dir().join(format!("ubroker-cli-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    let _ = std::fs::remove_file(&log);
    b.ok(&["put", "work", "--max-deliveries", "2"]);
    b.ok(&["publish", "work", "good 1", "bad", "good 2"]);
    // The body arrives on standard input, with the message's id and
    // attempt in the environment; "bad" fails every time.
    let command = format!(
        "body=$(cat); echo \"$UBROKER_QUEUE $UBROKER_ATTEMPT $body\" >> {}; [ \"$body\" != bad ]",
        log.display()
    );
    let out = b.run(&["consume", "work", "--exec", &command, "--until-empty"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("2 acknowledged, 2 requeued"), "{stderr}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = logged.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["work 1 bad", "work 1 good 1", "work 1 good 2", "work 2 bad"]
    );
    // Its second failure used up its deliveries: it is a dead letter.
    assert_eq!(b.ready("work"), 0);
    assert_eq!(b.ready("work.dead"), 1);
    assert_eq!(
        b.ok(&["redrive", "work"]),
        "moved 1 message(s) from work.dead back to work\n"
    );
    assert_eq!(b.ready("work"), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn parallel_runs_that_many_commands_at_once() {
    let b = TestBroker::start();
    let dir = std::env::temp_dir().join(format!("ubroker-cli-parallel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    b.ok(&["publish", "p", "a", "b", "c"]);
    // Each command marks itself, then waits until three are marked: it
    // can succeed only if three run at the same time (one at a time, the
    // first would give up and fail after its 200 polls).
    let command = format!(
        "d={}; touch \"$d/$(cat)\"; n=0; while [ $(ls \"$d\" | wc -l) -lt 3 ]; do n=$((n+1)); [ $n -gt 200 ] && exit 1; sleep 0.05; done",
        dir.display()
    );
    let out = b.run(&[
        "consume",
        "p",
        "--exec",
        &command,
        "--parallel",
        "3",
        "--count",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("3 acknowledged, 0 requeued"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn admin_commands_and_their_json() {
    let b = TestBroker::start();
    let q = b.json(&["put", "orders", "--ttl-ms", "5000", "--max-deliveries", "4"]);
    assert_eq!(
        (
            q["name"].as_str(),
            q["ttl_ms"].as_u64(),
            q["max_deliveries"].as_u64()
        ),
        (Some("orders"), Some(5000), Some(4))
    );
    b.ok(&["publish", "orders", "x", "y"]);
    let table = b.ok(&["queues"]);
    let row = table.lines().find(|l| l.starts_with("orders")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["orders", "2", "0", "0", "2", "5000", "4"]
    );
    let stats = b.json(&["stats"]);
    assert_eq!(stats["queues"]["orders"]["published"], 2);
    assert!(b.ok(&["stats"]).lines().any(|l| l.starts_with("orders ")));
    assert_eq!(b.json(&["delete", "orders"])["deleted"], 2);
    assert!(b.queue("orders").is_none());
}

#[test]
fn stats_watch_refreshes_until_interrupted() {
    let b = TestBroker::start();
    let mut child = b
        .cli(&["--json", "stats", "--watch", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        assert!(serde_json::from_str::<Value>(&line).unwrap()["uptime_ms"].is_u64());
    }
    // SIGINT ends it cleanly.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
}

#[test]
fn each_failure_has_its_exit_status_and_code_on_stderr() {
    let b = TestBroker::start();
    let cases: [(&[&str], i32, &str); 4] = [
        (&["delete", "missing"], 13, "error[not_found]"),
        (&["put", "q", "--ttl-ms", "0"], 10, "error[invalid_request]"),
        (&["redrive", "missing"], 13, "error[not_found]"),
        (&["publish", "bad name", "x"], 2, "error[usage]"),
    ];
    for (args, status, code) in cases {
        let out = b.run(args);
        assert_eq!(out.status.code(), Some(status), "{args:?}");
        assert!(
            text(&out.stderr).starts_with(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "");
    }
    // Nothing listens on port 1.
    let out = Command::new(env!("CARGO_BIN_EXE_ubroker-cli"))
        .args(["--url", "http://127.0.0.1:1", "--retries", "0", "queues"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).starts_with("error[unreachable]"));
    // clap's own usage errors are status 2 as well.
    assert_eq!(b.run(&["publish"]).status.code(), Some(2));
}

#[test]
fn the_token_comes_from_the_flag_or_the_environment() {
    let mut config = Config::for_port(0);
    config.auth_token = Some("s3cret-token".into());
    let b = TestBroker::with(config);
    let out = b.run(&["queues"]);
    assert_eq!(out.status.code(), Some(15));
    assert!(text(&out.stderr).starts_with("error[unauthorized]"));
    assert_eq!(
        b.run(&["--token", "wrong", "queues"]).status.code(),
        Some(15)
    );
    assert!(b
        .run(&["--token", "s3cret-token", "queues"])
        .status
        .success());
    let out = b
        .cli(&["publish", "t", "x"])
        .env("UBROKER_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn partitions_spread_publishes_and_consume_collects_them() {
    let b = TestBroker::start();
    let lines: String = (0..30).map(|i| format!("{i}\n")).collect();
    let out = with_stdin(
        b.cli(&["publish", "many", "--partitions", "3", "--batch", "10"]),
        lines.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let per_partition: Vec<u64> = (0..3).map(|k| b.ready(&format!("many--{k}"))).collect();
    assert_eq!(per_partition, [10, 10, 10]);
    let printed = b.ok(&["consume", "many", "--partitions", "3", "--until-empty"]);
    let mut got: Vec<u32> = printed.lines().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    assert_eq!(
        (0..3).map(|k| b.ready(&format!("many--{k}"))).sum::<u64>(),
        0
    );
}

#[test]
fn help_documents_exit_statuses_and_completions_are_generated() {
    let help = text(
        &Command::new(env!("CARGO_BIN_EXE_ubroker-cli"))
            .arg("--help")
            .output()
            .unwrap()
            .stdout,
    );
    assert!(help.contains("15  unauthorized"), "{help}");
    let bash = text(
        &Command::new(env!("CARGO_BIN_EXE_ubroker-cli"))
            .args(["completions", "bash"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(bash.contains("complete -F") && bash.contains("redrive"));
}

#[test]
fn publish_shows_progress_on_a_terminal_only() {
    let b = TestBroker::start();
    let dir = std::env::temp_dir().join(format!("ubroker-cli-progress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("lines");
    let lines: String = (0..250).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    // `script` (util-linux, Debian's essential bsdutils) gives the command a
    // terminal for standard output and error; standard input is the file.
    let command = format!(
        "{} publish tty --batch 100 < {}",
        env!("CARGO_BIN_EXE_ubroker-cli"),
        input.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("UBROKER_TOKEN")
        .env("UBROKER_URL", &b.url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for n in [100, 200, 250] {
        assert!(
            shown.contains(&format!("\rpublished {n} message(s) to tty…")),
            "{shown:?}"
        );
    }
    assert!(
        shown.contains("published 250 message(s) to tty\r\n"),
        "{shown:?}"
    );
    assert_eq!(b.ready("tty"), 250);
    std::fs::remove_dir_all(&dir).unwrap();
}
