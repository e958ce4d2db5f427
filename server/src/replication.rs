//! Replicated mode (`--replicas 3`, SPEC "Replication, step 2"): the
//! node's [`Replica`] (openraft, `ubroker-replica`), the serving loop that
//! runs a leader's broker or a follower's refusals, the engine journal that
//! feeds the Raft log, and the hooks the routes call.
//!
//! # How a node serves
//!
//! [`run`] serves one role at a time on the same listening socket:
//!
//! * **Leader**: it appends the failover entry of its term and waits until
//!   it is applied (`Replica::begin_term`), builds a fresh engine from the
//!   replicated state (every leased message ready with its attempt counted,
//!   ids past the replicated marks, so old delivery ids are unknown: `400`)
//!   and serves it, its journal feeding a [`Proposer`]. It stops serving
//!   (drains, closes that engine) as soon as it is no longer the leader of
//!   that term or a proposal fails.
//! * **Follower** (or candidate): an empty engine; every queue route answers
//!   `503 not_leader` naming the leader it knows; `/health`, `/stats`,
//!   `/metrics`, `/ui` answer locally. Followers run no sweep: expiries are
//!   the leader's changes, replicated as records.
//!
//! # What a majority holds before an answer
//!
//! * A publish is prepared in the engine, its op pushed, and committed into
//!   the engine (visible) and answered `200` only once its entry is
//!   committed; otherwise aborted and answered `503 not_leader`.
//! * A fetch, an acknowledgement, a requeue, a redrive and queue
//!   administration are answered only once every op pushed so far (their
//!   own included) is committed: the fence. A deposed leader cannot commit,
//!   so it hands out no lease and settles no id that a new leader knows.
//! * A fetch's answer waits for the fence in the connection's waiting
//!   phase, its leases held by a [`GiveBack`]: if its client goes away (the
//!   connection drops the request) or the fence fails, they are given back
//!   (ready at the tail, the attempt uncounted) and logged as
//!   [`Op::Undelivered`], so every replica uncounts the attempt too (SPEC:
//!   "an undelivered record gives the message back without counting the
//!   attempt"). An answer the fence let through but the socket then failed
//!   to carry is not noticed: that lease runs to its TTL.
//! * A touch changes nothing logged: it is answered after the leader has
//!   confirmed its leadership with a majority (openraft's read index).
//!
//! # Limits
//!
//! * openraft 0.9 does not depose a leader that is cut off (as opposed to
//!   paused) by itself: its `/health/leader` answers `503` once it cannot
//!   confirm its leadership within the election timeout, so the proxy stops
//!   sending it traffic, but requests already there wait until the cut
//!   heals (then `503 not_leader`) or their client gives up.
//! * A follower's `/stats` and `/metrics` are its own idle engine's.
//! * When a node changes role, the old role's server stops and the next one
//!   starts on the same socket: a connection that has not sent its request
//!   yet is closed without an answer (nothing was done; the client may send
//!   it again). A restarted node can do this at once: openraft first reports
//!   no role, then the leadership its saved vote held, which it then loses
//!   to the current term's leader. Keeping one server whose engine is swapped
//!   at a role change would answer these instead; not done.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use ubroker_engine::{Broker, Clock, Journal, NewMessage, QueueInfo, QueueName};
use ubroker_replica::{NotLeader, Op, Options, Proposer, Replica};

use crate::config::Config;
use crate::durability::due_ms;
use crate::error::ApiError;
use crate::response::{self, Body};
use crate::server::Server;
use crate::timekeeper::TokioClock;

/// Checks the replication flags (part of [`Config::validate`]).
pub fn validate(config: &Config) -> Result<(), String> {
    let Some(replicas) = config.replicas else {
        if config.node.is_some()
            || config.raft_listen.is_some()
            || config.raft_peers.is_some()
            || config.raft_bootstrap
        {
            return Err(
                "--node, --raft-listen, --raft-peers and --raft-bootstrap need --replicas 3".into(),
            );
        }
        return Ok(());
    };
    if replicas != 3 {
        return Err(format!("--replicas must be 3 (got {replicas})"));
    }
    if config.data_dir.is_none() {
        return Err("--replicas 3 needs --data-dir".into());
    }
    let Some(node) = config.node else {
        return Err("--replicas 3 needs --node".into());
    };
    if config.raft_listen.is_none() {
        return Err("--replicas 3 needs --raft-listen".into());
    }
    let peers = parse_peers(config.raft_peers.as_deref().unwrap_or(""))?;
    if peers.len() != 3 {
        return Err(format!(
            "--raft-peers must name 3 members (got {})",
            peers.len()
        ));
    }
    if !peers.contains_key(&node) {
        return Err(format!(
            "--raft-peers must include this node (--node {node})"
        ));
    }
    Ok(())
}

