//! End to end, the built binary: table swaps under load. Four keep-alive HTTPS connections
//! send requests back to back while an unrelated Ingress file is rewritten 50 times (each
//! rewrite waits for the next table generation). No request fails, no connection breaks, and a
//! pass-through TLS stream and an upgraded (websocket-style) connection opened before the first
//! swap still carry data after the last. SIGTERM with them still open exits 0 after the grace
//! period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;

use crate::support::backends::{self, TlsOptions, exchange};
use crate::support::binary::Binary;
use crate::support::http::{Conn, Via, echo, tls_connect, upgrade};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const HOT: &str = "hot.e2e.test";
const PASS: &str = "pt.e2e.test";
const WS: &str = "ws.e2e.test";
const SWAPS: usize = 50;
const MIN_REQUESTS: usize = 2_000;
const CONNECTIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_break_no_request_and_no_open_connection() {
    let ca = Ca::new("e2e hot-swap ca");
    let backend_ca = Ca::new("e2e hot-swap backend ca");
    let hot = backends::http("hot").await;
    let pass = backends::tls("pass", &backend_ca.leaf(&[PASS]), TlsOptions::default()).await;
    let ws = backends::upgrade_echo("ws", None).await;

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(
        m,
        "hot.yaml",
        &[
            service("hot", &[hot.addr.port()]),
            ca.leaf(&[HOT]).secret_yaml(manifests::NS, "hot-tls"),
            ingress("hot", HOT, "hot", &[], Some("hot-tls")),
        ]
        .join("---\n"),
    );
    manifests::write(
        m,
        "pass.yaml",
        &[
            service("pass", &[pass.addr.port()]),
            ingress(
                "pass",
                PASS,
                "pass",
                &[("portcullis.io/tls-mode", "passthrough")],
                None,
            ),
        ]
        .join("---\n"),
    );
    manifests::write(
        m,
        "ws.yaml",
        &[
            service("ws", &[ws.addr.port()]),
            ca.leaf(&[WS]).secret_yaml(manifests::NS, "ws-tls"),
            ingress("ws", WS, "ws", &[], Some("ws-tls")),
        ]
        .join("---\n"),
    );
    manifests::write(m, "churn.yaml", &churn(0));
    let proxy = Binary::start(m).await;

    // The long-lived connections, opened before the first swap.
    let front = ca.client_config(&[b"http/1.1"]);
    let mut pass_conn = Conn::connect(proxy.https, &backend_ca, Via::Tls, PASS).await;
    exchange(&mut pass_conn, "pass", PASS, "/start").await;
    let mut ws_conn = tls_connect(proxy.https, front.clone(), WS)
        .await
        .expect("TLS to the websocket host");
    upgrade(&mut ws_conn, WS, "/ws").await;
    echo(&mut ws_conn, b"before the first swap").await;

    // The load: four keep-alive connections, requests back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let (front, stop) = (front.clone(), stop.clone());
        let https = proxy.https;
        load.spawn(async move { client_loop(c, https, front, stop).await });
    }

    // The swaps: rewrite an unrelated Ingress, wait for each new table.
    let started = Instant::now();
    let mut generation = proxy.generation().await;
    for i in 1..=SWAPS {
        manifests::write(m, "churn.yaml", &churn(i));
        generation = proxy
            .wait_generation_above(generation, Duration::from_secs(5))
            .await;
    }
    let swap_time = started.elapsed();
    // Keep the load going until it reached its minimum (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    while served(&hot) < MIN_REQUESTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    let mut failures = Vec::new();
    while let Some(result) = load.join_next().await {
        let (ok, failed) = result.expect("client task");
        total += ok;
        failures.extend(failed);
    }
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        total >= MIN_REQUESTS,
        "only {total} requests in {swap_time:?} of swaps"
    );
    assert_eq!(served(&hot), total, "the backend served every request");

    // The last swap is live: the churned Ingress has its last host.
    let table = proxy.table().await;
    let hosts: Vec<&str> = table["table"]["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter_map(|h| h["host"].as_str())
        .collect();
    assert!(
        hosts.contains(&format!("churn-{SWAPS}.e2e.test").as_str()),
        "{hosts:?}"
    );
    assert!(!hosts.contains(&"churn-0.e2e.test"), "{hosts:?}");

    // The long-lived connections survived every swap: the same streams still carry data (a
    // hyper `SendRequest` is bound to its one connection; the echo is on the upgraded socket).
    exchange(&mut pass_conn, "pass", PASS, "/end").await;
    echo(&mut ws_conn, b"after the last swap").await;
    let upgrades = ws.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(upgrades, 1, "one upgrade request, never repeated");

    // SIGTERM with both still open: the binary drains for its grace period (1 s), closes
    // them, and exits 0.
    let stopping = Instant::now();
    let status = proxy.stop(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopping.elapsed()
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), ws_conn.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the upgraded connection is closed after exit"
    );
}

/// GET requests a backend served (health probes are HEAD).
fn served(backend: &backends::Backend) -> usize {
    backend
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

/// The unrelated Ingress, version `i`: a different host each time.
fn churn(i: usize) -> String {
    ingress(
        "churn",
        &format!("churn-{i}.e2e.test"),
        "hot",
        &[("portcullis.io/hsts", &format!("max-age={i}"))],
        None,
    )
}

/// One keep-alive HTTP/1.1-over-TLS connection sending GETs until `stop`; returns the number of
/// good answers and the failures.
async fn client_loop(
    c: usize,
    https: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let tls = tls_connect(https, config, HOT)
        .await
        .unwrap_or_else(|e| panic!("TLS to {HOT}: {e}"));
    let mut conn = Conn::h1(TokioIo::new(tls)).await;
    let (mut ok, mut failed) = (0, Vec::new());
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && failed.is_empty() {
        n += 1;
        match conn.get(HOT, &format!("/c{c}/{n}")).await {
            Ok(answer) if answer.status != 200 || answer.backend() != Some("hot") => {
                failed.push(format!(
                    "conn {c} request {n}: status {}, backend {:?}",
                    answer.status,
                    answer.backend()
                ))
            }
            Ok(answer) if answer.closes() => failed.push(format!(
                "conn {c} request {n}: the proxy closed the keep-alive connection"
            )),
            Ok(_) => ok += 1,
            Err(e) => failed.push(format!("conn {c} request {n}: {e}")),
        }
    }
    (ok, failed)
}
