//! End to end, the built binary: CORS (`enable-cors` and `cors-*`), headers set on requests
//! and responses (`portcullis.io/request-headers`, `portcullis.io/response-headers`) and
//! per-Ingress upstream timeouts (`proxy-*-timeout`), as a client and a pod observe them.
//! Each test cites the ingress-nginx documentation it follows.

use std::time::{Duration, Instant};

use crate::support::backends::{self};
use crate::support::binary::{Binary, check};
use crate::support::clients::{Curl, curl};
use crate::support::manifests::{self, ingress, ingress_class, service};

const API: &str = "api.headers.e2e.test";
const OPEN: &str = "open.headers.e2e.test";

/// `curl` to `host` on the proxy's :80 with `Origin: origin` (and `args`).
async fn from_origin(proxy: &Binary, host: &str, path: &str, origin: &str, args: &[&str]) -> Curl {
    let header = format!("Origin: {origin}");
    let mut all = vec!["-H", header.as_str()];
    all.extend_from_slice(args);
    curl("http", host, proxy.http, path, &all).await
}

/// ingress-nginx annotations.md, "Enable CORS": `enable-cors: "true"` enables CORS with
/// `cors-allow-origin` ("a multi-valued field, separated by ','", format
/// `protocol://origin-site.com[:port]`, and "single level wildcard subdomains"
/// `protocol://*.foo.bar`), `cors-allow-methods` (default `GET, PUT, POST, DELETE, PATCH,
/// OPTIONS`), `cors-allow-headers` (default `DNT,Keep-Alive,User-Agent,X-Requested-With,
/// If-Modified-Since,Cache-Control,Content-Type,Authorization`), `cors-expose-headers`
/// (default empty), `cors-allow-credentials` (default `true`) and `cors-max-age` (default
/// `1728000`). Its template answers a preflight `OPTIONS` itself with `204` and adds the
/// headers to the other responses, echoing an allowed origin; a request from an origin
/// not in the list gets none (and its `OPTIONS` is proxied like any request).
#[tokio::test]
async fn cors_preflight_is_answered_and_allowed_origins_are_echoed() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            (
                "api",
                ingress(
                    "api",
                    API,
                    "web",
                    &[
                        ("portcullis.io/enable-cors", "true"),
                        (
                            "portcullis.io/cors-allow-origin",
                            "https://app.example.com, https://*.trusted.example:8443",
                        ),
                        ("portcullis.io/cors-expose-headers", "X-Total, X-Page"),
                        ("portcullis.io/cors-max-age", "600"),
                        // An alias under our key's shadow: not read.
                        ("nginx.ingress.kubernetes.io/cors-max-age", "not read"),
                    ],
                    None,
                ),
            ),
            (
                "open",
                ingress(
                    "open",
                    OPEN,
                    "web",
                    &[
                        ("nginx.ingress.kubernetes.io/enable-cors", "true"),
                        (
                            "nginx.ingress.kubernetes.io/cors-allow-credentials",
                            "false",
                        ),
                    ],
                    None,
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    // A preflight from an allowed origin: 204 from the proxy, with every CORS header.
    let r = from_origin(
        &proxy,
        API,
        "/items",
        "https://app.example.com",
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Access-Control-Request-Method: PUT",
            "-H",
            "Access-Control-Request-Headers: Content-Type",
        ],
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some(
            "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,\
             Content-Type,Authorization"
        )
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("X-Total, X-Page")
    );
    assert!(
        backend.proxied().iter().all(|s| s.method != "OPTIONS"),
        "the pod saw the preflight: {:?}",
        backend.proxied()
    );

    // A request from an allowed origin: the pod's answer with the origin echoed.
    let r = from_origin(&proxy, API, "/items", "https://app.example.com", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("web"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("X-Total, X-Page")
    );

    // The single-level wildcard: one label, the same scheme and port.
    let r = from_origin(&proxy, API, "/w", "https://blue.trusted.example:8443", &[]).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://blue.trusted.example:8443"),
        "{r:?}"
    );
    for outsider in [
        "https://evil.example",
        "https://a.b.trusted.example:8443",
        "https://blue.trusted.example",
        "http://app.example.com",
    ] {
        let r = from_origin(&proxy, API, "/items", outsider, &[]).await;
        assert_eq!(r.status, 200, "{outsider}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{outsider}");
        assert_eq!(r.header("access-control-allow-methods"), None, "{outsider}");
    }

    // A preflight from another origin is not answered by the proxy: the pod gets it.
    let r = from_origin(
        &proxy,
        API,
        "/outsider-preflight",
        "https://evil.example",
        &["-X", "OPTIONS", "-H", "Access-Control-Request-Method: PUT"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(
        backend
            .proxied()
            .iter()
            .any(|s| s.method == "OPTIONS" && s.uri == "/outsider-preflight")
    );

    // The ingress-nginx keys, every default: `*` for any request, no Vary, no credentials
    // header when `cors-allow-credentials` is false.
    let r = curl("http", OPEN, proxy.http, "/", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("access-control-max-age"), Some("1728000"));
    assert_eq!(r.header("access-control-expose-headers"), None);
}

/// ingress-nginx sets request headers with the ConfigMap's `proxy-set-headers` (a ConfigMap
/// of headers, configmap.md#proxy-set-headers) and response headers with the
/// `custom-headers` annotation (annotations.md, "Custom Headers": a ConfigMap of headers
/// "to be added to the response"); both name a ConfigMap, which Portcullis does not read.
/// `portcullis.io/request-headers` and `portcullis.io/response-headers` carry the headers in
/// the Ingress itself, one `Name: value` per line (a YAML block scalar), each replacing any
/// header of that name.
#[tokio::test]
async fn request_headers_reach_the_pod_and_response_headers_the_client() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let plain = ingress("app", API, "web", &[], None);
    let annotated = plain.replacen(
        "  creationTimestamp:",
        "  annotations:
    portcullis.io/request-headers: |
      X-Tenant: blue
      X-Client-Says: the proxy
      X-Forwarded-Proto: from-the-route
      X-Request-ID: from-the-route
    portcullis.io/response-headers: |
      X-Frame-Options: DENY
      X-Backend: replaced by the route
  creationTimestamp:",
        1,
    );
    let m = manifests::web_dir(dir.path(), &backend, &[("app", annotated)]);
    let proxy = Binary::start(&m).await;

    let r = curl(
        "http",
        API,
        proxy.http,
        "/h",
        &["-H", "X-Client-Says: the client"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-backend"), Some("replaced by the route"));
    let seen = backend.proxied();
    let at_pod = seen
        .iter()
        .find(|s| s.uri == "/h")
        .expect("/h reached the pod");
    assert_eq!(
        at_pod.headers.get("x-tenant").map(String::as_str),
        Some("blue")
    );
    assert_eq!(
        at_pod.headers.get("x-client-says").map(String::as_str),
        Some("the proxy")
    );
    // The route's value replaces the proxy's own forwarded field and request ID, as it
    // replaces the client's fields: once, no second value beside it.
    assert_eq!(
        at_pod.headers.get("x-forwarded-proto").map(String::as_str),
        Some("from-the-route")
    );
    assert_eq!(
        at_pod.headers.get("x-request-id").map(String::as_str),
        Some("from-the-route")
    );
    assert_eq!(
        at_pod.headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
}

/// ingress-nginx annotations.md, "Custom timeouts": `proxy-connect-timeout`,
/// `proxy-send-timeout` and `proxy-read-timeout` set nginx's `proxy_*_timeout` for the
/// Ingress's locations ("all values are in seconds"). A pod that answers after 3 s behind
/// `proxy-read-timeout: "1"` gets the client a `504` after about a second; another Ingress
/// of the same Service without it keeps the class timeout and gets the slow answer.
#[tokio::test]
async fn proxy_read_timeout_applies_to_its_ingress_only() {
    let backend = backends::delayed("slow", Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            (
                "hurried",
                ingress(
                    "hurried",
                    API,
                    "web",
                    &[
                        ("portcullis.io/health-check", "none"),
                        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "1"),
                        ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "2"),
                    ],
                    None,
                ),
            ),
            (
                "patient",
                ingress(
                    "patient",
                    OPEN,
                    "web",
                    &[("portcullis.io/health-check", "none")],
                    None,
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let started = Instant::now();
    let r = curl("http", API, proxy.http, "/hurried", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );

    let started = Instant::now();
    let r = curl("http", OPEN, proxy.http, "/patient", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "slow slow");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// An Ingress name, its annotations, and the key its diagnostic names.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// Values ingress-nginx's parsers would not take, and header lines `http` cannot carry, refuse
/// the Ingress with a diagnostic naming the key (`portcullis check` exits 1).
#[test]
fn invalid_values_are_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[8080]));
    let cors = ("nginx.ingress.kubernetes.io/enable-cors", "true");
    let cases: &[Case] = &[
        (
            "bad-methods",
            &[
                cors,
                (
                    "nginx.ingress.kubernetes.io/cors-allow-methods",
                    "GET, P0ST",
                ),
            ],
            "nginx.ingress.kubernetes.io/cors-allow-methods",
        ),
        (
            "bad-max-age",
            &[cors, ("portcullis.io/cors-max-age", "ten days")],
            "portcullis.io/cors-max-age",
        ),
        (
            "bad-origin",
            &[
                cors,
                (
                    "nginx.ingress.kubernetes.io/cors-allow-origin",
                    "app.example.com",
                ),
            ],
            "nginx.ingress.kubernetes.io/cors-allow-origin",
        ),
        (
            "host-header",
            &[("portcullis.io/request-headers", "Host: other.example")],
            "portcullis.io/request-headers",
        ),
        (
            "bad-header-name",
            &[("portcullis.io/response-headers", "X-Ok: 1\\nBad Name: 2")],
            "portcullis.io/response-headers",
        ),
        (
            "nginx-timeout-unit",
            &[("nginx.ingress.kubernetes.io/proxy-read-timeout", "30s")],
            "nginx.ingress.kubernetes.io/proxy-read-timeout",
        ),
        (
            "own-timeout",
            &[("portcullis.io/proxy-connect-timeout", "fast")],
            "portcullis.io/proxy-connect-timeout",
        ),
    ];
    for (i, (name, annotations, _)) in cases.iter().enumerate() {
        let host = format!("h{i}.headers.e2e.test");
        manifests::write(
            m,
            &format!("{name}.yaml"),
            &ingress(name, &host, "web", annotations, None),
        );
    }
    let out = check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (name, _, key) in cases {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("Ingress default/{name} ")))
            .unwrap_or_else(|| panic!("no diagnostic for {name}:\n{text}"));
        assert!(line.trim_start().starts_with("error"), "{line}");
        assert!(line.contains(key), "{line}");
    }
    assert!(text.contains("line 2"), "{text}");
}

/// nginx's `proxy_read_timeout` (which ingress-nginx's `proxy-read-timeout` sets) is "set only
/// between two successive read operations": a pod that sends part of its body and then
/// nothing has its response cut off after the timeout, not left hanging.
#[tokio::test]
async fn proxy_read_timeout_cuts_off_a_stalled_response_body() {
    let backend = backends::stalling("stalls", true).await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[(
            "app",
            ingress(
                "app",
                API,
                "web",
                &[
                    ("portcullis.io/health-check", "none"),
                    ("nginx.ingress.kubernetes.io/proxy-read-timeout", "1"),
                ],
                None,
            ),
        )],
    );
    let proxy = Binary::start(&m).await;
    let started = Instant::now();
    let r = curl("http", API, proxy.http, "/stalls", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "12345", "{r:?}");
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// nginx's `proxy_send_timeout` (ingress-nginx's `proxy-send-timeout`, "Custom timeouts") is
/// "set only between two successive write operations": a pod that stops reading a large
/// request body gets the client a `504` after the timeout.
#[tokio::test]
async fn proxy_send_timeout_ends_a_body_the_pod_stopped_reading() {
    let backend = backends::stalling("stalls", false).await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[(
            "app",
            ingress(
                "app",
                API,
                "web",
                &[
                    ("portcullis.io/health-check", "none"),
                    ("portcullis.io/proxy-send-timeout", "1s"),
                ],
                None,
            ),
        )],
    );
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 48 << 20]).unwrap();
    let data = format!("@{}", big.display());
    let proxy = Binary::start(&m).await;
    let started = Instant::now();
    let r = curl(
        "http",
        API,
        proxy.http,
        "/upload",
        &["-X", "POST", "--data-binary", &data],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
}