/// Parses `--raft-peers`: `ID=HOST:PORT,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("--raft-peers: {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("--raft-peers: {id:?} is not a node index"))?;
        let addr: std::net::SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("--raft-peers: {addr:?} is not HOST:PORT"))?;
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("--raft-peers: node {id} is named twice"));
        }
    }
    Ok(peers)
}

/// The leader's engine journal: every change becomes an op of the next
/// Raft entry.
struct RaftJournal {
    proposer: Arc<Proposer>,
}

impl Journal for RaftJournal {
    fn ready(&self, queue: &QueueName, id: u64, attempts: u32, dead_lettered: bool) {
        self.proposer.push(Op::Ready {
            id,
            queue: queue.as_str().to_owned(),
            attempts,
            dead_lettered,
        });
    }

    fn delayed(&self, queue: &QueueName, id: u64, attempts: u32, delay: Duration) {
        self.proposer.push(Op::Delayed {
            id,
            queue: queue.as_str().to_owned(),
            attempts,
            due_ms: due_ms(delay),
        });
    }

    fn delivered(&self, id: u64, attempts: u32) {
        self.proposer.push(Op::Leased { id, attempts });
    }

    fn gone(&self, id: u64) {
        self.proposer.push(Op::Gone { id });
    }

    fn undelivered(&self, queue: &QueueName, id: u64, attempts: u32, _dead_lettered: bool) {
        self.proposer.push(Op::Undelivered {
            id,
            queue: queue.as_str().to_owned(),
            attempts,
        });
    }
}

/// The delivery ids a fetch's answer carries, on a replicated node (a
/// response extension the fetch route sets and [`GiveBack`] takes).
#[derive(Debug, Clone)]
pub(crate) struct Leased(pub(crate) Vec<u64>);

/// Holds a fetch's leases while its answer waits for the fence. Dropped
/// armed (the client went away and the connection dropped the request, or
/// the fence failed), it gives them back: ready again with the attempt
/// uncounted, logged as [`Op::Undelivered`] so that every replica uncounts
/// it too. [`GiveBack::answered`] disarms it once the answer is owed.
pub(crate) struct GiveBack<'a, C: Clock> {
    broker: &'a Broker<C>,
    queue: &'a str,
    ids: Vec<u64>,
}

impl<'a, C: Clock> GiveBack<'a, C> {
    pub(crate) fn new(broker: &'a Broker<C>, queue: &'a str, leased: Leased) -> Self {
        GiveBack {
            broker,
            queue,
            ids: leased.0,
        }
    }

    /// The fence passed: the answer goes out, the leases are the client's.
    pub(crate) fn answered(mut self) {
        self.ids.clear();
    }
}

impl<C: Clock> Drop for GiveBack<'_, C> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        // A closed engine (the term ended) gives nothing back: the next
        // leader's failover makes every lease ready again.
        let given = self.broker.queue(self.queue).undeliver_batch(&self.ids);
        tracing::debug!(
            queue = self.queue,
            ids = self.ids.len(),
            given = ?given.map(|r| r.iter().filter(|s| s.is_ok()).count()),
            "a fetch's answer never went out: its leases are given back"
        );
    }
}

/// What the routes of one serving instance reach: the replica, and the
/// proposer of the leader's term this instance serves (none on a
/// follower).
pub struct Replication {
    replica: Arc<Replica>,
    node: u64,
    election_timeout: Duration,
    term: Option<Arc<Proposer>>,
}

impl Replication {
    /// The leader this node knows of, for a `not_leader` answer.
    fn leader(&self) -> Option<u64> {
        self.replica.role().leader_id
    }

    fn not_leader(&self) -> ApiError {
        ApiError::NotLeader {
            leader: self.leader(),
        }
    }

