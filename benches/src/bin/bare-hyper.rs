//! `bare-hyper`: a hyper 1.x HTTP/1.1 server that answers every request with
//! `200 {}`, the ceiling for any hyper server on this machine and the
//! baseline `ubroker-load --compare` measures the broker against.
//!
//! It runs as the broker does (tokio multi-thread runtime, one task per
//! connection, HTTP/1.1 keep-alive, `TCP_NODELAY`, `Content-Type:
//! application/json`) and reads each request body to the end, as any server
//! must, but nothing more: no routing, no JSON, and no timers (hyper's
//! header-read timeout needs a timer, so it is off here, while the broker
//! pays for its own connection timeouts). It must never do more than that,
//! or the baseline would flatter the broker.
//!
//! ```text
//! bare-hyper [--host 127.0.0.1] [--port 0]
//! ```
//!
//! Prints `listening on http://HOST:PORT` (as `ubroker` does) when ready and
//! exits 0 on SIGINT or SIGTERM.

use std::convert::Infallible;
use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A hyper server that answers every request with `200 {}`.
#[derive(Debug, Parser)]
#[command(name = "bare-hyper", version, about, long_about = None)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port to listen on (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The broker reads every publish body before it answers; so does the
    // baseline. A broken body changes nothing: the answer is the same.
    let _ = req.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    Ok(response)
}

async fn serve(listener: TcpListener) {
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off.
                    eprintln!("bare-hyper: accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), service_fn(answer));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bare-hyper: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind((args.host, args.port)).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "bare-hyper: cannot listen on {}:{}: {error}",
                    args.host, args.port
                );
                return ExitCode::FAILURE;
            }
        };
        let address = match listener.local_addr() {
            Ok(address) => address,
            Err(error) => {
                eprintln!("bare-hyper: cannot read the listening address: {error}");
                return ExitCode::FAILURE;
            }
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on http://{address}");
        let _ = stdout.flush();
        drop(stdout);
        serve(listener).await;
        // Connections still open are dropped with the runtime.
        ExitCode::SUCCESS
    })
}
