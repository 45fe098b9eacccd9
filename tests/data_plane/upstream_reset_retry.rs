//! Regression (found by tests/soak.rs): killing one of two backends of a Service made plain
//! GETs fail with 502 although the other backend was healthy. A pooled connection to the dying
//! pod, or a request it was serving when killed, closes before any response head; such a
//! request is now retried on another endpoint when its method is idempotent and its body was
//! never sent (here: none). A POST that reached the dying pod still gets 502: it may have had an effect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::backends;
use crate::support::http as client;
use crate::support::in_process::Proxy;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A backend that reads a request head, then closes without answering (a pod killed while
/// serving). Counts the requests it swallowed.
async fn dying_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let swallowed = Arc::new(AtomicUsize::new(0));
    let count = swallowed.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                // Dropped: the proxy sees the connection close before a response.
            });
        }
    });
    (addr, swallowed)
}

async fn request(front: SocketAddr, method: &str, body: &'static [u8]) -> u16 {
    let method = method.parse().expect("method");
    let answer = client::send(front, method, "app.example", "/", body).await;
    answer.status.as_u16()
}

#[tokio::test]
async fn idempotent_requests_are_retried_when_an_endpoint_closes_before_answering() {
    let (dying, swallowed) = dying_backend().await;
    let healthy = backends::http("healthy").await;
    let front = Proxy::start_one("app.example", &[dying, healthy.addr]).await;

    // Round-robin sends about half of these to the dying endpoint first.
    for _ in 0..6 {
        assert_eq!(request(front.http, "GET", b"").await, 200);
        assert_eq!(request(front.http, "DELETE", b"").await, 200);
    }
    assert!(
        swallowed.load(Ordering::SeqCst) > 0,
        "the dying endpoint was never tried"
    );
    assert_eq!(healthy.count(), 12);
}

#[tokio::test]
async fn a_post_that_reached_a_dying_endpoint_is_not_resent() {
    let (dying, swallowed) = dying_backend().await;
    let healthy = backends::http("healthy").await;
    let front = Proxy::start_one("app.example", &[dying, healthy.addr]).await;

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(request(front.http, "POST", b"once").await);
    }
    // Those that reached the dying endpoint are 502, never replayed to the healthy one.
    let failed = statuses.iter().filter(|s| **s == 502).count();
    assert_eq!(failed, swallowed.load(Ordering::SeqCst), "{statuses:?}");
    assert!(failed > 0, "{statuses:?}");
    assert_eq!(healthy.count(), 4 - failed, "{statuses:?}");
}
