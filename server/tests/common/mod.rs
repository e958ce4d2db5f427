//! Shared harness for the whole-server tests: start a real server on
//! `127.0.0.1:0`, talk to it with a real HTTP/1.1 client (hyper's) or raw
//! TCP, and stop it.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use ubroker_engine::{Broker, Clock, SystemClock};
use ubroker_server::{serve, Config, TokioClock};

/// A server on tokio's paused clock (`#[tokio::test(start_paused = true)]`),
/// which the engine reads through [`TokioClock`]. Idle connections are kept
/// for 30 days, so that advancing the clock does not close the test's
/// clients.
pub async fn paused_server(mut cfg: Config) -> TestServer<TokioClock> {
    cfg.idle_timeout = 30 * 24 * 3600 * 1000;
    let broker = Arc::new(Broker::with_clock(cfg.engine(), TokioClock::new()));
    TestServer::start_with(cfg, broker).await
}

/// Moves tokio's paused clock forward by `ms`.
pub async fn advance_ms(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

/// A server running in this test's runtime.
pub struct TestServer<C: Clock = SystemClock> {
    pub addr: SocketAddr,
    pub broker: Arc<Broker<C>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer<SystemClock> {
    /// Starts a server with `config` on the system clock.
    pub async fn start(config: Config) -> Self {
        let broker = Arc::new(Broker::new(config.engine()));
        Self::start_with(config, broker).await
    }
}

impl<C: Clock> TestServer<C> {
    /// Starts a server over `broker` (which may use any clock).
    pub async fn start_with(config: Config, broker: Arc<Broker<C>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, broker.clone(), config, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            broker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A new keep-alive client connection.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Begins graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits until `serve` returns.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Polls `condition` on the broker until it holds (not a timing
    /// assertion: it fails only after 10 s of never holding).
    pub async fn until(&self, what: &str, condition: impl Fn(&Broker<C>) -> bool) {
        for _ in 0..10_000 {
            if condition(&self.broker) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never happened: {what}");
    }
}

/// A response: status, headers, and the body parsed as JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl Reply {
    /// The `error` field of an error body (panics if there is none).
    pub fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {self:?}"))
    }

    /// The delivery of a successful fetch: (id, body).
    pub fn delivery(&self) -> (u64, String) {
        assert_eq!(self.status, 200, "{self:?}");
        let id = self.json["id"].as_u64().unwrap();
        let body = self.json["message"]["body"].as_str().unwrap().to_owned();
        (id, body)
    }
}

/// A response with its body as raw bytes.
#[derive(Debug)]
pub struct RawReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawReply {
    /// The `Content-Type` header, if there is one.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap())
    }

    /// The body as UTF-8 text (panics if it is not).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_else(|e| panic!("body is not UTF-8 ({e}): {:?}", self.body))
    }

    /// As a [`Reply`], asserting that it is JSON with the JSON content type.
    pub fn json(self) -> Reply {
        assert_eq!(
            self.content_type(),
            Some("application/json"),
            "every response but /metrics is JSON: {self:?}"
        );
        let json = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {:?}", self.body));
        Reply {
            status: self.status,
            headers: self.headers,
            json,
        }
    }
}

/// One HTTP/1.1 keep-alive connection driven by hyper's client.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Client { sender }
    }

    pub async fn send(&mut self, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
        self.try_send(method, path, body).await.unwrap()
    }

    pub async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Full::new(body.into()))
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        assert_eq!(
            headers.get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "every response is JSON: {status} {bytes:?}"
        );
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {bytes:?}"));
        Ok(Reply {
            status,
            headers,
            json,
        })
    }

    /// Sends a request with extra `headers` and returns the answer with its
    /// body as it came (for `/metrics`, which is not JSON, and for a
    /// `HEAD`); [`RawReply::json`] checks and parses a JSON one.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> RawReply {
        self.sender.ready().await.unwrap();
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        RawReply {
            status,
            headers,
            body,
        }
    }

    pub async fn publish(&mut self, body: &str) -> Reply {
        let payload = serde_json::json!({ "body": body }).to_string();
        self.send(Method::POST, "/publish", payload).await
    }

    pub async fn fetch(&mut self, wait_ms: u64) -> Reply {
        self.send(Method::GET, &format!("/fetch?wait={wait_ms}"), Bytes::new())
            .await
    }

    pub async fn acknowledge(&mut self, id: u64) -> Reply {
        self.send(Method::POST, &format!("/acknowledge/{id}"), Bytes::new())
            .await
    }

    pub async fn requeue(&mut self, id: u64) -> Reply {
        self.send(Method::POST, &format!("/requeue/{id}"), Bytes::new())
            .await
    }
}

/// The configuration every test starts from: the defaults, on a free port.
pub fn config() -> Config {
    Config::for_port(0)
}

/// `POST /queues/{queue}/publish{query}` of one message: the one publish
/// helper of every test (`Client::publish` is the unprefixed route).
pub async fn publish(c: &mut Client, queue: &str, query: &str, body: &str) -> Reply {
    let payload = serde_json::json!({ "body": body }).to_string();
    c.send(
        Method::POST,
        &format!("/queues/{queue}/publish{query}"),
        payload,
    )
    .await
}

/// Sends raw bytes on a fresh connection and returns everything the server
/// writes back until it closes the connection (or 5 s pass).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP exchange.
pub fn raw_status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// The real `ubroker` binary, started as a user would.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The first line it printed on stdout, newline included.
    pub stdout_line: String,
}

impl Binary {
    /// Starts `ubroker` with `args` and environment `env` (on top of a
    /// `UBROKER_*`-free environment) and waits for its `listening on` line.
    pub fn start(args: &[&str], env: &[(&str, &str)], stderr: std::process::Stdio) -> Self {
        let mut command = Self::command(args, env);
        command.stderr(stderr);
        Self::spawn(command)
    }

    /// The command [`Binary::start`] runs, for a test to adjust (stdout is
    /// piped, stderr inherited unless changed).
    pub fn command(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ubroker"));
        for (key, _) in std::env::vars() {
            if key.starts_with("UBROKER_") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped());
        command
    }

    /// Spawns `command` and waits for its `listening on` line.
    pub fn spawn(mut command: std::process::Command) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = command.spawn().expect("the binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Binary {
            child,
            addr,
            stdout_line: line,
        }
    }

    /// Sends `SIG<name>` (e.g. "TERM") to the process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process and returns its exit code (None: a signal).
    pub fn wait(mut self) -> Option<i32> {
        self.child.wait().unwrap().code()
    }
}
