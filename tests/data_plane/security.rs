//! Security posture, checked end to end:
//! - the default TLS policy offers TLS 1.2+ only, AEAD suites with ECDHE only (no CBC, no RSA
//!   key exchange), and negotiates the post-quantum hybrid X25519MLKEM768 with a default client;
//!   `openssl s_client` cannot get TLS 1.1, a CBC suite or RSA key exchange;
//! - private keys never reach the logs, even at `trace`, nor `portcullis check`'s output;
//! - the self-signed default certificate names no host;
//! - the admin listener binds to localhost by default;
//! - pass-through is refused when the IngressClassParams disallow it.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::backends::{self, TlsOptions};
use crate::support::fixture::self_signed_fallback;
use crate::support::http::{insecure_client_config, peer_leaf, status_of};
use crate::support::in_process::standalone;
use crate::support::pki::{Ca, Leaf};
use crate::support::wait::wait_until;
use portcullis::settings::Settings;
use portcullis::table::{ClassSettings, RouteTable};
use portcullis::tls::server_config::TlsServerState;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, X509Certificate};

const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portcullis\nspec:\n  controller: portcullis.io/ingress-controller\n";

fn app_manifests(backend: SocketAddr, secret: &str, annotations: &str) -> String {
    format!(
        "{CLASS}---\napiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: app-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: app}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: app\n  namespace: default\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: portcullis\n  tls: [{{hosts: [app.sec.test], secretName: {secret}}}]\n  rules:\n  - host: app.sec.test\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {{service: {{name: app, port: {{number: 80}}}}}}\n",
        backend.port(),
        backend.ip()
    )
}

/// Strings that would betray a private key in text: the PEM label, every base64 line of the
/// PEM body, and the secret scalar's bytes as `Debug` would print them.
fn key_fingerprints(leaf: &Leaf) -> Vec<String> {
    let mut out = vec!["PRIVATE KEY".to_string()];
    out.extend(
        leaf.key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            .map(|l| l[..16].to_string()),
    );
    // PKCS#8 P-256: the private scalar follows a fixed header of about 36 bytes.
    let scalar = &leaf.key_der[36..48];
    out.push(
        format!("{scalar:?}")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    );
    out.push(scalar.iter().map(|b| format!("{b:02x}")).collect());
    out
}

fn assert_no_key(text: &str, leaves: &[&Leaf], what: &str) {
    for leaf in leaves {
        for print in key_fingerprints(leaf) {
            assert!(
                !text.contains(&print),
                "{what} contains key material {print:?}"
            );
        }
    }
}

// === TLS policy ===

#[test]
fn default_policy_is_tls12_plus_aead_ecdhe_and_post_quantum_first() {
    let state = TlsServerState::new();
    let table = Arc::new(RouteTable::default());
    let config = state
        .build(&table, &self_signed_fallback(), &ClassSettings::default())
        .expect("default policy builds");
    let provider = config.crypto_provider();
    assert!(!provider.cipher_suites.is_empty());
    for suite in &provider.cipher_suites {
        let name = suite.suite().as_str().unwrap_or("unknown");
        assert!(!name.contains("CBC"), "CBC suite offered: {name}");
        assert!(
            name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
            "non-AEAD suite offered: {name}"
        );
        match suite.version().version {
            rustls::ProtocolVersion::TLSv1_3 => {}
            rustls::ProtocolVersion::TLSv1_2 => assert!(
                name.starts_with("TLS_ECDHE_"),
                "TLS 1.2 suite without ECDHE (RSA key exchange?): {name}"
            ),
            other => panic!("suite of version {other:?}: {name}"),
        }
    }
    let groups: Vec<_> = provider.kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        groups.first(),
        Some(&rustls::NamedGroup::X25519MLKEM768),
        "{groups:?}"
    );
}

struct Served {
    _dir: tempfile::TempDir,
    ca: Ca,
    running: portcullis::runtime::Running,
    _backend: backends::Backend,
}

