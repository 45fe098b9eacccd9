//! End to end, the built binary: SNI pass-through. openssl and curl see the BACKEND's
//! certificate (verified against the backend's CA), the backend sees the client's SNI, a
//! `proxy-protocol: v2` backend gets a PROXY header naming the client, and the ingress-nginx
//! alias `ssl-passthrough` behaves the same.

use std::time::Duration;

use crate::support::backends::{self, Backend, TlsOptions};
use crate::support::binary::Binary;
use crate::support::clients::{curl_https, pem_to_der, s_client};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::{Ca, Leaf};

const PLAIN: &str = "secure.e2e.test";
const PROXIED: &str = "pp.e2e.test";
const NGINX: &str = "nginx.e2e.test";

#[tokio::test]
async fn passthrough_splices_to_the_backend_tls() {
    // The backends' own PKI: the proxy holds no certificate for these hosts.
    let backend_ca = Ca::new("e2e backend ca");
    let leaves: Vec<Leaf> = [PLAIN, PROXIED, NGINX]
        .iter()
        .map(|h| backend_ca.leaf(&[h]))
        .collect();
    let plain = backends::tls("secure", &leaves[0], TlsOptions::default()).await;
    let proxied = backends::tls(
        "pp",
        &leaves[1],
        TlsOptions {
            expect_proxy_protocol: true,
        },
    )
    .await;
    let nginx = backends::tls("nginx", &leaves[2], TlsOptions::default()).await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "backend-ca.pem", &backend_ca.cert_pem);
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    for (name, backend) in [("secure", &plain), ("pp", &proxied), ("nginx", &nginx)] {
        manifests::write(
            &m,
            &format!("svc-{name}.yaml"),
            &service(name, &[backend.addr.port()]),
        );
    }
    manifests::write(
        &m,
        "secure.yaml",
        &ingress(
            "secure",
            PLAIN,
            "secure",
            &[("portcullis.io/tls-mode", "passthrough")],
            None,
        ),
    );
    manifests::write(
        &m,
        "pp.yaml",
        &ingress(
            "pp",
            PROXIED,
            "pp",
            &[
                ("portcullis.io/tls-mode", "passthrough"),
                ("portcullis.io/proxy-protocol", "v2"),
            ],
            None,
        ),
    );
    manifests::write(
        &m,
        "nginx.yaml",
        &ingress(
            "nginx",
            NGINX,
            "nginx",
            &[("nginx.ingress.kubernetes.io/ssl-passthrough", "true")],
            None,
        ),
    );
    let proxy = Binary::start(&m).await;

    // openssl: the backend's certificate, verified against the backend's CA.
    for (host, leaf) in [(PLAIN, &leaves[0]), (NGINX, &leaves[2])] {
        let s = s_client(proxy.https, host, Some(&ca_file)).await;
        assert_eq!(
            s.verify_code(),
            Some(0),
            "{host}: {}\n{}",
            s.stdout,
            s.stderr
        );
        let subject = s.subject().unwrap_or_default();
        assert!(
            subject.contains(&format!("CN = {host}")),
            "{host}: {subject}"
        );
        let chain = s.certificates_pem();
        assert_eq!(pem_to_der(&chain[0]), leaf.cert_der.to_vec(), "{host}");
    }

    // curl through it: the TLS backend answers and saw the SNI.
    for (host, backend, name) in [(PLAIN, &plain, "secure"), (NGINX, &nginx, "nginx")] {
        let r = curl_https(host, proxy.https, "/pt", &ca_file, &["--http1.1"]).await;
        assert_eq!(r.exit_code, 0, "{host}: {}", r.stderr);
        assert_eq!(r.status, 200, "{host}: {r:?}");
        assert_eq!(r.body, format!("backend={name} path=/pt sni={host}"));
        let seen = last_request(backend, "/pt");
        assert_eq!(seen.sni.as_deref(), Some(host));
        // The proxy never saw the HTTP inside: no forwarded headers were added.
        assert!(!seen.headers.contains_key("x-forwarded-for"), "{seen:?}");
        assert!(seen.proxy.is_none());
    }

    // PROXY protocol v2 before the backend's ClientHello: the client is 127.0.0.1, and the
    // destination is the proxy's :443 the client connected to.
    let r = curl_https(PROXIED, proxy.https, "/pp", &ca_file, &["--http1.1"]).await;
    assert_eq!(r.exit_code, 0, "{}\n{}", r.stderr, proxy.log_text());
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, format!("backend=pp path=/pp sni={PROXIED}"));
    let seen = last_request(&proxied, "/pp");
    let header = seen.proxy.expect("the backend parsed a PROXY header");
    assert_eq!(header.version, 2);
    assert_eq!(header.source.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_eq!(header.destination, proxy.https);
    assert_eq!(seen.sni.as_deref(), Some(PROXIED));

    // One TCP access-log line per spliced connection, naming the SNI.
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(2), |l| {
                l.contains(" access: ")
                    && l.contains("kind=\"tcp\"")
                    && l.contains(&format!("sni=\"{PROXIED}\""))
            })
            .await,
        "no tcp access-log line:\n{}",
        proxy.log_text()
    );
}

