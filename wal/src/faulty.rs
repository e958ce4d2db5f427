//! [`FaultyStorage`]: an in-memory disk for tests that does what real disks
//! and kernels may do to a log: a crash keeps what was synced and any prefix
//! of what was not (a write torn at any offset); bytes flip; a write or a
//! sync fails; the disk fills up.
//!
//! Clones share one disk, so a test keeps a handle to crash it while the log
//! owns another.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Storage, StorageFile};

#[derive(Default, Debug)]
struct Contents {
    /// Everything written (what a reader sees now).
    data: Vec<u8>,
    /// How much of `data` is durable.
    synced: usize,
    /// Whether the file's creation is durable (directory synced).
    entry_synced: bool,
}

#[derive(Default, Debug)]
struct Disk {
    files: BTreeMap<String, Contents>,
    /// Removed files whose removal is not durable yet.
    removed: BTreeMap<String, Contents>,
    fail_writes: bool,
    fail_syncs: bool,
    /// Bytes that may still be written (`None`: unlimited).
    space: Option<u64>,
    /// What the reserve file holds.
    reserved: u64,
    syncs: u64,
    /// How long a sync takes, before it makes anything durable.
    sync_delay: std::time::Duration,
}

/// A shared in-memory disk with fault injection.
#[derive(Clone, Default)]
pub struct FaultyStorage {
    disk: Arc<Mutex<Disk>>,
}

impl FaultyStorage {
    pub fn new() -> Self {
        FaultyStorage::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A crash: every file keeps its synced bytes plus the first
    /// `keep(name, unsynced)` of its unsynced ones (a write torn there).
    /// A file whose creation was never made durable by a directory sync
    /// disappears only if none of its bytes were synced either (a
    /// `fdatasync` of a new file makes its entry durable on the common
    /// Linux file systems; this model is no kinder than that).
    pub fn crash(&self, mut keep: impl FnMut(&str, usize) -> usize) {
        let mut disk = self.disk();
        let removed = std::mem::take(&mut disk.removed);
        for (name, contents) in removed {
            // A removal that was not synced may be undone by the crash.
            disk.files.entry(name).or_insert(contents);
        }
        disk.files
            .retain(|_, file| file.entry_synced || file.synced > 0);
        for (name, file) in disk.files.iter_mut() {
            let unsynced = file.data.len() - file.synced;
            let kept = keep(name, unsynced).min(unsynced);
            file.data.truncate(file.synced + kept);
            // What survived a crash is on the disk.
            file.synced = file.data.len();
            file.entry_synced = true;
        }
    }

    /// A copy of this disk as a crash now would leave it (see
    /// [`FaultyStorage::crash`]); this disk is untouched, so a log still
    /// running on it goes on writing into the void.
    pub fn crash_image(&self, keep: impl FnMut(&str, usize) -> usize) -> FaultyStorage {
        let copy = {
            let disk = self.disk();
            let clone = |files: &BTreeMap<String, Contents>| {
                files
                    .iter()
                    .map(|(name, c)| {
                        (
                            name.clone(),
                            Contents {
                                data: c.data.clone(),
                                synced: c.synced,
                                entry_synced: c.entry_synced,
                            },
                        )
                    })
                    .collect()
            };
            Disk {
                files: clone(&disk.files),
                removed: clone(&disk.removed),
                ..Disk::default()
            }
        };
        let image = FaultyStorage {
            disk: Arc::new(Mutex::new(copy)),
        };
        image.crash(keep);
        image
    }

    /// Flips bit `bit` of byte `offset` of `name` (durably: bit rot).
    pub fn flip(&self, name: &str, offset: usize, bit: u8) {
        if let Some(file) = self.disk().files.get_mut(name) {
            if let Some(byte) = file.data.get_mut(offset) {
                *byte ^= 1 << (bit % 8);
            }
        }
    }

    /// From now on, every append fails (`true`) or works again.
    pub fn fail_writes(&self, fail: bool) {
        self.disk().fail_writes = fail;
    }

    /// From now on, every sync fails (`true`) or works again.
    pub fn fail_syncs(&self, fail: bool) {
        self.disk().fail_syncs = fail;
    }

    /// Makes every sync take `delay` (a slow disk widens the window
    /// between a write and its sync, where ordering bugs live).
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.disk().sync_delay = delay;
    }

    /// Leaves room for `bytes` more bytes (`None`: unlimited).
    pub fn set_space(&self, bytes: Option<u64>) {
        self.disk().space = bytes;
    }

    /// The files and their current lengths.
    pub fn files(&self) -> Vec<(String, usize)> {
        self.disk()
            .files
            .iter()
            .map(|(name, file)| (name.clone(), file.data.len()))
            .collect()
    }