async fn serve_app() -> Served {
    let ca = Ca::new("security CA");
    let leaf = ca.leaf(&["app.sec.test"]);
    let backend = backends::http("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("app.yaml"),
        format!(
            "{}---\n{}",
            app_manifests(backend.addr, "app-tls", ""),
            leaf.secret_yaml("default", "app-tls")
        ),
    )
    .expect("write");
    let running = standalone(dir.path()).await;
    let https = running.addresses().https;
    let client = ca.client_config(&[b"http/1.1"]);
    let up = wait_until(Duration::from_secs(10), || {
        let client = client.clone();
        async move { handshake(https, client, "app.sec.test").await.is_ok() }
    })
    .await;
    assert!(up, "app.sec.test never served its certificate");
    Served {
        _dir: dir,
        ca,
        running,
        _backend: backend,
    }
}

async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    host: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(host.to_string()).expect("name"), tcp)
        .await
}

#[tokio::test]
async fn a_default_rustls_client_negotiates_x25519mlkem768() {
    let served = serve_app().await;
    let tls = handshake(
        served.running.addresses().https,
        served.ca.client_config(&[]),
        "app.sec.test",
    )
    .await
    .expect("handshake");
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::X25519MLKEM768)
    );
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    served.running.shutdown().await.expect("shutdown");
}

/// `openssl s_client` with `args`: whether a handshake completed, and the output.
async fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-servername", "app.sec.test"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("openssl s_client finished in time")
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done = text.contains("New, TLSv1") && !text.contains("Cipher is (NONE)");
    (done, text)
}

#[tokio::test]
async fn openssl_gets_no_old_protocol_no_cbc_and_no_rsa_key_exchange() {
    let served = serve_app().await;
    let addr = served.running.addresses().https;
    // Controls: TLS 1.2 with ECDHE-GCM, and TLS 1.3, work.
    let (ok, text) = s_client(addr, &["-tls1_2"]).await;
    assert!(ok, "TLS 1.2 control failed: {text}");
    let (ok, text) = s_client(addr, &["-tls1_3"]).await;
    assert!(ok, "TLS 1.3 control failed: {text}");
    // The client would allow these (security level 0); the server must refuse.
    for (what, args) in [
        ("TLS 1.1", &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"][..]),
        ("TLS 1.0", &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"][..]),
        (
            "CBC suites",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA:AES128-SHA:AES256-SHA:@SECLEVEL=0",
            ][..],
        ),
        (
            "RSA key exchange",
            &[
                "-tls1_2",
                "-cipher",
                "AES128-GCM-SHA256:AES256-GCM-SHA384:@SECLEVEL=0",
            ][..],
        ),
    ] {
        let (ok, text) = s_client(addr, args).await;
        assert!(!ok, "{what} was accepted: {text}");
    }
    served.running.shutdown().await.expect("shutdown");
}

// === the default certificate ===

#[tokio::test]
async fn the_self_signed_default_certificate_names_no_host() {
    let own = portcullis::tls::self_signed::generate().expect("generate");
    let served = serve_app().await;
    // Unknown SNI and no SNI get the process's self-signed certificate.
    for sni in [true, false] {
        let tls = handshake(
            served.running.addresses().https,
            insecure_client_config(&[], sni),
            "unknown.sec.test",
        )
        .await
        .expect("handshake with the default certificate");
        let der = peer_leaf(&tls);
        let ders = [der.as_ref(), own.key.cert[0].as_ref()];
        for der in ders {
            let (_, cert) = X509Certificate::from_der(der).expect("x509");
            assert!(
                cert.subject_alternative_name().expect("san").is_none(),
                "the default certificate has a SAN"
            );
            let cns: Vec<_> = cert
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .collect();
            assert_eq!(cns, vec!["Portcullis default certificate"]);
            assert_eq!(cert.subject(), cert.issuer());
            assert!(!cert.subject().to_string().contains("sec.test"));
        }
    }
    served.running.shutdown().await.expect("shutdown");
}

// === admin listener ===

#[test]
fn the_admin_listener_binds_to_localhost_by_default() {
    let settings = Settings::default();
    assert!(settings.admin_addr.ip().is_loopback(), "{settings:?}");
    assert_eq!(settings.admin_addr, ([127, 0, 0, 1], 10254).into());
    for mode in ["standalone", "controller"] {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([mode, "--help"])
            .output()
            .expect("run --help");
        let help = String::from_utf8_lossy(&out.stdout);
        let admin = help
            .lines()
            .skip_while(|l| !l.contains("--admin-addr"))
            .take(3)
            .collect::<String>();
        assert!(
            admin.contains("[default: 127.0.0.1:10254]"),
            "{mode}: {help}"
        );
    }
}

// === pass-through policy ===

#[tokio::test]
async fn passthrough_is_refused_when_the_class_params_disallow_it() {
    let ca = Ca::new("pt CA");
    let backend_leaf = ca.leaf(&["pt.sec.test"]);
    let backend = backends::tls("pt", &backend_leaf, TlsOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portcullis\nspec:\n  controller: portcullis.io/ingress-controller\n  parameters: {apiGroup: portcullis.io, kind: IngressClassParams, name: strict}\n---\napiVersion: portcullis.io/v1alpha1\nkind: IngressClassParams\nmetadata: {name: strict}\nspec:\n  passthrough: {allowed: false}\n";
    let rest = app_manifests(
        backend.addr,
        "unused",
        "portcullis.io/tls-mode: passthrough",
    )
    .replace(CLASS, "")
    .replace("app.sec.test", "pt.sec.test");
    std::fs::write(dir.path().join("pt.yaml"), format!("{class}{rest}")).expect("write");
    let running = standalone(dir.path()).await;
    let admin = running.addresses().admin;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            status_of(admin, "/readyz").await == 200
        })
        .await
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            running.status().current().is_some()
        })
        .await
    );
    let built = running.status().current().expect("built");
    assert!(
        built
            .diagnostics
            .iter()
            .any(|d| d.message.contains("pass-through is not allowed")),
        "{:?}",
        built.diagnostics
    );
    // The client does not reach the backend: no pass-through to its certificate.
    let verified = handshake(
        running.addresses().https,
        ca.client_config(&[]),
        "pt.sec.test",
    )
    .await;
    assert!(verified.is_err(), "the pass-through backend was reached");
    assert_eq!(backend.connections(), 0);
    running.shutdown().await.expect("shutdown");
}

