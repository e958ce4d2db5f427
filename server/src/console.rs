//! `GET /ui`: the web console, one page served from the binary.
//!
//! The page (`console/page.html`, `console/console.css`,
//! `console/console.js`) is put together at compile time, so there is no
//! file beside the binary and no build step. It holds no data: everything
//! it shows it reads from `/stats` and `/queues` (or, behind the cluster's
//! HAProxy, from `/nodes/{i}/stats` and `/nodes/{i}/queues`) with the
//! bearer token the user gives it, which is why `/ui` is the one route
//! besides `/health` that `--auth-token` does not guard.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Response, StatusCode};

use crate::response::Body;

/// The whole page: the HTML with its stylesheet and script inlined, so one
/// request loads it.
const PAGE: &str = concat!(
    include_str!("console/head.html"),
    "<style>\n",
    include_str!("console/console.css"),
    "</style>\n</head>\n",
    include_str!("console/page.html"),
    "<script>\n",
    include_str!("console/console.js"),
    "</script>\n</body>\n</html>\n",
);

/// The browser may load nothing from anywhere but the broker, and may send
/// requests only to it (`connect-src 'self'`): the console works offline
/// and cannot leak the token elsewhere. Inline script and style are the
/// page's own (it has no other).
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `200` with the console's page.
pub fn page() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A new binary's page is picked up at once; the page is small.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::header::{ALLOW, HOST};
    use hyper::{Method, Request};
    use std::sync::Arc;
    use ubroker_engine::Broker;

    use crate::routes::{handle, State};
    use crate::{Config, TokioClock};

    fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn the_token_does_not_guard_the_page_but_guards_its_data() {
        let mut config = Config::for_port(0);
        config.auth_token = Some("s3cret".into());
        let broker = Arc::new(Broker::with_clock(config.engine(), TokioClock::new()));
        let (_shutdown, shutting_down) = tokio::sync::watch::channel(false);
        let state = State::new(broker, config, shutting_down);
        let page = handle(&state, request(Method::GET, "/ui")).await;
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        for data in ["/stats", "/queues", "/ui/", "/uix"] {
            let answer = handle(&state, request(Method::GET, data)).await;
            assert_eq!(answer.status(), 401, "{data}");
        }
        let post = handle(&state, request(Method::POST, "/ui")).await;
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()[ALLOW], "GET");
    }

    #[tokio::test]
    async fn the_page_is_html_and_loads_nothing_from_elsewhere() {
        let response = page();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        // The SVG namespace is a name, not a request.
        let text = text.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(text.starts_with("<!doctype html>"));
        assert!(text.trim_end().ends_with("</html>"));
        // No URL with a scheme or a protocol-relative one: every request
        // the page makes is to the broker that served it.
        for needle in ["http://", "https://", "src=\"//", "href=\"//"] {
            assert!(!text.contains(needle), "{needle}");
        }
    }
}
