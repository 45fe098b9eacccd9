//! The calls the code makes are the calls src/cluster/rbac.rs declares: the controller's whole
//! life against the mocked API server uses every declared grant and nothing else, watching one
//! namespace or all; and the check itself (`Seen::refused_by`, the mock's `RbacCheck`) can fail.

use crate::support::backends;
use crate::support::mock_api::{
    INGRESSES, LEASE, LEASES, Lists, MockApi, OWN_NAMESPACE, RbacCheck, Seen, T,
    controller_settings, default_grants, loopback, object_path, tls_secret, web_ingress, web_lists,
};
use crate::support::pki;
use crate::support::wait::wait_until;

use std::collections::BTreeSet;

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use portcullis::cluster::ControllerSettings;
use portcullis::cluster::rbac;
use serde_json::{Value, json};

/// Our GatewayClass, Gateway `apps/edge` (an HTTP and a TLS pass-through listener), and one
/// route of each kind attached to it: what makes the leader write every kind of Gateway API
/// status.
fn gateway_api_objects() -> Vec<Value> {
    const V1: &str = "gateway.networking.k8s.io/v1";
    let route = |kind: &str, name: &str, section: &str, host: &str| {
        json!({
            "apiVersion": V1, "kind": kind,
            "metadata": {"name": name, "namespace": "apps", "generation": 1, "resourceVersion": "21"},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": section}],
                     "hostnames": [host],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
        })
    };
    vec![
        json!({
            "apiVersion": V1, "kind": "GatewayClass",
            "metadata": {"name": "portcullis", "generation": 1, "resourceVersion": "21"},
            "spec": {"controllerName": "portcullis.io/gateway-controller"},
        }),
        json!({
            "apiVersion": V1, "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "apps", "generation": 1, "resourceVersion": "21"},
            "spec": {"gatewayClassName": "portcullis", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "tls", "port": 443, "protocol": "TLS", "hostname": "*.example.com",
                 "tls": {"mode": "Passthrough"}},
            ]},
        }),
        route("HTTPRoute", "web", "http", "gw.example.com"),
        route("GRPCRoute", "rpc", "http", "rpc.example.com"),
        route("TLSRoute", "db", "tls", "db.example.com"),
    ]
}

/// Runs the controller through its whole life against the mock, deployed in [`OWN_NAMESPACE`]
/// and watching `watch_namespace`, with every flag that makes API calls of its own
/// (`--publish-service`, `--default-certificate`): every kind listed and watched (the CRD
/// too), our Ingress's status patched from the publish Service, an Event posted for an
/// Ingress with a bad annotation, the Lease created, renewed and released; and the Gateway API
/// status of a GatewayClass, a Gateway and one route of each kind written (the routes' read
/// first). Returns every request the API server saw.
async fn whole_life(watch_namespace: Option<&str>) -> Vec<Seen> {
    let backend = backends::http("web").await;
    let own = OWN_NAMESPACE;
    let mut bad = web_ingress("bad");
    bad["metadata"]["annotations"] = json!({"portcullis.io/tls-mode": "sideways"});
    let publish_service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "portcullis", "namespace": own, "resourceVersion": "8"},
        "spec": {"clusterIP": "10.96.0.10", "type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}},
    });
    let default_certificate = tls_secret(
        own,
        "default-cert",
        &pki::Ca::new("rbac test ca").leaf(&["default.example.com"]),
    );
    // The default certificate by name in our namespace, or among every namespace's TLS Secrets.
    let gateway_api = gateway_api_objects();
    let of_kind = |kind: &str| -> Vec<Value> {
        gateway_api
            .iter()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect()
    };
    let lists: Lists = web_lists(&backend, vec![web_ingress("web"), bad])
        .of(
            &format!("/api/v1/namespaces/{own}/services"),
            vec![publish_service],
        )
        .selected(
            "secrets",
            "metadata.name=default-cert",
            vec![default_certificate.clone()],
        )
        .selected(
            "/api/v1/secrets",
            "type=kubernetes.io/tls",
            vec![default_certificate],
        )
        .of("gatewayclasses", of_kind("GatewayClass"))
        .of("gateways", of_kind("Gateway"))
        .of("httproutes", of_kind("HTTPRoute"))
        .of("grpcroutes", of_kind("GRPCRoute"))
        .of("tlsroutes", of_kind("TLSRoute"));
    let mock = MockApi::new(lists)
        .with_leases()
        .with_objects(gateway_api.clone())
        .start();
    let controller_settings = ControllerSettings {
        watch_namespace: watch_namespace.map(str::to_string),
        publish_service: Some((own.into(), "portcullis".into())),
        publish_status_address: Vec::new(),
        default_certificate: Some((own.into(), "default-cert".into())),
        lease_namespace: own.into(),
        ..controller_settings()
    };
    let controller = mock.controller(loopback(), controller_settings).await;
    assert!(wait_until(T, || async { controller.status().is_live() }).await);

    const STATUS: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/web/status";
    mock.wait_count(1, |r| r.is(Method::PATCH, STATUS)).await;
    mock.wait_count(1, |r| {
        r.is(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/apps/events",
        ) && r.body["reason"] == "InvalidAnnotation"
            && r.body["regarding"]["name"] == "bad"
    })
    .await;
    // Gateway API status: every object's written, each route's read first.
    for object in &gateway_api {
        let status = format!("{}/status", object_path(object));
        mock.wait_count(1, |r| r.is(Method::PATCH, &status)).await;
        if object["kind"].as_str().unwrap().ends_with("Route") {
            assert!(
                mock.count(|r| r.is(Method::GET, &status)) >= 1,
                "{status} read before its write"
            );
        }
    }
    // Acquired (GET, then create), renewed once (one renew period, 5 s), then released.
    mock.wait_count(1, |r| r.is(Method::POST, LEASES)).await;
    mock.wait_count(1, |r| r.is(Method::PUT, LEASE)).await;
    controller.until_stopped(async {}).await.unwrap();
    let requests = mock.seen();
    let puts: Vec<&Seen> = requests
        .iter()
        .filter(|r| r.is(Method::PUT, LEASE))
        .collect();
    assert!(puts.len() >= 2, "renewed, then released: {requests:#?}");
    assert_eq!(
        puts[puts.len() - 1].body["spec"].get("holderIdentity"),
        None,
        "released on the way out: {requests:#?}"
    );
    requests
}

