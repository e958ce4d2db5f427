//! [`Storage`]: the few file operations the log needs, so that tests can
//! swap the real directory ([`FsStorage`]) for a disk that loses, tears and
//! corrupts what was not synced (`FaultyStorage`).
//!
//! A segment file is only ever appended to, synced, truncated (at recovery)
//! and removed whole (reclamation).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A directory of log files.
pub trait Storage: Send + 'static {
    type File: StorageFile;

    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// A file's whole content.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Creates `name` empty (it must not exist), for appending.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Cuts `name` to `len` bytes and makes that durable.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Removes `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations and removals in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Makes the directory's reserve file hold `len` allocated bytes
    /// (grown with `posix_fallocate`, so the space is really taken; shrunk
    /// to give it back). `ENOSPC` if the disk cannot give that much.
    fn reserve(&self, len: u64) -> io::Result<()>;
    /// What the reserve file holds now (0 if there is none): a log opened
    /// on a full disk lives on what the last run reserved.
    fn reserve_len(&self) -> io::Result<u64>;
}

/// The name of the reserve file: room kept for acknowledgement records.
pub const RESERVE_FILE: &str = "reserve";

/// A file open for appending.
pub trait StorageFile: Send + 'static {
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Cuts the file back to `len` bytes (undoing a partial append).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// `fdatasync`: everything appended so far is durable once this
    /// returns `Ok`.
    fn sync(&mut self) -> io::Result<()>;
}

/// A real directory.
pub struct FsStorage {
    dir: PathBuf,
}

impl FsStorage {
    /// The directory `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(FsStorage { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for FsStorage {
    type File = File;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        File::open(self.dir.join(name))?.read_to_end(&mut data)?;
        Ok(data)
    }

    fn create(&self, name: &str) -> io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(self.dir.join(name))
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.dir.join(name))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn reserve_len(&self) -> io::Result<u64> {
        match std::fs::metadata(self.dir.join(RESERVE_FILE)) {
            Ok(meta) => Ok(meta.len()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(error) => Err(error),
        }
    }

    fn reserve(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(RESERVE_FILE))?;
        let current = file.metadata()?.len();
        if len <= current {
            return file.set_len(len);
        }
        let (Ok(offset), Ok(extra)) = (
            libc::off_t::try_from(current),
            libc::off_t::try_from(len - current),
        ) else {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        };
        // SAFETY: posix_fallocate takes a descriptor we own for the call and
        // no pointers.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, extra) } {
            0 => Ok(()),
            errno => {
                let _ = file.set_len(current);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

impl StorageFile for File {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

/// An exclusive `flock` on `DIR/lock`, held for the life of the process
/// that owns the log: a second broker on the same directory is refused.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock, or fails at once with [`io::ErrorKind::WouldBlock`]
    /// if another process holds it.
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        // SAFETY: flock takes a descriptor we own for the call's duration
        // and no pointers.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another ubroker process (flock on {})",
                        dir.display(),
                        dir.join("lock").display()
                    ),
                ));
            }
            return Err(error);
        }
        Ok(DirLock { _file: file })
    }
}
