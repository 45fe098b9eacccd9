//! End to end, the built binary: re-encrypt. Our certificate to curl, TLS again to the
//! backend with the rule host as SNI, verified against `portcullis.io/backend-ca`; a wrong CA is
//! 502 unless `backend-verify: "false"`; HAProxy's `server-ssl` alias re-encrypts too.

use crate::support::backends::{self, Backend, TlsOptions};
use crate::support::binary::Binary;
use crate::support::clients::curl_https;
use crate::support::manifests::{self, ca_secret, ingress, ingress_class, service};
use crate::support::pki::Ca;
use std::time::Duration;

const GOOD: &str = "re.e2e.test";
const WRONG: &str = "wrong.e2e.test";
const NO_VERIFY: &str = "noverify.e2e.test";
const HAPROXY: &str = "haproxy.e2e.test";

#[tokio::test]
async fn reencrypt_verifies_the_backend_and_sends_the_rule_host_as_sni() {
    let front_ca = Ca::new("e2e front ca");
    let backend_ca = Ca::new("e2e backend ca");
    let other_ca = Ca::new("e2e unrelated ca");
    let hosts = [GOOD, WRONG, NO_VERIFY, HAPROXY];
    // Each backend's certificate names its host; signed by the backend CA.
    let backend_leaf = backend_ca.leaf(&hosts);
    let mut servers = Vec::new();
    for (i, _) in hosts.iter().enumerate() {
        servers.push(backends::tls(&format!("b{i}"), &backend_leaf, TlsOptions::default()).await);
    }

    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "front-ca.pem", &front_ca.cert_pem);
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(
        &m,
        "backend-ca.yaml",
        &ca_secret("backend-ca", &backend_ca.cert_pem),
    );
    manifests::write(
        &m,
        "other-ca.yaml",
        &ca_secret("other-ca", &other_ca.cert_pem),
    );
    let annotations: [&[(&str, &str)]; 4] = [
        &[
            ("portcullis.io/tls-mode", "reencrypt"),
            ("portcullis.io/backend-ca", "backend-ca"),
        ],
        &[
            ("portcullis.io/tls-mode", "reencrypt"),
            ("portcullis.io/backend-ca", "other-ca"),
        ],
        &[
            ("portcullis.io/tls-mode", "reencrypt"),
            ("portcullis.io/backend-ca", "other-ca"),
            ("portcullis.io/backend-verify", "false"),
        ],
        &[("haproxy.org/server-ssl", "true")],
    ];
    for (i, host) in hosts.iter().enumerate() {
        let name = format!("b{i}");
        manifests::write(
            &m,
            &format!("{name}.yaml"),
            &[
                service(&name, &[servers[i].addr.port()]),
                front_ca
                    .leaf(&[host])
                    .secret_yaml(manifests::NS, &format!("{name}-tls")),
                ingress(
                    &name,
                    host,
                    &name,
                    annotations[i],
                    Some(&format!("{name}-tls")),
                ),
            ]
            .join("---\n"),
        );
    }
    let proxy = Binary::start(&m).await;

    // Verified against backend-ca: 200, and the backend saw the rule host as SNI.
    let r = curl_https(GOOD, proxy.https, "/re", &ca_file, &["--http1.1"]).await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!(r.status, 200, "{r:?}\n{}", proxy.log_text());
    assert_eq!(r.body, format!("backend=b0 path=/re sni={GOOD}"));
    let seen = last_request(&servers[0], "/re");
    assert_eq!(seen.sni.as_deref(), Some(GOOD));
    // Re-encrypt is HTTP-aware: the forwarded headers are there.
    assert_eq!(
        seen.headers.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    // HTTP/2 to us, HTTP/1.1 inside TLS to the backend.
    let r = curl_https(GOOD, proxy.https, "/re2", &ca_file, &["--http2"]).await;
    assert_eq!((r.version.as_str(), r.status), ("HTTP/2", 200), "{r:?}");

    // The backend's certificate does not chain to other-ca: 502, and the backend served nothing.
    let r = curl_https(WRONG, proxy.https, "/wrong", &ca_file, &["--http1.1"]).await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!(r.status, 502, "{r:?}");
    assert!(servers[1].requests().iter().all(|s| s.uri != "/wrong"));

    // Same wrong CA, verification off: 200.
    let r = curl_https(NO_VERIFY, proxy.https, "/nv", &ca_file, &["--http1.1"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        last_request(&servers[2], "/nv").sni.as_deref(),
        Some(NO_VERIFY)
    );

    // HAProxy Ingress alias: server-ssl re-encrypts (no CA: not verified).
    let r = curl_https(HAPROXY, proxy.https, "/ha", &ca_file, &["--http1.1"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, format!("backend=b3 path=/ha sni={HAPROXY}"));
    assert_eq!(
        last_request(&servers[3], "/ha").sni.as_deref(),
        Some(HAPROXY)
    );

    // The access log says how each request reached its pod. A line is written when its
    // response ends, which may be just after the client read it: wait for each.
    for (path, status) in [("/re", 200), ("/wrong", 502), ("/ha", 200)] {
        let logged = proxy
            .wait_for_log(Duration::from_secs(5), |l| {
                l.contains(" access: ")
                    && l.contains(&format!("path=\"{path}\""))
                    && l.contains(&format!("status={status}"))
                    && l.contains("mode=\"reencrypt\"")
            })
            .await;
        assert!(
            logged,
            "no reencrypt access line for {path}:\n{}",
            proxy.log_text()
        );
    }
}

fn last_request(backend: &Backend, uri: &str) -> backends::SeenRequest {
    backend
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.uri == uri)
        .unwrap_or_else(|| panic!("{} saw no {uri}", backend.name))
}
