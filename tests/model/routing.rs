//! Request routing on tables built by the model, case by case from the Kubernetes Ingress spec
//! (the path-matching examples of the Ingress documentation and the host rules of the Ingress
//! conformance suite): which Service a request for HOST + PATH reaches.

use portcullis::model::{self, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::Snapshot;
use portcullis::source::yaml::parse_manifest;
use portcullis::table::{HttpRoute, RouteTable};

const CLASS: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portcullis}
spec: {controller: portcullis.io/ingress-controller}
";

/// An Ingress named `name` with one rule for `host` (empty: no host) and `paths` given as
/// `(path, pathType, service)`, plus an optional default backend.
fn ingress(name: &str, created: &str, host: &str, paths: Paths, default: Option<&str>) -> String {
    let mut y = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\nspec:\n  ingressClassName: portcullis\n"
    );
    if let Some(svc) = default {
        y += &format!("  defaultBackend: {{service: {{name: {svc}, port: {{number: 80}}}}}}\n");
    }
    if !paths.is_empty() {
        y += "  rules:\n  - ";
        if !host.is_empty() {
            y += &format!("host: \"{host}\"\n    ");
        }
        y += "http:\n      paths:\n";
        for (path, kind, svc) in paths {
            y += &format!(
                "      - {{path: \"{path}\", pathType: {kind}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
            );
        }
    }
    y
}

