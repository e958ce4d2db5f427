//! SPEC.md part 2, "Batches", over HTTP against a real server on
//! `127.0.0.1:0`: every rule of the section and the bad inputs it implies
//! (all-or-nothing publish, contiguity, delayed entries, `fetch?max`, the
//! byte cap, positional settle results, repeated ids, `--max-batch`, empty
//! lists, wrong types, malformed entries, extra fields).
//!
//! Tests of time run on tokio's paused clock, as in `queues.rs`.

mod common;

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use common::{advance_ms, config, paused_server, Client, Reply, TestServer};
use hyper::Method;
use serde_json::{json, Value};

#[track_caller]
fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{r:?}");
    let keys: BTreeSet<&str> = r
        .json
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {r:?}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["code", "error"]), "{r:?}");
    assert_eq!(r.json["code"], code, "{r:?}");
}

async fn post(c: &mut Client, path: &str, body: impl Into<Bytes>) -> Reply {
    c.send(Method::POST, path, body).await
}

async fn get(c: &mut Client, path: &str) -> Reply {
    c.send(Method::GET, path, Bytes::new()).await
}

/// `{"messages": [{"body": b}, ...]}`.
fn batch_of(bodies: &[&str]) -> String {
    let messages: Vec<Value> = bodies.iter().map(|b| json!({ "body": b })).collect();
    json!({ "messages": messages }).to_string()
}

/// The deliveries of a `fetch?max=` answer: (id, message_id, attempt, body),
/// checking the shape of every entry.
#[track_caller]
fn deliveries(r: &Reply) -> Vec<(u64, u64, u64, String)> {
    assert_eq!(r.status, 200, "{r:?}");
    let keys: BTreeSet<&str> = r
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["messages"]), "{r:?}");
    r.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let keys: BTreeSet<&str> = entry
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["message", "id", "message_id", "attempt"]),
                "{entry}"
            );
            (
                entry["id"].as_u64().unwrap(),
                entry["message_id"].as_u64().unwrap(),
                entry["attempt"].as_u64().unwrap(),
                entry["message"]["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn bodies(ds: &[(u64, u64, u64, String)]) -> Vec<&str> {
    ds.iter().map(|d| d.3.as_str()).collect()
}

fn ids(ds: &[(u64, u64, u64, String)]) -> Vec<u64> {
    ds.iter().map(|d| d.0).collect()
}

#[track_caller]
fn assert_results(r: &Reply, expected: &[&str]) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json, json!({ "results": expected }), "{r:?}");
}

fn ids_body(ids: &[u64]) -> String {
    json!({ "ids": ids }).to_string()
}

// --- publish --------------------------------------------------------------------

