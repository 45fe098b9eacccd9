//! End to end, the built binary: byte tunnels (upgraded websocket connections on :80 and
//! pass-through TLS streams on :443). An open tunnel outlives its endpoint's removal from the
//! table, and ends after IngressClassParams `timeouts.tunnelIdle` without a byte either way,
//! not after the HTTP keep-alive `timeouts.idle`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::support::backends::{self, TlsOptions};
use crate::support::binary::Binary;
use crate::support::in_process::tls_connect;
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const WS: &str = "ws.tunnels.test";
const PASS: &str = "pt.tunnels.test";
/// Upper bound on any one step that waits for the proxy.
const STEP: Duration = Duration::from_secs(5);

/// Removing a websocket tunnel's endpoint from the table (the Ingress stays) leaves the open
/// tunnel working, while a new request finds no endpoint.
#[tokio::test]
async fn websocket_tunnel_outlives_its_endpoint() {
    let ws = backends::upgrade_echo("ws", None).await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "ws-svc.yaml", &service("ws", &[ws.addr.port()]));
    manifests::write(m, "ws.yaml", &ingress("ws", WS, "ws", &[], None));
    let proxy = Binary::start(m).await;

    let mut tunnel = upgrade(proxy.http).await;
    echo(&mut tunnel, b"before the endpoint left").await;

    let generation = proxy.generation().await;
    manifests::write(m, "ws-svc.yaml", &service("ws", &[]));
    proxy.wait_generation_above(generation, STEP).await;
    assert_eq!(
        status(proxy.http, WS, "/fresh").await,
        503,
        "a new request must find the endpoint gone"
    );

    echo(&mut tunnel, b"after the endpoint left").await;
    // Health probes are HEAD requests; the GET is the one upgrade.
    let upgrades = ws.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(upgrades, 1, "one upgrade, never repeated");
}

/// The same for a pass-through TLS stream: the client keeps talking TLS (HTTP/1.1 inside) with
/// the pod over the one connection, while a new connection finds no endpoint.
#[tokio::test]
async fn passthrough_stream_outlives_its_endpoint() {
    let backend_ca = Ca::new("tunnels backend ca");
    let pass = backends::tls("pass", &backend_ca.leaf(&[PASS]), TlsOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "pass-svc.yaml", &service("pass", &[pass.addr.port()]));
    manifests::write(m, "pass.yaml", &passthrough_ingress());
    let proxy = Binary::start(m).await;

    let mut stream = PassStream::open(proxy.https, &backend_ca).await;
    stream.exchange("/before").await;

    let generation = proxy.generation().await;
    manifests::write(m, "pass-svc.yaml", &service("pass", &[]));
    proxy.wait_generation_above(generation, STEP).await;
    let fresh = tokio::time::timeout(
        STEP,
        tls_connect(proxy.https, backend_ca.client_config(&[b"http/1.1"]), PASS),
    )
    .await
    .expect("a new connection is answered or closed in time");
    assert!(fresh.is_err(), "a new connection must find no endpoint");

    // The same `SendRequest`: it is bound to the one TLS connection opened before.
    stream.exchange("/after").await;
    let seen: Vec<String> = pass.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(seen, ["/before", "/after"]);
}

