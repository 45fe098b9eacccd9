//! End to end, the built binary in standalone mode: Gateway API objects (GatewayClass,
//! Gateway, HTTPRoute, TLSRoute, BackendTLSPolicy, ReferenceGrant) in the manifest directory,
//! real backends, real clients. Each test names the Gateway API conformance scenario
//! (kubernetes-sigs/gateway-api `conformance/tests/*.go`) whose expectations it reproduces.

use std::time::Duration;

use crate::support::backends::{self, TlsOptions};
use crate::support::binary::Binary;
use crate::support::clients::{curl_https, s_client};
use crate::support::http::{Conn, Via, get, tls_get};
use crate::support::manifests::{self, write};
use crate::support::pki::Ca;

const T: Duration = Duration::from_secs(20);

/// Our GatewayClass and a Gateway `gw` in `default` with an HTTP listener (port 80, routes
/// from every namespace), an HTTPS listener terminating with Secret `gw-tls` for
/// `*.gw.test`, and a TLS pass-through listener for `*.pass.test`.
fn gateway() -> String {
    manifests::gateway_with(
        "  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: All
  - name: https
    port: 443
    protocol: HTTPS
    hostname: \"*.gw.test\"
    tls:
      mode: Terminate
      certificateRefs:
      - name: gw-tls
  - name: pass
    port: 443
    protocol: TLS
    hostname: \"*.pass.test\"
    tls:
      mode: Passthrough
",
    )
}

/// A Service `name` in `namespace` whose one endpoint is 127.0.0.1:`port` (port 80 → `web`).
fn service_in(namespace: &str, name: &str, port: u16) -> String {
    manifests::service(name, &[port]).replace(
        &format!("namespace: {}", manifests::NS),
        &format!("namespace: {namespace}"),
    )
}

/// An HTTPRoute `name` in `default` attached to `gw` with `hostnames` and `rules` (YAML of
/// the `rules:` list, indented by two).
fn http_route(name: &str, section: Option<&str>, hostnames: &[&str], rules: &str) -> String {
    http_route_in("default", name, section, hostnames, rules)
}

fn http_route_in(
    namespace: &str,
    name: &str,
    section: Option<&str>,
    hostnames: &[&str],
    rules: &str,
) -> String {
    let section = section.map_or(String::new(), |s| format!("\n    sectionName: {s}"));
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: {namespace}
spec:
  parentRefs:
  - name: gw
    namespace: default{section}
  hostnames: [{}]
  rules:
{rules}",
        hostnames.join(", ")
    )
}

/// A rule sending `matches` (YAML lines at rule level, may be empty) to Service `service`.
fn rule(matches: &str, service: &str) -> String {
    format!("  - {matches}backendRefs:\n    - name: {service}\n      port: 80\n")
}

fn manifest_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    (dir, m)
}

fn has_diagnostic(lines: &[String], needle: &[&str]) -> bool {
    lines.iter().any(|l| needle.iter().all(|n| l.contains(n)))
}

/// Every diagnostic of the live table as `severity object field reason message`.
async fn diagnostic_lines(proxy: &Binary) -> Vec<String> {
    let table = proxy.table().await;
    table["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            format!(
                "{} {} {} {} {}",
                text("severity"),
                text("object"),
                text("field"),
                text("reason"),
                text("message")
            )
        })
        .collect()
}

