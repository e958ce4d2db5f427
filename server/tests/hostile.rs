//! Hostile and broken input over raw TCP: garbage, bad request lines,
//! chunked and truncated bodies, invalid UTF-8, lone surrogates and deeply
//! nested JSON. After each, nothing is queued and the server still serves.

mod common;

use common::{raw_exchange, raw_status, TestServer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use ubroker_server::Config;

async fn assert_healthy(server: &TestServer) {
    let mut c = server.client().await;
    assert_eq!(c.publish("probe").await.status, 200);
    let (id, body) = c.fetch(0).await.delivery();
    assert_eq!(body, "probe");
    assert_eq!(c.acknowledge(id).await.status, 200);
}

fn publish_raw(body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST /publish HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_bad_request_lines_are_400_and_harmless() {
    let server = TestServer::start(Config::for_port(0)).await;
    for raw in [
        &b"\x00\x01\x02\x03\xff\xfe garbage\r\n\r\n"[..],
        b"HELLO\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /fetch\r\n\r\n",
        b"GET /fetch HTTP/9.9\r\n\r\n",
        b"GET /fe tch HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /fetch HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET /fetch HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
        b"POST /publish HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        b"POST /publish HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nnot hex\r\n0\r\n\r\n",
    ] {
        let reply = raw_exchange(server.addr, raw).await;
        let status = raw_status(&reply);
        assert!(
            (400..500).contains(&status),
            "{:?} -> {reply}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(server.broker.stats().published, 0);
    assert_healthy(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_chunked_publish_is_accepted() {
    let server = TestServer::start(Config::for_port(0)).await;
    let reply = raw_exchange(
        server.addr,
        b"POST /publish HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"bod\r\n9\r\ny\": \"ok\"}\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&reply), 200, "{reply}");
    let (_, body) = server.client().await.fetch(0).await.delivery();
    assert_eq!(body, "ok");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_queues_nothing() {
    let server = TestServer::start(Config::for_port(0)).await;
    for raw in [
        &b"POST /publish HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"body\": \"cut"[..],
        b"POST /publish HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n20\r\n{\"body\": \"cut",
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(raw).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
    }
    // Give the server the chance to notice, then check nothing arrived.
    assert_healthy(&server).await;
    let stats = server.broker.stats();
    assert_eq!(stats.published, 1, "only the health probe");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_lone_surrogates_are_400() {
    let server = TestServer::start(Config::for_port(0)).await;
    for body in [
        &b"{\"body\": \"\xc3\x28\"}"[..],
        b"{\"body\": \"\xed\xa0\x80\"}",
        b"{\"body\": \"\\ud800\"}",
        b"{\"body\": \"\\udc00\"}",
        b"{\"body\": \"\\ud800\\u0041\"}",
        b"{\"body\": \"\\uZZZZ\"}",
        b"\xef\xbb\xbf{\"body\": \"bom\"}",
    ] {
        let reply = raw_exchange(server.addr, &publish_raw(body)).await;
        assert_eq!(
            raw_status(&reply),
            400,
            "{:?} -> {reply}",
            String::from_utf8_lossy(body)
        );
        assert!(reply.contains("\"error\""), "{reply}");
    }
    // A valid surrogate pair is fine.
    let reply = raw_exchange(server.addr, &publish_raw(b"{\"body\": \"\\ud83d\\ude00\"}")).await;
    assert_eq!(raw_status(&reply), 200, "{reply}");
    let (_, body) = server.client().await.fetch(0).await.delivery();
    assert_eq!(body, "😀");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_never_overflows_the_stack() {
    let server = TestServer::start(Config::for_port(0)).await;
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    // Nesting where the body should be, or instead of the object: 400.
    for body in [
        format!("{{\"body\": {arrays}}}"),
        format!("{{\"body\": {objects}}}"),
        arrays.clone(),
    ] {
        let reply = raw_exchange(server.addr, &publish_raw(body.as_bytes())).await;
        assert_eq!(
            raw_status(&reply),
            400,
            "{}",
            &reply[..reply.len().min(300)]
        );
    }
    assert_eq!(server.broker.stats().published, 0);
    // Nesting inside an extra field: extra fields are ignored (as the
    // original ubroker did), by an iterative skipper, so it is accepted
    // without recursion, bounded only by --max-body-bytes.
    for body in [
        format!("{{\"body\": \"x\", \"extra\": {arrays}}}"),
        format!("{{\"extra\": {objects}, \"body\": \"x\"}}"),
    ] {
        let reply = raw_exchange(server.addr, &publish_raw(body.as_bytes())).await;
        assert_eq!(
            raw_status(&reply),
            200,
            "{}",
            &reply[..reply.len().min(300)]
        );
    }
    let mut c = server.client().await;
    for _ in 0..2 {
        let (id, body) = c.fetch(0).await.delivery();
        assert_eq!(body, "x");
        c.acknowledge(id).await;
    }
    assert_healthy(&server).await;
    server.stop().await;
}
