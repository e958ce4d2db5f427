//! Shared harness for the client's tests: a real broker
//! (`ubroker_server::Server`) on `127.0.0.1:0` in the test's runtime, and a
//! tiny scripted HTTP endpoint for what a healthy broker does not do on
//! demand (connections cut mid-request, `Retry-After` on a `503`).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use ubroker_client::{Client, RetryPolicy};
use ubroker_engine::Broker;
use ubroker_server::{Config, Server, TokioClock};

/// A broker running in this test's runtime.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker<TokioClock>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The defaults, on port 0.
pub fn config() -> Config {
    Config::for_port(0)
}

impl TestBroker {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let broker = Arc::new(Broker::with_clock(config.engine(), TokioClock::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(Server::new(listener, broker.clone(), config).run(async {
            let _ = stopped.await;
        }));
        TestBroker {
            addr,
            broker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client with the default retry policy.
    pub fn client(&self) -> Client {
        Client::new(&self.url()).unwrap()
    }

    /// Begins graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A client that retries quickly, for tests that expect retries.
pub fn quick_retries() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.backoff.base = Duration::from_millis(5);
    policy.backoff.max = Duration::from_millis(50);
    policy
}

/// Polls `check` until it holds; fails after 30 s of never holding (not a
/// timing assertion: a bound on a hang).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened within 30 s: {what}");
}

/// What the scripted endpoint does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this raw HTTP/1.1 response (status line onward).
    Answer(String),
    /// Read the request, then close the connection without answering.
    Close,
}

/// An HTTP response with a JSON body and extra header lines.
pub fn response(status: &str, headers: &[&str], body: &str) -> Step {
    let mut text = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    Step::Answer(text)
}

/// A tiny HTTP/1.1 endpoint that plays `steps` in order, one per request
/// across all connections (the last step repeats), and records when each
/// request (its request line) arrived.
pub struct Scripted {
    pub addr: SocketAddr,
    pub arrivals: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Scripted {
    pub async fn start(steps: Vec<Step>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let steps = Arc::new(steps);
        let seen = arrivals.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_script(stream, steps.clone(), seen.clone()));
            }
        });
        Scripted { addr, arrivals }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<(Instant, String)> {
        self.arrivals.lock().unwrap().clone()
    }
}

async fn serve_script(
    mut stream: TcpStream,
    steps: Arc<Vec<Step>>,
    arrivals: Arc<Mutex<Vec<(Instant, String)>>>,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request: the head, then Content-Length bytes.
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let index = {
            let mut arrivals = arrivals.lock().unwrap();
            arrivals.push((Instant::now(), head.lines().next().unwrap_or("").to_owned()));
            arrivals.len() - 1
        };
        match &steps[index.min(steps.len() - 1)] {
            Step::Answer(text) => {
                if stream.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
            Step::Close => return,
        }
    }
}

/// A stand-in for the cluster's HAProxy, for the client's partition tests
/// without HAProxy: routes `/queues/{name}--k...` to backend `k mod N`
/// (anything else to backend 0), one request per backend connection, and
/// answers a backend marked down with HAProxy's JSON `503 unavailable`;
/// a backend marked hung gets nothing and its requests no answer (a
/// SIGSTOPped node before the proxy's checks notice); a backend marked a
/// follower is answered for as a replicated follower answers, `503
/// not_leader` naming a leader (the moment of a failover, before the
/// proxy's checks follow the new leader).
/// Counts the requests that reached each backend and those refused.
pub struct Router {
    pub addr: SocketAddr,
    state: Arc<RouterState>,
}

struct RouterState {
    backends: Vec<SocketAddr>,
    down: Mutex<Vec<bool>>,
    hung: Mutex<Vec<bool>>,
    /// `Some(leader)`: answer `not_leader` naming `leader`.
    follower: Mutex<Vec<Option<Option<u32>>>>,
    forwarded: Mutex<Vec<u64>>,
    refused: Mutex<Vec<u64>>,
}

