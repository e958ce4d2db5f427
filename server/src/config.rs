//! [`Config`]: every command-line flag (each also read from an environment
//! variable), and how it turns into engine and server settings.
//!
//! Times are milliseconds, as in the original ubroker. This module validates
//! ranges at parse time, so a bad flag is a usage error, never a panic later.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// ubroker: an at-least-once HTTP work queue.
#[derive(Debug, Clone, Parser)]
#[command(name = "ubroker", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "UBROKER_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "UBROKER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Lease time-to-live in ms: a fetched message not acknowledged or
    /// requeued within it returns to the queue.
    #[arg(long, env = "UBROKER_TTL", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: u64,

    /// How long GET /fetch waits for a message by default, in ms.
    #[arg(long, env = "UBROKER_FETCH_TIMEOUT", default_value_t = 1_000)]
    pub fetch_timeout: u64,

    /// Upper bound in ms for GET /fetch?wait=.
    #[arg(long, env = "UBROKER_MAX_FETCH_WAIT", default_value_t = 30_000)]
    pub max_fetch_wait: u64,

    /// Largest accepted POST /publish request body, in bytes (413 beyond).
    #[arg(long, env = "UBROKER_MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_bytes: u64,

    /// Most body bytes held at once, ready plus in flight (429 beyond).
    #[arg(long, env = "UBROKER_MAX_QUEUE_BYTES", default_value_t = 1 << 30)]
    pub max_queue_bytes: u64,

    /// How long shutdown waits for requests in flight, in ms.
    #[arg(long, env = "UBROKER_SHUTDOWN_TIMEOUT", default_value_t = 5_000)]
    pub shutdown_timeout: u64,

    /// Largest request head (request line plus headers), in bytes (431 beyond).
    #[arg(long, env = "UBROKER_MAX_HEADER_BYTES", default_value_t = 16_384,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub max_header_bytes: u64,

    /// A request head, and a publish body, must arrive within this many ms
    /// of its first byte; slower connections are closed (slowloris).
    #[arg(long, env = "UBROKER_HEADER_READ_TIMEOUT", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,

    /// Keep-alive connections with no request for this many ms are closed.
    #[arg(long, env = "UBROKER_IDLE_TIMEOUT", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,

    /// Most concurrent connections; further ones get 503 and are closed.
    #[arg(long, env = "UBROKER_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// When set, every request needs `Authorization: Bearer <token>`.
    #[arg(long, env = "UBROKER_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Most queues besides `default` (a queue and its `.dead` queue count
    /// as one); a publish or PUT that would create one more gets 429.
    #[arg(long, env = "UBROKER_MAX_QUEUES", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub max_queues: u64,

    /// `max_deliveries` of a new queue: a message is delivered at most this
    /// many times before it moves to `<queue>.dead` (0: unlimited).
    #[arg(long, env = "UBROKER_MAX_DELIVERIES", default_value_t = 0)]
    pub max_deliveries: u32,

    /// Largest lease TTL in ms that `PUT /queues/{queue}` and `touch?ttl=`
    /// accept.
    #[arg(long, env = "UBROKER_MAX_TTL", default_value_t = 43_200_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_ttl: u64,

    /// Largest `?delay=` in ms on publish and requeue.
    #[arg(long, env = "UBROKER_MAX_DELAY", default_value_t = 86_400_000)]
    pub max_delay: u64,

    /// On SIGTERM, first answer `GET /health` with 503 for this many ms while
    /// serving everything else as usual (so a load balancer stops sending),
    /// then shut down.
    #[arg(long, env = "UBROKER_DRAIN_MS", default_value_t = 0)]
    pub drain_ms: u64,

    /// Most entries in one batch request (a batch publish's messages, a
    /// batch settle's ids, a fetch's `?max=`); more, or none, is a 400.
    #[arg(long, env = "UBROKER_MAX_BATCH", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_batch: u64,

    /// Keep the broker's state in a write-ahead log under this directory
    /// (created if missing; one broker per directory). Without it the
    /// broker runs in memory.
    #[arg(long, env = "UBROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir: `always` answers a publish only once its record is
    /// on disk (fsync, shared by concurrent publishes); `interval` syncs
    /// every --fsync-interval-ms; `never` leaves it to the OS.
    #[arg(long, env = "UBROKER_FSYNC", default_value = "always",
          value_parser = ["always", "interval", "never"])]
    pub fsync: String,

    /// The sync period of `--fsync interval`, and how long deliveries and
    /// acknowledgements may wait for a sync under `always`, in ms.
    #[arg(long, env = "UBROKER_FSYNC_INTERVAL_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub fsync_interval_ms: u64,

    /// Size of a log segment in bytes.
    #[arg(long, env = "UBROKER_SEGMENT_BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(4096..=(1 << 30)))]
    pub segment_bytes: u64,

    /// At start-up, cut a corrupt log at its first bad record (dropping
    /// everything after it, logged) instead of refusing to start.
    #[arg(long, env = "UBROKER_TRUNCATE_CORRUPT_LOG")]
    pub truncate_corrupt_log: bool,

    /// Replication (SPEC "Replication, step 2"): keep every partition on
    /// this many nodes with Raft. Only 3 is accepted; needs --data-dir,
    /// --node, --raft-listen and --raft-peers.
    #[arg(long, env = "UBROKER_REPLICAS")]
    pub replicas: Option<u64>,

    /// This node's global index (0-based), the `"leader"` of answers.
    #[arg(long, env = "UBROKER_NODE")]
    pub node: Option<u64>,

    /// Where this node's Raft RPC server listens (a second port).
    #[arg(long, env = "UBROKER_RAFT_LISTEN")]
    pub raft_listen: Option<std::net::SocketAddr>,

    /// The group's three members, this node included:
    /// `3=127.0.0.1:7104,4=127.0.0.1:7105,5=127.0.0.1:7106`.
    #[arg(long, env = "UBROKER_RAFT_PEERS")]
    pub raft_peers: Option<String>,

    /// Initialise the group's membership if the data dir holds no Raft
    /// state (the first start of a new group, on one node only).
    #[arg(long, env = "UBROKER_RAFT_BOOTSTRAP")]
    pub raft_bootstrap: bool,

    /// The Raft election timeout in ms; heartbeats every third of it.
    #[arg(long, env = "UBROKER_ELECTION_TIMEOUT_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(150..=1000))]
    pub election_timeout_ms: u64,
}