    fn from(&self, error: NotLeader) -> ApiError {
        ApiError::NotLeader {
            leader: error.leader.or_else(|| self.leader()),
        }
    }

    /// The proposer, if this instance serves as leader and has not failed.
    fn serving(&self) -> Result<&Arc<Proposer>, ApiError> {
        match &self.term {
            Some(proposer) if !proposer.failed() => Ok(proposer),
            _ => Err(self.not_leader()),
        }
    }

    /// Refuses a queue route on a node that does not serve as leader.
    pub(crate) fn gate(&self) -> Result<(), ApiError> {
        self.serving().map(|_| ())
    }

    /// Waits until every op pushed so far is committed (a fetch's delivery,
    /// a settlement, administration); for a touch, which logs nothing,
    /// confirms leadership with a majority instead.
    pub(crate) async fn fence(&self, touch: bool) -> Result<(), ApiError> {
        let proposer = self.serving()?;
        if touch {
            return self.replica.confirm().await.map_err(|e| self.from(e));
        }
        proposer
            .wait(proposer.pushed())
            .await
            .map_err(|e| self.from(e))
    }

    /// Publishes through the Raft log: visible and answered once a majority
    /// holds the record; aborted (never visible here) otherwise.
    pub(crate) async fn publish<C: Clock>(
        &self,
        broker: &Arc<Broker<C>>,
        queue: &str,
        entries: Vec<NewMessage>,
    ) -> Result<Range<u64>, ApiError> {
        let proposer = self.serving()?;
        let prepared = broker.prepare_publish(queue, entries)?;
        let op = Op::Publish {
            queue: prepared.queue().to_owned(),
            messages: prepared
                .ids()
                .zip(prepared.entries())
                .map(|(id, entry)| ubroker_replica::NewMessage {
                    id,
                    due_ms: due_ms(entry.delay),
                    body: entry.body.clone(),
                })
                .collect(),
        };
        let seq = proposer.push(op);
        match proposer.wait(seq).await {
            Ok(()) => Ok(broker.commit_publish(prepared)?),
            Err(error) => {
                broker.abort_publish(prepared);
                Err(self.from(error))
            }
        }
    }

    /// Logs a queue's settings after `PUT /queues/{queue}`.
    pub(crate) fn queue_put(&self, info: &QueueInfo) -> Result<(), ApiError> {
        self.serving()?.push(Op::QueuePut {
            queue: info.name.as_str().to_owned(),
            ttl_ms: Some(crate::response::ttl_ms(info.settings.ttl)),
            max_deliveries: Some(info.settings.max_deliveries),
        });
        Ok(())
    }

    /// Logs a queue's deletion.
    pub(crate) fn queue_deleted(&self, queue: &str) -> Result<(), ApiError> {
        self.serving()?.push(Op::QueueDeleted {
            queue: queue.to_owned(),
        });
        Ok(())
    }

    /// `GET /health` (`leader_only`: `GET /health/leader`, which a leader
    /// answers `200` only after confirming with a majority within the
    /// election timeout: a leader cut off from its group, which openraft
    /// does not depose by itself, stops drawing the proxy's traffic).
    pub(crate) async fn health(&self, leader_only: bool) -> Response<Body> {
        let role = self.replica.role();
        let mut leading = role.leader && self.serving().is_ok();
        if leader_only && leading {
            leading = matches!(
                tokio::time::timeout(self.election_timeout, self.replica.confirm()).await,
                Ok(Ok(()))
            );
        }
        let leader = if leading {
            Some(self.node)
        } else {
            role.leader_id
        };
        let status = if leader_only && !leading {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        response::replica_health(status, leading, leader)
    }
}

/// The replica's options from the flags (already validated).
fn options(config: &Config) -> Result<Options, String> {
    let peers = parse_peers(config.raft_peers.as_deref().unwrap_or(""))?;
    let dir: PathBuf = config
        .data_dir
        .clone()
        .ok_or("--replicas 3 needs --data-dir")?;
    let mut options = Options::new(config.node.unwrap_or(0), peers, dir);
    options.bootstrap = config.raft_bootstrap;
    options.election_timeout_ms = config.election_timeout_ms;
    Ok(options)
}

/// Serves a replicated node until `shutdown` completes: see the module
/// docs. Prints `listening on http://ADDR` once both ports are bound.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    trim: fn(),
) -> Result<(), String> {
    let options = options(&config)?;
    let node = options.id;
    if let Some(dir) = &config.data_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create --data-dir {}: {e}", dir.display()))?;
    }
    let _lock = match &config.data_dir {
        Some(dir) => Some(
            ubroker_wal::DirLock::acquire(dir)
                .map_err(|error| format!("cannot lock --data-dir: {error}"))?,
        ),
        None => None,
    };
    let raft_addr = config
        .raft_listen
        .ok_or("--replicas 3 needs --raft-listen")?;
    let raft_listener = TcpListener::bind(raft_addr)
        .await
        .map_err(|e| format!("cannot listen on --raft-listen {raft_addr}: {e}"))?;
    let std_listener = std::net::TcpListener::bind((config.host, config.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set the listener non-blocking: {e}"))?;
    let address = std_listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let replica = Arc::new(
        Replica::start(options, raft_listener)
            .await
            .map_err(|e| e.to_string())?,
    );
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on http://{address}");
        let _ = stdout.flush();
    }
    tracing::info!(%address, node, raft = %raft_addr, "ubroker started, replicated");

    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let result = serve_roles(&config, &replica, &std_listener, node, stop, trim).await;
    match Arc::try_unwrap(replica) {
        Ok(replica) => replica.shutdown().await,
        Err(replica) => {
            let _ = replica.raft().shutdown().await;
        }
    }
    result
}

