//! Several installations in one cluster: the same objects built for an internal and an
//! external instance give disjoint tables, disjoint lists of Ingresses whose status each owns,
//! and diagnostics each about its own class only.
//!
//! As ingress-nginx's "Multiple Ingress controllers" guide
//! (https://kubernetes.github.io/ingress-nginx/user-guide/multiple-ingress/) asks, each
//! instance gets its own `--ingress-class` and `--controller-class`; an IngressClass is served
//! only by the instance whose pair it matches.

use portcullis::model::{self, Built, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::Snapshot;
use portcullis::source::yaml::parse_manifest;

/// Two classes with two controller values, a third class claiming the internal controller
/// value under another name, and Ingresses of each (by name, by the legacy annotation, and
/// one class-less under the default class `internal`).
const CLUSTER: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: internal
  annotations:
    ingressclass.kubernetes.io/is-default-class: "true"
spec:
  controller: portcullis.io/internal
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: external
spec:
  controller: portcullis.io/external
  parameters:
    apiGroup: portcullis.io
    kind: IngressClassParams
    name: external-params
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: stray
spec:
  controller: portcullis.io/internal
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["10.0.0.1"], conditions: {ready: true}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: admin, namespace: shop}
spec:
  ingressClassName: internal
  rules:
  - host: admin.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: www, namespace: shop}
spec:
  ingressClassName: external
  rules:
  - host: www.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy-api
  namespace: shop
  annotations: {kubernetes.io/ingress.class: external}
spec:
  rules:
  - host: api.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: classless, namespace: shop}
spec:
  rules:
  - host: grafana.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: stray, namespace: shop}
spec:
  ingressClassName: stray
  rules:
  - host: stray.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"#;

fn build(class: &str, controller: &str) -> Built {
    let snapshot: Snapshot = parse_manifest("cluster.yaml", CLUSTER)
        .unwrap_or_else(|d| panic!("{d}"))
        .into_iter()
        .collect();
    let settings = BuildSettings {
        ingress_class: class.into(),
        controller_class: controller.into(),
        ..BuildSettings::default()
    };
    model::build(&snapshot, &settings, &LastGood::default())
}

fn hosts(built: &Built) -> Vec<String> {
    let mut hosts: Vec<String> = built
        .table
        .vhosts()
        .iter()
        .map(|v| format!("{:?}", v.host))
        .collect();
    hosts.sort();
    hosts
}

fn ours(built: &Built) -> Vec<&str> {
    built.ours.iter().map(|o| o.name.as_str()).collect()
}

/// Diagnostics about classes and their params (the per-host certificate warnings aside).
fn class_diagnostics(built: &Built) -> Vec<String> {
    built
        .diagnostics
        .iter()
        .filter(|d| d.object.kind.starts_with("IngressClass"))
        .map(|d| format!("{} {}", d.object.kind, d.object.name))
        .collect()
}

#[test]
fn each_installation_serves_only_its_own_class() {
    let internal = build("internal", "portcullis.io/internal");
    let external = build("external", "portcullis.io/external");

    assert_eq!(ours(&internal), ["admin", "classless"]);
    assert_eq!(ours(&external), ["legacy-api", "www"]);

    let (internal_hosts, external_hosts) = (hosts(&internal), hosts(&external));
    for host in ["admin.example.com", "grafana.example.com"] {
        assert!(
            internal.table.route_sni(host).is_some(),
            "internal serves {host}"
        );
        assert!(
            external.table.route_sni(host).is_none(),
            "external leaves {host}"
        );
    }
    for host in ["www.example.com", "api.example.com"] {
        assert!(
            external.table.route_sni(host).is_some(),
            "external serves {host}"
        );
        assert!(
            internal.table.route_sni(host).is_none(),
            "internal leaves {host}"
        );
    }
    assert_eq!(internal_hosts.len(), 2, "{internal_hosts:?}");
    assert_eq!(external_hosts.len(), 2, "{external_hosts:?}");
    assert!(
        internal.table.route_sni("stray.example.com").is_none(),
        "a class with our controller value but another name is not ours"
    );

    // The external class's missing params are the external instance's to report.
    assert_eq!(class_diagnostics(&internal), Vec::<String>::new());
    assert_eq!(
        class_diagnostics(&external),
        ["IngressClass external".to_string()]
    );
}

/// Swapping the controller values between the two instances serves nothing: the class name
/// and the controller value must both match.
#[test]
fn a_class_name_with_the_wrong_controller_value_serves_nothing() {
    let crossed = build("internal", "portcullis.io/external");
    assert!(crossed.ours.is_empty(), "{:?}", crossed.ours);
    assert!(crossed.table.vhosts().is_empty());
}
