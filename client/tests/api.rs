//! Every route of SPEC parts 1 and 2 through the client, against a real
//! broker on `127.0.0.1:0`: what comes back, and errors that keep the
//! server's status, code and message.

mod common;

use std::time::Duration;

use common::{config, TestBroker};
use hyper::StatusCode;
use ubroker_client::{Client, Code, Error, Health, Message, QueueSettings, Settled};

const NOW: Option<Duration> = Some(Duration::ZERO);

fn api(error: Error) -> ubroker_client::ApiError {
    match error {
        Error::Api(api) => api,
        other => panic!("not an error answer: {other:?}"),
    }
}

#[tokio::test]
async fn part_one_routes_on_the_default_queue() {
    let server = TestBroker::start(config()).await;
    let client = server.client();
    let q = client.default_queue();
    q.publish("first").await.unwrap();
    q.publish("second \"quoted\"").await.unwrap();

    let d = q.fetch(NOW).await.unwrap().unwrap();
    assert_eq!((d.text(), d.attempt), ("first", 1));
    q.acknowledge(d.id).await.unwrap();
    let again = api(q.acknowledge(d.id).await.unwrap_err());
    assert_eq!(
        (again.status, &again.code, again.message.as_str()),
        (StatusCode::BAD_REQUEST, &Code::InvalidId, "id is invalid")
    );

    let d = q.fetch(NOW).await.unwrap().unwrap();
    assert_eq!(d.text(), "second \"quoted\"");
    q.requeue(d.id, None).await.unwrap();
    let d2 = q.fetch(NOW).await.unwrap().unwrap();
    assert_eq!((d2.message_id, d2.attempt), (d.message_id, 2));
    assert_ne!(d2.id, d.id);
    q.acknowledge(d2.id).await.unwrap();

    // Empty: None after the wait, not an error.
    assert_eq!(q.fetch(NOW).await.unwrap(), None);
    assert_eq!(
        q.fetch(Some(Duration::from_millis(20))).await.unwrap(),
        None
    );

    // The unprefixed routes are the queue `default`.
    q.publish("via default").await.unwrap();
    let named = client.queue("default").unwrap();
    assert_eq!(
        named.fetch(NOW).await.unwrap().unwrap().text(),
        "via default"
    );
    server.stop().await;
}