impl Router {
    pub async fn start(backends: Vec<SocketAddr>) -> Router {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let n = backends.len();
        let state = Arc::new(RouterState {
            backends,
            down: Mutex::new(vec![false; n]),
            hung: Mutex::new(vec![false; n]),
            follower: Mutex::new(vec![None; n]),
            forwarded: Mutex::new(vec![0; n]),
            refused: Mutex::new(vec![0; n]),
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(route(stream, shared.clone()));
            }
        });
        Router { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_down(&self, node: usize, down: bool) {
        self.state.down.lock().unwrap()[node] = down;
    }

    pub fn set_hung(&self, node: usize, hung: bool) {
        self.state.hung.lock().unwrap()[node] = hung;
    }

    /// Makes backend `node` answer as a follower that names `leader`
    /// (`None` in the outer option: forward to it again).
    pub fn set_follower(&self, node: usize, leader: Option<Option<u32>>) {
        self.state.follower.lock().unwrap()[node] = leader;
    }

    /// Requests forwarded to each backend.
    pub fn forwarded(&self) -> Vec<u64> {
        self.state.forwarded.lock().unwrap().clone()
    }

    /// Requests answered `503 unavailable` or `503 not_leader` for each
    /// backend.
    pub fn refused(&self) -> Vec<u64> {
        self.state.refused.lock().unwrap().clone()
    }
}

/// The node of a request target, as the cluster's HAProxy routes it.
pub fn node_of(target: &str, nodes: usize) -> usize {
    let path = target.split('?').next().unwrap_or("");
    let Some(rest) = path.strip_prefix("/queues/") else {
        return 0;
    };
    let name = rest.split('/').next().unwrap_or("");
    let name = name.strip_suffix(".dead").unwrap_or(name);
    match name.rsplit_once("--") {
        Some((_, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => {
            // Long suffixes as HAProxy's modulo would see them are not
            // needed here: tests use small k.
            k.parse::<usize>().map(|k| k % nodes).unwrap_or(0)
        }
        _ => 0,
    }
}

/// Reads one HTTP/1.1 message (head and `Content-Length` body) from
/// `stream` into a fresh buffer, `buf` holding what was read before.
async fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let message: Vec<u8> = buf.drain(..head_end + length).collect();
    Some((head, message))
}

async fn route(mut client: TcpStream, state: Arc<RouterState>) {
    let mut buf = Vec::new();
    while let Some((head, request)) = read_message(&mut client, &mut buf).await {
        let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let node = node_of(&target, state.backends.len());
        if state.hung.lock().unwrap()[node] {
            // Never answered; the connection stays open until the client
            // gives up on it.
            let mut rest = [0u8; 1];
            let _ = client.read(&mut rest).await;
            return;
        }
        let down = state.down.lock().unwrap()[node];
        let follower = state.follower.lock().unwrap()[node];
        if let Some(leader) = follower {
            state.refused.lock().unwrap()[node] += 1;
            let leader = leader.map_or("null".to_owned(), |l| l.to_string());
            let body = format!(
                r#"{{"error": "not the leader", "code": "not_leader", "leader": {leader}}}"#
            );
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if client.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let answer = if down {
            None
        } else {
            forward(state.backends[node], &request).await
        };
        let answer = match answer {
            Some(answer) => {
                state.forwarded.lock().unwrap()[node] += 1;
                answer
            }
            None => {
                state.refused.lock().unwrap()[node] += 1;
                let body = r#"{"error": "node unavailable", "code": "unavailable"}"#;
                format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
        };
        if client.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// Sends one request to `backend` on a connection of its own and reads
/// its answer; `None` if the backend could not be reached.
async fn forward(backend: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(backend).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut buf = Vec::new();
    read_message(&mut stream, &mut buf).await.map(|(_, m)| m)
}
