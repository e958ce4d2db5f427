//! [`StateMachine`]: openraft's state machine over the [`Model`], shared
//! with the server (which rebuilds its engine from it on becoming leader),
//! and its snapshots: the model's serialized form, kept in memory and in
//! `DIR/raft/snapshot` so that a restarted node can still send it.
//!
//! The model itself is not persisted apart from snapshots: a restarted
//! node loads the last snapshot and openraft re-applies the committed log
//! after it.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::op::Applied;
use crate::{Entry, Node, NodeId, TypeConfig};

/// The model and what openraft needs beside it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, Node>,
    pub model: Model,
}

/// The model as shared between openraft and the server.
pub type Shared = Arc<Mutex<Machine>>;

/// Locks the shared machine (a poisoned lock still holds whole data: every
/// change under it is a complete apply).
pub fn lock(shared: &Shared) -> MutexGuard<'_, Machine> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    data: Vec<u8>,
}

/// The state machine handed to openraft.
pub struct StateMachine {
    shared: Shared,
    path: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    built: u64,
}

impl StateMachine {
    /// Opens the state machine of `dir` (the raft directory), from its last
    /// snapshot if there is one.
    pub fn open(dir: &Path) -> io::Result<(StateMachine, Shared)> {
        let path = dir.join("snapshot");
        let mut machine = Machine::default();
        let mut current = None;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredSnapshot = bincode::deserialize(&bytes)
                    .map_err(|e| io::Error::other(format!("bad raft snapshot: {e}")))?;
                machine = bincode::deserialize(&stored.data)
                    .map_err(|e| io::Error::other(format!("bad raft snapshot: {e}")))?;
                current = Some(stored);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let shared = Arc::new(Mutex::new(machine));
        Ok((
            StateMachine {
                shared: shared.clone(),
                path,
                current: Arc::new(Mutex::new(current)),
                built: 0,
            },
            shared,
        ))
    }

    fn save(&self, stored: StoredSnapshot) -> io::Result<()> {
        let bytes = bincode::serialize(&stored).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored);
        Ok(())
    }
}

/// Builds a snapshot of the machine as it is now.
pub struct Builder {
    shared: Shared,
    sm: Arc<Mutex<Option<StoredSnapshot>>>,
    path: PathBuf,
    id: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, last, membership) = {
            let machine = lock(&self.shared);
            (
                bincode::serialize(&*machine).map_err(|e| {
                    StorageIOError::write_snapshot(None, &io::Error::other(e.to_string()))
                })?,
                machine.last_applied,
                machine.membership.clone(),
            )
        };
        let snapshot_id = format!(
            "{}-{}-{}",
            last.map_or(0, |l| l.leader_id.term),
            last.map_or(0, |l| l.index),
            self.id
        );
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let machine = StateMachine {
            shared: self.shared.clone(),
            path: self.path.clone(),
            current: self.sm.clone(),
            built: 0,
        };
        machine
            .save(stored)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let machine = lock(&self.shared);
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut machine = lock(&self.shared);
        let mut out = Vec::new();
        for entry in entries {
            machine.last_applied = Some(entry.log_id);
            let applied = match &entry.payload {
                EntryPayload::Blank => {
                    let (next_delivery, next_message) = machine.model.marks();
                    Applied {
                        next_delivery,
                        next_message,
                    }
                }
                EntryPayload::Normal(command) => machine.model.apply(entry.log_id.index, command),
                EntryPayload::Membership(membership) => {
                    machine.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    let (next_delivery, next_message) = machine.model.marks();
                    Applied {
                        next_delivery,
                        next_message,
                    }
                }
            };
            out.push(applied);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.built += 1;
        Builder {
            shared: self.shared.clone(),
            sm: self.current.clone(),
            path: self.path.clone(),
            id: self.built,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let machine: Machine = bincode::deserialize(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &io::Error::other(e.to_string()))
        })?;
        *lock(&self.shared) = machine;
        self.save(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Ok(current.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