async fn wait_diagnostic(proxy: &Binary, needle: &[&str]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let lines = diagnostic_lines(proxy).await;
        if has_diagnostic(&lines, needle) || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HTTPRouteSimpleSameNamespace, HTTPRouteExactPathMatching, HTTPRouteMatching,
/// HTTPRouteHeaderMatching, HTTPRouteQueryParamMatching, HTTPRouteMethodMatching,
/// HTTPRouteRegularExpressionPathMatch (whole path, case-sensitive): an HTTP
/// listener routes by path (Exact before the longest PathPrefix, element-wise), then by
/// method, header and query parameter, the more specific match first (of several entries
/// with one name, the first); an unmatched path is 404.
#[tokio::test]
async fn http_route_matches_path_method_headers_and_query() {
    let (_d, m) = manifest_dir();
    let (root, exact, v2, post, query) = (
        backends::http("root").await,
        backends::http("exact").await,
        backends::http("v2").await,
        backends::http("post").await,
        backends::http("query").await,
    );
    write(&m, "gw.yaml", &gateway());
    for b in [&root, &exact, &v2, &post, &query] {
        write(
            &m,
            &format!("svc-{}.yaml", b.name),
            &service_in("default", &b.name, b.addr.port()),
        );
    }
    let rules = [
        rule("matches:\n    - path: {type: PathPrefix, value: /}\n    ", "root"),
        rule("matches:\n    - path: {type: Exact, value: /exact}\n    ", "exact"),
        rule(
            "matches:\n    - path: {type: PathPrefix, value: /api}\n      headers:\n      - {name: version, value: two}\n    ",
            "v2",
        ),
        rule(
            "matches:\n    - path: {type: PathPrefix, value: /api}\n      method: POST\n    ",
            "post",
        ),
        rule(
            "matches:\n    - path: {type: PathPrefix, value: /api}\n      queryParams:\n      - {name: animal, value: whale}\n    ",
            "query",
        ),
        rule(
            "matches:\n    - path: {type: RegularExpression, value: \"/v[0-9]+/items\"}\n    ",
            "exact",
        ),
        // Repeated names: "only the first entry with an equivalent name MUST be considered for
        // a match" (`HTTPHeaderMatch`, case-insensitive; `HTTPQueryParamMatch`).
        rule(
            "matches:\n    - path: {type: PathPrefix, value: /dup}\n      headers:\n      - {name: version, value: two}\n      - {name: VERSION, value: three}\n      queryParams:\n      - {name: animal, value: whale}\n      - {name: animal, value: dolphin}\n    ",
            "v2",
        ),
    ]
    .concat();
    write(
        &m,
        "route.yaml",
        &http_route("match", Some("http"), &["match.gw.test"], &rules),
    );
    let proxy = Binary::start(&m).await;
    let host = "match.gw.test";

    let served_by = |answer: &crate::support::http::Answer| answer.backend().map(str::to_string);
    assert_eq!(
        served_by(&get(proxy.http, host, "/", &[]).await).as_deref(),
        Some("root")
    );
    assert_eq!(
        served_by(&get(proxy.http, host, "/exact", &[]).await).as_deref(),
        Some("exact")
    );
    // Exact is exact: /exact/more falls to the `/` prefix.
    assert_eq!(
        served_by(&get(proxy.http, host, "/exact/more", &[]).await).as_deref(),
        Some("root")
    );
    // PathPrefix /api is element-wise: /apix is not under it.
    assert_eq!(
        served_by(&get(proxy.http, host, "/apix", &[("version", "two")]).await).as_deref(),
        Some("root")
    );
    assert_eq!(
        served_by(&get(proxy.http, host, "/api/v", &[("version", "two")]).await).as_deref(),
        Some("v2")
    );
    assert_eq!(
        served_by(&get(proxy.http, host, "/api/v", &[("Version", "two")]).await).as_deref(),
        Some("v2"),
        "header names are case-insensitive"
    );
    assert_eq!(
        served_by(&get(proxy.http, host, "/api/v", &[("version", "one")]).await).as_deref(),
        Some("root")
    );
    assert_eq!(
        served_by(&get(proxy.http, host, "/api/v?animal=whale", &[]).await).as_deref(),
        Some("query")
    );
    assert_eq!(
        served_by(&get(proxy.http, host, "/dup?animal=whale", &[("version", "two")]).await)
            .as_deref(),
        Some("v2"),
        "the first header and query entries of a name are the ones matched"
    );
    assert_eq!(
        served_by(
            &get(
                proxy.http,
                host,
                "/dup?animal=dolphin",
                &[("version", "three")]
            )
            .await
        )
        .as_deref(),
        Some("root"),
        "later entries of the same name are ignored"
    );
    let posted =
        crate::support::http::send(proxy.http, http::Method::POST, host, "/api/x", b"body").await;
    assert_eq!(posted.backend(), Some("post"));
    // POST with the header matches two rules: a method match outranks a header match (the
    // spec's precedence after the path).
    let mut conn = Conn::plain(proxy.http).await;
    let both = conn
        .send(crate::support::http::request(
            http::Method::POST,
            host,
            "/api/x",
            &[("version", "two")],
            bytes::Bytes::from_static(b""),
        ))
        .await
        .unwrap();
    assert_eq!(
        both.backend(),
        Some("post"),
        "method match ranks above header match"
    );
    // A regular expression matches the whole path, case-sensitively.
    assert_eq!(
        served_by(&get(proxy.http, host, "/v2/items", &[]).await).as_deref(),
        Some("exact")
    );
    assert_eq!(
        served_by(&get(proxy.http, host, "/v2/items/x", &[]).await).as_deref(),
        Some("root")
    );
    assert_eq!(
        served_by(&get(proxy.http, host, "/V2/items", &[]).await).as_deref(),
        Some("root")
    );
    // A host no route names: 404.
    assert_eq!(get(proxy.http, "other.test", "/", &[]).await.status, 404);
}

/// HTTPRouteHTTPSListener, GatewaySecretReferenceGrantSpecific (certificate in another
/// namespace): the HTTPS listener terminates with its Secret; a route attached to it is
/// served over TLS with that certificate; a certificate from another namespace needs a
/// ReferenceGrant there.
#[tokio::test]
async fn https_listener_terminates_with_its_certificate() {
    let (d, m) = manifest_dir();
    let ca = Ca::new("gateway e2e ca");
    let leaf = ca.leaf(&["*.gw.test"]);
    let ca_file = manifests::write_pem(d.path(), "ca.pem", &ca.cert_pem);
    let app = backends::http("app").await;
    write(&m, "gw.yaml", &gateway());
    write(&m, "secret.yaml", &leaf.secret_yaml("default", "gw-tls"));
    write(
        &m,
        "svc.yaml",
        &service_in("default", "app", app.addr.port()),
    );
    write(
        &m,
        "route.yaml",
        &http_route(
            "secure",
            Some("https"),
            &["secure.gw.test"],
            &rule("", "app"),
        ),
    );
    let proxy = Binary::start(&m).await;

    let r = curl_https("secure.gw.test", proxy.https, "/hi", &ca_file, &["--http2"]).await;
    assert_eq!(r.exit_code, 0, "curl: {}", r.stderr);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("app"));
    let seen = app.proxied();
    let last = seen.last().expect("the backend saw the request");
    assert_eq!(
        last.headers.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    let s = s_client(proxy.https, "secure.gw.test", Some(&ca_file)).await;
    assert_eq!(s.verify_code(), Some(0), "{}", s.stdout);
    // Only an HTTPS listener took the route: plain HTTP does not serve it.
    assert_eq!(
        get(proxy.http, "secure.gw.test", "/hi", &[]).await.status,
        404
    );
}

/// HTTPListenerIsolation and the Gateway API "Hostnames" guide: on one port, a request goes
/// to the most specific listener's routes only, and a wildcard matches one or more labels of
/// the `Host` header.
#[tokio::test]
async fn the_most_specific_listener_takes_the_request_and_wildcards_span_labels() {
    let (_d, m) = manifest_dir();
    let (any, wide, narrow, exact) = (
        backends::http("any").await,
        backends::http("wide").await,
        backends::http("narrow").await,
        backends::http("exact").await,
    );
    let mut listeners = String::new();
    for (name, host) in [
        ("empty", None),
        ("wide", Some("*.example.com")),
        ("narrow", Some("*.foo.example.com")),
        ("exact", Some("abc.foo.example.com")),
    ] {
        listeners.push_str(&format!(
            "  - name: {name}\n    port: 80\n    protocol: HTTP\n"
        ));
        if let Some(host) = host {
            listeners.push_str(&format!("    hostname: \"{host}\"\n"));
        }
    }
    write(&m, "gw.yaml", &manifests::gateway_with(&listeners));
    for (b, listener, path) in [
        (&any, "empty", "/any"),
        (&wide, "wide", "/wide"),
        (&narrow, "narrow", "/narrow"),
        (&exact, "exact", "/exact"),
    ] {
        write(
            &m,
            &format!("svc-{}.yaml", b.name),
            &service_in("default", &b.name, b.addr.port()),
        );
        write(
            &m,
            &format!("route-{}.yaml", b.name),
            &http_route(
                &b.name,
                Some(listener),
                &[],
                &rule(
                    &format!("matches:\n    - path: {{type: PathPrefix, value: {path}}}\n    "),
                    &b.name,
                ),
            ),
        );
    }
    let proxy = Binary::start(&m).await;
    let status = |host: &'static str, path: &'static str| {
        let addr = proxy.http;
        async move { get(addr, host, path, &[]).await }
    };
    assert_eq!(status("bar.com", "/any").await.backend(), Some("any"));
    assert_eq!(
        status("bar.example.com", "/wide").await.backend(),
        Some("wide")
    );
    // Two labels under *.example.com: still the `wide` listener (Host matching spans labels).
    assert_eq!(
        status("a.b.example.com", "/wide").await.backend(),
        Some("wide")
    );
    assert_eq!(
        status("bar.foo.example.com", "/narrow").await.backend(),
        Some("narrow")
    );
    assert_eq!(
        status("abc.foo.example.com", "/exact").await.backend(),
        Some("exact")
    );
    // Isolation: the more specific listener's host does not fall back to another's paths.
    assert_eq!(status("bar.foo.example.com", "/wide").await.status, 404);
    assert_eq!(status("abc.foo.example.com", "/narrow").await.status, 404);
    assert_eq!(status("bar.example.com", "/any").await.status, 404);
}

/// TLSRouteSimpleSameNamespace: a TLS listener in Passthrough mode sends the still-encrypted
/// connection to the TLSRoute's backend by SNI; the client sees the pod's own certificate.
#[tokio::test]
async fn tls_route_passes_the_connection_through_by_sni() {
    let (d, m) = manifest_dir();
    let ca = Ca::new("gateway passthrough ca");
    let pod_leaf = ca.leaf(&["db.pass.test"]);
    let ca_file = manifests::write_pem(d.path(), "ca.pem", &ca.cert_pem);
    let pod = backends::tls("pod", &pod_leaf, TlsOptions::default()).await;
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "svc.yaml",
        &service_in("default", "pod", pod.addr.port()),
    );
    write(
        &m,
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata:
  name: db
  namespace: default
spec:
  parentRefs:
  - name: gw
    sectionName: pass
  hostnames: [db.pass.test]
  rules:
  - backendRefs:
    - name: pod
      port: 80
",
    );
    let proxy = Binary::start(&m).await;
    let answer = tls_get(proxy.https, &ca, "db.pass.test", "/through", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.backend(), Some("pod"));
    let seen = pod.requests();
    assert_eq!(
        seen.last().and_then(|r| r.sni.as_deref()),
        Some("db.pass.test")
    );
    let s = s_client(proxy.https, "db.pass.test", Some(&ca_file)).await;
    let presented = s.certificates_pem();
    assert_eq!(
        crate::support::clients::pem_to_der(&presented[0]),
        pod_leaf.cert_der.to_vec(),
        "the pod's certificate, not one of ours"
    );
}

