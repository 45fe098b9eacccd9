//! End to end, the built binary: client certificate authentication (`auth-tls-*`) with real
//! TLS clients (curl `--cert/--key`, openssl) and a real backend, as ingress-nginx documents
//! it (annotations.md, "Client Certificate Authentication"; examples/auth/client-certs):
//!
//! - `auth-tls-secret` names a Secret with `ca.crt` (and optionally `ca.crl`);
//!   `auth-tls-verify-client` is `on` (the default: "Failed certificate verification will
//!   result in a status code 400"), `off`, `optional` ("The request fails with status code
//!   400 when a certificate is provided that is not signed by the CA. When no or an otherwise
//!   invalid certificate is provided, the request does not fail, but instead the verification
//!   result is sent to the upstream service") or `optional_no_ca` ("do not fail the request
//!   when the client certificate is not signed by the CAs");
//! - `auth-tls-verify-depth` (default 1), `auth-tls-error-page` ("the URL/Page that user
//!   should be redirected in case of a Certificate Authentication Error"),
//!   `auth-tls-pass-certificate-to-upstream` (the certificate in header `ssl-client-cert`);
//! - the pod gets `ssl-client-verify` (`SUCCESS`, `NONE`, `FAILED:<why>`),
//!   `ssl-client-subject-dn` and `ssl-client-issuer-dn`.
//!
//! Abuse cases of issue 14: no certificate, an expired one, another CA's, one beyond the
//! depth, a revoked one (CRL), the CA rotated (enforced within 2 s), and an mTLS host reached
//! on a connection whose SNI named another host (421, HTTP/1.1 and HTTP/2).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::backends::{self, Backend};
use crate::support::binary::{Binary, check};
use crate::support::clients::{Curl, curl_https};
use crate::support::http::{Conn, Via, insecure_client_config, tls_connect};
use crate::support::manifests::{self, NS, ingress, ingress_class, service};
use crate::support::pki::{Ca, Leaf, indent, provider};
use crate::support::wait::wait_until;

const MTLS: &str = "mtls.access.e2e.test";
const PLAIN: &str = "plain.access.e2e.test";
const OPTIONAL: &str = "optional.access.e2e.test";
const NO_CA: &str = "noca.access.e2e.test";
const DEEP: &str = "deep.access.e2e.test";
const PAGE: &str = "page.access.e2e.test";

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// The servers' CA, and the files a test's clients use.
struct Pki {
    servers: Ca,
    dir: PathBuf,
    server_ca: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let servers = Ca::new("Access Server CA");
        let server_ca = manifests::write_pem(dir, "server-ca.pem", &servers.cert_pem);
        Pki {
            servers,
            dir: dir.to_path_buf(),
            server_ca,
        }
    }

    /// `--cert`/`--key` files for `leaf` (with `chain` PEM appended to the certificate).
    fn client_files(&self, name: &str, leaf: &Leaf, chain: &str) -> [String; 4] {
        let cert = manifests::write_pem(
            &self.dir,
            &format!("{name}.crt"),
            &format!("{}{chain}", leaf.cert_pem),
        );
        let key = manifests::write_pem(&self.dir, &format!("{name}.key"), &leaf.key_pem);
        [
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]
    }

    /// The Ingress for `host` (its own certificate) with `annotations`, and its TLS Secret.
    fn host(&self, host: &str, annotations: &[(&str, &str)]) -> String {
        let name = host.split('.').next().unwrap_or("h");
        let leaf = self.servers.leaf(&[host]);
        format!(
            "{}---\n{}",
            leaf.secret_yaml(NS, &format!("{name}-tls")),
            ingress(name, host, "web", annotations, Some(&format!("{name}-tls")))
        )
    }
}

/// An Opaque Secret `name` with `ca.crt` and, when given, `ca.crl`.
fn client_ca_secret(name: &str, ca_pem: &str, crl_pem: Option<&str>) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NS}\ntype: Opaque\nstringData:\n  ca.crt: |\n{}\n",
        indent(ca_pem, 4)
    );
    if let Some(crl) = crl_pem {
        out.push_str(&format!("  ca.crl: |\n{}\n", indent(crl, 4)));
    }
    out
}

