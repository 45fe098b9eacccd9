//! Gateway API status as the model computes it (pure: manifests in, conditions out), with the
//! types and reasons the spec's conformance suite checks: GatewayClassObservedGenerationBump,
//! GatewayInvalidTLSConfiguration, GatewayInvalidRouteKind, GatewayWithAttachedRoutes,
//! HTTPRouteInvalidCrossNamespaceParentRef, HTTPRouteHostnameIntersection,
//! HTTPRouteInvalidCrossNamespaceBackendRef, HTTPRouteInvalidNonExistentBackendRef,
//! TLSRouteInvalidReferenceGrant (kubernetes-sigs/gateway-api `conformance/tests`).

use portcullis::model::{self, Condition, GatewayApiStatus, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::Snapshot;
use portcullis::source::yaml::parse_manifest;

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis, generation: 3}
spec: {controllerName: portcullis.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: someone-else}
spec: {controllerName: example.com/other}
";

/// `infra/gw-tls`, a real certificate and key; and `infra/malformed`, a `kubernetes.io/tls`
/// Secret whose values are not PEM (GatewayInvalidTLSConfiguration's "Hello world").
fn secrets() -> String {
    let ca = crate::support::pki::Ca::new("gateway status ca");
    format!(
        "---\n{}---
apiVersion: v1
kind: Secret
metadata: {{name: malformed, namespace: infra}}
type: kubernetes.io/tls
data: {{tls.crt: SGVsbG8gd29ybGQ=, tls.key: SGVsbG8gd29ybGQ=}}
",
        ca.leaf(&["*.ok.test"]).secret_yaml("infra", "gw-tls")
    )
}

fn snapshot(yaml: &str) -> Snapshot {
    parse_manifest("gateway.yaml", yaml)
        .expect("valid YAML")
        .into_iter()
        .collect()
}

fn status(yaml: &str) -> GatewayApiStatus {
    model::build(
        &snapshot(yaml),
        &BuildSettings::default(),
        &LastGood::default(),
    )
    .gateway_api
}

fn condition<'a>(conditions: &'a [Condition], kind: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions:#?}"))
}

/// `(status, reason)` of condition `kind`.
fn said(conditions: &[Condition], kind: &str) -> (bool, String) {
    let c = condition(conditions, kind);
    (c.status, c.reason.clone())
}

fn yes(reason: &str) -> (bool, String) {
    (true, reason.to_string())
}

fn no(reason: &str) -> (bool, String) {
    (false, reason.to_string())
}

fn gateway(listeners: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra, generation: 7}}
spec:
  gatewayClassName: portcullis
  listeners:
{listeners}"
    )
}

fn route(namespace: &str, name: &str, section: &str, hostnames: &str, backend: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}, generation: 2}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: {section}}}]
  hostnames: [{hostnames}]
  rules:
  - backendRefs: [{backend}]
"
    )
}

const SERVICE: &str = "---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: infra}
spec: {ports: [{name: web, port: 80}]}
";

#[test]
fn only_our_classes_are_accepted_with_their_generation() {
    let status = status(CLASS);
    assert_eq!(status.classes.len(), 1, "{status:#?}");
    let class = &status.classes[0];
    assert_eq!(class.name, "portcullis");
    assert_eq!(class.generation, Some(3));
    assert_eq!(said(&class.conditions, "Accepted"), yes("Accepted"));
}

