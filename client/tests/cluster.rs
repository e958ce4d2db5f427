//! The cluster of SPEC part 3 as real processes: `scripts/cluster.sh`
//! starts release `ubroker` nodes and Debian's HAProxy, and these tests
//! drive it through the proxy: routing, the JSON `503` of a down node, a
//! SIGSTOPped node holding up only its own partitions, the client's
//! partition logic with a node down, and a `kill -9` loop under traffic
//! that loses nothing answered `200`.
//!
//! They need `haproxy`, `curl` and `target/release/ubroker` (or
//! `$UBROKER_BIN`), so they are ignored by `cargo test`; run them with
//! `scripts/cluster-test.sh` (which CI does). `UBROKER_CLUSTER_KILLS` sets
//! the kill loop's kills (default 6, at least 4).

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ubroker_client::{Client, Code, PartitionedQueue, RetryPolicy, Settled};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A cluster started by `scripts/cluster.sh up`, stopped by `down` on
/// drop, whatever happens; its directory is removed then.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

/// A base port P with P ... P+N free now (the tests run one at a time).
fn free_ports(nodes: usize) -> u16 {
    let salt = (std::process::id() % 100) as u16 * 100;
    for base in (20_000 + salt..60_000).step_by(50) {
        let free = (0..=nodes as u16).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free ports");
}

impl Cluster {
    fn up(nodes: usize) -> Cluster {
        let port = free_ports(nodes);
        let dir =
            std::env::temp_dir().join(format!("ubroker-cluster-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = Cluster { dir, port };
        let out = cluster
            .script(
                &["up"],
                &["--nodes", &nodes.to_string(), "--port", &port.to_string()],
            )
            .output()
            .expect("run scripts/cluster.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cluster.sh up failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.trim_end(),
            format!("cluster at http://127.0.0.1:{port}")
        );
        cluster
    }

    fn script(&self, command: &[&str], rest: &[&str]) -> Command {
        let mut c = Command::new(root().join("scripts/cluster.sh"));
        c.args(command).arg(&self.dir).args(rest);
        if std::env::var_os("UBROKER_BIN").is_none() {
            c.env("UBROKER_BIN", root().join("target/release/ubroker"));
        }
        c
    }

    /// `cluster.sh COMMAND DIR I` (kill, stop, cont, restart).
    fn node(&self, command: &str, i: usize) {
        let out = self
            .script(&[command], &[&i.to_string()])
            .output()
            .expect("run scripts/cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh {command} {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client of the proxy that does not retry: the tests see every
    /// answer as it came.
    fn client(&self) -> Client {
        Client::builder(&self.url())
            .retry(RetryPolicy::never())
            .build()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["down"], &[]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw answer through the proxy: status, content type and body.
async fn raw(url: &str, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "-m", "30", "-X", method, "-o", "-"])
        .args(["-w", "\n%{http_code} %{content_type}"]);
    if !body.is_empty() {
        curl.args(["-d", body]);
    }
    curl.arg(format!("{url}{path}"));
    // curl in a blocking thread: the runtime's other tasks go on.
    let out = tokio::task::spawn_blocking(move || curl.output())
        .await
        .unwrap()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (status, content_type) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        status.parse().unwrap_or(0),
        content_type.to_owned(),
        body.to_owned(),
    )
}

/// Polls `check` until it holds; fails after 60 s (a bound on a hang,
/// not a timing assertion).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened within 60 s: {what}");
}

/// The names of node i's queues, asked through `/nodes/{i}/queues`.
async fn queues_on(url: &str, i: usize) -> Vec<String> {
    let (status, _, body) = raw(url, "GET", &format!("/nodes/{i}/queues"), "").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
#[ignore = "needs haproxy: scripts/cluster-test.sh"]
async fn the_proxy_routes_partitions_node_paths_and_everything_else() {
    let cluster = Cluster::up(3);
    let client = cluster.client();
    let url = cluster.url();
    for k in 0..7 {
        client
            .queue(&format!("jobs--{k}"))
            .unwrap()
            .publish("x")
            .await
            .unwrap();
    }
    client
        .queue("my-queue--5.dead")
        .unwrap()
        .publish("d")
        .await
        .unwrap();
    client.queue("plain").unwrap().publish("p").await.unwrap();
    client.default_queue().publish("unprefixed").await.unwrap();
    let mut expected: Vec<Vec<String>> = vec![vec!["default".into()]; 3];
    for k in 0..7 {
        expected[k % 3].push(format!("jobs--{k}"));
    }
    expected[2].push("my-queue--5.dead".into());
    expected[0].push("plain".into());
    for (i, names) in expected.iter_mut().enumerate() {
        names.sort();
        assert_eq!(&queues_on(&url, i).await, names, "node {i}");
    }
    // The unprefixed routes are node 0's default queue.
    let (status, _, body) = raw(&url, "GET", "/nodes/0/queues/default", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"ready\":1"), "{body}");
    // GET /nodes is HAProxy's own answer; other methods and unknown nodes
    // get JSON errors.
    assert_eq!(
        raw(&url, "GET", "/nodes", "").await,
        (200, "application/json".into(), r#"{"nodes": 3}"#.into())
    );
    let (status, content_type, body) = raw(&url, "POST", "/nodes", "").await;
    assert_eq!((status, content_type.as_str()), (405, "application/json"));
    assert!(body.contains("method_not_allowed"));
    let (status, _, body) = raw(&url, "GET", "/nodes/3/stats", "").await;
    assert_eq!(status, 404);
    assert!(body.contains(r#""code": "not_found""#), "{body}");
    // /nodes/{i}/... reaches node i with the prefix removed.
    let (status, _, body) = raw(&url, "GET", "/nodes/1/queues/jobs--4", "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = raw(&url, "GET", "/nodes/2/queues/jobs--4", "").await;
    assert_eq!(status, 404);
    // A queue path that is not a partition goes to node 0, which judges it.
    let (status, _, body) = raw(&url, "POST", "/queues/a%2Fb--1/publish", r#"{"body":"x"}"#).await;
    assert_eq!(status, 400, "{body}");
}

async fn assert_unavailable(url: &str, path: &str) {
    let (status, content_type, body) = raw(url, "POST", path, r#"{"body":"x"}"#).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON body, not HTML");
    assert_eq!(
        json,
        serde_json::json!({"error": "node unavailable", "code": "unavailable"})
    );
}

#[tokio::test]
#[ignore = "needs haproxy: scripts/cluster-test.sh"]
async fn a_down_node_answers_json_503_and_only_for_its_partitions() {
    let cluster = Cluster::up(3);
    let url = cluster.url();
    let client = cluster.client();
    cluster.node("kill", 1);
    // Before HAProxy's checks notice (connection refused, retried, given
    // up) and after (no server up): the same JSON answer.
    for _ in 0..3 {
        assert_unavailable(&url, "/queues/jobs--1/publish").await;
        assert_unavailable(&url, "/queues/jobs--4/publish").await;
        assert_unavailable(&url, "/nodes/1/publish").await;
    }
    eventually("HAProxy marks node 1 down", || async {
        raw(&cluster.url(), "GET", "/nodes/1/health", "").await.0 == 503
    })
    .await;
    assert_unavailable(&url, "/queues/jobs--7/publish").await;
    let error = client
        .queue("jobs--1")
        .unwrap()
        .publish("x")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&Code::Unavailable));
    for k in [0, 2, 3, 5] {
        client
            .queue(&format!("jobs--{k}"))
            .unwrap()
            .publish("x")
            .await
            .unwrap();
    }
    cluster.node("restart", 1);
    eventually("node 1 serves again through the proxy", || async {
        client.queue("jobs--1").unwrap().publish("x").await.is_ok()
    })
    .await;
}

#[tokio::test]
#[ignore = "needs haproxy: scripts/cluster-test.sh"]
async fn a_stopped_node_holds_up_only_its_own_partitions() {
    let cluster = Cluster::up(3);
    let client = cluster.client();
    for k in 0..6 {
        client
            .queue(&format!("jobs--{k}"))
            .unwrap()
            .publish("before")
            .await
            .unwrap();
    }
    cluster.node("stop", 2);
    // Node 2's partitions hang (its socket accepts; it does not answer)
    // until HAProxy's checks mark it down; the others serve throughout.
    let hung = {
        let q = client.queue("jobs--2").unwrap();
        tokio::spawn(async move { q.fetch(Some(Duration::ZERO)).await })
    };
    for round in 0..3 {
        for k in [0, 1, 3, 4] {
            let q = client.queue(&format!("jobs--{k}")).unwrap();
            let served = tokio::time::timeout(Duration::from_secs(30), async {
                q.publish("during").await.unwrap();
                let d = q.fetch(Some(Duration::ZERO)).await.unwrap().unwrap();
                q.acknowledge(d.id).await.unwrap();
            })
            .await;
            assert!(served.is_ok(), "partition {k} held up (round {round})");
        }
    }
    eventually("node 2's partitions answer 503 unavailable", || async {
        matches!(
            client.queue("jobs--5").unwrap().publish("x").await,
            Err(e) if e.is(&Code::Unavailable)
        )
    })
    .await;
    assert!(!hung.is_finished() || hung.await.unwrap().is_err());
    cluster.node("cont", 2);
    eventually("node 2 serves again", || async {
        client
            .queue("jobs--5")
            .unwrap()
            .publish("after")
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
#[ignore = "needs haproxy: scripts/cluster-test.sh"]
async fn the_partitioned_client_works_around_a_down_node() {
    let cluster = Cluster::up(3);
    let client = cluster.client();
    let q = client.partitioned("jobs", 6).unwrap();
    cluster.node("kill", 1);
    let mut on = HashMap::<u32, usize>::new();
    for i in 0..60 {
        *on.entry(q.publish(&format!("m{i}")).await.unwrap())
            .or_default() += 1;
    }
    assert!(!on.contains_key(&1) && !on.contains_key(&4), "{on:?}");
    assert_eq!(on.values().sum::<usize>(), 60);
    let mut got = HashSet::new();
    while got.len() < 60 {
        for d in q
            .fetch_batch(10, Some(Duration::from_millis(50)))
            .await
            .unwrap()
        {
            assert!(d.partition.unwrap() % 3 != 1);
            q.acknowledge(&d).await.unwrap();
            assert!(got.insert(d.text().to_owned()));
        }
    }
    cluster.node("restart", 1);
    // Node 1's partitions come back into the turn once their skip ends.
    eventually("a publish lands on node 1 again", || async {
        q.publish("back").await.unwrap() % 3 == 1
    })
    .await;
}

/// What the kill loop's publishers and consumers saw answered `200`.
#[derive(Default)]
struct Ledger {
    published: HashSet<String>,
    acknowledged: HashSet<String>,
    deliveries: u64,
    publish_errors: u64,
}

async fn publisher(
    q: PartitionedQueue,
    tag: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(SeqCst) {
        let bodies: Vec<String> = (0..5).map(|j| format!("p{tag}-{n}-{j}")).collect();
        n += 1;
        match q.publish_batch(bodies.iter()).await {
            Ok(_) => ledger.lock().unwrap().published.extend(bodies),
            // Unavailable everywhere, or lost on a node killed mid-request
            // (it may be published: a duplicate at most, never a loss).
            Err(_) => {
                ledger.lock().unwrap().publish_errors += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn consumer(q: PartitionedQueue, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    while !stop.load(SeqCst) {
        let batch = match q.fetch_batch(20, Some(Duration::from_millis(200))).await {
            Ok(batch) => batch,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        ledger.lock().unwrap().deliveries += batch.len() as u64;
        // An acknowledgement lost with a killed node: the message comes
        // back after its restart and is acknowledged then.
        if let Ok(results) = q.acknowledge_batch(&batch).await {
            let mut ledger = ledger.lock().unwrap();
            for (d, r) in batch.iter().zip(results) {
                if r == Settled::Ok {
                    ledger.acknowledged.insert(d.text().to_owned());
                }
            }
        }
    }
}

#[tokio::test]
#[ignore = "needs haproxy: scripts/cluster-test.sh"]
async fn a_kill_loop_under_traffic_loses_nothing_answered_200() {
    let kills: usize = std::env::var("UBROKER_CLUSTER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
        .max(4);
    let cluster = Cluster::up(3);
    let client = cluster.client();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for tag in 0..3 {
        // Each its own handle: turns and cursors of their own.
        let q = client.partitioned("jobs", 6).unwrap();
        tasks.push(tokio::spawn(publisher(
            q,
            tag,
            ledger.clone(),
            stop_publishing.clone(),
        )));
    }
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let q = client.partitioned("jobs", 6).unwrap();
        consumers.push(tokio::spawn(consumer(
            q,
            ledger.clone(),
            stop_consuming.clone(),
        )));
    }
    let published = || ledger.lock().unwrap().published.len();
    let acknowledged = || ledger.lock().unwrap().acknowledged.len();
    for kill in 0..kills {
        let node = kill % 3;
        let before = (published(), acknowledged());
        cluster.node("kill", node);
        // Traffic goes on while the node is down: publishes and
        // acknowledgements on the other nodes' partitions.
        eventually(
            "publishes and acknowledgements go on with a node down",
            || async { published() >= before.0 + 200 && acknowledged() >= before.1 + 100 },
        )
        .await;
        cluster.node("restart", node);
        let before = published();
        eventually("traffic after the restart", || async {
            published() >= before + 200
        })
        .await;
        eprintln!(
            "kill {} (node {node}): {} published, {} acknowledged",
            kill + 1,
            published(),
            acknowledged()
        );
    }
    stop_publishing.store(true, SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    // Every message answered 200 is acknowledged in the end: none lost.
    let required: HashSet<String> = ledger.lock().unwrap().published.clone();
    eventually("every published message acknowledged", || async {
        let ledger = ledger.lock().unwrap();
        required.is_subset(&ledger.acknowledged)
    })
    .await;
    stop_consuming.store(true, SeqCst);
    for task in consumers {
        task.await.unwrap();
    }
    let ledger = ledger.lock().unwrap();
    eprintln!(
        "{kills} kills: {} published (200), {} acknowledged, {} deliveries, {} publish errors",
        ledger.published.len(),
        ledger.acknowledged.len(),
        ledger.deliveries,
        ledger.publish_errors
    );
}
