//! Gateway API status written by the publisher against the mocked API server: the conditions
//! the model computed for a snapshot of Gateway API manifests land in merge patches of the
//! GatewayClass, Gateway and route `status` subresources; a route's other controllers' entries
//! survive ours; nothing unchanged is written twice; a conflicting route write is retried; a
//! replica that is not the leader writes nothing; and the diagnostics of our Gateway API objects
//! (only ours) become Events.

use crate::support::mock_api::{
    FakeView, Mock, MockApi, Reply, Seen, lease_settings, object_path, tls_secret,
};
use crate::support::pki;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Method;
use portcullis::cluster::status::{
    ClusterView, LeaderElector, Publisher, PublisherSettings, StatusAddresses,
    parse_status_addresses,
};
use portcullis::model::{self, Built, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::Snapshot;
use portcullis::source::yaml::parse_manifest;
use serde_json::{Value, json};

const GROUP: &str = "/apis/gateway.networking.k8s.io/v1";
const CLASS_STATUS: &str = "/apis/gateway.networking.k8s.io/v1/gatewayclasses/portcullis/status";
const GATEWAY_STATUS: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/infra/gateways/edge/status";
const STRANGER: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/stranger";
const WEB_STATUS: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/infra/httproutes/web/status";
const RPC_STATUS: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/infra/grpcroutes/rpc/status";
const OURS: &str = "portcullis.io/gateway-controller";

/// Another controller's entry in route `stranger`'s `status.parents`, which we must keep.
fn their_entry() -> Value {
    json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "mesh", "namespace": "shop"},
        "controllerName": "example.com/other-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                        "observedGeneration": 4, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    })
}

/// Route `stranger` in `shop` (generation `generation`) with one parent of ours (listener
/// `http` of `infra/edge`, which admits routes of its own namespace only) and one of another
/// controller; its status holds that controller's entry and a stale one of ours.
fn stranger(generation: i64) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "stranger", "namespace": "shop", "generation": generation,
                     "resourceVersion": "40", "uid": "uid-stranger"},
        "spec": {
            "parentRefs": [{"name": "edge", "namespace": "infra", "sectionName": "http"},
                           {"name": "mesh", "namespace": "shop"}],
            "hostnames": ["shop.example.com"],
            "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}],
        },
        "status": {"parents": [
            their_entry(),
            {"parentRef": {"name": "edge", "namespace": "infra", "sectionName": "http"},
             "controllerName": OURS,
             "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "stale",
                             "observedGeneration": 1, "lastTransitionTime": "2025-01-01T00:00:00Z"}]},
        ]},
    })
}

/// Our GatewayClass, Gateway `infra/edge` (listeners `http`, `https` with a certificate,
/// `broken` whose Secret does not exist), HTTPRoute `infra/web` and GRPCRoute `infra/rpc`
/// attached to it, route `shop/stranger` ([`stranger`]), and a route `infra/foreign` that only
/// names another controller's Gateway.
fn gateway_api(stranger_generation: i64) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "portcullis", "generation": 2, "resourceVersion": "30"},
            "spec": {"controllerName": OURS},
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "infra", "generation": 5,
                         "resourceVersion": "31", "uid": "uid-edge"},
            "spec": {"gatewayClassName": "portcullis", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.example.com",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"name": "edge-tls"}]}},
                {"name": "broken", "port": 8443, "protocol": "HTTPS", "hostname": "x.example.com",
                 "tls": {"mode": "Terminate", "certificateRefs": [{"name": "missing"}]}},
            ]},
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "infra", "generation": 3, "resourceVersion": "32"},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": "http"}],
                     "hostnames": ["web.example.com"],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "rpc", "namespace": "infra", "generation": 1, "resourceVersion": "33"},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": "https"}],
                     "hostnames": ["rpc.example.com"],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
        }),
        stranger(stranger_generation),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "foreign", "namespace": "infra", "generation": 1, "resourceVersion": "34"},
            "spec": {"parentRefs": [{"name": "mesh", "namespace": "shop"}], "hostnames": ["*"],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
        }),
    ]
}

