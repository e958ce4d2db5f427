//! [`Error`]: every way starting a replica fails, and [`NotLeader`].

/// Starting a replica failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad raft configuration: {0}")]
    Config(String),
    #[error("raft storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// This node does not lead (or stopped leading before the change
/// committed); `leader` is the leader it knows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not the leader")]
pub struct NotLeader {
    pub leader: Option<u64>,
}
