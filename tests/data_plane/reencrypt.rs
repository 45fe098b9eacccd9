//! Re-encrypt: TLS to the pod verified against the backend CA with the configured SNI; a wrong
//! CA is a 502; `verify: false` accepts an unknown CA; upstream connections are pooled.

use std::sync::Arc;

use crate::support::backends;
use crate::support::fixture::{Tables, upstream};
use crate::support::http::{Answer, tls_get};
use crate::support::in_process::Proxy;
use crate::support::pki::Ca;
use portcullis::table::upstream::{BackendTls, UpstreamProtocol};

fn https(sni: &str, verify: bool, ca: Option<&Ca>) -> UpstreamProtocol {
    UpstreamProtocol::Https(BackendTls {
        sni: sni.into(),
        verify,
        ca: ca.map(|ca| Arc::new(vec![ca.cert_der.clone()])),
        ca_secret: None,
    })
}

async fn front_for(protocol: UpstreamProtocol, backend: &backends::Backend) -> (Proxy, Ca) {
    let ca = Ca::new("front ca");
    let leaf = ca.leaf(&["app.example"]);
    let table = Tables::new()
        .terminate("app.example", &leaf)
        .route(upstream(&[backend.addr], protocol))
        .build();
    (Proxy::start(table).await, ca)
}

/// The pod: a TLS backend for `pod.internal` signed by `ca`.
async fn pod(ca: &Ca) -> backends::Backend {
    backends::tls("pod", &ca.leaf(&["pod.internal"]), Default::default()).await
}

async fn get(front: &Proxy, ca: &Ca, path: &str) -> Answer {
    tls_get(front.https, ca, "app.example", path, &[]).await
}

#[tokio::test]
async fn verified_against_backend_ca_with_configured_sni() {
    let backend_ca = Ca::new("backend ca");
    let backend = pod(&backend_ca).await;
    let (front, ca) = front_for(https("pod.internal", true, Some(&backend_ca)), &backend).await;
    let answer = get(&front, &ca, "/secure?x=1").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = &backend.requests()[0];
    assert_eq!(seen.sni.as_deref(), Some("pod.internal"));
    assert_eq!(seen.uri, "/secure?x=1");
    assert_eq!(seen.headers["host"], "app.example");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn wrong_ca_is_502() {
    let backend_ca = Ca::new("backend ca");
    let other_ca = Ca::new("other ca");
    let backend = pod(&backend_ca).await;
    let (front, ca) = front_for(https("pod.internal", true, Some(&other_ca)), &backend).await;
    let answer = get(&front, &ca, "/").await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.text(), "502 bad gateway\n");
    assert_eq!(backend.count(), 0);
    // A verified name that the pod's certificate does not carry fails the same way.
    let (front, ca) = front_for(https("other.internal", true, Some(&backend_ca)), &backend).await;
    assert_eq!(get(&front, &ca, "/").await.status, 502);
}

#[tokio::test]
async fn unverified_accepts_an_unknown_ca() {
    let unknown_ca = Ca::new("unknown ca");
    let backend = pod(&unknown_ca).await;
    let (front, ca) = front_for(https("pod.internal", false, None), &backend).await;
    let answer = get(&front, &ca, "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(backend.requests()[0].sni.as_deref(), Some("pod.internal"));
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let backend_ca = Ca::new("backend ca");
    let backend = pod(&backend_ca).await;
    let (front, ca) = front_for(https("pod.internal", true, Some(&backend_ca)), &backend).await;
    // Each request on a new client connection: the pool lives in the context, not the
    // client connection.
    for i in 0..5 {
        let answer = get(&front, &ca, &format!("/{i}")).await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(backend.count(), 5);
    assert_eq!(backend.connections(), 1);
}