async fn serve_roles(
    config: &Config,
    replica: &Arc<Replica>,
    listener: &std::net::TcpListener,
    node: u64,
    mut stop: watch::Receiver<bool>,
    trim: fn(),
) -> Result<(), String> {
    let mut roles = replica.roles();
    while !*stop.borrow() {
        let role = replica.role();
        let tokio_listener = TcpListener::from_std(
            listener
                .try_clone()
                .map_err(|e| format!("cannot share the listener: {e}"))?,
        )
        .map_err(|e| format!("cannot share the listener: {e}"))?;
        if role.leader {
            let term = role.term;
            let began = tokio::select! {
                began = replica.begin_term() => began,
                // Deposed before the failover entry committed.
                _ = roles.wait_for(|m| {
                    let r = ubroker_replica::role_of(m);
                    !r.leader || r.term != term
                }) => Err(NotLeader { leader: None }),
                _ = stop.wait_for(|s| *s) => break,
            };
            let recovered = match began {
                Ok(recovered) => recovered,
                Err(_) => {
                    // Lost the term before its first entry committed: serve
                    // as a follower until the next change.
                    tracing::info!(
                        term = role.term,
                        "lost the leadership before the term began"
                    );
                    let lost = role.term;
                    serve_follower(
                        config,
                        replica,
                        tokio_listener,
                        node,
                        &mut roles,
                        &mut stop,
                        trim,
                        move |r| r.leader && r.term != lost,
                    )
                    .await?;
                    continue;
                }
            };
            tracing::info!(
                term = role.term,
                messages = recovered.messages.len(),
                "leading: serving the replicated broker"
            );
            let proposer = Arc::new(Proposer::default());
            let broker = Broker::with_clock(config.engine(), TokioClock::new()).with_journal(
                Arc::new(RaftJournal {
                    proposer: proposer.clone(),
                }),
            );
            crate::durability::restore(&broker, recovered)?;
            let broker = Arc::new(broker);
            let marks = broker.clone();
            let raft = replica.raft().clone();
            let runner = proposer.clone();
            let proposing =
                tokio::spawn(async move { runner.run(raft, move || marks.next_ids()).await });
            let replication = Arc::new(Replication {
                replica: replica.clone(),
                node,
                election_timeout: Duration::from_millis(config.election_timeout_ms),
                term: Some(proposer.clone()),
            });
            let term = role.term;
            let mut watch_roles = roles.clone();
            let mut watch_stop = stop.clone();
            let ended = async move {
                tokio::select! {
                    _ = watch_roles.wait_for(|m| {
                        let r = ubroker_replica::role_of(m);
                        !r.leader || r.term != term
                    }) => {}
                    () = proposer.until_failed() => {}
                    _ = watch_stop.wait_for(|s| *s) => {}
                }
            };
            let server = Server::new(tokio_listener, broker, config.clone())
                .with_memory_trim(trim)
                .with_replication(replication);
            server.run(ended).await.map_err(|e| e.to_string())?;
            proposing.abort();
            tracing::info!(term, "stopped leading");
        } else {
            serve_follower(
                config,
                replica,
                tokio_listener,
                node,
                &mut roles,
                &mut stop,
                trim,
                |r| r.leader,
            )
            .await?;
        }
    }
    Ok(())
}

