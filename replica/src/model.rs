//! [`Model`]: what the replicated log says the broker holds, on every
//! replica. Applying the same entries in the same order gives the same
//! model everywhere (no clock, no randomness, no hashing order reaches the
//! output). A new leader rebuilds its engine from it
//! ([`Model::to_recovered`], the shape the write-ahead log's recovery
//! hands the server), and a snapshot is its serialized form.
//!
//! The rules are the write-ahead log's replay contract: a message exists
//! from its `Publish` to its `Gone`; a record about a message that does not
//! exist is ignored; its place in its queue is the position of the entry
//! that last made it ready; leases are not held, so a leased message is
//! ready again whenever the model becomes an engine (with the attempts its
//! `Leased` records counted).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use ubroker_wal::{Recovered, RecoveredMessage, Settings};

use crate::op::{Applied, Command, Op};

/// Ops in one entry take positions `index << OP_BITS | i`.
pub const OP_BITS: u32 = 20;

/// The most ops one entry may carry (their positions stay in the entry's
/// slot).
pub const MAX_OPS: usize = 1 << OP_BITS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    queue: String,
    attempts: u32,
    dead_lettered: bool,
    /// 0: ready; else wall-clock ms when it comes due.
    due_ms: u64,
    ready_pos: u64,
    #[serde(with = "crate::op::bytes_serde")]
    body: Bytes,
}

/// The replicated broker state. See the module docs.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    messages: HashMap<u64, Held>,
    queues: BTreeMap<String, (Option<u64>, Option<u32>)>,
    /// The replicated high-water marks: no id below them may be handed out
    /// by a later leader.
    next_delivery: u64,
    next_message: u64,
    /// How many failovers were applied (for tests and `/stats`).
    failovers: u64,
}

