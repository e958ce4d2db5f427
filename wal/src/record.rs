//! The log's records: what each says, and its bytes on disk.
//!
//! A record is `[len u32][crc u32][kind u8][payload]`, little-endian. `len`
//! counts `kind` and `payload`; `crc` is CRC32C over them, started from a
//! non-zero seed so that a run of zero bytes (a preallocated or torn tail)
//! never passes as a record. Kind 0 is invalid for the same reason.
//!
//! A record never says where it is: its position in the log (segment and
//! offset) is its order, which is what recovery replays. Bodies are only in
//! `Publish` and `Live` records; every later change of a message names it by
//! its message id.
//!
//! # What it must never do
//!
//! Panic on any input: [`decode`] answers [`Decoded::Bad`] for every byte
//! string that is not a whole, checksummed, well-formed record.

use bytes::Bytes;

/// Bytes before a record's kind: `len` and `crc`.
pub const FRAME: usize = 8;

/// The CRC's seed: a record of zeros has a CRC of `crc32c_append(SEED, 0..)`,
/// never 0.
const SEED: u32 = 0x7562_726b;

/// The longest queue name (80 + `.dead`), as one length byte.
const MAX_NAME: usize = 255;

/// One entry of a `Publish` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: u64,
    /// Wall-clock milliseconds since the Unix epoch when it comes due; 0:
    /// ready at once.
    pub due_ms: u64,
    pub body: Bytes,
}

/// A message's whole state, written forward when its old record is in a
/// segment being reclaimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveState {
    pub id: u64,
    pub queue: String,
    pub attempts: u32,
    pub dead_lettered: bool,
    /// 0: ready; else when it comes due (wall-clock ms).
    pub due_ms: u64,
    /// Where it was last made ready: its place in its queue's order.
    pub ready_pos: u64,
    pub body: Bytes,
}

/// A queue's settings; `None` means the broker's default for new queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    pub ttl_ms: Option<u64>,
    pub max_deliveries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Messages published to `queue` (one, or a batch: all or nothing,
    /// since one record is checksummed as a whole).
    Publish {
        queue: String,
        messages: Vec<Published>,
    },
    /// The message joined the tail of `queue`: a requeue, an expiry, a
    /// delayed message coming due, a dead-letter move, a redrive.
    Ready {
        id: u64,
        queue: String,
        attempts: u32,
        dead_lettered: bool,
    },
    /// The message waits in `queue` until `due_ms` (a delayed requeue).
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
    QueuePut { queue: String, settings: Settings },
    /// `queue` was deleted.
    QueueDeleted { queue: String },
    /// No delivery id below `next_delivery` and no message id below
    /// `next_message` may be handed out after a restart.
    Marks {
        next_delivery: u64,
        next_message: u64,
    },
    /// A message's state, moved forward by reclamation.
    Live(LiveState),
}

const PUBLISH: u8 = 1;
const READY: u8 = 2;
const DELAYED: u8 = 3;
const LEASED: u8 = 4;
const GONE: u8 = 5;
const QUEUE_PUT: u8 = 6;
const QUEUE_DELETED: u8 = 7;
const MARKS: u8 = 8;
const LIVE: u8 = 9;
// The compact forms written since issue 18 (the ones above still decode):
// LEB128 varints instead of fixed-width integers, and a batch's ids as
// deltas. A 30-byte message published alone to `q`, delivered once and
// acknowledged took 65 + 21 + 17 = 103 bytes; now 8 + 1 + 2 + 1 + 3 + 1 +
// 1 + 30 = 47 for the publish (each further message of a batch: 3 + body),
// 13 for the delivery and 12 for the acknowledgement (ids of 3 varint
// bytes, below two million): 72.
const PUBLISH_V: u8 = 10;
const LEASED_V: u8 = 11;
const GONE_V: u8 = 12;

/// Appends `value` as a LEB128 varint (7 bits a byte, low first).
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// What [`decode`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A record, and the offset just past it.
    Record(Record, usize),
    /// Exactly at the end of the data.
    End,
    /// Not a whole valid record (short, bad length, bad CRC, bad payload).
    Bad(&'static str),
}