/// Serves as a follower until `until` holds of the role (or shutdown).
#[allow(clippy::too_many_arguments)]
async fn serve_follower(
    config: &Config,
    replica: &Arc<Replica>,
    listener: TcpListener,
    node: u64,
    roles: &mut watch::Receiver<ubroker_replica::Metrics>,
    stop: &mut watch::Receiver<bool>,
    trim: fn(),
    until: impl Fn(ubroker_replica::Role) -> bool + Send + 'static,
) -> Result<(), String> {
    let broker = Arc::new(Broker::with_clock(config.engine(), TokioClock::new()));
    let replication = Arc::new(Replication {
        replica: replica.clone(),
        node,
        election_timeout: Duration::from_millis(config.election_timeout_ms),
        term: None,
    });
    let mut watch_roles = roles.clone();
    let mut watch_stop = stop.clone();
    let ended = async move {
        tokio::select! {
            _ = watch_roles.wait_for(|m| until(ubroker_replica::role_of(m))) => {}
            _ = watch_stop.wait_for(|s| *s) => {}
        }
    };
    Server::new(listener, broker, config.clone())
        .with_memory_trim(trim)
        .with_replication(replication)
        .run(ended)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicated() -> Config {
        let mut config = Config::for_port(0);
        config.replicas = Some(3);
        config.node = Some(4);
        config.data_dir = Some(PathBuf::from("/tmp/x"));
        config.raft_listen = Some("127.0.0.1:7105".parse().unwrap());
        config.raft_peers = Some("3=127.0.0.1:7104,4=127.0.0.1:7105,5=127.0.0.1:7106".into());
        config
    }

    #[test]
    fn the_replication_flags_are_checked_together() {
        assert_eq!(validate(&replicated()), Ok(()));
        assert_eq!(validate(&Config::for_port(0)), Ok(()));
        type Change = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.replicas = Some(2)), "--replicas must be 3"),
            (Box::new(|c| c.data_dir = None), "needs --data-dir"),
            (Box::new(|c| c.node = None), "needs --node"),
            (Box::new(|c| c.raft_listen = None), "needs --raft-listen"),
            (Box::new(|c| c.node = Some(7)), "must include this node"),
            (
                Box::new(|c| c.raft_peers = Some("3=127.0.0.1:1,4=127.0.0.1:2".into())),
                "must name 3 members",
            ),
            (
                Box::new(|c| c.raft_peers = Some("3=127.0.0.1:1,4=x,5=127.0.0.1:3".into())),
                "not HOST:PORT",
            ),
            (
                Box::new(|c| {
                    c.raft_peers = Some("3=127.0.0.1:1,3=127.0.0.1:2,5=127.0.0.1:3".into())
                }),
                "named twice",
            ),
            (
                Box::new(|c| c.raft_peers = Some("a=127.0.0.1:1".into())),
                "not a node index",
            ),
            (
                Box::new(|c| c.raft_peers = Some("127.0.0.1:1".into())),
                "not ID=HOST:PORT",
            ),
        ];
        for (change, message) in cases {
            let mut config = replicated();
            change(&mut config);
            let error = validate(&config).unwrap_err();
            assert!(error.contains(message), "{error:?} lacks {message:?}");
        }
        let mut single = Config::for_port(0);
        single.raft_bootstrap = true;
        assert!(validate(&single).unwrap_err().contains("need --replicas 3"));
    }

    #[test]
    fn peers_parse_to_ids_and_addresses() {
        let peers = parse_peers("3=127.0.0.1:7104, 4=127.0.0.1:7105,5=127.0.0.1:7106").unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[&4], "127.0.0.1:7105");
    }

    #[test]
    fn a_due_time_is_wall_clock_and_zero_means_now() {
        assert_eq!(due_ms(Duration::ZERO), 0);
        let before = crate::durability::now_ms();
        let due = due_ms(Duration::from_millis(1500));
        assert!(due >= before + 1500, "{due} {before}");
    }
}