#[test]
fn listeners_report_accepted_resolved_refs_conflicted_programmed_and_attached_routes() {
    let yaml = [
        CLASS,
        &secrets(),
        SERVICE,
        &gateway(
            "  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, hostname: '*.ok.test', tls: {certificateRefs: [{name: gw-tls}]}}
  - {name: missing-cert, port: 443, protocol: HTTPS, hostname: 'x.test', tls: {certificateRefs: [{name: nope}]}}
  - {name: malformed-cert, port: 443, protocol: HTTPS, hostname: 'm.test', tls: {certificateRefs: [{name: malformed}]}}
  - {name: udp, port: 53, protocol: UDP}
  - {name: bad-kind, port: 8080, protocol: HTTP, allowedRoutes: {kinds: [{kind: FooRoute}]}}
  - {name: a, port: 9000, protocol: HTTP, hostname: same.test}
  - {name: b, port: 9000, protocol: HTTP, hostname: same.test}
",
        ),
        &route("infra", "one", "http", "one.test", "{name: app, port: 80}"),
        &route("infra", "two", "https", "two.ok.test", "{name: app, port: 80}"),
        // GatewayWithAttachedRoutes, "unresolved refs": on the listener whose certificate is
        // missing, with a backend that does not exist either.
        &route(
            "infra",
            "four",
            "missing-cert",
            "x.test",
            "{name: does-not-exist, port: 8080}",
        ),
    ]
    .concat();
    let status = status(&yaml);
    let gw = &status.gateways[0];
    assert_eq!(
        (gw.namespace.as_str(), gw.name.as_str(), gw.generation),
        ("infra", "gw", Some(7))
    );
    assert_eq!(said(&gw.conditions, "Accepted"), yes("ListenersNotValid"));
    assert_eq!(said(&gw.conditions, "Programmed"), yes("Programmed"));
    let listener = |name: &str| {
        gw.listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no listener {name}"))
    };
    let http = listener("http");
    assert_eq!(http.attached_routes, 1);
    assert_eq!(http.supported_kinds, ["HTTPRoute", "GRPCRoute"]);
    for kind in ["Accepted", "ResolvedRefs", "Programmed"] {
        assert!(said(&http.conditions, kind).0, "{kind}");
    }
    assert_eq!(said(&http.conditions, "Conflicted"), no("NoConflicts"));
    assert_eq!(listener("https").attached_routes, 1);

    let missing = listener("missing-cert");
    assert_eq!(
        said(&missing.conditions, "ResolvedRefs"),
        no("InvalidCertificateRef")
    );
    assert_eq!(said(&missing.conditions, "Programmed"), no("Invalid"));
    assert_eq!(
        missing.attached_routes, 1,
        "counted though nothing is served"
    );
    assert_eq!(missing.supported_kinds, ["HTTPRoute", "GRPCRoute"]);
    let four = status
        .routes
        .iter()
        .find(|r| r.name == "four")
        .expect("four");
    assert_eq!(
        said(&four.parents[0].conditions, "ResolvedRefs"),
        no("BackendNotFound")
    );
    // GatewayInvalidTLSConfiguration, "Malformed secret": the Secret exists but holds no
    // certificate.
    let malformed = listener("malformed-cert");
    assert_eq!(
        said(&malformed.conditions, "ResolvedRefs"),
        no("InvalidCertificateRef")
    );
    assert_eq!(said(&malformed.conditions, "Programmed"), no("Invalid"));
    assert_eq!(
        said(&listener("udp").conditions, "Accepted"),
        no("UnsupportedProtocol")
    );
    let bad_kind = listener("bad-kind");
    assert_eq!(
        said(&bad_kind.conditions, "ResolvedRefs"),
        no("InvalidRouteKinds")
    );
    assert!(bad_kind.supported_kinds.is_empty());
    for name in ["a", "b"] {
        assert_eq!(
            said(&listener(name).conditions, "Conflicted"),
            yes("HostnameConflict")
        );
    }
}

/// A listener's Secret broken by an update keeps serving its last good certificate (as an
/// Ingress's does): the listener stays resolved, and the build says it kept the old one.
#[test]
fn a_listener_keeps_its_secret_last_good_version() {
    let listeners = "  - {name: https, port: 443, protocol: HTTPS, hostname: '*.ok.test', tls: {certificateRefs: [{name: gw-tls}]}}
";
    let good = [
        CLASS,
        &secrets(),
        SERVICE,
        &gateway(listeners),
        &route(
            "infra",
            "two",
            "https",
            "two.ok.test",
            "{name: app, port: 80}",
        ),
    ]
    .concat();
    let broken = good.replace("CERTIFICATE-----", "GARBAGE-----");
    assert_ne!(good, broken);
    let settings = BuildSettings::default();
    let first = model::build(&snapshot(&good), &settings, &LastGood::default());
    let later = model::build(&snapshot(&broken), &settings, &first.last_good);
    let https = &later.gateway_api.gateways[0].listeners[0];
    assert_eq!(said(&https.conditions, "ResolvedRefs"), yes("ResolvedRefs"));
    assert!(
        later
            .diagnostics
            .iter()
            .any(|d| d.to_string().contains("serving the last good certificate")),
        "{:#?}",
        later.diagnostics
    );
    // Without a last good version, the same Secret is refused.
    let fresh = model::build(&snapshot(&broken), &settings, &LastGood::default());
    let https = &fresh.gateway_api.gateways[0].listeners[0];
    assert_eq!(
        said(&https.conditions, "ResolvedRefs"),
        no("InvalidCertificateRef")
    );
}

