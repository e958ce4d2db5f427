//! The contract's part 2 section "Durability", over HTTP against real
//! servers on `--data-dir`s (restarted in-process) and on a faulty
//! in-memory disk: what survives a restart, ids across restarts, torn
//! tails, corruption, the directory lock, a failed log, reclamation, the
//! clean shutdown's sync. The `kill -9` loop is `crash_loop.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{config, publish, Client};
use hyper::Method;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use ubroker_engine::Broker;
use ubroker_server::{Config, Durability, Server, TokioClock};
use ubroker_wal::testing::FaultyStorage;

/// A fresh, empty directory for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ubroker-durability-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Running {
    addr: std::net::SocketAddr,
    broker: Arc<Broker<TokioClock>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A clean shutdown (SIGTERM's path): the log is synced and closed.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn config_in(dir: &Path) -> Config {
    let mut config = config();
    config.data_dir = Some(dir.to_owned());
    config
}

async fn serve(config: Config, broker: Arc<Broker<TokioClock>>, durable: Durability) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::new(listener, broker.clone(), config).with_durability(durable);
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        broker,
        stop: Some(stop),
        task,
    }
}

async fn start(config: Config) -> Running {
    let dir = config.data_dir.clone().unwrap();
    let (broker, durable) = Durability::open_dir(
        &dir,
        config.log_options(),
        config.engine(),
        TokioClock::new(),
    )
    .unwrap();
    serve(config, broker, durable).await
}

async fn start_on(config: Config, storage: FaultyStorage) -> Running {
    let (broker, durable) = Durability::open(
        storage,
        None,
        config.log_options(),
        config.engine(),
        TokioClock::new(),
    )
    .unwrap();
    serve(config, broker, durable).await
}

