//! End to end, the built binary: what ingress-nginx does for real Ingresses by default or by
//! annotation, as a client and a pod observe it through Portcullis. Each test cites the
//! ingress-nginx documentation it follows.

use std::path::Path;
use std::time::Duration;

use crate::support::backends::{self};
use crate::support::binary::Binary;
use crate::support::clients::{curl, curl_https};
use crate::support::manifests::{self, ingress, ingress_class};
use crate::support::pki::Ca;

const HOST: &str = "app.nginx.e2e.test";

/// ingress-nginx sets `X-Real-IP: $remote_addr` and `X-Request-ID: $req_id` on every proxied
/// request (rootfs/etc/nginx/template/nginx.tmpl, `proxy_set_header`); `$req_id` is the
/// client's `X-Request-ID`, else a random `$request_id` when `generate-request-id` is on, its
/// default (docs/user-guide/nginx-configuration/configmap.md#generate-request-id: "Ensures that
/// X-Request-ID is defaulted to a random value, if no X-Request-ID is present in the request"),
/// and its default access-log format ends with `$req_id`
/// (docs/user-guide/nginx-configuration/log-format.md). With `use-forwarded-headers`
/// (configmap.md#use-forwarded-headers) `$remote_addr` is what trusted proxies report; here
/// the class's `trustedForwardedCidrs` is that trust, and without it a client's own
/// `X-Real-IP` is overwritten.
#[tokio::test]
async fn x_real_ip_and_x_request_id_reach_the_pod_and_the_access_log() {
    let ca = Ca::new("e2e nginx defaults ca");
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("class", ingress_class()),
            (
                "secret",
                ca.leaf(&[HOST]).secret_yaml(manifests::NS, "app-tls"),
            ),
            ("app", ingress("app", HOST, "web", &[], Some("app-tls"))),
        ],
    );
    let proxy = Binary::start(&m).await;

    // Plain HTTP, a client that sends its own X-Request-ID and a spoofed X-Real-IP.
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/given",
        &[
            "-H",
            "X-Request-ID: client-chosen-id-1",
            "-H",
            "X-Real-IP: 6.6.6.6",
            "-H",
            "X-Forwarded-For: 6.6.6.6",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Terminated HTTPS, no X-Request-ID: one is made.
    let r = curl_https(HOST, proxy.https, "/generated", &ca_file, &[]).await;
    assert_eq!(r.status, 200, "{r:?}");

    let seen = backend.requests();
    let given = seen.iter().find(|s| s.uri == "/given").expect("/given");
    let header = |s: &backends::SeenRequest, name: &str| s.headers.get(name).cloned();
    assert_eq!(
        header(given, "x-request-id").as_deref(),
        Some("client-chosen-id-1")
    );
    assert_eq!(header(given, "x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        header(given, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    let generated = seen
        .iter()
        .find(|s| s.uri == "/generated")
        .expect("/generated");
    assert_eq!(header(generated, "x-real-ip").as_deref(), Some("127.0.0.1"));
    let id = header(generated, "x-request-id").expect("a generated X-Request-ID");
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );

    // Both IDs are in the access log, on the line of their request.
    for (path, id) in [
        ("/given", "client-chosen-id-1"),
        ("/generated", id.as_str()),
    ] {
        let want = format!("request_id=\"{id}\"");
        let path_field = format!("path=\"{path}\"");
        assert!(
            proxy
                .wait_for_log(Duration::from_secs(2), |l| {
                    l.contains(" access: ") && l.contains(&path_field) && l.contains(&want)
                })
                .await,
            "no access-log line with {want} for {path}:\n{}",
            proxy.log_text()
        );
    }

    // A second request without an ID gets another one.
    let r = curl("http", HOST, proxy.http, "/again", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let again = backend
        .requests()
        .into_iter()
        .find(|s| s.uri == "/again")
        .and_then(|s| s.headers.get("x-request-id").cloned())
        .expect("/again has an ID");
    assert_eq!(again.len(), 32);
    assert_ne!(again, id);
}

/// Behind a trusted proxy (`trustedForwardedCidrs`, our `use-forwarded-headers` +
/// `proxy-real-ip-cidr` of ingress-nginx's configmap.md), `X-Real-IP` is the address that
/// proxy reports: the rightmost `X-Forwarded-For` entry that is not itself trusted, as nginx's
/// realip module finds it with `real_ip_recursive on` (nginx.tmpl).
#[tokio::test]
async fn x_real_ip_behind_a_trusted_proxy_is_the_address_it_reports() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            (
                "class",
                manifests::ingress_class_with_params(
                    "trusting",
                    "trustedForwardedCidrs: [\"127.0.0.0/8\"]",
                ),
            ),
            ("app", ingress("app", HOST, "web", &[], None)),
        ],
    );
    let proxy = Binary::start(&m).await;
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/proxied",
        &[
            "-H",
            "X-Forwarded-For: 198.51.100.7, 203.0.113.9, 127.0.0.9",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = backend
        .requests()
        .into_iter()
        .find(|s| s.uri == "/proxied")
        .expect("/proxied");
    assert_eq!(
        seen.headers.get("x-real-ip").map(String::as_str),
        Some("203.0.113.9")
    );
    assert_eq!(
        seen.headers.get("x-forwarded-for").map(String::as_str),
        Some("198.51.100.7, 203.0.113.9, 127.0.0.9, 127.0.0.1")
    );
}

