//! Checks that the shared test support itself works: a TLS backend signed by the test CA is
//! reachable with a verifying client and records the SNI it saw.

use crate::support::http::{Conn, Via};
use crate::support::{backends, pki::Ca};

#[tokio::test]
async fn tls_backend_records_sni() {
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&["pod.example.com"]);
    let backend = backends::tls("pod", &leaf, backends::TlsOptions::default()).await;

    let mut conn = Conn::connect(backend.addr, &ca, Via::Tls, "pod.example.com").await;
    let answer = conn.get("pod.example.com", "/hello").await.unwrap();
    assert_eq!(answer.header("x-backend"), "pod");
    assert_eq!(
        &answer.body[..],
        b"backend=pod path=/hello sni=pod.example.com"
    );
    assert_eq!(
        backend.requests()[0].sni.as_deref(),
        Some("pod.example.com")
    );
}
