//! Three in-process replicas over real sockets on 127.0.0.1: what a
//! majority must hold before an answer, the fence, failover, and an empty
//! node catching up by snapshot.
//!
//! No test sleeps: each waits for a condition on openraft's metrics (with
//! a generous bound that only turns a hang into a failure).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use ubroker_replica::{lock, NewMessage, Op, Options, Proposer, Replica};

/// How long a condition may take before the test fails as hung.
const HUNG: Duration = Duration::from_secs(60);

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "ubroker-replica-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Group {
    dir: Dir,
    peers: BTreeMap<u64, String>,
    nodes: Vec<Option<Replica>>,
    snapshot_every: u64,
}

impl Group {
    async fn start(name: &str, snapshot_every: u64) -> Group {
        let mut listeners = Vec::new();
        let mut peers = BTreeMap::new();
        for id in 0..3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            peers.insert(id, listener.local_addr().unwrap().to_string());
            listeners.push(listener);
        }
        let mut group = Group {
            dir: Dir::new(name),
            peers,
            nodes: Vec::new(),
            snapshot_every,
        };
        for (id, listener) in listeners.into_iter().enumerate() {
            let replica = group.replica(id as u64, listener, id == 0).await;
            group.nodes.push(Some(replica));
        }
        group
    }

    async fn replica(&self, id: u64, listener: TcpListener, bootstrap: bool) -> Replica {
        let mut options = Options::new(id, self.peers.clone(), self.dir.0.join(format!("n{id}")));
        options.bootstrap = bootstrap;
        options.election_timeout_ms = 300;
        options.snapshot_every = self.snapshot_every;
        Replica::start(options, listener).await.unwrap()
    }

    fn node(&self, id: u64) -> &Replica {
        self.nodes[id as usize].as_ref().unwrap()
    }

    /// Waits until some node other than `not` leads, in a term after
    /// `after`, and returns its id.
    async fn leader(&self, not: Option<u64>, after: u64) -> u64 {
        let watcher = self
            .nodes
            .iter()
            .flatten()
            .find(|r| Some(r.id()) != not)
            .unwrap();
        let metrics = watcher
            .raft()
            .wait(Some(HUNG))
            .metrics(
                |m| m.current_leader.is_some_and(|l| Some(l) != not) && m.current_term > after,
                "a leader",
            )
            .await
            .unwrap();
        let leader = metrics.current_leader.unwrap();
        self.node(leader)
            .raft()
            .wait(Some(HUNG))
            .state(openraft::ServerState::Leader, "leads")
            .await
            .unwrap();
        leader
    }

    async fn shutdown(mut self) {
        for node in self.nodes.drain(..).flatten() {
            node.shutdown().await;
        }
    }
}

fn publish(queue: &str, ids: std::ops::Range<u64>) -> Op {
    Op::Publish {
        queue: queue.into(),
        messages: ids
            .map(|id| NewMessage {
                id,
                due_ms: 0,
                body: Bytes::from(format!("body {id}")),
            })
            .collect(),
    }
}

/// A leader's proposer, running; `marks` are the (delivery, message) ids
/// its entries carry.
fn proposer(replica: &Replica, marks: (u64, u64)) -> (Arc<Proposer>, tokio::task::JoinHandle<()>) {
    let proposer = Arc::new(Proposer::default());
    let runner = proposer.clone();
    let raft = replica.raft().clone();
    let task = tokio::spawn(async move { runner.run(raft, move || marks).await });
    (proposer, task)
}

