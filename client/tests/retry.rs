//! Retries against a scripted endpoint (what a healthy broker does not do
//! on demand: cut a connection after reading a request, answer `503` with
//! `Retry-After`) and against the real broker's `queue_full`.

mod common;

use std::time::{Duration, Instant};

use common::{config, quick_retries, response, Scripted, Step, TestBroker};
use ubroker_client::{Client, Code, Error, RetryPolicy};

const EMPTY_OK: &str = "{}";

fn client(url: &str, policy: RetryPolicy) -> Client {
    Client::builder(url).retry(policy).build().unwrap()
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = Scripted::start(vec![
        response(
            "503 Service Unavailable",
            &["retry-after: 1", "connection: close"],
            r#"{"error":"too many connections","code":"too_many_connections"}"#,
        ),
        response("200 OK", &[], EMPTY_OK),
    ])
    .await;
    client(&server.url(), RetryPolicy::default())
        .default_queue()
        .publish("x")
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].0 - requests[0].0;
    // Without Retry-After the first backoff is 25 to 50 ms.
    assert!(gap >= Duration::from_secs(1), "waited only {gap:?}");
}

#[tokio::test]
async fn retry_after_is_capped() {
    let server = Scripted::start(vec![
        response(
            "429 Too Many Requests",
            &["retry-after: 3600"],
            r#"{"error":"queue full","code":"queue_full"}"#,
        ),
        response("200 OK", &[], EMPTY_OK),
    ])
    .await;
    let policy = RetryPolicy {
        max_retry_after: Duration::from_millis(300),
        ..RetryPolicy::default()
    };
    let start = Instant::now();
    client(&server.url(), policy)
        .default_queue()
        .publish("x")
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].0 - requests[0].0;
    assert!(gap >= Duration::from_millis(300), "waited only {gap:?}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "the cap was ignored"
    );
}

#[tokio::test]
async fn codes_that_must_not_be_retried_are_not() {
    for (status, code, expected) in [
        (
            "429 Too Many Requests",
            "too_many_queues",
            Code::TooManyQueues,
        ),
        ("503 Service Unavailable", "log_failed", Code::LogFailed),
    ] {
        let body = format!(r#"{{"error":"no","code":"{code}"}}"#);
        let server = Scripted::start(vec![response(status, &["retry-after: 1"], &body)]).await;
        let e = client(&server.url(), quick_retries())
            .queue("q")
            .unwrap()
            .publish("x")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(&expected));
        assert_eq!(server.requests().len(), 1, "{code} was retried");
    }
}

#[tokio::test]
async fn transient_codes_are_retried_until_the_policy_gives_up() {
    let server = Scripted::start(vec![response(
        "503 Service Unavailable",
        &[],
        r#"{"error":"server is shutting down","code":"shutting_down"}"#,
    )])
    .await;
    let policy = RetryPolicy {
        max_retries: 3,
        ..quick_retries()
    };
    let e = client(&server.url(), policy)
        .default_queue()
        .fetch(None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&Code::ShuttingDown));
    assert_eq!(e.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn a_publish_whose_answer_is_lost_is_not_retried_unless_asked() {
    let server = Scripted::start(vec![Step::Close, response("200 OK", &[], EMPTY_OK)]).await;
    let e = client(&server.url(), quick_retries())
        .default_queue()
        .publish("x")
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Transport { connect: false, .. }),
        "{e:?}"
    );
    assert_eq!(server.requests().len(), 1);

    let server = Scripted::start(vec![Step::Close, response("200 OK", &[], EMPTY_OK)]).await;
    let policy = RetryPolicy {
        retry_ambiguous_publishes: true,
        ..quick_retries()
    };
    client(&server.url(), policy)
        .default_queue()
        .publish("x")
        .await
        .unwrap();
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn fetches_and_settlements_are_retried_after_a_lost_answer() {
    for dedicated in [false, true] {
        lost_answers_are_retried(dedicated).await;
    }
}

async fn lost_answers_are_retried(dedicated: bool) {
    let server = Scripted::start(vec![
        Step::Close,
        response(
            "200 OK",
            &[],
            r#"{"message":{"body":"b"},"id":5,"message_id":5,"attempt":1}"#,
        ),
        Step::Close,
        response("200 OK", &[], EMPTY_OK),
    ])
    .await;
    let q = Client::builder(&server.url())
        .retry(quick_retries())
        .dedicated_connection(dedicated)
        .build()
        .unwrap()
        .queue("jobs")
        .unwrap();
    let d = q.fetch(None).await.unwrap().unwrap();
    assert_eq!(d.id, 5);
    q.acknowledge(d.id).await.unwrap();
    let lines: Vec<String> = server.requests().into_iter().map(|(_, l)| l).collect();
    assert_eq!(
        lines,
        [
            "GET /queues/jobs/fetch HTTP/1.1",
            "GET /queues/jobs/fetch HTTP/1.1",
            "POST /queues/jobs/acknowledge/5 HTTP/1.1",
            "POST /queues/jobs/acknowledge/5 HTTP/1.1",
        ],
        "dedicated: {dedicated}"
    );
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy = RetryPolicy {
        max_retries: 2,
        ..quick_retries()
    };
    let e = client(&format!("http://127.0.0.1:{port}"), policy)
        .default_queue()
        .publish("x")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transport { connect: true, .. }), "{e:?}");
}

#[tokio::test]
async fn a_full_queue_is_waited_out_as_the_broker_asks() {
    // Room for one 1-byte message (64 bytes of overhead each).
    let mut cfg = config();
    cfg.max_queue_bytes = 65;
    let server = TestBroker::start(cfg).await;
    let q = server.client().queue("tight").unwrap();
    q.publish("a").await.unwrap();
    let e = Client::builder(&server.url())
        .retry(RetryPolicy::never())
        .build()
        .unwrap()
        .queue("tight")
        .unwrap()
        .publish("b")
        .await
        .unwrap_err();
    let retry_after = e.retry_after().expect("queue_full carries Retry-After");
    assert_eq!(e.code(), Some(&Code::QueueFull));

    // Someone makes room 100 ms from now; the retry waits what the broker
    // asked, not the 50 ms backoff.
    let drain = q.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let d = drain.fetch(None).await.unwrap().unwrap();
        drain.acknowledge(d.id).await.unwrap();
    });
    let start = Instant::now();
    q.publish("b").await.unwrap();
    assert!(
        start.elapsed() >= retry_after,
        "retried after {:?}",
        start.elapsed()
    );
    assert_eq!(q.fetch(None).await.unwrap().unwrap().text(), "b");
    server.stop().await;
}
