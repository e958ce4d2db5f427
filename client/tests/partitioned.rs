//! `PartitionedQueue` against real brokers: publishes go round the
//! partitions, batches whole; fetches find the one partition that has
//! messages, stay while it delivers and rotate after `max_stay`;
//! settlements reach the delivery's partition; a node that is down is
//! skipped by publishes and fetches without an error; the `Consumer` runs
//! over a partitioned queue. The node-down cases go through the harness's
//! `Router`, a stand-in for the cluster's HAProxy (the real one is tested
//! by `server/tests/cluster.rs`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, eventually, Router, TestBroker};
use ubroker_client::{Client, Code, Consumer, PartitionedQueue, RetryPolicy, Settled};

/// Ready messages of each partition.
async fn ready(q: &PartitionedQueue) -> Vec<u64> {
    let mut out = Vec::new();
    for partition in q.partitions() {
        out.push(match partition.info().await {
            Ok(info) => info.ready,
            Err(e) if e.is(&Code::NotFound) => 0,
            Err(e) => panic!("{e}"),
        });
    }
    out
}

/// Ready plus in flight over every partition.
async fn held(q: &PartitionedQueue) -> u64 {
    let mut total = 0;
    for partition in q.partitions() {
        if let Ok(info) = partition.info().await {
            total += info.ready + info.in_flight + info.delayed;
        }
    }
    total
}

#[tokio::test]
async fn publishes_go_round_the_partitions_and_batches_stay_whole() {
    let server = TestBroker::start(config()).await;
    let q = server.client().partitioned("jobs", 3).unwrap();
    let mut taken = Vec::new();
    for i in 0..6 {
        taken.push(q.publish(&format!("m{i}")).await.unwrap());
    }
    // In turn from a random start: each partition twice, in ring order.
    for pair in taken.windows(2) {
        assert_eq!(pair[1], (pair[0] + 1) % 3, "{taken:?}");
    }
    assert_eq!(ready(&q).await, [2, 2, 2]);
    let (k, n) = q.publish_batch(["a", "b", "c", "d"]).await.unwrap();
    assert_eq!(n, 4);
    let (k2, _) = q.publish_batch(["e"]).await.unwrap();
    assert_eq!(k2, (k + 1) % 3);
    let mut expected = [2, 2, 2];
    expected[k as usize] += 4;
    expected[k2 as usize] += 1;
    assert_eq!(ready(&q).await, expected);
    server.stop().await;
}

#[tokio::test]
async fn a_fetch_finds_the_partition_with_messages_and_settles_there() {
    let server = TestBroker::start(config()).await;
    let client = server.client();
    let q = client.partitioned("jobs", 4).unwrap();
    // Only partition 2 has messages.
    client
        .queue("jobs--2")
        .unwrap()
        .publish_batch(["x", "y", "z"])
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut empty_polls = 0;
    while got.len() < 3 {
        let batch = q
            .fetch_batch(2, Some(Duration::from_millis(20)))
            .await
            .unwrap();
        if batch.is_empty() {
            empty_polls += 1;
        }
        got.extend(batch);
        assert!(empty_polls < 4, "more empty polls than empty partitions");
    }
    assert!(got.iter().all(|d| d.partition == Some(2)));
    let bodies: Vec<&str> = got.iter().map(|d| d.text()).collect();
    assert_eq!(bodies, ["x", "y", "z"]);
    q.acknowledge(&got[0]).await.unwrap();
    q.requeue(&got[1], None).await.unwrap();
    q.touch(&got[2], None).await.unwrap();
    assert_eq!(
        q.acknowledge_batch(&got[1..]).await.unwrap(),
        [Settled::Invalid, Settled::Ok]
    );
    let info = client.queue("jobs--2").unwrap().info().await.unwrap();
    assert_eq!((info.ready, info.in_flight), (1, 0));
    // A delivery not fetched through the handle has no partition to go to.
    let plain = client
        .queue("jobs--2")
        .unwrap()
        .fetch(None)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        q.acknowledge(&plain).await,
        Err(ubroker_client::Error::InvalidArgument(_))
    ));
    server.stop().await;
}

