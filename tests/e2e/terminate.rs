//! End to end, the built binary: TLS termination as curl sees it. The certificate is the
//! Ingress's `spec.tls` Secret; the backend gets the forwarded headers; HSTS; HTTP/2; an
//! unknown host is 404; the same Ingress answers on :80 (no redirect by default).

use crate::support::backends;
use crate::support::binary::Binary;
use crate::support::clients::{curl, curl_https, pem_to_der, s_client};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const HOST: &str = "app.e2e.test";
const HSTS: &str = "max-age=600; includeSubDomains";

#[tokio::test]
async fn terminate_serves_the_secret_certificate_and_forwards_headers() {
    let ca = Ca::new("e2e terminate ca");
    let leaf = ca.leaf(&[HOST]);
    let backend = backends::http("app").await;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca_file = manifests::write_pem(d, "ca.pem", &ca.cert_pem);
    let m = d.join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(&m, "svc.yaml", &service("app", &[backend.addr.port()]));
    manifests::write(
        &m,
        "secret.yaml",
        &leaf.secret_yaml(manifests::NS, "app-tls"),
    );
    manifests::write(
        &m,
        "ingress.yaml",
        &ingress(
            "app",
            HOST,
            "app",
            &[("portcullis.io/hsts", HSTS)],
            Some("app-tls"),
        ),
    );
    let proxy = Binary::start(&m).await;
    let https_port = proxy.https.port();

    // HTTPS over HTTP/1.1: curl verifies the chain against our test CA only.
    let r = curl_https(HOST, proxy.https, "/hello?x=1", &ca_file, &["--http1.1"]).await;
    assert_eq!(r.exit_code, 0, "curl failed: {}", r.stderr);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.header("x-backend"), Some("app"));
    assert_eq!(r.body, "backend=app path=/hello?x=1 sni=");
    assert_eq!(r.header("strict-transport-security"), Some(HSTS));

    // Exactly the Secret's certificate, not just any certificate our CA signed.
    let s = s_client(proxy.https, HOST, Some(&ca_file)).await;
    assert_eq!(s.verify_code(), Some(0), "{}", s.stdout);
    let presented = s.certificates_pem();
    assert!(!presented.is_empty(), "no certificate in: {}", s.stdout);
    assert_eq!(pem_to_der(&presented[0]), leaf.cert_der.to_vec());

    // What the backend saw.
    let seen = backend.requests();
    let request = seen
        .iter()
        .find(|r| r.uri == "/hello?x=1")
        .expect("the backend saw the request");
    let h = &request.headers;
    let authority = format!("{HOST}:{https_port}");
    assert_eq!(
        h.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        h.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    assert_eq!(
        h.get("x-forwarded-port"),
        Some(&https_port.to_string()),
        "{h:?}"
    );
    assert_eq!(h.get("x-forwarded-host"), Some(&authority));
    assert_eq!(
        h.get("forwarded"),
        Some(&format!("for=127.0.0.1;proto=https;host=\"{authority}\""))
    );
    assert_eq!(h.get("host"), Some(&authority));

    // A client's own forwarded headers are not trusted: replaced, not appended to.
    let r = curl_https(
        HOST,
        proxy.https,
        "/spoof",
        &ca_file,
        &[
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "Forwarded: for=6.6.6.6",
            "-H",
            "X-Forwarded-Proto: gopher",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = backend.requests();
    let spoof = &seen
        .iter()
        .find(|r| r.uri == "/spoof")
        .expect("the backend saw /spoof")
        .headers;
    assert_eq!(
        spoof.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        spoof.get("forwarded"),
        Some(&format!("for=127.0.0.1;proto=https;host=\"{authority}\""))
    );
    assert_eq!(
        spoof.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );

    // HTTP/2 over ALPN.
    let r = curl_https(HOST, proxy.https, "/h2", &ca_file, &["--http2"]).await;
    assert_eq!(r.exit_code, 0, "curl --http2 failed: {}", r.stderr);
    assert_eq!(r.version, "HTTP/2");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend"), Some("app"));
    assert_eq!(r.header("strict-transport-security"), Some(HSTS));
    // The backend speaks HTTP/1.1: the `:authority` became `Host`, the forwarded headers
    // are the same as over HTTP/1.1.
    let seen = backend.requests();
    let h2 = &seen
        .iter()
        .find(|r| r.uri == "/h2")
        .expect("the backend saw the HTTP/2 request")
        .headers;
    assert_eq!(h2.get("host"), Some(&authority), "{h2:?}");
    assert_eq!(h2.get("x-forwarded-host"), Some(&authority));
    assert_eq!(
        h2.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    assert_eq!(
        h2.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );

    // An unknown host: the default (self-signed) certificate, hence -k, and 404.
    let r = curl("https", "nope.e2e.test", proxy.https, "/", &["-k"]).await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("x-backend"), None);
    let r = curl("http", "nope.e2e.test", proxy.http, "/", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");

    // The same Ingress on :80, plain HTTP: served from the backend, no redirect, no HSTS.
    let r = curl("http", HOST, proxy.http, "/plain", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("app"));
    assert_eq!(r.header("strict-transport-security"), None);
    let seen = backend.requests();
    let plain = seen
        .iter()
        .find(|r| r.uri == "/plain")
        .expect("the backend saw the plain request");
    assert_eq!(
        plain.headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(
        plain.headers.get("x-forwarded-port"),
        Some(&proxy.http.port().to_string())
    );

    // One access-log line per request, naming the host and status.
    assert!(
        proxy
            .wait_for_log(std::time::Duration::from_secs(2), |l| {
                l.contains(" access: ")
                    && l.contains("host=\"app.e2e.test\"")
                    && l.contains("path=\"/plain\"")
                    && l.contains("status=200")
                    && l.contains("mode=\"http\"")
            })
            .await,
        "no access-log line for /plain:\n{}",
        proxy.log_text()
    );
}