/// `curl https://HOST/PATH` trusting the servers' CA, with `args`.
async fn get(pki: &Pki, proxy: &Binary, host: &str, path: &str, args: &[String]) -> Curl {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl_https(host, proxy.https, path, &pki.server_ca, &args).await
}

/// The `ssl-client-*` headers the pod saw on the request for `path`.
fn pod_saw(backend: &Backend, path: &str) -> std::collections::BTreeMap<String, String> {
    backend
        .proxied()
        .into_iter()
        .rev()
        .find(|r| r.uri == path)
        .unwrap_or_else(|| panic!("the pod never saw {path}"))
        .headers
        .into_iter()
        .filter(|(k, _)| k.starts_with("ssl-client-"))
        .collect()
}

/// `on` (the default): no certificate → 400 "No required SSL certificate was sent"; another
/// CA's, an expired one, one whose chain is longer than `auth-tls-verify-depth` → 400 "The
/// SSL certificate error" (nginx's texts); none of them reaches the pod. A good one is
/// served with the subject and issuer DNs (RFC 2253 order, as nginx's `$ssl_client_s_dn`),
/// and the client's own `ssl-client-*` headers never reach the pod. With depth 2, the chain
/// through an intermediate is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_refuses_missing_foreign_expired_and_too_deep_certificates() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let clients = Ca::new("Access Client CA");
    let other = Ca::new("Other CA");
    let intermediate = clients.intermediate("Access Intermediate CA");
    let secret = (format!("{NGINX}auth-tls-secret"), format!("{NS}/client-ca"));
    let on = [(secret.0.as_str(), secret.1.as_str())];
    let depth2 = [
        (secret.0.as_str(), "client-ca"),
        ("nginx.ingress.kubernetes.io/auth-tls-verify-depth", "2"),
    ];
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("ca", client_ca_secret("client-ca", &clients.cert_pem, None)),
            ("mtls", pki.host(MTLS, &on)),
            ("deep", pki.host(DEEP, &depth2)),
        ],
    );
    let proxy = Binary::start(&m).await;

    let none = get(&pki, &proxy, MTLS, "/none", &[]).await;
    assert_eq!(none.status, 400, "{none:?}");
    assert!(
        none.body.contains("No required SSL certificate was sent"),
        "{none:?}"
    );

    let good = pki.client_files("alice", &clients.client("alice", 1), "");
    let mut spoofing = good.to_vec();
    spoofing.extend(["-H".into(), "ssl-client-verify: FORGED".into()]);
    spoofing.extend(["-H".into(), "ssl-client-subject-dn: CN=admin".into()]);
    let answer = get(&pki, &proxy, MTLS, "/good", &spoofing).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = pod_saw(&backend, "/good");
    assert_eq!(seen["ssl-client-verify"], "SUCCESS", "{seen:?}");
    assert_eq!(
        seen["ssl-client-subject-dn"], "O=Portcullis Tests,CN=alice",
        "{seen:?}"
    );
    assert_eq!(seen["ssl-client-issuer-dn"], "CN=Access Client CA");
    assert!(!seen.contains_key("ssl-client-cert"), "not asked: {seen:?}");

    let chained = intermediate.client("carol", 3);
    let cases = [
        ("foreign", other.client("mallory", 2), String::new()),
        ("expired", clients.expired_client("old", 4), String::new()),
        ("deep", chained.clone(), intermediate.cert_pem.clone()),
    ];
    for (name, leaf, chain) in &cases {
        let args = pki.client_files(name, leaf, chain);
        let answer = get(&pki, &proxy, MTLS, &format!("/{name}"), &args).await;
        assert_eq!(answer.status, 400, "{name}: {answer:?}");
        assert!(
            answer.body.contains("The SSL certificate error"),
            "{name}: {answer:?}"
        );
    }
    let paths: Vec<String> = backend.proxied().into_iter().map(|r| r.uri).collect();
    assert_eq!(
        paths,
        vec!["/good".to_string()],
        "refused requests reached the pod"
    );

    // The same chain is within a depth of 2.
    let args = pki.client_files("carol", &chained, &intermediate.cert_pem);
    let answer = get(&pki, &proxy, DEEP, "/deep-ok", &args).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        pod_saw(&backend, "/deep-ok")["ssl-client-verify"],
        "SUCCESS"
    );
}

