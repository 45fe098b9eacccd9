//! End to end, two installations on one manifest directory: an internal and an external
//! `portcullis standalone`, each with its own `--ingress-class` and `--controller-class`, as
//! ingress-nginx's "Multiple Ingress controllers" guide sets its pair
//! (https://kubernetes.github.io/ingress-nginx/user-guide/multiple-ingress/). Each serves its
//! own class's Ingresses and answers 404 for the other's, also for Ingresses added live.

use std::time::Duration;

use crate::support::backends;
use crate::support::binary::{Binary, hosts};
use crate::support::clients::curl;
use crate::support::manifests::{self, ingress, service};

const INTERNAL: &[&str] = &[
    "--ingress-class",
    "internal",
    "--controller-class",
    "portcullis.io/internal",
];
const EXTERNAL: &[&str] = &[
    "--ingress-class",
    "external",
    "--controller-class",
    "portcullis.io/external",
];

/// IngressClass `name` whose `spec.controller` is `controller`.
fn class(name: &str, controller: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: {name}
spec:
  controller: {controller}
"
    )
}

/// [`ingress`] `name` for `host` → Service `service`, of class `class`.
fn ingress_of(class: &str, name: &str, host: &str, service: &str) -> String {
    ingress(name, host, service, &[], None).replace(
        "ingressClassName: portcullis",
        &format!("ingressClassName: {class}"),
    )
}

#[tokio::test]
async fn two_installations_serve_disjoint_classes() {
    let internal_web = backends::http("internal-web").await;
    let external_web = backends::http("external-web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(
        m,
        "classes.yaml",
        &format!(
            "{}---\n{}---\n{}",
            class("internal", "portcullis.io/internal"),
            class("external", "portcullis.io/external"),
            // Our controller value under a third name: neither installation's.
            class("portcullis", "portcullis.io/internal"),
        ),
    );
    manifests::write(
        m,
        "internal-svc.yaml",
        &service("internal-web", &[internal_web.addr.port()]),
    );
    manifests::write(
        m,
        "external-svc.yaml",
        &service("external-web", &[external_web.addr.port()]),
    );
    manifests::write(
        m,
        "admin.yaml",
        &ingress_of("internal", "admin", "admin.e2e.test", "internal-web"),
    );
    manifests::write(
        m,
        "www.yaml",
        &ingress_of("external", "www", "www.e2e.test", "external-web"),
    );
    manifests::write(
        m,
        "stray.yaml",
        &ingress_of("portcullis", "stray", "stray.e2e.test", "internal-web"),
    );

    let internal = Binary::start_with(m, INTERNAL).await;
    let external = Binary::start_with(m, EXTERNAL).await;

    let r = curl("http", "admin.e2e.test", internal.http, "/", &[]).await;
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("internal-web")),
        "{r:?}"
    );
    let r = curl("http", "www.e2e.test", external.http, "/", &[]).await;
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("external-web")),
        "{r:?}"
    );
    // Each leaves the other's Ingress alone, and both leave the stray class's.
    for (proxy, host) in [
        (&internal, "www.e2e.test"),
        (&external, "admin.e2e.test"),
        (&internal, "stray.e2e.test"),
        (&external, "stray.e2e.test"),
    ] {
        let r = curl("http", host, proxy.http, "/", &[]).await;
        assert_eq!(r.status, 404, "{host}: {r:?}");
    }
    assert_eq!(hosts(&internal.table().await), ["admin.e2e.test"]);
    assert_eq!(hosts(&external.table().await), ["www.e2e.test"]);

    // Added live, one of each in one file: once an instance shows its own, it has read the
    // other's too, and left it out.
    manifests::write(
        m,
        "added.yaml",
        &format!(
            "{}---\n{}",
            ingress_of("internal", "grafana", "grafana.e2e.test", "internal-web"),
            ingress_of("external", "api", "api.e2e.test", "external-web"),
        ),
    );
    let wait = Duration::from_secs(5);
    let table = internal
        .wait_for_table(wait, "grafana", |t| {
            hosts(t).iter().any(|h| h == "grafana.e2e.test")
        })
        .await;
    assert_eq!(hosts(&table), ["admin.e2e.test", "grafana.e2e.test"]);
    let table = external
        .wait_for_table(wait, "api", |t| {
            hosts(t).iter().any(|h| h == "api.e2e.test")
        })
        .await;
    assert_eq!(hosts(&table), ["api.e2e.test", "www.e2e.test"]);
    let r = curl("http", "api.e2e.test", internal.http, "/", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = curl("http", "grafana.e2e.test", external.http, "/", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
    // Health checks included, each backend only ever saw its own installation's hosts.
    for (backend, own) in [
        (&internal_web, ["admin.e2e.test", "grafana.e2e.test"]),
        (&external_web, ["www.e2e.test", "api.e2e.test"]),
    ] {
        for seen in backend.requests() {
            let host = seen
                .headers
                .get("host")
                .map(String::as_str)
                .unwrap_or_default();
            let host = host.split(':').next().unwrap_or_default();
            assert!(own.contains(&host), "{host} reached {own:?}'s backend");
        }
    }
}