/// TLSRoute weights: connections are shared among the backendRefs by weight (exactly, over a
/// cycle of the total weight), and an invalid backendRef's share is refused: "Request
/// rejections must respect weight; if an invalid backend is requested to have 80% of
/// requests, then 80% of requests must be rejected instead" (`TLSRouteRule.backendRefs`).
#[tokio::test]
async fn tls_route_shares_connections_by_weight_and_refuses_an_invalid_share() {
    let (_d, m) = manifest_dir();
    let ca = Ca::new("gateway weighted passthrough ca");
    let leaf = ca.leaf(&["w.pass.test"]);
    let one = backends::tls("one", &leaf, TlsOptions::default()).await;
    let two = backends::tls("two", &leaf, TlsOptions::default()).await;
    write(&m, "gw.yaml", &gateway());
    for pod in [&one, &two] {
        write(
            &m,
            &format!("svc-{}.yaml", pod.name),
            &service_in("default", &pod.name, pod.addr.port()),
        );
    }
    write(
        &m,
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata:
  name: shared
  namespace: default
spec:
  parentRefs:
  - name: gw
    sectionName: pass
  hostnames: [w.pass.test]
  rules:
  - backendRefs:
    - {name: one, port: 80, weight: 1}
    - {name: gone, port: 80, weight: 2}
    - {name: two, port: 80, weight: 1}
",
    );
    let proxy = Binary::start(&m).await;
    let mut outcomes = std::collections::BTreeMap::new();
    for n in 0..16 {
        let outcome = match Conn::try_connect(proxy.https, &ca, Via::Tls, "w.pass.test").await {
            Ok(mut conn) => {
                let answer = conn.get("w.pass.test", &format!("/c/{n}")).await;
                answer.map_or_else(
                    |e| format!("request failed: {e}"),
                    |a| a.backend().unwrap_or("-").to_string(),
                )
            }
            Err(_) => "refused".to_string(),
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
    }
    assert_eq!(
        outcomes,
        [
            ("one".to_string(), 4),
            ("refused".to_string(), 8),
            ("two".to_string(), 4)
        ]
        .into(),
        "weights 1:2:1, the 2 invalid"
    );
    let lines = diagnostic_lines(&proxy).await;
    assert!(
        has_diagnostic(
            &lines,
            &[
                "TLSRoute default/shared",
                "spec.rules[0].backendRefs[1]",
                "MissingService"
            ]
        ),
        "{lines:#?}"
    );
}

/// BackendTLSPolicySanMultipleNames / BackendTLSPolicy (core): a route on the HTTPS listener
/// whose Service has a BackendTLSPolicy is re-encrypted to the pod, with the policy's
/// hostname as SNI, verified against the CA in the policy's ConfigMap.
#[tokio::test]
async fn backend_tls_policy_reencrypts_to_the_pod() {
    let (d, m) = manifest_dir();
    let front_ca = Ca::new("gateway front ca");
    let front = front_ca.leaf(&["*.gw.test"]);
    let pod_ca = Ca::new("gateway pod ca");
    let pod_leaf = pod_ca.leaf(&["pod.internal.test"]);
    let _ = d;
    let pod = backends::tls("secure-pod", &pod_leaf, TlsOptions::default()).await;
    write(&m, "gw.yaml", &gateway());
    write(&m, "secret.yaml", &front.secret_yaml("default", "gw-tls"));
    write(
        &m,
        "svc.yaml",
        &service_in("default", "secure-pod", pod.addr.port()),
    );
    write(
        &m,
        "route.yaml",
        &http_route(
            "re",
            Some("https"),
            &["re.gw.test"],
            &rule("", "secure-pod"),
        ),
    );
    let indented: String = pod_ca
        .cert_pem
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    write(
        &m,
        "policy.yaml",
        &format!(
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: pod-ca
  namespace: default
data:
  ca.crt: |
{indented}---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata:
  name: secure-pod
  namespace: default
spec:
  targetRefs:
  - group: \"\"
    kind: Service
    name: secure-pod
  validation:
    caCertificateRefs:
    - group: \"\"
      kind: ConfigMap
      name: pod-ca
    hostname: pod.internal.test
"
        ),
    );
    let proxy = Binary::start(&m).await;
    let answer = tls_get(proxy.https, &front_ca, "re.gw.test", "/inside", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.backend(), Some("secure-pod"));
    let seen = pod.proxied();
    assert_eq!(
        seen.last().and_then(|r| r.sni.as_deref()),
        Some("pod.internal.test"),
        "the policy's hostname is the SNI"
    );
}

/// HTTPRouteRequestHeaderModifier, HTTPRouteResponseHeaderModifier, HTTPRouteRewritePath,
/// HTTPRouteRedirectScheme / HTTPRouteRedirectHostAndStatus: filters edit the request and the
/// response, rewrite the path prefix, and a redirect answers without reaching the pod.
#[tokio::test]
async fn http_route_filters_edit_rewrite_and_redirect() {
    let (_d, m) = manifest_dir();
    let app = backends::http("app").await;
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "svc.yaml",
        &service_in("default", "app", app.addr.port()),
    );
    let rules = "  - matches:
    - path: {type: PathPrefix, value: /edit}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: set-value}, {name: x-forwarded-proto, value: from-the-filter}]
        add: [{name: x-add, value: added}]
        remove: [x-remove, x-real-ip, x-request-id]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: x-answer, value: yes}]
    backendRefs:
    - name: app
      port: 80
  - matches:
    - path: {type: PathPrefix, value: /old}
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    backendRefs:
    - name: app
      port: 80
  - matches:
    - path: {type: PathPrefix, value: /moved}
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: elsewhere.gw.test
        statusCode: 301
