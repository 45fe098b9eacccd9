//! The proxy's own answers: 404 no route, 503 no endpoints, 502 refused, 504 slow upstream,
//! 431 oversized headers, 400 request smuggling; and retry on connect failure.

use std::time::Duration;

use crate::support::backends;
use crate::support::fixture::Tables;
use crate::support::http::{get, raw};
use crate::support::in_process::Proxy;

async fn refused_addr() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test]
async fn no_route_is_a_plain_404() {
    let backend = backends::http("a").await;
    let proxy = Proxy::start_one("a.example", &[backend.addr]).await;

    let answer = get(proxy.http, "b.example", "/secret-path", &[]).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.text(), "404 page not found\n");
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn no_endpoints_is_503() {
    let proxy = Proxy::start_one("a.example", &[]).await;
    let answer = get(proxy.http, "a.example", "/", &[]).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.text(), "503 service unavailable\n");
}

#[tokio::test]
async fn connection_refused_is_502() {
    let proxy = Proxy::start_one("a.example", &[refused_addr().await]).await;
    let answer = get(proxy.http, "a.example", "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.text(), "502 bad gateway\n");
}

#[tokio::test]
async fn silent_upstream_is_504_after_upstream_response_timeout() {
    let backend = backends::silent("slow").await;
    let table = Tables::one("a.example", &[backend.addr])
        .with_class(|class| class.timeouts.upstream_response = Duration::from_millis(300))
        .build();
    let proxy = Proxy::start(table).await;
    let answer = get(proxy.http, "a.example", "/", &[]).await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.text(), "504 gateway timeout\n");
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let backend = backends::http("a").await;
    let table = Tables::one("a.example", &[backend.addr])
        .with_class(|class| class.limits.max_header_bytes = 1024)
        .build();
    let proxy = Proxy::start(table).await;

    // Over our limit but under hyper's minimum buffer: our own check.
    let big = "x".repeat(2000);
    let answer = get(proxy.http, "a.example", "/", &[("x-big", &big)]).await;
    assert_eq!(answer.status, 431);
    // Far over hyper's read buffer: hyper's own 431.
    let huge = "y".repeat(40_000);
    let text = raw(
        proxy.http,
        format!("GET / HTTP/1.1\r\nHost: a.example\r\nX-Huge: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // Within the limit: served.
    assert_eq!(
        get(proxy.http, "a.example", "/", &[("x-small", "1")])
            .await
            .status,
        200
    );
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn conflicting_framing_is_400_and_never_reaches_the_backend() {
    let backend = backends::http("a").await;
    let proxy = Proxy::start_one("a.example", &[backend.addr]).await;

    let cases: [&[u8]; 3] = [
        b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
    ];
    for case in cases {
        let text = raw(proxy.http, case).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "one answer, then close: {text}"
        );
    }
    // A keep-alive connection whose second request smuggles: the first is served, the second
    // refused, the connection closed.
    let text = raw(
        proxy.http,
        b"GET /first HTTP/1.1\r\nHost: a.example\r\n\r\nPOST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert_eq!(backend.count(), 1);
    assert_eq!(backend.requests()[0].uri, "/first");
}

#[tokio::test]
async fn connect_failure_is_retried_on_another_endpoint() {
    let backend = backends::http("good").await;
    let dead = refused_addr().await;
    let proxy = Proxy::start_one("a.example", &[dead, backend.addr]).await;
    for i in 0..5 {
        let answer = get(proxy.http, "a.example", &format!("/{i}"), &[]).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.text());
        assert_eq!(answer.header("x-backend"), "good");
    }
    assert_eq!(backend.count(), 5);
}

#[tokio::test]
async fn post_body_is_streamed_after_a_retry() {
    let backend = backends::http("good").await;
    let dead = refused_addr().await;
    let proxy = Proxy::start_one("a.example", &[dead, backend.addr]).await;
    let text = raw(
        proxy.http,
        b"POST /p HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(backend.requests()[0].body, b"hello");
}
