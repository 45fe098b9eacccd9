//! End to end, the built binary: `portcullis.io/ssl-redirect: "true"` makes :80 answer
//! `308 Permanent Redirect` to the same host, path and query on the bound https port; the
//! backend never sees the plain request, and HTTPS is served as usual.

use crate::support::backends;
use crate::support::binary::Binary;
use crate::support::clients::{curl, curl_https};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const HOST: &str = "only.e2e.test";
const OPEN: &str = "open.e2e.test";

#[tokio::test]
async fn ssl_redirect_answers_308_to_the_https_port() {
    let ca = Ca::new("e2e redirect ca");
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(&m, "svc.yaml", &service("web", &[backend.addr.port()]));
    manifests::write(
        &m,
        "secret.yaml",
        &ca.leaf(&[HOST]).secret_yaml(manifests::NS, "only-tls"),
    );
    manifests::write(
        &m,
        "only.yaml",
        &ingress(
            "only",
            HOST,
            "web",
            &[("portcullis.io/ssl-redirect", "true")],
            Some("only-tls"),
        ),
    );
    // Another Ingress without the annotation: its :80 is still served.
    manifests::write(&m, "open.yaml", &ingress("open", OPEN, "web", &[], None));
    let proxy = Binary::start(&m).await;
    let https_port = proxy.https.port();
    assert_ne!(https_port, 443);

    let r = curl("http", HOST, proxy.http, "/path?q=1", &[]).await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://{HOST}:{https_port}/path?q=1").as_str())
    );
    assert_eq!(r.body, "");

    // Any method: 308 keeps the method and body, so a POST is redirected too.
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/form",
        &["-X", "POST", "-d", "a=1"],
    )
    .await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("https://{HOST}:{https_port}/form").as_str())
    );
    // Health probes (HEAD /, every 5 s from start) may come meanwhile: they are not client
    // requests.
    assert!(backend.proxied().is_empty(), "{:?}", backend.requests());

    // Following the redirect lands on HTTPS, served by the backend.
    let r = curl_https(HOST, proxy.https, "/path?q=1", &ca_file, &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/follow?q=2",
        &[
            "-L",
            "--cacert",
            ca_file.to_str().unwrap(),
            "--resolve",
            &format!("{HOST}:{https_port}:127.0.0.1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "backend=web path=/follow?q=2 sni=");
    let follow = backend
        .requests()
        .into_iter()
        .find(|s| s.uri == "/follow?q=2")
        .expect("the backend saw the followed request");
    assert_eq!(
        follow.headers.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );

    // No annotation: plain HTTP is served.
    let r = curl("http", OPEN, proxy.http, "/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("location"), None);
}
