//! Upstream keep-alive: connections to endpoints are reused across requests and across client
//! connections, go back to the pool only when their response was read to the end, and a pooled
//! connection the backend has closed is never used for a request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::backends;
use crate::support::http::{Conn, get, raw};
use crate::support::in_process::Proxy;
use crate::support::wait::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counters of a test-local raw backend.
#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
    closed: AtomicUsize,
    /// Connections the proxy ended (end of stream before a request).
    ended: AtomicUsize,
}

/// Reads one request head; `None` at EOF.
async fn read_head(stream: &mut TcpStream) -> Option<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.ok()?);
    }
    Some(())
}

/// A backend answering every request on a connection with `body_len` bytes (keep-alive);
/// with `close_after`, it closes each connection that long after its first answer.
async fn raw_backend(body_len: usize, close_after: Option<Duration>) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.connections.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let body = vec![b'x'; body_len];
                while read_head(&mut stream).await.is_some() {
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n");
                    if stream.write_all(head.as_bytes()).await.is_err()
                        || stream.write_all(&body).await.is_err()
                    {
                        return;
                    }
                    if let Some(after) = close_after {
                        tokio::time::sleep(after).await;
                        drop(stream);
                        c.closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                c.ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

#[tokio::test]
async fn a_keep_alive_client_uses_one_upstream_connection() {
    let backend = backends::http("a").await;
    let front = Proxy::start_one("a.example", &[backend.addr]).await;
    let mut conn = Conn::plain(front.http).await;
    for i in 0..20 {
        let answer = conn.get("a.example", &format!("/{i}")).await.unwrap();
        assert_eq!(answer.status, 200, "request {i}");
        assert!(answer.text().starts_with(&format!("backend=a path=/{i} ")));
    }
    assert_eq!(backend.count(), 20);
    assert_eq!(
        backend.connections(),
        1,
        "every request on one upstream connection"
    );
}

#[tokio::test]
async fn upstream_connections_outlive_client_connections() {
    let backend = backends::http("a").await;
    let front = Proxy::start_one("a.example", &[backend.addr]).await;
    for i in 0..10 {
        // A new client connection each time, one GET and one HEAD (no body: released
        // without being polled).
        let answer = get(front.http, "a.example", &format!("/{i}"), &[]).await;
        assert_eq!(answer.status, 200);
        let head = raw(
            front.http,
            b"HEAD /h HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert_eq!(backend.count(), 20);
    assert_eq!(
        backend.connections(),
        1,
        "the pooled connection serves every client"
    );
    assert_eq!(front.ctx.clients.idle_count(), 1);
}

#[tokio::test]
async fn a_response_the_client_abandons_does_not_return_its_connection() {
    // The body is too large for the socket buffers, so the proxy is still streaming it when
    // the client goes away.
    let (backend, counts) = raw_backend(8 * 1024 * 1024, None).await;
    let front = Proxy::start_one("a.example", &[backend]).await;
    {
        let mut client = TcpStream::connect(front.http).await.expect("connect");
        client
            .write_all(b"GET /big HTTP/1.1\r\nhost: a.example\r\n\r\n")
            .await
            .expect("write");
        let mut first = [0u8; 1024];
        let n = client.read(&mut first).await.expect("read");
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        // Dropped with most of the body unread.
    }
    // The half-read connection must not be handed to the next request.
    let answer = get(front.http, "a.example", "/next", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), 8 * 1024 * 1024);
    assert_eq!(counts.requests.load(Ordering::SeqCst), 2);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_used() {
    let (backend, counts) = raw_backend(2, Some(Duration::from_millis(20))).await;
    let front = Proxy::start_one("a.example", &[backend]).await;
    for i in 0..5 {
        let answer = get(front.http, "a.example", &format!("/{i}"), &[]).await;
        assert_eq!(answer.status, 200, "request {i}");
        // Wait until the backend has closed the connection and the proxy has noticed (its
        // pool no longer offers it).
        let closed = wait_until(Duration::from_secs(5), || {
            let done = counts.closed.load(Ordering::SeqCst) > i;
            async move { done }
        })
        .await;
        assert!(closed);
        let noticed = wait_until(Duration::from_secs(5), || {
            let idle = front.ctx.clients.idle_count();
            let ready = front.ctx.clients.ready_count();
            async move { idle == 0 || ready == 0 }
        })
        .await;
        assert!(noticed, "the closed connection still looks usable");
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 5);
    assert_eq!(counts.connections.load(Ordering::SeqCst), 5);
}

/// An idle upstream connection is closed once it has been idle for the pool's idle timeout
/// (90 s, README "Data plane"), by the reaper that runs every 15 s — not only when a request
/// next looks for one — so a proxy whose traffic stopped holds no connections open on its
/// backends. Tokio's clock is paused after the request and moved past both periods.
#[tokio::test]
async fn the_reaper_closes_connections_idle_past_the_timeout() {
    let (backend, counts) = raw_backend(2, None).await;
    let front = Proxy::start_one("a.example", &[backend]).await;
    let answer = get(front.http, "a.example", "/", &[]).await;
    assert_eq!(answer.status, 200);
    let pooled = wait_until(Duration::from_secs(5), || {
        let idle = front.ctx.clients.idle_count();
        async move { idle == 1 }
    })
    .await;
    assert!(pooled, "the connection never went back to the pool");

    tokio::time::pause();
    // Not yet: idle for less than the timeout, through several reaper rounds.
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(15)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(front.ctx.clients.idle_count(), 1);
    assert_eq!(counts.ended.load(Ordering::SeqCst), 0);
    // Past 90 s and the next round: dropped from the pool, and closed on the backend.
    tokio::time::advance(Duration::from_secs(30)).await;
    let reaped = wait_until(Duration::from_secs(5), || {
        let idle = front.ctx.clients.idle_count();
        let ended = counts.ended.load(Ordering::SeqCst);
        async move { idle == 0 && ended == 1 }
    })
    .await;
    assert!(
        reaped,
        "idle {} connections, {} ended on the backend",
        front.ctx.clients.idle_count(),
        counts.ended.load(Ordering::SeqCst)
    );
    assert_eq!(counts.connections.load(Ordering::SeqCst), 1);
}