";
    // The route's own annotations apply too (the filters' `set` after them).
    let route = http_route("filters", Some("http"), &["f.gw.test"], rules).replace(
        "  namespace: default\nspec:",
        "  namespace: default\n  annotations: {portcullis.io/request-headers: \"x-from-annotation: yes\"}\nspec:",
    );
    assert!(route.contains("x-from-annotation"));
    write(&m, "route.yaml", &route);
    let proxy = Binary::start(&m).await;
    let host = "f.gw.test";

    let edited = get(
        proxy.http,
        host,
        "/edit",
        &[("x-add", "mine"), ("x-remove", "gone"), ("x-set", "old")],
    )
    .await;
    assert_eq!(edited.status, 200);
    assert_eq!(edited.header("x-answer"), "yes");
    let seen = app.proxied();
    let last = seen.last().expect("request reached the pod");
    assert_eq!(
        last.headers.get("x-set").map(String::as_str),
        Some("set-value")
    );
    assert_eq!(
        last.headers.get("x-add").map(String::as_str),
        Some("mine,added")
    );
    assert!(!last.headers.contains_key("x-remove"), "{:?}", last.headers);
    // The filter has the last word on the forwarded fields and the request ID too: the proxy's
    // own values are set before it (HTTPHeaderFilter: `set` "overwrites the request with the
    // given header", `remove` removes it "before the action", whoever set them).
    assert_eq!(
        last.headers.get("x-forwarded-proto").map(String::as_str),
        Some("from-the-filter")
    );
    assert!(
        !last.headers.contains_key("x-real-ip"),
        "{:?}",
        last.headers
    );
    assert!(
        !last.headers.contains_key("x-request-id"),
        "{:?}",
        last.headers
    );
    assert_eq!(
        last.headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        last.headers.get("x-from-annotation").map(String::as_str),
        Some("yes")
    );

    let rewritten = get(proxy.http, host, "/old/page?q=1", &[]).await;
    assert_eq!(rewritten.status, 200);
    assert_eq!(
        app.proxied().last().map(|r| r.uri.clone()).as_deref(),
        Some("/new/page?q=1")
    );

    let before = app.proxied().len();
    let moved = get(proxy.http, host, "/moved/here", &[]).await;
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.header("location"),
        "https://elsewhere.gw.test/moved/here"
    );
    assert_eq!(
        app.proxied().len(),
        before,
        "a redirect never reaches the pod"
    );
}