/// Every request refused by `grants`, and every one of `grants` no request used.
fn rbac_report(
    requests: &[Seen],
    grants: &BTreeSet<rbac::Grant>,
) -> (Vec<String>, Vec<rbac::Grant>) {
    let refused = requests
        .iter()
        .filter_map(|r| r.refused_by(grants))
        .collect();
    let attributes: Vec<rbac::Request> = requests.iter().filter_map(|r| r.rbac().ok()).collect();
    let unused = grants
        .iter()
        .filter(|g| !attributes.iter().any(|a| g.permits(a)))
        .cloned()
        .collect();
    (refused, unused)
}

/// Every request the controller makes in its whole life is one the chart grants, and every
/// grant is used: watching one namespace, so Roles there and in our own namespace.
#[tokio::test]
async fn watching_one_namespace_the_controller_calls_exactly_what_src_rbac_declares() {
    let requests = whole_life(Some("apps")).await;
    let (refused, unused) = rbac_report(&requests, &rbac::grants(OWN_NAMESPACE, Some("apps")));
    assert!(refused.is_empty(), "refused: {refused:#?}");
    assert!(unused.is_empty(), "declared, but never called: {unused:#?}");
}

/// The same in every namespace: a ClusterRole, and the Lease's Role in our own namespace.
#[tokio::test]
async fn watching_every_namespace_the_controller_calls_exactly_what_src_rbac_declares() {
    let requests = whole_life(None).await;
    let (refused, unused) = rbac_report(&requests, &rbac::grants(OWN_NAMESPACE, None));
    assert!(refused.is_empty(), "refused: {refused:#?}");
    assert!(unused.is_empty(), "declared, but never called: {unused:#?}");
    // Cluster-wide, nothing is listed or watched by namespace except what lives in ours; the
    // one read by name is a route's status, just before it is written (its `parents` are
    // shared with other controllers).
    for r in &requests {
        let rbac = r.rbac().unwrap();
        let route_status_read = rbac.verb == "get" && rbac.resource.ends_with("routes/status");
        assert!(
            rbac.namespace.is_none()
                || rbac.namespace.as_deref() == Some(OWN_NAMESPACE)
                || r.method != Method::GET
                || route_status_read,
            "a namespaced read while watching every namespace: {r:?}"
        );
    }
}

