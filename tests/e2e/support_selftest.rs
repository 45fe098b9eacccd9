//! Checks that the shared test support itself works: a TLS backend signed by the test CA is
//! reachable with a verifying client and records the SNI it saw.

use std::sync::Arc;

use crate::support::{backends, pki::Ca};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

#[tokio::test]
async fn tls_backend_records_sni() {
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["pod.example.com"]);
    let backend = backends::tls("pod", &leaf, backends::TlsOptions::default()).await;

    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&ca.client_config(&[b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(backend.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("pod.example.com").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/hello")
        .header("host", "pod.example.com")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["x-backend"], "pod");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"backend=pod path=/hello sni=pod.example.com");
    assert_eq!(
        backend.requests()[0].sni.as_deref(),
        Some("pod.example.com")
    );
}