fn applied_index(replica: &Replica) -> u64 {
    replica
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |l| l.index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_answered_once_a_majority_holds_it() {
    let group = Group::start("majority", 10_000).await;
    let leader = group.leader(None, 0).await;
    group.node(leader).begin_term().await.unwrap();
    let (proposer, task) = proposer(group.node(leader), (1, 3));
    let seq = proposer.push(publish("q", 1..3));
    proposer.wait(seq).await.unwrap();
    // Committed means on a majority: at least one follower holds it
    // already, and every follower applies it.
    let index = applied_index(group.node(leader));
    for id in 0..3 {
        assert!(group.node(id).applied_at_least(index, HUNG).await);
        let machine = lock(group.node(id).model());
        assert_eq!(machine.model.live(), 2, "node {id}");
    }
    task.abort();
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_majority_answers_nothing_it_proposes() {
    let group = Group::start("minority", 10_000).await;
    let old = group.leader(None, 0).await;
    let term = group.node(old).role().term;
    group.node(old).begin_term().await.unwrap();
    let (proposer, task) = proposer(group.node(old), (1, 2));
    let seq = proposer.push(publish("q", 1..2));
    proposer.wait(seq).await.unwrap();

    // Cut the leader off: what it proposes now (a publish, a fetch's
    // delivery record) cannot reach a majority.
    group.node(old).set_cut(true);
    let publish_seq = proposer.push(publish("q", 2..3));
    let delivery_seq = proposer.push(Op::Leased { id: 1, attempts: 1 });
    let new = group.leader(Some(old), term).await;
    let recovered = group.node(new).begin_term().await.unwrap();
    // The new leader never saw either: message 1 is ready, never
    // delivered, and message 2 does not exist.
    assert_eq!(recovered.messages.len(), 1);
    assert_eq!(recovered.messages[0].id, 1);
    assert_eq!(recovered.messages[0].attempts, 0);

    // Healed, the old leader learns of the new term: its waiters are
    // answered "not the leader", never Ok.
    group.node(old).set_cut(false);
    let leader = proposer.wait(publish_seq).await.unwrap_err().leader;
    assert!(leader.is_none() || leader == Some(new), "{leader:?}");
    assert!(proposer.wait(delivery_seq).await.is_err());
    task.abort();
    // And its log now agrees with the new leader's.
    let index = applied_index(group.node(new));
    assert!(group.node(old).applied_at_least(index, HUNG).await);
    assert_eq!(lock(group.node(old).model()).model.live(), 1);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_makes_leases_ready_with_attempts_counted_and_moves_the_ids() {
    let mut group = Group::start("failover", 10_000).await;
    let old = group.leader(None, 0).await;
    let term = group.node(old).role().term;
    group.node(old).begin_term().await.unwrap();
    // The old leader handed out delivery ids up to 41 and message ids up
    // to 3 (its marks say so).
    let (proposer, task) = proposer(group.node(old), (42, 4));
    proposer.push(publish("q", 1..4));
    proposer.push(Op::Leased { id: 1, attempts: 1 });
    proposer.push(Op::Leased { id: 2, attempts: 1 });
    let seq = proposer.push(Op::Gone { id: 2 });
    proposer.wait(seq).await.unwrap();
    task.abort();

    group.nodes[old as usize].take().unwrap().shutdown().await;
    let new = group.leader(Some(old), term).await;
    let recovered = group.node(new).begin_term().await.unwrap();
    let got: Vec<(u64, u32)> = recovered
        .messages
        .iter()
        .map(|m| (m.id, m.attempts))
        .collect();
    // Message 1 was leased: ready again, its attempt counted; 2 was
    // acknowledged; 3 was never delivered.
    assert_eq!(got, vec![(1, 1), (3, 0)]);
    assert!(recovered.next_delivery >= 42, "{}", recovered.next_delivery);
    assert!(recovered.next_message >= 4);
    assert!(lock(group.node(new).model()).model.failovers() >= 2);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_node_catches_up_by_snapshot() {
    let mut group = Group::start("snapshot", 10).await;
    let leader = group.leader(None, 0).await;
    group.node(leader).begin_term().await.unwrap();
    let (proposer, task) = proposer(group.node(leader), (1, 1000));
    for n in 0..40u64 {
        let seq = proposer.push(publish("q", n * 10..n * 10 + 10));
        proposer.wait(seq).await.unwrap();
    }
    let seq = proposer.push(Op::Gone { id: 5 });
    proposer.wait(seq).await.unwrap();
    // Snapshot and purge on the leader, so that the wiped node cannot be
    // sent the log from its start.
    let raft = group.node(leader).raft().clone();
    raft.trigger().snapshot().await.unwrap();
    let index = applied_index(group.node(leader));
    raft.wait(Some(HUNG))
        .snapshot(
            openraft::LogId::new(
                openraft::CommittedLeaderId::new(group.node(leader).role().term, leader),
                index,
            ),
            "snapshot",
        )
        .await
        .ok();
    raft.trigger().purge_log(index).await.unwrap();
    raft.wait(Some(HUNG))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= index), "purged")
        .await
        .unwrap();

    // Wipe a follower: stop it, delete its data dir, start it again empty
    // on the same address, without bootstrap.
    let follower = (0..3).find(|id| *id != leader).unwrap();
    let addr = group.peers[&follower].clone();
    group.nodes[follower as usize]
        .take()
        .unwrap()
        .shutdown()
        .await;
    std::fs::remove_dir_all(group.dir.0.join(format!("n{follower}"))).unwrap();
    let listener = TcpListener::bind(&addr).await.unwrap();
    let fresh = group.replica(follower, listener, false).await;
    group.nodes[follower as usize] = Some(fresh);
    assert!(group.node(follower).applied_at_least(index, HUNG).await);
    let theirs = lock(group.node(follower).model()).model.clone();
    let ours = lock(group.node(leader).model()).model.clone();
    assert_eq!(theirs.live(), 399);
    assert_eq!(theirs, ours);
    assert!(group
        .node(follower)
        .raft()
        .metrics()
        .borrow()
        .snapshot
        .is_some());
    task.abort();
    group.shutdown().await;
}