#[tokio::test]
async fn a_busy_partition_is_left_after_max_stay_fetches() {
    let server = TestBroker::start(config()).await;
    let client = server.client();
    let q = client
        .partitioned_builder("jobs", 2)
        .max_stay(2)
        .build()
        .unwrap();
    for k in 0..2 {
        let part = q.partition(k).unwrap();
        part.publish_batch(
            (0..10)
                .map(|i| format!("{k}-{i}"))
                .collect::<Vec<_>>()
                .iter(),
        )
        .await
        .unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..6 {
        let batch = q.fetch_batch(1, Some(Duration::ZERO)).await.unwrap();
        assert_eq!(batch.len(), 1);
        order.push(batch[0].partition.unwrap());
    }
    // Two in a row from each, alternating.
    assert_eq!(order[0], order[1]);
    assert_ne!(order[1], order[2]);
    assert_eq!(order[2], order[3]);
    assert_ne!(order[3], order[4]);
    server.stop().await;
}

/// Two nodes behind the stand-in proxy; node 1 (partitions 1 and 3) down.
#[tokio::test]
async fn a_down_node_is_skipped_by_publishes_and_fetches() {
    let nodes = [
        TestBroker::start(config()).await,
        TestBroker::start(config()).await,
    ];
    let router = Router::start(nodes.iter().map(|n| n.addr).collect()).await;
    router.set_down(1, true);
    let client = Client::builder(&router.url())
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let q = client
        .partitioned_builder("jobs", 4)
        .skip_for(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut taken = Vec::new();
    for i in 0..8 {
        taken.push(q.publish(&format!("m{i}")).await.unwrap());
    }
    assert!(taken.iter().all(|k| k % 2 == 0), "{taken:?}");
    // Each of node 1's partitions was tried once, then skipped.
    assert_eq!(router.refused(), [0, 2]);
    assert!(q.is_skipped(1) && q.is_skipped(3) && !q.is_skipped(0));
    let mut bodies = HashSet::new();
    while bodies.len() < 8 {
        for d in q
            .fetch_batch(8, Some(Duration::from_millis(20)))
            .await
            .unwrap()
        {
            assert_eq!(d.partition.unwrap() % 2, 0);
            q.acknowledge(&d).await.unwrap();
            bodies.insert(d.text().to_owned());
        }
    }
    // Fetches skipped node 1 too: still only the two first refusals.
    assert_eq!(router.refused(), [0, 2]);
    assert_eq!(router.forwarded()[1], 0);
    // With every node down, a publish fails with the proxy's code.
    router.set_down(0, true);
    let error = q.publish("lost").await.unwrap_err();
    assert_eq!(error.code(), Some(&Code::Unavailable));
    assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
    for node in nodes {
        node.stop().await;
    }
}

/// A replicated group in the middle of a failover answers `503
/// not_leader`: nothing was done, so publishes go to another partition at
/// once and fetches skip it, as for `unavailable`; the error names the
/// leader. With every partition answering so and retries on, the client
/// waits for the failover to end instead of failing.
#[tokio::test]
async fn not_leader_partitions_are_skipped_like_unavailable_ones() {
    let nodes = [
        TestBroker::start(config()).await,
        TestBroker::start(config()).await,
    ];
    let router = Router::start(nodes.iter().map(|n| n.addr).collect()).await;
    router.set_follower(1, Some(Some(4)));
    let client = Client::builder(&router.url())
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let q = client
        .partitioned_builder("jobs", 4)
        .skip_for(Duration::from_secs(3600))
        .build()
        .unwrap();
    let mut taken = Vec::new();
    for i in 0..8 {
        taken.push(q.publish(&format!("m{i}")).await.unwrap());
    }
    assert!(taken.iter().all(|k| k % 2 == 0), "{taken:?}");
    assert_eq!(router.refused(), [0, 2]);
    assert!(q.is_skipped(1) && q.is_skipped(3) && !q.is_skipped(0));
    let mut bodies = HashSet::new();
    while bodies.len() < 8 {
        for d in q
            .fetch_batch(8, Some(Duration::from_millis(20)))
            .await
            .unwrap()
        {
            assert_eq!(d.partition.unwrap() % 2, 0);
            q.acknowledge(&d).await.unwrap();
            bodies.insert(d.text().to_owned());
        }
    }
    assert_eq!(router.forwarded()[1], 0);
    // Every group without a leader: the error is not_leader, naming it.
    router.set_follower(0, Some(None));
    let error = q.publish("lost").await.unwrap_err();
    assert!(error.is_not_leader(), "{error}");
    assert_eq!(error.status().map(|s| s.as_u16()), Some(503));
    let named = client
        .queue("jobs--1")
        .unwrap()
        .publish("x")
        .await
        .unwrap_err();
    assert_eq!(named.code(), Some(&Code::NotLeader { leader: Some(4) }));
    assert_eq!(named.leader(), Some(4));
    // With retries, a publish waits out the failover: once node 0 leads
    // again (after the first refusals), it lands there.
    // Patient enough to outlast the test's own wait (a bound on a hang).
    let mut policy = common::quick_retries();
    policy.max_retries = 10_000;
    let patient = Client::builder(&router.url())
        .retry(policy)
        .build()
        .unwrap()
        .partitioned_builder("jobs", 2)
        .build()
        .unwrap();
    let refused_before = router.refused();
    let publish = tokio::spawn(async move { patient.publish("late").await });
    let refused_now = || {
        let now = router.refused();
        now[0] > refused_before[0] && now[1] > refused_before[1]
    };
    eventually("both partitions refused the first round", || async {
        refused_now()
    })
    .await;
    router.set_follower(0, None);
    assert_eq!(publish.await.unwrap().unwrap(), 0);
    for node in nodes {
        node.stop().await;
    }
}

/// A partition that is skipped is still tried when every other partition
/// refuses too, and once its node is back it takes publishes again.
#[tokio::test]
async fn skipped_partitions_are_the_last_resort_and_come_back() {
    let nodes = [
        TestBroker::start(config()).await,
        TestBroker::start(config()).await,
    ];
    let router = Router::start(nodes.iter().map(|n| n.addr).collect()).await;
    let client = Client::builder(&router.url())
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let q = client
        .partitioned_builder("jobs", 2)
        .skip_for(Duration::from_secs(3600))
        .build()
        .unwrap();
    router.set_down(1, true);
    for _ in 0..2 {
        assert_eq!(q.publish("a").await.unwrap(), 0);
    }
    assert!(q.is_skipped(1));
    // Node 0 goes down, node 1 comes back: partition 1, though skipped,
    // is tried after partition 0 refuses, and takes the publish.
    router.set_down(1, false);
    router.set_down(0, true);
    assert_eq!(q.publish("b").await.unwrap(), 1);
    assert!(!q.is_skipped(1) && q.is_skipped(0));
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn the_consumer_runs_over_a_partitioned_queue() {
    let nodes = [
        TestBroker::start(config()).await,
        TestBroker::start(config()).await,
    ];
    let router = Router::start(nodes.iter().map(|n| n.addr).collect()).await;
    let q = Client::new(&router.url())
        .unwrap()
        .partitioned("jobs", 4)
        .unwrap();
    let n = 200;
    for i in 0..n / 10 {
        q.publish_batch(
            (0..10)
                .map(|j| format!("{}", i * 10 + j))
                .collect::<Vec<_>>()
                .iter(),
        )
        .await
        .unwrap();
    }
    for i in 0..10 {
        q.publish(&format!("single {i}")).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
    let record = seen.clone();
    let consumer = Consumer::builder(q.clone())
        .max_in_flight(8)
        .fetch_max(5)
        .wait(Duration::from_millis(20))
        .run(move |delivery| {
            let record = record.clone();
            async move {
                assert!(delivery.partition.is_some());
                let mut seen = record.lock().unwrap();
                let count = seen.entry(delivery.text().to_owned()).or_default();
                *count += 1;
                // Every message fails once, so requeues go to partitions too.
                if *count == 1 {
                    Err("first try fails")
                } else {
                    Ok(())
                }
            }
        });
    let total = n + 10;
    eventually("every message handled twice", || {
        let seen = seen.clone();
        async move {
            let seen = seen.lock().unwrap();
            seen.len() == total && seen.values().all(|&c| c >= 2)
        }
    })
    .await;
    let stats = consumer.stop().await;
    assert_eq!(stats.acknowledged, total as u64);
    assert_eq!(stats.requeued, total as u64);
    assert_eq!(
        (stats.invalid, stats.settle_errors, stats.fetch_errors),
        (0, 0, 0)
    );
    assert_eq!(held(&q).await, 0);
    // Both nodes served: partitions 0 and 2 on node 0, 1 and 3 on node 1.
    let forwarded = router.forwarded();
    assert!(forwarded[0] > 0 && forwarded[1] > 0, "{forwarded:?}");
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn the_consumer_goes_on_while_a_node_is_down() {
    let nodes = [
        TestBroker::start(config()).await,
        TestBroker::start(config()).await,
    ];
    let router = Router::start(nodes.iter().map(|n| n.addr).collect()).await;
    let q = Client::new(&router.url())
        .unwrap()
        .partitioned("jobs", 4)
        .unwrap();
    for i in 0..40 {
        q.publish(&i.to_string()).await.unwrap();
    }
    router.set_down(1, true);
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let record = seen.clone();
    let consumer = Consumer::builder(q.clone())
        .wait(Duration::from_millis(20))
        .run(move |delivery| {
            let record = record.clone();
            async move {
                record.lock().unwrap().insert(delivery.text().to_owned());
                Ok::<(), String>(())
            }
        });
    // Node 0's half arrives while node 1 is down.
    eventually("node 0's messages handled", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() == 20 }
    })
    .await;
    assert_eq!(consumer.stats().fetch_errors, 0);
    router.set_down(1, false);
    eventually("node 1's messages handled once it is back", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() == 40 }
    })
    .await;
    let stats = consumer.stop().await;
    assert_eq!(stats.acknowledged, 40);
    assert_eq!(held(&q).await, 0);
    for node in nodes {
        node.stop().await;
    }
}

/// A node that takes requests and never answers holds a fetch up for its
/// wait plus the grace, not for the proxy's timeout: the partition is then
/// skipped and the other partitions' messages keep coming.
#[tokio::test]
async fn a_hung_node_holds_a_fetch_up_only_for_the_grace() {
    let nodes = [
        TestBroker::start(config()).await,
        TestBroker::start(config()).await,
    ];
    let router = Router::start(nodes.iter().map(|n| n.addr).collect()).await;
    let client = Client::builder(&router.url())
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    let q = client
        .partitioned_builder("jobs", 2)
        .fetch_grace(Duration::from_millis(100))
        .skip_for(Duration::from_secs(3600))
        .build()
        .unwrap();
    q.partition(0)
        .unwrap()
        .publish_batch(["a", "b", "c"])
        .await
        .unwrap();
    router.set_hung(1, true);
    // Bounded by the test, not the client: without the grace, a fetch that
    // reached the hung node would never return.
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(
                q.fetch_batch(3, Some(Duration::from_millis(20)))
                    .await
                    .unwrap(),
            );
        }
        got
    })
    .await
    .expect("fetches went on while node 1 hung");
    assert!(got.iter().all(|d| d.partition == Some(0)));
    // The cursor reaches partition 1 within a few empty fetches; the fetch
    // there is given up on, answered by partition 0 instead (empty, not an
    // error), and partition 1 is skipped from then on.
    tokio::time::timeout(Duration::from_secs(30), async {
        while !q.is_skipped(1) {
            let batch = q.fetch_batch(1, Some(Duration::from_millis(20))).await;
            assert!(batch.unwrap().is_empty());
        }
    })
    .await
    .expect("the hung partition was given up on");
    assert_eq!(router.forwarded()[1], 0);
    for node in nodes {
        node.stop().await;
    }
}
