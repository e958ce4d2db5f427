//! Many clients at once, on real sockets: 2,000 concurrent long-poll
//! waiters served by 2,000 publishes with none lost, and 1,000 connections
//! publishing at the same moment.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{Client, TestServer};
use tokio::sync::Barrier;
use ubroker_server::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_waiters_are_served_by_two_thousand_publishes() {
    const N: usize = 2_000;
    let mut cfg = Config::for_port(0);
    cfg.max_fetch_wait = 60_000;
    let server = TestServer::start(cfg).await;
    let addr = server.addr;
    let mut waiters = Vec::with_capacity(N);
    for _ in 0..N {
        let mut c = Client::connect(addr).await;
        waiters.push(tokio::spawn(async move {
            let (id, body) = c.fetch(60_000).await.delivery();
            assert_eq!(c.acknowledge(id).await.status, 200);
            body
        }));
    }
    server
        .until("all 2,000 fetches wait", |b| b.stats().waiting == N)
        .await;
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                for i in (p..N).step_by(8) {
                    assert_eq!(c.publish(&format!("m{i}")).await.status, 200);
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let mut bodies = HashSet::new();
    for w in waiters {
        assert!(
            bodies.insert(w.await.unwrap()),
            "a message was delivered twice"
        );
    }
    assert_eq!(bodies.len(), N);
    let stats = server.broker.stats();
    assert_eq!((stats.ready, stats.in_flight, stats.waiting), (0, 0, 0));
    assert_eq!(
        stats.delivered, N as u64,
        "every waiter got exactly one delivery"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_publish_at_once() {
    const N: usize = 1_000;
    let server = TestServer::start(Config::for_port(0)).await;
    let addr = server.addr;
    let barrier = Arc::new(Barrier::new(N));
    let mut clients = Vec::with_capacity(N);
    for _ in 0..N {
        clients.push(Client::connect(addr).await);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                assert_eq!(c.publish(&format!("c{i}")).await.status, 200);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.broker.stats().published, N as u64);
    let mut c = server.client().await;
    let mut bodies = HashSet::new();
    for _ in 0..N {
        let (id, body) = c.fetch(0).await.delivery();
        c.acknowledge(id).await;
        assert!(bodies.insert(body));
    }
    assert_eq!(bodies.len(), N);
    server.stop().await;
}