/// RouteConditionPartiallyInvalid: a route with a refused rule and a served one drops the
/// refused rule ("Dropped Rule" approach): `Accepted: True` and `PartiallyInvalid: True,
/// UnsupportedValue`, its message starting "Dropped Rule" and naming the rule. A route whose
/// only rule is refused is not accepted, and has no `PartiallyInvalid`.
#[test]
fn a_route_with_a_refused_rule_is_accepted_and_partially_invalid() {
    let mirror = "{type: RequestMirror, requestMirror: {backendRef: {name: app, port: 80}}}";
    let routes = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: partly, namespace: infra}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: http}}]
  hostnames: [partly.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /mirrored}}}}]
    filters: [{mirror}]
    backendRefs: [{{name: app, port: 80}}]
  - backendRefs: [{{name: app, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: wholly, namespace: infra}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: http}}]
  hostnames: [wholly.test]
  rules:
  - filters: [{mirror}]
    backendRefs: [{{name: app, port: 80}}]
"
    );
    let yaml = [
        CLASS,
        SERVICE,
        &gateway("  - {name: http, port: 80, protocol: HTTP}\n"),
        &routes,
    ]
    .concat();
    let status = status(&yaml);
    let conditions = |name: &str| {
        status
            .routes
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no route {name}: {status:#?}"))
            .parents[0]
            .conditions
            .clone()
    };
    let partly = conditions("partly");
    assert_eq!(said(&partly, "Accepted"), yes("Accepted"));
    assert_eq!(said(&partly, "PartiallyInvalid"), yes("UnsupportedValue"));
    let message = &condition(&partly, "PartiallyInvalid").message;
    assert!(
        message.starts_with("Dropped Rule") && message.contains("spec.rules[0]"),
        "{message}"
    );
    let wholly = conditions("wholly");
    assert_eq!(said(&wholly, "Accepted"), no("UnsupportedValue"));
    assert!(
        wholly.iter().all(|c| c.kind != "PartiallyInvalid"),
        "{wholly:#?}"
    );
    // The listener counts the partly served route, not the refused one.
    assert_eq!(status.gateways[0].listeners[0].attached_routes, 1);
}

#[test]
fn routes_report_why_they_are_not_accepted_or_not_resolved() {
    let yaml = [
        CLASS,
        &secrets(),
        SERVICE,
        &gateway(
            "  - {name: http, port: 80, protocol: HTTP, hostname: '*.ok.test'}
",
        ),
        // From another namespace, on a listener that admits its own only.
        &route(
            "tenant",
            "foreign",
            "http",
            "a.ok.test",
            "{name: app, namespace: infra, port: 80}",
        ),
        // No hostname in common with the listener's.
        &route(
            "infra",
            "elsewhere",
            "http",
            "a.other.test",
            "{name: app, port: 80}",
        ),
        // No such listener.
        &route(
            "infra",
            "no-section",
            "nope",
            "a.ok.test",
            "{name: app, port: 80}",
        ),
        // Attached, but its backend does not exist / is in another namespace ungranted.
        &route(
            "infra",
            "missing",
            "http",
            "m.ok.test",
            "{name: ghost, port: 80}",
        ),
        // Another controller's Gateway: no status of ours at all.
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: not-ours, namespace: infra}
spec:
  parentRefs: [{name: their-gw}]
  rules: [{backendRefs: [{name: app, port: 80}]}]
",
    ]
    .concat();
    let status = status(&yaml);
    let route = |name: &str| {
        status
            .routes
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no status for {name}: {:#?}", status.routes))
    };
    let parent = |name: &str| route(name).parents[0].conditions.clone();
    assert_eq!(
        said(&parent("foreign"), "Accepted"),
        no("NotAllowedByListeners")
    );
    assert_eq!(
        said(&parent("elsewhere"), "Accepted"),
        no("NoMatchingListenerHostname")
    );
    assert_eq!(
        said(&parent("no-section"), "Accepted"),
        no("NoMatchingParent")
    );
    assert_eq!(said(&parent("missing"), "Accepted"), yes("Accepted"));
    assert_eq!(
        said(&parent("missing"), "ResolvedRefs"),
        no("BackendNotFound")
    );
    assert_eq!(route("missing").generation, Some(2));
    assert_eq!(
        route("missing").parents[0]
            .parent_ref
            .section_name
            .as_deref(),
        Some("http")
    );
    assert!(status.routes.iter().all(|r| r.name != "not-ours"));
    // Only the accepted route counts as attached.
    assert_eq!(status.gateways[0].listeners[0].attached_routes, 1);
}