/// HTTPRouteInvalidCrossNamespaceParentRef / GatewayWithAttachedRoutes (allowedRoutes Same),
/// HTTPRouteHostnameIntersection (no common hostname), HTTPRouteInvalidCrossNamespaceBackendRef
/// and HTTPRouteReferenceGrant: routes a listener does not admit and routes with no hostname
/// in common with it are not served; a backend in another namespace without a ReferenceGrant
/// answers 500; each with the spec's reason; adding the ReferenceGrant serves the backend.
#[tokio::test]
async fn routes_not_admitted_are_not_served_with_the_specs_reason() {
    let (_d, m) = manifest_dir();
    let other = backends::http("other").await;
    let app = backends::http("app").await;
    let ca = Ca::new("gateway negative ca");
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "secret.yaml",
        &ca.leaf(&["*.gw.test"]).secret_yaml("default", "gw-tls"),
    );
    write(
        &m,
        "svc.yaml",
        &service_in("default", "app", app.addr.port()),
    );
    write(
        &m,
        "svc-other.yaml",
        &service_in("other", "other", other.addr.port()),
    );
    // The HTTPS listener admits routes of its own namespace only (the default).
    write(
        &m,
        "foreign.yaml",
        &http_route_in(
            "tenant",
            "foreign",
            Some("https"),
            &["foreign.gw.test"],
            &rule("", "app"),
        ),
    );
    // Its hostname is outside the HTTPS listener's *.gw.test.
    write(
        &m,
        "mismatch.yaml",
        &http_route(
            "mismatch",
            Some("https"),
            &["nope.example"],
            &rule("", "app"),
        ),
    );
    // A backend in namespace `other`, no ReferenceGrant yet.
    write(
        &m,
        "cross.yaml",
        &http_route(
            "cross",
            Some("http"),
            &["cross.gw.test"],
            "  - backendRefs:\n    - name: other\n      namespace: other\n      port: 80\n",
        ),
    );
    let proxy = Binary::start(&m).await;

    let lines = wait_diagnostic(
        &proxy,
        &["HTTPRoute tenant/foreign", "NotAllowedByListeners"],
    )
    .await;
    assert!(
        has_diagnostic(
            &lines,
            &["HTTPRoute tenant/foreign", "NotAllowedByListeners"]
        ),
        "{lines:#?}"
    );
    assert!(
        has_diagnostic(
            &lines,
            &["HTTPRoute default/mismatch", "NoMatchingListenerHostname"]
        ),
        "{lines:#?}"
    );
    assert!(
        has_diagnostic(
            &lines,
            &[
                "HTTPRoute default/cross",
                "RefNotPermitted",
                "spec.rules[0].backendRefs[0]"
            ]
        ),
        "{lines:#?}"
    );
    // The admin `/table` carries the conditions as the status would.
    let table = proxy.table().await;
    let foreign = table["gateway_api"]["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "foreign")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        foreign["parents"][0]["conditions"][0]["reason"], "NotAllowedByListeners",
        "{table:#}"
    );
    // The route is attached; its backend is not usable: its requests get 500 (the spec).
    assert_eq!(get(proxy.http, "cross.gw.test", "/", &[]).await.status, 500);
    assert_eq!(get(proxy.http, "nope.example", "/", &[]).await.status, 404);

    let generation = proxy.generation().await;
    write(
        &m,
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: let-default-in
  namespace: other
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: default
  to:
  - group: \"\"
    kind: Service
",
    );
    proxy.wait_generation_above(generation, T).await;
    let answer = get(proxy.http, "cross.gw.test", "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.backend(), Some("other"));
}

/// Ingress and Gateway API on one proxy: a host claimed by both is the Ingress's (diagnosed
/// on the route), every other host of the route is served; and a route edit is live on a
/// connection that was open before it (the same guarantees as an Ingress's).
#[tokio::test]
async fn ingress_wins_a_shared_host_and_route_edits_are_live_on_open_connections() {
    let (_d, m) = manifest_dir();
    let by_ingress = backends::http("by-ingress").await;
    let by_route = backends::http("by-route").await;
    let next = backends::http("next").await;
    let ca = Ca::new("gateway side by side ca");
    write(&m, "class.yaml", &manifests::ingress_class());
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "secret.yaml",
        &ca.leaf(&["*.gw.test"]).secret_yaml("default", "gw-tls"),
    );
    for b in [&by_ingress, &by_route, &next] {
        write(
            &m,
            &format!("svc-{}.yaml", b.name),
            &service_in("default", &b.name, b.addr.port()),
        );
    }
    write(
        &m,
        "ingress.yaml",
        &manifests::ingress("old", "shared.gw.test", "by-ingress", &[], None),
    );
    write(
        &m,
        "route.yaml",
        &http_route(
            "new",
            Some("http"),
            &["shared.gw.test", "mine.gw.test"],
            &rule("", "by-route"),
        ),
    );
    let proxy = Binary::start(&m).await;
    assert_eq!(
        get(proxy.http, "shared.gw.test", "/", &[]).await.backend(),
        Some("by-ingress")
    );
    let lines = diagnostic_lines(&proxy).await;
    assert!(
        has_diagnostic(
            &lines,
            &["HTTPRoute default/new", "Conflict", "shared.gw.test"]
        ),
        "{lines:#?}"
    );

    let mut conn = Conn::open(proxy.http, proxy.https, &ca, Via::Plain, "mine.gw.test").await;
    assert_eq!(
        conn.get("mine.gw.test", "/a").await.unwrap().backend(),
        Some("by-route")
    );
    let generation = proxy.generation().await;
    write(
        &m,
        "route.yaml",
        &http_route(
            "new",
            Some("http"),
            &["shared.gw.test", "mine.gw.test"],
            &rule("", "next"),
        ),
    );
    proxy.wait_generation_above(generation, T).await;
    assert_eq!(
        conn.get("mine.gw.test", "/b").await.unwrap().backend(),
        Some("next"),
        "the open connection follows the edited route"
    );
    // A version refused for what it asks (a bad annotation value) leaves the last good
    // version serving, as an Ingress's does.
    let generation = proxy.generation().await;
    let refused = http_route(
        "new",
        Some("http"),
        &["shared.gw.test", "mine.gw.test"],
        &rule("", "by-route"),
    )
    .replace(
        "  namespace: default\nspec:",
        "  namespace: default\n  annotations: {portcullis.io/load-balance: bogus}\nspec:",
    );
    assert!(refused.contains("bogus"));
    write(&m, "route.yaml", &refused);
    proxy.wait_generation_above(generation, T).await;
    assert_eq!(
        conn.get("mine.gw.test", "/kept").await.unwrap().backend(),
        Some("next")
    );
    let lines = diagnostic_lines(&proxy).await;
    assert!(
        has_diagnostic(&lines, &["HTTPRoute default/new", "LastGoodKept"]),
        "{lines:#?}"
    );
    assert!(
        has_diagnostic(&lines, &["HTTPRoute default/new", "load-balance"]),
        "{lines:#?}"
    );
    // A broken edit keeps the last good file's objects serving.
    let generation = proxy.generation().await;
    write(
        &m,
        "route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: [broken\n",
    );
    proxy.wait_generation_above(generation, T).await;
    assert_eq!(
        conn.get("mine.gw.test", "/c").await.unwrap().backend(),
        Some("next")
    );
}