// === keys never logged ===

fn write_sec_manifests(dir: &Path, backend: SocketAddr, good: &Leaf, other: &Leaf) {
    // A good Secret; a Secret whose key belongs to another certificate; a Secret whose key is
    // not a key at all.
    let mismatched = Leaf {
        key_pem: other.key_pem.clone(),
        key_der: other.key_der.clone(),
        ..good.clone()
    };
    let junk_key = "-----BEGIN PRIVATE KEY-----\nSmFua0tleU1hdGVyaWFsVGhhdE11c3ROZXZlckJlTG9nZ2VkMTIzNDU2Nzg5\n-----END PRIVATE KEY-----\n";
    let junk = good.secret_yaml("default", "junk-tls").replace(
        &crate::support::pki::indent(&good.key_pem, 4),
        &crate::support::pki::indent(junk_key, 4),
    );
    std::fs::write(
        dir.join("app.yaml"),
        format!(
            "{}---\n{}---\n{}---\n{}",
            app_manifests(backend, "app-tls", ""),
            good.secret_yaml("default", "app-tls"),
            mismatched.secret_yaml("default", "mismatched-tls"),
            junk
        ),
    )
    .expect("write");
    // Ingresses that use the broken Secrets, so the model reads (and reports) them.
    let users = [("mismatched", "mismatched-tls"), ("junk", "junk-tls")]
        .iter()
        .map(|(name, secret)| {
            app_manifests(backend, secret, "")
                .replace(CLASS, "")
                .replace(
                    "name: app\n  namespace",
                    &format!("name: {name}\n  namespace"),
                )
                .replace("app.sec.test", &format!("{name}.sec.test"))
        })
        .collect::<Vec<_>>()
        .join("---\n");
    std::fs::write(dir.join("broken.yaml"), users).expect("write");
}

