//! The open-file limit: raised as far as the hard limit allows at start,
//! and the connection cap kept under it.
//!
//! Every connection holds a descriptor. With `--max-connections` above what
//! the limit allows, `accept` fails with `EMFILE` while the cap still admits
//! more, and the clients past that point wait in the listen backlog with no
//! answer. Capped below the limit, they get the JSON `503` instead, and
//! accepting never runs dry for long.

/// Descriptors kept back from connections: stdio, the listener, the
/// runtime's epoll and wakers, the signal pipe, and refusals being written.
pub const RESERVED: u64 = 32;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as most servers do,
/// and returns the soft limit now in force (`None`: unknown or unlimited).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn raise_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Elsewhere the limit is left as it is, and not known.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn raise_limit() -> Option<u64> {
    None
}

/// The most connections that `limit` open files leave room for.
pub fn connection_cap(limit: u64) -> u64 {
    limit.saturating_sub(RESERVED).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_a_reserve() {
        assert_eq!(connection_cap(1_024), 992);
        assert_eq!(connection_cap(64), 32);
        assert_eq!(connection_cap(10), 1);
    }
}
