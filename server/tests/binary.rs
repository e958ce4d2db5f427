//! The `ubroker` binary as a user runs it: flags, the one stdout line,
//! serving, and SIGTERM / SIGINT ending it with exit status 0.

mod common;

use std::process::{Command, Stdio};

use common::{Binary, Client};

#[tokio::test]
async fn serves_and_exits_zero_on_sigterm_and_sigint() {
    for sig in ["TERM", "INT"] {
        let running = Binary::start(&["--port", "0", "--ttl", "1000"], &[], Stdio::null());
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
        running.signal(sig);
        assert_eq!(running.wait(), Some(0), "SIG{sig}");
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
    let running = Binary::start(
        &[],
        &[("UBROKER_PORT", "0"), ("UBROKER_HOST", "127.0.0.1")],
        Stdio::null(),
    );
    let line = &running.stdout_line;
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    assert!(!line.ends_with(":8080\n"), "UBROKER_PORT=0 was honoured");
    running.signal("TERM");
    assert_eq!(running.wait(), Some(0));
}
