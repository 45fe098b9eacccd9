//! `timeouts.connect` (IngressClassParams `spec.timeouts.connect`): an endpoint that never
//! completes the TCP handshake costs the request at most that long, then the next endpoint is
//! tried; with no other endpoint the answer is 502, not a hang until the response timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::backends;
use crate::support::fixture::Tables;
use crate::support::http::get;
use crate::support::in_process::Proxy;
use portcullis::table::ClassSettings;

/// An address whose SYNs go unanswered: a listener with a backlog of 0 that never accepts,
/// its accept queue filled first, so the kernel drops further SYNs (the client would retry
/// after 1 s, then 3 s...).
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break, // the queue is full: SYNs are dropped from here on
        }
    }
    (socket, fillers, addr)
}

fn class(connect: Duration) -> ClassSettings {
    let mut class = ClassSettings::default();
    class.timeouts.connect = connect;
    class
}

#[tokio::test]
async fn a_silent_endpoint_costs_the_connect_timeout_then_the_next_is_tried() {
    let (_socket, _fillers, hole) = black_hole();
    let healthy = backends::http("healthy").await;
    let table = Tables::one("a.example", &[hole, healthy.addr])
        .class(class(Duration::from_millis(300)))
        .build();
    let front = Proxy::start(table).await;
    for _ in 0..2 {
        let started = Instant::now();
        let answer = get(front.http, "a.example", "/", &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn only_a_silent_endpoint_is_502_after_the_connect_timeout() {
    let (_socket, _fillers, hole) = black_hole();
    let table = Tables::one("a.example", &[hole])
        .class(class(Duration::from_millis(300)))
        .build();
    let front = Proxy::start(table).await;
    let started = Instant::now();
    let answer = get(front.http, "a.example", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 502, "{}", answer.text());
    // Well under the 60 s response timeout and the kernel's SYN retries.
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
