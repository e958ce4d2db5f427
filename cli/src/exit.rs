//! [`Failure`]: every way a command fails, and the exit status each one
//! maps to. The table is the CLI's contract with scripts: it is printed in
//! `--help` ([`EXIT_STATUS_HELP`]) and in docs/api.md, and a test checks
//! that the two agree with [`Failure::status`].

use std::fmt;

use ubroker_client::{Code, Error};

/// One line per exit status, for `--help` and the docs.
pub const EXIT_STATUS_HELP: &str = "\
Exit status (the error's code is printed on standard error as `error[CODE]: message`):
  0   success
  1   any other failure (code `internal` or a code this CLI does not know)
  2   bad usage or argument (code `usage`)
  3   the broker could not be reached, or the answer was lost (code `unreachable`)
  4   the broker's answer could not be read (code `bad_answer`)
  5   reading standard input, writing standard output or running --exec failed (code `io`)
  10  invalid_request      11  invalid_id          12  invalid_queue_name
  13  not_found            14  method_not_allowed  15  unauthorized
  16  body_too_large       17  headers_too_large   18  timeout
  19  queue_full           20  too_many_queues     21  too_many_connections
  22  shutting_down        23  log_failed          24  disk_full
  25  unavailable          26  not_leader          27  ids_exhausted";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The broker answered with an error (or the client gave up on it).
    #[error("{0}")]
    Client(#[from] Error),
    /// A bad argument found before anything was sent.
    #[error("{0}")]
    Usage(String),
    /// Standard input or output, or a `--exec` command, failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Failure {
    /// The code printed on standard error: the server's, or one of the
    /// CLI's own for failures that have no answer from the server.
    pub fn code(&self) -> String {
        match self {
            Failure::Client(Error::Api(api)) => api.code.as_str().to_owned(),
            Failure::Client(Error::Transport { .. }) => "unreachable".into(),
            Failure::Client(Error::Decode { .. }) => "bad_answer".into(),
            Failure::Client(Error::InvalidArgument(_)) | Failure::Usage(_) => "usage".into(),
            Failure::Io(_) => "io".into(),
        }
    }

    /// The exit status (see [`EXIT_STATUS_HELP`]).
    pub fn status(&self) -> u8 {
        match self {
            Failure::Client(Error::Api(api)) => status_of(&api.code),
            Failure::Client(Error::Transport { .. }) => 3,
            Failure::Client(Error::Decode { .. }) => 4,
            Failure::Client(Error::InvalidArgument(_)) | Failure::Usage(_) => 2,
            Failure::Io(_) => 5,
        }
    }
}

/// The exit status of a server error code.
pub fn status_of(code: &Code) -> u8 {
    match code {
        Code::InvalidRequest => 10,
        Code::InvalidId => 11,
        Code::InvalidQueueName => 12,
        Code::NotFound => 13,
        Code::MethodNotAllowed => 14,
        Code::Unauthorized => 15,
        Code::BodyTooLarge => 16,
        Code::HeadersTooLarge => 17,
        Code::Timeout => 18,
        Code::QueueFull => 19,
        Code::TooManyQueues => 20,
        Code::TooManyConnections => 21,
        Code::ShuttingDown => 22,
        Code::LogFailed => 23,
        Code::DiskFull => 24,
        Code::Unavailable => 25,
        Code::NotLeader { .. } => 26,
        Code::IdsExhausted => 27,
        Code::Internal | Code::Other(_) => 1,
    }
}

/// `error[CODE]: message`, as printed on standard error.
pub struct Report<'a>(pub &'a Failure);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = match self.0 {
            Failure::Client(Error::Api(api)) => format!("{} ({})", api.message, api.status),
            other => other.to_string(),
        };
        write!(f, "error[{}]: {message}", self.0.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code in the help text has the status `status_of` gives it,
    /// and no two codes share one.
    #[test]
    fn the_help_table_is_the_mapping() {
        let mut seen = std::collections::BTreeSet::new();
        let table: Vec<&str> = EXIT_STATUS_HELP
            .lines()
            .skip(7)
            .flat_map(str::split_whitespace)
            .collect();
        for pair in table.chunks(2) {
            let (status, code) = (pair[0].parse::<u8>().unwrap(), pair[1]);
            assert_eq!(status_of(&Code::parse(code)), status, "{code}");
            assert!(seen.insert(status), "{status} twice");
        }
        assert_eq!(seen.len(), 18);
        assert_eq!(status_of(&Code::parse("something_new")), 1);
    }
}
