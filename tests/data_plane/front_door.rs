//! The :443 front door for terminated hosts: certificate choice by SNI, ALPN, rotation, and
//! what happens to clients that do not send a proper ClientHello in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::fixture::{Tables, certificate, tcp_upstream};
use crate::support::http::{client_hello_bytes, insecure_client_config, peer_leaf, tls_connect};
use crate::support::in_process::Proxy;
use crate::support::pki::Ca;
use portcullis::table::{ClassSettings, LimitSettings, TimeoutSettings};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

const LONG: Duration = Duration::from_secs(10);

/// True once the proxy has closed `stream` (end of stream or reset), within LONG.
async fn closed_by_proxy(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(LONG, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// DNS names in a certificate's SAN extension.
fn dns_names(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("x509");
    cert.subject_alternative_name()
        .expect("san")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn vhost_certificates_by_sni_exact_and_wildcard() {
    let ca = Ca::new("test ca");
    let foo = ca.leaf(&["foo.example.com"]);
    let wild = ca.leaf(&["*.wild.example.com"]);
    let table = Tables::new()
        .terminate("foo.example.com", &foo)
        .terminate("*.wild.example.com", &wild)
        .build();
    let proxy = Proxy::start(table).await;
    let config = ca.client_config(&[b"http/1.1"]);
    let tls = tls_connect(proxy.https, config.clone(), "foo.example.com")
        .await
        .expect("verified handshake for foo");
    assert_eq!(peer_leaf(&tls), foo.cert_der);
    let tls = tls_connect(proxy.https, config, "a.wild.example.com")
        .await
        .expect("verified handshake for a wildcard subdomain");
    assert_eq!(peer_leaf(&tls), wild.cert_der);
}

#[tokio::test]
async fn unknown_and_missing_sni_get_the_fallback_which_names_no_host() {
    let ca = Ca::new("test ca");
    let foo = ca.leaf(&["foo.example.com"]);
    let proxy = Proxy::start(Tables::new().terminate("foo.example.com", &foo).build()).await;
    let fallback = proxy.fallback.key.cert[0].clone();
    for sni in [true, false] {
        let tls = tls_connect(
            proxy.https,
            insecure_client_config(&[b"http/1.1"], sni),
            "unknown.example.com",
        )
        .await
        .expect("handshake");
        assert_eq!(peer_leaf(&tls), fallback, "sni sent: {sni}");
        assert!(dns_names(&fallback).is_empty());
    }
    // A verifying client refuses it: it is nobody's certificate.
    assert!(
        tls_connect(proxy.https, ca.client_config(&[]), "unknown.example.com")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unknown_sni_gets_the_tables_default_certificate_when_set() {
    let ca = Ca::new("test ca");
    let default = ca.leaf(&["default.example.com"]);
    let table = Tables::new()
        .default_certificate(certificate(&default, &["default.example.com"]))
        .build();
    let proxy = Proxy::start(table).await;
    let tls = tls_connect(
        proxy.https,
        insecure_client_config(&[], true),
        "other.example.com",
    )
    .await
    .expect("handshake");
    assert_eq!(peer_leaf(&tls), default.cert_der);
}

#[tokio::test]
async fn cert_dir_certificate_covers_a_host_without_its_own() {
    let ca = Ca::new("test ca");
    let dir = ca.leaf(&["*.dir.example.com"]);
    let table = Tables::new()
        .http("a.dir.example.com")
        .cert_dir(vec![certificate(&dir, &["*.dir.example.com"])])
        .build();
    let proxy = Proxy::start(table).await;
    let tls = tls_connect(proxy.https, ca.client_config(&[]), "a.dir.example.com")
        .await
        .expect("verified with the cert-dir certificate");
    assert_eq!(peer_leaf(&tls), dir.cert_der);
}

#[tokio::test]
async fn alpn_h2_is_negotiated_when_offered() {
    let ca = Ca::new("test ca");
    let foo = ca.leaf(&["foo.example.com"]);
    let proxy = Proxy::start(Tables::new().terminate("foo.example.com", &foo).build()).await;
    let tls = tls_connect(
        proxy.https,
        ca.client_config(&[b"h2", b"http/1.1"]),
        "foo.example.com",
    )
    .await
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let tls = tls_connect(
        proxy.https,
        ca.client_config(&[b"http/1.1"]),
        "foo.example.com",
    )
    .await
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn rotated_certificate_is_served_on_the_next_handshake() {
    let ca = Ca::new("test ca");
    let old = ca.leaf(&["foo.example.com"]);
    let new = ca.leaf(&["foo.example.com"]);
    let with = |leaf| Tables::new().terminate("foo.example.com", leaf).build();
    let proxy = Proxy::start(with(&old)).await;
    let config = ca.client_config(&[]);
    let tls = tls_connect(proxy.https, config.clone(), "foo.example.com")
        .await
        .unwrap();
    assert_eq!(peer_leaf(&tls), old.cert_der);
    proxy.swap(with(&new));
    let tls = tls_connect(proxy.https, config, "foo.example.com")
        .await
        .unwrap();
    assert_eq!(peer_leaf(&tls), new.cert_der);
}

#[tokio::test]
async fn tls12_client_and_tls13_minimum() {
    let ca = Ca::new("test ca");
    let foo = ca.leaf(&["foo.example.com"]);
    let foo_only = || Tables::new().terminate("foo.example.com", &foo);
    let tls12 = Arc::new(
        rustls::ClientConfig::builder_with_provider(crate::support::pki::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
    );
    let proxy = Proxy::start(foo_only().build()).await;
    let tls = tls_connect(proxy.https, tls12.clone(), "foo.example.com")
        .await
        .expect("TLS 1.2 allowed by default");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    proxy.swap(
        foo_only()
            .with_class(|class| class.tls_min_version_1_3 = true)
            .build(),
    );
    let error = tls_connect(proxy.https, tls12, "foo.example.com")
        .await
        .expect_err("TLS 1.2 refused");
    // The refusal is a proper TLS alert, not a bare close.
    assert!(
        error.to_string().contains("ProtocolVersion"),
        "expected a protocol_version alert, got: {error}"
    );
}

#[tokio::test]
async fn truncated_hello_then_silence_is_closed_at_the_deadline() {
    let class = ClassSettings {
        timeouts: TimeoutSettings {
            client_hello: Duration::from_millis(300),
            ..TimeoutSettings::default()
        },
        ..ClassSettings::default()
    };
    let proxy = Proxy::start(Tables::new().class(class).build()).await;
    let ca = Ca::new("unused");
    let hello = client_hello_bytes(ca.client_config(&[]), "slow.example.com");
    let mut stream = TcpStream::connect(proxy.https).await.unwrap();
    let started = Instant::now();
    stream.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert!(closed_by_proxy(&mut stream).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "closed after {elapsed:?}");
}

#[tokio::test]
async fn hello_larger_than_the_cap_is_closed() {
    let class = ClassSettings {
        limits: LimitSettings {
            max_client_hello_bytes: 1024,
            ..LimitSettings::default()
        },
        ..ClassSettings::default()
    };
    let proxy = Proxy::start(Tables::new().class(class).build()).await;
    let ca = Ca::new("unused");
    // The default hello carries a post-quantum key share: well over 1 KiB.
    let hello = client_hello_bytes(ca.client_config(&[]), "big.example.com");
    assert!(hello.len() > 1024);
    let mut stream = TcpStream::connect(proxy.https).await.unwrap();
    let _ = stream.write_all(&hello).await;
    assert!(closed_by_proxy(&mut stream).await);

    // The same hello with the default cap is fine.
    proxy.swap(Tables::new().build());
    tls_connect(
        proxy.https,
        insecure_client_config(&[], true),
        "big.example.com",
    )
    .await
    .expect("default cap");
}

#[tokio::test]
async fn connection_limit_closes_the_excess() {
    let ca = Ca::new("test ca");
    let foo = ca.leaf(&["foo.example.com"]);
    let class = ClassSettings {
        limits: LimitSettings {
            max_connections: 2,
            ..LimitSettings::default()
        },
        ..ClassSettings::default()
    };
    let table = Tables::new()
        .terminate("foo.example.com", &foo)
        .class(class)
        .build();
    let proxy = Proxy::start(table).await;
    // Two connections waiting in the ClientHello phase hold both slots (accepted in order).
    let first = TcpStream::connect(proxy.https).await.unwrap();
    let _second = TcpStream::connect(proxy.https).await.unwrap();
    let mut third = TcpStream::connect(proxy.https).await.unwrap();
    assert!(closed_by_proxy(&mut third).await, "the third is closed");

    // The first is still served.
    let name = ServerName::try_from("foo.example.com").unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca.client_config(&[]))
        .connect(name, first)
        .await
        .expect("an admitted connection completes its handshake");
    assert_eq!(peer_leaf(&tls), foo.cert_der);
}

#[tokio::test]
async fn openssl_s_client_verifies_terminated_and_passthrough_hosts() {
    use crate::support::backends;

    let ca = Ca::new("test ca");
    let foo = ca.leaf(&["foo.example.com"]);
    let pod = ca.leaf(&["pod.example.com"]);
    let backend = backends::tls("pod", &pod, backends::TlsOptions::default()).await;
    let table = Tables::new()
        .terminate("foo.example.com", &foo)
        .passthrough("pod.example.com", tcp_upstream(&[backend.addr], None))
        .build();
    let proxy = Proxy::start(table).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();

    for host in ["foo.example.com", "pod.example.com"] {
        let run = tokio::process::Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(proxy.https.to_string())
            .arg("-servername")
            .arg(host)
            .arg("-CAfile")
            .arg(&ca_file)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("openssl s_client finished in time")
            .expect("openssl is installed (.ci/run installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("Verify return code: 0 (ok)"),
            "{host}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let subject = stdout
            .lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_default()
            .replace(' ', "");
        assert_eq!(subject, format!("subject=CN={host}"), "{stdout}");
    }
}
