//! End to end, the built binary: ingress-nginx's path and host annotations (`use-regex`,
//! `rewrite-target`, `x-forwarded-prefix`, `upstream-vhost`, `server-alias`) as a client and a
//! pod observe them through Portcullis. Each test cites the ingress-nginx documentation it
//! follows.

use std::path::{Path, PathBuf};

use crate::support::backends::{self, Backend};
use crate::support::binary::{self, Binary, check};
use crate::support::clients::{curl, curl_https};
use crate::support::manifests::{self, NS, ingress, ingress_class, service};
use crate::support::pki::Ca;

const HOST: &str = "paths.nginx.e2e.test";
const USE_REGEX: &str = "nginx.ingress.kubernetes.io/use-regex";
const REWRITE: &str = "nginx.ingress.kubernetes.io/rewrite-target";

/// An Ingress `name` created at `created` (its age decides conflicts) for `host`, with
/// `annotations` and `paths` (path, pathType, Service; port 80).
fn ingress_paths(
    name: &str,
    created: &str,
    host: &str,
    annotations: &[(&str, &str)],
    paths: &[(&str, &str, &str)],
) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: {NS}
  creationTimestamp: \"{created}\"
"
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (key, value) in annotations {
            out.push_str(&format!("    {key}: '{value}'\n"));
        }
    }
    out.push_str(&format!(
        "spec:\n  ingressClassName: portcullis\n  rules:\n  - host: {host}\n    http:\n      paths:\n"
    ));
    for (path, kind, svc) in paths {
        out.push_str(&format!(
            "      - path: '{path}'
        pathType: {kind}
        backend:
          service:
            name: {svc}
            port:
              number: 80
"
        ));
    }
    out
}

/// A manifest directory under `dir` with the class, a Service per backend (named as the
/// backend) and `files` (file stem, YAML).
fn manifest_dir(dir: &Path, backends: &[&Backend], files: &[(&str, String)]) -> PathBuf {
    let m = dir.join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    for b in backends {
        manifests::write(
            &m,
            &format!("svc-{}.yaml", b.name),
            &service(&b.name, &[b.addr.port()]),
        );
    }
    for (name, yaml) in files {
        manifests::write(&m, &format!("{name}.yaml"), yaml);
    }
    m
}

/// The path and query the backend saw for the last client request (health probes left out).
fn last_uri(backend: &Backend) -> Option<String> {
    backend
        .requests()
        .into_iter()
        .rev()
        .find(|s| {
            s.headers.get("user-agent").map(String::as_str) != Some("portcullis-health-check")
        })
        .map(|s| s.uri)
}

/// ingress-nginx's rewrite example (docs/examples/rewrite/README.md, "Rewrite Target"): with
/// `rewrite-target: /$2` and path `/something(/|$)(.*)`, "rewrite.bar.com/something/new"
/// rewrites to "rewrite.bar.com/new", and `/something` to `/`. nginx's `rewrite` keeps the
/// query string. The path is a case-insensitive regex (docs/user-guide/ingress-path-matching.md:
/// "The ingress controller supports case insensitive regular expressions").
#[tokio::test]
async fn rewrite_target_takes_captures_and_keeps_the_query() {
    let web = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &[&web],
        &[(
            "rewrite",
            ingress_paths(
                "rewrite",
                "2025-01-01T00:00:00Z",
                HOST,
                &[(USE_REGEX, "true"), (REWRITE, "/$2")],
                &[("/something(/|$)(.*)", "ImplementationSpecific", "web")],
            ),
        )],
    );
    let proxy = Binary::start(&m).await;

    for (asked, seen) in [
        ("/something/new/path?x=1", "/new/path?x=1"),
        ("/something", "/"),
        ("/something/", "/"),
        ("/SomeThing/Mixed?a=b&c=d", "/Mixed?a=b&c=d"),
    ] {
        let r = curl("http", HOST, proxy.http, asked, &[]).await;
        assert_eq!(r.status, 200, "{asked}: {r:?}");
        assert_eq!(last_uri(&web).as_deref(), Some(seen), "{asked}");
    }
    // `(/|$)` needs a slash or the end after `/something`.
    let r = curl("http", HOST, proxy.http, "/somethingelse", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
}

