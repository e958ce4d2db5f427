//! [`LogStore`]: the Raft log and vote on disk (`DIR/raft/`).
//!
//! The log is a run of segment files `log-{first index}`, each a sequence
//! of frames `[len u32][crc32c u32][bincode entry]` (little-endian; the CRC
//! seeded as the write-ahead log's is, so zeros never pass as a frame). One
//! `append` from openraft, however many entries it carries, is one write
//! and one `fdatasync` before its callback: the group commit. Opening cuts
//! a torn tail (a frame that is short or fails its CRC) of the last segment
//! and refuses corruption anywhere else.
//!
//! The vote, the committed id and the purge point are small files replaced
//! atomically (write, sync, rename, sync the directory). Entries are also
//! kept in memory until purged (after a snapshot), so reads never touch the
//! disk: the snapshot policy bounds how many that is.
//!
//! Why not the write-ahead log's own writer: its bookkeeping (live
//! messages per segment, reclamation) answers a question Raft does not ask
//! (Raft purges a prefix after a snapshot), and it is being rewritten in
//! parallel; this store keeps its framing idea in ~300 lines.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Entry, NodeId, TypeConfig};

const SEED: u32 = 0x7562_726c;
const FRAME: usize = 8;
/// A segment is closed past this size and a new one started.
const SEGMENT_BYTES: u64 = 64 << 20;

/// One open segment: its first index and file.
struct Segment {
    first: u64,
    path: PathBuf,
}

struct Inner {
    dir: PathBuf,
    entries: BTreeMap<u64, Entry>,
    /// Where each entry's frame starts: (segment first index, offset).
    places: BTreeMap<u64, (u64, u64)>,
    segments: Vec<Segment>,
    file: Option<File>,
    file_len: u64,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    /// Reused for each append's frames.
    buf: Vec<u8>,
}

/// The Raft log storage; clones share one store (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(e: impl std::error::Error + 'static) -> io::Error {
    io::Error::other(e.to_string())
}

