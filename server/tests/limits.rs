//! Limits and access control, against a real server: queue bytes (429),
//! request heads (431), the bearer token (401), the connection cap, the
//! header-read (slowloris) and idle timeouts, and a slow publish body.

mod common;

use std::time::{Duration, Instant};

use common::{config, raw_exchange, raw_status, TestServer};
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; returns what it sent. Fails the test if the
/// server has not closed the connection within 10 s (a swallowed timeout
/// would let a test of "the server closes it" pass when it never does).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => {}
        // A reset is the server closing too.
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(error)) => panic!("reading until the server closed failed: {error}"),
        Err(_) => panic!(
            "the server did not close the connection within 10 s; it sent {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after_and_recovers() {
    let mut cfg = config();
    // Each held message counts its body plus 64 bytes.
    cfg.max_queue_bytes = 10 + 2 * ubroker_engine::MESSAGE_OVERHEAD;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    assert_eq!(c.publish("12345").await.status, 200);
    assert_eq!(c.publish("67890").await.status, 200);
    let r = c.publish("x").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error(), "queue full");
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(
        server.broker.stats().published,
        2,
        "nothing queued by a refused publish"
    );
    // Leased bytes still count; acknowledged ones are freed.
    let (id, _) = c.fetch(0).await.delivery();
    assert_eq!(c.publish("x").await.status, 429);
    c.acknowledge(id).await;
    assert_eq!(c.publish("x").await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_431() {
    let mut cfg = config();
    cfg.max_header_bytes = 1024;
    let server = TestServer::start(cfg).await;
    // Over the configured limit: a JSON 431 from the router.
    let big = "x".repeat(2_000);
    let raw = format!("POST /publish HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\ncontent-length: 13\r\n\r\n{{\"body\":\"a\"}}");
    let reply = raw_exchange(server.addr, raw.as_bytes()).await;
    assert_eq!(raw_status(&reply), 431, "{reply}");
    assert!(
        reply.contains("request headers are larger than 1024 bytes"),
        "{reply}"
    );
    // Far over it: hyper's parser refuses it before any routing.
    let huge = "x".repeat(100_000);
    let raw = format!("GET /fetch HTTP/1.1\r\nhost: x\r\nx-big: {huge}\r\n\r\n");
    let reply = raw_exchange(server.addr, raw.as_bytes()).await;
    assert_eq!(raw_status(&reply), 431, "{reply}");
    assert_eq!(server.broker.stats().published, 0);
    // Normal requests are unaffected.
    assert_eq!(server.client().await.publish("ok").await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_token_guards_every_route() {
    let mut cfg = config();
    cfg.auth_token = Some("correct-horse-battery-staple".into());
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    for (auth, expected) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Bearer correct-horse-battery-stapl"), 401),
        (Some("Basic correct-horse-battery-staple"), 401),
        (Some("Bearer correct-horse-battery-staple x"), 401),
        // RFC 9110: the scheme is case-insensitive, then 1*SP.
        (Some("Bearer  correct-horse-battery-staple"), 200),
        (Some("bearer correct-horse-battery-staple"), 200),
        (Some("Bearer correct-horse-battery-staple"), 200),
    ] {
        for (method, path, body) in [
            (Method::POST, "/publish", r#"{"body":"m"}"#),
            (Method::GET, "/nowhere", ""),
        ] {
            let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
            if let Some(auth) = auth {
                raw.push_str(&format!("authorization: {auth}\r\n"));
            }
            raw.push_str("\r\n");
            raw.push_str(body);
            let reply = raw_exchange(server.addr, raw.as_bytes()).await;
            let want = if expected == 200 && path == "/nowhere" {
                404
            } else {
                expected
            };
            assert_eq!(raw_status(&reply), want, "{auth:?} {path}: {reply}");
            if want == 401 {
                assert!(
                    reply
                        .to_ascii_lowercase()
                        .contains("www-authenticate: bearer realm=\"ubroker\""),
                    "{reply}"
                );
                assert!(reply.contains(
                    r#"{"error":"missing or wrong bearer token","code":"unauthorized"}"#
                ));
            }
        }
    }
    assert_eq!(
        server.broker.stats().published,
        3,
        "only the authorised publishes counted"
    );
    // Without a token, a plain client is refused on every route.
    for r in [c.fetch(0).await, c.acknowledge(1).await, c.requeue(1).await] {
        assert_eq!(r.status, 401);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_and_the_others_keep_working() {
    let mut cfg = config();
    cfg.max_connections = 4;
    let server = TestServer::start(cfg).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = server.client().await;
        assert_eq!(c.publish("m").await.status, 200);
        held.push(c);
    }
    let reply = raw_exchange(server.addr, b"GET /fetch HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(raw_status(&reply), 503, "{reply}");
    assert!(
        reply.contains(r#"{"error":"too many connections","code":"too_many_connections"}"#),
        "{reply}"
    );
    // The held connections are unharmed.
    for c in &mut held {
        assert_eq!(c.fetch(0).await.status, 200);
    }
    // Closing one frees a slot.
    held.pop();
    let mut admitted = false;
    for _ in 0..1_000 {
        let reply = raw_exchange(
            server.addr,
            b"GET /fetch?wait=0 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if raw_status(&reply) == 408 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(admitted, "a slot was freed when a connection closed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_closed_after_the_header_timeout_without_harming_others() {
    let mut cfg = config();
    cfg.header_read_timeout = 300;
    let server = TestServer::start(cfg).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /fetch HTTP/1.1\r\n").await.unwrap();
    // Trickle header bytes: activity alone must not keep it open.
    let trickle = async {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if slow.write_all(b"x").await.is_err() {
                return;
            }
        }
    };
    // Meanwhile a normal client is served.
    let normal = async {
        let mut c = server.client().await;
        assert_eq!(c.publish("fine").await.status, 200);
        assert_eq!(c.fetch(0).await.delivery().1, "fine");
    };
    tokio::join!(trickle, normal);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "the slow connection was cut ({elapsed:?})"
    );
    let rest = read_until_closed(&mut slow).await;
    assert!(rest.is_empty() || raw_status(&rest) >= 400, "{rest}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_and_busy_ones_are_not() {
    let mut cfg = config();
    cfg.idle_timeout = 200;
    let server = TestServer::start(cfg).await;
    // A long-poll longer than the idle timeout is a busy connection.
    let mut c = server.client().await;
    let r = c.fetch(600).await;
    assert_eq!(r.status, 408, "the long poll ran to its end");
    // Then, idle: the server closes it.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let closed = read_until_closed(&mut idle).await;
    assert!(closed.is_empty(), "closed without a response: {closed:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_body_that_never_finishes_is_cut_off() {
    let mut cfg = config();
    cfg.header_read_timeout = 300;
    let server = TestServer::start(cfg).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /publish HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"body\": \"never",
        )
        .await
        .unwrap();
    let reply = read_until_closed(&mut stream).await;
    assert_eq!(raw_status(&reply), 408, "{reply}");
    assert!(
        reply.contains("the request body did not arrive in time"),
        "{reply}"
    );
    assert_eq!(server.broker.stats().published, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_dies_holding_a_lease_gets_it_redelivered() {
    let mut cfg = config();
    cfg.ttl = 150;
    let server = TestServer::start(cfg).await;
    server.client().await.publish("job").await;
    {
        let mut doomed = server.client().await;
        let (_, body) = doomed.fetch(0).await.delivery();
        assert_eq!(body, "job");
        // The consumer "crashes": its connection goes away mid-lease.
    }
    let mut survivor = server.client().await;
    let (id, body) = survivor.fetch(5_000).await.delivery();
    assert_eq!(body, "job");
    assert_eq!(survivor.acknowledge(id).await.status, 200);
    assert_eq!(server.broker.stats().expired, 1);
    server.stop().await;
}
