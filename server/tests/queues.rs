//! Part 2 of the contract over HTTP: every rule of SPEC.md's sections
//! "Queues", "Messages and the lease life cycle", "Errors" and "Limits for
//! part 2", with the bad inputs they imply, against a real server on
//! `127.0.0.1:0`.
//!
//! Tests of time run on tokio's paused clock (`start_paused`), which the
//! engine reads through `TokioClock`: `tokio::time::advance` moves the
//! broker's clock and fires the timekeeper's sleep, and settlement checks
//! are exact at the deadline whether or not the timekeeper has run. Where
//! a paused clock does not fit (several clients in parallel), short real
//! TTLs are used with long-polling fetches that the event itself wakes;
//! nothing sleeps and then checks.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::{advance_ms, config, paused_server, publish, Client, Reply, TestServer};
use hyper::Method;
use serde_json::{json, Value};

// --- small helpers -------------------------------------------------------------

/// Asserts an error answer: this status, a body of exactly `error` (a
/// non-empty string) and `code`, with this code.
#[track_caller]
fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{r:?}");
    let object = r
        .json
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {r:?}"));
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["code", "error"]), "{r:?}");
    assert!(
        object["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{r:?}"
    );
    assert_eq!(object["code"], code, "{r:?}");
}

#[track_caller]
fn assert_ok_empty(r: &Reply) {
    assert_eq!((r.status.as_u16(), &r.json), (200, &json!({})), "{r:?}");
}

async fn get(c: &mut Client, path: &str) -> Reply {
    c.send(Method::GET, path, Bytes::new()).await
}

async fn post(c: &mut Client, path: &str) -> Reply {
    c.send(Method::POST, path, Bytes::new()).await
}

async fn delete(c: &mut Client, path: &str) -> Reply {
    c.send(Method::DELETE, path, Bytes::new()).await
}

async fn put(c: &mut Client, queue: &str, body: &str) -> Reply {
    c.send(Method::PUT, &format!("/queues/{queue}"), body.to_owned())
        .await
}

async fn fetch_q(c: &mut Client, queue: &str, wait_ms: u64) -> Reply {
    get(c, &format!("/queues/{queue}/fetch?wait={wait_ms}")).await
}

/// One delivery, as a fetch answers it.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    id: u64,
    message_id: u64,
    attempt: u64,
    body: String,
    dead_letter: Option<Value>,
}

#[track_caller]
fn got(r: &Reply) -> Got {
    assert_eq!(r.status, 200, "{r:?}");
    let object = r.json.as_object().unwrap();
    for key in object.keys() {
        assert!(
            ["message", "id", "message_id", "attempt", "dead_letter"].contains(&key.as_str()),
            "unexpected field {key}: {r:?}"
        );
    }
    assert_eq!(
        r.json["message"].as_object().map(|m| m.len()),
        Some(1),
        "{r:?}"
    );
    Got {
        id: r.json["id"].as_u64().unwrap(),
        message_id: r.json["message_id"].as_u64().unwrap(),
        attempt: r.json["attempt"].as_u64().unwrap(),
        body: r.json["message"]["body"].as_str().unwrap().to_owned(),
        dead_letter: object.get("dead_letter").cloned(),
    }
}

/// A delivery from `queue`, waiting up to `wait_ms`.
async fn fetched(c: &mut Client, queue: &str, wait_ms: u64) -> Got {
    got(&fetch_q(c, queue, wait_ms).await)
}