/// HTTPRouteWeight, HTTPRouteInvalidNonExistentBackendRef, HTTPRouteInvalidBackendRefUnknownKind:
/// weighted backendRefs share the requests in proportion (exactly, over a cycle of the total
/// weight: the split is deterministic); a rule whose backend does not exist or is not a
/// Service answers 500; and when only some are invalid, "the proportion of requests that
/// would otherwise have been routed to an invalid backend MUST receive a 500 status code"
/// (`HTTPRouteRule.backendRefs`): with equal weights, half.
#[tokio::test]
async fn weighted_backends_share_requests_and_unusable_ones_answer_500() {
    let (_d, m) = manifest_dir();
    let (a, b) = (backends::http("a").await, backends::http("b").await);
    write(&m, "gw.yaml", &gateway());
    for x in [&a, &b] {
        write(
            &m,
            &format!("svc-{}.yaml", x.name),
            &service_in("default", &x.name, x.addr.port()),
        );
    }
    let rules = "  - matches:
    - path: {type: PathPrefix, value: /split}
    backendRefs:
    - {name: a, port: 80, weight: 3}
    - {name: b, port: 80, weight: 1}
    - {name: c, port: 80, weight: 0}
  - matches:
    - path: {type: PathPrefix, value: /missing}
    backendRefs:
    - {name: nowhere, port: 80}
  - matches:
    - path: {type: PathPrefix, value: /unknown-kind}
    backendRefs:
    - {group: example.com, kind: Bucket, name: b, port: 80}
  - matches:
    - path: {type: PathPrefix, value: /partial}
    backendRefs:
    - {name: gone, port: 80, weight: 1}
    - {name: a, port: 80, weight: 1}
";
    write(
        &m,
        "route.yaml",
        &http_route("weights", Some("http"), &["w.gw.test"], rules),
    );
    let proxy = Binary::start(&m).await;
    let mut conn = Conn::plain(proxy.http).await;
    let mut counts = std::collections::BTreeMap::new();
    for n in 0..40 {
        let answer = conn.get("w.gw.test", &format!("/split/{n}")).await.unwrap();
        assert_eq!(answer.status, 200);
        *counts
            .entry(answer.backend().unwrap_or("-").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..20 {
        let answer = conn
            .get("w.gw.test", &format!("/partial/{n}"))
            .await
            .unwrap();
        let from = answer.backend().unwrap_or("-").to_string();
        *statuses.entry((answer.status.as_u16(), from)).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        [((200, "a".to_string()), 10), ((500, "-".to_string()), 10)].into(),
        "half of /partial answered 500, half served by a"
    );
    assert_eq!(
        get(proxy.http, "w.gw.test", "/missing", &[]).await.status,
        500
    );
    assert_eq!(
        get(proxy.http, "w.gw.test", "/unknown-kind", &[])
            .await
            .status,
        500
    );
    let lines = diagnostic_lines(&proxy).await;
    assert!(
        has_diagnostic(
            &lines,
            &[
                "HTTPRoute default/weights",
                "spec.rules[1].backendRefs[0]",
                "MissingService"
            ]
        ),
        "{lines:#?}"
    );
    assert!(
        has_diagnostic(
            &lines,
            &[
                "HTTPRoute default/weights",
                "spec.rules[2].backendRefs[0]",
                "InvalidKind"
            ]
        ),
        "{lines:#?}"
    );
    assert!(
        has_diagnostic(
            &lines,
            &[
                "HTTPRoute default/weights",
                "spec.rules[3].backendRefs[0]",
                "MissingService"
            ]
        ),
        "{lines:#?}"
    );
}

/// HTTPRouteRedirectPortAndScheme, HTTPRouteRedirectPath, HTTPRouteRedirectHostAndStatus and
/// HTTPRouteRewriteHost: the redirect's default status is 302; a port the scheme implies is
/// left out of `Location`, any other is kept; `ReplaceFullPath` and `ReplacePrefixMatch`
/// rewrite the redirect's path, keeping the query; `URLRewrite` hostname is the `Host` the
/// pod sees.
#[tokio::test]
async fn redirects_and_rewrites_follow_the_spec_table() {
    let (_d, m) = manifest_dir();
    let app = backends::http("app").await;
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "svc.yaml",
        &service_in("default", "app", app.addr.port()),
    );
    let redirect = |prefix: &str, body: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {body}
"
        )
    };
    let rules = [
        redirect("/default", "{hostname: other.gw.test}"),
        redirect("/https-port", "{scheme: https, port: 8443}"),
        redirect("/https-only", "{scheme: https, statusCode: 308}"),
        redirect("/http-443", "{port: 443, statusCode: 307}"),
        redirect(
            "/full",
            "{path: {type: ReplaceFullPath, replaceFullPath: /one}, statusCode: 303}",
        ),
        redirect(
            "/prefix",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}",
        ),
        "  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: inside.example}
    backendRefs: [{name: app, port: 80}]