#[test]
fn a_cross_namespace_backend_resolves_only_with_a_reference_grant() {
    let base = [
        CLASS,
        SERVICE,
        &gateway(
            "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
",
        ),
        &route(
            "tenant",
            "cross",
            "http",
            "c.test",
            "{name: app, namespace: infra, port: 80}",
        ),
    ]
    .concat();
    let without = status(&base);
    assert_eq!(
        said(&without.routes[0].parents[0].conditions, "Accepted"),
        yes("Accepted")
    );
    assert_eq!(
        said(&without.routes[0].parents[0].conditions, "ResolvedRefs"),
        no("RefNotPermitted")
    );
    let grant = "---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: let-tenant-in, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: tenant}]
  to: [{group: '', kind: Service, name: app}]
";
    let with = status(&format!("{base}{grant}"));
    assert_eq!(
        said(&with.routes[0].parents[0].conditions, "ResolvedRefs"),
        yes("ResolvedRefs")
    );
    // A grant for TLSRoutes does not let HTTPRoutes in.
    let tls_grant = grant.replace("kind: HTTPRoute", "kind: TLSRoute");
    let wrong = status(&format!("{base}{tls_grant}"));
    assert_eq!(
        said(&wrong.routes[0].parents[0].conditions, "ResolvedRefs"),
        no("RefNotPermitted")
    );
}

/// GatewayWithAttachedRoutes (`allowedRoutes.namespaces.from: Selector`): a listener lets in
/// routes from namespaces whose labels its selector matches (matchLabels and
/// matchExpressions); every namespace has `kubernetes.io/metadata.name`, even one the
/// manifests do not list.
#[test]
fn a_listener_selector_admits_routes_by_their_namespace_labels() {
    let namespaces = "---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a, env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {team: b}}
";
    let gateway = gateway(
        "  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {team: a}
          matchExpressions: [{key: env, operator: In, values: [prod, staging]}]
  - name: by-name
    port: 8080
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {kubernetes.io/metadata.name: unlisted}}
",
    );
    let routes = [
        route(
            "team-a",
            "a",
            "http",
            "a.test",
            "{name: app, namespace: infra, port: 80}",
        ),
        route(
            "team-b",
            "b",
            "http",
            "b.test",
            "{name: app, namespace: infra, port: 80}",
        ),
        route(
            "unlisted",
            "u",
            "by-name",
            "u.test",
            "{name: app, namespace: infra, port: 80}",
        ),
    ]
    .concat();
    let status = status(&[CLASS, SERVICE, namespaces, &gateway, &routes].concat());
    let accepted = |name: &str| {
        let route = status.routes.iter().find(|r| r.name == name).unwrap();
        said(&route.parents[0].conditions, "Accepted")
    };
    assert_eq!(accepted("a"), yes("Accepted"));
    assert_eq!(accepted("b"), no("NotAllowedByListeners"));
    assert_eq!(accepted("u"), yes("Accepted"));
}

/// What we cannot honour is refused, not served without it: a Gateway asking for client
/// certificate validation (`spec.tls.frontend`, standard in v1.5) or for addresses of its
/// own; a BackendTLSPolicy naming `subjectAltNames` (we verify the hostname only).
#[test]
fn security_settings_we_do_not_implement_refuse_the_object() {
    let frontend = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: portcullis
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{kind: ConfigMap, name: client-ca}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
";
    let status1 = status(
        &[
            CLASS,
            SERVICE,
            frontend,
            &route("infra", "r", "http", "r.test", "{name: app, port: 80}"),
        ]
        .concat(),
    );
    let gw = &status1.gateways[0];
    assert!(!said(&gw.conditions, "Accepted").0);
    assert_eq!(
        said(&gw.listeners[0].conditions, "Programmed"),
        no("Invalid")
    );
    assert_eq!(
        said(&status1.routes[0].parents[0].conditions, "Accepted"),
        no("NoMatchingParent")
    );
    let addresses = frontend.replace(
        "  tls:\n    frontend:\n      default:\n        validation:\n          caCertificateRefs: [{kind: ConfigMap, name: client-ca}]\n",
        "  addresses: [{type: IPAddress, value: 10.0.0.1}]\n",
    );
    let status2 = status(&[CLASS, &addresses].concat());
    assert_eq!(
        said(&status2.gateways[0].conditions, "Accepted"),
        no("UnsupportedAddress")
    );

    let policy = "---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: app-tls, namespace: infra}
spec:
  targetRefs: [{group: '', kind: Service, name: app}]
  validation:
    wellKnownCACertificates: System
    hostname: app.internal
    subjectAltNames: [{type: Hostname, hostname: other.internal}]
";
    let status3 = status(
        &[
            CLASS,
            SERVICE,
            policy,
            &gateway("  - {name: http, port: 80, protocol: HTTP}\n"),
            &route("infra", "r", "http", "r.test", "{name: app, port: 80}"),
        ]
        .concat(),
    );
    assert!(!said(&status3.routes[0].parents[0].conditions, "ResolvedRefs").0);
}
