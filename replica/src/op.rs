//! What the Raft log carries: [`Op`], one change of the broker (the same
//! vocabulary as the write-ahead log's records), and [`Command`], one log
//! entry's worth of them.
//!
//! Entries are encoded with bincode (the log on disk and the Raft RPCs
//! alike): bodies are raw bytes, not JSON arrays of numbers, and an entry
//! of a thousand small messages is a few kilobytes.

use serde::{Deserialize, Serialize};

/// One published message of an [`Op::Publish`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    pub id: u64,
    /// Wall-clock ms when it comes due; 0: ready at once. The leader fixes
    /// it, so every replica holds the same due time.
    pub due_ms: u64,
    #[serde(with = "bytes_serde")]
    pub body: bytes::Bytes,
}

/// One change of the broker, in the order the leader's engine made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Messages published to `queue` (a batch: all or nothing).
    Publish {
        queue: String,
        messages: Vec<NewMessage>,
    },
    /// The message joined the tail of `queue` (requeue, expiry, delay come
    /// due, dead-letter move, redrive).
    Ready {
        id: u64,
        queue: String,
        attempts: u32,
        dead_lettered: bool,
    },
    /// The message waits in `queue` until `due_ms`.
    Delayed {
        id: u64,
        queue: String,
        attempts: u32,
        due_ms: u64,
    },
    /// The message was delivered; `attempts` counts this delivery.
    Leased { id: u64, attempts: u32 },
    /// The message left the broker (acknowledged, or its queue deleted).
    Gone { id: u64 },
    /// `queue` exists with these settings.
    QueuePut {
        queue: String,
        ttl_ms: Option<u64>,
        max_deliveries: Option<u32>,
    },
    /// `queue` was deleted.
    QueueDeleted { queue: String },
    /// A delivery whose answer never reached its consumer (a fetch whose
    /// client left, or whose fence failed, before the answer): the message
    /// joins the tail of `queue` again, and `attempts` no longer counts
    /// that delivery. Appended at the end of the enum: entries already on
    /// disk keep their encoding.
    Undelivered {
        id: u64,
        queue: String,
        attempts: u32,
    },
}

/// One Raft log entry's application data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A group of changes, and the leader's next (delivery, message) ids
    /// read after the last of them was made: every id the changes used is
    /// below them, so the replicated high-water mark covers every id a
    /// client can have been answered with.
    Ops {
        ops: Vec<Op>,
        next_delivery: u64,
        next_message: u64,
    },
    /// The first entry of a new leader's term: every leased message is
    /// ready again with its attempt counted (leases are not replicated, so
    /// a replica's state holds none), and the ids start past the mark.
    Failover,
}

/// What applying an entry answers: the replicated high-water marks after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub next_delivery: u64,
    pub next_message: u64,
}

/// Bodies as one byte string (bincode writes a `Vec<u8>` element by
/// element otherwise).
pub(crate) mod bytes_serde {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = bytes::Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(bytes::Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(bytes::Bytes::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(byte) = seq.next_element::<u8>()? {
                    out.push(byte);
                }
                Ok(bytes::Bytes::from(out))
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_bincode() {
        let command = Command::Ops {
            ops: vec![
                Op::Publish {
                    queue: "q".into(),
                    messages: vec![NewMessage {
                        id: 7,
                        due_ms: 0,
                        body: bytes::Bytes::from_static(b"hello"),
                    }],
                },
                Op::Gone { id: 7 },
            ],
            next_delivery: 3,
            next_message: 8,
        };
        let bytes = bincode::serialize(&command).unwrap();
        // The body is one byte string: 5 bytes plus its length.
        assert!(bytes.windows(5).any(|w| w == b"hello"));
        assert_eq!(bincode::deserialize::<Command>(&bytes).unwrap(), command);
    }
}