/// ingress-nginx annotations.md, "Permanent Redirect": `permanent-redirect` returns "a
/// permanent redirect (Return Code 301) instead of sending data to the upstream";
/// "Permanent Redirect Code": `permanent-redirect-code: '308'` returns it with a 308;
/// "Temporal Redirect" / "Temporal Redirect Code": the same with 302 by default, and its
/// redirect parser (internal/ingress/annotations/redirect) reads `temporal-redirect` before
/// `permanent-redirect`. The URL is sent as written (`return CODE URL` in nginx.tmpl).
#[tokio::test]
async fn permanent_and_temporary_redirects_answer_instead_of_forwarding() {
    let ca = Ca::new("e2e nginx redirect ca");
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("class", ingress_class()),
            (
                "secret",
                ca.leaf(&["moved.nginx.e2e.test"])
                    .secret_yaml(manifests::NS, "moved-tls"),
            ),
            (
                "moved",
                ingress(
                    "moved",
                    "moved.nginx.e2e.test",
                    "web",
                    &[
                        (
                            "nginx.ingress.kubernetes.io/permanent-redirect",
                            "https://new.example.com/landing",
                        ),
                        ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
                    ],
                    Some("moved-tls"),
                ),
            ),
            (
                "ours",
                ingress(
                    "ours",
                    "ours.nginx.e2e.test",
                    "web",
                    &[(
                        "portcullis.io/permanent-redirect",
                        "http://other.example.com",
                    )],
                    None,
                ),
            ),
            (
                "temporary",
                ingress(
                    "temporary",
                    "temporary.nginx.e2e.test",
                    "web",
                    &[
                        (
                            "nginx.ingress.kubernetes.io/temporal-redirect",
                            "https://maintenance.example.com/",
                        ),
                        (
                            "nginx.ingress.kubernetes.io/permanent-redirect",
                            "https://never.example.com/",
                        ),
                    ],
                    None,
                ),
            ),
            ("plain", ingress("plain", HOST, "web", &[], None)),
        ],
    );
    let proxy = Binary::start(&m).await;

    // The request's path and query are not appended: the URL is sent as written.
    let r = curl("http", "moved.nginx.e2e.test", proxy.http, "/a/b?c=d", &[]).await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://new.example.com/landing")
    );
    // Terminated HTTPS redirects the same way, POST included.
    let r = curl_https(
        "moved.nginx.e2e.test",
        proxy.https,
        "/form",
        &ca_file,
        &["-X", "POST", "-d", "a=1"],
    )
    .await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://new.example.com/landing")
    );
    // Our own key; 301 by default.
    let r = curl("http", "ours.nginx.e2e.test", proxy.http, "/", &[]).await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("http://other.example.com"));
    // temporal-redirect wins over permanent-redirect; 302 by default.
    let r = curl("http", "temporary.nginx.e2e.test", proxy.http, "/x", &[]).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://maintenance.example.com/")
    );
    assert!(backend.proxied().is_empty(), "{:?}", backend.proxied());

    // An Ingress without them is forwarded as before.
    let r = curl("http", HOST, proxy.http, "/served", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("location"), None);
    assert_eq!(backend.proxied().len(), 1);
}