/// `timeouts.tunnelIdle` ends a quiet tunnel (websocket and pass-through alike), logged as
/// `idle-timeout`; traffic more often than that keeps a tunnel open past it; and the much
/// shorter keep-alive `timeouts.idle` does not apply to tunnels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_idle_timeout_ends_only_quiet_tunnels() {
    const KEEP_ALIVE_IDLE: Duration = Duration::from_millis(200);
    const TUNNEL_IDLE: Duration = Duration::from_millis(1500);
    let ws = backends::upgrade_echo("ws", None).await;
    let backend_ca = Ca::new("tunnels backend ca");
    let pass = backends::tls("pass", &backend_ca.leaf(&[PASS]), TlsOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    let timeouts = format!(
        "{{idle: {}ms, tunnelIdle: {}ms}}",
        KEEP_ALIVE_IDLE.as_millis(),
        TUNNEL_IDLE.as_millis()
    );
    manifests::write(m, "class.yaml", &class_with_timeouts(&timeouts));
    manifests::write(m, "ws-svc.yaml", &service("ws", &[ws.addr.port()]));
    manifests::write(m, "ws.yaml", &ingress("ws", WS, "ws", &[], None));
    manifests::write(m, "pass-svc.yaml", &service("pass", &[pass.addr.port()]));
    manifests::write(m, "pass.yaml", &passthrough_ingress());
    let proxy = Binary::start(m).await;
    let table = proxy.table().await;
    assert!(
        table
            .to_string()
            .contains(&format!("idle={}ms", KEEP_ALIVE_IDLE.as_millis())),
        "the IngressClassParams timeouts are live: {table:#}"
    );
    assert!(
        !proxy.log_text().contains("InvalidParams"),
        "{}",
        proxy.log_text()
    );

    let mut quiet = upgrade(proxy.http).await;
    let mut busy = upgrade(proxy.http).await;
    let mut quiet_stream = PassStream::open(proxy.https, &backend_ca).await;

    // Longer than the keep-alive idle, well short of the tunnel idle: the deliberate pause.
    echo(&mut quiet, b"first").await;
    quiet_stream.exchange("/first").await;
    tokio::time::sleep(KEEP_ALIVE_IDLE * 3).await;
    echo(&mut quiet, b"second").await;
    let ws_quiet_since = Instant::now();
    quiet_stream.exchange("/second").await;
    let stream_quiet_since = Instant::now();
    let quiet_end = tokio::spawn(async move {
        let mut rest = Vec::new();
        let read = quiet.read_to_end(&mut rest).await;
        (read.map(|_| rest), Instant::now())
    });
    let stream_end = tokio::spawn(async move {
        quiet_stream.closed().await;
        Instant::now()
    });

    // The busy tunnel moves a byte every fifth of the tunnel idle, for twice the tunnel idle.
    let busy_until = Instant::now() + TUNNEL_IDLE * 2;
    while Instant::now() < busy_until {
        echo(&mut busy, b".").await;
        tokio::time::sleep(TUNNEL_IDLE / 5).await;
    }

    // The quiet ones were closed by the proxy about the tunnel idle after their last byte (the
    // slack is scheduling between the proxy moving that byte and this client seeing it: far
    // less than the gap to the keep-alive idle or the pause), while the busy one lived on.
    let (read, ws_closed) = tokio::time::timeout(STEP, quiet_end)
        .await
        .expect("the quiet websocket tunnel is closed by the proxy")
        .expect("reader task");
    assert_eq!(read.expect("a clean end of stream"), b"");
    let stream_closed = tokio::time::timeout(STEP, stream_end)
        .await
        .expect("the quiet pass-through stream is closed by the proxy")
        .expect("stream task");
    for (kind, since, closed) in [
        ("websocket", ws_quiet_since, ws_closed),
        ("pass-through", stream_quiet_since, stream_closed),
    ] {
        let quiet_for = closed.duration_since(since);
        assert!(
            quiet_for >= TUNNEL_IDLE * 9 / 10 && closed < busy_until,
            "the {kind} tunnel closed after {quiet_for:?} without a byte, {:?} before the busy \
             one stopped",
            busy_until.saturating_duration_since(closed)
        );
    }
    echo(&mut busy, b"still open").await;

    for (kind, sni) in [("websocket", "sni=\"-\""), ("pass-through", "sni=\"pt.")] {
        assert!(
            proxy
                .wait_for_log(STEP, |l| {
                    l.contains("kind=\"tcp\"")
                        && l.contains(sni)
                        && l.contains("termination=\"idle-timeout\"")
                })
                .await,
            "no idle-timeout access-log line for the {kind} tunnel:\n{}",
            proxy.log_text()
        );
    }
}

/// Our IngressClass with an IngressClassParams that sets `timeouts` (a YAML flow mapping).
fn class_with_timeouts(timeouts: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
spec:
  controller: portcullis.io/ingress-controller
  parameters:
    apiGroup: portcullis.io
    kind: IngressClassParams
    name: tunnels
    scope: Cluster
---
apiVersion: portcullis.io/v1alpha1
kind: IngressClassParams
metadata:
  name: tunnels
spec:
  timeouts: {timeouts}
"
    )
}

fn passthrough_ingress() -> String {
    ingress(
        "pass",
        PASS,
        "pass",
        &[("portcullis.io/tls-mode", "passthrough")],
        None,
    )
}

/// The status of `GET path` for `host` on a new connection.
async fn status(at: SocketAddr, host: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(at).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read the answer");
    let raw = String::from_utf8_lossy(&raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {raw:?}"))
}

/// A websocket upgrade for WS through :80; returns the upgraded connection after the `101`.
async fn upgrade(http: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(http).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
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
    tokio::time::timeout(STEP, read_head)
        .await
        .expect("101 in time");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Writes `bytes` on the upgraded connection and reads them back from the echo backend.
async fn echo(stream: &mut TcpStream, bytes: &[u8]) {
    stream
        .write_all(bytes)
        .await
        .expect("write on the upgraded connection");
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(STEP, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read the echo");
    assert_eq!(back, bytes);
}

/// An HTTP/1.1 connection through the pass-through host to the TLS backend, kept open.
struct PassStream {
    sender: SendRequest<Empty<Bytes>>,
    connection: JoinHandle<()>,
}

impl PassStream {
    async fn open(https: SocketAddr, backend_ca: &Ca) -> PassStream {
        let tls = tls_connect(https, backend_ca.client_config(&[b"http/1.1"]), PASS)
            .await
            .expect("TLS with the pod through the proxy");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 handshake");
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        PassStream { sender, connection }
    }

    /// One request/response on the open stream: the backend answers with the path and SNI.
    async fn exchange(&mut self, path: &str) {
        self.sender.ready().await.expect("pass-through stream open");
        let request = http::Request::get(path)
            .header(http::header::HOST, PASS)
            .body(Empty::new())
            .expect("request");
        let response = tokio::time::timeout(STEP, self.sender.send_request(request))
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

    /// Resolves when the connection has ended.
    async fn closed(&mut self) {
        let _ = (&mut self.connection).await;
    }
}