"
        .to_string(),
    ]
    .concat();
    write(
        &m,
        "route.yaml",
        &http_route("redirects", Some("http"), &["r.gw.test"], &rules),
    );
    let proxy = Binary::start(&m).await;
    let host = "r.gw.test";
    for (path, status, location) in [
        ("/default/a?x=1", 302, "http://other.gw.test/default/a?x=1"),
        ("/https-port/a", 302, "https://r.gw.test:8443/https-port/a"),
        ("/https-only/a", 308, "https://r.gw.test/https-only/a"),
        ("/http-443/a", 307, "http://r.gw.test:443/http-443/a"),
        ("/full/a/b", 303, "http://r.gw.test/one"),
        ("/prefix/a/b?q", 302, "http://r.gw.test/new/a/b?q"),
        ("/prefix", 302, "http://r.gw.test/new"),
    ] {
        let answer = get(proxy.http, host, path, &[]).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        assert_eq!(answer.header("location"), location, "{path}");
    }
    assert!(app.proxied().is_empty(), "redirects never reach the pod");
    let rewritten = get(proxy.http, host, "/host/x", &[]).await;
    assert_eq!(rewritten.status, 200);
    let seen = app.proxied();
    assert_eq!(
        seen.last()
            .and_then(|r| r.headers.get("host"))
            .map(String::as_str),
        Some("inside.example")
    );
}

/// TLSRouteInvalidReferenceGrant / TLSRoute hostname intersection, and our PROXY protocol
/// annotation on a TLSRoute: the pod gets the client's address in a PROXY v2 header before
/// the ClientHello; a TLSRoute whose hostnames miss the listener's is not served.
#[tokio::test]
async fn tls_route_sends_proxy_protocol_and_is_not_served_outside_its_listener() {
    let (_d, m) = manifest_dir();
    let ca = Ca::new("gateway tlsroute ca");
    let pod = backends::tls(
        "pod",
        &ca.leaf(&["app.pass.test"]),
        TlsOptions {
            expect_proxy_protocol: true,
        },
    )
    .await;
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "svc.yaml",
        &service_in("default", "pod", pod.addr.port()),
    );
    let tls_route = |name: &str, host: &str| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata:
  name: {name}
  namespace: default
  annotations: {{portcullis.io/proxy-protocol: v2}}
spec:
  parentRefs: [{{name: gw, sectionName: pass}}]
  hostnames: [{host}]
  rules: [{{backendRefs: [{{name: pod, port: 80}}]}}]
"
        )
    };
    write(
        &m,
        "routes.yaml",
        &[
            tls_route("app", "app.pass.test"),
            tls_route("stray", "stray.example"),
        ]
        .concat(),
    );
    let proxy = Binary::start(&m).await;
    let answer = tls_get(proxy.https, &ca, "app.pass.test", "/", &[]).await;
    assert_eq!(answer.backend(), Some("pod"));
    let seen = pod.proxied();
    let header = seen
        .last()
        .and_then(|r| r.proxy.clone())
        .expect("a PROXY header");
    assert_eq!(header.version, 2);
    assert_eq!(header.source.ip(), std::net::Ipv4Addr::LOCALHOST);
    let lines = wait_diagnostic(
        &proxy,
        &["TLSRoute default/stray", "NoMatchingListenerHostname"],
    )
    .await;
    assert!(
        has_diagnostic(
            &lines,
            &["TLSRoute default/stray", "NoMatchingListenerHostname"]
        ),
        "{lines:#?}"
    );
}