#[tokio::test]
async fn private_keys_never_reach_the_logs_even_at_trace() {
    let ca = Ca::new("log CA");
    let good = ca.leaf(&["app.sec.test"]);
    let other = ca.leaf(&["other.sec.test"]);
    let bundle = ca.leaf(&["bundle.sec.test"]);
    let backend = backends::http("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&manifests).expect("mkdir");
    std::fs::create_dir_all(&certs).expect("mkdir");
    write_sec_manifests(&manifests, backend.addr, &good, &other);
    std::fs::write(certs.join("bundle.pem"), bundle.bundle_pem()).expect("write");

    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["standalone", "--manifests"])
        .arg(&manifests)
        .arg("--cert-dir")
        .arg(&certs)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--shutdown-grace",
            "1s",
            "--log-level",
            "trace",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut all = String::new();
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            let text = String::from_utf8_lossy(&line).into_owned();
            if text.contains("listening http=") {
                let _ = tx.send(text.clone());
            }
            all.push_str(&text);
            line.clear();
        }
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        all.push_str(&String::from_utf8_lossy(&rest));
        all
    });
    let listening = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the binary logs its addresses");
    let https: SocketAddr = listening
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("https="))
        .and_then(|a| a.parse().ok())
        .expect("https address");

    // Handshakes with every certificate, then a rotation of the good Secret (a rebuild that
    // reads keys again).
    let client = ca.client_config(&[b"http/1.1"]);
    for host in ["app.sec.test", "bundle.sec.test"] {
        let ok = wait_until(Duration::from_secs(10), || {
            let client = client.clone();
            async move { handshake(https, client, host).await.is_ok() }
        })
        .await;
        assert!(ok, "{host} was never served");
    }
    let rotated = ca.leaf(&["app.sec.test"]);
    write_sec_manifests(&manifests, backend.addr, &rotated, &other);
    // The rebuild that read the new key is live once the rotated leaf is served.
    let rotated_der = rotated.cert_der.to_vec();
    let reloaded = wait_until(Duration::from_secs(10), || {
        let client = client.clone();
        let rotated_der = rotated_der.clone();
        async move {
            match handshake(https, client, "app.sec.test").await {
                Ok(tls) => tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .is_some_and(|leaf| leaf.as_ref() == rotated_der.as_slice()),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(reloaded, "the rotated certificate was never served");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    let logs = reader.join().expect("reader");
    assert_eq!(exit.code(), Some(0), "exit after SIGTERM");

    // The fingerprints do catch a key printed as PEM, as `Debug` bytes or as hex.
    for leaf in [&good, &other] {
        let hex: String = leaf.key_der.iter().map(|b| format!("{b:02x}")).collect();
        for leaked in [leaf.key_pem.clone(), format!("{:?}", leaf.key_der), hex] {
            let caught = key_fingerprints(leaf)
                .iter()
                .skip(1)
                .any(|print| leaked.contains(print));
            assert!(caught, "fingerprints miss {leaked:.40}");
        }
    }

    // The logs were really at trace level, and the broken Secrets were reported.
    assert!(logs.contains("TRACE"), "no trace lines");
    assert!(
        logs.contains("mismatched-tls") && logs.contains("junk-tls"),
        "{logs}"
    );
    assert_no_key(&logs, &[&good, &other, &bundle, &rotated], "the trace logs");
    assert!(
        !logs.contains("SmFua0tleU1hdGVyaWFs"),
        "the junk key body was logged"
    );

    // `portcullis check` prints certificate metadata only.
    for output in ["text", "json"] {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("check")
            .arg(&manifests)
            .arg("--cert-dir")
            .arg(&certs)
            .args(["--output", output])
            .output()
            .expect("run check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("app.sec.test"), "{text}");
        assert!(text.contains("bundle.sec.test"), "{text}");
        assert_no_key(&text, &[&rotated, &other, &bundle], "check output");
        assert!(!text.contains("SmFua0tleU1hdGVyaWFs"), "{text}");
        assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
    }
}