/// Appends `record`'s bytes to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    match record {
        Record::Publish { queue, messages }
            if messages.windows(2).all(|pair| pair[0].id < pair[1].id) =>
        {
            out.push(PUBLISH_V);
            name(out, queue);
            varint(out, messages.len() as u64);
            let mut previous = 0;
            for m in messages {
                varint(out, m.id - previous);
                previous = m.id;
                varint(out, m.due_ms);
                varint(out, m.body.len() as u64);
                out.extend_from_slice(&m.body);
            }
        }
        Record::Publish { queue, messages } => {
            out.push(PUBLISH);
            name(out, queue);
            out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
            for m in messages {
                out.extend_from_slice(&m.id.to_le_bytes());
                out.extend_from_slice(&m.due_ms.to_le_bytes());
                out.extend_from_slice(&(m.body.len() as u32).to_le_bytes());
                out.extend_from_slice(&m.body);
            }
        }
        Record::Ready {
            id,
            queue,
            attempts,
            dead_lettered,
        } => {
            out.push(READY);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&attempts.to_le_bytes());
            out.push(u8::from(*dead_lettered));
            name(out, queue);
        }
        Record::Delayed {
            id,
            queue,
            attempts,
            due_ms,
        } => {
            out.push(DELAYED);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&attempts.to_le_bytes());
            out.extend_from_slice(&due_ms.to_le_bytes());
            name(out, queue);
        }
        Record::Leased { id, attempts } => {
            out.push(LEASED_V);
            varint(out, *id);
            varint(out, u64::from(*attempts));
        }
        Record::Gone { id } => {
            out.push(GONE_V);
            varint(out, *id);
        }
        Record::QueuePut { queue, settings } => {
            out.push(QUEUE_PUT);
            out.extend_from_slice(&settings.ttl_ms.unwrap_or(0).to_le_bytes());
            match settings.max_deliveries {
                Some(max) => {
                    out.push(1);
                    out.extend_from_slice(&max.to_le_bytes());
                }
                None => {
                    out.push(0);
                    out.extend_from_slice(&0u32.to_le_bytes());
                }
            }
            name(out, queue);
        }
        Record::QueueDeleted { queue } => {
            out.push(QUEUE_DELETED);
            name(out, queue);
        }
        Record::Marks {
            next_delivery,
            next_message,
        } => {
            out.push(MARKS);
            out.extend_from_slice(&next_delivery.to_le_bytes());
            out.extend_from_slice(&next_message.to_le_bytes());
        }
        Record::Live(live) => {
            out.push(LIVE);
            out.extend_from_slice(&live.id.to_le_bytes());
            out.extend_from_slice(&live.attempts.to_le_bytes());
            out.push(u8::from(live.dead_lettered));
            out.extend_from_slice(&live.due_ms.to_le_bytes());
            out.extend_from_slice(&live.ready_pos.to_le_bytes());
            name(out, &live.queue);
            out.extend_from_slice(&(live.body.len() as u32).to_le_bytes());
            out.extend_from_slice(&live.body);
        }
    }
    seal(out, start);
}

/// A record encoded ahead of its append ([`crate::Log::append_encoded`]):
/// a publish built from borrowed bodies, so that the caller need not clone
/// its bodies' `Bytes` into a [`Record`] (a clone turns each body's buffer
/// into a shared one: an allocation per message, kept as long as the
/// message lives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded(pub(crate) Vec<u8>);

