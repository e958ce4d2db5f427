//! A target broker and one keep-alive connection to it.
//!
//! [`Target`] turns a base URL into what every request needs (the address to
//! dial, the `Host` header, the request paths), computed once so the request
//! loop does no parsing. [`Connection`] is one `hyper::client::conn::http1`
//! connection with `TCP_NODELAY`, sending one request at a time and reading
//! each response body to the end, so the connection stays reusable.
//!
//! It must never pool, pipeline or retry: each connection of the load
//! generator is exactly one TCP connection with one request in flight, so the
//! number of connections is the concurrency the target sees.

use std::error::Error;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Any failure below HTTP: connect, reset, malformed response.
pub type TransportError = Box<dyn Error + Send + Sync>;

/// A broker reachable at a base URL, with every request path precomputed.
#[derive(Debug)]
pub struct Target {
    /// The base URL as given, for reports.
    pub url: String,
    /// `host:port` to dial.
    address: String,
    host_header: HeaderValue,
    /// `Bearer <token>` for a broker started with `--auth-token`.
    authorization: Option<HeaderValue>,
    /// The base URL's path without its trailing `/`, prefixed to every route,
    /// so a broker behind a path prefix can be measured too.
    prefix: String,
    publish: Uri,
    fetch_now: Uri,
    fetch_long_poll: Uri,
}

impl Target {
    /// Parses `url` (`http://host[:port][/prefix]`); `long_poll_ms` is the
    /// `?wait=` of the mixed mode's fetches; `auth_token`, if any, goes into
    /// an `Authorization: Bearer` header on every request.
    pub fn parse(url: &str, long_poll_ms: u64, auth_token: Option<&str>) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(format!("{url}: only http:// is supported, not {other}")),
            None => return Err(format!("{url}: the URL needs a scheme (http://)")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url}: the URL needs a host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let address = format!("{}:{port}", authority.host());
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("{url}: bad host: {e}"))?;
        if uri.query().is_some() {
            return Err(format!("{url}: the base URL cannot have a query"));
        }
        let authorization = match auth_token {
            Some(token) => Some(
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the auth token is not a valid header value".to_owned())?,
            ),
            None => None,
        };
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let path = |route: &str| -> Result<Uri, String> {
            format!("{prefix}{route}")
                .parse()
                .map_err(|e| format!("{url}: bad path: {e}"))
        };
        Ok(Target {
            url: url.to_owned(),
            address,
            host_header,
            authorization,
            publish: path("/publish")?,
            fetch_now: path("/fetch?wait=0")?,
            fetch_long_poll: path(&format!("/fetch?wait={long_poll_ms}"))?,
            prefix,
        })
    }

    /// `POST /publish` with the ready-made JSON `payload`.
    pub fn publish(&self, payload: &Bytes) -> Request<Full<Bytes>> {
        let mut req = self.request(Method::POST, self.publish.clone(), payload.clone());
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req
    }

    /// `GET /fetch?wait=0` or, with `long_poll`, `GET /fetch?wait=<ms>`.
    pub fn fetch(&self, long_poll: bool) -> Request<Full<Bytes>> {
        let uri = if long_poll {
            &self.fetch_long_poll
        } else {
            &self.fetch_now
        };
        self.request(Method::GET, uri.clone(), Bytes::new())
    }

    /// `POST /acknowledge/{id}`.
    pub fn acknowledge(&self, id: u64) -> Result<Request<Full<Bytes>>, TransportError> {
        let uri: Uri = format!("{}/acknowledge/{id}", self.prefix).parse()?;
        Ok(self.request(Method::POST, uri, Bytes::new()))
    }

    fn request(&self, method: Method, uri: Uri, body: Bytes) -> Request<Full<Bytes>> {
        // Built field by field rather than with `Request::builder()`, which
        // re-validates what was validated once in `parse`.
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        req.headers_mut().insert(HOST, self.host_header.clone());
        if let Some(authorization) = &self.authorization {
            req.headers_mut()
                .insert(AUTHORIZATION, authorization.clone());
        }
        req
    }
}

/// One keep-alive HTTP/1.1 connection with at most one request in flight.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Dials `target` and completes the HTTP/1.1 handshake. The connection
    /// is driven by a task of its own, which ends when `self` is dropped.
    pub async fn open(target: &Target) -> Result<Connection, TransportError> {
        let stream = TcpStream::connect(&target.address).await?;
        // Requests are small and each waits for its answer: Nagle would
        // only add delay, and the broker sets TCP_NODELAY on its side too.
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Its errors also reach the pending `send`, which reports them.
            let _ = connection.await;
        });
        Ok(Connection { sender })
    }

    /// Sends `req` and reads the whole response body.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), TransportError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(req).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// The delivery id of a `GET /fetch` response body, if it has one.
///
/// The bare hyper server answers `{}` to a fetch: the caller then
/// acknowledges id 0, so both targets see the same request sequence.
pub fn delivery_id(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Delivery {
        id: Option<u64>,
    }
    serde_json::from_slice::<Delivery>(body).ok()?.id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_become_paths_and_an_address() {
        let t = Target::parse("http://127.0.0.1:8080", 1000, None).unwrap();
        assert_eq!(t.address, "127.0.0.1:8080");
        assert_eq!(t.publish, "/publish");
        assert_eq!(t.fetch_now, "/fetch?wait=0");
        assert_eq!(t.fetch_long_poll, "/fetch?wait=1000");
        assert_eq!(t.acknowledge(7).unwrap().uri(), "/acknowledge/7");
        assert_eq!(t.publish(&Bytes::new()).headers()[HOST], "127.0.0.1:8080");

        let t = Target::parse("http://localhost/broker/", 5, Some("s3cret")).unwrap();
        assert_eq!(t.address, "localhost:80");
        assert_eq!(t.publish, "/broker/publish");
        assert_eq!(t.acknowledge(1).unwrap().uri(), "/broker/acknowledge/1");
        assert_eq!(t.fetch(true).headers()[AUTHORIZATION], "Bearer s3cret");

        for bad in [
            "https://x:1",
            "127.0.0.1:8080",
            "http://x:1/?a=b",
            "not a url",
        ] {
            assert!(Target::parse(bad, 0, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn delivery_ids_are_read_from_fetch_responses() {
        assert_eq!(
            delivery_id(br#"{"message":{"body":"\"id\":3"},"id":42}"#),
            Some(42)
        );
        assert_eq!(delivery_id(b"{}"), None);
        assert_eq!(delivery_id(b"not json"), None);
    }
}