/// `GET /queues/{queue}`, which must be a 200.
async fn info(c: &mut Client, queue: &str) -> Value {
    let r = get(c, &format!("/queues/{queue}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json
}

/// `(ready, in_flight, delayed, bytes)` of `queue`.
async fn counts(c: &mut Client, queue: &str) -> (u64, u64, u64, u64) {
    let q = info(c, queue).await;
    let n = |k: &str| q[k].as_u64().unwrap_or_else(|| panic!("{k} in {q}"));
    (n("ready"), n("in_flight"), n("delayed"), n("bytes"))
}

async fn queue_names(c: &mut Client) -> Vec<String> {
    let r = get(c, "/queues").await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn settle(c: &mut Client, queue: &str, verb: &str, id: u64, query: &str) -> Reply {
    post(c, &format!("/queues/{queue}/{verb}/{id}{query}")).await
}

fn dead_letter_from(queue: &str) -> Option<Value> {
    Some(json!({"queue": queue, "reason": "max_deliveries"}))
}

// --- Queues: names ------------------------------------------------------------

/// Names that are not `^[A-Za-z0-9_-]{1,80}$`, with or without `.dead`, as
/// they stand in a path (never percent-decoded).
fn bad_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "a.b",
        "a.dead.dead",
        ".dead",
        "a.dead.",
        "a..dead",
        "a.Dead",
        "a.DEAD",
        "dead.",
        ".",
        "..",
        "a%2Db",
        "%61",
        "a%2Fb",
        "a%20b",
        "%C3%A9",
        "a+b",
        "a:b",
        "a@b",
        "a~b",
        "a!b",
        "a*b",
        "a,b",
        "a;b",
        "a=b",
        "a'b",
        "a$b",
    ]
    .map(str::to_owned)
    .to_vec();
    names.push("x".repeat(81));
    names.push(format!("{}.dead", "x".repeat(81)));
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queue_names_are_refused_on_every_route_and_create_nothing() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    let publish_body = r#"{"body": "x"}"#;
    let mut names = bad_names();
    names.push(String::new()); // the empty name: `/queues//publish`, `/queues/`
    for name in &names {
        let requests: Vec<(Method, String, &str)> = vec![
            (
                Method::POST,
                format!("/queues/{name}/publish"),
                publish_body,
            ),
            (
                Method::POST,
                format!("/queues/{name}/publish?delay=5"),
                publish_body,
            ),
            (Method::GET, format!("/queues/{name}/fetch?wait=0"), ""),
            (Method::GET, format!("/queues/{name}/fetch"), ""),
            (Method::POST, format!("/queues/{name}/acknowledge/1"), ""),
            (Method::POST, format!("/queues/{name}/requeue/1"), ""),
            (
                Method::POST,
                format!("/queues/{name}/requeue/1?delay=5"),
                "",
            ),
            (Method::POST, format!("/queues/{name}/touch/1"), ""),
            (Method::POST, format!("/queues/{name}/touch/1?ttl=5"), ""),
            (Method::POST, format!("/queues/{name}/redrive"), ""),
            (Method::POST, format!("/queues/{name}.dead/redrive"), ""),
            (Method::GET, format!("/queues/{name}"), ""),
            (Method::PUT, format!("/queues/{name}"), ""),
            (Method::PUT, format!("/queues/{name}"), r#"{"ttl_ms": 5}"#),
            (Method::DELETE, format!("/queues/{name}"), ""),
        ];
        for (method, path, body) in requests {
            let r = c.send(method.clone(), &path, body.to_owned()).await;
            assert_error(&r, 400, "invalid_queue_name");
            assert_eq!(r.error(), "invalid queue name", "{method} {path}");
        }
    }
    assert_eq!(queue_names(&mut c).await, ["default"]);
    let stats = server.broker.stats();
    assert_eq!((stats.published, stats.queues), (0, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_at_the_edges_of_the_pattern_are_accepted() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    let longest = "x".repeat(80);
    let longest_dead = format!("{longest}.dead");
    let names = [
        "a",
        "Z",
        "0",
        "-",
        "_",
        "dead",
        "a-b_C9",
        "x.dead",
        longest.as_str(),
        longest_dead.as_str(),
    ];
    for name in names {
        assert_ok_empty(&publish(&mut c, name, "", name).await);
        let d = fetched(&mut c, name, 0).await;
        assert_eq!(d.body, name);
        assert_ok_empty(&settle(&mut c, name, "touch", d.id, "").await);
        assert_ok_empty(&settle(&mut c, name, "acknowledge", d.id, "").await);
        assert_eq!(info(&mut c, name).await["name"], name);
    }
    let mut expected: Vec<&str> = names.to_vec();
    expected.push("default");
    expected.sort_unstable();
    assert_eq!(queue_names(&mut c).await, expected);
    server.stop().await;
}

// --- Queues: default and the unprefixed routes -----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unprefixed_routes_are_the_queue_default() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_ok_empty(&c.publish("u1").await);
    assert_ok_empty(&publish(&mut c, "default", "", "u2").await);
    assert_eq!(counts(&mut c, "default").await, (2, 0, 0, 4));

    let d1 = fetched(&mut c, "default", 0).await;
    assert_eq!((d1.body.as_str(), d1.attempt), ("u1", 1));
    assert_ok_empty(&c.acknowledge(d1.id).await);
    let d2 = got(&c.fetch(0).await);
    assert_eq!(d2.body, "u2");
    assert_ok_empty(&settle(&mut c, "default", "touch", d2.id, "").await);
    assert_ok_empty(&post(&mut c, &format!("/touch/{}", d2.id)).await);
    assert_ok_empty(&settle(&mut c, "default", "requeue", d2.id, "").await);
    assert_eq!(counts(&mut c, "default").await, (1, 0, 0, 2));
    let again = got(&c.fetch(0).await);
    assert_eq!(
        (again.body.as_str(), again.attempt, again.message_id),
        ("u2", 2, d2.message_id)
    );
    assert_ok_empty(&c.requeue(again.id).await);
    let third = fetched(&mut c, "default", 0).await;
    assert_eq!((third.body.as_str(), third.attempt), ("u2", 3));
    assert_eq!(queue_names(&mut c).await, ["default"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_always_exists_and_cannot_be_deleted() {
    let mut cfg = config();
    cfg.ttl = 12_345;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    let r = get(&mut c, "/queues").await;
    assert_eq!(
        r.json,
        json!({"queues": [{"name": "default", "ttl_ms": 12345, "max_deliveries": 0,
            "ready": 0, "in_flight": 0, "delayed": 0, "bytes": 0}]})
    );
    c.publish("kept").await;
    let before = info(&mut c, "default").await;
    assert_error(
        &delete(&mut c, "/queues/default").await,
        400,
        "invalid_request",
    );
    assert_eq!(info(&mut c, "default").await, before);
    assert_eq!(got(&c.fetch(0).await).body, "kept");
    server.stop().await;
}

// --- Queues: creation -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_is_created_by_its_first_publish_or_put_and_nothing_else() {
    let mut cfg = config();
    cfg.ttl = 7_000;
    cfg.max_deliveries = 4;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    assert_error(&get(&mut c, "/queues/jobs").await, 404, "not_found");
    // A fetch waits as on an empty queue, and creates nothing.
    assert_error(&fetch_q(&mut c, "jobs", 0).await, 408, "timeout");
    assert_error(&fetch_q(&mut c, "jobs", 20).await, 408, "timeout");
    // Settlements under a queue that does not exist: the id is invalid.
    for verb in ["acknowledge", "requeue", "touch"] {
        assert_error(
            &settle(&mut c, "jobs", verb, 1, "").await,
            400,
            "invalid_id",
        );
    }
    assert_error(&delete(&mut c, "/queues/jobs").await, 404, "not_found");
    assert_error(
        &post(&mut c, "/queues/jobs.dead/redrive").await,
        404,
        "not_found",
    );
    assert_eq!(queue_names(&mut c).await, ["default"]);

    assert_ok_empty(&publish(&mut c, "jobs", "", "first").await);
    assert_eq!(
        info(&mut c, "jobs").await,
        json!({"name": "jobs", "ttl_ms": 7000, "max_deliveries": 4,
            "ready": 1, "in_flight": 0, "delayed": 0, "bytes": 5})
    );
    let r = put(&mut c, "made", "").await;
    assert_eq!(
        (r.status.as_u16(), &r.json),
        (
            200,
            &json!({"name": "made", "ttl_ms": 7000, "max_deliveries": 4,
                "ready": 0, "in_flight": 0, "delayed": 0, "bytes": 0})
        )
    );
    // A delayed publish creates the queue too.
    assert_ok_empty(&publish(&mut c, "later", "?delay=60000", "x").await);
    assert_eq!(counts(&mut c, "later").await, (0, 0, 1, 1));
    assert_eq!(
        queue_names(&mut c).await,
        ["default", "jobs", "later", "made"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_on_a_missing_queue_is_woken_by_its_first_publish() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let waiter = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        fetch_q(&mut c, "late", 20_000).await
    });
    server
        .until("the fetch waits", |b| b.stats().waiting == 1)
        .await;
    let mut c = server.client().await;
    // Another queue's creation and message are not for this fetch.
    assert_ok_empty(&publish(&mut c, "elsewhere", "", "not yours").await);
    assert_ok_empty(&publish(&mut c, "late", "", "yours").await);
    let d = got(&waiter.await.unwrap());
    assert_eq!((d.body.as_str(), d.attempt), ("yours", 1));
    assert_eq!(counts(&mut c, "elsewhere").await, (1, 0, 0, 9));
    assert_eq!(counts(&mut c, "late").await, (0, 1, 0, 5));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_on_a_missing_queue_waits_through_its_creation_by_put() {
    let server = TestServer::start(config()).await;
    let addr = server.addr;
    let waiter = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        fetch_q(&mut c, "p", 20_000).await
    });
    server
        .until("the fetch waits", |b| b.stats().waiting == 1)
        .await;
    let mut c = server.client().await;
    assert_eq!(put(&mut c, "p", "{}").await.status, 200);
    // Created empty: the fetch now waits on the queue itself.
    server
        .until("the fetch waits on p", |b| {
            b.queue("p").stats().unwrap().waiting_fetches == 1
        })
        .await;
    assert!(!waiter.is_finished());
    assert_ok_empty(&publish(&mut c, "p", "", "m").await);
    assert_eq!(got(&waiter.await.unwrap()).body, "m");
    server.stop().await;
}

// --- Queues: PUT and GET ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_and_updates_and_answers_what_get_answers() {
    let mut cfg = config();
    cfg.max_ttl = 60_000;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    let r = put(&mut c, "s", r#"{"ttl_ms": 5000, "max_deliveries": 3}"#).await;
    let expected = json!({"name": "s", "ttl_ms": 5000, "max_deliveries": 3,
        "ready": 0, "in_flight": 0, "delayed": 0, "bytes": 0});
    assert_eq!((r.status.as_u16(), &r.json), (200, &expected));
    assert_eq!(info(&mut c, "s").await, expected);
    // Omitted fields keep their values; an empty body is `{}`.
    for body in ["{}", "", "  \n", " { } "] {
        let r = put(&mut c, "s", body).await;
        assert_eq!((r.status.as_u16(), &r.json), (200, &expected), "{body:?}");
    }
    let r = put(&mut c, "s", r#"{"ttl_ms": 7000}"#).await;
    assert_eq!(
        (r.json["ttl_ms"].clone(), r.json["max_deliveries"].clone()),
        (json!(7000), json!(3))
    );
    let r = put(&mut c, "s", r#"{"max_deliveries": 0}"#).await;
    assert_eq!(
        (r.json["ttl_ms"].clone(), r.json["max_deliveries"].clone()),
        (json!(7000), json!(0))
    );
    // The edges of the ranges.
    for (body, ttl, max) in [
        (r#"{"ttl_ms": 1}"#, 1, 0),
        (r#"{"ttl_ms": 60000}"#, 60_000, 0),
        (
            r#"{"max_deliveries": 4294967295}"#,
            60_000,
            4_294_967_295u64,
        ),
    ] {
        let r = put(&mut c, "s", body).await;
        assert_eq!(r.status, 200, "{body}: {r:?}");
        assert_eq!(
            (r.json["ttl_ms"].as_u64(), r.json["max_deliveries"].as_u64()),
            (Some(ttl), Some(max))
        );
    }
    // PUT on a queue with messages reports them, and changes none.
    assert_ok_empty(&publish(&mut c, "s", "", "abc").await);
    let r = put(&mut c, "s", r#"{"max_deliveries": 2}"#).await;
    assert_eq!(
        r.json,
        json!({"name": "s", "ttl_ms": 60000, "max_deliveries": 2,
            "ready": 1, "in_flight": 0, "delayed": 0, "bytes": 3})
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_refuses_bad_bodies_and_changes_nothing() {
    let mut cfg = config();
    cfg.max_ttl = 60_000;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    assert_eq!(
        put(&mut c, "s", r#"{"ttl_ms": 5000, "max_deliveries": 3}"#)
            .await
            .status,
        200
    );
    assert_ok_empty(&publish(&mut c, "s", "", "kept").await);
    let before = info(&mut c, "s").await;
    let bad: Vec<&[u8]> = vec![
        br#"{"x": 1}"#,
        br#"{"ttl_ms": 5000, "extra": true}"#,
        br#"{"max_deliveries": 1, "name": "s"}"#,
        br#"{"TTL_MS": 5}"#,
        br#"{"ttl_ms": 0}"#,
        br#"{"ttl_ms": 60001}"#,
        br#"{"ttl_ms": 18446744073709551616}"#,
        br#"{"ttl_ms": -1}"#,
        br#"{"ttl_ms": "5"}"#,
        br#"{"ttl_ms": 1.5}"#,
        br#"{"ttl_ms": 1e3}"#,
        br#"{"ttl_ms": true}"#,
        br#"{"ttl_ms": [5]}"#,
        br#"{"ttl_ms": null}"#,
        br#"{"max_deliveries": null}"#,
        br#"{"ttl_ms": null, "max_deliveries": null}"#,
        br#"{"max_deliveries": -1}"#,
        br#"{"max_deliveries": 4294967296}"#,
        br#"{"max_deliveries": "3"}"#,
        br#"{"max_deliveries": true}"#,
        br#"{"max_deliveries": 2.5}"#,
        br#"{"ttl_ms": 5, "ttl_ms": 6}"#,
        b"[]",
        br#"[{"ttl_ms": 5}]"#,
        b"null",
        br#""x""#,
        b"42",
        b"{",
        b"not json",
        b"{} x",
        b"{\"ttl_ms\": 5, \"x\": \"\xff\"}",
        b"\xff",
    ];
    for body in bad {
        for queue in ["s", "new", "s.dead"] {
            let r = c
                .send(
                    Method::PUT,
                    &format!("/queues/{queue}"),
                    Bytes::copy_from_slice(body),
                )
                .await;
            assert_error(&r, 400, "invalid_request");
            assert!(
                r.error().starts_with("invalid request body"),
                "{queue} {:?}: {r:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
    assert_eq!(info(&mut c, "s").await, before);
    assert_error(&get(&mut c, "/queues/new").await, 404, "not_found");
    assert_error(&get(&mut c, "/queues/s.dead").await, 404, "not_found");
    assert_eq!(queue_names(&mut c).await, ["default", "s"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_takes_no_max_deliveries_but_0() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for body in [
        r#"{"max_deliveries": 1}"#,
        r#"{"ttl_ms": 5000, "max_deliveries": 2}"#,
    ] {
        assert_error(&put(&mut c, "x.dead", body).await, 400, "invalid_request");
    }
    assert_error(&get(&mut c, "/queues/x.dead").await, 404, "not_found");
    let r = put(&mut c, "x.dead", r#"{"ttl_ms": 5000, "max_deliveries": 0}"#).await;
    assert_eq!(
        (r.status.as_u16(), &r.json),
        (
            200,
            &json!({"name": "x.dead", "ttl_ms": 5000, "max_deliveries": 0,
                "ready": 0, "in_flight": 0, "delayed": 0, "bytes": 0})
        )
    );
    assert_error(
        &put(&mut c, "x.dead", r#"{"ttl_ms": 9000, "max_deliveries": 3}"#).await,
        400,
        "invalid_request",
    );
    assert_eq!(
        info(&mut c, "x.dead").await["ttl_ms"],
        5000,
        "a refused PUT changes nothing"
    );
    // The queue itself is not a dead-letter queue.
    assert_eq!(
        put(&mut c, "x", r#"{"max_deliveries": 3}"#).await.status,
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_queue_reports_ready_in_flight_delayed_and_body_bytes() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_ok_empty(&publish(&mut c, "g", "", "hello").await);
    let leased = fetched(&mut c, "g", 0).await;
    assert_ok_empty(&publish(&mut c, "g", "", "abc").await);
    assert_ok_empty(&publish(&mut c, "g", "?delay=60000", "xy").await);
    assert_eq!(
        info(&mut c, "g").await,
        json!({"name": "g", "ttl_ms": 20000, "max_deliveries": 0,
            "ready": 1, "in_flight": 1, "delayed": 1, "bytes": 10})
    );
    assert_ok_empty(&settle(&mut c, "g", "acknowledge", leased.id, "").await);
    assert_eq!(counts(&mut c, "g").await, (1, 0, 1, 5));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_queues_lists_every_queue_sorted_by_name_in_byte_order() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    for name in [
        "b", "zz", "a_", "a.dead", "A", "a-.dead", "Z", "0", "a", "_x", "B", "a-",
    ] {
        assert_eq!(put(&mut c, name, "").await.status, 200, "{name}");
    }
    assert_ok_empty(&publish(&mut c, "a", "", "m").await);
    let r = get(&mut c, "/queues").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json.as_object().unwrap().len(), 1, "{r:?}");
    let listed = r.json["queues"].as_array().unwrap().clone();
    let names: Vec<&str> = listed.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["0", "A", "B", "Z", "_x", "a", "a-", "a-.dead", "a.dead", "a_", "b", "default", "zz"]
    );
    // Each entry is the object GET /queues/{queue} answers.
    for entry in &listed {
        let name = entry["name"].as_str().unwrap();
        assert_eq!(&info(&mut c, name).await, entry);
    }
    assert_eq!(listed[5]["ready"], 1);
    server.stop().await;
}

// --- Queues: DELETE -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_drops_ready_leased_and_delayed_and_invalidates_the_leases() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_eq!(
        put(&mut c, "jobs", r#"{"ttl_ms": 5000, "max_deliveries": 7}"#)
            .await
            .status,
        200
    );
    assert_eq!(put(&mut c, "jobs.dead", "").await.status, 200);
    assert_ok_empty(&publish(&mut c, "jobs.dead", "", "dead one").await);
    for m in ["r1", "r2", "r3"] {
        assert_ok_empty(&publish(&mut c, "jobs", "", m).await);
    }
    let l1 = fetched(&mut c, "jobs", 0).await;
    let l2 = fetched(&mut c, "jobs", 0).await;
    assert_ok_empty(&publish(&mut c, "jobs", "?delay=60000", "d1").await);
    assert_eq!(counts(&mut c, "jobs").await, (1, 2, 1, 8));
    let held_before = server.broker.stats().queued_bytes;

    let r = delete(&mut c, "/queues/jobs").await;
    assert_eq!((r.status.as_u16(), &r.json), (200, &json!({"deleted": 4})));
    assert_error(&get(&mut c, "/queues/jobs").await, 404, "not_found");
    for lease in [&l1, &l2] {
        for verb in ["acknowledge", "requeue", "touch"] {
            let r = settle(&mut c, "jobs", verb, lease.id, "").await;
            assert_error(&r, 400, "invalid_id");
            assert_eq!(r.error(), "id is invalid");
        }
    }
    // The budget is given back: four messages of 2 bytes plus 64 each.
    assert_eq!(held_before - server.broker.stats().queued_bytes, 4 * 66);
    // Its dead-letter queue is a queue of its own, and stays.
    assert_eq!(counts(&mut c, "jobs.dead").await, (1, 0, 0, 8));
    assert_eq!(queue_names(&mut c).await, ["default", "jobs.dead"]);
    assert_error(&delete(&mut c, "/queues/jobs").await, 404, "not_found");
    assert_error(&delete(&mut c, "/queues/never").await, 404, "not_found");

    // A later publish recreates it, with the default settings and none of
    // the old messages; old ids stay invalid under the new queue.
    assert_ok_empty(&publish(&mut c, "jobs", "", "new").await);
    assert_eq!(
        info(&mut c, "jobs").await,
        json!({"name": "jobs", "ttl_ms": 20000, "max_deliveries": 0,
            "ready": 1, "in_flight": 0, "delayed": 0, "bytes": 3})
    );
    assert_error(
        &settle(&mut c, "jobs", "acknowledge", l1.id, "").await,
        400,
        "invalid_id",
    );
    assert_eq!(fetched(&mut c, "jobs", 0).await.body, "new");
    // A dead-letter queue can be deleted like any other.
    let r = delete(&mut c, "/queues/jobs.dead").await;
    assert_eq!(r.json, json!({"deleted": 1}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_waiting_on_a_deleted_queue_is_served_by_the_publish_that_recreates_it() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_eq!(
        put(&mut c, "q", r#"{"ttl_ms": 5000, "max_deliveries": 7}"#)
            .await
            .status,
        200
    );
    let addr = server.addr;
    let waiter = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        fetch_q(&mut c, "q", 20_000).await
    });
    server
        .until("the fetch waits on q", |b| {
            b.queue("q").stats().unwrap().waiting_fetches == 1
        })
        .await;
    let r = delete(&mut c, "/queues/q").await;
    assert_eq!(r.json, json!({"deleted": 0}));
    assert_error(&get(&mut c, "/queues/q").await, 404, "not_found");
    // Another queue's traffic does not end the wait either.
    assert_ok_empty(&publish(&mut c, "other", "", "not yours").await);
    assert_ok_empty(&publish(&mut c, "q", "", "again").await);
    let d = got(&waiter.await.unwrap());
    assert_eq!((d.body.as_str(), d.attempt), ("again", 1));
    let q = info(&mut c, "q").await;
    assert_eq!(
        (q["ttl_ms"].clone(), q["max_deliveries"].clone()),
        (json!(20000), json!(0))
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_queue_s_delayed_messages_and_leases_never_come_back() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    assert_eq!(put(&mut c, "q", r#"{"ttl_ms": 1000}"#).await.status, 200);
    assert_ok_empty(&publish(&mut c, "q", "", "leased").await);
    let lease = fetched(&mut c, "q", 0).await;
    assert_ok_empty(&publish(&mut c, "q", "?delay=500", "delayed").await);
    assert_eq!(
        delete(&mut c, "/queues/q").await.json,
        json!({"deleted": 2})
    );
    assert_ok_empty(&publish(&mut c, "q", "", "new").await);
    // Past the old delay and the old lease's deadline.
    advance_ms(2_000).await;
    let d = fetched(&mut c, "q", 0).await;
    assert_eq!((d.body.as_str(), d.attempt), ("new", 1));
    // A waiting fetch gives the timekeeper every chance to misplace them.
    assert_error(&fetch_q(&mut c, "q", 100).await, 408, "timeout");
    assert_eq!(counts(&mut c, "q").await, (0, 1, 0, 3));
    assert_error(
        &settle(&mut c, "q", "touch", lease.id, "").await,
        400,
        "invalid_id",
    );
    assert_eq!(server.broker.stats().queued_bytes, 3 + 64);
    server.stop().await;
}

// --- Queues: --max-queues ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queues_counts_a_queue_and_its_dead_letter_queue_as_one() {
    let mut cfg = config();
    cfg.max_queues = 2;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    assert_eq!(put(&mut c, "a", "").await.status, 200);
    assert_eq!(put(&mut c, "a.dead", "").await.status, 200);
    assert_ok_empty(&publish(&mut c, "b.dead", "", "x").await);
    // `default` never counts, nor does its dead-letter queue.
    assert_eq!(
        put(&mut c, "default", r#"{"ttl_ms": 1000}"#).await.status,
        200
    );
    assert_eq!(put(&mut c, "default.dead", "").await.status, 200);
    c.publish("d").await;

    let snapshot = get(&mut c, "/queues").await.json;
    for r in [
        put(&mut c, "c", "").await,
        put(&mut c, "c.dead", "").await,
        publish(&mut c, "c", "", "x").await,
        publish(&mut c, "c.dead", "", "x").await,
        publish(&mut c, "c", "?delay=10", "x").await,
    ] {
        assert_error(&r, 429, "too_many_queues");
        assert_eq!(r.error(), "too many queues");
    }
    assert_eq!(
        get(&mut c, "/queues").await.json,
        snapshot,
        "nothing created"
    );
    assert_eq!(server.broker.stats().published, 2, "nothing queued");
    // A fetch neither creates a queue nor is refused for the cap.
    assert_error(&fetch_q(&mut c, "c", 0).await, 408, "timeout");
    // `b` is in the group its dead-letter queue opened.
    assert_ok_empty(&publish(&mut c, "b", "", "y").await);
    // Deleting `a` leaves `a.dead`, which still holds the group.
    assert_eq!(delete(&mut c, "/queues/a").await.status, 200);
    assert_error(&put(&mut c, "c", "").await, 429, "too_many_queues");
    assert_eq!(delete(&mut c, "/queues/a.dead").await.status, 200);
    assert_eq!(put(&mut c, "c", "").await.status, 200);
    assert_error(&publish(&mut c, "a", "", "x").await, 429, "too_many_queues");
    assert_eq!(
        queue_names(&mut c).await,
        ["b", "b.dead", "c", "default", "default.dead"]
    );
    server.stop().await;
}

// --- Queues: delivery ids ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_valid_only_under_its_own_queue() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_ok_empty(&publish(&mut c, "a", "", "in a").await);
    assert_ok_empty(&publish(&mut c, "b", "", "in b").await);
    c.publish("in default").await;
    let da = fetched(&mut c, "a", 0).await;
    let db = fetched(&mut c, "b", 0).await;
    let d0 = got(&c.fetch(0).await);
    let ids = HashSet::from([da.id, db.id, d0.id]);
    assert_eq!(ids.len(), 3, "delivery ids are unique across queues");
    assert!(ids.iter().all(|&id| id < 1 << 53));
    let before = (counts(&mut c, "a").await, counts(&mut c, "b").await);
    for verb in ["acknowledge", "requeue", "touch"] {
        for queue in ["b", "default", "nope", "a.dead"] {
            let r = settle(&mut c, queue, verb, da.id, "").await;
            assert_error(&r, 400, "invalid_id");
            assert_eq!(r.error(), "id is invalid", "{verb} under {queue}");
        }
        assert_error(
            &post(&mut c, &format!("/{verb}/{}", da.id)).await,
            400,
            "invalid_id",
        );
        assert_error(
            &settle(&mut c, "a", verb, d0.id, "").await,
            400,
            "invalid_id",
        );
    }
    assert_error(
        &settle(&mut c, "b", "requeue", da.id, "?delay=10").await,
        400,
        "invalid_id",
    );
    assert_error(
        &settle(&mut c, "b", "touch", da.id, "?ttl=10").await,
        400,
        "invalid_id",
    );
    assert_eq!(
        (counts(&mut c, "a").await, counts(&mut c, "b").await),
        before
    );
    assert_error(&get(&mut c, "/queues/nope").await, 404, "not_found");
    assert_error(&get(&mut c, "/queues/a.dead").await, 404, "not_found");
    assert_ok_empty(&settle(&mut c, "a", "acknowledge", da.id, "").await);
    assert_ok_empty(&settle(&mut c, "b", "acknowledge", db.id, "").await);
    assert_ok_empty(&settle(&mut c, "default", "acknowledge", d0.id, "").await);
    server.stop().await;
}

// --- Messages: identity and attempts ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_id_is_stable_and_attempts_count_across_requeue_and_expiry() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    // A real short TTL: the long-poll below is woken by the expiry itself.
    assert_eq!(put(&mut c, "m", r#"{"ttl_ms": 100}"#).await.status, 200);
    assert_ok_empty(&publish(&mut c, "m", "", "one").await);
    assert_ok_empty(&publish(&mut c, "m", "", "two").await);
    let first = fetched(&mut c, "m", 0).await;
    let other = fetched(&mut c, "m", 0).await;
    assert_eq!(
        (
            first.body.as_str(),
            first.attempt,
            first.dead_letter.clone()
        ),
        ("one", 1, None)
    );
    assert_eq!((other.body.as_str(), other.attempt), ("two", 1));
    assert_ne!(first.message_id, other.message_id);
    assert_ok_empty(&settle(&mut c, "m", "acknowledge", other.id, "").await);

    assert_ok_empty(&settle(&mut c, "m", "requeue", first.id, "").await);
    let second = fetched(&mut c, "m", 0).await;
    assert_eq!(
        (second.body.as_str(), second.attempt, second.message_id),
        ("one", 2, first.message_id)
    );
    // Left to expire: the long-poll is served when the lease runs out.
    let third = fetched(&mut c, "m", 10_000).await;
    assert_eq!(
        (third.body.as_str(), third.attempt, third.message_id),
        ("one", 3, first.message_id)
    );
    let ids = HashSet::from([first.id, second.id, third.id]);
    assert_eq!(ids.len(), 3, "each delivery has a fresh id");
    assert_error(
        &settle(&mut c, "m", "acknowledge", second.id, "").await,
        400,
        "invalid_id",
    );
    assert_ok_empty(&settle(&mut c, "m", "acknowledge", third.id, "").await);
    server.stop().await;
}

// --- Messages: touch ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn touch_extends_the_lease_under_the_same_id() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    assert_eq!(put(&mut c, "t", r#"{"ttl_ms": 1000}"#).await.status, 200);
    assert_ok_empty(&publish(&mut c, "t", "", "x").await);
    assert_ok_empty(&publish(&mut c, "t", "", "y").await);
    let x = fetched(&mut c, "t", 0).await;
    let y = fetched(&mut c, "t", 0).await;
    advance_ms(900).await;
    // Without `ttl`: the queue's TTL from now (deadline 1900).
    for d in [&x, &y] {
        assert_ok_empty(&settle(&mut c, "t", "touch", d.id, "").await);
    }
    advance_ms(900).await; // 1800: past the first deadline, before the new one
    for d in [&x, &y] {
        assert_ok_empty(&settle(&mut c, "t", "touch", d.id, "?ttl=5000").await);
    }
    assert_eq!(counts(&mut c, "t").await, (0, 2, 0, 2));
    advance_ms(4999).await; // 6799: one ms before the deadline
    assert_ok_empty(&settle(&mut c, "t", "acknowledge", x.id, "").await);
    advance_ms(1).await; // 6800: the deadline
    for verb in ["touch", "acknowledge", "requeue"] {
        assert_error(
            &settle(&mut c, "t", verb, y.id, "").await,
            400,
            "invalid_id",
        );
    }
    let again = fetched(&mut c, "t", 5_000).await;
    assert_eq!(
        (again.body.as_str(), again.attempt, again.message_id),
        ("y", 2, y.message_id)
    );
    assert_ne!(again.id, y.id);

    // The unprefixed route touches leases of `default` (TTL 20 s here).
    c.publish("d").await;
    let d = got(&c.fetch(0).await);
    assert_ok_empty(&post(&mut c, &format!("/touch/{}?ttl=100000", d.id)).await);
    advance_ms(99_999).await;
    assert_ok_empty(&c.acknowledge(d.id).await);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn touch_settles_nothing() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    for m in ["a", "b"] {
        assert_ok_empty(&publish(&mut c, "q", "", m).await);
    }
    let a = fetched(&mut c, "q", 0).await;
    let b = fetched(&mut c, "q", 0).await;
    for _ in 0..3 {
        assert_ok_empty(&settle(&mut c, "q", "touch", a.id, "").await);
        assert_ok_empty(&settle(&mut c, "q", "touch", b.id, "?ttl=7000").await);
    }
    assert_eq!(counts(&mut c, "q").await, (0, 2, 0, 2));
    assert_ok_empty(&settle(&mut c, "q", "acknowledge", a.id, "").await);
    assert_ok_empty(&settle(&mut c, "q", "requeue", b.id, "").await);
    assert_error(
        &settle(&mut c, "q", "touch", a.id, "").await,
        400,
        "invalid_id",
    );
    assert_error(
        &settle(&mut c, "q", "touch", b.id, "").await,
        400,
        "invalid_id",
    );
    let b2 = fetched(&mut c, "q", 0).await;
    assert_eq!((b2.body.as_str(), b2.attempt), ("b", 2));
    assert_eq!(counts(&mut c, "q").await, (0, 1, 0, 1));
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn touching_an_expired_lease_fails_even_before_the_sweep() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    assert_eq!(put(&mut c, "e", r#"{"ttl_ms": 1000}"#).await.status, 200);
    assert_ok_empty(&publish(&mut c, "e", "", "x").await);
    let x = fetched(&mut c, "e", 0).await;
    advance_ms(1000).await; // exactly the deadline
    for query in ["", "?ttl=5000", "?ttl=1"] {
        let r = settle(&mut c, "e", "touch", x.id, query).await;
        assert_error(&r, 400, "invalid_id");
        assert_eq!(r.error(), "id is invalid");
    }
    // The expiry won: the message comes back under a new id.
    let again = fetched(&mut c, "e", 5_000).await;
    assert_eq!((again.attempt, again.message_id), (2, x.message_id));
    assert_ne!(again.id, x.id);
    assert_error(
        &settle(&mut c, "e", "touch", x.id, "").await,
        400,
        "invalid_id",
    );
    // Touch of ids that were never handed out, or are malformed.
    for id in ["0", "999999", "18446744073709551615"] {
        assert_error(
            &post(&mut c, &format!("/queues/e/touch/{id}")).await,
            400,
            "invalid_id",
        );
    }
    for id in ["abc", "-1", "1.5", "%31", "18446744073709551616"] {
        let r = post(&mut c, &format!("/queues/e/touch/{id}")).await;
        assert_error(&r, 400, "invalid_id");
        assert_eq!(r.error(), "id is not an unsigned 64-bit integer");
    }
    assert_ok_empty(&settle(&mut c, "e", "acknowledge", again.id, "").await);
    assert_error(
        &settle(&mut c, "e", "touch", again.id, "").await,
        400,
        "invalid_id",
    );
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn touch_refuses_a_bad_ttl_and_leaves_the_lease_alone() {
    let mut cfg = config();
    cfg.max_ttl = 60_000;
    let server = paused_server(cfg).await;
    let mut c = server.client().await;
    assert_eq!(put(&mut c, "q", r#"{"ttl_ms": 1000}"#).await.status, 200);
    for m in ["a", "b", "c"] {
        assert_ok_empty(&publish(&mut c, "q", "", m).await);
    }
    let a = fetched(&mut c, "q", 0).await;
    let b = fetched(&mut c, "q", 0).await;
    let one = fetched(&mut c, "q", 0).await;
    let before = info(&mut c, "q").await;
    for query in [
        "?ttl=0",
        "?ttl=60001",
        "?ttl=99999999999999999999999",
        "?ttl=",
        "?ttl=x",
        "?ttl=-1",
        "?ttl=+1",
        "?ttl=1.5",
        "?ttl=1e3",
        "?ttl=0x10",
        "?ttl=%31",
        "?ttl=%201",
    ] {
        let r = settle(&mut c, "q", "touch", a.id, query).await;
        assert_error(&r, 400, "invalid_request");
        assert!(r.error().starts_with("ttl must be"), "{query}: {r:?}");
    }
    assert_eq!(info(&mut c, "q").await, before);
    // The edges are accepted: 1 ms, and --max-ttl.
    assert_ok_empty(&settle(&mut c, "q", "touch", one.id, "?ttl=1").await);
    assert_ok_empty(&settle(&mut c, "q", "touch", b.id, "?ttl=60000").await);
    advance_ms(1).await;
    assert_error(
        &settle(&mut c, "q", "acknowledge", one.id, "").await,
        400,
        "invalid_id",
    );
    advance_ms(999).await; // a's deadline: the refused touches did not move it
    assert_error(
        &settle(&mut c, "q", "acknowledge", a.id, "").await,
        400,
        "invalid_id",
    );
    advance_ms(58_999).await; // b: one ms before its deadline
    assert_ok_empty(&settle(&mut c, "q", "acknowledge", b.id, "").await);
    server.stop().await;
}

// --- Messages: delays ---------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_delayed_publish_is_ready_only_after_its_delay() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    let start = tokio::time::Instant::now();
    assert_ok_empty(&publish(&mut c, "d", "?delay=1000", "later").await);
    assert_ok_empty(&publish(&mut c, "d", "?delay=0", "now").await);
    assert_eq!(counts(&mut c, "d").await, (1, 0, 1, 8));
    let now = fetched(&mut c, "d", 0).await;
    assert_eq!(now.body, "now", "delay=0 is no delay");
    assert_ok_empty(&settle(&mut c, "d", "acknowledge", now.id, "").await);
    assert_error(&fetch_q(&mut c, "d", 0).await, 408, "timeout");
    advance_ms(999).await;
    assert_error(&fetch_q(&mut c, "d", 0).await, 408, "timeout");
    assert_eq!(counts(&mut c, "d").await, (0, 0, 1, 5));
    advance_ms(1).await;
    let later = fetched(&mut c, "d", 5_000).await;
    assert_eq!((later.body.as_str(), later.attempt), ("later", 1));
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(1000),
        "served at its due time"
    );
    assert_eq!(counts(&mut c, "d").await, (0, 1, 0, 5));

    // The same on the unprefixed route.
    let r = c
        .send(Method::POST, "/publish?delay=500", r#"{"body": "dd"}"#)
        .await;
    assert_ok_empty(&r);
    assert_eq!(counts(&mut c, "default").await, (0, 0, 1, 2));
    advance_ms(500).await;
    assert_eq!(got(&c.fetch(5_000).await).body, "dd");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn delayed_messages_come_due_in_due_order_ties_in_the_order_delayed() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    let start = tokio::time::Instant::now();
    assert_ok_empty(&publish(&mut c, "o", "", "r").await);
    let r = fetched(&mut c, "o", 0).await;
    // t = 0
    assert_ok_empty(&publish(&mut c, "o", "?delay=300", "a").await); // due 300
    assert_ok_empty(&publish(&mut c, "o", "?delay=200", "b").await); // due 200
    advance_ms(100).await;
    // The ties below are real ties only if the clock moved by exactly what
    // this test advanced it.
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // t = 100
    assert_ok_empty(&publish(&mut c, "o", "?delay=100", "c").await); // due 200, after b
    assert_ok_empty(&publish(&mut c, "o", "?delay=50", "d").await); // due 150
    assert_ok_empty(&settle(&mut c, "o", "requeue", r.id, "?delay=200").await); // due 300, after a
    assert_ok_empty(&publish(&mut c, "o", "?delay=200", "e").await); // due 300, after r
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(counts(&mut c, "o").await, (0, 0, 6, 6));
    advance_ms(300).await; // t = 400: all due at once
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(fetched(&mut c, "o", 5_000).await.body);
    }
    assert_eq!(order, ["d", "b", "c", "a", "r", "e"]);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn delays_come_due_one_by_one_at_their_due_times() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    let start = tokio::time::Instant::now();
    for (delay, body) in [(300, "c"), (100, "a"), (200, "b")] {
        assert_ok_empty(&publish(&mut c, "s", &format!("?delay={delay}"), body).await);
    }
    for (due, body) in [(100, "a"), (200, "b"), (300, "c")] {
        advance_ms(99).await;
        assert_error(&fetch_q(&mut c, "s", 0).await, 408, "timeout");
        advance_ms(1).await;
        assert_eq!(fetched(&mut c, "s", 5_000).await.body, body);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(due),
            "{body} on time"
        );
    }
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_delayed_requeue_rejoins_the_tail_after_the_delay() {
    let server = paused_server(config()).await;
    let mut c = server.client().await;
    assert_ok_empty(&publish(&mut c, "q", "", "x").await);
    let x = fetched(&mut c, "q", 0).await;
    assert_ok_empty(&settle(&mut c, "q", "requeue", x.id, "?delay=500").await);
    for verb in ["acknowledge", "requeue", "touch"] {
        assert_error(
            &settle(&mut c, "q", verb, x.id, "").await,
            400,
            "invalid_id",
        );
    }
    assert_eq!(counts(&mut c, "q").await, (0, 0, 1, 1));
    assert_ok_empty(&publish(&mut c, "q", "", "y").await);
    advance_ms(499).await;
    assert_eq!(counts(&mut c, "q").await, (1, 0, 1, 2));
    advance_ms(1).await;
    let y = fetched(&mut c, "q", 5_000).await;
    let x2 = fetched(&mut c, "q", 5_000).await;
    assert_eq!(
        y.body, "y",
        "y was ready first; x joined the tail behind it"
    );
    assert_eq!(
        (x2.body.as_str(), x2.attempt, x2.message_id),
        ("x", 2, x.message_id)
    );
    assert_ne!(x2.id, x.id);

    // delay=0 on requeue is an immediate requeue; the same on `default`.
    assert_ok_empty(&settle(&mut c, "q", "requeue", x2.id, "?delay=0").await);
    assert_eq!(counts(&mut c, "q").await, (1, 1, 0, 2));
    c.publish("dflt").await;
    let d = got(&c.fetch(0).await);
    assert_ok_empty(&post(&mut c, &format!("/requeue/{}?delay=250", d.id)).await);
    assert_eq!(counts(&mut c, "default").await, (0, 0, 1, 4));
    advance_ms(250).await;
    assert_eq!(got(&c.fetch(5_000).await).attempt, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_delays_are_refused_on_publish_and_requeue_and_change_nothing() {
    let mut cfg = config();
    cfg.max_delay = 10_000;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    c.publish("leased").await;
    let lease = got(&c.fetch(0).await);
    let before = info(&mut c, "default").await;
    for query in [
        "?delay=10001",
        "?delay=99999999999999999999999",
        "?delay=-1",
        "?delay=+1",
        "?delay=abc",
        "?delay=",
        "?delay=1.5",
        "?delay=1e3",
        "?delay=0x10",
        "?delay=%31",
        "?delay=%201",
    ] {
        for r in [
            publish(&mut c, "fresh", query, "x").await,
            c.send(
                Method::POST,
                &format!("/publish{query}"),
                r#"{"body": "x"}"#,
            )
            .await,
            settle(&mut c, "default", "requeue", lease.id, query).await,
            post(&mut c, &format!("/requeue/{}{query}", lease.id)).await,
        ] {
            assert_error(&r, 400, "invalid_request");
            assert!(r.error().starts_with("delay must be"), "{query}: {r:?}");
        }
    }
    assert_eq!(
        info(&mut c, "default").await,
        before,
        "nothing published or requeued"
    );
    assert_error(&get(&mut c, "/queues/fresh").await, 404, "not_found");
    // The lease is still valid; the largest delay is accepted.
    assert_ok_empty(&settle(&mut c, "default", "requeue", lease.id, "?delay=10000").await);
    assert_ok_empty(&publish(&mut c, "fresh", "?delay=10000", "x").await);
    assert_eq!(counts(&mut c, "default").await, (0, 0, 1, 6));
    assert_eq!(counts(&mut c, "fresh").await, (0, 0, 1, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_count_towards_max_queue_bytes_one_budget_for_all_queues() {
    let mut cfg = config();
    // Two 3-byte messages (67 each) and one byte short of an empty one.
    cfg.max_queue_bytes = 67 + 67 + 64 - 1;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    assert_ok_empty(&publish(&mut c, "qa", "?delay=60000", "abc").await);
    assert_ok_empty(&publish(&mut c, "qb", "", "abc").await);
    let leased = fetched(&mut c, "qb", 0).await;
    let snapshot = get(&mut c, "/queues").await.json;
    for r in [
        publish(&mut c, "qc", "", "").await,
        publish(&mut c, "qa", "", "").await,
        publish(&mut c, "qa", "?delay=5", "").await,
        c.publish("").await,
    ] {
        assert_error(&r, 429, "queue_full");
        assert!(r.headers.contains_key("retry-after"), "{r:?}");
    }
    assert_eq!(
        get(&mut c, "/queues").await.json,
        snapshot,
        "nothing queued or created"
    );
    assert_eq!(counts(&mut c, "qa").await, (0, 0, 1, 3));
    // Settling the lease frees its share: an empty message now fits.
    assert_ok_empty(&settle(&mut c, "qb", "acknowledge", leased.id, "").await);
    assert_ok_empty(&publish(&mut c, "qc", "", "").await);
    // The delayed one still holds its share until its queue is deleted.
    assert_error(&publish(&mut c, "qb", "", "abc").await, 429, "queue_full");
    assert_eq!(
        delete(&mut c, "/queues/qa").await.json,
        json!({"deleted": 1})
    );
    assert_ok_empty(&publish(&mut c, "qb", "", "abc").await);
    server.stop().await;
}

// --- Messages: dead letters ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_allowed_delivery_ending_in_a_requeue_dead_letters_the_message() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_eq!(
        put(&mut c, "jobs", r#"{"max_deliveries": 3}"#).await.status,
        200
    );
    assert_ok_empty(&publish(&mut c, "jobs.dead", "", "direct").await);
    assert_ok_empty(&publish(&mut c, "jobs", "", "poison").await);
    let mut ids = HashSet::new();
    let mut message_id = None;
    for attempt in 1..=3 {
        let d = fetched(&mut c, "jobs", 0).await;
        assert_eq!(
            (d.body.as_str(), d.attempt, d.dead_letter.clone()),
            ("poison", attempt, None)
        );
        assert_eq!(*message_id.get_or_insert(d.message_id), d.message_id);
        assert!(ids.insert(d.id));
        assert_ok_empty(&settle(&mut c, "jobs", "requeue", d.id, "").await);
    }
    assert_eq!(counts(&mut c, "jobs").await, (0, 0, 0, 0));
    assert_error(&fetch_q(&mut c, "jobs", 0).await, 408, "timeout");
    assert_eq!(counts(&mut c, "jobs.dead").await, (2, 0, 0, 12));
    assert_eq!(info(&mut c, "jobs.dead").await["max_deliveries"], 0);

    // At the tail of the dead-letter queue, behind what was there.
    let direct = fetched(&mut c, "jobs.dead", 0).await;
    assert_eq!(
        (direct.body.as_str(), direct.attempt, direct.dead_letter),
        ("direct", 1, None)
    );
    let r = fetch_q(&mut c, "jobs.dead", 0).await;
    let keys: BTreeSet<&str> = r
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["attempt", "dead_letter", "id", "message", "message_id"])
    );
    let dead = got(&r);
    assert_eq!(
        (
            dead.body.as_str(),
            dead.attempt,
            Some(dead.message_id),
            dead.dead_letter.clone()
        ),
        ("poison", 1, message_id, dead_letter_from("jobs"))
    );
    // An ordinary queue with unlimited deliveries: attempts go on counting,
    // and the origin stays.
    let mut lease = dead;
    for attempt in 2..=6 {
        assert_ok_empty(&settle(&mut c, "jobs.dead", "requeue", lease.id, "").await);
        let d = fetched(&mut c, "jobs.dead", 0).await;
        assert_eq!(
            (d.attempt, d.dead_letter.clone()),
            (attempt, dead_letter_from("jobs"))
        );
        lease = d;
    }
    assert_ok_empty(&settle(&mut c, "jobs.dead", "touch", lease.id, "?ttl=5000").await);
    assert_ok_empty(&settle(&mut c, "jobs.dead", "acknowledge", lease.id, "").await);
    assert_ok_empty(&settle(&mut c, "jobs.dead", "acknowledge", direct.id, "").await);
    assert_eq!(counts(&mut c, "jobs.dead").await, (0, 0, 0, 0));
    assert_eq!(queue_names(&mut c).await, ["default", "jobs", "jobs.dead"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_requeue_of_the_last_delivery_dead_letters_at_once() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_eq!(
        put(&mut c, "j", r#"{"max_deliveries": 1}"#).await.status,
        200
    );
    assert_ok_empty(&publish(&mut c, "j", "", "m").await);
    let d = fetched(&mut c, "j", 0).await;
    assert_error(&get(&mut c, "/queues/j.dead").await, 404, "not_found");
    assert_ok_empty(&settle(&mut c, "j", "requeue", d.id, "?delay=60000").await);
    assert_eq!(counts(&mut c, "j").await, (0, 0, 0, 0));
    assert_eq!(counts(&mut c, "j.dead").await, (1, 0, 0, 1));
    let dead = fetched(&mut c, "j.dead", 0).await;
    assert_eq!(
        (dead.attempt, dead.message_id, dead.dead_letter),
        (1, d.message_id, dead_letter_from("j"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_allowed_delivery_expiring_dead_letters_the_message() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    // Real short TTLs; each long-poll is woken by the expiry it waits for.
    assert_eq!(
        put(&mut c, "e", r#"{"ttl_ms": 50, "max_deliveries": 2}"#)
            .await
            .status,
        200
    );
    assert_ok_empty(&publish(&mut c, "e", "", "m").await);
    let first = fetched(&mut c, "e", 0).await;
    let second = fetched(&mut c, "e", 10_000).await;
    assert_eq!((second.attempt, second.message_id), (2, first.message_id));
    // e.dead does not exist yet: this waits for its creation by the move.
    let dead = fetched(&mut c, "e.dead", 10_000).await;
    assert_eq!(
        (
            dead.body.as_str(),
            dead.attempt,
            dead.message_id,
            dead.dead_letter
        ),
        ("m", 1, first.message_id, dead_letter_from("e"))
    );
    assert_error(
        &settle(&mut c, "e", "acknowledge", second.id, "").await,
        400,
        "invalid_id",
    );
    assert_eq!(counts(&mut c, "e").await, (0, 0, 0, 0));
    // A dead-letter queue created by a move has the default settings.
    let q = info(&mut c, "e.dead").await;
    assert_eq!(
        (q["ttl_ms"].clone(), q["max_deliveries"].clone()),
        (json!(20000), json!(0))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_max_deliveries_applies_as_each_delivery_next_ends() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_ok_empty(&publish(&mut c, "low", "", "m1").await);
    let mut m1 = fetched(&mut c, "low", 0).await;
    for _ in 0..2 {
        assert_ok_empty(&settle(&mut c, "low", "requeue", m1.id, "").await);
        m1 = fetched(&mut c, "low", 0).await;
    }
    assert_eq!(m1.attempt, 3);
    assert_ok_empty(&publish(&mut c, "low", "", "m2").await);
    let m2 = fetched(&mut c, "low", 0).await;
    assert_eq!(m2.attempt, 1);
    assert_eq!(
        put(&mut c, "low", r#"{"max_deliveries": 2}"#).await.status,
        200
    );
    // Nothing moves until a delivery ends.
    assert_eq!(counts(&mut c, "low").await, (0, 2, 0, 4));
    assert_error(&get(&mut c, "/queues/low.dead").await, 404, "not_found");
    assert_ok_empty(&settle(&mut c, "low", "requeue", m1.id, "").await);
    assert_eq!(counts(&mut c, "low.dead").await, (1, 0, 0, 2));
    assert_ok_empty(&settle(&mut c, "low", "requeue", m2.id, "").await);
    let m2 = fetched(&mut c, "low", 0).await;
    assert_eq!((m2.body.as_str(), m2.attempt), ("m2", 2));
    assert_ok_empty(&settle(&mut c, "low", "requeue", m2.id, "").await);
    let order: Vec<String> = vec![
        fetched(&mut c, "low.dead", 0).await.body,
        fetched(&mut c, "low.dead", 0).await.body,
    ];
    assert_eq!(order, ["m1", "m2"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_come_from_ttl_and_max_deliveries_flags() {
    let mut cfg = config();
    cfg.ttl = 12_345;
    cfg.max_deliveries = 2;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    for queue in ["default", "fl"] {
        assert_ok_empty(&publish(&mut c, queue, "", "x").await);
        let q = info(&mut c, queue).await;
        assert_eq!(
            (q["ttl_ms"].clone(), q["max_deliveries"].clone()),
            (json!(12345), json!(2))
        );
    }
    // `default` dead-letters like any other queue.
    for _ in 0..2 {
        let d = got(&c.fetch(0).await);
        assert_ok_empty(&c.requeue(d.id).await);
    }
    assert_error(&c.fetch(0).await, 408, "timeout");
    let dead = fetched(&mut c, "default.dead", 0).await;
    assert_eq!(
        (dead.body.as_str(), dead.dead_letter),
        ("x", dead_letter_from("default"))
    );
    let q = info(&mut c, "default.dead").await;
    assert_eq!(
        (q["ttl_ms"].clone(), q["max_deliveries"].clone()),
        (json!(12345), json!(0))
    );
    server.stop().await;
}

// --- Messages: redrive -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_moves_every_ready_dead_letter_back_with_attempts_reset() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_eq!(
        put(&mut c, "r", r#"{"max_deliveries": 1}"#).await.status,
        200
    );
    let mut message_ids = Vec::new();
    for m in ["p1", "p2", "p3"] {
        assert_ok_empty(&publish(&mut c, "r", "", m).await);
        let d = fetched(&mut c, "r", 0).await;
        message_ids.push(d.message_id);
        assert_ok_empty(&settle(&mut c, "r", "requeue", d.id, "").await);
    }
    assert_eq!(counts(&mut c, "r.dead").await, (3, 0, 0, 6));
    let p1 = fetched(&mut c, "r.dead", 0).await; // leased: stays behind
    assert_eq!(p1.body, "p1");
    assert_ok_empty(&publish(&mut c, "r", "", "fresh").await);

    let r = post(&mut c, "/queues/r.dead/redrive").await;
    assert_eq!((r.status.as_u16(), &r.json), (200, &json!({"moved": 2})));
    assert_eq!(counts(&mut c, "r.dead").await, (0, 1, 0, 2));
    assert_eq!(counts(&mut c, "r").await, (3, 0, 0, 9));
    assert_eq!(fetched(&mut c, "r", 0).await.body, "fresh");
    let p2 = fetched(&mut c, "r", 0).await;
    let p3 = fetched(&mut c, "r", 0).await;
    for (d, body, message_id) in [(&p2, "p2", message_ids[1]), (&p3, "p3", message_ids[2])] {
        assert_eq!(
            (
                d.body.as_str(),
                d.attempt,
                d.message_id,
                d.dead_letter.clone()
            ),
            (body, 1, message_id, None)
        );
    }
    // Attempts reset: with max_deliveries 1 this delivery is again the last.
    assert_ok_empty(&settle(&mut c, "r", "requeue", p2.id, "").await);
    assert_eq!(counts(&mut c, "r.dead").await, (1, 1, 0, 4));
    assert_eq!(
        post(&mut c, "/queues/r.dead/redrive").await.json,
        json!({"moved": 1})
    );
    assert_eq!(
        post(&mut c, "/queues/r.dead/redrive").await.json,
        json!({"moved": 0})
    );
    // The leased dead letter was not disturbed by either redrive.
    assert_ok_empty(&settle(&mut c, "r.dead", "touch", p1.id, "").await);

    // A redrive recreates a target that was deleted meanwhile.
    assert_ok_empty(&settle(&mut c, "r.dead", "requeue", p1.id, "").await);
    assert_eq!(
        delete(&mut c, "/queues/r").await.json,
        json!({"deleted": 3})
    );
    assert_eq!(
        post(&mut c, "/queues/r.dead/redrive").await.json,
        json!({"moved": 1})
    );
    let p1 = fetched(&mut c, "r", 0).await;
    assert_eq!(
        (p1.body.as_str(), p1.attempt, p1.dead_letter),
        ("p1", 1, None)
    );
    assert_eq!(
        info(&mut c, "r").await["max_deliveries"],
        0,
        "recreated with the defaults"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_only_of_an_existing_dead_letter_queue() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    assert_ok_empty(&publish(&mut c, "r", "", "m").await);
    for path in ["/queues/r/redrive", "/queues/default/redrive"] {
        assert_error(&post(&mut c, path).await, 400, "invalid_request");
    }
    for path in ["/queues/r.dead/redrive", "/queues/missing.dead/redrive"] {
        assert_error(&post(&mut c, path).await, 404, "not_found");
    }
    assert_error(
        &post(&mut c, "/queues/r.dead.dead/redrive").await,
        400,
        "invalid_queue_name",
    );
    assert_error(&post(&mut c, "/redrive").await, 404, "not_found");
    assert_eq!(counts(&mut c, "r").await, (1, 0, 0, 1));
    assert_eq!(queue_names(&mut c).await, ["default", "r"]);
    server.stop().await;
}

// --- Errors ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_this_part_can_produce() {
    let mut cfg = config();
    cfg.max_queues = 1;
    cfg.max_queue_bytes = 2 * 64;
    let server = TestServer::start(cfg).await;
    let mut c = server.client().await;
    assert_ok_empty(&publish(&mut c, "c", "", "").await);
    assert_error(
        &publish(&mut c, "c", "?delay=x", "").await,
        400,
        "invalid_request",
    );
    assert_error(
        &put(&mut c, "c", r#"{"nope": 1}"#).await,
        400,
        "invalid_request",
    );
    assert_error(
        &settle(&mut c, "c", "acknowledge", 1, "").await,
        400,
        "invalid_id",
    );
    assert_error(
        &post(&mut c, "/queues/c/acknowledge/x").await,
        400,
        "invalid_id",
    );
    assert_error(
        &get(&mut c, "/queues/a.b/fetch").await,
        400,
        "invalid_queue_name",
    );
    assert_error(&get(&mut c, "/queues/zzz").await, 404, "not_found");
    assert_error(&get(&mut c, "/queues/c/nope").await, 404, "not_found");
    let r = post(&mut c, "/queues").await;
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.headers["allow"], "GET");
    assert_error(&fetch_q(&mut c, "empty", 0).await, 408, "timeout");
    assert_error(&put(&mut c, "d", "").await, 429, "too_many_queues");
    assert_ok_empty(&publish(&mut c, "c", "", "").await);
    assert_error(&publish(&mut c, "c", "", "").await, 429, "queue_full");
    assert_eq!(counts(&mut c, "c").await, (2, 0, 0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_on_the_new_routes_are_405_with_allow() {
    let server = TestServer::start(config()).await;
    let mut c = server.client().await;
    let patch = Method::from_bytes(b"PATCH").unwrap();
    for (method, path, allow) in [
        (Method::POST, "/queues", "GET"),
        (Method::PUT, "/queues", "GET"),
        (Method::DELETE, "/queues", "GET"),
        (Method::POST, "/queues/m", "GET, PUT, DELETE"),
        (patch.clone(), "/queues/m", "GET, PUT, DELETE"),
        (Method::OPTIONS, "/queues/m.dead", "GET, PUT, DELETE"),
        (Method::GET, "/queues/m/publish", "POST"),
        (Method::PUT, "/queues/m/publish", "POST"),
        (Method::POST, "/queues/m/fetch", "GET"),
        (Method::DELETE, "/queues/m/fetch", "GET"),
        (Method::GET, "/queues/m/acknowledge/1", "POST"),
        (Method::GET, "/queues/m/requeue/1", "POST"),
        (Method::GET, "/queues/m/touch/1", "POST"),
        (Method::DELETE, "/queues/m/touch/x", "POST"),
        (Method::GET, "/touch/1", "POST"),
        (Method::PUT, "/touch/x", "POST"),
        (Method::GET, "/queues/m.dead/redrive", "POST"),
        (Method::DELETE, "/queues/m.dead/redrive", "POST"),
        // The method is checked before the name.
        (Method::GET, "/queues/a%2Db/publish", "POST"),
    ] {
        let r = c.send(method.clone(), path, Bytes::new()).await;
        assert_error(&r, 405, "method_not_allowed");
        assert_eq!(r.headers["allow"], allow, "{method} {path}");
    }
    for path in [
        "/queues/m/",
        "/queues/m/other",
        "/queues/m/publish/x",
        "/queues/m/fetch/",
        "/queues/m/acknowledge/1/2",
        "/queues/m.dead/redrive/x",
        "/queues/m/m/publish",
        "/touch/1/2",
        "/redrive",
        "/queuesx",
    ] {
        let r = post(&mut c, path).await;
        assert_error(&r, 404, "not_found");
        assert_eq!(r.error(), "not found", "{path}");
    }
    assert_eq!(queue_names(&mut c).await, ["default"]);
    assert_eq!(server.broker.stats().published, 0);
    server.stop().await;
}