/// The Services and the `edge-tls` Secret the manifests refer to.
fn supporting() -> Vec<Value> {
    let service = |ns: &str, name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        })
    };
    let leaf = pki::Ca::new("gateway status ca").leaf(&["*.example.com"]);
    let mut secret = tls_secret("infra", "edge-tls", &leaf);
    secret["apiVersion"] = json!("v1");
    secret["kind"] = json!("Secret");
    vec![service("infra", "web"), service("shop", "shop"), secret]
}

/// The build of `objects`, read the way the manifest directory reads them.
fn build(objects: &[Value]) -> Built {
    let text: Vec<String> = objects.iter().map(Value::to_string).collect();
    let snapshot: Snapshot = parse_manifest("gateway.yaml", &text.join("\n---\n"))
        .unwrap_or_else(|d| panic!("{d}"))
        .into_iter()
        .collect();
    model::build(&snapshot, &BuildSettings::default(), &LastGood::default())
}

fn settings() -> PublisherSettings {
    PublisherSettings {
        addresses: StatusAddresses::Static(parse_status_addresses("203.0.113.7,lb.example.com")),
        watch_namespace: None,
        update_status_on_shutdown: false,
        identity: "pod-a".into(),
    }
}

/// A mock serving the Lease and the Gateway API objects by name (with their status), answering
/// with `handler` first.
fn mock(handler: impl FnMut(&Seen) -> Option<Reply> + Send + 'static) -> Mock {
    MockApi::default()
        .with_leases()
        .with_objects(gateway_api(4))
        .serve(handler)
}

/// A publisher that is the leader (the Lease acquired through the mock).
async fn leader(mock: &Mock) -> (LeaderElector, Publisher) {
    let mut elector = LeaderElector::new(mock.client(), lease_settings());
    assert!(elector.step().await.unwrap());
    let view: Arc<dyn ClusterView> = FakeView::of([]);
    let publisher = Publisher::new(mock.client(), settings(), elector.leadership(), view);
    (elector, publisher)
}

fn gateway_api_writes(r: &Seen) -> bool {
    r.path.starts_with(GROUP) && (r.method == Method::PATCH || r.path.ends_with("/status"))
}

/// The one PATCH of `path`.
fn patch_of(mock: &Mock, path: &str) -> Value {
    let patches = mock.seen_where(|r| r.is(Method::PATCH, path));
    assert_eq!(patches.len(), 1, "{path}: {:#?}", mock.seen());
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(patches[0].q("fieldManager"), Some("portcullis"));
    patches[0].body.clone()
}

/// The condition `kind` of `conditions`, as `(status, reason, observedGeneration)`.
fn condition(conditions: &Value, kind: &str) -> (String, String, i64) {
    let c = conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} in {conditions:#}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["reason"].as_str().unwrap().to_string(),
        c["observedGeneration"].as_i64().unwrap(),
    )
}

fn said(status: &str, reason: &str, generation: i64) -> (String, String, i64) {
    (status.to_string(), reason.to_string(), generation)
}

fn listener<'a>(gateway: &'a Value, name: &str) -> &'a Value {
    gateway["status"]["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no listener {name} in {gateway:#}"))
}

