//! ubroker's replication (SPEC part 3, "Replication, step 2"): the three
//! nodes of a replica set form one Raft group (openraft 0.9), whose log
//! carries every change the leader's engine makes, so that a majority holds
//! a publish before it is answered and a new leader rebuilds the broker
//! from the replicated state.
//!
//! # Layout
//!
//! * `op`: [`Op`] (one change, the write-ahead log's vocabulary) and
//!   [`Command`] (one entry: a group of ops with the id marks, or the
//!   failover that starts a leader's term), bincode-encoded.
//! * `model`: [`Model`], the replicated state every replica applies
//!   entries to, deterministically; what a new leader's engine is rebuilt
//!   from, and what a snapshot holds.
//! * `log_store`: [`LogStore`], the Raft log on disk (segments of
//!   checksummed frames; one append, one `fdatasync`) and the vote.
//! * `state_machine`: openraft's state machine over the model, and
//!   snapshots (kept on disk for a restarted node to send).
//! * `network`: Raft RPCs over HTTP/1.1 (hyper) on their own port, pooled
//!   connections, bincode bodies.
//! * `proposer`: [`Proposer`], group commit on top of Raft: the journal
//!   pushes ops, one task proposes them as one entry, requests wait for
//!   their op's number to commit.
//! * `node`: [`Replica`]: start, bootstrap, role, the start of a leader's
//!   term, leadership checks.
//! * `error`: [`Error`] and [`NotLeader`].
//!
//! # What is promised
//!
//! An op whose [`Proposer::wait`] returned `Ok` is in an entry committed on
//! a majority; a new leader's first entry is [`Command::Failover`], and the
//! state it is built from holds every committed op before it, no lease, and
//! marks above every id any answered request carried. An
//! [`Op::Undelivered`] (a fetch whose answer never went out) makes the
//! message ready again with the attempts it carries, so no replica counts
//! that delivery.

mod error;
mod log_store;
mod model;
mod network;
mod node;
mod op;
mod proposer;
mod state_machine;

pub use error::{Error, NotLeader};
pub use log_store::LogStore;
pub use model::Model;
pub use node::{role_of, Options, Replica, Role};
pub use op::{Applied, Command, NewMessage, Op};
pub use proposer::{Proposer, SharedProposer};
pub use state_machine::{lock, Machine, Shared};

/// A node's id: its global node index.
pub type NodeId = u64;
/// A node's address, as openraft keeps it.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// The group's types.
    pub TypeConfig:
        D = Command,
        R = Applied,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// One Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// What openraft reports of a node (its role among it).
pub type Metrics = openraft::RaftMetrics<NodeId, Node>;
/// The openraft instance.
pub type Raft = openraft::Raft<TypeConfig>;