/// A rule's paths as `(path, pathType, service)`.
type Paths<'a> = &'a [(&'a str, &'a str, &'a str)];
/// Requests as `(path, expected service or None for 404)`.
type Cases<'a> = &'a [(&'a str, Option<&'a str>)];

fn table(yaml: &str) -> std::sync::Arc<RouteTable> {
    let snapshot: Snapshot = parse_manifest("routing.yaml", yaml)
        .expect("valid YAML")
        .into_iter()
        .collect();
    model::build(&snapshot, &BuildSettings::default(), &LastGood::default()).table
}

/// The Service name a request reaches, or `None` for a 404.
fn route(table: &RouteTable, host: &str, path: &str) -> Option<String> {
    match table.route_http(Some(host), path) {
        HttpRoute::Upstream { upstream, .. } => Some(upstream.service.name.clone()),
        HttpRoute::NoPath { .. } | HttpRoute::NoHost => None,
    }
}

fn check(table: &RouteTable, host: &str, cases: Cases) {
    for (path, want) in cases {
        assert_eq!(
            route(table, host, path).as_deref(),
            *want,
            "request {host}{path}"
        );
    }
}

#[test]
fn path_examples_of_the_ingress_documentation() {
    // One Ingress per example, each on its own host, so they do not interact.
    let examples: &[(&str, Paths, Cases)] = &[
        (
            "all.test",
            &[("/", "Prefix", "a")],
            &[("/", Some("a")), ("/anything/at/all", Some("a"))],
        ),
        (
            "exact.test",
            &[("/foo", "Exact", "a")],
            &[("/foo", Some("a")), ("/bar", None), ("/foo/", None)],
        ),
        (
            "exact-slash.test",
            &[("/foo/", "Exact", "a")],
            &[("/foo", None), ("/foo/", Some("a"))],
        ),
        (
            "prefix.test",
            &[("/foo", "Prefix", "a")],
            &[("/foo", Some("a")), ("/foo/", Some("a"))],
        ),
        (
            "prefix-slash.test",
            &[("/foo/", "Prefix", "a")],
            &[("/foo", Some("a")), ("/foo/", Some("a"))],
        ),
        (
            "partial.test",
            &[("/aaa/bb", "Prefix", "a")],
            &[("/aaa/bbb", None)],
        ),
        (
            "subpath.test",
            &[("/aaa/bbb", "Prefix", "a")],
            &[
                ("/aaa/bbb", Some("a")),
                ("/aaa/bbb/", Some("a")),
                ("/aaa/bbb/ccc", Some("a")),
                ("/aaa/bbbxyz", None),
            ],
        ),
        (
            "trailing.test",
            &[("/aaa/bbb/", "Prefix", "a")],
            &[("/aaa/bbb", Some("a"))],
        ),
        (
            "longest.test",
            &[
                ("/", "Prefix", "root"),
                ("/aaa", "Prefix", "aaa"),
                ("/aaa/bbb", "Prefix", "bbb"),
            ],
            &[
                ("/aaa/ccc", Some("aaa")),
                ("/aaa/bbb", Some("bbb")),
                ("/ccc", Some("root")),
            ],
        ),
        (
            "nomatch.test",
            &[("/aaa", "Prefix", "a")],
            &[("/ccc", None)],
        ),
        (
            "mixed.test",
            &[("/foo", "Prefix", "prefix"), ("/foo", "Exact", "exact")],
            &[
                ("/foo", Some("exact")),
                ("/foo/", Some("prefix")),
                ("/foo/x", Some("prefix")),
            ],
        ),
        (
            "case.test",
            &[("/Foo", "Prefix", "a")],
            &[("/Foo/x", Some("a")), ("/foo/x", None)],
        ),
        (
            "impl.test",
            &[("/foo", "ImplementationSpecific", "a")],
            &[("/foo/bar", Some("a")), ("/foobar", None)],
        ),
    ];
    let mut yaml = CLASS.to_string();
    for (i, (host, paths, _)) in examples.iter().enumerate() {
        yaml += &ingress(&format!("ex{i}"), "2026-01-01T00:00:00Z", host, paths, None);
    }
    let table = table(&yaml);
    for (host, _, cases) in examples {
        check(&table, host, cases);
    }
}

#[test]
fn host_rules_exact_beats_wildcard_which_matches_one_label() {
    let yaml = format!(
        "{CLASS}{}{}{}",
        ingress(
            "exact",
            "2026-01-01T00:00:00Z",
            "foo.bar.com",
            &[("/", "Prefix", "exact")],
            None
        ),
        ingress(
            "wild",
            "2026-01-01T00:00:01Z",
            "*.bar.com",
            &[("/", "Prefix", "wild")],
            None
        ),
        ingress(
            "any",
            "2026-01-01T00:00:02Z",
            "",
            &[("/", "Prefix", "any")],
            None
        ),
    );
    let table = table(&yaml);
    check(&table, "foo.bar.com", &[("/", Some("exact"))]);
    check(&table, "baz.bar.com", &[("/", Some("wild"))]);
    // A wildcard matches exactly one label: neither two labels nor the bare parent.
    check(&table, "a.baz.bar.com", &[("/", Some("any"))]);
    check(&table, "bar.com", &[("/", Some("any"))]);
    // Host matching ignores case and a trailing dot (ports are stripped before routing).
    let normalized = portcullis::table::host::normalize_host("FOO.Bar.com.:8443").unwrap();
    check(&table, &normalized, &[("/", Some("exact"))]);
}

#[test]
fn default_backends_serve_what_no_rule_matches() {
    let yaml = format!(
        "{CLASS}{}{}",
        // The conformance suite's "default backend" feature: an Ingress with only a default
        // backend serves every host and path.
        ingress(
            "only-default",
            "2026-01-01T00:00:00Z",
            "",
            &[],
            Some("fallback")
        ),
        ingress(
            "site",
            "2026-01-01T00:00:01Z",
            "site.test",
            &[("/app", "Prefix", "app")],
            Some("site-default")
        ),
    );
    let table = table(&yaml);
    check(
        &table,
        "unknown.test",
        &[("/", Some("fallback")), ("/x/y", Some("fallback"))],
    );
    check(
        &table,
        "site.test",
        &[("/app/1", Some("app")), ("/other", Some("site-default"))],
    );
}

#[test]
fn no_rule_and_no_default_backend_is_a_404() {
    let yaml = format!(
        "{CLASS}{}",
        ingress(
            "site",
            "2026-01-01T00:00:00Z",
            "site.test",
            &[("/app", "Prefix", "app")],
            None
        )
    );
    let table = table(&yaml);
    check(&table, "site.test", &[("/app", Some("app")), ("/", None)]);
    check(&table, "other.test", &[("/app", None)]);
}

#[test]
fn the_oldest_ingress_wins_a_contested_path() {
    let yaml = format!(
        "{CLASS}{}{}",
        ingress(
            "newer",
            "2026-02-01T00:00:00Z",
            "shop.test",
            &[("/", "Prefix", "newer"), ("/cart", "Prefix", "cart")],
            None
        ),
        ingress(
            "older",
            "2026-01-01T00:00:00Z",
            "shop.test",
            &[("/", "Prefix", "older")],
            None
        ),
    );
    let table = table(&yaml);
    // Same host+path: the older Ingress wins; the newer keeps its other path (merged host).
    check(
        &table,
        "shop.test",
        &[("/", Some("older")), ("/cart/1", Some("cart"))],
    );
}