/// (id, message_id, attempt, body) of a fetch that must find a message.
async fn fetch(c: &mut Client, queue: &str) -> (u64, u64, u64, String) {
    let reply = c
        .send(
            Method::GET,
            &format!("/queues/{queue}/fetch?wait=0"),
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    (
        reply.json["id"].as_u64().unwrap(),
        reply.json["message_id"].as_u64().unwrap(),
        reply.json["attempt"].as_u64().unwrap(),
        reply.json["message"]["body"].as_str().unwrap().to_owned(),
    )
}

async fn empty(c: &mut Client, queue: &str) -> bool {
    c.send(
        Method::GET,
        &format!("/queues/{queue}/fetch?wait=0"),
        Bytes::new(),
    )
    .await
    .status
        == 408
}

#[tokio::test]
async fn a_restart_restores_queues_messages_order_ids_attempts_delays_and_dead_letters() {
    let dir = fresh_dir("restore");
    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    let put = c
        .send(
            Method::PUT,
            "/queues/jobs",
            r#"{"ttl_ms": 60000, "max_deliveries": 2}"#,
        )
        .await;
    assert_eq!(put.status, 200);
    for body in ["a", "b", "c", "d"] {
        assert_eq!(publish(&mut c, "jobs", "", body).await.status.as_u16(), 200);
    }
    assert_eq!(
        publish(&mut c, "jobs", "?delay=3600000", "later")
            .await
            .status
            .as_u16(),
        200
    );
    assert_eq!(publish(&mut c, "gone", "", "x").await.status.as_u16(), 200);
    // a: delivered and requeued (attempt 1 recorded, now behind d).
    let (a, a_message, _, _) = fetch(&mut c, "jobs").await;
    assert_eq!(
        c.send(
            Method::POST,
            &format!("/queues/jobs/requeue/{a}"),
            Bytes::new()
        )
        .await
        .status,
        200
    );
    // b: acknowledged, gone for good.
    let (b, _, _, body) = fetch(&mut c, "jobs").await;
    assert_eq!(body, "b");
    assert_eq!(
        c.send(
            Method::POST,
            &format!("/queues/jobs/acknowledge/{b}"),
            Bytes::new()
        )
        .await
        .status,
        200
    );
    // c: leased when the broker stops: ready again after, attempt kept.
    let (c_id, c_message, _, _) = fetch(&mut c, "jobs").await;
    // d: its second delivery ends unacknowledged: a dead letter.
    let (d1, _, _, body) = fetch(&mut c, "jobs").await;
    assert_eq!(body, "d");
    c.send(
        Method::POST,
        &format!("/queues/jobs/requeue/{d1}"),
        Bytes::new(),
    )
    .await;
    let (a2, _, attempt, body) = fetch(&mut c, "jobs").await;
    assert_eq!((body.as_str(), attempt), ("a", 2));
    c.send(
        Method::POST,
        &format!("/queues/jobs/requeue/{a2}"),
        Bytes::new(),
    )
    .await;
    // `a` reached max_deliveries: now in jobs.dead.
    let (d2, _, attempt, body) = fetch(&mut c, "jobs").await;
    assert_eq!((body.as_str(), attempt), ("d", 2));
    // A queue deleted stays deleted.
    assert_eq!(
        c.send(Method::DELETE, "/queues/gone", Bytes::new())
            .await
            .status,
        200
    );
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    assert_eq!(stats.json["log"]["fsync"], "always");
    assert!(stats.json["log"]["fsyncs"].as_u64().unwrap() >= 1);
    assert_eq!(stats.json["log"]["failed"], false);
    drop(c);
    server.stop().await;

    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    let queues = c.send(Method::GET, "/queues", Bytes::new()).await;
    let names: Vec<&str> = queues.json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["default", "jobs", "jobs.dead"]);
    let jobs = c.send(Method::GET, "/queues/jobs", Bytes::new()).await;
    assert_eq!(jobs.json["ttl_ms"], 60000);
    assert_eq!(jobs.json["max_deliveries"], 2);
    assert_eq!(
        jobs.json["delayed"], 1,
        "the delayed message keeps its delay"
    );
    // Leases came back ready, in the order last made ready: c (leased,
    // from its publish), d (leased on its second delivery, made ready by
    // its requeue).
    let (_, message, attempt, body) = fetch(&mut c, "jobs").await;
    assert_eq!((message, attempt, body.as_str()), (c_message, 2, "c"));
    let (_, _, attempt, body) = fetch(&mut c, "jobs").await;
    assert_eq!((attempt, body.as_str()), (3, "d"));
    assert!(empty(&mut c, "jobs").await);
    let (_, message, attempt, body) = fetch(&mut c, "jobs.dead").await;
    assert_eq!((message, attempt, body.as_str()), (a_message, 1, "a"));
    // Delivery ids from before the restart settle nothing.
    for old in [c_id, d2, a2] {
        let reply = c
            .send(
                Method::POST,
                &format!("/queues/jobs/acknowledge/{old}"),
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, 400, "old id {old} settled something");
    }
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    assert_eq!(stats.json["queues"]["jobs"]["in_flight"], 2);
    drop(c);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_batch_publish_is_durable_all_or_nothing_and_in_order() {
    let dir = fresh_dir("batch");
    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    let batch = serde_json::json!({ "messages": [
        {"body": "b1"}, {"body": "b2"}, {"body": "later", "delay_ms": 3600000}, {"body": "b3"}
    ]})
    .to_string();
    let reply = c.send(Method::POST, "/queues/q/publish", batch).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["published"], 4);
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    assert!(stats.json["log"]["committed"].as_u64().unwrap() >= 1);
    drop(c);
    server.stop().await;
    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    for body in ["b1", "b2", "b3"] {
        assert_eq!(fetch(&mut c, "q").await.3, body);
    }
    assert!(empty(&mut c, "q").await);
    let q = c.send(Method::GET, "/queues/q", Bytes::new()).await;
    assert_eq!(q.json["delayed"], 1);
    drop(c);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_batch_on_a_failed_log_publishes_nothing() {
    let disk = FaultyStorage::new();
    let server = start_on(config_in(Path::new("unused")), disk.clone()).await;
    let mut c = server.client().await;
    disk.fail_syncs(true);
    let batch = serde_json::json!({ "messages": [{"body": "a"}, {"body": "b"}]}).to_string();
    let reply = c.send(Method::POST, "/queues/q/publish", batch).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json["code"], "log_failed");
    let stats = server.broker.stats();
    assert_eq!((stats.ready, stats.queued_bytes), (0, 0));
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn delivery_ids_never_repeat_across_restarts_and_stay_below_2_53() {
    let dir = fresh_dir("ids");
    let mut seen = Vec::new();
    for round in 0..3 {
        let server = start(config_in(&dir)).await;
        let mut c = server.client().await;
        assert_eq!(
            publish(&mut c, "q", "", &format!("m{round}"))
                .await
                .status
                .as_u16(),
            200
        );
        // Every message left from before comes back; fetch them all.
        for _ in 0..=round {
            let (id, _, _, _) = fetch(&mut c, "q").await;
            assert!(id < 1 << 53);
            assert!(!seen.contains(&id), "delivery id {id} handed out twice");
            seen.push(id);
        }
        // A restart without a clean stop of the leases: they come back.
        drop(c);
        server.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_second_broker_on_the_same_directory_is_refused() {
    let dir = fresh_dir("lock");
    let server = start(config_in(&dir)).await;
    let cfg = config_in(&dir);
    let refused = Durability::open_dir(&dir, cfg.log_options(), cfg.engine(), TokioClock::new());
    let error = refused
        .err()
        .expect("a second broker started on a locked directory");
    assert!(
        error.contains("in use by another ubroker process"),
        "{error}"
    );
    server.stop().await;
    // Released with the first broker.
    let again = Durability::open_dir(&dir, cfg.log_options(), cfg.engine(), TokioClock::new());
    assert!(again.is_ok());
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_broker_starts_with_everything_before_it() {
    let dir = fresh_dir("torn");
    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    for body in ["one", "two"] {
        assert_eq!(publish(&mut c, "q", "", body).await.status.as_u16(), 200);
    }
    drop(c);
    server.stop().await;
    // Half a record at the end of the last segment, as a crash mid-write
    // leaves it.
    let last = segments(&dir).pop().unwrap();
    let mut data = std::fs::read(&last).unwrap();
    let before = data.len();
    data.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]);
    std::fs::write(&last, &data).unwrap();
    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    assert_eq!(fetch(&mut c, "q").await.3, "one");
    assert_eq!(fetch(&mut c, "q").await.3, "two");
    assert!(empty(&mut c, "q").await);
    assert_eq!(std::fs::metadata(&last).unwrap().len() as usize, before);
    drop(c);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn corruption_before_the_tail_stops_start_up_unless_truncation_is_asked_for() {
    let dir = fresh_dir("corrupt");
    let mut cfg = config_in(&dir);
    cfg.segment_bytes = 4096;
    let server = start(cfg.clone()).await;
    let mut c = server.client().await;
    for n in 0..100 {
        assert_eq!(
            publish(&mut c, "q", "", &format!("{n:0>100}"))
                .await
                .status
                .as_u16(),
            200
        );
    }
    drop(c);
    server.stop().await;
    let files = segments(&dir);
    assert!(files.len() >= 3, "{files:?}");
    let first = &files[0];
    let mut data = std::fs::read(first).unwrap();
    data[1000] ^= 0x10;
    std::fs::write(first, &data).unwrap();
    let error = Durability::open_dir(&dir, cfg.log_options(), cfg.engine(), TokioClock::new())
        .err()
        .expect("a corrupt log opened");
    let name = first.file_name().unwrap().to_str().unwrap();
    assert!(error.contains(name), "{error}");
    assert!(error.contains("offset"), "{error}");
    assert!(error.contains("--truncate-corrupt-log"), "{error}");
    cfg.truncate_corrupt_log = true;
    let server = start(cfg).await;
    let mut c = server.client().await;
    // Whatever came before the bad record is back, in order.
    let mut n = 0;
    while !empty_peek(&mut c).await {
        let (_, _, _, body) = fetch(&mut c, "q").await;
        assert_eq!(body, format!("{n:0>100}"));
        n += 1;
    }
    assert!(n > 0 && n < 100, "{n} messages came back");
    drop(c);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn empty_peek(c: &mut Client) -> bool {
    let info = c.send(Method::GET, "/queues/q", Bytes::new()).await;
    info.json["ready"] == 0
}

#[tokio::test]
async fn a_failed_sync_answers_503_log_failed_and_the_broker_takes_no_more_writes() {
    let disk = FaultyStorage::new();
    let server = start_on(config_in(Path::new("unused")), disk.clone()).await;
    let mut c = server.client().await;
    assert_eq!(publish(&mut c, "q", "", "kept").await.status.as_u16(), 200);
    let (id, _, _, _) = fetch(&mut c, "q").await;
    disk.fail_syncs(true);
    let payload = serde_json::json!({ "body": "lost" }).to_string();
    let reply = c.send(Method::POST, "/queues/q/publish", payload).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json["code"], "log_failed");
    // The refused message is nowhere.
    assert_eq!(server.broker.stats().ready, 0);
    // Syncs work again; the log stays failed (nothing is retried).
    disk.fail_syncs(false);
    assert_eq!(publish(&mut c, "q", "", "after").await.status.as_u16(), 503);
    assert_eq!(c.send(Method::PUT, "/queues/other", "{}").await.status, 503);
    let health = c.send(Method::GET, "/health", Bytes::new()).await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json["code"], "log_failed");
    assert_eq!(health.json["status"], "log failed");
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    assert_eq!(stats.json["log"]["failed"], true);
    // Consumers can still drain what is in memory.
    assert_eq!(acknowledge_in(&mut c, "q", id).await, 200);
    drop(c);
    server.stop().await;
}

async fn acknowledge_in(c: &mut Client, queue: &str, id: u64) -> u16 {
    c.send(
        Method::POST,
        &format!("/queues/{queue}/acknowledge/{id}"),
        Bytes::new(),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn a_failed_write_of_a_batch_of_waiting_publishes_answers_every_one_503() {
    let disk = FaultyStorage::new();
    disk.set_sync_delay(Duration::from_millis(20));
    let server = start_on(config_in(Path::new("unused")), disk.clone()).await;
    disk.fail_writes(true);
    let mut tasks = Vec::new();
    for n in 0..8 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            publish(&mut c, "q", "", &format!("m{n}"))
                .await
                .status
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 503);
    }
    assert_eq!(
        server.broker.stats().queued_bytes,
        0,
        "aborted publishes give their charge back"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_disk_stops_publishes_with_503_disk_full_but_never_acknowledgements() {
    let disk = FaultyStorage::new();
    disk.set_space(Some(200_000));
    let mut cfg = config_in(Path::new("unused"));
    cfg.segment_bytes = 32_768;
    let server = start_on(cfg.clone(), disk.clone()).await;
    let mut c = server.client().await;
    let body = "x".repeat(400);
    let mut published = 0;
    let refused = loop {
        let payload = serde_json::json!({ "body": body }).to_string();
        let reply = c.send(Method::POST, "/queues/q/publish", payload).await;
        if reply.status != 200 {
            break reply;
        }
        published += 1;
        assert!(published < 2000, "the disk never filled up");
    };
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json["code"], "disk_full");
    assert!(published > 10);
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    assert_eq!(stats.json["log"]["failed"], false, "{stats:?}");
    assert_eq!(stats.json["log"]["disk_full"], true);
    assert_eq!(
        c.send(Method::GET, "/health", Bytes::new()).await.status,
        200
    );
    // Every message published can still be acknowledged.
    for _ in 0..published {
        let (id, _, _, _) = fetch(&mut c, "q").await;
        assert_eq!(acknowledge_in(&mut c, "q", id).await, 200);
    }
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    assert_eq!(stats.json["log"]["failed"], false, "{stats:?}");
    // Space comes back (the settled segments, and the operator): so do
    // publishes.
    disk.set_space(None);
    let mut accepted = false;
    for _ in 0..100 {
        if publish(&mut c, "q", "", "again").await.status.as_u16() == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "publishes never resumed");
    drop(c);
    // A crash now: the acknowledgements were logged (the last publish's
    // sync covered them), so only the last message comes back.
    let image = disk.crash_image(|_, _| 0);
    server.stop().await;
    let server = start_on(cfg, image).await;
    let mut c = server.client().await;
    assert_eq!(fetch(&mut c, "q").await.3, "again");
    assert!(empty(&mut c, "q").await);
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn disk_follows_live_data_over_http() {
    let disk = FaultyStorage::new();
    let mut cfg = config_in(Path::new("unused"));
    cfg.segment_bytes = 8192;
    let server = start_on(cfg, disk.clone()).await;
    let mut c = server.client().await;
    // One message nobody acknowledges, then churn through many segments.
    assert_eq!(
        publish(&mut c, "q", "", "straggler").await.status.as_u16(),
        200
    );
    let (_, straggler, _, _) = fetch(&mut c, "q").await;
    let mut peak = 0;
    for n in 0..600 {
        assert_eq!(
            publish(&mut c, "q", "", &format!("{n:0>150}"))
                .await
                .status
                .as_u16(),
            200
        );
        let (id, _, _, _) = fetch(&mut c, "q").await;
        assert_eq!(acknowledge_in(&mut c, "q", id).await, 200);
        let bytes: usize = disk.files().iter().map(|(_, len)| len).sum();
        peak = peak.max(bytes);
    }
    // A publish flushes the lazily logged acknowledgements.
    assert_eq!(publish(&mut c, "other", "", "x").await.status.as_u16(), 200);
    assert_eq!(publish(&mut c, "other", "", "y").await.status.as_u16(), 200);
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    let bytes = stats.json["log"]["bytes"].as_u64().unwrap();
    let on_disk: usize = disk.files().iter().map(|(_, len)| len).sum();
    let files = disk.files();
    let last: u64 = files
        .last()
        .unwrap()
        .0
        .trim_end_matches(".wal")
        .parse()
        .unwrap();
    assert!(
        last >= 8,
        "the churn should have written many segments: {files:?}"
    );
    assert!(peak as u64 <= 3 * 8192, "peak {peak} bytes on disk");
    assert!(
        bytes <= 3 * 8192 && on_disk as u64 <= 3 * 8192,
        "log {bytes} bytes, disk {on_disk}: {:?}",
        disk.files()
    );
    assert_eq!(stats.json["log"]["live_messages"], 3);
    drop(c);
    server.stop().await;
    let _ = straggler;
}

#[tokio::test]
async fn a_clean_shutdown_syncs_the_log_under_fsync_never() {
    let dir = fresh_dir("never");
    let mut cfg = config_in(&dir);
    cfg.fsync = "never".into();
    // Nothing would be written for an hour: only the shutdown writes.
    cfg.fsync_interval_ms = 3_600_000;
    let server = start(cfg.clone()).await;
    let mut c = server.client().await;
    assert_eq!(publish(&mut c, "q", "", "kept").await.status.as_u16(), 200);
    drop(c);
    server.stop().await;
    let server = start(cfg).await;
    let mut c = server.client().await;
    assert_eq!(fetch(&mut c, "q").await.3, "kept");
    drop(c);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_data_dir_stats_has_no_log_object() {
    let server = common::TestServer::start(Config::for_port(0)).await;
    let mut c = server.client().await;
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    assert!(stats.json.get("log").is_none());
    drop(c);
    server.stop().await;
}

/// Publishes one message to `q` and fetches everything ready: (the
/// delivery ids handed out, the highest message id: the new message's).
async fn publish_and_fetch(c: &mut Client) -> (Vec<u64>, u64) {
    assert_eq!(publish(c, "q", "", "m").await.status, 200);
    let (mut deliveries, mut newest) = (Vec::new(), 0);
    while !empty_after(c, &mut deliveries, &mut newest).await {}
    (deliveries, newest)
}

async fn empty_after(c: &mut Client, deliveries: &mut Vec<u64>, newest: &mut u64) -> bool {
    let reply = c
        .send(Method::GET, "/queues/q/fetch?wait=0", Bytes::new())
        .await;
    if reply.status == 408 {
        return true;
    }
    assert_eq!(reply.status, 200, "{reply:?}");
    deliveries.push(reply.json["id"].as_u64().unwrap());
    *newest = (*newest).max(reply.json["message_id"].as_u64().unwrap());
    false
}

#[tokio::test]
async fn ids_resume_at_a_high_water_mark_not_an_epoch() {
    let dir = fresh_dir("marks");
    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    let (d1, m1) = publish_and_fetch(&mut c).await;
    assert_eq!(d1.len(), 1);
    drop(c);
    server.stop().await;
    // Starts that fail after the log was opened (a taken port): the log
    // is closed without serving anything.
    for _ in 0..3 {
        let cfg = config_in(&dir);
        let opened =
            Durability::open_dir(&dir, cfg.log_options(), cfg.engine(), TokioClock::new()).unwrap();
        drop(opened);
    }
    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    // The leased message is ready again, then the new one: after clean
    // stops the ids go on where they were.
    let (d2, m2) = publish_and_fetch(&mut c).await;
    assert_eq!(d2.len(), 2);
    assert!(
        d1[0] < d2[0] && d2[0] < d2[1] && d2[1] <= d1[0] + 10,
        "delivery ids {d1:?} then {d2:?}: a clean restart skips none"
    );
    assert!(m1 < m2 && m2 <= m1 + 10, "message ids {m1} then {m2}");
    drop(c);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_crash_skips_at_most_one_id_block() {
    let disk = FaultyStorage::new();
    let server = start_on(config_in(Path::new("unused")), disk.clone()).await;
    let mut c = server.client().await;
    let (d1, m1) = publish_and_fetch(&mut c).await;
    // `kill -9`: everything written survives, nothing more is logged.
    let image = disk.crash_image(|_, unsynced| unsynced);
    drop(c);
    let restarted = start_on(config_in(Path::new("unused")), image).await;
    let mut c = restarted.client().await;
    let (d2, m2) = publish_and_fetch(&mut c).await;
    // At most one grant of 2^24 ids: 2^53 / 2^24 = 537 million crashes
    // before ids run out (an epoch of 2^32 allowed two million).
    let block = 1 << 24;
    assert!(ubroker_wal::ID_BLOCK <= block);
    assert!(
        d2[0] > d1[0] && d2[0] - d1[0] <= block,
        "{d1:?} then {d2:?}"
    );
    assert!(m2 > m1 && m2 - m1 <= block, "{m1} then {m2}");
    drop(c);
    restarted.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_publish_is_answered_only_once_written_in_every_fsync_mode() {
    for mode in ["never", "interval", "always"] {
        let disk = FaultyStorage::new();
        let mut cfg = config_in(Path::new("unused"));
        cfg.fsync = mode.into();
        // Nothing is written or synced on a timer during the test.
        cfg.fsync_interval_ms = 3_600_000;
        let server = start_on(cfg.clone(), disk.clone()).await;
        let mut c = server.client().await;
        let messages: Vec<_> = (0..100)
            .map(|n| serde_json::json!({ "body": format!("b{n}") }))
            .collect();
        let batch = serde_json::json!({ "messages": messages }).to_string();
        let reply = c.send(Method::POST, "/queues/q/publish", batch).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        // `kill -9` right after the answer: the process is gone, the page
        // cache (every written byte) is not.
        let image = disk.crash_image(|_, unsynced| unsynced);
        let (_, recovered, _) = ubroker_wal::Log::open(image, cfg.log_options()).unwrap();
        assert_eq!(recovered.messages.len(), 100, "--fsync {mode}");
        drop(c);
        server.stop().await;
    }
}

/// The value of the sample `line_start` (name and labels) in `text`.
fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {line_start} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_have_waiting_fetches_oldest_ready_age_and_the_log() {
    let dir = fresh_dir("metrics");
    let server = start(config_in(&dir)).await;
    let mut c = server.client().await;
    assert_eq!(publish(&mut c, "q", "", "held").await.status, 200);
    let put = c.send(Method::PUT, "/queues/w", "{}").await;
    assert!(put.status.is_success(), "{put:?}");
    let addr = server.addr;
    let waiting = tokio::spawn(async move {
        let mut w = Client::connect(addr).await;
        w.send(Method::GET, "/queues/w/fetch?wait=30000", Bytes::new())
            .await
            .status
    });
    while server.broker.stats().waiting != 1 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reply = c.request(Method::GET, "/metrics", &[], Bytes::new()).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert_eq!(sample(text, "ubroker_waiting_fetches{queue=\"w\"}"), 1.0);
    assert_eq!(sample(text, "ubroker_waiting_fetches{queue=\"q\"}"), 0.0);
    assert!(sample(text, "ubroker_oldest_ready_age_ms{queue=\"q\"}") >= 0.0);
    assert!(sample(text, "ubroker_log_bytes") > 0.0);
    assert!(sample(text, "ubroker_log_segments") >= 1.0);
    assert!(sample(text, "ubroker_log_fsyncs_total") >= 1.0);
    assert!(sample(text, "ubroker_log_fsync_seconds_total") >= 0.0);
    assert!(sample(text, "ubroker_log_fsync_max_seconds") >= 0.0);
    assert_eq!(sample(text, "ubroker_log_live_messages"), 1.0);
    assert_eq!(sample(text, "ubroker_log_failed"), 0.0);
    assert_eq!(sample(text, "ubroker_log_disk_full"), 0.0);
    // The figures agree with /stats.
    let stats = c.send(Method::GET, "/stats", Bytes::new()).await;
    assert_eq!(stats.json["queues"]["w"]["waiting_fetches"], 1);
    assert_eq!(publish(&mut c, "w", "", "wake").await.status, 200);
    assert_eq!(waiting.await.unwrap(), 200);
    drop(c);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
