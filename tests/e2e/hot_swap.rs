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

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backends::{self, TlsOptions};
use crate::support::binary::Binary;
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
    let mut pass_conn = PassStream::open(proxy.https, &backend_ca).await;
    pass_conn.exchange("/start").await;
    let mut ws_conn = tls_connect(proxy.https, front.clone(), WS).await;
    upgrade(&mut ws_conn).await;
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
    pass_conn.exchange("/end").await;
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
    let tls = tls_connect(https, config, HOT).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    let conn = tokio::spawn(conn);
    let (mut ok, mut failed) = (0, Vec::new());
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && failed.is_empty() {
        n += 1;
        let request = http::Request::get(format!("/c{c}/{n}"))
            .header(http::header::HOST, HOT)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let answer = async {
            sender
                .ready()
                .await
                .map_err(|e| format!("not ready: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = response.status();
            let backend = response.headers().get("x-backend").cloned();
            let keep_alive = response
                .headers()
                .get(http::header::CONNECTION)
                .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"close"));
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?;
            if status != 200 || backend.as_ref().is_none_or(|b| b != "hot") {
                return Err(format!("status {status}, backend {backend:?}"));
            }
            if !keep_alive {
                return Err("the proxy closed the keep-alive connection".to_string());
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => failed.push(format!("conn {c} request {n}: {e}")),
            Err(_) => failed.push(format!("conn {c} request {n}: no answer within 5s")),
        }
    }
    drop(sender);
    let _ = conn.await;
    (ok, failed)
}

async fn tls_connect(
    at: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(at).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_string()).expect("name"), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS to {sni}: {e}"))
}

/// An HTTP/1.1 connection through the pass-through host to the TLS backend, kept open.
struct PassStream {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl PassStream {
    async fn open(https: SocketAddr, backend_ca: &Ca) -> PassStream {
        let tls = tls_connect(https, backend_ca.client_config(&[b"http/1.1"]), PASS).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        PassStream { sender }
    }

    /// One request/response on the open stream: the backend answers with the SNI it saw.
    async fn exchange(&mut self, path: &str) {
        self.sender.ready().await.expect("pass-through stream open");
        let request = http::Request::get(path)
            .header(http::header::HOST, PASS)
            .body(Empty::new())
            .expect("request");
        let response =
            tokio::time::timeout(Duration::from_secs(5), self.sender.send_request(request))
                .await
                .expect("an answer on the pass-through stream")
                .expect("pass-through response");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("backend=pass path={path} sni={PASS}")
        );
    }
}

/// Sends a websocket upgrade and reads the `101` head.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {WS}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("read 101 head"));
            assert!(head.len() < 4096, "head too long");
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .expect("101 within 5s");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// Writes `bytes` on the upgraded connection and reads them back.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    stream
        .write_all(bytes)
        .await
        .expect("write on the upgraded connection");
    stream.flush().await.expect("flush");
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echo within 5s")
        .expect("read the echo");
    assert_eq!(back, bytes);
}
