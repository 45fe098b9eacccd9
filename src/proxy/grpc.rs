//! What the proxy does differently for gRPC: requests to HTTP/2 upstreams
//! (`backend-protocol: grpc`/`grpcs`) and the errors it answers itself.
//!
//! - An HTTP/2 request needs `:scheme` and `:authority`: the client's `Host` becomes the
//!   authority of an absolute URI (RFC 9113 §8.3.1: a client converting HTTP/1.1 uses
//!   `:authority` instead of `Host`).
//! - `TE: trailers` is hop-by-hop and stripped like the others, but gRPC servers require it
//!   (it says the client accepts the trailers that carry `grpc-status`), and RFC 9113 §8.2.2
//!   allows exactly that value: it is sent to HTTP/2 upstreams again when the client sent it.
//! - A failed gRPC call that the proxy answers itself (no endpoint, connect failure, upstream
//!   timeout) gets a gRPC "trailers-only" answer: `200` with `content-type: application/grpc`,
//!   `grpc-status` and `grpc-message` in the headers and no body. A gRPC client reading a bare
//!   `502` reports a protocol-level failure; this way it reads the status the gRPC project's
//!   "HTTP to gRPC Status Code Mapping" (doc/http-grpc-status-mapping.md) gives 502, 503 and 504
//!   alike: `UNAVAILABLE` (14), which gRPC clients treat as retryable.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};

use super::body::{ResponseBody, own_response};
use super::error::ProxyError;

/// gRPC's `UNAVAILABLE` status code.
const UNAVAILABLE: u16 = 14;

/// gRPC's `UNIMPLEMENTED`: what the mapping gives a `404` (no route for the method's path).
const UNIMPLEMENTED: u16 = 12;

/// Whether a request is a gRPC call (`application/grpc`, `application/grpc+proto`, ...).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
        })
}

/// Makes an origin-form HTTP/1.1-style upstream request an HTTP/2 one: absolute URI with
/// `scheme` and the `Host` as authority (`Host` removed), and `TE: trailers` when the client
/// asked for trailers. A `Host` that is not a valid authority is left as is (hyper then sends
/// the request with `:scheme http` and no `:authority`).
pub(crate) fn to_http2<B>(req: &mut Request<B>, tls: bool, te_trailers: bool) {
    *req.version_mut() = Version::HTTP_2;
    if te_trailers {
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let Some(authority) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
    else {
        return;
    };
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let scheme = if tls { Scheme::HTTPS } else { Scheme::HTTP };
    if let Ok(uri) = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        *req.uri_mut() = uri;
        req.headers_mut().remove(header::HOST);
    }
}

/// Puts back the `Host` that [`to_http2`] moved into the URI (a request hyper handed back
/// unsent is built again from its headers).
pub(crate) fn restore_host(headers: &mut HeaderMap, uri: &Uri) {
    if headers.contains_key(header::HOST) {
        return;
    }
    if let Some(value) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, value);
    }
}

/// The gRPC answer to a call the proxy could not deliver, for the statuses the mapping names
/// (`404` → `UNIMPLEMENTED`, `502`/`503`/`504` → `UNAVAILABLE`); `None` for the others (they
/// are the client's doing, and an HTTP status says it as well).
pub(crate) fn error_response(error: &ProxyError) -> Option<Response<ResponseBody>> {
    let status = error.status();
    let code = match status {
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            UNAVAILABLE
        }
        StatusCode::NOT_FOUND => UNIMPLEMENTED,
        _ => return None,
    };
    let mut response = Response::new(own_response(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    // The fixed text of the HTTP error ("503 service unavailable"): nothing about the
    // upstream leaks, as with the HTTP answer.
    if let Ok(value) = HeaderValue::from_str(&percent_encode(error.body().trim())) {
        headers.insert("grpc-message", value);
    }
    Some(response)
}

/// `grpc-message` encoding: printable ASCII except `%` as is, everything else `%XX` (gRPC over
/// HTTP/2, "Responses").
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_grpc(&h));
    }

    #[test]
    fn an_http2_request_carries_the_host_as_authority() {
        let mut req = Request::new(());
        *req.uri_mut() = Uri::from_static("/pkg.Svc/Call?x=1");
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("grpc.example:443"));
        to_http2(&mut req, true, true);
        assert_eq!(req.uri(), "https://grpc.example:443/pkg.Svc/Call?x=1");
        assert!(!req.headers().contains_key(header::HOST));
        assert_eq!(req.headers()[header::TE], "trailers");
        let mut headers = req.headers().clone();
        restore_host(&mut headers, req.uri());
        assert_eq!(headers[header::HOST], "grpc.example:443");
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% down\n"), "50%25 down%0A");
    }
}
