//! [`Proposer`]: group commit on top of Raft, the hand-off between the
//! HTTP tasks and the Raft core.
//!
//! The leader's engine reports every change through its journal, from any
//! thread and sometimes under engine locks: [`Proposer::push`] only appends
//! the op to a shared buffer under a short lock and numbers it. One task
//! ([`Proposer::run`]) takes the whole buffer, proposes it as one entry
//! (with the engine's id marks read after the take, which cover every id
//! the ops used) and, once openraft reports it committed and applied,
//! publishes the highest number it covered. A request that must not be
//! answered before its change is on a majority (a publish, a fetch's
//! delivery record, a settlement) waits with [`Proposer::wait`] for the
//! number [`Proposer::push`] gave it, or the highest pushed so far.
//!
//! Once a proposal fails (this node is no longer the leader) the proposer
//! is failed for good: every waiter not yet covered answers `NotLeader`,
//! and the server starts a new proposer with a new engine if it leads
//! again. Dropping the task (the leader's term ends) fails it too.

use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use crate::model::MAX_OPS;
use crate::op::{Command, Op};
use crate::{NotLeader, Raft};

#[derive(Default)]
struct Pending {
    ops: Vec<Op>,
    /// The number of the last op pushed (ops are numbered from 1).
    pushed: u64,
}

/// How far proposals have got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Every op numbered up to this is committed.
    committed: u64,
    /// A proposal failed (or the task stopped): nothing more commits.
    failed: bool,
    /// The leader the failure named, if any.
    leader: Option<u64>,
}

/// See the module docs.
pub struct Proposer {
    pending: Mutex<Pending>,
    wake: Notify,
    progress: watch::Sender<Progress>,
}

impl Default for Proposer {
    fn default() -> Self {
        Proposer {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            progress: watch::channel(Progress::default()).0,
        }
    }
}

/// Marks the proposer failed when its task ends, however it ends.
struct FailOnDrop<'a>(&'a Proposer);

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        self.0.progress.send_modify(|p| p.failed = true);
    }
}

impl Proposer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `op` for the next proposal; returns its number.
    pub fn push(&self, op: Op) -> u64 {
        let seq = {
            let mut pending = self.lock();
            pending.ops.push(op);
            pending.pushed += 1;
            pending.pushed
        };
        self.wake.notify_one();
        seq
    }

    /// The number of the last op pushed.
    pub fn pushed(&self) -> u64 {
        self.lock().pushed
    }

    /// Waits until op `seq` (and every op before it) is committed.
    pub async fn wait(&self, seq: u64) -> Result<(), NotLeader> {
        let mut rx = self.progress.subscribe();
        let progress = *rx
            .wait_for(|p| p.committed >= seq || p.failed)
            .await
            .map_err(|_| NotLeader { leader: None })?;
        if progress.committed >= seq {
            Ok(())
        } else {
            Err(NotLeader {
                leader: progress.leader,
            })
        }
    }

    /// Completes once a proposal has failed (or the task stopped).
    pub async fn until_failed(&self) {
        let mut rx = self.progress.subscribe();
        let _ = rx.wait_for(|p| p.failed).await;
    }

    /// Whether a proposal has failed.
    pub fn failed(&self) -> bool {
        self.progress.borrow().failed
    }

    /// Takes up to [`MAX_OPS`] pending ops and the number of the last.
    fn take(&self) -> (Vec<Op>, u64) {
        let mut pending = self.lock();
        if pending.ops.len() <= MAX_OPS {
            let upto = pending.pushed;
            (std::mem::take(&mut pending.ops), upto)
        } else {
            let rest = pending.ops.split_off(MAX_OPS);
            let upto = pending.pushed - rest.len() as u64;
            (std::mem::replace(&mut pending.ops, rest), upto)
        }
    }

    /// Proposes what is pushed, one entry at a time, until a proposal fails
    /// or the task is dropped. `marks` reads the engine's next (delivery,
    /// message) ids.
    pub async fn run(&self, raft: Raft, marks: impl Fn() -> (u64, u64)) {
        let _fail = FailOnDrop(self);
        loop {
            let (ops, upto) = self.take();
            if ops.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let (next_delivery, next_message) = marks();
            let command = Command::Ops {
                ops,
                next_delivery,
                next_message,
            };
            match raft.client_write(command).await {
                Ok(_) => self.progress.send_modify(|p| p.committed = upto),
                Err(error) => {
                    let leader = error
                        .forward_to_leader()
                        .and_then(|forward| forward.leader_id);
                    tracing::info!(%error, "a proposal failed: this node no longer leads");
                    self.progress.send_modify(|p| {
                        p.failed = true;
                        p.leader = leader;
                    });
                    return;
                }
            }
        }
    }
}

/// The proposer of a leader's term, shared by its engine's journal and
/// its request handlers.
pub type SharedProposer = Arc<Proposer>;
