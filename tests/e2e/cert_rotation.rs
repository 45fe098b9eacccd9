//! End to end, the built binary: rotating the `spec.tls` Secret file. Within a deadline the next
//! handshake presents the new certificate (the exact DER, seen by rustls and by openssl), while
//! a connection opened before keeps working on the old one. A botched rotation keeps the last
//! good certificate and is reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;

use crate::support::backends;
use crate::support::binary::Binary;
use crate::support::clients::{pem_to_der, s_client};
use crate::support::http::{Conn, peer_leaf, tls_connect};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const HOST: &str = "rot.e2e.test";

#[tokio::test]
async fn a_rewritten_secret_is_served_to_new_handshakes_only() {
    let ca = Ca::new("e2e rotation ca");
    let old = ca.leaf(&[HOST]);
    let new = ca.leaf(&[HOST]);
    assert_ne!(old.cert_der, new.cert_der);
    let backend = backends::http("rot").await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(&m, "svc.yaml", &service("rot", &[backend.addr.port()]));
    manifests::write(
        &m,
        "ingress.yaml",
        &ingress("rot", HOST, "rot", &[], Some("rot-tls")),
    );
    manifests::write(
        &m,
        "secret.yaml",
        &old.secret_yaml(manifests::NS, "rot-tls"),
    );
    let proxy = Binary::start(&m).await;
    let config = ca.client_config(&[b"http/1.1"]);

    // A connection opened before the rotation.
    let (before_cert, mut before) = connect(proxy.https, config.clone()).await;
    assert_eq!(before_cert, old.cert_der.to_vec());
    get(&mut before, "/before").await;
    let s = s_client(proxy.https, HOST, Some(&ca_file)).await;
    assert_eq!(s.verify_code(), Some(0), "{}", s.stdout);
    assert_eq!(pem_to_der(&s.certificates_pem()[0]), old.cert_der.to_vec());

    // Rotate: the same Secret, a new leaf.
    let generation = proxy.generation().await;
    manifests::write(
        &m,
        "secret.yaml",
        &new.secret_yaml(manifests::NS, "rot-tls"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (cert, _) = connect(proxy.https, config.clone()).await;
        if cert == new.cert_der.to_vec() {
            break;
        }
        assert_eq!(
            cert,
            old.cert_der.to_vec(),
            "neither the old nor the new leaf"
        );
        assert!(
            Instant::now() < deadline,
            "still the old certificate 5 s after the rotation:\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.generation().await > generation);
    let s = s_client(proxy.https, HOST, Some(&ca_file)).await;
    assert_eq!(s.verify_code(), Some(0), "{}", s.stdout);
    assert_eq!(pem_to_der(&s.certificates_pem()[0]), new.cert_der.to_vec());
    // The live table names the new certificate's source.
    let table = proxy.table().await;
    let host = table["table"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == HOST)
        .expect("the host")
        .clone();
    assert_eq!(
        host["certificate"]["source"], "Secret default/rot-tls",
        "{host:#}"
    );

    // The connection opened before still works (on the certificate it was opened with).
    get(&mut before, "/after").await;
    assert!(backend.requests().iter().any(|r| r.uri == "/after"));

    // A botched rotation (the key of another certificate): reported, the last good certificate
    // stays in service.
    let stranger = ca.leaf(&[HOST]);
    let mismatched = new.secret_yaml(manifests::NS, "rot-tls").replace(
        &crate::support::pki::indent(&new.key_pem, 4),
        &crate::support::pki::indent(&stranger.key_pem, 4),
    );
    assert_ne!(mismatched, new.secret_yaml(manifests::NS, "rot-tls"));
    manifests::write(&m, "secret.yaml", &mismatched);
    let table = proxy
        .wait_for_table(Duration::from_secs(5), "the Secret's diagnostic", |t| {
            let has = |reason: &str| {
                t["diagnostics"].as_array().is_some_and(|ds| {
                    ds.iter().any(|d| {
                        d["object"] == "Ingress default/rot"
                            && d["reason"] == reason
                            && d["message"]
                                .as_str()
                                .is_some_and(|m| m.contains("Secret default/rot-tls"))
                    })
                })
            };
            has("InvalidSecret") && has("LastGoodKept")
        })
        .await;
    let host = &table["table"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == HOST)
        .expect("the host is still served")["certificate"];
    assert_eq!(host["source"], "Secret default/rot-tls", "{host:#}");
    let (cert, mut after) = connect(proxy.https, config.clone()).await;
    assert_eq!(cert, new.cert_der.to_vec(), "the last good certificate");
    get(&mut after, "/kept").await;
}

/// Opens a TLS connection to HOST through the proxy; returns the leaf it presented (DER) and an
/// HTTP/1.1 connection over it.
async fn connect(at: SocketAddr, config: Arc<rustls::ClientConfig>) -> (Vec<u8>, Conn) {
    let tls = tls_connect(at, config, HOST)
        .await
        .expect("TLS handshake (verified against the test CA)");
    (peer_leaf(&tls).to_vec(), Conn::h1(TokioIo::new(tls)).await)
}

/// GET `path` on `conn`: 200 from the backend, within 5 s.
async fn get(conn: &mut Conn, path: &str) {
    let answer = conn.get(HOST, path).await.expect("an answer within 5s");
    assert_eq!(answer.status, 200, "{path}");
    assert_eq!(answer.header("x-backend"), "rot");
}