/// `optional`: no certificate, or an expired one of the CA, is passed with
/// `ssl-client-verify` saying why (`NONE`, `FAILED:certificate has expired`); another CA's is
/// 400. `optional_no_ca`: another CA's is passed too (`FAILED:unable to get local issuer
/// certificate`), and with `auth-tls-pass-certificate-to-upstream` the pod gets the
/// certificate as URL-encoded PEM in `ssl-client-cert`. `auth-tls-error-page`: a refused
/// client is redirected there instead of 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_modes_pass_with_the_reason_and_forward_the_certificate() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let clients = Ca::new("Access Client CA");
    let other = Ca::new("Other CA");
    let secret = "nginx.ingress.kubernetes.io/auth-tls-secret";
    let verify = "nginx.ingress.kubernetes.io/auth-tls-verify-client";
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("ca", client_ca_secret("client-ca", &clients.cert_pem, None)),
            (
                "optional",
                pki.host(OPTIONAL, &[(secret, "client-ca"), (verify, "optional")]),
            ),
            (
                "noca",
                pki.host(
                    NO_CA,
                    &[
                        (secret, "client-ca"),
                        (verify, "optional_no_ca"),
                        (
                            "nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream",
                            "true",
                        ),
                    ],
                ),
            ),
            (
                "page",
                pki.host(
                    PAGE,
                    &[
                        (secret, "client-ca"),
                        (
                            "nginx.ingress.kubernetes.io/auth-tls-error-page",
                            "https://errors.example.com/cert.html",
                        ),
                    ],
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let spoof = ["-H".to_string(), "ssl-client-verify: SUCCESS".to_string()];
    let answer = get(&pki, &proxy, OPTIONAL, "/none", &spoof).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = pod_saw(&backend, "/none");
    assert_eq!(seen["ssl-client-verify"], "NONE", "{seen:?}");
    assert!(!seen.contains_key("ssl-client-subject-dn"), "{seen:?}");

    let expired = pki.client_files("old", &clients.expired_client("old", 4), "");
    let answer = get(&pki, &proxy, OPTIONAL, "/expired", &expired).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = pod_saw(&backend, "/expired");
    assert_eq!(
        seen["ssl-client-verify"], "FAILED:certificate has expired",
        "{seen:?}"
    );
    assert_eq!(seen["ssl-client-subject-dn"], "O=Portcullis Tests,CN=old");

    // Signed by the CA through an intermediate, beyond depth 1: passed, and the pod is told.
    let intermediate = clients.intermediate("Access Intermediate CA");
    let deep = pki.client_files(
        "carol",
        &intermediate.client("carol", 3),
        &intermediate.cert_pem,
    );
    let answer = get(&pki, &proxy, OPTIONAL, "/deep", &deep).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = pod_saw(&backend, "/deep");
    assert_eq!(
        seen["ssl-client-verify"], "FAILED:certificate chain too long",
        "{seen:?}"
    );

    let mallory = other.client("mallory", 2);
    let foreign = pki.client_files("mallory", &mallory, "");
    let answer = get(&pki, &proxy, OPTIONAL, "/foreign", &foreign).await;
    assert_eq!(answer.status, 400, "{answer:?}");

    let answer = get(&pki, &proxy, NO_CA, "/foreign", &foreign).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = pod_saw(&backend, "/foreign");
    assert_eq!(
        seen["ssl-client-verify"], "FAILED:unable to get local issuer certificate",
        "{seen:?}"
    );
    assert_eq!(seen["ssl-client-issuer-dn"], "CN=Other CA");
    let forwarded = percent_decode(&seen["ssl-client-cert"]);
    assert_eq!(
        forwarded.trim(),
        mallory.cert_pem.trim(),
        "ssl-client-cert is the client's PEM, URL-encoded"
    );
    assert!(!seen["ssl-client-cert"].contains(['\n', ' ']));

    let answer = get(&pki, &proxy, PAGE, "/none", &[]).await;
    assert_eq!(answer.status, 302, "{answer:?}");
    assert_eq!(
        answer.header("location"),
        Some("https://errors.example.com/cert.html")
    );
    let good = pki.client_files("alice", &clients.client("alice", 1), "");
    let answer = get(&pki, &proxy, PAGE, "/good", &good).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// `ca.crl` in the Secret: a certificate it revokes is refused (400), its siblings are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let clients = Ca::new("Access Client CA");
    let crl = clients.crl(&[66]);
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            (
                "ca",
                client_ca_secret("client-ca", &clients.cert_pem, Some(&crl)),
            ),
            (
                "mtls",
                pki.host(MTLS, &[(&format!("{NGINX}auth-tls-secret"), "client-ca")]),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let revoked = pki.client_files("revoked", &clients.client("revoked", 66), "");
    let answer = get(&pki, &proxy, MTLS, "/revoked", &revoked).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let kept = pki.client_files("kept", &clients.client("kept", 67), "");
    let answer = get(&pki, &proxy, MTLS, "/kept", &kept).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let paths: Vec<String> = backend.proxied().into_iter().map(|r| r.uri).collect();
    assert_eq!(paths, vec!["/kept".to_string()]);
}

/// CA rotation without a restart: the Secret's `ca.crt` is rewritten; within 2 s new
/// handshakes are judged by the new CA (its clients served, the old CA's refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_ca_is_enforced_within_two_seconds() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let old = Ca::new("Old Client CA");
    let new = Ca::new("New Client CA");
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("ca", client_ca_secret("client-ca", &old.cert_pem, None)),
            (
                "mtls",
                pki.host(MTLS, &[(&format!("{NGINX}auth-tls-secret"), "client-ca")]),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let old_leaf = old.client("old", 1);
    let old_client = pki.client_files("old", &old_leaf, "");
    let new_client = pki.client_files("new", &new.client("new", 2), "");
    assert_eq!(get(&pki, &proxy, MTLS, "/", &old_client).await.status, 200);
    assert_eq!(get(&pki, &proxy, MTLS, "/", &new_client).await.status, 400);
    let tls = tls_connect(proxy.https, client_config(&pki.servers, &old_leaf), MTLS)
        .await
        .expect("TLS with the old CA's certificate");
    let mut kept_alive = Conn::h1(hyper_util::rt::TokioIo::new(tls)).await;
    let answer = kept_alive.get(MTLS, "/before").await.expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");

    let rotated = Instant::now();
    manifests::write(
        &m,
        "ca.yaml",
        &client_ca_secret("client-ca", &new.cert_pem, None),
    );
    let enforced = wait_until(Duration::from_secs(2), || async {
        get(&pki, &proxy, MTLS, "/", &new_client).await.status == 200
    })
    .await;
    assert!(enforced, "the new CA was not enforced within 2 s");
    assert!(rotated.elapsed() < Duration::from_secs(3));
    assert_eq!(get(&pki, &proxy, MTLS, "/", &old_client).await.status, 400);

    // A keep-alive connection verified by the old CA gets 421 and is closed; the client's
    // retry handshakes under the new CA.
    let answer = kept_alive.get(MTLS, "/after").await.expect("an answer");
    assert_eq!(answer.status, 421, "{answer:?}");
    assert!(
        kept_alive.closed_by_proxy().await,
        "the connection stayed open"
    );
}

/// A TLS client presenting `leaf`, trusting `servers`.
fn client_config(servers: &Ca, leaf: &Leaf) -> std::sync::Arc<rustls::ClientConfig> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf.key_der.clone().into());
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(servers.roots())
        .with_client_auth_cert(vec![leaf.cert_der.clone()], key)
        .expect("client certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

/// No bypass by SNI: a connection whose SNI named a host without client certificates (so no
/// certificate was asked for) cannot reach the mTLS host by its `Host` (HTTP/1.1) or
/// `:authority` (HTTP/2): 421 Misdirected Request (RFC 9110 §15.5.20), and nothing reaches
/// the pod. The host without client certificates is still served by SNI/Host coalescing
/// among its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_host_behind_another_sni_is_421_on_http1_and_http2() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let clients = Ca::new("Access Client CA");
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("ca", client_ca_secret("client-ca", &clients.cert_pem, None)),
            (
                "mtls",
                pki.host(MTLS, &[(&format!("{NGINX}auth-tls-secret"), "client-ca")]),
            ),
            ("plain", pki.host(PLAIN, &[])),
        ],
    );
    let proxy = Binary::start(&m).await;
    let alice = pki.client_files("alice", &clients.client("alice", 1), "");

    let host = format!("Host: {MTLS}");
    for version in ["--http1.1", "--http2"] {
        let mut args = vec![version.to_string(), "-H".into(), host.clone()];
        // Even a good client certificate: the handshake for PLAIN never asked for it.
        args.extend(alice.iter().cloned());
        let answer = get(&pki, &proxy, PLAIN, "/bypass", &args).await;
        assert_eq!(answer.status, 421, "{version}: {answer:?}");
        let expected = if version == "--http2" {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        };
        assert_eq!(answer.version, expected);
    }
    assert!(
        backend.proxied().is_empty(),
        "a misdirected request reached the pod"
    );

    // No SNI at all: the handshake asked for no certificate either.
    let no_sni = insecure_client_config(&[b"http/1.1"], false);
    let tls = tls_connect(proxy.https, no_sni, MTLS)
        .await
        .expect("TLS without SNI");
    let mut conn = Conn::h1(hyper_util::rt::TokioIo::new(tls)).await;
    let answer = conn.get(MTLS, "/no-sni").await.expect("an answer");
    assert_eq!(answer.status, 421, "{answer:?}");
    assert!(answer.closes(), "{answer:?}");

    // HTTP/2 connection reuse: a connection made for PLAIN serves PLAIN, then the mTLS host on
    // the same connection is 421 and the connection is closed (GOAWAY).
    let mut h2 = Conn::connect(proxy.https, &pki.servers, Via::H2, PLAIN).await;
    let answer = h2.get(PLAIN, "/plain-first").await.expect("an answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = h2.get(MTLS, "/reused").await.expect("an answer");
    assert_eq!(answer.status, 421, "{answer:?}");
    assert!(h2.closed_by_proxy().await, "no GOAWAY after the 421");
    let paths: Vec<String> = backend.proxied().into_iter().map(|r| r.uri).collect();
    assert_eq!(paths, vec!["/plain-first".to_string()]);

    // The mTLS host by its own SNI, and the plain host, are served.
    for version in ["--http1.1", "--http2"] {
        let mut args = vec![version.to_string()];
        args.extend(alice.iter().cloned());
        assert_eq!(get(&pki, &proxy, MTLS, "/", &args).await.status, 200);
        let plain = get(&pki, &proxy, PLAIN, "/", &[version.to_string()]).await;
        assert_eq!(plain.status, 200, "{plain:?}");
    }
}