#[tokio::test]
async fn batch_publish_joins_the_tail_in_order_and_fetch_max_takes_the_head() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    assert_eq!(c.publish("before").await.status, 200);
    let r = post(&mut c, "/publish", batch_of(&["a", "b\"q\"", "日本\n", ""])).await;
    assert_eq!(
        (r.status.as_u16(), &r.json),
        (200, &json!({"published": 4}))
    );
    let r = post(&mut c, "/queues/default/publish", batch_of(&["c"])).await;
    assert_eq!(r.json, json!({"published": 1}));

    let first = deliveries(&get(&mut c, "/fetch?max=3&wait=0").await);
    assert_eq!(bodies(&first), ["before", "a", "b\"q\""]);
    let rest = deliveries(&get(&mut c, "/queues/default/fetch?max=10").await);
    // No lingering for more: what is ready, not 10.
    assert_eq!(bodies(&rest), ["日本\n", "", "c"]);
    // Message ids follow publish order; every delivery is a first attempt
    // with its own id.
    let all: Vec<_> = first.iter().chain(&rest).collect();
    let message_ids: Vec<u64> = all.iter().map(|d| d.1).collect();
    assert!(
        message_ids.windows(2).all(|w| w[0] < w[1]),
        "{message_ids:?}"
    );
    assert!(all.iter().all(|d| d.2 == 1));
    assert_eq!(all.iter().map(|d| d.0).collect::<BTreeSet<_>>().len(), 6);
    assert_eq!(s.broker.stats().in_flight, 6);
    s.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_bad_entry_publishes_nothing_and_names_the_entry() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    for (body, index) in [
        (r#"{"messages":[{"body":"a"},{"body":"b"},{"body":7}]}"#, 2),
        (r#"{"messages":[{"body":"a"},{}]}"#, 1),
        (r#"{"messages":[["a"]]}"#, 0),
        (r#"{"messages":[{"body":"a"},null]}"#, 1),
        (r#"{"messages":[{"body":"a"},"b"]}"#, 1),
        (r#"{"messages":[{"body":"a","delay_ms":"5"}]}"#, 0),
        (r#"{"messages":[{"body":"a","delay_ms":-5}]}"#, 0),
        (
            r#"{"messages":[{"body":"a"},{"body":"b","delay_ms":86400001}]}"#,
            1,
        ),
        (r#"{"messages":[{"body":"a"},{"body":"a","body":"b"}]}"#, 1),
    ] {
        for path in ["/publish", "/queues/fresh/publish"] {
            let r = post(&mut c, path, body).await;
            assert_error(&r, 400, "invalid_request");
            assert!(
                r.json["error"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("messages[{index}]")),
                "{body}: {r:?}"
            );
        }
    }
    let stats = s.broker.stats();
    assert_eq!((stats.published, stats.ready, stats.delayed), (0, 0, 0));
    // Not even the queue came into being.
    assert_error(&get(&mut c, "/queues/fresh").await, 404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn malformed_batches_and_wrong_types_are_400_and_change_nothing() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    for body in [
        r#"{"messages":[]}"#,
        r#"{"messages":null}"#,
        r#"{"messages":"a"}"#,
        r#"{"messages":{"body":"a"}}"#,
        r#"{"messages":[{"body":"a"}],"body":"b"}"#,
        r#"{"body":"b","messages":[{"body":"a"}]}"#,
        r#"{"messages":[{"body":"a"}],"messages":[{"body":"a"}]}"#,
        r#"{"messages":[{"body":"a"}]"#,
        r#"[{"body":"a"}]"#,
        r#"{"messages":[{"body":"a"},]}"#,
    ] {
        assert_error(
            &post(&mut c, "/publish", body).await,
            400,
            "invalid_request",
        );
    }
    // `?delay=` belongs to the single form; entries carry their own.
    for query in ["delay=0", "delay=5"] {
        let r = post(&mut c, &format!("/publish?{query}"), batch_of(&["a"])).await;
        assert_error(&r, 400, "invalid_request");
        assert!(
            r.json["error"].as_str().unwrap().contains("delay_ms"),
            "{r:?}"
        );
    }
    assert_eq!(s.broker.stats().published, 0);
    s.stop().await;
}

#[tokio::test]
async fn extra_fields_are_ignored_in_entries_and_around_them() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    let r = post(
        &mut c,
        "/publish",
        r#"{"x":{"y":[1]},"messages":[{"body":"a","id":5,"delay":7,"nested":{"body":1}},{"other":null,"body":"b"}],"z":null}"#,
    )
    .await;
    assert_eq!(r.json, json!({"published": 2}));
    let got = deliveries(&get(&mut c, "/fetch?max=5&wait=0").await);
    assert_eq!(bodies(&got), ["a", "b"]);
    let r = post(
        &mut c,
        "/acknowledge",
        json!({"ids": ids(&got), "extra": [1, 2]}).to_string(),
    )
    .await;
    assert_results(&r, &["ok", "ok"]);
    s.stop().await;
}

#[tokio::test]
async fn a_batch_that_does_not_fit_max_queue_bytes_is_429_and_publishes_nothing() {
    let mut cfg = config();
    // Each message is charged its length plus 64: room for 4 of 36 bytes.
    cfg.max_queue_bytes = 4 * (36 + 64) + 50;
    let s = TestServer::start(cfg).await;
    let mut c = s.client().await;
    let body = "x".repeat(36);
    let r = post(&mut c, "/publish", batch_of(&[&body, &body])).await;
    assert_eq!(r.json, json!({"published": 2}));
    // Three more would make 5: none of them goes in.
    let r = post(
        &mut c,
        "/queues/other/publish",
        batch_of(&[&body, &body, &body]),
    )
    .await;
    assert_error(&r, 429, "queue_full");
    assert_eq!(r.headers["retry-after"], "1");
    let stats = s.broker.stats();
    assert_eq!((stats.published, stats.ready), (2, 2));
    assert_error(
        &get(&mut c, "/queues/other/fetch?wait=0").await,
        408,
        "timeout",
    );
    // Two still fit.
    let r = post(&mut c, "/queues/other/publish", batch_of(&[&body, &body])).await;
    assert_eq!(r.json, json!({"published": 2}));
    s.stop().await;
}

// Several worker threads, so that single publishes really run while a
// batch is being added.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_entries_keep_their_order_under_concurrent_single_publishes() {
    let s = TestServer::start(config()).await;
    const BATCHES: usize = 40;
    const SIZE: usize = 25;
    let mut singles = Vec::new();
    for writer in 0..3 {
        let mut c = s.client().await;
        singles.push(tokio::spawn(async move {
            for i in 0..200 {
                assert_eq!(c.publish(&format!("s{writer}-{i}")).await.status, 200);
            }
        }));
    }
    let mut c = s.client().await;
    for b in 0..BATCHES {
        let names: Vec<String> = (0..SIZE).map(|i| format!("b{b}-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = post(&mut c, "/publish", batch_of(&names)).await;
        assert_eq!(r.json, json!({"published": SIZE}));
        tokio::task::yield_now().await;
    }
    for task in singles {
        task.await.unwrap();
    }
    let mut order = Vec::new();
    loop {
        let r = get(&mut c, "/fetch?max=1000&wait=0").await;
        if r.status == 408 {
            break;
        }
        order.extend(deliveries(&r).into_iter().map(|d| d.3));
    }
    assert_eq!(order.len(), BATCHES * SIZE + 3 * 200);
    // SPEC "Batches": a batch's entries join the tail in their order (other
    // publishes may come between them), and every publisher's messages,
    // the batches' taken together, come out in the order it sent them.
    let mut next: std::collections::HashMap<String, usize> = Default::default();
    for body in &order {
        let (who, n) = body.split_once('-').expect("who-n");
        let n: usize = n.parse().unwrap();
        let (publisher, seq) = match who.strip_prefix('b') {
            Some(batch) => (
                "batches".to_owned(),
                batch.parse::<usize>().unwrap() * SIZE + n,
            ),
            None => (who.to_owned(), n),
        };
        let expected = next.entry(publisher).or_insert(0);
        assert_eq!(seq, *expected, "{body} out of order");
        *expected += 1;
    }
    assert_eq!(next["batches"], BATCHES * SIZE);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn delayed_entries_come_due_as_single_delayed_publishes_would() {
    let s = paused_server(config()).await;
    let mut c = s.client().await;
    let r = post(
        &mut c,
        "/queues/jobs/publish",
        r#"{"messages":[{"body":"now"},{"body":"late","delay_ms":200},{"body":"soon","delay_ms":100},{"body":"also now","delay_ms":0}]}"#,
    )
    .await;
    assert_eq!(r.json, json!({"published": 4}));
    let info = get(&mut c, "/queues/jobs").await.json;
    assert_eq!(
        (info["ready"].clone(), info["delayed"].clone()),
        (json!(2), json!(2))
    );
    let got = deliveries(&get(&mut c, "/queues/jobs/fetch?max=10&wait=0").await);
    assert_eq!(bodies(&got), ["now", "also now"]);
    advance_ms(99).await;
    assert_error(
        &get(&mut c, "/queues/jobs/fetch?max=10&wait=0").await,
        408,
        "timeout",
    );
    advance_ms(1).await;
    let got = deliveries(&get(&mut c, "/queues/jobs/fetch?max=10&wait=50").await);
    assert_eq!(bodies(&got), ["soon"]);
    advance_ms(100).await;
    let got = deliveries(&get(&mut c, "/queues/jobs/fetch?max=10&wait=50").await);
    assert_eq!(bodies(&got), ["late"]);
    s.stop().await;
}

// --- fetch ----------------------------------------------------------------------

#[tokio::test]
async fn a_waiting_batch_fetch_answers_as_soon_as_one_is_ready() {
    let s = TestServer::start(config()).await;
    let mut waiter = s.client().await;
    let fetch = tokio::spawn(async move {
        let r = get(&mut waiter, "/queues/w/fetch?max=50&wait=20000").await;
        deliveries(&r)
    });
    s.until("the fetch waits", |b| b.stats().waiting == 1).await;
    let mut c = s.client().await;
    assert_eq!(
        post(&mut c, "/queues/w/publish", r#"{"body":"one"}"#)
            .await
            .status,
        200
    );
    // Answered with what there is, long before its 20 s wait.
    let got = fetch.await.unwrap();
    assert_eq!(bodies(&got), ["one"]);
    // Empty and not waiting: 408 as usual, leasing nothing.
    assert_error(
        &get(&mut c, "/queues/w/fetch?max=5&wait=0").await,
        408,
        "timeout",
    );
    assert_eq!(s.broker.stats().in_flight, 1);
    s.stop().await;
}

#[tokio::test]
async fn a_waiting_batch_fetch_woken_by_a_batch_takes_up_to_max() {
    let s = TestServer::start(config()).await;
    let mut waiter = s.client().await;
    let fetch =
        tokio::spawn(async move { deliveries(&get(&mut waiter, "/fetch?max=3&wait=20000").await) });
    s.until("the fetch waits", |b| b.stats().waiting == 1).await;
    let mut c = s.client().await;
    let r = post(&mut c, "/publish", batch_of(&["a", "b", "c", "d", "e"])).await;
    assert_eq!(r.json, json!({"published": 5}));
    let got = fetch.await.unwrap();
    assert!((1..=3).contains(&got.len()), "{got:?}");
    let rest = deliveries(&get(&mut c, "/fetch?max=10&wait=0").await);
    let mut all = bodies(&got);
    all.extend(bodies(&rest));
    assert_eq!(all, ["a", "b", "c", "d", "e"]);
    s.stop().await;
}

#[tokio::test]
async fn fetch_max_stops_once_the_bodies_reach_max_body_bytes() {
    let mut cfg = config();
    cfg.max_body_bytes = 100;
    let s = TestServer::start(cfg).await;
    let mut c = s.client().await;
    let forty = "x".repeat(40);
    for _ in 0..4 {
        assert_eq!(c.publish(&forty).await.status, 200);
    }
    // 80 bytes are under 100; the third makes 120, crosses the line and is
    // the last one in the answer (SPEC "Batches": under twice the cap).
    let got = deliveries(&get(&mut c, "/fetch?max=10&wait=0").await);
    assert_eq!(got.len(), 3);
    let got = deliveries(&get(&mut c, "/fetch?max=10&wait=0").await);
    assert_eq!(got.len(), 1);
    // One message is always taken, however large (published past the HTTP
    // limit through the engine), and alone once it crosses the line.
    for _ in 0..2 {
        s.broker
            .default_queue()
            .publish(Bytes::from(vec![b'y'; 300]))
            .unwrap();
    }
    let got = deliveries(&get(&mut c, "/fetch?max=10&wait=0").await);
    assert_eq!((got.len(), got[0].3.len()), (1, 300));
    s.stop().await;
}

#[tokio::test]
async fn fetch_max_must_be_from_1_to_max_batch() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    assert_eq!(c.publish("kept").await.status, 200);
    for query in [
        "max=0",
        "max=1001",
        "max=",
        "max=-1",
        "max=two",
        "max=1.0",
        "wait=0&max=0",
    ] {
        let r = get(&mut c, &format!("/fetch?{query}")).await;
        assert_error(&r, 400, "invalid_request");
    }
    assert_eq!(s.broker.stats().in_flight, 0);
    let got = deliveries(&get(&mut c, "/fetch?max=1000&wait=0").await);
    assert_eq!(bodies(&got), ["kept"]);
    s.stop().await;
}

// --- settle ---------------------------------------------------------------------

#[tokio::test]
async fn batch_acknowledge_answers_positionally_with_200_when_partly_invalid() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    post(&mut c, "/publish", batch_of(&["a", "b", "c"])).await;
    let got = ids(&deliveries(&get(&mut c, "/fetch?max=3&wait=0").await));
    let r = post(
        &mut c,
        "/acknowledge",
        ids_body(&[got[0], 999_999, got[1], got[0], 0]),
    )
    .await;
    // A repeated id succeeds once.
    assert_results(&r, &["ok", "invalid", "ok", "invalid", "invalid"]);
    assert_eq!(s.broker.stats().acknowledged, 2);
    // An id under another queue's path is invalid there.
    let r = post(&mut c, "/queues/other/acknowledge", ids_body(&[got[2]])).await;
    assert_results(&r, &["invalid"]);
    let r = post(&mut c, "/queues/default/acknowledge", ids_body(&[got[2]])).await;
    assert_results(&r, &["ok"]);
    assert_eq!(s.broker.stats().in_flight, 0);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn batch_requeue_takes_one_delay_and_succeeds_once_per_id() {
    let s = paused_server(config()).await;
    let mut c = s.client().await;
    post(&mut c, "/queues/q/publish", batch_of(&["a", "b"])).await;
    let got = ids(&deliveries(
        &get(&mut c, "/queues/q/fetch?max=2&wait=0").await,
    ));
    let r = post(
        &mut c,
        "/queues/q/requeue?delay=500",
        ids_body(&[got[1], got[1], got[0]]),
    )
    .await;
    assert_results(&r, &["ok", "invalid", "ok"]);
    assert_eq!(s.broker.stats().delayed, 2);
    advance_ms(499).await;
    assert_error(
        &get(&mut c, "/queues/q/fetch?max=5&wait=0").await,
        408,
        "timeout",
    );
    advance_ms(1).await;
    let again = deliveries(&get(&mut c, "/queues/q/fetch?max=5&wait=50").await);
    // Back in the order they were requeued, on their second attempt.
    assert_eq!(bodies(&again), ["b", "a"]);
    assert!(again.iter().all(|d| d.2 == 2));
    // Without a delay they rejoin at once.
    let r = post(&mut c, "/queues/q/requeue", ids_body(&ids(&again))).await;
    assert_results(&r, &["ok", "ok"]);
    assert_eq!(s.broker.stats().ready, 2);
    s.stop().await;
}

#[tokio::test(start_paused = true)]
async fn batch_touch_extends_each_lease_and_touches_repeated_ids_each_time() {
    let s = paused_server(config()).await;
    let mut c = s.client().await;
    let r = c
        .send(Method::PUT, "/queues/t", r#"{"ttl_ms": 1000}"#)
        .await;
    assert_eq!(r.status, 200);
    post(&mut c, "/queues/t/publish", batch_of(&["a", "b"])).await;
    let got = ids(&deliveries(
        &get(&mut c, "/queues/t/fetch?max=2&wait=0").await,
    ));
    advance_ms(900).await;
    let r = post(
        &mut c,
        "/queues/t/touch?ttl=5000",
        ids_body(&[got[0], got[0], 424_242]),
    )
    .await;
    assert_results(&r, &["ok", "ok", "invalid"]);
    advance_ms(200).await;
    // The touched lease lives on; the other expired at 1000 ms.
    let r = post(&mut c, "/queues/t/acknowledge", ids_body(&[got[0], got[1]])).await;
    assert_results(&r, &["ok", "invalid"]);
    // Touch with the queue's TTL (no `?ttl=`).
    let again = ids(&deliveries(
        &get(&mut c, "/queues/t/fetch?max=2&wait=0").await,
    ));
    advance_ms(900).await;
    assert_results(
        &post(&mut c, "/queues/t/touch", ids_body(&again)).await,
        &["ok"],
    );
    advance_ms(900).await;
    assert_results(
        &post(&mut c, "/queues/t/acknowledge", ids_body(&again)).await,
        &["ok"],
    );
    s.stop().await;
}

#[tokio::test]
async fn settles_on_a_queue_that_does_not_exist_are_all_invalid() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    for path in [
        "/queues/nope/acknowledge",
        "/queues/nope/requeue",
        "/queues/nope/touch",
    ] {
        assert_results(
            &post(&mut c, path, ids_body(&[1, 2])).await,
            &["invalid", "invalid"],
        );
    }
    assert_error(&get(&mut c, "/queues/nope").await, 404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn malformed_settle_batches_are_400_and_settle_nothing() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    c.publish("a").await;
    let id = ids(&deliveries(&get(&mut c, "/fetch?max=1&wait=0").await))[0];
    let bodies = [
        r#"{"ids":[]}"#.to_owned(),
        format!(r#"{{"ids":[{id}, -1]}}"#),
        format!(r#"{{"ids":[{id}, 1.5]}}"#),
        format!(r#"{{"ids":[{id}, 18446744073709551616]}}"#),
        format!(r#"{{"ids":[{id}, "1"]}}"#),
        format!(r#"{{"ids":[{id}, null]}}"#),
        format!(r#"{{"ids":{id}}}"#),
        format!(r#"{{"ids":"{id}"}}"#),
        format!(r#"[{id}]"#),
        r#"{"ids":null}"#.to_owned(),
        r#"{}"#.to_owned(),
        String::new(),
        format!(r#"{{"ids":[{id}]"#),
    ];
    for path in [
        "/acknowledge",
        "/requeue",
        "/touch",
        "/queues/default/acknowledge",
    ] {
        for body in &bodies {
            assert_error(
                &post(&mut c, path, body.clone()).await,
                400,
                "invalid_request",
            );
        }
    }
    // Bad queries, with a good body.
    for path in [
        "/requeue?delay=x",
        "/requeue?delay=86400001",
        "/touch?ttl=0",
        "/touch?ttl=43200001",
    ] {
        assert_error(
            &post(&mut c, path, ids_body(&[id])).await,
            400,
            "invalid_request",
        );
    }
    assert_error(
        &post(&mut c, "/queues/bad%20name/acknowledge", ids_body(&[id])).await,
        400,
        "invalid_queue_name",
    );
    assert_eq!(s.broker.stats().in_flight, 1);
    assert_results(
        &post(&mut c, "/acknowledge", ids_body(&[id])).await,
        &["ok"],
    );
    s.stop().await;
}

#[tokio::test]
async fn batch_routes_take_only_post_and_the_single_forms_are_unchanged() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    for path in ["/acknowledge", "/queues/q/requeue", "/touch"] {
        let r = get(&mut c, path).await;
        assert_error(&r, 405, "method_not_allowed");
        assert_eq!(r.headers["allow"], "POST");
    }
    // The single forms answer as in part 1.
    c.publish("one").await;
    let r = get(&mut c, "/fetch?wait=0").await;
    let (id, body) = r.delivery();
    assert_eq!(body, "one");
    assert_eq!(r.json["attempt"], 1);
    assert_eq!(
        (
            c.acknowledge(id).await.json,
            post(&mut c, "/publish", r#"{"body":"x"}"#).await.json
        ),
        (json!({}), json!({}))
    );
    s.stop().await;
}

// --- limits ---------------------------------------------------------------------

#[tokio::test]
async fn max_batch_caps_every_batch_form() {
    let mut cfg = config();
    cfg.max_batch = 3;
    let s = TestServer::start(cfg).await;
    let mut c = s.client().await;
    let r = post(&mut c, "/publish", batch_of(&["a", "b", "c", "d"])).await;
    assert_error(&r, 400, "invalid_request");
    assert!(
        r.json["error"].as_str().unwrap().contains("1 to 3"),
        "{r:?}"
    );
    assert_eq!(s.broker.stats().published, 0);
    let r = post(&mut c, "/publish", batch_of(&["a", "b", "c"])).await;
    assert_eq!(r.json, json!({"published": 3}));
    post(&mut c, "/publish", batch_of(&["d"])).await;
    assert_error(&get(&mut c, "/fetch?max=4").await, 400, "invalid_request");
    let got = ids(&deliveries(&get(&mut c, "/fetch?max=3").await));
    assert_eq!(got.len(), 3);
    let mut four = got.clone();
    four.push(got[0]);
    for path in ["/acknowledge", "/requeue", "/touch"] {
        assert_error(
            &post(&mut c, path, ids_body(&four)).await,
            400,
            "invalid_request",
        );
    }
    assert_results(
        &post(&mut c, "/acknowledge", ids_body(&got)).await,
        &["ok"; 3],
    );
    s.stop().await;
}

#[tokio::test]
async fn a_batch_over_max_body_bytes_is_413() {
    let mut cfg = config();
    cfg.max_body_bytes = 200;
    let s = TestServer::start(cfg).await;
    let mut c = s.client().await;
    let entries: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
    let r = post(&mut c, "/publish", batch_of(&entries)).await;
    assert_error(&r, 413, "body_too_large");
    assert_eq!(s.broker.stats().published, 0);
    s.stop().await;
}

#[tokio::test]
async fn metrics_label_batch_settles_by_their_own_pattern() {
    let s = TestServer::start(config()).await;
    let mut c = s.client().await;
    post(&mut c, "/queues/m/acknowledge", ids_body(&[1])).await;
    post(&mut c, "/touch", ids_body(&[1])).await;
    let text = c.request(Method::GET, "/metrics", &[], Bytes::new()).await;
    let text = text.text();
    let routes: HashMap<&str, usize> = text
        .lines()
        .filter(|l| l.starts_with("ubroker_http_requests_total{"))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .fold(HashMap::new(), |mut m, r| {
            *m.entry(r).or_default() += 1;
            m
        });
    assert!(routes.contains_key("/queues/{queue}/acknowledge"), "{text}");
    assert!(routes.contains_key("/touch"), "{text}");
    assert!(!routes.keys().any(|r| r.contains("/m/")), "{text}");
    s.stop().await;
}