#[tokio::test]
async fn the_model_s_conditions_are_patched_onto_classes_gateways_and_routes() {
    let mut objects = gateway_api(4);
    objects.extend(supporting());
    let built = build(&objects);
    let mock = mock(|_| None);
    let (_elector, publisher) = leader(&mock).await;

    let outcome = publisher.publish(&built, &built.ours).await;
    // The class, the Gateway, and the routes web, rpc and stranger (not foreign: not ours).
    assert_eq!(outcome.gateway_status_patched, 5, "{outcome:?}");
    assert_eq!(outcome.failed, 0, "{outcome:?}");

    let class = patch_of(&mock, CLASS_STATUS);
    assert_eq!(
        condition(&class["status"]["conditions"], "Accepted"),
        said("True", "Accepted", 2)
    );
    // The features the conformance suite reads when it is given none: sorted by name, the
    // core ones there, the ones not met absent.
    let features: Vec<&str> = class["status"]["supportedFeatures"]
        .as_array()
        .map(|list| list.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(features.is_sorted(), "{features:?}");
    for core in ["Gateway", "HTTPRoute", "ReferenceGrant"] {
        assert!(features.contains(&core), "{core} in {features:?}");
    }
    for unmet in ["GRPCRoute", "BackendTLSPolicy"] {
        assert!(!features.contains(&unmet), "{unmet} in {features:?}");
    }

    let gateway = patch_of(&mock, GATEWAY_STATUS);
    let conditions = &gateway["status"]["conditions"];
    // One listener is not valid: accepted and programmed with the others (as the spec says).
    assert_eq!(
        condition(conditions, "Accepted"),
        said("True", "ListenersNotValid", 5)
    );
    assert_eq!(
        condition(conditions, "Programmed"),
        said("True", "Programmed", 5)
    );
    assert_eq!(
        gateway["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.7"},
               {"type": "Hostname", "value": "lb.example.com"}])
    );
    let http = listener(&gateway, "http");
    assert_eq!(http["attachedRoutes"], 1, "web: {http:#}");
    assert_eq!(
        http["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
               {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}])
    );
    assert_eq!(
        condition(&http["conditions"], "Accepted"),
        said("True", "Accepted", 5)
    );
    assert_eq!(listener(&gateway, "https")["attachedRoutes"], 1, "rpc");
    let broken = listener(&gateway, "broken");
    assert_eq!(
        condition(&broken["conditions"], "ResolvedRefs"),
        said("False", "InvalidCertificateRef", 5)
    );
    assert_eq!(broken["attachedRoutes"], 0);

    // Our attached routes: Accepted, each at its own generation.
    for (path, generation) in [(WEB_STATUS, 3), (RPC_STATUS, 1)] {
        let patch = patch_of(&mock, path);
        let parents = patch["status"]["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 1, "{patch:#}");
        assert_eq!(parents[0]["controllerName"], OURS);
        assert_eq!(
            condition(&parents[0]["conditions"], "Accepted"),
            said("True", "Accepted", generation)
        );
    }

    // The stranger: read first, then patched at the resourceVersion read, with the other
    // controller's entry kept as it was and ours (the stale one replaced) refused.
    let status = format!("{STRANGER}/status");
    let requests: Vec<Seen> = mock.seen_where(|r| r.path == status);
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(requests[0].is(Method::GET, &status));
    let patch = &requests[1];
    assert!(patch.is(Method::PATCH, &status));
    assert_eq!(patch.body["metadata"]["resourceVersion"], "40");
    let parents = patch.body["status"]["parents"].as_array().unwrap();
    assert_eq!(
        parents.len(),
        2,
        "theirs and ours, no stale copy: {parents:#?}"
    );
    assert_eq!(parents[0], their_entry());
    assert_eq!(parents[1]["controllerName"], OURS);
    assert_eq!(
        parents[1]["parentRef"],
        json!({"name": "edge", "namespace": "infra", "sectionName": "http"})
    );
    assert_eq!(
        condition(&parents[1]["conditions"], "Accepted"),
        said("False", "NotAllowedByListeners", 4)
    );
    // What the API server holds now: both entries.
    let stored = mock.object(STRANGER).unwrap();
    assert_eq!(stored["status"]["parents"], patch.body["status"]["parents"]);
    assert_eq!(stored["metadata"]["resourceVersion"], "41");

    // Not another controller's route: never read, never written.
    assert_eq!(mock.count(|r| r.path.contains("/httproutes/foreign")), 0);

    // Nothing changed: nothing read, nothing written.
    let before = mock.count(gateway_api_writes);
    let again = publisher.publish(&built, &built.ours).await;
    assert_eq!(again.gateway_status_patched, 0, "{again:?}");
    assert_eq!(mock.count(gateway_api_writes), before);

    // The stranger's spec changes (generation 6): only it is written, read at the
    // resourceVersion our own write left (41), and its untouched conditions keep their
    // transition time.
    let first_time = parents[1]["conditions"][0]["lastTransitionTime"].clone();
    let mut objects = gateway_api(6);
    objects.extend(supporting());
    let changed = build(&objects);
    let outcome = publisher.publish(&changed, &changed.ours).await;
    assert_eq!(outcome.gateway_status_patched, 1, "{outcome:?}");
    let patches = mock.seen_where(|r| r.is(Method::PATCH, &status));
    assert_eq!(patches.len(), 2);
    let last = &patches[1].body;
    assert_eq!(last["metadata"]["resourceVersion"], "41");
    let ours = &last["status"]["parents"][1];
    assert_eq!(
        condition(&ours["conditions"], "Accepted"),
        said("False", "NotAllowedByListeners", 6)
    );
    assert_eq!(ours["conditions"][0]["lastTransitionTime"], first_time);
    assert_eq!(last["status"]["parents"][0], their_entry());
}

/// Another writer changed the route between our read and our write: the API server refuses
/// the patch (409), it counts as failed, and the next publish reads and writes it again.
#[tokio::test]
async fn a_conflicting_route_write_is_counted_failed_and_retried_next_time() {
    let conflicts = Arc::new(AtomicUsize::new(0));
    let count = conflicts.clone();
    let status = format!("{STRANGER}/status");
    let target = status.clone();
    let mock = mock(move |r| {
        (r.is(Method::PATCH, &target) && count.fetch_add(1, Ordering::SeqCst) == 0)
            .then(|| Reply::error(409, "Conflict"))
    });
    let (_elector, publisher) = leader(&mock).await;
    let mut objects = gateway_api(4);
    objects.extend(supporting());
    let built = build(&objects);

    let first = publisher.publish(&built, &built.ours).await;
    assert_eq!(first.failed, 1, "{first:?}");
    assert_eq!(first.gateway_status_patched, 4, "{first:?}");
    assert_eq!(
        mock.object(STRANGER).unwrap()["metadata"]["resourceVersion"],
        "40",
        "refused, not written"
    );

    let second = publisher.publish(&built, &built.ours).await;
    assert_eq!(second.failed, 0, "{second:?}");
    assert_eq!(
        second.gateway_status_patched, 1,
        "only the stranger: {second:?}"
    );
    assert_eq!(mock.count(|r| r.is(Method::GET, &status)), 2);
    assert_eq!(mock.count(|r| r.is(Method::PATCH, &status)), 2);
    let parents = &mock.object(STRANGER).unwrap()["status"]["parents"];
    assert_eq!(parents[0], their_entry());
    assert_eq!(parents[1]["controllerName"], OURS);
}

/// A replica that is not the leader reads and writes no Gateway API status; once it leads, it
/// writes everything.
#[tokio::test]
async fn a_replica_that_is_not_the_leader_writes_no_gateway_api_status() {
    let mock = mock(|_| None);
    let mut elector = LeaderElector::new(mock.client(), lease_settings());
    let view: Arc<dyn ClusterView> = FakeView::of([]);
    let publisher = Publisher::new(mock.client(), settings(), elector.leadership(), view);
    let mut objects = gateway_api(4);
    objects.extend(supporting());
    let built = build(&objects);
    assert!(!built.gateway_api.routes.is_empty());

    let outcome = publisher.publish(&built, &built.ours).await;
    assert!(outcome.not_leader);
    assert_eq!(outcome.gateway_status_patched, 0);
    assert_eq!(mock.count(|r| r.path.starts_with(GROUP)), 0);
    assert_eq!(
        mock.count(|r| r.path.starts_with("/apis/events.k8s.io/")),
        0
    );

    assert!(elector.step().await.unwrap());
    let outcome = publisher.publish(&built, &built.ours).await;
    assert_eq!(outcome.gateway_status_patched, 5, "{outcome:?}");
}

/// Diagnostics about our Gateway API objects become Events naming them at their API version
/// (`kubectl describe httproute` shows them); a route that only names another controller's
/// Gateway gets none, though the model diagnosed it.
#[tokio::test]
async fn diagnostics_of_our_gateway_api_objects_become_events_and_no_one_else_s() {
    let mock = mock(|_| None);
    let (_elector, publisher) = leader(&mock).await;
    let mut objects = gateway_api(4);
    objects.extend(supporting());
    let built = build(&objects);
    let foreign = built
        .diagnostics
        .iter()
        .find(|d| d.object.kind == "HTTPRoute" && d.object.name == "foreign");
    assert!(
        foreign.is_some(),
        "the model diagnoses the foreign route's host name: {:#?}",
        built.diagnostics
    );

    let outcome = publisher.publish(&built, &built.ours).await;
    let events = mock.seen_where(|r| r.method == Method::POST && r.path.ends_with("/events"));
    assert_eq!(outcome.events_posted, events.len());
    let about = |kind: &str, name: &str| -> Vec<&Seen> {
        events
            .iter()
            .filter(|e| e.body["regarding"]["kind"] == kind && e.body["regarding"]["name"] == name)
            .collect()
    };
    let stranger = about("HTTPRoute", "stranger");
    assert_eq!(stranger.len(), 1, "{events:#?}");
    let event = &stranger[0];
    assert_eq!(event.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(
        event.body["regarding"]["apiVersion"],
        "gateway.networking.k8s.io/v1"
    );
    assert_eq!(event.body["regarding"]["namespace"], "shop");
    assert_eq!(event.body["regarding"]["uid"], "uid-stranger");
    assert_eq!(event.body["reason"], "NotAllowedByListeners");
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .starts_with("spec.parentRefs[0]: "),
        "{event:?}"
    );
    // The Gateway's listener without its certificate.
    let edge = about("Gateway", "edge");
    assert!(!edge.is_empty(), "{events:#?}");
    assert!(
        edge.iter()
            .all(|e| e.body["regarding"]["apiVersion"] == "gateway.networking.k8s.io/v1")
    );
    assert!(about("HTTPRoute", "foreign").is_empty(), "{events:#?}");
}

#[test]
fn object_paths_follow_the_api_server_s_layout() {
    let objects = gateway_api(4);
    let paths: Vec<String> = objects.iter().map(object_path).collect();
    assert_eq!(
        paths[..4],
        [
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses/portcullis".to_string(),
            "/apis/gateway.networking.k8s.io/v1/namespaces/infra/gateways/edge".to_string(),
            "/apis/gateway.networking.k8s.io/v1/namespaces/infra/httproutes/web".to_string(),
            "/apis/gateway.networking.k8s.io/v1/namespaces/infra/grpcroutes/rpc".to_string(),
        ]
    );
}

/// Gateway API's rule for a parent the route left: when `stranger` stops naming our Gateway,
/// our entry comes off its `status.parents` (read first, patched at the resourceVersion read),
/// the other controller's stays, and nothing more is written after that.
#[tokio::test]
async fn a_route_that_leaves_our_gateway_loses_our_status_entry_only() {
    let mut objects = gateway_api(4);
    objects.extend(supporting());
    let built = build(&objects);
    let mock = mock(|_| None);
    let (_elector, publisher) = leader(&mock).await;
    let first = publisher.publish(&built, &built.ours).await;
    assert_eq!(first.failed, 0, "{first:?}");

    // The stranger now names only the other controller's Gateway.
    let mut left = gateway_api(5);
    for object in &mut left {
        if object["metadata"]["name"] == "stranger" {
            object["spec"]["parentRefs"] = json!([{"name": "mesh", "namespace": "shop"}]);
        }
    }
    left.extend(supporting());
    let after = build(&left);
    let outcome = publisher.publish(&after, &after.ours).await;
    assert_eq!(outcome.failed, 0, "{outcome:?}");
    let status = format!("{STRANGER}/status");
    let patches = mock.seen_where(|r| r.is(Method::PATCH, &status));
    assert_eq!(patches.len(), 2, "{:#?}", mock.seen());
    let last = &patches[1].body;
    assert_eq!(last["metadata"]["resourceVersion"], "41");
    assert_eq!(last["status"]["parents"], json!([their_entry()]));
    assert_eq!(
        mock.object(STRANGER).unwrap()["status"]["parents"],
        json!([their_entry()])
    );

    // Settled: the next publish neither reads nor writes the stranger.
    let before = mock.count(|r| r.path == status);
    let again = publisher.publish(&after, &after.ours).await;
    assert_eq!(again.failed, 0);
    assert_eq!(mock.count(|r| r.path == status), before);
}