/// The class TLS policy is the same for a host with client certificates: TLS 1.2 and 1.3
/// only, and only AEAD suites with ECDHE (openssl offering anything else fails to connect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_host_keeps_the_class_tls_policy() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let clients = Ca::new("Access Client CA");
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("ca", client_ca_secret("client-ca", &clients.cert_pem, None)),
            (
                "mtls",
                pki.host(MTLS, &[(&format!("{NGINX}auth-tls-secret"), "client-ca")]),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let connect = |args: &'static [&'static str]| {
        let at = proxy.https.to_string();
        async move {
            let output = tokio::process::Command::new("openssl")
                .args(["s_client", "-connect", &at, "-servername", MTLS])
                .args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(Duration::from_secs(15), output)
                .await
                .expect("openssl finishes")
                .expect("run openssl");
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    // `New, TLSv1.2, Cipher is ECDHE-...` / `New, (NONE), Cipher is (NONE)`.
    let negotiated = |out: &str| {
        out.lines()
            .find_map(|l| {
                l.split_once("Cipher is ")
                    .map(|(_, c)| c.trim().to_string())
            })
            .filter(|c| c != "(NONE)")
    };
    let ok = connect(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]).await;
    assert_eq!(
        negotiated(&ok).as_deref(),
        Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{ok}"
    );
    let tls13 = connect(&["-tls1_3"]).await;
    assert!(negotiated(&tls13).is_some(), "{tls13}");
    for refused in [
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"][..],
        &["-tls1_2", "-cipher", "AES128-GCM-SHA256"][..],
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"][..],
    ] {
        let out = connect(refused).await;
        assert_eq!(negotiated(&out), None, "{refused:?}: {out}");
    }
}

