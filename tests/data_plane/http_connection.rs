//! Client connection lifecycle: slowloris header timeout, keep-alive idle timeout, graceful
//! shutdown finishing the request in flight, and keep-alive requests routed on the live table
//! (not the one the connection was accepted with).

use std::sync::Arc;
use std::time::Duration;

use crate::support::backends;
use crate::support::fixture::Tables;
use crate::support::http::{Conn, Via, get};
use crate::support::in_process::Proxy;
use crate::support::wait::wait_until;
use portcullis::table::ClassSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends the start of a request head and never the rest, through a proxy with the class
/// settings `class` gives: asserts the proxy closes the connection within 5 s, having answered
/// nothing and sent the backend nothing.
async fn slow_head_is_cut_off(class: impl FnOnce(&mut ClassSettings)) {
    let backend = backends::http("a").await;
    let table = Tables::one("a.example", &[backend.addr])
        .with_class(class)
        .build();
    let proxy = Proxy::start(table).await;

    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.exa")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "connection still open after the header read timeout"
    );
    assert!(
        rest.is_empty(),
        "answered a head that never ended: {rest:?}"
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    slow_head_is_cut_off(|class| class.timeouts.header_read = Duration::from_millis(200)).await;
}

/// The header-read timeout still cuts a slow head off when the keep-alive idle timeout came
/// first: the graceful close that one starts waits for a head that has begun to arrive, so it
/// alone would leave the connection open for as long as the client trickles.
#[tokio::test]
async fn slow_headers_are_cut_off_when_the_idle_timeout_came_first() {
    slow_head_is_cut_off(|class| {
        class.timeouts.idle = Duration::from_millis(100);
        class.timeouts.header_read = Duration::from_millis(500);
    })
    .await;
}

/// The header-read timeout counts from the end of the last response: a kept connection that
/// sends nothing more is closed when it runs out, well before the keep-alive timeout (the
/// effective keep-alive time is `min(idle, header_read)`, as with hyper's own timer before).
#[tokio::test]
async fn a_kept_connection_waits_header_read_for_its_next_head() {
    let backend = backends::http("a").await;
    let table = Tables::one("a.example", &[backend.addr])
        .with_class(|class| {
            class.timeouts.idle = Duration::from_secs(600);
            class.timeouts.header_read = Duration::from_millis(200);
        })
        .build();
    let proxy = Proxy::start(table).await;

    let mut conn = Conn::plain(proxy.http).await;
    assert_eq!(conn.get("a.example", "/").await.unwrap().status, 200);
    let ended = conn.ended_within(Duration::from_secs(5)).await;
    assert!(
        ended,
        "kept connection not closed after the header read timeout"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let backend = backends::http("a").await;
    let table = Tables::one("a.example", &[backend.addr])
        .with_class(|class| class.timeouts.idle = Duration::from_millis(200))
        .build();
    let proxy = Proxy::start(table).await;

    let mut conn = Conn::plain(proxy.http).await;
    assert_eq!(conn.get("a.example", "/").await.unwrap().status, 200);
    let ended = conn.ended_within(Duration::from_secs(5)).await;
    assert!(ended, "idle connection not closed");
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_closes() {
    let (backend_addr, received, release_tx, _backend) = held_backend().await;
    let proxy = Proxy::start_one("a.example", &[backend_addr]).await;

    let conn = Conn::plain(proxy.http).await;
    let in_flight = in_flight(conn, "a.example", "/slow");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let r = received.clone();
            async move { r.load(std::sync::atomic::Ordering::SeqCst) }
        })
        .await
    );
    proxy.begin_shutdown();
    release_tx.send(()).unwrap();
    let (answer, mut conn) = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "done");
    let ended = conn.ended_within(Duration::from_secs(5)).await;
    assert!(ended, "connection not closed after shutdown");
}

#[tokio::test]
async fn keep_alive_requests_are_routed_on_the_live_table() {
    let old = backends::http("old").await;
    let new = backends::http("new").await;
    let table = |addr| Tables::one("a.example", &[addr]).build();
    let proxy = Proxy::start(table(old.addr)).await;

    let mut conn = Conn::plain(proxy.http).await;
    assert_eq!(
        conn.get("a.example", "/")
            .await
            .unwrap()
            .header("x-backend"),
        "old"
    );
    proxy.swap(table(new.addr));
    // The same connection: the next request meets the new table.
    assert_eq!(
        conn.get("a.example", "/")
            .await
            .unwrap()
            .header("x-backend"),
        "new"
    );
    assert_eq!(
        old.count(),
        1,
        "the old endpoint got a request after the swap"
    );
    assert_eq!(
        get(proxy.http, "a.example", "/", &[])
            .await
            .header("x-backend"),
        "new"
    );
}

#[tokio::test]
async fn pipelined_chunked_and_sized_bodies_stream_through() {
    let backend = backends::http("a").await;
    let proxy = Proxy::start_one("a.example", &[backend.addr]).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    let request: &[u8] =
        b"POST /one HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
POST /two HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    // Written in small segments, as a slow client would.
    for piece in request.chunks(7) {
        stream.write_all(piece).await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    let seen = backend.requests();
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[1].body, b"abc");
}

#[tokio::test]
async fn shutdown_sends_goaway_to_http2_and_finishes_the_stream_in_flight() {
    let (backend_addr, received, release_tx, _backend) = held_backend().await;
    let ca = crate::support::pki::Ca::new("h2 shutdown ca");
    let leaf = ca.leaf(&["a.example"]);
    let table = Tables::new()
        .terminate("a.example", &leaf)
        .to(&[backend_addr])
        .build();
    let proxy = Proxy::start(table).await;

    let conn = Conn::connect(proxy.https, &ca, Via::H2, "a.example").await;
    let in_flight = in_flight(conn, "a.example", "/slow");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let r = received.clone();
            async move { r.load(std::sync::atomic::Ordering::SeqCst) }
        })
        .await
    );
    proxy.begin_shutdown();
    release_tx.send(()).unwrap();
    let (answer, mut conn) = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "done");
    // Still held open by this side: without the GOAWAY the connection would stay open for
    // the idle timeout (60 s).
    let ended = conn.ended_within(Duration::from_secs(5)).await;
    assert!(ended, "HTTP/2 connection not closed after its last stream");
}

/// GETs `path` on `conn` in a task; the answer comes back with the connection, still open on
/// this side.
fn in_flight(
    mut conn: Conn,
    host: &'static str,
    path: &'static str,
) -> tokio::task::JoinHandle<(crate::support::http::Answer, Conn)> {
    tokio::spawn(async move {
        let answer = conn.get(host, path).await.unwrap();
        (answer, conn)
    })
}

/// A backend that reads one request head, reports that it has (`received`), and answers `done`
/// only once told to (`release`): a request held in flight.
async fn held_backend() -> (
    std::net::SocketAddr,
    Arc<std::sync::atomic::AtomicBool>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let received = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = received.clone();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        r.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = release_rx.await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    });
    (addr, received, release_tx, task)
}
