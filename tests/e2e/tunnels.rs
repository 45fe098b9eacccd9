//! End to end, the built binary: byte tunnels (upgraded websocket connections on :80 and
//! pass-through TLS streams on :443). An open tunnel outlives its endpoint's removal from the
//! table, and ends after IngressClassParams `timeouts.tunnelIdle` without a byte either way,
//! not after the HTTP keep-alive `timeouts.idle`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::backends::{self, TlsOptions, exchange};
use crate::support::binary::Binary;
use crate::support::http::{Conn, Via, echo, get, tls_connect, upgrade};
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

    let mut tunnel = upgraded(proxy.http).await;
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

    let mut stream = pass_stream(proxy.https, &backend_ca).await;
    exchange(&mut stream, "pass", PASS, "/before").await;

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
    exchange(&mut stream, "pass", PASS, "/after").await;
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
    manifests::write(
        m,
        "class.yaml",
        &manifests::ingress_class_with_params("tunnels", &format!("timeouts: {timeouts}")),
    );
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

    let mut quiet = upgraded(proxy.http).await;
    let mut busy = upgraded(proxy.http).await;
    let mut quiet_stream = pass_stream(proxy.https, &backend_ca).await;

    // Longer than the keep-alive idle, well short of the tunnel idle: the deliberate pause.
    echo(&mut quiet, b"first").await;
    exchange(&mut quiet_stream, "pass", PASS, "/first").await;
    tokio::time::sleep(KEEP_ALIVE_IDLE * 3).await;
    echo(&mut quiet, b"second").await;
    let ws_quiet_since = Instant::now();
    exchange(&mut quiet_stream, "pass", PASS, "/second").await;
    let stream_quiet_since = Instant::now();
    let quiet_end = tokio::spawn(async move {
        let mut rest = Vec::new();
        let read = quiet.read_to_end(&mut rest).await;
        (read.map(|_| rest), Instant::now())
    });
    let stream_end = tokio::spawn(async move {
        quiet_stream.ended().await;
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

    for (kind, sni) in [("websocket", " sni=- "), ("pass-through", "sni=\"pt.")] {
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
    get(at, host, path, &[]).await.status.as_u16()
}

/// A websocket upgrade for WS through :80; returns the upgraded connection after the `101`.
async fn upgraded(http: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(http).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    upgrade(&mut stream, WS, "/ws").await;
    stream
}

/// An HTTP/1.1 connection through the pass-through host to the TLS backend, kept open.
async fn pass_stream(https: SocketAddr, backend_ca: &Ca) -> Conn {
    Conn::connect(https, backend_ca, Via::Tls, PASS).await
}
