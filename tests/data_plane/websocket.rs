//! Websocket upgrades through terminate and re-encrypt: the upgrade request is forwarded,
//! the upstream's 101 comes back, then bytes flow both ways through the joined connections.

use crate::support::backends;
use crate::support::http_harness::{self as h, tls_connect};
use crate::support::pki::Ca;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use portcullis::table::ClassSettings;
use portcullis::table::upstream::{BackendTls, UpstreamProtocol};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn upgrade_and_echo(front: &h::Front, ca: &Ca) {
    let tls = tls_connect(front.addr, ca, "ws.example", &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = hyper::Request::get("/chat")
        .header("host", "ws.example")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["upgrade"], "websocket");
    assert_eq!(resp.headers()["connection"], "upgrade");
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.expect("client upgrade"));
    for message in [&b"ping"[..], b"hello, websocket", &[0u8, 1, 2, 255]] {
        io.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message);
    }
}

#[tokio::test]
async fn websocket_through_terminate() {
    let ca = Ca::new("front ca");
    let leaf = ca.leaf(&["ws.example"]);
    let backend = backends::upgrade_echo("ws", None).await;
    let up = h::upstream(&[backend.addr], UpstreamProtocol::Http);
    let front = h::tls(
        h::table(vec![h::vhost("ws.example", up)], ClassSettings::default()),
        &leaf,
        &[b"http/1.1"],
    )
    .await;
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
    let up = h::upstream(
        &[backend.addr],
        UpstreamProtocol::Https(BackendTls {
            sni: "pod.internal".into(),
            verify: true,
            ca: Some(Arc::new(vec![backend_ca.cert_der.clone()])),
            ca_secret: None,
        }),
    );
    let front = h::tls(
        h::table(vec![h::vhost("ws.example", up)], ClassSettings::default()),
        &leaf,
        &[b"http/1.1"],
    )
    .await;
    upgrade_and_echo(&front, &ca).await;
    assert_eq!(backend.requests()[0].sni.as_deref(), Some("pod.internal"));
}

#[tokio::test]
async fn plain_requests_do_not_upgrade() {
    // A request without `Connection: upgrade` has its Upgrade header stripped (hop-by-hop).
    let backend = backends::http("plain").await;
    let up = h::upstream(&[backend.addr], UpstreamProtocol::Http);
    let front = h::plain(
        h::table(vec![h::vhost("ws.example", up)], ClassSettings::default()),
        443,
    )
    .await;
    let answer = h::get(front.addr, "ws.example", "/", &[("upgrade", "websocket")]).await;
    assert_eq!(answer.status, 200);
    assert!(!backend.requests()[0].headers.contains_key("upgrade"));
}
