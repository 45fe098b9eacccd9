//! End to end, the built binary: the quickstart's promises (examples/quickstart/README.md).
//! `portcullis check examples/` is clean and lists the quickstart hosts; the binary serves a
//! copy of `examples/quickstart/manifests` (EndpointSlice ports pointed at backends this test
//! starts), and the README's curl and openssl commands get what the README says: terminate with
//! the committed certificates, the 308 redirect, pass-through with the backend's certificate,
//! re-encrypt, and the default certificate for an unknown name.

use std::path::{Path, PathBuf};

use crate::support::backends::{self, TlsOptions};
use crate::support::binary::Binary;
use crate::support::clients::{curl, curl_https, s_client};
use crate::support::pki::Ca;

const APP: &str = "app.localtest.me";
const SECURE: &str = "secure.localtest.me";
const REENCRYPT: &str = "reencrypt.localtest.me";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn check_examples_is_clean_and_lists_the_quickstart_hosts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .arg(examples())
        .output()
        .expect("run portcullis check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("error:"), "{text}");
    for (host, mode) in [
        (APP, "terminate"),
        (SECURE, "passthrough"),
        (REENCRYPT, "reencrypt"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{host}  ({mode}, "))),
            "{host} ({mode}) not listed:\n{text}"
        );
    }
    for endpoint in [
        "127.0.0.1:9001",
        "127.0.0.1:9002",
        "127.0.0.1:9443",
        "127.0.0.1:9444",
    ] {
        assert!(text.contains(endpoint), "{endpoint} not listed:\n{text}");
    }
}

#[tokio::test]
async fn the_readme_commands_work() {
    let echo_a = backends::http("echo-a").await;
    let echo_b = backends::http("echo-b").await;
    // The demo backends make their own certificates; ours come from a throwaway CA.
    let demo_ca = Ca::new("e2e quickstart demo backends");
    let secure = backends::tls("secure", &demo_ca.leaf(&[SECURE]), TlsOptions::default()).await;
    let reencrypt = backends::tls(
        "reencrypt",
        &demo_ca.leaf(&[REENCRYPT]),
        TlsOptions::default(),
    )
    .await;

    // A copy of the quickstart manifests, the fixed demo ports replaced by ours.
    let dir = tempfile::tempdir().unwrap();
    let source = examples().join("quickstart/manifests");
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (fixed, backend) in [
            ("9001", &echo_a),
            ("9002", &echo_b),
            ("9443", &secure),
            ("9444", &reencrypt),
        ] {
            text = text.replace(
                &format!("port: {fixed}"),
                &format!("port: {}", backend.addr.port()),
            );
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let proxy = Binary::start(dir.path()).await;
    let tls = examples().join("quickstart/tls");

    // (a) terminate, verified against the committed certificate.
    let app_crt = tls.join("app.localtest.me.crt");
    let r = curl_https(APP, proxy.https, "/", &app_crt, &[]).await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("echo-a")),
        "{r:?}"
    );
    assert_eq!(r.header("strict-transport-security"), Some("max-age=300"));
    let r = curl_https(APP, proxy.https, "/b/hello", &app_crt, &[]).await;
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("echo-b")),
        "{r:?}"
    );

    // (d) ssl-redirect: plain HTTP answers 308 to https.
    let r = curl("http", APP, proxy.http, "/", &["-i"]).await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://{APP}:{}/", proxy.https.port()).as_str())
    );

    // (b) pass-through: the backend's own certificate (hence -k), and it saw the SNI.
    let r = curl("https", SECURE, proxy.https, "/", &["-k"]).await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, format!("backend=secure path=/ sni={SECURE}"));
    let s = s_client(proxy.https, SECURE, None).await;
    assert_eq!(
        s.subject(),
        Some(format!("CN = {SECURE}").as_str()),
        "{}",
        s.stdout
    );

    // (c) re-encrypt: our certificate to curl, TLS again to the backend.
    let r = curl_https(
        REENCRYPT,
        proxy.https,
        "/",
        &tls.join("reencrypt.localtest.me.crt"),
        &[],
    )
    .await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, format!("backend=reencrypt path=/ sni={REENCRYPT}"));

    // An unknown name gets the self-signed default certificate.
    let s = s_client(proxy.https, "nope.localtest.me", None).await;
    assert_eq!(
        s.subject(),
        Some("CN = Portcullis default certificate"),
        "{}",
        s.stdout
    );
}
