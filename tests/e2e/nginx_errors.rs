//! End to end, the built binary: ingress-nginx's `default-backend` and `custom-http-errors`
//! annotations, as a client and the pods observe them through Portcullis.
//!
//! What ingress-nginx documents and does, followed here:
//! - docs/user-guide/nginx-configuration/annotations.md, "Default Backend": "This service will
//!   handle the response when the configured service in the Ingress rule does not have any
//!   active endpoints. It will also handle the error responses if both this annotation and the
//!   custom-http-errors annotation are set." The Service is in the Ingress's namespace; its
//!   first port is used (the controller takes `DefaultBackend.Spec.Ports[0]`, and a default
//!   backend "is valid only if contains at least one endpoint").
//! - The controller applies the annotation to the root location of each server its Ingress
//!   creates (`locationApplyAnnotations` sets `loc.DefaultBackend`), whose backend is the
//!   Ingress's `spec.defaultBackend` or the global default backend: a path of the host that
//!   matches no rule reaches the annotation's Service when the host has no `spec.defaultBackend`
//!   (Portcullis has no global default backend; `spec.defaultBackend` keeps precedence).
//! - "Custom HTTP Errors": the listed codes are intercepted for the Ingress's locations and
//!   "routed to that annotation's default backend service". docs/user-guide/custom-errors.md:
//!   the default backend gets `X-Code`, `X-Format` (the client's `Accept`), `X-Original-URI`,
//!   `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`, `X-Request-ID`, and
//!   "NGINX does not change the response from the custom default backend". The template's
//!   error location keeps the method and rewrites the path to `/` (`rewrite (.*) / break`).
//! - Without a `default-backend` annotation the codes go to ingress-nginx's global default
//!   backend, which Portcullis does not have: such an Ingress is refused, with the key named.

use std::path::Path;

use crate::support::backends::{self};
use crate::support::binary::{Binary, check};
use crate::support::clients::curl;
use crate::support::manifests::{self, NS, ingress_class, service};

const HOST: &str = "app.errors.e2e.test";
const OTHER: &str = "plain.errors.e2e.test";
const SPEC_DEFAULT: &str = "spec.errors.e2e.test";
const DEFAULT_BACKEND: &str = "nginx.ingress.kubernetes.io/default-backend";
const CUSTOM_ERRORS: &str = "nginx.ingress.kubernetes.io/custom-http-errors";

/// An Ingress `name` for `host`: Prefix path `path` → Service `service` port 80, with
/// `annotations`.
fn ingress(
    name: &str,
    host: &str,
    path: &str,
    service: &str,
    annotations: &[(&str, &str)],
) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: {NS}
  creationTimestamp: \"2025-01-01T00:00:00Z\"
"
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (key, value) in annotations {
            out.push_str(&format!("    {key}: \"{value}\"\n"));
        }
    }
    out.push_str(&format!(
        "spec:
  ingressClassName: portcullis
  rules:
  - host: {host}
    http:
      paths:
      - path: {path}
        pathType: Prefix
        backend:
          service:
            name: {service}
            port:
              number: 80
"
    ));
    out
}

/// Writes the class and `files` (file stem, YAML) into `dir`.
fn write_all(dir: &Path, files: &[(&str, String)]) {
    manifests::write(dir, "class.yaml", &ingress_class());
    for (name, yaml) in files {
        manifests::write(dir, &format!("{name}.yaml"), yaml);
    }
}

