//! The `ubroker` binary as a user runs it: flags, the one stdout line,
//! serving, and SIGTERM / SIGINT ending it with exit status 0.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::Client;

struct Running {
    child: Child,
    addr: SocketAddr,
    stdout_line: String,
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ubroker"))
        .args(args)
        .env_remove("UBROKER_PORT")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Running {
        child,
        addr,
        stdout_line: line,
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn serves_and_exits_zero_on_sigterm_and_sigint() {
    for sig in ["TERM", "INT"] {
        let mut running = start(&["--port", "0", "--ttl", "1000"]);
        assert!(running.stdout_line.ends_with('\n'));
        assert!(
            running.addr.ip().is_loopback(),
            "listens on 127.0.0.1 by default"
        );
        let mut c = Client::connect(running.addr).await;
        assert_eq!(c.publish("hello").await.status, 200);
        let (id, body) = c.fetch(0).await.delivery();
        assert_eq!(body, "hello");
        assert_eq!(c.acknowledge(id).await.status, 200);
        drop(c);
        signal(&running.child, sig);
        let status = running.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "SIG{sig}");
    }
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ubroker"))
        .args(["--ttl", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn flags_are_read_from_the_environment() {
    let mut running = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ubroker"))
            .env("UBROKER_PORT", "0")
            .env("UBROKER_HOST", "127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
        assert!(!line.ends_with(":8080\n"), "UBROKER_PORT=0 was honoured");
        child
    };
    signal(&running, "TERM");
    assert_eq!(running.wait().unwrap().code(), Some(0));
}