fn frame(entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = bincode::serialize(entry).map_err(io_err)?;
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("entry over 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c_append(SEED, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Reads frames from `data`: the entries and the offset of each, and where
/// the last whole frame ends.
fn scan(data: &[u8]) -> (Vec<(u64, Entry)>, usize) {
    let mut at = 0;
    let mut out = Vec::new();
    while data.len() - at >= FRAME {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or([0; 4]));
        if len == 0 || data.len() - at - FRAME < len {
            break;
        }
        let payload = &data[at + FRAME..at + FRAME + len];
        if crc32c::crc32c_append(SEED, payload) != crc {
            break;
        }
        match bincode::deserialize::<Entry>(payload) {
            Ok(entry) => out.push((at as u64, entry)),
            Err(_) => break,
        }
        at += FRAME + len;
    }
    (out, at)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("log-{first:020}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `value` to `dir/name` atomically and durably.
fn store<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(&bincode::serialize(value).map_err(io_err)?)?;
    file.sync_data()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn load<T: DeserializeOwned>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    match fs::read(dir.join(name)) {
        Ok(bytes) => bincode::deserialize(&bytes).map(Some).map_err(io_err),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl LogStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let vote = load(dir, "vote")?;
        // Written in place without a sync (see `save_committed`): one that
        // does not decode is as if never written.
        let committed: Option<LogId<NodeId>> = load::<Option<LogId<NodeId>>>(dir, "committed")
            .ok()
            .flatten()
            .flatten();
        let purged: Option<LogId<NodeId>> = load(dir, "purged")?;
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("log-"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        firsts.sort_unstable();
        let mut inner = Inner {
            dir: dir.to_owned(),
            entries: BTreeMap::new(),
            places: BTreeMap::new(),
            segments: Vec::new(),
            file: None,
            file_len: 0,
            vote,
            committed,
            purged,
            buf: Vec::new(),
        };
        let last = firsts.len().saturating_sub(1);
        for (n, first) in firsts.iter().enumerate() {
            let path = segment_path(dir, *first);
            let data = fs::read(&path)?;
            let (found, end) = scan(&data);
            if end < data.len() {
                if n != last {
                    return Err(io::Error::other(format!(
                        "raft log segment {} is corrupt at offset {end}",
                        path.display()
                    )));
                }
                tracing::warn!(
                    segment = %path.display(),
                    cut = data.len() - end,
                    "cutting the raft log's torn tail"
                );
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(end as u64)?;
                file.sync_data()?;
            }
            for (offset, entry) in found {
                let index = entry.log_id.index;
                if purged.is_some_and(|p| index <= p.index) {
                    continue;
                }
                inner.places.insert(index, (*first, offset));
                inner.entries.insert(index, entry);
            }
            inner.segments.push(Segment {
                first: *first,
                path,
            });
            if n == last {
                inner.file_len = end as u64;
            }
        }
        if let Some(segment) = inner.segments.last() {
            inner.file = Some(OpenOptions::new().append(true).open(&segment.path)?);
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it would be a bug in this file; the data
        // behind it is still whole (every change is one assignment).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries held (not yet purged).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segment files on disk.
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }
}

impl Inner {
    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let first = entries[0].log_id.index;
        if self.file.is_none() || self.file_len >= SEGMENT_BYTES {
            let path = segment_path(&self.dir, first);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            sync_dir(&self.dir)?;
            self.segments.push(Segment { first, path });
            self.file = Some(file);
            self.file_len = 0;
        }
        let segment = self.segments.last().map_or(first, |s| s.first);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut places = Vec::with_capacity(entries.len());
        for entry in &entries {
            places.push((entry.log_id.index, self.file_len + buf.len() as u64));
            frame(entry, &mut buf)?;
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no open segment"))?;
        file.write_all(&buf)?;
        file.sync_data()?;
        self.file_len += buf.len() as u64;
        self.buf = buf;
        for (index, offset) in places {
            self.places.insert(index, (segment, offset));
        }
        for entry in entries {
            self.entries.insert(entry.log_id.index, entry);
        }
        Ok(())
    }

    /// Removes entries from `index` on, on disk and in memory.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some(&(segment, offset)) = self.places.get(&index) else {
            return Ok(());
        };
        while self.segments.last().is_some_and(|s| s.first > segment) {
            if let Some(s) = self.segments.pop() {
                fs::remove_file(&s.path)?;
            }
        }
        let path = segment_path(&self.dir, segment);
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(offset)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        self.file = Some(OpenOptions::new().append(true).open(&path)?);
        self.file_len = offset;
        self.entries.split_off(&index);
        self.places.split_off(&index);
        Ok(())
    }

    /// Forgets entries up to `index` and deletes the segments holding only
    /// those.
    fn purge(&mut self, index: u64) -> io::Result<()> {
        self.entries = self.entries.split_off(&(index + 1));
        self.places = self.places.split_off(&(index + 1));
        // A segment can go when the next one starts at or before the first
        // entry kept; the last (open) segment always stays.
        while self.segments.len() > 1 && self.segments[1].first <= index + 1 {
            let s = self.segments.remove(0);
            fs::remove_file(&s.path)?;
        }
        Ok(())
    }
}

fn range_of<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner
            .entries
            .range(range_of(&range))
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        store(&inner.dir, "vote", vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not synced: a lost committed id only means a restarted node
        // re-applies less from its own log and waits for the leader.
        let mut inner = self.lock();
        let tmp = inner.dir.join("committed");
        fs::write(
            &tmp,
            bincode::serialize(&committed).map_err(|e| StorageIOError::write(&io_err(e)))?,
        )
        .map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self.lock().append(entries);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let error = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(error.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.lock()
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        store(&inner.dir, "purged", &log_id).map_err(|e| StorageIOError::write(&e))?;
        inner.purged = Some(log_id);
        inner
            .purge(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::op::Command;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path =
                std::env::temp_dir().join(format!("ubroker-raftlog-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Command::Failover),
        }
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store.lock().entries.keys().copied().collect()
    }

    #[test]
    fn entries_come_back_after_a_reopen_and_a_torn_tail_is_cut() {
        let dir = TempDir::new("reopen");
        let store = LogStore::open(&dir.0).unwrap();
        store.lock().append((1..=3).map(entry).collect()).unwrap();
        store.lock().append(vec![entry(4)]).unwrap();
        drop(store);
        // A torn write: half a frame at the end of the segment.
        let path = segment_path(&dir.0, 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(file);
        let store = LogStore::open(&dir.0).unwrap();
        assert_eq!(indexes(&store), vec![1, 2, 3, 4]);
        // And the next append lands after the cut, readable on reopen.
        store.lock().append(vec![entry(5)]).unwrap();
        drop(store);
        assert_eq!(
            indexes(&LogStore::open(&dir.0).unwrap()),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn truncate_and_purge_survive_a_reopen() {
        let dir = TempDir::new("truncate");
        let store = LogStore::open(&dir.0).unwrap();
        store.lock().append((1..=6).map(entry).collect()).unwrap();
        store.lock().truncate(4).unwrap();
        store.lock().append(vec![entry(4)]).unwrap();
        assert_eq!(indexes(&store), vec![1, 2, 3, 4]);
        drop(store);
        let store = LogStore::open(&dir.0).unwrap();
        assert_eq!(indexes(&store), vec![1, 2, 3, 4]);
        let purged = LogId::new(CommittedLeaderId::new(1, 0), 2);
        super::store(&dir.0, "purged", &purged).unwrap();
        store.lock().purged = Some(purged);
        store.lock().purge(2).unwrap();
        assert_eq!(indexes(&store), vec![3, 4]);
        drop(store);
        let store = LogStore::open(&dir.0).unwrap();
        assert_eq!(indexes(&store), vec![3, 4]);
        assert_eq!(store.lock().purged, Some(purged));
    }

    #[test]
    fn corruption_before_the_last_segment_stops_the_open() {
        let dir = TempDir::new("corrupt");
        let store = LogStore::open(&dir.0).unwrap();
        store.lock().append(vec![entry(1), entry(2)]).unwrap();
        // Force a second segment.
        store.lock().file_len = SEGMENT_BYTES;
        store.lock().append(vec![entry(3)]).unwrap();
        assert_eq!(store.segments(), 2);
        drop(store);
        let first = segment_path(&dir.0, 1);
        let mut bytes = fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&first, bytes).unwrap();
        let error = LogStore::open(&dir.0).err().unwrap();
        assert!(error.to_string().contains("corrupt"), "{error}");
    }

    #[test]
    fn purging_deletes_segments_holding_only_purged_entries() {
        let dir = TempDir::new("segments");
        let store = LogStore::open(&dir.0).unwrap();
        for index in 1..=3 {
            store.lock().file_len = SEGMENT_BYTES;
            store.lock().append(vec![entry(index)]).unwrap();
        }
        assert_eq!(store.segments(), 3);
        store.lock().purge(1).unwrap();
        assert_eq!(store.segments(), 2);
        store.lock().purge(3).unwrap();
        // The open segment stays.
        assert_eq!(store.segments(), 1);
        assert!(store.is_empty());
    }
}