/// A path that matches no rule of the host goes to the annotation's Service, as sent; the
/// Ingress's own path still goes to its pod. A host without the annotation answers 404, and an
/// Ingress's `spec.defaultBackend` keeps precedence over the annotation (it is the root
/// location's backend in ingress-nginx; the annotation only stands in for it when it has no
/// endpoint).
#[tokio::test]
async fn unmatched_paths_are_served_by_the_default_backend() {
    let web = backends::http("web").await;
    let errors = backends::http("errors").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    write_all(
        m,
        &[
            ("web", service("web", &[web.addr.port()])),
            ("errors", service("errors", &[errors.addr.port()])),
            (
                "app",
                ingress("app", HOST, "/app", "web", &[(DEFAULT_BACKEND, "errors")]),
            ),
            ("plain", ingress("plain", OTHER, "/app", "web", &[])),
            (
                "spec",
                ingress(
                    "spec",
                    SPEC_DEFAULT,
                    "/app",
                    "errors",
                    &[(DEFAULT_BACKEND, "errors")],
                )
                .replace(
                    "  rules:\n",
                    "  defaultBackend:\n    service:\n      name: web\n      port:\n        number: 80\n  rules:\n",
                ),
            ),
        ],
    );
    let proxy = Binary::start(m).await;

    let r = curl("http", HOST, proxy.http, "/app/x", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("web"), "{r:?}");

    let r = curl("http", HOST, proxy.http, "/elsewhere?q=1", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("errors"), "{r:?}");
    let seen = errors.proxied();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/elsewhere?q=1");
    assert!(!seen[0].headers.contains_key("x-code"), "{seen:?}");

    let r = curl("http", OTHER, proxy.http, "/elsewhere", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(errors.proxied().len(), 1);

    let r = curl("http", SPEC_DEFAULT, proxy.http, "/elsewhere", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("web"), "{r:?}");
    assert_eq!(errors.proxied().len(), 1);
}

/// A route whose Service has no endpoint is served by the default backend, not answered 503;
/// the same route without the annotation still answers 503.
#[tokio::test]
async fn a_route_without_endpoints_is_served_by_the_default_backend() {
    let errors = backends::http("errors").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    write_all(
        m,
        &[
            ("empty", service("empty", &[])),
            ("errors", service("errors", &[errors.addr.port()])),
            (
                "app",
                ingress("app", HOST, "/", "empty", &[(DEFAULT_BACKEND, "errors")]),
            ),
            ("plain", ingress("plain", OTHER, "/", "empty", &[])),
        ],
    );
    let proxy = Binary::start(m).await;

    let r = curl("http", HOST, proxy.http, "/orders/7", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("errors"), "{r:?}");
    assert_eq!(
        errors
            .proxied()
            .iter()
            .map(|s| s.uri.as_str())
            .collect::<Vec<_>>(),
        ["/orders/7"]
    );

    let r = curl("http", OTHER, proxy.http, "/orders/7", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
}

/// The pod answers 404 or 503 (listed): the client gets the default backend's answer, which saw
/// ingress-nginx's headers, the method, and `/` with the query. A code that is not listed
/// reaches the client as the pod sent it.
#[tokio::test]
async fn listed_error_codes_are_answered_by_the_default_backend() {
    let web = backends::http("web").await;
    let errors = backends::http("errors").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    write_all(
        m,
        &[
            ("web", service("web", &[web.addr.port()])),
            ("errors", service("errors", &[errors.addr.port()])),
            (
                "app",
                ingress(
                    "app",
                    HOST,
                    "/",
                    "web",
                    &[(DEFAULT_BACKEND, "errors"), (CUSTOM_ERRORS, "404,503")],
                ),
            ),
        ],
    );
    let proxy = Binary::start(m).await;

    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/status/404/item?id=3",
        &[
            "-H",
            "Accept: application/json",
            "-H",
            "X-Request-ID: err-1",
        ],
    )
    .await;
    // The default backend's answer, status included (the test backend answers 200).
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("errors"), "{r:?}");
    assert_eq!(r.body, "backend=errors path=/?id=3 sni=", "{r:?}");
    let seen = errors.proxied();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let e = &seen[0];
    let h = |name: &str| e.headers.get(name).map(String::as_str);
    assert_eq!(e.method, "GET");
    assert_eq!(e.uri, "/?id=3");
    assert_eq!(h("x-code"), Some("404"));
    assert_eq!(h("x-format"), Some("application/json"));
    assert_eq!(h("x-original-uri"), Some("/status/404/item?id=3"));
    assert_eq!(h("x-namespace"), Some(NS));
    assert_eq!(h("x-ingress-name"), Some("app"));
    assert_eq!(h("x-service-name"), Some("web"));
    assert_eq!(h("x-service-port"), Some("80"));
    assert_eq!(h("x-request-id"), Some("err-1"));
    assert!(h("host").is_some_and(|v| v.starts_with(HOST)), "{e:?}");
    // The pod did get the request first.
    assert!(
        web.proxied()
            .iter()
            .any(|s| s.uri == "/status/404/item?id=3")
    );

    // The method is kept (nginx's error_page to a named location).
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/status/503",
        &["-X", "POST", "-d", "payload"],
    )
    .await;
    assert_eq!(r.header("x-backend"), Some("errors"), "{r:?}");
    let last = errors.proxied().pop().expect("a second error request");
    assert_eq!(last.method, "POST");
    assert_eq!(last.headers.get("x-code").map(String::as_str), Some("503"));
    assert!(last.body.is_empty(), "{last:?}");

    // 500 is not listed: the pod's answer as it is.
    let r = curl("http", HOST, proxy.http, "/status/500", &[]).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("web"), "{r:?}");
    assert_eq!(errors.proxied().len(), 2);

    // A 200 is the pod's too.
    let r = curl("http", HOST, proxy.http, "/fine", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("web"), "{r:?}");
}

/// `custom-http-errors` without `default-backend` has no Service to answer the codes: refused,
/// naming the key. So are codes outside 400–599. A `default-backend` naming a missing Service
/// is an error diagnostic on the annotation (the routes are served without it).
#[test]
fn check_refuses_codes_without_a_default_backend_and_reports_a_missing_service() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    write_all(
        m,
        &[
            ("web", service("web", &[8080])),
            (
                "lonely",
                ingress("lonely", HOST, "/", "web", &[(CUSTOM_ERRORS, "404")]),
            ),
            (
                "range",
                ingress(
                    "range",
                    "range.errors.e2e.test",
                    "/",
                    "web",
                    &[(DEFAULT_BACKEND, "web"), (CUSTOM_ERRORS, "302")],
                ),
            ),
            (
                "missing",
                ingress(
                    "missing",
                    OTHER,
                    "/",
                    "web",
                    &[(DEFAULT_BACKEND, "nowhere")],
                ),
            ),
        ],
    );
    let out = check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(&format!("Ingress default/{name} ")) && l.contains("error"))
            .unwrap_or_else(|| panic!("no error for {name}:\n{text}"))
            .to_string()
    };
    let lonely = line("lonely");
    assert!(lonely.contains(CUSTOM_ERRORS), "{lonely}");
    assert!(lonely.contains("default-backend"), "{lonely}");
    assert!(line("range").contains(CUSTOM_ERRORS), "{text}");
    let missing = line("missing");
    assert!(
        missing.contains(&format!("metadata.annotations[\"{DEFAULT_BACKEND}\"]")),
        "{missing}"
    );
    assert!(missing.contains("nowhere"), "{missing}");
    // The Ingress with the missing default backend is still served.
    assert!(text.contains(&format!("{OTHER}  (")), "{text}");
}
