//! [`Error`]: every way opening the log fails.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the directory's lock.
    #[error("{0}")]
    Locked(String),
    /// A record that is not at the tail of the log is bad.
    #[error(
        "corrupt log: bad record in {file} at offset {offset} ({reason}), with {later_bytes} \
         bytes in later segments after it; start with --truncate-corrupt-log to drop \
         everything from there on"
    )]
    Corrupt {
        file: String,
        offset: usize,
        reason: &'static str,
        later_bytes: u64,
    },
    /// A segment is missing between two that are there. Reclamation only
    /// ever removes segments from the front, so a gap is damage: the
    /// missing file's records (publishes, acknowledgements) are lost.
    #[error(
        "corrupt log: segment {missing} is missing between {before} and {after} ({later_bytes} \
         bytes in segments after the gap); start with --truncate-corrupt-log to drop everything \
         from the gap on"
    )]
    Gap {
        before: String,
        missing: String,
        after: String,
        later_bytes: u64,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
