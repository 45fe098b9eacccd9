//! Several proxy workers (`proxy::serve_on_workers`, what the binary runs with one worker per
//! CPU): each thread accepts on the same listeners and runs its connections to the end. Every
//! connection is served whichever worker took it, shutdown drains all of them, and giving up on
//! the drain stops the workers and frees the ports.

use std::time::Duration;

use crate::support::backends;
use crate::support::binary::metric_value;
use crate::support::fixture::Tables;
use crate::support::http::{Conn, Via};
use crate::support::in_process::Proxy;
use crate::support::pki::Ca;
use crate::support::wait::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WORKERS: usize = 3;

/// Names of this process's threads that are proxy workers.
fn worker_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("portcullis-prox"))
        .collect()
}

#[tokio::test]
async fn every_connection_is_served_whichever_worker_accepts_it() {
    let ca = Ca::new("workers ca");
    let leaf = ca.leaf(&["tls.example"]);
    let plain = backends::http("plain").await;
    let behind_tls = backends::http("behind-tls").await;
    let table = Tables::one("plain.example", &[plain.addr])
        .terminate("tls.example", &leaf)
        .to(&[behind_tls.addr])
        .build();
    let proxy = Proxy::start_on_workers(table, WORKERS).await;
    // The thread names are cut to 15 bytes by the kernel ("portcullis-prox").
    assert!(
        wait_until(Duration::from_secs(5), || async {
            worker_threads().len() >= WORKERS
        })
        .await,
        "{WORKERS} worker threads expected, found {:?}",
        worker_threads()
    );

    // The workers race for these connections; each connection then sends several requests
    // at the same time as the others, which stay on its worker.
    let mut clients = Vec::new();
    for i in 0..12 {
        let (via, host) = match i % 3 {
            0 => (Via::Plain, "plain.example"),
            1 => (Via::Tls, "tls.example"),
            _ => (Via::H2, "tls.example"),
        };
        let mut conn = Conn::open(proxy.http, proxy.https, &ca, via, host).await;
        clients.push(tokio::spawn(async move {
            let mut backends = Vec::new();
            for _ in 0..4 {
                let answer = conn.get(host, "/").await.expect("answered");
                assert_eq!(answer.status, 200, "{via:?} {host}");
                backends.push(answer.header("x-backend").to_owned());
            }
            (host, backends)
        }));
    }
    for client in clients {
        let (host, backends) = client.await.expect("client task");
        let expected = if host == "plain.example" {
            "plain"
        } else {
            "behind-tls"
        };
        assert!(
            backends.iter().all(|b| b == expected),
            "{host}: {backends:?}"
        );
    }
    assert_eq!(plain.count() + behind_tls.count(), 48);
}

#[tokio::test]
async fn shutdown_waits_for_connections_on_every_worker() {
    let backend = backends::delayed("slow", Duration::from_secs(2)).await;
    let mut proxy =
        Proxy::start_on_workers(Tables::one("a.example", &[backend.addr]).build(), WORKERS).await;
    // Requests in flight on six connections, two per worker (they are shared out evenly), when
    // the drain starts: each gets its answer.
    let mut in_flight = Vec::new();
    for _ in 0..6 {
        let mut conn = Conn::plain(proxy.http).await;
        in_flight.push(tokio::spawn(async move {
            conn.get("a.example", "/")
                .await
                .map(|answer| answer.status.as_u16())
        }));
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            let n = backend.count();
            async move { n == 6 }
        })
        .await,
        "the six requests did not reach the backend"
    );
    proxy.begin_shutdown();
    for request in in_flight {
        assert_eq!(request.await.expect("client task"), Ok(200));
    }
    let served = tokio::time::timeout(Duration::from_secs(5), &mut proxy.task)
        .await
        .expect("serve returns once the connections are done")
        .expect("serve task");
    assert!(served.is_ok(), "{served:?}");
    assert!(
        TcpStream::connect(proxy.http).await.is_err(),
        "a listener still accepts after the drain"
    );
}

#[tokio::test]
async fn giving_up_on_the_drain_stops_the_workers_and_frees_the_ports() {
    let backend = backends::http("a").await;
    let proxy =
        Proxy::start_on_workers(Tables::one("a.example", &[backend.addr]).build(), WORKERS).await;
    let (http, https) = (proxy.http, proxy.https);
    // An idle keep-alive connection the drain would wait 60 s for.
    let mut open = TcpStream::connect(http).await.expect("connect");
    open.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .expect("request");
    let mut answer = [0u8; 12];
    open.read_exact(&mut answer).await.expect("answer");
    assert_eq!(&answer, b"HTTP/1.1 200");

    // What `runtime` does when the grace period is over: drop the serving future.
    drop(proxy);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while open.read_buf(&mut rest).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the open connection outlived its worker");
    // Every worker held the listening sockets: binding them again proves they are all gone.
    assert!(
        wait_until(Duration::from_secs(5), || async move {
            let again = (
                std::net::TcpListener::bind(http),
                std::net::TcpListener::bind(https),
            );
            again.0.is_ok() && again.1.is_ok()
        })
        .await,
        "the listening ports are still held after the workers were stopped"
    );
}

/// `portcullis_worker_connections{worker="i"}` for each worker.
fn per_worker(proxy: &Proxy) -> Vec<f64> {
    let metrics = proxy.metrics.encode();
    (0..WORKERS)
        .map(|i| {
            let series = format!("portcullis_worker_connections{{worker=\"{i}\"}}");
            metric_value(&metrics, &series).unwrap_or(-1.0)
        })
        .collect()
}

/// Which worker's `accept` wins is a race the kernel and the scheduler decide; a worker that
/// runs more connections than another by more than one hands the next one it accepts to the
/// least loaded (HAProxy's threads share connections out the same way). The counts are what
/// operators see in `portcullis_worker_connections`.
#[tokio::test]
async fn connections_are_shared_out_evenly_between_workers() {
    let backend = backends::http("a").await;
    let proxy =
        Proxy::start_on_workers(Tables::one("a.example", &[backend.addr]).build(), WORKERS).await;
    let mut open = Vec::new();
    for _ in 0..60 {
        let mut conn = Conn::plain(proxy.http).await;
        // Answered: the connection is being served by its worker.
        assert_eq!(conn.get("a.example", "/").await.unwrap().status, 200);
        open.push(conn);
    }
    let counts = per_worker(&proxy);
    assert_eq!(counts.iter().sum::<f64>(), 60.0, "{counts:?}");
    let (least, most) = counts
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &n| (lo.min(n), hi.max(n)));
    assert!(most - least <= 2.0, "uneven: {counts:?}");

    // Requests keep working on every connection, whichever worker took it over.
    for conn in &mut open {
        assert_eq!(conn.get("a.example", "/").await.unwrap().status, 200);
    }
    drop(open);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let counts = per_worker(&proxy);
            async move { counts.iter().all(|&n| n == 0.0) }
        })
        .await,
        "closed connections still counted: {:?}",
        per_worker(&proxy)
    );
}