/// BackendTLSPolicy: the pod's certificate must carry the policy's hostname; a pod whose
/// certificate names another host is not trusted (the request fails with 502, not served
/// unverified).
#[tokio::test]
async fn backend_tls_policy_refuses_a_pod_with_another_name() {
    let (_d, m) = manifest_dir();
    let front_ca = Ca::new("gateway policy front ca");
    let pod_ca = Ca::new("gateway policy pod ca");
    let pod = backends::tls(
        "liar",
        &pod_ca.leaf(&["someone-else.test"]),
        TlsOptions::default(),
    )
    .await;
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "secret.yaml",
        &front_ca
            .leaf(&["*.gw.test"])
            .secret_yaml("default", "gw-tls"),
    );
    write(
        &m,
        "svc.yaml",
        &service_in("default", "liar", pod.addr.port()),
    );
    write(
        &m,
        "route.yaml",
        &http_route("liar", Some("https"), &["liar.gw.test"], &rule("", "liar")),
    );
    let ca_secret = manifests::ca_secret("pod-ca", &pod_ca.cert_pem);
    write(
        &m,
        "policy.yaml",
        &format!(
            "{ca_secret}---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: liar, namespace: default}}
spec:
  targetRefs: [{{group: \"\", kind: Service, name: liar}}]
  validation:
    caCertificateRefs: [{{group: \"\", kind: Secret, name: pod-ca}}]
    hostname: expected.internal.test
"
        ),
    );
    let proxy = Binary::start(&m).await;
    let answer = tls_get(proxy.https, &front_ca, "liar.gw.test", "/", &[]).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert!(
        pod.proxied().is_empty(),
        "no request reached the unverified pod"
    );
}

/// GatewaySecretReferenceGrantSpecific and last good: an HTTPS listener's certificate in
/// another namespace is used once a ReferenceGrant there allows it; a Gateway file that then
/// breaks keeps its last good objects serving.
#[tokio::test]
async fn a_granted_certificate_from_another_namespace_and_a_broken_gateway_file() {
    let (d, m) = manifest_dir();
    let ca = Ca::new("gateway cross-namespace certificate ca");
    let ca_file = manifests::write_pem(d.path(), "ca.pem", &ca.cert_pem);
    let app = backends::http("app").await;
    let gateway_yaml = gateway().replace(
        "      - name: gw-tls",
        "      - name: gw-tls\n        namespace: certs",
    );
    write(&m, "gw.yaml", &gateway_yaml);
    write(
        &m,
        "secret.yaml",
        &ca.leaf(&["*.gw.test"]).secret_yaml("certs", "gw-tls"),
    );
    write(
        &m,
        "svc.yaml",
        &service_in("default", "app", app.addr.port()),
    );
    write(
        &m,
        "route.yaml",
        &http_route("app", Some("https"), &["x.gw.test"], &rule("", "app")),
    );
    let proxy = Binary::start(&m).await;
    let lines = wait_diagnostic(&proxy, &["Gateway default/gw", "RefNotPermitted"]).await;
    assert!(
        has_diagnostic(
            &lines,
            &[
                "Gateway default/gw",
                "spec.listeners[1].tls.certificateRefs[0]",
                "RefNotPermitted"
            ]
        ),
        "{lines:#?}"
    );

    let generation = proxy.generation().await;
    write(
        &m,
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-may-read, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: \"\", kind: Secret, name: gw-tls}]
",
    );
    proxy.wait_generation_above(generation, T).await;
    let r = curl_https("x.gw.test", proxy.https, "/", &ca_file, &[]).await;
    assert_eq!((r.exit_code, r.status), (0, 200), "{r:?}");

    let generation = proxy.generation().await;
    write(
        &m,
        "gw.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nspec: [oops\n",
    );
    proxy.wait_generation_above(generation, T).await;
    let r = curl_https("x.gw.test", proxy.https, "/", &ca_file, &[]).await;
    assert_eq!(
        (r.exit_code, r.status),
        (0, 200),
        "the last good Gateway still serves: {r:?}"
    );
}

/// The usual pair on one host: an HTTP listener's route redirects to HTTPS, an HTTPS
/// listener's route serves the pod (HTTPRouteHTTPSListener with a redirect on :80). Each
/// route is served on its listener's port only, so they do not conflict. And an HTTPS
/// listener with no hostname, whose route has none, presents its certificate for any name.
#[tokio::test]
async fn a_redirect_on_http_and_the_backend_on_https_share_a_host() {
    let (d, m) = manifest_dir();
    let ca = Ca::new("gateway pair ca");
    let ca_file = manifests::write_pem(d.path(), "ca.pem", &ca.cert_pem);
    let app = backends::http("app").await;
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "secret.yaml",
        &ca.leaf(&["*.gw.test"]).secret_yaml("default", "gw-tls"),
    );
    write(
        &m,
        "svc.yaml",
        &service_in("default", "app", app.addr.port()),
    );
    write(
        &m,
        "routes.yaml",
        &[
            http_route(
                "to-https",
                Some("http"),
                &["pair.gw.test"],
                "  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]\n",
            ),
            "---\n".to_string(),
            http_route("app", Some("https"), &["pair.gw.test"], &rule("", "app")),
        ]
        .concat(),
    );
    let proxy = Binary::start(&m).await;
    let plain = get(proxy.http, "pair.gw.test", "/shop?x=1", &[]).await;
    assert_eq!(plain.status, 301);
    assert_eq!(plain.header("location"), "https://pair.gw.test/shop?x=1");
    let r = curl_https("pair.gw.test", proxy.https, "/shop", &ca_file, &[]).await;
    assert_eq!((r.exit_code, r.status), (0, 200), "{r:?}");
    assert_eq!(r.header("x-backend"), Some("app"));
    let lines = diagnostic_lines(&proxy).await;
    assert!(!lines.iter().any(|l| l.contains("Conflict")), "{lines:#?}");
}

#[tokio::test]
async fn an_https_listener_without_hostname_presents_its_certificate_for_any_name() {
    let (d, m) = manifest_dir();
    let ca = Ca::new("gateway any-name ca");
    let ca_file = manifests::write_pem(d.path(), "ca.pem", &ca.cert_pem);
    let app = backends::http("app").await;
    write(
        &m,
        "gw.yaml",
        &manifests::gateway_with(
            "  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: any-tls}]}}\n",
        ),
    );
    write(
        &m,
        "secret.yaml",
        &ca.leaf(&["whatever.example"])
            .secret_yaml("default", "any-tls"),
    );
    write(
        &m,
        "svc.yaml",
        &service_in("default", "app", app.addr.port()),
    );
    write(
        &m,
        "route.yaml",
        &http_route("app", None, &[], &rule("", "app")).replace("  hostnames: []\n", ""),
    );
    let proxy = Binary::start(&m).await;
    let r = curl_https("whatever.example", proxy.https, "/", &ca_file, &[]).await;
    assert_eq!((r.exit_code, r.status), (0, 200), "{r:?}");
}

/// HTTPRouteRequestTimeout / HTTPRouteBackendRequestTimeout: a pod slower than the rule's
/// `timeouts` gets the client a 504; a rule whose timeout is `0s` waits for it.
#[tokio::test]
async fn rule_timeouts_answer_504_when_the_pod_is_slower() {
    let (_d, m) = manifest_dir();
    let slow = backends::delayed("slow", Duration::from_secs(3)).await;
    write(&m, "gw.yaml", &gateway());
    write(
        &m,
        "svc.yaml",
        &service_in("default", "slow", slow.addr.port()),
    );
    let rules = "  - matches: [{path: {type: PathPrefix, value: /quick}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: slow, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /patient}}]
    timeouts: {request: 0s, backendRequest: 10s}
    backendRefs: [{name: slow, port: 80}]
";
    write(
        &m,
        "route.yaml",
        &http_route("timeouts", Some("http"), &["t.gw.test"], rules),
    );
    let proxy = Binary::start(&m).await;
    let started = std::time::Instant::now();
    let quick = get(proxy.http, "t.gw.test", "/quick", &[]).await;
    assert_eq!(quick.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered before the pod did"
    );
    let patient = get(proxy.http, "t.gw.test", "/patient", &[]).await;
    assert_eq!(patient.status, 200);
}