#[tokio::test]
async fn delays_touch_and_requeue_delay() {
    let server = TestBroker::start(config()).await;
    let client = server.client();
    let q = client.queue("jobs").unwrap();
    q.publish_delayed("later", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(q.fetch(NOW).await.unwrap(), None);
    assert_eq!(q.info().await.unwrap().delayed, 1);

    q.publish("now").await.unwrap();
    let d = q.fetch(NOW).await.unwrap().unwrap();
    q.touch(d.id, Some(Duration::from_secs(600))).await.unwrap();
    q.touch(d.id, None).await.unwrap();
    q.requeue(d.id, Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    let info = q.info().await.unwrap();
    assert_eq!((info.ready, info.in_flight, info.delayed), (0, 0, 2));

    let e = api(q.touch(d.id, None).await.unwrap_err());
    assert_eq!((e.status.as_u16(), e.code), (400, Code::InvalidId));
    // An id under another queue's path is invalid too.
    q.publish("x").await.unwrap();
    let d = q.fetch(NOW).await.unwrap().unwrap();
    let other = client.queue("other").unwrap();
    assert!(other
        .acknowledge(d.id)
        .await
        .unwrap_err()
        .is(&Code::InvalidId));
    q.acknowledge(d.id).await.unwrap();
    // Out of range: the server's message names the parameter.
    let e = api(q
        .requeue(1, Some(Duration::from_secs(10 * 86_400)))
        .await
        .unwrap_err());
    assert_eq!(e.code, Code::InvalidRequest);
    assert!(e.message.contains("delay"), "{}", e.message);
    server.stop().await;
}

#[tokio::test]
async fn queue_administration_and_dead_letters() {
    let server = TestBroker::start(config()).await;
    let client = server.client();
    let q = client.queue("work").unwrap();
    let info = q
        .put(QueueSettings {
            ttl_ms: Some(5000),
            max_deliveries: Some(1),
        })
        .await
        .unwrap();
    assert_eq!(
        (info.name.as_str(), info.ttl_ms, info.max_deliveries),
        ("work", 5000, 1)
    );
    // An omitted field keeps its value.
    let info = q.put(QueueSettings::default()).await.unwrap();
    assert_eq!((info.ttl_ms, info.max_deliveries), (5000, 1));

    q.publish("a").await.unwrap();
    q.publish("b").await.unwrap();
    for _ in 0..2 {
        let d = q.fetch(NOW).await.unwrap().unwrap();
        q.requeue(d.id, None).await.unwrap();
    }
    let dead = q.dead_letters().unwrap();
    assert_eq!(dead.name(), "work.dead");
    let d = dead.fetch(NOW).await.unwrap().unwrap();
    let letter = d.dead_letter.clone().unwrap();
    assert_eq!(
        (letter.queue.as_str(), letter.reason.as_str()),
        ("work", "max_deliveries")
    );
    assert_eq!((d.text(), d.attempt), ("a", 1));
    dead.requeue(d.id, None).await.unwrap();
    assert_eq!(dead.redrive().await.unwrap(), 2);
    let back = q.fetch(NOW).await.unwrap().unwrap();
    assert_eq!((back.attempt, back.dead_letter), (1, None));

    let names: Vec<String> = client
        .queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["default", "work", "work.dead"]);

    assert_eq!(q.delete().await.unwrap(), 2);
    let e = api(q.info().await.unwrap_err());
    assert_eq!((e.status.as_u16(), e.code), (404, Code::NotFound));
    let e = api(client.queue("default").unwrap().delete().await.unwrap_err());
    assert_eq!((e.status.as_u16(), e.code), (400, Code::InvalidRequest));
    // Names the server would refuse never leave the client.
    assert!(matches!(
        client.queue("a/b"),
        Err(Error::InvalidArgument(_))
    ));
    server.stop().await;
}

#[tokio::test]
async fn stats_metrics_and_health() {
    let server = TestBroker::start(config()).await;
    let client = server.client();
    let q = client.queue("seen").unwrap();
    q.publish("x").await.unwrap();
    let stats = client.stats().await.unwrap();
    let s = &stats.queues["seen"];
    assert_eq!((s.published, s.ready), (1, 1));
    let text = client.metrics().await.unwrap();
    assert!(text.contains("ubroker_"), "{text}");
    assert_eq!(client.health().await.unwrap(), Health::Ok);
    server.stop().await;
}

#[tokio::test]
async fn health_reports_a_drain_as_unavailable() {
    let mut cfg = config();
    cfg.drain_ms = 60_000;
    let mut server = TestBroker::start(cfg).await;
    let client = server.client();
    assert_eq!(client.health().await.unwrap(), Health::Ok);
    server.begin_shutdown();
    common::eventually("health turns 503", || async {
        client.health().await.unwrap() == Health::Unavailable(Code::ShuttingDown)
    })
    .await;
}

#[tokio::test]
async fn bearer_token() {
    let mut cfg = config();
    cfg.auth_token = Some("s3cret".into());
    let server = TestBroker::start(cfg).await;
    let without = server.client();
    let e = api(without.default_queue().publish("x").await.unwrap_err());
    assert_eq!((e.status.as_u16(), e.code), (401, Code::Unauthorized));
    let with = Client::builder(&server.url())
        .token("s3cret")
        .build()
        .unwrap();
    with.default_queue().publish("x").await.unwrap();
    // /health is never guarded.
    assert_eq!(without.health().await.unwrap(), Health::Ok);
    server.stop().await;
}

#[tokio::test]
async fn limits_come_back_with_their_codes_and_are_not_retried() {
    let mut cfg = config();
    cfg.max_queues = 1;
    cfg.max_body_bytes = 64;
    let server = TestBroker::start(cfg).await;
    let client = server.client();
    client.queue("one").unwrap().publish("x").await.unwrap();
    let e = api(client.queue("two").unwrap().publish("x").await.unwrap_err());
    assert_eq!(
        (e.status.as_u16(), e.code, e.message.as_str()),
        (429, Code::TooManyQueues, "too many queues")
    );
    let e = api(client
        .default_queue()
        .publish(&"x".repeat(100))
        .await
        .unwrap_err());
    assert_eq!((e.status.as_u16(), e.code), (413, Code::BodyTooLarge));
    server.stop().await;
}

#[tokio::test]
async fn batches() {
    let server = TestBroker::start(config()).await;
    let client = server.client();
    let q = client.queue("batch").unwrap();
    let n = q
        .publish_batch([
            Message::new("m1"),
            Message::new("m2"),
            Message::delayed("later", Duration::from_secs(3600)),
            Message::new("m3"),
        ])
        .await
        .unwrap();
    assert_eq!(n, 4);
    let got = q.fetch_batch(10, NOW).await.unwrap();
    let bodies: Vec<&str> = got.iter().map(|d| d.text()).collect();
    assert_eq!(bodies, ["m1", "m2", "m3"]);
    assert!(got.iter().all(|d| d.attempt == 1));
    assert_eq!(q.info().await.unwrap().delayed, 1);

    let ids: Vec<u64> = got.iter().map(|d| d.id).collect();
    let touched = q
        .touch_batch(&[ids[0], ids[0], 999_999], None)
        .await
        .unwrap();
    assert_eq!(touched, [Settled::Ok, Settled::Ok, Settled::Invalid]);
    let requeued = q.requeue_batch(&[ids[2]], None).await.unwrap();
    assert_eq!(requeued, [Settled::Ok]);
    let acked = q
        .acknowledge_batch(&[ids[0], ids[1], ids[0], ids[2]])
        .await
        .unwrap();
    assert_eq!(
        acked,
        [Settled::Ok, Settled::Ok, Settled::Invalid, Settled::Invalid]
    );
    let again = q.fetch_batch(10, NOW).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].text(), again[0].attempt), ("m3", 2));
    q.acknowledge_batch(&[again[0].id]).await.unwrap();
    // Empty after the wait: an empty list, not an error.
    assert!(q.fetch_batch(10, NOW).await.unwrap().is_empty());

    // Empty batches never leave the client.
    assert!(matches!(
        q.acknowledge_batch(&[]).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        q.publish_batch(Vec::<&str>::new()).await,
        Err(Error::InvalidArgument(_))
    ));
    // Bad input is the server's 400 with its code.
    let too_many: Vec<u64> = (0..2000).collect();
    let e = api(q.acknowledge_batch(&too_many).await.unwrap_err());
    assert_eq!((e.status.as_u16(), e.code), (400, Code::InvalidRequest));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_connection_serves_every_call_and_its_clones_take_turns() {
    let server = TestBroker::start(config()).await;
    let client = Client::builder(&server.url())
        .dedicated_connection(true)
        .build()
        .unwrap();
    let q = client.queue("solo").unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move { q.publish(&i.to_string()).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut seen = Vec::new();
    while let Some(d) = q.fetch(NOW).await.unwrap() {
        q.acknowledge(d.id).await.unwrap();
        seen.push(d.text().parse::<u32>().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    assert_eq!(client.queues().await.unwrap().len(), 2);
    let e = api(q.acknowledge(1 << 40).await.unwrap_err());
    assert_eq!(e.code, Code::InvalidId);
    // Still usable after an error answer.
    assert_eq!(client.health().await.unwrap(), Health::Ok);
    server.stop().await;
}

#[tokio::test]
async fn a_base_url_path_prefixes_every_route() {
    let server = common::Scripted::start(vec![common::response("200 OK", &[], "{}")]).await;
    for dedicated in [false, true] {
        let client = Client::builder(&format!("{}/broker/", server.url()))
            .dedicated_connection(dedicated)
            .build()
            .unwrap();
        client.queue("q").unwrap().acknowledge(3).await.unwrap();
    }
    let lines: Vec<String> = server.requests().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, ["POST /broker/queues/q/acknowledge/3 HTTP/1.1"; 2]);
}
