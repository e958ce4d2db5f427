//! [`Replica`]: one node of a group: its log store and state machine under
//! `DIR/raft/`, its openraft instance, its Raft RPC server, bootstrap, and
//! what the server asks of it (role, leader, the start of a leader's term,
//! a leadership check).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use ubroker_wal::Recovered;

use crate::log_store::LogStore;
use crate::network::{serve, NetworkFactory};
use crate::op::Command;
use crate::state_machine::{lock, Shared, StateMachine};
use crate::{Error, NodeId, NotLeader, Raft};

/// How a replica is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's id (its global node index).
    pub id: NodeId,
    /// Every member of the group (this node included): id and Raft address.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the Raft log, vote and snapshot live.
    pub dir: PathBuf,
    /// Initialise the group's membership if this node holds no Raft state.
    pub bootstrap: bool,
    /// The election timeout (ms); elections start between 2/3 of it and
    /// all of it, heartbeats are sent every third of it.
    pub election_timeout_ms: u64,
    /// A snapshot is taken after this many entries since the last.
    pub snapshot_every: u64,
}

impl Options {
    /// Options with the defaults for everything but the group.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, dir: PathBuf) -> Self {
        Options {
            id,
            peers,
            dir,
            bootstrap: false,
            election_timeout_ms: 500,
            snapshot_every: 20_000,
        }
    }
}

/// This node's view of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    pub leader: bool,
    /// The leader this node knows of (itself when it leads).
    pub leader_id: Option<NodeId>,
    pub term: u64,
}

/// One running replica. See the module docs.
pub struct Replica {
    id: NodeId,
    raft: Raft,
    shared: Shared,
    log: LogStore,
    stop: watch::Sender<bool>,
    rpc: tokio::task::JoinHandle<()>,
    cut: Arc<AtomicBool>,
}

impl Replica {
    /// Opens the node's Raft state, starts openraft and serves its RPCs on
    /// `listener`; bootstraps the group when asked and this node is new.
    pub async fn start(options: Options, listener: TcpListener) -> Result<Replica, Error> {
        let timeout = options.election_timeout_ms;
        let config = Config {
            cluster_name: "ubroker".into(),
            election_timeout_min: (timeout * 2 / 3).max(timeout.saturating_sub(timeout / 3)),
            election_timeout_max: timeout + 1,
            heartbeat_interval: (timeout / 3).max(1),
            install_snapshot_timeout: 5_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every),
            max_in_snapshot_log_to_keep: options.snapshot_every / 2,
            ..Config::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| Error::Config(e.to_string()))?,
        );
        let dir = options.dir.join("raft");
        let log = LogStore::open(&dir).map_err(|e| Error::Storage(e.to_string()))?;
        let (sm, shared) = StateMachine::open(&dir).map_err(|e| Error::Storage(e.to_string()))?;
        let cut = Arc::new(AtomicBool::new(false));
        let raft = Raft::new(
            options.id,
            config,
            NetworkFactory::new(cut.clone()),
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
        let (stop, stopped) = watch::channel(false);
        let rpc = tokio::spawn(serve(listener, raft.clone(), cut.clone(), stopped));
        let replica = Replica {
            id: options.id,
            raft,
            shared,
            log,
            stop,
            rpc,
            cut,
        };
        if options.bootstrap
            && !replica
                .raft
                .is_initialized()
                .await
                .map_err(|e| Error::Raft(e.to_string()))?
        {
            let members: BTreeMap<NodeId, BasicNode> = options
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if let Err(error) = replica.raft.initialize(members).await {
                // Another node may have initialised it first: not fatal.
                tracing::warn!(%error, "could not initialise the raft group");
            }
        }
        Ok(replica)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft instance.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The replicated model (shared with the state machine).
    pub fn model(&self) -> &Shared {
        &self.shared
    }

    /// The Raft log store (for tests and stats).
    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// The role as of now.
    pub fn role(&self) -> Role {
        role_of(&self.raft.metrics().borrow())
    }

    /// Changes of role: each value is the role as of then.
    pub fn roles(&self) -> watch::Receiver<crate::Metrics> {
        self.raft.metrics()
    }

    /// Begins a leader's term: appends the failover entry and waits until
    /// it is committed and applied, then returns what the new engine is
    /// built from (every leased message ready, attempts counted, ids past
    /// the replicated marks).
    pub async fn begin_term(&self) -> Result<Recovered, NotLeader> {
        self.raft
            .client_write(Command::Failover)
            .await
            .map_err(|error| NotLeader {
                leader: error.forward_to_leader().and_then(|f| f.leader_id),
            })?;
        Ok(lock(&self.shared).model.to_recovered())
    }

    /// Confirms with a majority that this node still leads (read index).
    pub async fn confirm(&self) -> Result<(), NotLeader> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|error| NotLeader {
                leader: error.forward_to_leader().and_then(|f| f.leader_id),
            })
    }

    /// Waits until the node has applied at least `index` (tests).
    pub async fn applied_at_least(&self, index: u64, within: Duration) -> bool {
        self.raft
            .wait(Some(within))
            .applied_index_at_least(Some(index), "applied_at_least")
            .await
            .is_ok()
    }

    /// Cuts this node off from its group (every RPC in or out fails) or
    /// heals it: a network partition, for fault tests.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops openraft and the RPC server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.raft.shutdown().await;
        let _ = self.rpc.await;
    }
}

/// The role a metrics snapshot shows.
pub fn role_of(metrics: &crate::Metrics) -> Role {
    Role {
        leader: metrics.state == ServerState::Leader,
        leader_id: metrics.current_leader,
        term: metrics.current_term,
    }
}