impl Config {
    /// The defaults, as if no flag or variable were given, on `port`.
    ///
    /// Ignores the environment, so tests are not affected by `UBROKER_*`.
    pub fn for_port(port: u16) -> Self {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port,
            ttl: 20_000,
            fetch_timeout: 1_000,
            max_fetch_wait: 30_000,
            max_body_bytes: 1_048_576,
            max_queue_bytes: 1 << 30,
            shutdown_timeout: 5_000,
            max_header_bytes: 16_384,
            header_read_timeout: 10_000,
            idle_timeout: 60_000,
            max_connections: 10_000,
            auth_token: None,
            max_queues: 10_000,
            max_deliveries: 0,
            max_ttl: 43_200_000,
            max_delay: 86_400_000,
            drain_ms: 0,
            max_batch: 1_000,
            data_dir: None,
            fsync: "always".to_owned(),
            fsync_interval_ms: 100,
            segment_bytes: 16 << 20,
            truncate_corrupt_log: false,
            replicas: None,
            node: None,
            raft_listen: None,
            raft_peers: None,
            raft_bootstrap: false,
            election_timeout_ms: 500,
        }
    }

    /// The write-ahead log's settings (`--fsync`, `--fsync-interval-ms`,
    /// `--segment-bytes`, `--truncate-corrupt-log`).
    pub fn log_options(&self) -> ubroker_wal::Options {
        ubroker_wal::Options {
            fsync: crate::durability::parse_fsync(&self.fsync)
                .unwrap_or(ubroker_wal::FsyncMode::Always),
            interval: Duration::from_millis(self.fsync_interval_ms),
            segment_bytes: self.segment_bytes,
            truncate_corrupt: self.truncate_corrupt_log,
        }
    }

    /// Checks what clap's per-flag ranges cannot: how flags relate.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl > self.max_ttl {
            return Err(format!(
                "--ttl ({}) must not exceed --max-ttl ({})",
                self.ttl, self.max_ttl
            ));
        }
        crate::replication::validate(self)?;
        Ok(())
    }

    /// The engine's settings.
    pub fn engine(&self) -> ubroker_engine::Config {
        ubroker_engine::Config {
            ttl: Duration::from_millis(self.ttl),
            max_queue_bytes: self.max_queue_bytes,
            max_deliveries: self.max_deliveries,
            max_queues: usize::try_from(self.max_queues).unwrap_or(usize::MAX),
        }
    }

    /// The default fetch wait, already capped by the maximum.
    pub fn default_fetch_wait(&self) -> Duration {
        Duration::from_millis(self.fetch_timeout.min(self.max_fetch_wait))
    }

    /// The cap on `?wait=`.
    pub fn max_fetch_wait(&self) -> Duration {
        Duration::from_millis(self.max_fetch_wait)
    }

    /// The connection timeouts.
    pub fn timeouts(&self) -> crate::connection::Timeouts {
        crate::connection::Timeouts {
            header_read: Duration::from_millis(self.header_read_timeout),
            idle: Duration::from_millis(self.idle_timeout),
        }
    }

    /// How long `/health` answers 503 before shutdown begins.
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }

    /// `--max-batch` as a length.
    pub fn max_batch(&self) -> usize {
        usize::try_from(self.max_batch).unwrap_or(usize::MAX)
    }

    /// `--max-body-bytes` as a length: also the cap on the bodies of one
    /// batch fetch's answer.
    pub fn max_body_len(&self) -> usize {
        usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX)
    }

    /// The shutdown bound.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let parsed = Config::try_parse_from(["ubroker"]).unwrap();
        let defaults = Config::for_port(8080);
        assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn flags_parse_and_bad_values_are_usage_errors() {
        let c = Config::try_parse_from(["ubroker", "--port", "0", "--ttl", "5", "--host", "::1"])
            .unwrap();
        assert_eq!((c.port, c.ttl), (0, 5));
        assert!(c.host.is_ipv6());
        for bad in [
            &["ubroker", "--ttl", "0"][..],
            &["ubroker", "--port", "70000"],
            &["ubroker", "--port", "-1"],
            &["ubroker", "--host", "not-an-ip"],
            &["ubroker", "--max-body-bytes", "0"],
            &["ubroker", "--unknown"],
            &["ubroker", "--max-ttl", "0"],
            &["ubroker", "--max-deliveries", "-1"],
            &["ubroker", "--max-batch", "0"],
            &["ubroker", "--fsync", "sometimes"],
            &["ubroker", "--fsync-interval-ms", "0"],
            &["ubroker", "--segment-bytes", "100"],
        ] {
            assert!(Config::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttl_must_not_exceed_max_ttl() {
        let c = Config::try_parse_from(["ubroker", "--ttl", "10", "--max-ttl", "5"]).unwrap();
        assert!(c.validate().unwrap_err().contains("--max-ttl"));
        assert_eq!(Config::for_port(0).validate(), Ok(()));
    }

    #[test]
    fn fetch_timeout_is_capped_by_the_maximum_wait() {
        let mut c = Config::for_port(0);
        c.fetch_timeout = 50_000;
        assert_eq!(c.default_fetch_wait(), Duration::from_millis(30_000));
    }
}
