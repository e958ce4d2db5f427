//! CPU time of a process, from `/proc/PID/task/*/schedstat` (Linux).
//!
//! On a machine shared with other work, requests/s move with whatever else
//! runs, but the CPU time a server spends per request hardly does: with
//! `--pid`, the report adds the target's CPU microseconds per request, the
//! figure to trust when the two targets' rates are noisy. The load
//! generator's own CPU per request is reported too, since on a small
//! machine it competes with the server for the same cores.
//!
//! `schedstat`'s first field is the nanoseconds a thread has run; the sum
//! over the process's threads is its CPU time (threads that have exited
//! are missed: the servers measured keep their worker threads for life).

use std::io;
use std::time::Duration;

/// The CPU time of every live thread of process `pid`, summed.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread can exit between the listing and the read.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let nanos = text
            .split_whitespace()
            .next()
            .and_then(|field| field.parse::<u64>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad schedstat"))?;
        total += nanos;
    }
    Ok(Duration::from_nanos(total))
}

/// CPU time used by the target (`server`) and by this process (`client`)
/// between two samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    pub server: Option<Duration>,
    pub client: Option<Duration>,
}

impl CpuSample {
    /// Samples now; `server` is the target's pid, if known.
    pub fn take(server: Option<u32>) -> CpuSample {
        CpuSample {
            server: server.and_then(|pid| cpu_time(pid).ok()),
            client: cpu_time(std::process::id()).ok(),
        }
    }

    /// The CPU used from `earlier` to `self`.
    pub fn since(self, earlier: CpuSample) -> CpuSample {
        let diff = |now: Option<Duration>, then: Option<Duration>| Some(now?.saturating_sub(then?));
        CpuSample {
            server: diff(self.server, earlier.server),
            client: diff(self.client, earlier.client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_uses_cpu() {
        let before = cpu_time(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_time(std::process::id()).unwrap() > before, "{x}");
    }
}