/// The check can fail: requests outside src/cluster/rbac.rs, by verb, resource, subresource, group,
/// namespace or URL, are each refused with the reason, while the declared ones pass.
#[test]
fn the_rbac_check_refuses_what_src_rbac_does_not_declare() {
    let everywhere = default_grants();
    let lease = "/apis/coordination.k8s.io/v1/namespaces/ingress/leases/portcullis-leader";
    let declared = [
        Seen::new(
            Method::GET,
            &format!("{INGRESSES}?watch=true&resourceVersion=1"),
        ),
        Seen::new(
            Method::GET,
            "/apis/networking.k8s.io/v1/ingressclasses?limit=500",
        ),
        Seen::new(Method::PATCH, &format!("{INGRESSES}/a/status")),
        Seen::new(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/apps/events",
        ),
        Seen::new(Method::GET, lease),
        Seen::new(Method::PUT, lease),
        Seen::new(Method::POST, LEASES),
        Seen::new(
            Method::GET,
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses?limit=500",
        ),
        Seen::new(
            Method::GET,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes?watch=true",
        ),
        Seen::new(
            Method::GET,
            "/apis/gateway.networking.k8s.io/v1beta1/referencegrants?limit=500",
        ),
        Seen::new(Method::GET, "/api/v1/namespaces/apps/configmaps?watch=true"),
        Seen::new(Method::GET, "/api/v1/namespaces?limit=500"),
        Seen::new(Method::GET, "/api/v1/namespaces?watch=true"),
        Seen::new(
            Method::GET,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/grpcroutes?watch=true",
        ),
        // Gateway API status: patched; a route's read first.
        Seen::new(
            Method::PATCH,
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses/portcullis/status",
        ),
        Seen::new(
            Method::PATCH,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/gateways/edge/status",
        ),
        Seen::new(
            Method::GET,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes/web/status",
        ),
        Seen::new(
            Method::PATCH,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/grpcroutes/rpc/status",
        ),
        Seen::new(
            Method::GET,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/tlsroutes/db/status",
        ),
    ];
    for r in &declared {
        assert_eq!(r.refused_by(&everywhere), None, "{r:?}");
    }
    let undeclared = [
        (Method::DELETE, lease, "delete"),
        (
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/apps/leases/x",
            "\"apps\"",
        ),
        (Method::GET, "/api/v1/namespaces/apps/pods", "\"pods\""),
        (
            Method::GET,
            "/api/v1/namespaces/apps/secrets/tls",
            "\"get\"",
        ),
        (
            Method::PATCH,
            "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/a",
            "\"patch\"",
        ),
        (
            Method::PUT,
            "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/a/status",
            "\"update\"",
        ),
        (
            Method::POST,
            "/api/v1/namespaces/apps/events",
            "group: \"\"",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/apps/secrets",
            "deletecollection",
        ),
        (Method::GET, "/api/v1/namespaces/apps", "\"namespaces\""),
        // Gateway API: status patched, never the objects; no reads by name but a route's
        // status; no status update (PUT).
        (
            Method::PATCH,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/gateways/edge",
            "\"gateways\"",
        ),
        (
            Method::GET,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/gateways/edge/status",
            "\"gateways/status\"",
        ),
        (
            Method::GET,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes/web",
            "\"get\"",
        ),
        (
            Method::PUT,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes/web/status",
            "\"update\"",
        ),
        (
            Method::PATCH,
            "/apis/gateway.networking.k8s.io/v1/namespaces/apps/backendtlspolicies/p/status",
            "\"backendtlspolicies/status\"",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/apps/configmaps/web-ca",
            "\"get\"",
        ),
        (Method::GET, "/version", "non-resource"),
        (Method::GET, "/apis", "non-resource"),
    ];
    for (method, path, why) in undeclared {
        let r = Seen::new(method, path);
        let refused = r.refused_by(&everywhere);
        assert!(
            refused
                .as_deref()
                .is_some_and(|m| m.contains(why) && m.contains(path)),
            "{r:?} should be refused for {why}: {refused:?}"
        );
    }
    // Watching one namespace, Roles: no list of every namespace, no Namespaces (not read then),
    // and no Events about cluster-scoped objects (they go to `default`; the chart says those are
    // log-only).
    let one = rbac::grants(OWN_NAMESPACE, Some("apps"));
    for path in [
        "/apis/networking.k8s.io/v1/ingresses",
        "/api/v1/namespaces",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        "/apis/gateway.networking.k8s.io/v1/gateways",
        "/api/v1/namespaces/ingress/configmaps",
        "/apis/gateway.networking.k8s.io/v1/namespaces/ingress/gateways/edge/status",
    ] {
        let method = if path.ends_with("/events") {
            Method::POST
        } else if path.ends_with("/status") {
            Method::PATCH
        } else {
            Method::GET
        };
        assert!(Seen::new(method, path).refused_by(&one).is_some(), "{path}");
    }
    // GatewayClasses are cluster-scoped: read cluster-wide even then.
    let classes = Seen::new(
        Method::GET,
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses?watch=true",
    );
    assert_eq!(classes.refused_by(&one), None);
    let class_status = Seen::new(
        Method::PATCH,
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses/portcullis/status",
    );
    assert_eq!(class_status.refused_by(&one), None);
}

/// The mock's own check sees what the client sends: an undeclared call is recorded, and the
/// check fails the test that owns the mock when it ends.
#[tokio::test]
async fn the_mock_records_an_undeclared_call_and_fails_the_test() {
    use k8s_openapi::api::core::v1::Pod;
    let mock = MockApi::default().start();
    let pods: kube::Api<Pod> = kube::Api::namespaced(mock.client(), "apps");
    pods.list(&Default::default()).await.unwrap();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(mock.client(), "apps");
    let _ = secrets.get_opt("tls").await;
    let refused = mock.take_refused();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused[0].contains("/api/v1/namespaces/apps/pods") && refused[0].contains("\"list\""));
    assert!(refused[1].contains("/secrets/tls") && refused[1].contains("\"get\""));

    let check = RbacCheck::new(refused);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(check)));
    assert!(
        dropped.is_err(),
        "a refused request fails the test at the end"
    );
}