const BULK: &str = "bulk.e2e.test";

/// Bulk transfers either way arrive byte for byte, copied by default and through `splice(2)`
/// (zero copy) with `--passthrough-splice` (README "Data plane",
/// `portcullis_tcp_zero_copy_bytes_total`), where small messages stay copies.
#[tokio::test]
async fn bulk_transfers_arrive_intact_copied_or_spliced() {
    let backend_ca = Ca::new("e2e backend ca");
    let backend = backends::tls("bulk", &backend_ca.leaf(&[BULK]), TlsOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "backend-ca.pem", &backend_ca.cert_pem);
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(&m, "svc.yaml", &service("bulk", &[backend.addr.port()]));
    manifests::write(
        &m,
        "bulk.yaml",
        &ingress(
            "bulk",
            BULK,
            "bulk",
            &[("portcullis.io/tls-mode", "passthrough")],
            None,
        ),
    );
    let spliced = "portcullis_tcp_zero_copy_bytes_total";

    let copying = Binary::start(&m).await;
    bulk_up_and_down(&copying, &backend, &ca_file).await;
    assert_eq!(copying.metric(spliced).await, Some(0.0));
    drop(copying);

    let splicing = Binary::start_with(&m, &["--passthrough-splice"]).await;
    bulk_up_and_down(&splicing, &backend, &ca_file).await;
    // Most of the 6 MiB went through the pipe.
    let moved = splicing.metric(spliced).await.unwrap_or_default();
    assert!(
        moved > f64::from(4u32 << 20),
        "{spliced} = {moved} after 6 MiB of bulk transfers"
    );
}

/// One small exchange (which splices nothing), then 3 MiB up and 3 MiB down through `proxy`'s
/// pass-through host [`BULK`], each on its own connection; waits until the proxy has counted
/// all three connections (their bytes are counted when they end).
async fn bulk_up_and_down(proxy: &Binary, backend: &Backend, ca_file: &std::path::Path) {
    let spliced = "portcullis_tcp_zero_copy_bytes_total";
    let r = curl_https(BULK, proxy.https, "/small", ca_file, &["--http1.1"]).await;
    assert_eq!((r.exit_code, r.status), (0, 200), "{r:?}");
    assert!(
        counted_connections(proxy, 1).await,
        "the first connection was not counted:\n{}",
        proxy.metrics().await
    );
    assert_eq!(proxy.metric(spliced).await, Some(0.0));

    let upload = backends::bulk_body(3 << 20);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &upload).unwrap();
    let data = format!("@{}", file.path().display());
    let r = curl_https(
        BULK,
        proxy.https,
        "/upload",
        ca_file,
        &["--http1.1", "--data-binary", &data],
    )
    .await;
    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    let seen = last_request(backend, "/upload");
    assert!(
        seen.body == upload.as_bytes(),
        "the upload changed on its way: {} of {} bytes",
        seen.body.len(),
        upload.len()
    );

    let r = curl_https(BULK, proxy.https, "/bytes/3145728", ca_file, &["--http1.1"]).await;
    assert_eq!((r.exit_code, r.status), (0, 200), "{}", r.stderr);
    assert!(
        r.body == backends::bulk_body(3 << 20),
        "the download changed on its way: {} bytes",
        r.body.len()
    );
    assert!(
        counted_connections(proxy, 3).await,
        "the bulk connections were not counted:\n{}",
        proxy.metrics().await
    );
}

/// Waits until `proxy` has counted `n` ended pass-through connections to [`BULK`].
async fn counted_connections(proxy: &Binary, n: u32) -> bool {
    let series = format!(r#"portcullis_tcp_connections_total{{host="{BULK}"}}"#);
    crate::support::wait::wait_until(Duration::from_secs(5), || async {
        proxy.metric(&series).await == Some(f64::from(n))
    })
    .await
}

fn last_request(backend: &Backend, uri: &str) -> backends::SeenRequest {
    backend
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.uri == uri)
        .unwrap_or_else(|| panic!("{} saw no {uri}", backend.name))
}