/// ingress-nginx annotations.md, "Rewrite": "If the Application Root is exposed in a different
/// path and needs to be redirected, set the annotation `nginx.ingress.kubernetes.io/app-root`
/// to redirect requests for `/`"; nginx.tmpl answers `if ($uri = /) { return 302
/// $scheme://$http_host<app-root>; }` and forwards everything else.
#[tokio::test]
async fn app_root_redirects_only_the_root() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("class", ingress_class()),
            (
                "app",
                ingress(
                    "app",
                    HOST,
                    "web",
                    &[("nginx.ingress.kubernetes.io/app-root", "/app1")],
                    None,
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let port = proxy.http.port();

    let r = curl("http", HOST, proxy.http, "/", &[]).await;
    assert_eq!(r.status, 302, "{r:?}");
    let location = format!("http://{HOST}:{port}/app1");
    assert_eq!(r.header("location"), Some(location.as_str()));
    // The query of a request for `/` is dropped, as `$uri` has none.
    let r = curl("http", HOST, proxy.http, "/?q=1", &[]).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(r.header("location"), Some(location.as_str()));
    assert!(backend.proxied().is_empty(), "{:?}", backend.proxied());

    // Following it, and any other path, reaches the pod.
    let r = curl("http", HOST, proxy.http, "/", &["-L"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "backend=web path=/app1 sni=");
    let r = curl("http", HOST, proxy.http, "/other", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("location"), None);
}

/// ingress-nginx annotations.md, "Redirect from/to www": with `from-to-www-redirect: "true"`,
/// a rule host `example.com` makes `www.example.com` redirect to it, and a rule host
/// `www.example.com` makes `example.com` redirect to it; "If at some point a new Ingress is
/// created with a host equal to one of the options (like `domain.com`) the annotation will be
/// omitted"; for HTTPS the certificate must name both. The code is the ConfigMap's
/// `http-redirect-code`, 308 by default (configmap.md), to the same scheme, path and query
/// (nginx.tmpl's redirect server, `ngx_srv_redirect.lua`).
#[tokio::test]
async fn from_to_www_redirects_the_other_name_to_the_host() {
    let ca = Ca::new("e2e nginx www ca");
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let www = ("nginx.ingress.kubernetes.io/from-to-www-redirect", "true");
    let bare = "shop.nginx.e2e.test";
    let with_www = "www.shop.nginx.e2e.test";
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("class", ingress_class()),
            (
                "secret",
                ca.leaf(&[bare, with_www])
                    .secret_yaml(manifests::NS, "shop-tls"),
            ),
            (
                "shop",
                ingress("shop", bare, "web", &[www], Some("shop-tls")),
            ),
            // The other way round: the rule host has the www.
            (
                "blog",
                ingress("blog", "www.blog.nginx.e2e.test", "web", &[www], None),
            ),
            // Its other name is routed by another Ingress: no redirect for it.
            (
                "docs",
                ingress("docs", "docs.nginx.e2e.test", "web", &[www], None),
            ),
            (
                "docs-www",
                ingress("docs-www", "www.docs.nginx.e2e.test", "web", &[], None),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let (http_port, https_port) = (proxy.http.port(), proxy.https.port());

    let r = curl("http", with_www, proxy.http, "/p?q=1", &[]).await;
    assert_eq!(r.status, 308, "{r:?}");
    let location = format!("http://{bare}:{http_port}/p?q=1");
    assert_eq!(r.header("location"), Some(location.as_str()));
    // Over HTTPS, with the Ingress's certificate (it names both).
    let r = curl_https(with_www, proxy.https, "/p?q=1", &ca_file, &[]).await;
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert_eq!(r.status, 308, "{r:?}");
    let location = format!("https://{bare}:{https_port}/p?q=1");
    assert_eq!(r.header("location"), Some(location.as_str()));
    let r = curl("http", "blog.nginx.e2e.test", proxy.http, "/post", &[]).await;
    assert_eq!(r.status, 308, "{r:?}");
    let location = format!("http://www.blog.nginx.e2e.test:{http_port}/post");
    assert_eq!(r.header("location"), Some(location.as_str()));
    assert!(backend.proxied().is_empty(), "{:?}", backend.proxied());

    // The hosts themselves are served, and a www name some Ingress routes is not redirected.
    for host in [bare, "www.blog.nginx.e2e.test", "www.docs.nginx.e2e.test"] {
        let r = curl("http", host, proxy.http, "/", &[]).await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
        assert_eq!(r.header("location"), None, "{host}");
    }
    // Following the redirect lands on the host.
    let r = curl(
        "http",
        with_www,
        proxy.http,
        "/follow",
        &["-L", "--resolve", &format!("{bare}:{http_port}:127.0.0.1")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "backend=web path=/follow sni=");
}

/// ingress-nginx annotations.md, "Custom max body size": "an 413 error will be returned to the
/// client when the size in a request exceeds the maximum allowed size of the client request
/// body", set per Ingress with `nginx.ingress.kubernetes.io/proxy-body-size: 8m` (nginx's
/// `client_max_body_size` syntax; `0` disables the check). Its `1m` default is a ConfigMap
/// setting (configmap.md#proxy-body-size), so an Ingress without the annotation keeps
/// Portcullis's default: no limit.
#[tokio::test]
async fn proxy_body_size_answers_413_past_the_limit() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let limited = "upload.nginx.e2e.test";
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("class", ingress_class()),
            (
                "upload",
                ingress(
                    "upload",
                    limited,
                    "web",
                    &[("nginx.ingress.kubernetes.io/proxy-body-size", "1k")],
                    None,
                ),
            ),
            ("plain", ingress("plain", HOST, "web", &[], None)),
        ],
    );
    let proxy = Binary::start(&m).await;
    let small = dir.path().join("small.bin");
    std::fs::write(&small, vec![b'a'; 1024]).unwrap();
    let large = dir.path().join("large.bin");
    std::fs::write(&large, vec![b'b'; 4096]).unwrap();
    let data = |path: &Path| format!("@{}", path.display());

    // A Content-Length over the limit: 413 before anything reaches the pod.
    let r = curl(
        "http",
        limited,
        proxy.http,
        "/declared",
        &["--data-binary", &data(&large)],
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    // A chunked body that grows past it: cut off, 413 all the same.
    let r = curl(
        "http",
        limited,
        proxy.http,
        "/chunked",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data(&large),
        ],
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(
        backend
            .requests()
            .iter()
            .all(|s| s.uri != "/declared" && s.uri != "/chunked"),
        "{:?}",
        backend.requests()
    );
    // Exactly the limit is accepted.
    let r = curl(
        "http",
        limited,
        proxy.http,
        "/fits",
        &["--data-binary", &data(&small)],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let fits = backend
        .requests()
        .into_iter()
        .find(|s| s.uri == "/fits")
        .expect("/fits reached the pod");
    assert_eq!(fits.body.len(), 1024);

    // No annotation: no limit.
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/big",
        &["--data-binary", &data(&large)],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(2), |l| {
                l.contains(" access: ")
                    && l.contains("path=\"/declared\"")
                    && l.contains("status=413")
                    && l.contains("error=\"body_too_large\"")
            })
            .await,
        "no 413 access-log line:\n{}",
        proxy.log_text()
    );
}
