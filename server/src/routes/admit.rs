//! The checks every request passes before routing ([`admit`]): the size of
//! its head, the framing rules hyper leaves to the application, the bearer
//! token, and the content coding.

use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, HOST, TRANSFER_ENCODING};
use hyper::{Request, Version};
use ubroker_engine::Clock;

use super::State;
use crate::decode::{head_bytes_without_headers, header_bytes};
use crate::error::ApiError;

/// Checks what applies to every route, before routing: the size of the
/// request head, the framing rules hyper leaves to the application, the
/// bearer token if one is configured, and the content coding.
pub(super) fn admit<C: Clock, B>(state: &State<C>, req: &Request<B>) -> Result<(), ApiError> {
    // One pass over the headers gathers what the checks below need (a map
    // lookup per header name costs a hash each; this is on every request).
    let head = HeadFacts::of(req);
    // hyper enforces a hard ceiling with a bare 431; this is the configured
    // limit, answered with a JSON body like every other error.
    let limit = state.config.max_header_bytes;
    if head.bytes as u64 > limit {
        return Err(ApiError::HeadersTooLarge { limit });
    }
    // RFC 9112, section 3.2: exactly one Host in HTTP/1.1, at most one in
    // HTTP/1.0.
    match head.hosts {
        0 if req.version() >= Version::HTTP_11 => return Err(ApiError::MissingHost),
        0 | 1 => {}
        _ => return Err(ApiError::RepeatedHeader { name: "Host" }),
    }
    // hyper frames a body by its final `chunked` and ignores the codings
    // before it (`gzip, chunked`): those would reach the JSON parser still
    // encoded. RFC 9112, section 6.1: 501 for a coding not understood.
    if !head.transfer_chunked_only {
        return Err(ApiError::UnsupportedTransferEncoding);
    }
    // `/health` and `/health/leader` (replication's leader check, which
    // HAProxy asks) are for load balancers and orchestrators, which hold no
    // token, and `/ui` is a page that holds no data (it asks for the token
    // and sends it with every request it makes): the routes the token does
    // not guard.
    let guarded = !matches!(req.uri().path(), "/health" | "/health/leader" | "/ui");
    if let (Some(token), true) = (&state.config.auth_token, guarded) {
        if head.authorizations > 1 {
            // Two credentials: whichever one were checked, the other would
            // be ignored silently.
            return Err(ApiError::RepeatedHeader {
                name: "Authorization",
            });
        }
        let presented = head
            .authorization
            .and_then(|value| crate::auth::bearer_token(value.as_bytes()))
            .unwrap_or_default();
        if !crate::auth::token_matches(presented, token.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    if !head.content_identity_only {
        return Err(ApiError::UnsupportedContentEncoding);
    }
    Ok(())
}

/// What [`admit`] needs from a request head, gathered in one pass.
struct HeadFacts<'a> {
    /// The head's size as [`head_bytes`] counts it.
    bytes: usize,
    hosts: usize,
    authorizations: usize,
    authorization: Option<&'a HeaderValue>,
    transfer_chunked_only: bool,
    content_identity_only: bool,
}

impl<'a> HeadFacts<'a> {
    fn of<B>(req: &'a Request<B>) -> Self {
        let mut facts = HeadFacts {
            bytes: head_bytes_without_headers(req),
            hosts: 0,
            authorizations: 0,
            authorization: None,
            transfer_chunked_only: true,
            content_identity_only: true,
        };
        for (name, value) in req.headers() {
            facts.bytes += header_bytes(name, value);
            if name == HOST {
                facts.hosts += 1;
            } else if name == AUTHORIZATION {
                facts.authorizations += 1;
                facts.authorization.get_or_insert(value);
            } else if name == TRANSFER_ENCODING {
                facts.transfer_chunked_only &= codings_are(value, "chunked");
            } else if name == CONTENT_ENCODING {
                facts.content_identity_only &= codings_are(value, "identity");
            }
        }
        facts
    }
}

/// Whether every coding listed in `value` (comma-separated) is `only`,
/// ignoring ASCII case.
fn codings_are(value: &HeaderValue, only: &str) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
        .all(|coding| coding.eq_ignore_ascii_case(only.as_bytes()))
}
