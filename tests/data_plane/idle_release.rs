//! An idle HTTP/1.1 keep-alive connection gives its HTTP buffers back between requests
//! (counted in `portcullis_connections_parked`), and the client sees nothing of it: its next
//! request on the same connection is served, whatever it is (a body, an upgrade), a request
//! split across the pause is not cut, and the keep-alive timeout and shutdown still close it.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backends;
use crate::support::binary::metric_value;
use crate::support::fixture::Tables;
use crate::support::http::{Conn, Via, echo, request, tls_connect, upgrade};
use crate::support::in_process::Proxy;
use crate::support::pki::Ca;
use crate::support::wait::wait_until;
use crate::websocket::terminated_websocket;

/// Connections waiting with their buffers released, as the metrics say.
fn parked(proxy: &Proxy) -> f64 {
    metric_value(&proxy.metrics.encode(), "portcullis_connections_parked").unwrap_or(-1.0)
}

/// Releases so far.
fn releases(proxy: &Proxy) -> f64 {
    metric_value(
        &proxy.metrics.encode(),
        "portcullis_connections_released_total",
    )
    .unwrap_or(-1.0)
}

/// Waits (5 s at most) until `n` connections are parked.
async fn until_parked(proxy: &Proxy, n: f64) -> bool {
    wait_until(Duration::from_secs(5), || async move { parked(proxy) == n }).await
}

#[tokio::test]
async fn a_released_connection_serves_its_next_requests_plain_and_tls() {
    let ca = Ca::new("release ca");
    let leaf = ca.leaf(&["a.example"]);
    let backend = backends::http("a").await;
    let table = Tables::new()
        .terminate("a.example", &leaf)
        .to(&[backend.addr])
        .build();
    let proxy = Proxy::start(table).await;

    for via in [Via::Plain, Via::Tls] {
        let before = backend.count();
        let mut conn = Conn::open(proxy.http, proxy.https, &ca, via, "a.example").await;
        assert_eq!(conn.get("a.example", "/first").await.unwrap().status, 200);
        assert!(until_parked(&proxy, 1.0).await, "{via:?}: not released");

        // The same connection (one hyper sender, one socket) after the release.
        let answer = conn.get("a.example", "/second").await.unwrap();
        assert_eq!(answer.status, 200, "{via:?}");
        assert_eq!(answer.backend(), Some("a"));
        assert!(
            until_parked(&proxy, 1.0).await,
            "{via:?}: not released again"
        );

        let body = Bytes::from(vec![b'x'; 100_000]);
        let post = request(Method::POST, "a.example", "/upload", &[], body.clone());
        assert_eq!(conn.send(post).await.unwrap().status, 200, "{via:?}");
        let seen = backend.requests();
        let upload = seen.last().unwrap();
        assert_eq!(upload.uri, "/upload");
        assert_eq!(upload.body, body, "{via:?}: the body after a release");
        assert_eq!(backend.count() - before, 3, "{via:?}");
        assert!(releases(&proxy) >= 2.0, "{via:?}");
        assert!(!conn.is_closed(), "{via:?}");
        conn.close().await;
        assert!(
            until_parked(&proxy, 0.0).await,
            "{via:?}: a closed connection stays parked"
        );
    }
}

#[tokio::test]
async fn a_request_split_across_the_pause_is_served() {
    let backend = backends::http("a").await;
    let proxy = Proxy::start_one("a.example", &[backend.addr]).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    // The first request whole, the second's head cut short: hyper holds the start of it.
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: a.example\r\n\r\nGET /two HTTP/1.1\r\nHost: a.ex")
        .await
        .unwrap();
    // The client pauses mid-head for several release periods (the stimulus, not a wait for
    // the proxy): the connection must not be released under the buffered half head.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(releases(&proxy), 0.0, "released with half a head buffered");
    stream
        .write_all(b"ample\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    let uris: Vec<_> = backend.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/one", "/two"]);
    assert_eq!(releases(&proxy), 0.0, "released with half a head buffered");
}

#[tokio::test]
async fn a_body_split_across_the_pause_is_served() {
    let backend = backends::http("a").await;
    let proxy = Proxy::start_one("a.example", &[backend.addr]).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello")
        .await
        .unwrap();
    // The upload stalls mid-body for several release periods (the client's pause).
    tokio::time::sleep(Duration::from_millis(900)).await;
    stream.write_all(b"world").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(backend.requests()[0].body, b"helloworld");
    assert_eq!(releases(&proxy), 0.0, "released in the middle of a body");
}

#[tokio::test]
async fn a_released_connection_still_meets_the_keep_alive_timeout() {
    let backend = backends::http("a").await;
    let table = Tables::one("a.example", &[backend.addr])
        .with_class(|class| class.timeouts.idle = Duration::from_millis(1500))
        .build();
    let proxy = Proxy::start(table).await;
    let mut conn = Conn::plain(proxy.http).await;
    assert_eq!(conn.get("a.example", "/").await.unwrap().status, 200);
    let opened = tokio::time::Instant::now();
    assert!(until_parked(&proxy, 1.0).await);
    assert!(
        conn.ended_within(Duration::from_secs(5)).await,
        "a parked connection outlived the keep-alive timeout"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(1000),
        "closed before the keep-alive timeout: {:?}",
        opened.elapsed()
    );
    assert!(until_parked(&proxy, 0.0).await);
}

#[tokio::test]
async fn shutdown_closes_released_connections() {
    let backend = backends::http("a").await;
    let proxy = Proxy::start_one("a.example", &[backend.addr]).await;
    let mut conn = Conn::plain(proxy.http).await;
    assert_eq!(conn.get("a.example", "/").await.unwrap().status, 200);
    assert!(until_parked(&proxy, 1.0).await);
    proxy.begin_shutdown();
    assert!(
        conn.ended_within(Duration::from_secs(5)).await,
        "a parked connection kept shutdown waiting"
    );
}

#[tokio::test]
async fn a_released_connection_upgrades_to_a_websocket() {
    let ca = Ca::new("release ws ca");
    let (_backend, proxy) = terminated_websocket(&ca).await;
    let mut io = tls_connect(proxy.https, ca.client_config(&[b"http/1.1"]), "ws.example")
        .await
        .unwrap();
    // Quiet after the handshake: released before its first request.
    assert!(until_parked(&proxy, 1.0).await);
    let answer = upgrade(&mut io, "ws.example", "/chat").await;
    assert_eq!(answer.status, 101);
    for message in [&b"ping"[..], b"after a release", &[0u8, 1, 2, 255]] {
        echo(&mut io, message).await;
    }
    // A tunnel is not an idle HTTP connection: quiet for several release periods (the
    // client's pause), it is not parked and still carries bytes.
    tokio::time::sleep(Duration::from_millis(900)).await;
    echo(&mut io, b"still there").await;
    assert_eq!(parked(&proxy), 0.0);
    assert_eq!(releases(&proxy), 1.0);
}