    /// Free bytes left (`None`: unlimited).
    pub fn space(&self) -> Option<u64> {
        self.disk().space
    }

    /// What the reserve file holds.
    pub fn reserved(&self) -> u64 {
        self.disk().reserved
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        self.disk().syncs
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

impl Storage for FaultyStorage {
    type File = FaultyFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.disk().files.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.disk()
            .files
            .get(name)
            .map(|file| file.data.clone())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn create(&self, name: &str) -> io::Result<FaultyFile> {
        let mut disk = self.disk();
        if disk.files.contains_key(name) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        disk.removed.remove(name);
        disk.files.insert(name.to_owned(), Contents::default());
        Ok(FaultyFile {
            storage: self.clone(),
            name: name.to_owned(),
        })
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        if disk.fail_syncs {
            return Err(injected("sync"));
        }
        let file = disk
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        file.data.truncate(len);
        file.synced = len;
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.disk();
        let contents = disk
            .files
            .remove(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let freed = contents.data.len() as u64;
        if let Some(space) = disk.space.as_mut() {
            *space += freed;
        }
        disk.removed.insert(name.to_owned(), contents);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.disk();
        if disk.fail_syncs {
            return Err(injected("sync"));
        }
        disk.removed.clear();
        for file in disk.files.values_mut() {
            file.entry_synced = true;
        }
        Ok(())
    }

    fn reserve_len(&self) -> io::Result<u64> {
        Ok(self.disk().reserved)
    }

    fn reserve(&self, len: u64) -> io::Result<()> {
        let mut disk = self.disk();
        let current = disk.reserved;
        if let Some(space) = disk.space {
            if len > current && len - current > space {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            disk.space = Some(space + current - len);
        }
        disk.reserved = len;
        Ok(())
    }
}

/// A file of a [`FaultyStorage`].
pub struct FaultyFile {
    storage: FaultyStorage,
    name: String,
}

impl StorageFile for FaultyFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut disk = self.storage.disk();
        if disk.fail_writes {
            return Err(injected("write"));
        }
        // A write past the free space writes what fits, then fails, as a
        // real `write(2)` loop does.
        let (fits, full) = match disk.space {
            Some(space) if (data.len() as u64) > space => (space as usize, true),
            _ => (data.len(), false),
        };
        if let Some(space) = disk.space.as_mut() {
            *space -= fits as u64;
        }
        let file = disk
            .files
            .get_mut(&self.name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        file.data.extend_from_slice(&data[..fits]);
        if full {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            Ok(())
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut disk = self.storage.disk();
        let Some(file) = disk.files.get_mut(&self.name) else {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        };
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(file.data.len());
        let freed = (file.data.len() - len) as u64;
        file.data.truncate(len);
        file.synced = file.synced.min(len);
        if let Some(space) = disk.space.as_mut() {
            *space += freed;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let delay = self.storage.disk().sync_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut disk = self.storage.disk();
        if disk.fail_syncs {
            return Err(injected("sync"));
        }
        disk.syncs += 1;
        if let Some(file) = disk.files.get_mut(&self.name) {
            file.synced = file.data.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_bytes_and_a_prefix_of_the_rest() {
        let disk = FaultyStorage::new();
        let mut file = disk.create("a").unwrap();
        file.append(b"durable").unwrap();
        file.sync().unwrap();
        file.append(b"lost").unwrap();
        disk.crash(|_, unsynced| {
            assert_eq!(unsynced, 4);
            2
        });
        assert_eq!(disk.read("a").unwrap(), b"durablelo");
    }

    #[test]
    fn unsynced_creations_and_removals_may_be_undone() {
        let disk = FaultyStorage::new();
        disk.create("never-synced").unwrap();
        let mut kept = disk.create("kept").unwrap();
        kept.append(b"x").unwrap();
        kept.sync().unwrap();
        disk.remove("kept").unwrap();
        disk.crash(|_, _| 0);
        assert_eq!(disk.list().unwrap(), vec!["kept".to_owned()]);
    }

    #[test]
    fn injected_failures_and_full_disks_fail_the_call() {
        let disk = FaultyStorage::new();
        let mut file = disk.create("a").unwrap();
        disk.fail_syncs(true);
        assert!(file.sync().is_err());
        disk.fail_syncs(false);
        disk.set_space(Some(3));
        assert_eq!(
            file.append(b"four").unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        assert_eq!(disk.read("a").unwrap(), b"fou", "a partial write");
        file.truncate(0).unwrap();
        file.append(b"abc").unwrap();
        disk.fail_writes(true);
        assert!(file.append(b"").is_err());
    }
}
