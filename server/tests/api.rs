//! The HTTP contract, end to end: every row of SPEC.md's routes table and
//! every Semantics rule, against a real server on `127.0.0.1:0`, spoken to
//! over TCP with hyper's HTTP/1.1 client.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{config, raw_exchange, raw_status, Client, TestServer};
use hyper::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use ubroker_engine::Broker;
use ubroker_server::TokioClock;

// --- POST /publish ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_accepts_a_string_body() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for body in [
        "hello",
        "",
        "ünïcødé ✓",
        "quotes \" and \\ and \n newlines",
        "\u{0}",
    ] {
        let r = c.publish(body).await;
        assert_eq!(
            (r.status.as_u16(), r.json.clone()),
            (200, serde_json::json!({}))
        );
        assert_eq!(c.fetch(0).await.delivery().1, body, "round trip");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rejects_malformed_bodies_and_queues_nothing() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for bad in [
        "",
        "not json",
        "{",
        "{\"body\": \"unterminated}",
        "[\"body\"]",
        "\"body\"",
        "42",
        "null",
        "{}",
        "{\"Body\": \"x\"}",
        "{\"body\": 42}",
        "{\"body\": null}",
        "{\"body\": true}",
        "{\"body\": {\"nested\": \"x\"}}",
        "{\"body\": [\"x\"]}",
        "{\"body\": \"a\", \"body\": \"b\"}",
        "{\"body\": \"lone \\ud800 surrogate\"}",
        "{\"body\": \"bad escape \\x\"}",
        "{\"body\": \"x\"} trailing",
    ] {
        let r = c.send(Method::POST, "/publish", bad).await;
        assert_eq!(r.status, 400, "{bad:?} -> {r:?}");
        assert!(r.error().starts_with("invalid request body"), "{r:?}");
    }
    // Invalid UTF-8 inside the string.
    let r = c
        .send(
            Method::POST,
            "/publish",
            Bytes::from_static(b"{\"body\": \"\xff\xfe\"}"),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let stats = server.broker.stats();
    assert_eq!((stats.published, stats.ready), (0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_max_body_bytes_is_413() {
    let mut cfg = config();
    cfg.max_body_bytes = 64;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    let fits = format!("{{\"body\": \"{}\"}}", "x".repeat(64 - 12));
    assert_eq!(fits.len(), 64);
    assert_eq!(c.send(Method::POST, "/publish", fits).await.status, 200);
    let over = format!("{{\"body\": \"{}\"}}", "x".repeat(64 - 11));
    let mut c = server.client().await;
    let r = c.send(Method::POST, "/publish", over).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.error().contains("64"), "{r:?}");
    // Chunked (no Content-Length) is cut off at the limit as well.
    let big = "x".repeat(10_000);
    let raw = format!(
        "POST /publish HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{{\"body\": \"{big}\"}}\r\n0\r\n\r\n",
        big.len() + 12
    );
    assert_eq!(
        raw_status(&raw_exchange(server.addr, raw.as_bytes()).await),
        413
    );
    assert_eq!(server.broker.stats().published, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_503_once_the_broker_is_closed() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    c.publish("a").await;
    let (id, _) = c.fetch(0).await.delivery();
    server.broker.close();
    for r in [
        c.publish("b").await,
        c.fetch(0).await,
        c.fetch(100).await,
        c.acknowledge(id).await,
        c.requeue(id).await,
    ] {
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.error(), "server is shutting down");
    }
    server.stop().await;
}

// --- GET /fetch ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_returns_the_head_with_a_fresh_id() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    c.publish("m").await;
    let r = c.send(Method::GET, "/fetch", Bytes::new()).await;
    assert_eq!(r.status, 200);
    let keys: HashSet<_> = r.json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        HashSet::from(["message", "id", "message_id", "attempt"].map(str::to_owned))
    );
    assert_eq!(r.json["message"], serde_json::json!({"body": "m"}));
    assert!(r.json["id"].is_u64());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_on_an_empty_queue_is_408_after_the_wait() {
    let mut cfg = config();
    cfg.fetch_timeout = 50;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    let r = c.send(Method::GET, "/fetch", Bytes::new()).await;
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.error(), "no message arrived within the wait");
    assert_eq!(c.fetch(0).await.status, 408);
    let stats = server.broker.stats();
    assert_eq!((stats.in_flight, stats.waiting), (0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_rejects_a_bad_wait() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    c.publish("m").await;
    for q in ["wait=", "wait=-1", "wait=abc", "wait=1.5", "wait=0x10"] {
        let r = c
            .send(Method::GET, &format!("/fetch?{q}"), Bytes::new())
            .await;
        assert_eq!(r.status, 400, "{q}: {r:?}");
    }
    assert_eq!(
        server.broker.stats().ready,
        1,
        "a rejected fetch leases nothing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_woken_by_a_publish() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let waiter = tokio::spawn(async move { Client::connect(addr).await.fetch(10_000).await });
    server
        .until("the fetch waits", |b| b.stats().waiting == 1)
        .await;
    server.client().await.publish("wake").await;
    let r = waiter.await.unwrap();
    assert_eq!(r.delivery().1, "wake");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_waiters_each_get_their_own_message() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let waiters: Vec<_> = (0..16)
        .map(|_| tokio::spawn(async move { Client::connect(addr).await.fetch(10_000).await }))
        .collect();
    server
        .until("16 fetches wait", |b| b.stats().waiting == 16)
        .await;
    let mut c = server.client().await;
    for i in 0..16 {
        c.publish(&format!("m{i}")).await;
    }
    let mut bodies = HashSet::new();
    let mut ids = HashSet::new();
    for w in waiters {
        let (id, body) = w.await.unwrap().delivery();
        assert!(ids.insert(id));
        assert!(bodies.insert(body));
    }
    assert_eq!(bodies.len(), 16);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_client_that_disconnects_leaves_nothing_behind() {
    let server = TestServer::start(config()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /fetch?wait=20000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    server
        .until("the fetch waits", |b| b.stats().waiting == 1)
        .await;
    drop(stream);
    server
        .until("the waiter is gone", |b| b.stats().waiting == 0)
        .await;
    let mut c = server.client().await;
    c.publish("kept").await;
    let stats = server.broker.stats();
    assert_eq!(
        (stats.ready, stats.in_flight),
        (1, 0),
        "nothing was leased for the gone client"
    );
    assert_eq!(c.fetch(0).await.delivery().1, "kept");
    server.stop().await;
}

// --- POST /acknowledge/{id} and /requeue/{id} -------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_removes_the_message_for_good() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    c.publish("m").await;
    let (id, _) = c.fetch(0).await.delivery();
    let r = c.acknowledge(id).await;
    assert_eq!((r.status.as_u16(), r.json), (200, serde_json::json!({})));
    for r in [c.acknowledge(id).await, c.requeue(id).await] {
        assert_eq!(r.status, 400);
        assert_eq!(r.error(), "id is invalid");
    }
    assert_eq!(c.fetch(0).await.status, 408);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_puts_the_message_at_the_tail_under_a_new_id() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for m in ["a", "b", "c"] {
        c.publish(m).await;
    }
    let (id_a, _) = c.fetch(0).await.delivery();
    assert_eq!(c.requeue(id_a).await.status, 200);
    assert_eq!(c.requeue(id_a).await.error(), "id is invalid");
    assert_eq!(c.acknowledge(id_a).await.error(), "id is invalid");
    let order: Vec<_> = [c.fetch(0).await, c.fetch(0).await, c.fetch(0).await]
        .iter()
        .map(|r| r.delivery())
        .collect();
    assert_eq!(
        order.iter().map(|d| d.1.as_str()).collect::<Vec<_>>(),
        ["b", "c", "a"]
    );
    assert_ne!(order[2].0, id_a, "a redelivery gets a fresh id");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_ids() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for route in ["acknowledge", "requeue"] {
        for id in ["0", "1", "18446744073709551615"] {
            let r = c
                .send(Method::POST, &format!("/{route}/{id}"), Bytes::new())
                .await;
            assert_eq!(
                (r.status.as_u16(), r.error()),
                (400, "id is invalid"),
                "{route}/{id}"
            );
        }
        for id in [
            "abc",
            "-1",
            "+1",
            "1.5",
            "18446744073709551616",
            "99999999999999999999999",
            "1e3",
            "%20",
            "",
        ] {
            let r = c
                .send(Method::POST, &format!("/{route}/{id}"), Bytes::new())
                .await;
            assert_eq!(r.status, 400, "{route}/{id}: {r:?}");
            assert_eq!(r.error(), "id is not an unsigned 64-bit integer");
        }
    }
    server.stop().await;
}

// --- Anything else ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for path in [
        "/",
        "/publish/",
        "/fetch/",
        "/acknowledge/1/2",
        "/ack/1",
        "/PUBLISH",
    ] {
        let r = c.send(Method::POST, path, Bytes::new()).await;
        assert_eq!((r.status.as_u16(), r.error()), (404, "not found"), "{path}");
    }
    for (method, path, allow) in [
        (Method::GET, "/publish", "POST"),
        (Method::PUT, "/publish", "POST"),
        (Method::POST, "/fetch", "GET"),
        (Method::DELETE, "/fetch", "GET"),
        (Method::HEAD, "/fetch", "GET"),
        (Method::GET, "/acknowledge/1", "POST"),
        (Method::GET, "/requeue/x", "POST"),
        // The batch settles (issue 9).
        (Method::GET, "/acknowledge", "POST"),
        (Method::PUT, "/requeue", "POST"),
        // Replication's leader check exists on every node (a single node
        // answers its GET 404, below), so another method is a 405.
        (Method::POST, "/health/leader", "GET"),
        (Method::TRACE, "/health/leader", "GET"),
    ] {
        if method == Method::HEAD {
            // HEAD responses have no body; check status and Allow raw.
            let raw = raw_exchange(
                server.addr,
                b"HEAD /fetch HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
            assert_eq!(raw_status(&raw), 405, "{raw}");
            assert!(raw.to_ascii_lowercase().contains("allow: get"), "{raw}");
            continue;
        }
        let r = c.send(method.clone(), path, Bytes::new()).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.headers["allow"], allow);
        assert!(r.error().contains(allow));
    }
    // Without --replicas there is no leader to ask about.
    let r = c.send(Method::GET, "/health/leader", Bytes::new()).await;
    assert_eq!((r.status.as_u16(), r.error()), (404, "not found"));
    let stats = server.broker.stats();
    assert_eq!((stats.published, stats.delivered), (0, 0));
    server.stop().await;
}

// --- Semantics -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_delivered_in_publish_order() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for i in 0..200 {
        c.publish(&i.to_string()).await;
    }
    for i in 0..200 {
        let (id, body) = c.fetch(0).await.delivery();
        assert_eq!(body, i.to_string());
        c.acknowledge(id).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_message_expires_and_is_redelivered() {
    // A real short TTL and the real sweeper: the long-poll below is woken by
    // the expiry itself, so nothing here sleeps.
    let mut cfg = config();
    cfg.ttl = 100;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    c.publish("again").await;
    let (first, _) = c.fetch(0).await.delivery();
    let (second, body) = c.fetch(10_000).await.delivery();
    assert_eq!(body, "again");
    assert_ne!(first, second);
    assert_eq!(c.acknowledge(first).await.error(), "id is invalid");
    assert_eq!(c.acknowledge(second).await.status, 200);
    let stats = server.broker.stats();
    assert_eq!(
        (
            stats.expired,
            stats.acknowledged,
            stats.ready,
            stats.in_flight
        ),
        (1, 1, 0, 0)
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn settlement_fails_at_the_deadline_before_any_sweep() {
    // tokio's paused clock, which the engine reads through `TokioClock`:
    // time jumps, and the id must be invalid at the deadline whether or not
    // the timekeeper has run yet.
    let cfg = config();
    let broker = Arc::new(Broker::with_clock(cfg.engine(), TokioClock::new()));
    let server = TestServer::start_with(cfg, broker).await;
    let mut c = server.client().await;
    c.publish("x").await;
    c.publish("y").await;
    let (x, _) = c.fetch(0).await.delivery();
    let (y, _) = c.fetch(0).await.delivery();
    tokio::time::advance(Duration::from_millis(20_000) - Duration::from_micros(1)).await;
    assert_eq!(
        c.acknowledge(x).await.status,
        200,
        "valid until the deadline"
    );
    tokio::time::advance(Duration::from_micros(1)).await;
    assert_eq!(c.acknowledge(y).await.error(), "id is invalid");
    assert_eq!(c.requeue(y).await.error(), "id is invalid");
    // The sweeper returns it; a long-poll picks it up under a new id.
    let (y2, body) = c.fetch(10_000).await.delivery();
    assert_eq!(body, "y");
    assert_ne!(y2, y);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishers_and_consumers_lose_nothing() {
    const PUBLISHERS: usize = 4;
    const CONSUMERS: usize = 4;
    const EACH: usize = 250;
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                for i in 0..EACH {
                    assert_eq!(c.publish(&format!("{p}-{i}")).await.status, 200);
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                let mut got = Vec::new();
                loop {
                    let r = c.fetch(300).await;
                    if r.status == 408 {
                        return got;
                    }
                    let (id, body) = r.delivery();
                    assert_eq!(c.acknowledge(id).await.status, 200);
                    got.push(body);
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let mut all = HashSet::new();
    for c in consumers {
        for body in c.await.unwrap() {
            assert!(all.insert(body.clone()), "{body} acknowledged twice");
        }
    }
    assert_eq!(all.len(), PUBLISHERS * EACH);
    let stats = server.broker.stats();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.queued_bytes),
        (0, 0, 0)
    );
    assert_eq!(stats.acknowledged, (PUBLISHERS * EACH) as u64);
    server.stop().await;
}

// --- Shutdown -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiting_fetches_and_completes_publishes() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let waiter = tokio::spawn(async move { Client::connect(addr).await.fetch(20_000).await });
    server
        .until("the fetch waits", |b| b.stats().waiting == 1)
        .await;
    let mut server = server;
    server.begin_shutdown();
    let r = waiter.await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.error(), "server is shutting down");
    server.stop().await;
}
