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