impl Model {
    /// Applies the entry at log `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Applied {
        match command {
            Command::Ops {
                ops,
                next_delivery,
                next_message,
            } => {
                for (i, op) in ops.iter().enumerate() {
                    self.apply_op((index << OP_BITS) | (i as u64 & (MAX_OPS as u64 - 1)), op);
                }
                self.next_delivery = self.next_delivery.max(*next_delivery);
                self.next_message = self.next_message.max(*next_message);
            }
            Command::Failover => {
                // Every id a client was answered with is below the marks
                // (each answer waited for an entry whose marks cover it,
                // and every such entry precedes this one): the new leader
                // starts above them, so old delivery ids are unknown to it.
                let seen = self.messages.keys().max().map_or(0, |id| id + 1);
                self.next_message = self.next_message.max(seen);
                self.failovers += 1;
            }
        }
        self.applied()
    }

    fn applied(&self) -> Applied {
        Applied {
            next_delivery: self.next_delivery,
            next_message: self.next_message,
        }
    }

    fn apply_op(&mut self, pos: u64, op: &Op) {
        match op {
            Op::Publish { queue, messages } => {
                for m in messages {
                    self.next_message = self.next_message.max(m.id + 1);
                    self.messages.insert(
                        m.id,
                        Held {
                            queue: queue.clone(),
                            attempts: 0,
                            dead_lettered: false,
                            due_ms: m.due_ms,
                            ready_pos: pos,
                            body: m.body.clone(),
                        },
                    );
                }
            }
            Op::Ready {
                id,
                queue,
                attempts,
                dead_lettered,
            } => {
                if let Some(m) = self.messages.get_mut(id) {
                    if m.queue != *queue {
                        m.queue.clone_from(queue);
                    }
                    m.attempts = *attempts;
                    m.dead_lettered = *dead_lettered;
                    m.due_ms = 0;
                    m.ready_pos = pos;
                }
            }
            Op::Delayed {
                id,
                queue,
                attempts,
                due_ms,
            } => {
                if let Some(m) = self.messages.get_mut(id) {
                    if m.queue != *queue {
                        m.queue.clone_from(queue);
                    }
                    m.attempts = *attempts;
                    m.due_ms = (*due_ms).max(1);
                    m.ready_pos = pos;
                }
            }
            Op::Leased { id, attempts } => {
                if let Some(m) = self.messages.get_mut(id) {
                    m.attempts = *attempts;
                }
            }
            Op::Gone { id } => {
                self.messages.remove(id);
            }
            // As `Ready`, but the attempts are the leader's uncounted ones
            // and the dead-letter mark stays as it was.
            Op::Undelivered {
                id,
                queue,
                attempts,
            } => {
                if let Some(m) = self.messages.get_mut(id) {
                    if m.queue != *queue {
                        m.queue.clone_from(queue);
                    }
                    m.attempts = *attempts;
                    m.due_ms = 0;
                    m.ready_pos = pos;
                }
            }
            Op::QueuePut {
                queue,
                ttl_ms,
                max_deliveries,
            } => {
                self.queues
                    .insert(queue.clone(), (*ttl_ms, *max_deliveries));
            }
            Op::QueueDeleted { queue } => {
                self.queues.remove(queue);
            }
        }
    }

    /// Messages held (ready, delayed or leased on the leader).
    pub fn live(&self) -> usize {
        self.messages.len()
    }

    /// Failovers applied so far.
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// The replicated high-water marks (next delivery id, next message id).
    pub fn marks(&self) -> (u64, u64) {
        (self.next_delivery, self.next_message)
    }

    /// The attempts counted for message `id`, if it is held.
    pub fn attempts(&self, id: u64) -> Option<u32> {
        self.messages.get(&id).map(|m| m.attempts)
    }

    /// What a broker is rebuilt from: every queue, ready messages in the
    /// order they were last made ready, then delayed ones in due order, and
    /// the marks.
    pub fn to_recovered(&self) -> Recovered {
        let mut queues: BTreeMap<Arc<str>, Settings> = self
            .queues
            .iter()
            .map(|(name, (ttl_ms, max_deliveries))| {
                (
                    Arc::from(name.as_str()),
                    Settings {
                        ttl_ms: *ttl_ms,
                        max_deliveries: *max_deliveries,
                    },
                )
            })
            .collect();
        let mut ready = Vec::new();
        let mut delayed = Vec::new();
        for (id, m) in &self.messages {
            // A message whose queue was deleted after its publish raced
            // into the queue that replaced it: that queue exists.
            let queue: Arc<str> = match queues.get_key_value(m.queue.as_str()) {
                Some((name, _)) => name.clone(),
                None => {
                    let name: Arc<str> = Arc::from(m.queue.as_str());
                    queues.insert(name.clone(), Settings::default());
                    name
                }
            };
            let message = RecoveredMessage {
                queue,
                id: *id,
                body: m.body.clone(),
                attempts: m.attempts,
                dead_lettered: m.dead_lettered,
                due_ms: m.due_ms,
            };
            if m.due_ms == 0 {
                ready.push(((m.ready_pos, *id), message));
            } else {
                delayed.push(((m.due_ms, m.ready_pos, *id), message));
            }
        }
        ready.sort_unstable_by_key(|(key, _)| *key);
        delayed.sort_unstable_by_key(|(key, _)| *key);
        Recovered {
            queues: queues.into_iter().collect(),
            messages: ready
                .into_iter()
                .map(|(_, m)| m)
                .chain(delayed.into_iter().map(|(_, m)| m))
                .collect(),
            next_delivery: self.next_delivery,
            next_message: self.next_message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::NewMessage;

    fn publish(queue: &str, ids: &[u64]) -> Op {
        Op::Publish {
            queue: queue.into(),
            messages: ids
                .iter()
                .map(|id| NewMessage {
                    id: *id,
                    due_ms: 0,
                    body: Bytes::from(format!("m{id}")),
                })
                .collect(),
        }
    }

    fn ops(ops: Vec<Op>, next_delivery: u64, next_message: u64) -> Command {
        Command::Ops {
            ops,
            next_delivery,
            next_message,
        }
    }

    #[test]
    fn a_leased_message_comes_back_ready_with_its_attempt_and_the_marks_move() {
        let mut model = Model::default();
        model.apply(1, &ops(vec![publish("q", &[1, 2, 3])], 1, 4));
        model.apply(2, &ops(vec![Op::Leased { id: 1, attempts: 1 }], 9, 4));
        model.apply(3, &ops(vec![Op::Gone { id: 2 }], 10, 4));
        let applied = model.apply(4, &Command::Failover);
        assert_eq!(applied.next_delivery, 10);
        assert_eq!(applied.next_message, 4);
        let recovered = model.to_recovered();
        let got: Vec<(u64, u32)> = recovered
            .messages
            .iter()
            .map(|m| (m.id, m.attempts))
            .collect();
        assert_eq!(got, vec![(1, 1), (3, 0)]);
        assert_eq!(recovered.next_delivery, 10);
    }

    #[test]
    fn an_undelivered_op_uncounts_the_attempt_on_every_replica() {
        let entries = [
            ops(vec![publish("q", &[1, 2])], 0, 3),
            ops(vec![Op::Leased { id: 1, attempts: 1 }], 1, 3),
            ops(
                vec![
                    Op::Undelivered {
                        id: 1,
                        queue: "q".into(),
                        attempts: 0,
                    },
                    // About a message that is gone: ignored.
                    Op::Undelivered {
                        id: 9,
                        queue: "q".into(),
                        attempts: 0,
                    },
                ],
                1,
                3,
            ),
        ];
        let mut leased_only = Model::default();
        leased_only.apply(1, &entries[0]);
        leased_only.apply(2, &entries[1]);
        assert_eq!(leased_only.attempts(1), Some(1));
        let mut a = Model::default();
        let mut b = Model::default();
        for (index, entry) in entries.iter().enumerate() {
            a.apply(index as u64 + 1, entry);
            b.apply(index as u64 + 1, entry);
        }
        assert_eq!(a, b);
        assert_eq!(a.attempts(1), Some(0));
        assert_eq!(a.live(), 2);
        a.apply(4, &Command::Failover);
        // Ready again behind message 2 (it went back to the tail), the
        // failover counting nothing for it.
        let got: Vec<(u64, u32)> = a
            .to_recovered()
            .messages
            .iter()
            .map(|m| (m.id, m.attempts))
            .collect();
        assert_eq!(got, vec![(2, 0), (1, 0)]);
    }

    #[test]
    fn a_requeue_moves_a_message_behind_the_others_and_ignores_the_settled() {
        let mut model = Model::default();
        model.apply(1, &ops(vec![publish("q", &[1, 2])], 0, 3));
        model.apply(
            2,
            &ops(
                vec![
                    Op::Ready {
                        id: 1,
                        queue: "q".into(),
                        attempts: 1,
                        dead_lettered: false,
                    },
                    Op::Gone { id: 9 },
                    Op::Leased { id: 9, attempts: 4 },
                ],
                2,
                3,
            ),
        );
        let ids: Vec<u64> = model.to_recovered().messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!(model.live(), 2);
    }

    #[test]
    fn queues_and_delays_survive_a_snapshot_round_trip() {
        let mut model = Model::default();
        model.apply(
            1,
            &ops(
                vec![
                    Op::QueuePut {
                        queue: "jobs".into(),
                        ttl_ms: Some(5),
                        max_deliveries: Some(2),
                    },
                    publish("jobs", &[1]),
                    Op::Delayed {
                        id: 1,
                        queue: "jobs".into(),
                        attempts: 1,
                        due_ms: 77,
                    },
                ],
                0,
                2,
            ),
        );
        let bytes = bincode::serialize(&model).unwrap();
        let back: Model = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, model);
        let recovered = back.to_recovered();
        assert_eq!(recovered.messages[0].due_ms, 77);
        assert_eq!(
            recovered.queues,
            vec![(
                Arc::from("jobs"),
                Settings {
                    ttl_ms: Some(5),
                    max_deliveries: Some(2)
                }
            )]
        );
        model.apply(
            2,
            &ops(
                vec![Op::QueueDeleted {
                    queue: "jobs".into(),
                }],
                0,
                2,
            ),
        );
        // Its message still lives, so its queue comes back (as recovery does).
        assert_eq!(model.to_recovered().queues.len(), 1);
    }
}