/// What cannot be enforced is refused, never served open (`portcullis check`): any
/// `auth-tls-*` on a pass-through host, a Secret in another namespace, a bad
/// `auth-tls-verify-client` or depth, `auth-tls-verify-client` without the Secret; a Secret
/// that does not exist, has no `ca.crt` or a bad `ca.crl` is an error naming the annotation.
#[test]
fn what_cannot_be_enforced_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[8080]));
    let clients = Ca::new("Access Client CA");
    manifests::write(
        m,
        "ca.yaml",
        &client_ca_secret("client-ca", &clients.cert_pem, None),
    );
    manifests::write(
        m,
        "bad-crl-secret.yaml",
        &client_ca_secret(
            "bad-crl",
            &clients.cert_pem,
            Some("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----"),
        ),
    );
    manifests::write(
        m,
        "no-ca-secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: no-ca\n  namespace: default\ntype: Opaque\nstringData:\n  other: x\n",
    );
    let secret = "nginx.ingress.kubernetes.io/auth-tls-secret";
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "passthrough",
            &[
                (secret, "client-ca"),
                ("nginx.ingress.kubernetes.io/ssl-passthrough", "true"),
            ],
            secret,
        ),
        ("other-ns", &[(secret, "kube-system/client-ca")], secret),
        (
            "bad-mode",
            &[
                (secret, "client-ca"),
                (
                    "nginx.ingress.kubernetes.io/auth-tls-verify-client",
                    "maybe",
                ),
            ],
            "auth-tls-verify-client",
        ),
        (
            "bad-depth",
            &[
                (secret, "client-ca"),
                ("nginx.ingress.kubernetes.io/auth-tls-verify-depth", "0"),
            ],
            "auth-tls-verify-depth",
        ),
        (
            "no-secret",
            &[("nginx.ingress.kubernetes.io/auth-tls-verify-client", "on")],
            "auth-tls-verify-client",
        ),
        ("missing", &[(secret, "does-not-exist")], secret),
        ("no-ca", &[(secret, "no-ca")], secret),
        ("bad-crl", &[(secret, "bad-crl")], secret),
    ];
    for (name, annotations, _) in cases {
        let host = format!("{name}.refused.e2e.test");
        manifests::write(
            m,
            &format!("{name}.yaml"),
            &ingress(name, &host, "web", annotations, None),
        );
    }
    // Two Ingresses on one host that disagree: the older one decides; the other's rules for
    // the host are not served on terms it did not ask for.
    let shared = "shared.refused.e2e.test";
    manifests::write(
        m,
        "shared-old.yaml",
        &ingress("shared-old", shared, "web", &[], None),
    );
    let younger = ingress("shared-new", shared, "web", &[(secret, "client-ca")], None)
        .replace("2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z")
        .replace("path: /\n", "path: /admin\n");
    manifests::write(m, "shared-new.yaml", &younger);

    let out = check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let conflict = text
        .lines()
        .find(|l| l.contains("Ingress default/shared-new ") && l.contains("auth-tls"))
        .unwrap_or_else(|| panic!("no conflict diagnostic:\n{text}"));
    assert!(conflict.trim_start().starts_with("error"), "{conflict}");
    assert!(
        !text.contains("/admin"),
        "the younger Ingress's path is served:\n{text}"
    );
    for (name, _, key) in cases {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("Ingress default/{name} ")) && l.contains(key))
            .unwrap_or_else(|| panic!("no diagnostic for {name} naming {key}:\n{text}"));
        assert!(line.trim_start().starts_with("error"), "{line}");
        let host = format!("{name}.refused.e2e.test");
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(&host)),
            "{name}'s host is served:\n{text}"
        );
    }
}

/// Reverses `%XX` escapes.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len() + 1
            && let Ok(b) = u8::from_str_radix(&value[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