/// ingress-nginx's "Ingress Path Matching": "when use-regex is enabled the regex will be
/// applied to ALL paths of a host", "regardless of what Ingress they are defined on"
/// (annotations.md#use-regex), as `~* "^<path>"`: case-insensitive and anchored at the start
/// only, so `/plain` also takes `/plainly`. Its "Path Priority": paths are ordered by
/// descending length and the first regex that matches wins. Its template's `buildLocation`
/// writes `~* "^path"` for pathType Exact too when the host is regex; on a host without
/// `use-regex`, Exact stays `= path`.
#[tokio::test]
async fn use_regex_applies_to_every_path_of_the_host() {
    let web = backends::http("web").await;
    let api = backends::http("api").await;
    let exact = backends::http("exact").await;
    let dir = tempfile::tempdir().unwrap();
    let other = "exact.nginx.e2e.test";
    let m = manifest_dir(
        dir.path(),
        &[&web, &api, &exact],
        &[
            (
                "plain",
                ingress_paths(
                    "plain",
                    "2025-01-01T00:00:00Z",
                    HOST,
                    &[],
                    &[
                        ("/plain", "Prefix", "web"),
                        ("/api", "Prefix", "web"),
                        ("/exact", "Exact", "exact"),
                    ],
                ),
            ),
            (
                "regex",
                ingress_paths(
                    "regex",
                    "2025-01-02T00:00:00Z",
                    HOST,
                    &[(USE_REGEX, "true")],
                    &[("/api/v[0-9]+", "ImplementationSpecific", "api")],
                ),
            ),
            (
                "elsewhere",
                ingress_paths(
                    "elsewhere",
                    "2025-01-01T00:00:00Z",
                    other,
                    &[],
                    &[("/exact", "Exact", "exact")],
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let backend = |r: &crate::support::clients::Curl| r.header("x-backend").map(str::to_string);

    for (path, want) in [
        // The other Ingress's Prefix path became a case-insensitive regex.
        ("/PLAIN/x", Some("web")),
        ("/plainly", Some("web")),
        // Longest first: `/api/v[0-9]+` before `/api`.
        ("/api/v2/users", Some("api")),
        ("/API/V7", Some("api")),
        ("/api/vx", Some("web")),
        // Exact on a regex host: `^/exact`.
        ("/exact/more", Some("exact")),
        ("/nothing", None),
    ] {
        let r = curl("http", HOST, proxy.http, path, &[]).await;
        assert_eq!(backend(&r).as_deref(), want, "{path}: {r:?}");
        if want.is_none() {
            assert_eq!(r.status, 404, "{path}: {r:?}");
        }
    }
    // The pod sees the path as asked (no rewrite-target).
    assert_eq!(last_uri(&web).as_deref(), Some("/api/vx"));

    // A host without use-regex keeps Exact exact and case-sensitive.
    for (path, status) in [("/exact", 200), ("/exact/more", 404), ("/EXACT", 404)] {
        let r = curl("http", other, proxy.http, path, &[]).await;
        assert_eq!(r.status, status, "{path}: {r:?}");
    }
}

/// `rewrite-target` on one Ingress enforces regex paths on its whole host too (ingress-nginx's
/// annotations.md#use-regex: "When this annotation is set to true, the case insensitive
/// regular expression location modifier will be enforced on ALL paths for a given host
/// regardless of what Ingress they are defined on"; "rewrite-target" implies it), while only
/// that Ingress's paths are rewritten.
#[tokio::test]
async fn rewrite_target_enforces_regex_on_the_host_but_rewrites_only_its_paths() {
    let web = backends::http("web").await;
    let api = backends::http("api").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &[&web, &api],
        &[
            (
                "plain",
                ingress_paths(
                    "plain",
                    "2025-01-01T00:00:00Z",
                    HOST,
                    &[],
                    &[("/web", "Prefix", "web")],
                ),
            ),
            (
                "rewrite",
                ingress_paths(
                    "rewrite",
                    "2025-01-02T00:00:00Z",
                    HOST,
                    &[(REWRITE, "/v1/$1")],
                    &[("/api/(.*)", "ImplementationSpecific", "api")],
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let r = curl("http", HOST, proxy.http, "/api/users?id=3", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(last_uri(&api).as_deref(), Some("/v1/users?id=3"));
    let r = curl("http", HOST, proxy.http, "/WEB/page", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(last_uri(&web).as_deref(), Some("/WEB/page"));
}

/// ingress-nginx's annotations.md "X-Forwarded-Prefix Header" ("adds the non-standard
/// X-Forwarded-Prefix header to the upstream request with a string value") and "Custom
/// Upstream Vhost" (`upstream-vhost` "sets the Host header sent to the upstream", the
/// `proxy_set_header Host` of its template): the pod sees both, and `X-Forwarded-Host` still
/// names the host the client asked for.
#[tokio::test]
async fn x_forwarded_prefix_and_upstream_vhost_reach_the_pod() {
    let web = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &[&web],
        &[(
            "app",
            ingress(
                "app",
                HOST,
                "web",
                &[
                    ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/shop"),
                    ("portcullis.io/upstream-vhost", "internal.svc.test"),
                ],
                None,
            ),
        )],
    );
    let proxy = Binary::start(&m).await;
    let r = curl("http", HOST, proxy.http, "/cart", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = web
        .requests()
        .into_iter()
        .find(|s| s.uri == "/cart")
        .expect("/cart reached the pod");
    let header = |name: &str| seen.headers.get(name).map(String::as_str);
    assert_eq!(header("host"), Some("internal.svc.test"));
    assert_eq!(header("x-forwarded-prefix"), Some("/shop"));
    // As the client sent it (curl adds the port).
    let forwarded_host = format!("{HOST}:{}", proxy.http.port());
    assert_eq!(header("x-forwarded-host"), Some(forwarded_host.as_str()));
}

/// ingress-nginx's annotations.md "Server Alias": "This will create a server with the same
/// configuration, but adding new values to the server_name directive", and "A server-alias
/// name cannot conflict with the hostname of an existing server. If it does, the server-alias
/// annotation will be ignored": an alias that another Ingress's rule names keeps that rule's
/// backend, with a warning. Over HTTPS the alias presents the host's certificate when it
/// names the alias.
#[tokio::test]
async fn server_alias_is_answered_like_the_host_unless_a_rule_names_it() {
    let ca = Ca::new("e2e nginx paths ca");
    let web = backends::http("web").await;
    let other_backend = backends::http("other").await;
    let alias = "alias.nginx.e2e.test";
    let taken = "taken.nginx.e2e.test";
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let m = manifest_dir(
        dir.path(),
        &[&web, &other_backend],
        &[
            ("secret", ca.leaf(&[HOST, alias]).secret_yaml(NS, "app-tls")),
            (
                "app",
                ingress(
                    "app",
                    HOST,
                    "web",
                    &[(
                        "nginx.ingress.kubernetes.io/server-alias",
                        "alias.nginx.e2e.test, taken.nginx.e2e.test",
                    )],
                    Some("app-tls"),
                ),
            ),
            ("taken", ingress("taken", taken, "other", &[], None)),
        ],
    );
    let proxy = Binary::start(&m).await;

    let r = curl("http", alias, proxy.http, "/via-alias", &[]).await;
    assert_eq!(r.header("x-backend"), Some("web"), "{r:?}");
    let r = curl_https(alias, proxy.https, "/via-alias-tls", &ca_file, &[]).await;
    assert_eq!(r.header("x-backend"), Some("web"), "{r:?}");
    let r = curl("http", taken, proxy.http, "/", &[]).await;
    assert_eq!(r.header("x-backend"), Some("other"), "{r:?}");

    let diagnostics = binary::diagnostics(&proxy.table().await);
    assert!(
        diagnostics
            .iter()
            .any(|d| d.starts_with("warning") && d.contains("server-alias") && d.contains(taken)),
        "{diagnostics:#?}"
    );
}

/// Rust's `regex` takes RE2's syntax, what ingress-nginx's "Ingress Path Matching" documents
/// ("Kubernetes only accept expressions that comply with the RE2 engine syntax"): a path with
/// look-ahead does not compile, and `check` reports it on the path's field, with exit 1; the
/// other paths are still served.
#[test]
fn a_path_that_is_no_regex_is_an_error_in_check() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(&m, "svc.yaml", &service("web", &[8080]));
    manifests::write(
        &m,
        "bad.yaml",
        &ingress_paths(
            "bad",
            "2025-01-01T00:00:00Z",
            HOST,
            &[(USE_REGEX, "true")],
            &[
                ("/ok", "Prefix", "web"),
                ("/(?=look)ahead", "ImplementationSpecific", "web"),
            ],
        ),
    );
    let out = check(&m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("Ingress default/bad ") && l.contains("error"))
        .unwrap_or_else(|| panic!("no error for bad:\n{text}"));
    assert!(line.contains("spec.rules[0].http.paths[1].path"), "{line}");
    assert!(line.contains("(?=look)ahead"), "{line}");
    assert!(text.contains("/ok"), "{text}");
}
