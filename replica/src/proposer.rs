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
//! Up to [`IN_FLIGHT`] entries are on their way at once (one, measured).
//!
//! Once a proposal fails (this node is no longer the leader) the proposer
//! is failed for good: every waiter not yet covered answers `NotLeader`,
//! and the server starts a new proposer with a new engine if it leads
//! again. Dropping the task (the leader's term ends) fails it too.

use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify, Semaphore};

use crate::model::MAX_OPS;
use crate::op::{Command, Op};
use crate::{NotLeader, Raft};

/// Entries proposed and not yet answered, at most. One: on the 2-core
/// bench machine, 4 in flight made entries smaller and cost more CPU per
/// message (batch publish 0.24x of `--fsync always` against 0.37x to 0.59x
/// with one; BENCHMARKS.md, issue 21).
pub const IN_FLIGHT: usize = 1;

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

    /// Proposes what is pushed until a proposal fails or the task is
    /// dropped, with up to [`IN_FLIGHT`] entries on their way at once (the
    /// next batch gathers while earlier ones replicate). `marks` reads the
    /// engine's next (delivery, message) ids.
    ///
    /// Entries commit as a prefix of the log, so an entry's success means
    /// every entry proposed before it committed too: `committed` only ever
    /// moves up to the highest success, in whatever order answers arrive.
    pub async fn run(self: &Arc<Self>, raft: Raft, marks: impl Fn() -> (u64, u64)) {
        let _fail = FailOnDrop(self);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut answers = tokio::task::JoinSet::new();
        loop {
            let (ops, upto) = self.take();
            if ops.is_empty() {
                self.wake.notified().await;
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (next_delivery, next_message) = marks();
            let command = Command::Ops {
                ops,
                next_delivery,
                next_message,
            };
            let answer = match raft.client_write_ff(command).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::info!(%error, "raft stopped: this node no longer leads");
                    self.fail(None);
                    return;
                }
            };
            let me = self.clone();
            answers.spawn(async move {
                let _slot = slot;
                match answer.await {
                    Ok(Ok(_)) => me
                        .progress
                        .send_modify(|p| p.committed = p.committed.max(upto)),
                    Ok(Err(error)) => {
                        let leader = match &error {
                            openraft::error::ClientWriteError::ForwardToLeader(f) => f.leader_id,
                            _ => None,
                        };
                        tracing::info!(%error, "a proposal failed: this node no longer leads");
                        me.fail(leader);
                    }
                    Err(_) => me.fail(None),
                }
            });
            // Reap finished answers so the set does not grow.
            while answers.try_join_next().is_some() {}
            if self.failed() {
                return;
            }
        }
    }

    fn fail(&self, leader: Option<u64>) {
        self.progress.send_modify(|p| {
            p.failed = true;
            p.leader = p.leader.or(leader);
        });
    }
}

/// The proposer of a leader's term, shared by its engine's journal and
/// its request handlers.
pub type SharedProposer = Arc<Proposer>;
