//! Websocket upgrades through terminate and re-encrypt: the upgrade request is forwarded,
//! the upstream's 101 comes back, then bytes flow both ways through the joined connections.

use crate::support::backends::{self, Backend};
use crate::support::fixture::{Tables, upstream};
use crate::support::http::{get, tls_connect, upgrade};
use crate::support::in_process::Proxy;
use crate::support::pki::Ca;
use portcullis::table::upstream::{BackendTls, UpstreamProtocol};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn upgrade_and_echo(front: &Proxy, ca: &Ca) {
    let config = ca.client_config(&[b"http/1.1"]);
    let mut io = tls_connect(front.https, config, "ws.example")
        .await
        .unwrap();
    let answer = upgrade(&mut io, "ws.example", "/chat").await;
    assert_eq!(answer.status, 101);
    assert_eq!(answer.header("upgrade"), "websocket");
    assert_eq!(answer.header("connection"), "upgrade");
    for message in [&b"ping"[..], b"hello, websocket", &[0u8, 1, 2, 255]] {
        io.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message);
    }
}

/// A proxy terminating TLS for `ws.example` (its certificate from `ca`) in front of a plain
/// websocket echo backend.
pub(crate) async fn terminated_websocket(ca: &Ca) -> (Backend, Proxy) {
    let leaf = ca.leaf(&["ws.example"]);
    let backend = backends::upgrade_echo("ws", None).await;
    let table = Tables::new()
        .terminate("ws.example", &leaf)
        .to(&[backend.addr])
        .build();
    (backend, Proxy::start(table).await)
}

#[tokio::test]
async fn websocket_through_terminate() {
    let ca = Ca::new("front ca");
    let (backend, front) = terminated_websocket(&ca).await;
    upgrade_and_echo(&front, &ca).await;
    let seen = &backend.requests()[0];
    assert_eq!(seen.uri, "/chat");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["connection"], "upgrade");
    assert_eq!(
        seen.headers["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn websocket_through_reencrypt() {
    let ca = Ca::new("front ca");
    let leaf = ca.leaf(&["ws.example"]);
    let backend_ca = Ca::new("backend ca");
    let backend = backends::upgrade_echo("ws", Some(&backend_ca.leaf(&["pod.internal"]))).await;
    let up = upstream(
        &[backend.addr],
        UpstreamProtocol::Https(BackendTls {
            sni: "pod.internal".into(),
            verify: true,
            ca: Some(Arc::new(vec![backend_ca.cert_der.clone()])),
            ca_secret: None,
        }),
    );
    let table = Tables::new()
        .terminate("ws.example", &leaf)
        .route(up)
        .build();
    let front = Proxy::start(table).await;
    upgrade_and_echo(&front, &ca).await;
    assert_eq!(backend.requests()[0].sni.as_deref(), Some("pod.internal"));
}

#[tokio::test]
async fn plain_requests_do_not_upgrade() {
    // A request without `Connection: upgrade` has its Upgrade header stripped (hop-by-hop).
    let backend = backends::http("plain").await;
    let front = Proxy::start_one("ws.example", &[backend.addr]).await;
    let answer = get(front.http, "ws.example", "/", &[("upgrade", "websocket")]).await;
    assert_eq!(answer.status, 200);
    assert!(!backend.requests()[0].headers.contains_key("upgrade"));
}