impl Encoded {
    /// The bytes [`encode`] writes for a `Publish` of `messages` (id, due
    /// time, body) to `queue`.
    pub fn publish<'a>(
        queue: &str,
        messages: impl IntoIterator<Item = (u64, u64, &'a [u8])>,
    ) -> Encoded {
        let messages: Vec<(u64, u64, &[u8])> = messages.into_iter().collect();
        let mut out = Vec::new();
        if !messages.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            // Never from the broker (its ids ascend); the general form.
            let record = Record::Publish {
                queue: queue.to_owned(),
                messages: messages
                    .iter()
                    .map(|&(id, due_ms, body)| Published {
                        id,
                        due_ms,
                        body: Bytes::copy_from_slice(body),
                    })
                    .collect(),
            };
            encode(&record, &mut out);
            return Encoded(out);
        }
        let body_bytes: usize = messages.iter().map(|m| m.2.len() + 12).sum();
        out.reserve(FRAME + 2 + queue.len() + 5 + body_bytes);
        out.extend_from_slice(&[0; FRAME]);
        out.push(PUBLISH_V);
        name(&mut out, queue);
        varint(&mut out, messages.len() as u64);
        let mut previous = 0;
        for (id, due_ms, body) in messages {
            varint(&mut out, id - previous);
            previous = id;
            varint(&mut out, due_ms);
            varint(&mut out, body.len() as u64);
            out.extend_from_slice(body);
        }
        seal(&mut out, 0);
        Encoded(out)
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Whether a record (its bytes after the frame: kind and payload) may go
/// unlogged on a full disk: a delivery, a delay, or a requeue or expiry
/// making a message ready (not a dead-letter move). Forgetting one brings a
/// message back earlier or with fewer attempts counted, which at least
/// once allows; the reserve is kept for acknowledgements.
pub fn may_go_unlogged(body: &[u8]) -> bool {
    match body.first() {
        Some(&LEASED | &LEASED_V | &DELAYED) => true,
        // kind, id u64, attempts u32, then the dead-letter flag.
        Some(&READY) => body.get(1 + 8 + 4) == Some(&0),
        _ => false,
    }
}

/// One entry of a publish record without its body: (id, due time, body
/// length).
pub type Entry = (u64, u64, usize);

/// The queue and the entries (id, due time, body length) of a compact
/// publish record, given its kind and payload (`body`); `None` for any
/// other record. For the writer's replay, which needs no bodies: building
/// the [`Record`] would take a reference on the batch's buffer per body
/// and drop it again.
pub fn publish_entries(body: &[u8]) -> Option<(&str, Vec<Entry>)> {
    if body.first() != Some(&PUBLISH_V) {
        return None;
    }
    let mut at = 1;
    let byte = |at: &mut usize| -> Option<u8> {
        let b = *body.get(*at)?;
        *at += 1;
        Some(b)
    };
    let varint = |at: &mut usize| -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = byte(at)?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    let name_len = byte(&mut at)? as usize;
    let queue = std::str::from_utf8(body.get(at..at + name_len)?).ok()?;
    at += name_len;
    let count = usize::try_from(varint(&mut at)?).ok()?;
    let mut entries = Vec::with_capacity(count.min(body.len() / 3));
    let mut id = 0u64;
    for _ in 0..count {
        id = id.checked_add(varint(&mut at)?)?;
        let due = varint(&mut at)?;
        let len = usize::try_from(varint(&mut at)?).ok()?;
        at = at.checked_add(len).filter(|end| *end <= body.len())?;
        entries.push((id, due, len));
    }
    Some((queue, entries))
}

/// Fills in the frame of the record that starts at `start` and runs to the
/// end of `out`.
fn seal(out: &mut [u8], start: usize) {
    let body = &out[start + FRAME..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c_append(SEED, body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn name(out: &mut Vec<u8>, queue: &str) {
    let bytes = &queue.as_bytes()[..queue.len().min(MAX_NAME)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Decodes the record at `at` in `data`. Bodies are slices of `data` (no
/// copy).
pub fn decode(data: &Bytes, at: usize) -> Decoded {
    decode_checked(data, at, true)
}

/// As [`decode`], without the checksum: for bytes this process encoded
/// itself and still holds in memory (the writer's replay of what it just
/// wrote), where the CRC could only confirm what `encode` computed.
pub fn decode_written(data: &Bytes, at: usize) -> Decoded {
    decode_checked(data, at, false)
}

fn decode_checked(data: &Bytes, at: usize, verify: bool) -> Decoded {
    if at == data.len() {
        return Decoded::End;
    }
    let Some(frame) = data.get(at..at + FRAME) else {
        return Decoded::Bad("short frame");
    };
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len == 0 {
        return Decoded::Bad("zero length");
    }
    let start = at + FRAME;
    let Some(end) = start.checked_add(len).filter(|end| *end <= data.len()) else {
        return Decoded::Bad("length past the end");
    };
    if verify && crc32c::crc32c_append(SEED, &data[start..end]) != crc {
        return Decoded::Bad("checksum mismatch");
    }
    let mut reader = Reader {
        data,
        at: start + 1,
        end,
    };
    let record = match data[start] {
        PUBLISH => reader.publish(),
        READY => (|| {
            Some(Record::Ready {
                id: reader.u64()?,
                attempts: reader.u32()?,
                dead_lettered: reader.u8()? != 0,
                queue: reader.name()?,
            })
        })(),
        DELAYED => (|| {
            Some(Record::Delayed {
                id: reader.u64()?,
                attempts: reader.u32()?,
                due_ms: reader.u64()?,
                queue: reader.name()?,
            })
        })(),
        LEASED => (|| {
            Some(Record::Leased {
                id: reader.u64()?,
                attempts: reader.u32()?,
            })
        })(),
        GONE => reader.u64().map(|id| Record::Gone { id }),
        PUBLISH_V => reader.publish_compact(),
        LEASED_V => (|| {
            Some(Record::Leased {
                id: reader.varint()?,
                attempts: u32::try_from(reader.varint()?).ok()?,
            })
        })(),
        GONE_V => reader.varint().map(|id| Record::Gone { id }),
        QUEUE_PUT => (|| {
            let ttl = reader.u64()?;
            let has_max = reader.u8()?;
            let max = reader.u32()?;
            Some(Record::QueuePut {
                settings: Settings {
                    ttl_ms: (ttl != 0).then_some(ttl),
                    max_deliveries: (has_max != 0).then_some(max),
                },
                queue: reader.name()?,
            })
        })(),
        QUEUE_DELETED => reader.name().map(|queue| Record::QueueDeleted { queue }),
        MARKS => (|| {
            Some(Record::Marks {
                next_delivery: reader.u64()?,
                next_message: reader.u64()?,
            })
        })(),
        LIVE => (|| {
            Some(Record::Live(LiveState {
                id: reader.u64()?,
                attempts: reader.u32()?,
                dead_lettered: reader.u8()? != 0,
                due_ms: reader.u64()?,
                ready_pos: reader.u64()?,
                queue: reader.name()?,
                body: reader.body()?,
            }))
        })(),
        _ => None,
    };
    match record {
        Some(record) if reader.at == end => Decoded::Record(record, end),
        Some(_) => Decoded::Bad("trailing bytes in record"),
        None => Decoded::Bad("malformed payload"),
    }
}

struct Reader<'a> {
    data: &'a Bytes,
    at: usize,
    end: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.end)?;
        let slice = &self.data[self.at..end];
        self.at = end;
        Some(slice)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut raw = [0; 8];
        raw.copy_from_slice(b);
        Some(u64::from_le_bytes(raw))
    }

    fn name(&mut self) -> Option<String> {
        let len = self.u8()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }

    fn body(&mut self) -> Option<Bytes> {
        let len = self.u32()? as usize;
        let start = self.at;
        self.take(len)?;
        Some(self.data.slice(start..start + len))
    }

    /// A LEB128 varint of at most 10 bytes that fits a u64.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn publish_compact(&mut self) -> Option<Record> {
        let queue = self.name()?;
        let count = usize::try_from(self.varint()?).ok()?;
        // Each entry is at least 3 bytes: a count past what remains is a
        // corrupt record, not an allocation to attempt.
        if count > (self.end - self.at) / 3 {
            return None;
        }
        let mut messages = Vec::with_capacity(count);
        let mut previous = 0u64;
        for _ in 0..count {
            let id = previous.checked_add(self.varint()?)?;
            previous = id;
            let due_ms = self.varint()?;
            let len = usize::try_from(self.varint()?).ok()?;
            let start = self.at;
            self.take(len)?;
            messages.push(Published {
                id,
                due_ms,
                body: self.data.slice(start..start + len),
            });
        }
        Some(Record::Publish { queue, messages })
    }

    fn publish(&mut self) -> Option<Record> {
        let queue = self.name()?;
        let count = self.u32()? as usize;
        // Each entry is at least 20 bytes: a count past what remains is a
        // corrupt record, not an allocation to attempt.
        if count > (self.end - self.at) / 20 {
            return None;
        }
        let mut messages = Vec::with_capacity(count);
        for _ in 0..count {
            messages.push(Published {
                id: self.u64()?,
                due_ms: self.u64()?,
                body: self.body()?,
            });
        }
        Some(Record::Publish { queue, messages })
    }
}

/// Bytes the record of a message's whole state takes: what reclamation
/// counts as live.
pub fn live_size(queue_len: usize, body_len: usize) -> u64 {
    (FRAME + 1 + 8 + 4 + 1 + 8 + 8 + 1 + queue_len + 4 + body_len) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_encoded_from_borrowed_bodies_is_the_records_bytes() {
        for ids in [vec![7u64, 8, 9], vec![1_000_000], vec![9, 3, 200], vec![]] {
            let messages: Vec<Published> = ids
                .iter()
                .map(|&id| Published {
                    id,
                    due_ms: id * 3 % 5,
                    body: Bytes::from(format!("body {id}").repeat(id as usize % 4)),
                })
                .collect();
            let borrowed = messages.iter().map(|m| (m.id, m.due_ms, &m.body[..]));
            let encoded = Encoded::publish("q.a", borrowed);
            let mut expected = Vec::new();
            encode(
                &Record::Publish {
                    queue: "q.a".into(),
                    messages: messages.clone(),
                },
                &mut expected,
            );
            assert_eq!(encoded.bytes(), &expected[..], "ids {ids:?}");
        }
    }

    pub(crate) fn samples() -> Vec<Record> {
        vec![
            Record::Publish {
                queue: "jobs".into(),
                messages: vec![
                    Published {
                        id: 7,
                        due_ms: 0,
                        body: Bytes::from_static(b"hello"),
                    },
                    Published {
                        id: 8,
                        due_ms: 99,
                        body: Bytes::new(),
                    },
                ],
            },
            Record::Ready {
                id: 7,
                queue: "jobs.dead".into(),
                attempts: 0,
                dead_lettered: true,
            },
            Record::Delayed {
                id: 8,
                queue: "jobs".into(),
                attempts: 3,
                due_ms: 1234,
            },
            Record::Leased { id: 7, attempts: 2 },
            Record::Gone { id: 7 },
            Record::QueuePut {
                queue: "q".into(),
                settings: Settings {
                    ttl_ms: Some(5),
                    max_deliveries: Some(0),
                },
            },
            Record::QueuePut {
                queue: "q".into(),
                settings: Settings::default(),
            },
            Record::QueueDeleted { queue: "q".into() },
            Record::Marks {
                next_delivery: 1 << 40,
                next_message: 3,
            },
            Record::Live(LiveState {
                id: 9,
                queue: "a".into(),
                attempts: 1,
                dead_lettered: false,
                due_ms: 0,
                ready_pos: 77,
                body: Bytes::from_static(b"x"),
            }),
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for record in samples() {
            let mut out = Vec::new();
            encode(&record, &mut out);
            let len = out.len();
            let data = Bytes::from(out);
            assert_eq!(decode(&data, 0), Decoded::Record(record, len));
            assert_eq!(decode(&data, len), Decoded::End);
        }
    }

    #[test]
    fn zeros_flips_and_truncations_never_decode() {
        let zeros = Bytes::from(vec![0u8; 64]);
        assert!(matches!(decode(&zeros, 0), Decoded::Bad(_)));
        for record in samples() {
            let mut out = Vec::new();
            encode(&record, &mut out);
            for cut in 1..out.len() {
                let data = Bytes::copy_from_slice(&out[..cut]);
                assert!(
                    matches!(decode(&data, 0), Decoded::Bad(_)),
                    "{record:?} cut {cut}"
                );
            }
            for at in 0..out.len() {
                for bit in 0..8 {
                    let mut flipped = out.clone();
                    flipped[at] ^= 1 << bit;
                    let data = Bytes::from(flipped);
                    assert!(
                        !matches!(decode(&data, 0), Decoded::Record(ref r, _) if *r == record),
                        "{record:?} flip {at}/{bit}"
                    );
                }
            }
        }
    }

    /// The old fixed-width forms, as written before the compact ones.
    fn legacy(kind: u8, payload: &[u8]) -> Bytes {
        let mut out = vec![0; FRAME];
        out.push(kind);
        out.extend_from_slice(payload);
        seal(&mut out, 0);
        Bytes::from(out)
    }

    #[test]
    fn records_written_before_the_compact_forms_still_decode() {
        let mut publish = vec![1, b'q'];
        publish.extend_from_slice(&1u32.to_le_bytes());
        publish.extend_from_slice(&7u64.to_le_bytes());
        publish.extend_from_slice(&0u64.to_le_bytes());
        publish.extend_from_slice(&2u32.to_le_bytes());
        publish.extend_from_slice(b"hi");
        let bytes = legacy(PUBLISH, &publish);
        let Decoded::Record(record, _) = decode(&bytes, 0) else {
            panic!("legacy publish")
        };
        assert_eq!(
            record,
            Record::Publish {
                queue: "q".into(),
                messages: vec![Published {
                    id: 7,
                    due_ms: 0,
                    body: Bytes::from_static(b"hi")
                }]
            }
        );
        let mut leased = 9u64.to_le_bytes().to_vec();
        leased.extend_from_slice(&3u32.to_le_bytes());
        let bytes = legacy(LEASED, &leased);
        assert!(matches!(
            decode(&bytes, 0),
            Decoded::Record(Record::Leased { id: 9, attempts: 3 }, _)
        ));
        let bytes = legacy(GONE, &9u64.to_le_bytes());
        assert!(matches!(
            decode(&bytes, 0),
            Decoded::Record(Record::Gone { id: 9 }, _)
        ));
    }

    #[test]
    fn what_a_message_costs_on_disk() {
        let len = |record: &Record| {
            let mut out = Vec::new();
            encode(record, &mut out);
            out.len()
        };
        let id = 1_000_000;
        let one = |id| Published {
            id,
            due_ms: 0,
            body: Bytes::from(vec![b'x'; 30]),
        };
        let alone = len(&Record::Publish {
            queue: "q".into(),
            messages: vec![one(id)],
        });
        let batch = len(&Record::Publish {
            queue: "q".into(),
            messages: (id..id + 100).map(one).collect(),
        });
        let leased = len(&Record::Leased { id, attempts: 1 });
        let gone = len(&Record::Gone { id });
        assert_eq!((alone, leased, gone), (47, 13, 12));
        // 33 bytes a message in a batch of 100: 30 of body, 3 of id delta,
        // due time and length.
        assert_eq!(batch, 8 + 1 + 2 + 1 + 3 + 1 + 1 + 30 + 99 * 33);
        // Ids out of order fall back to the fixed-width form, and still
        // round-trip.
        let record = Record::Publish {
            queue: "q".into(),
            messages: vec![one(5), one(4)],
        };
        let mut out = Vec::new();
        encode(&record, &mut out);
        assert_eq!(out[FRAME], PUBLISH);
        assert_eq!(
            decode(&Bytes::from(out.clone()), 0),
            Decoded::Record(record, out.len())
        );
    }

    #[test]
    fn publish_entries_agree_with_decode() {
        for record in samples() {
            let mut out = Vec::new();
            encode(&record, &mut out);
            let entries = publish_entries(&out[FRAME..]);
            match (&record, out[FRAME]) {
                (Record::Publish { queue, messages }, PUBLISH_V) => {
                    let (q, entries) = entries.expect("a compact publish");
                    assert_eq!(q, queue);
                    let expected: Vec<_> = messages
                        .iter()
                        .map(|m| (m.id, m.due_ms, m.body.len()))
                        .collect();
                    assert_eq!(entries, expected);
                }
                _ => assert!(entries.is_none(), "{record:?}"),
            }
        }
        // Cut anywhere, it never reads past the end.
        let mut out = Vec::new();
        encode(&samples().remove(0), &mut out);
        for end in FRAME..out.len() {
            let _ = publish_entries(&out[FRAME..end]);
        }
    }
}
