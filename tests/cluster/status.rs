//! The publisher against the mocked API server: status patched only on our Ingresses and only
//! when it differs (from static addresses or the publish Service, cleared on shutdown when
//! asked), Events posted once per diagnostic, and no write at all once leadership is lost.

use crate::support::mock_api::{
    FakeView, LEASE, LEASES, Mock, MockApi, Reply, Seen, built, ingress, lease_settings,
    with_status,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use portcullis::cluster::status::{
    ClusterView, LeaderElector, LeaseSettings, Publisher, PublisherSettings, StatusAddresses,
    parse_status_addresses,
};
use portcullis::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use serde_json::json;

fn ingress_ref(ns: &str, name: &str) -> ObjectRef {
    ObjectRef::namespaced("Ingress", ns, name)
}

fn publisher_settings(addresses: StatusAddresses) -> PublisherSettings {
    PublisherSettings {
        addresses,
        watch_namespace: Some("apps".into()),
        update_status_on_shutdown: false,
        identity: "pod-a".into(),
    }
}

/// A leader (the lease created through the mock) and a publisher over `view`.
async fn leader_publisher(
    mock: &Mock,
    view: &Arc<FakeView>,
    settings: PublisherSettings,
) -> (LeaderElector, Publisher) {
    leader_publisher_with(mock, view, settings, lease_settings()).await
}

/// [`leader_publisher`] with the election's `lease` settings.
async fn leader_publisher_with(
    mock: &Mock,
    view: &Arc<FakeView>,
    settings: PublisherSettings,
    lease: LeaseSettings,
) -> (LeaderElector, Publisher) {
    let mut elector = LeaderElector::new(mock.client(), lease);
    assert!(elector.step().await.unwrap());
    let view: Arc<dyn ClusterView> = view.clone();
    let publisher = Publisher::new(mock.client(), settings, elector.leadership(), view);
    (elector, publisher)
}

#[tokio::test]
async fn status_is_patched_only_on_our_ingresses_and_only_when_it_differs() {
    let mock = MockApi::default().with_leases().start();
    let view = FakeView::of([
        ingress("apps", "a", "10"),
        with_status(
            ingress("apps", "b", "11"),
            json!([{"hostname": "lb.example.com"}, {"ip": "10.0.0.1"}]),
        ),
        ingress("apps", "other-class", "12"),
        ingress("elsewhere", "d", "13"),
    ]);
    let addresses = StatusAddresses::Static(parse_status_addresses("10.0.0.1,lb.example.com"));
    let (_elector, publisher) = leader_publisher(&mock, &view, publisher_settings(addresses)).await;
    let ours = [
        ingress_ref("apps", "a"),
        ingress_ref("apps", "b"),
        ingress_ref("elsewhere", "d"),
    ];

    let outcome = publisher.publish(&built(vec![]), &ours).await;
    assert_eq!(outcome.status_patched, 1, "{outcome:?}");
    let patches = mock.seen_where(Seen::is_status_patch);
    assert_eq!(patches.len(), 1);
    let p = &patches[0];
    assert_eq!(
        p.path,
        "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/a/status"
    );
    assert_eq!(p.q("fieldManager"), Some("portcullis"));
    assert_eq!(
        p.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        p.body,
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}, {"hostname": "lb.example.com"}]}}})
    );

    // Not yet in the store (same resourceVersion): not patched again.
    publisher.publish(&built(vec![]), &ours).await;
    // In the store: nothing to do.
    view.put(with_status(
        ingress("apps", "a", "14"),
        json!([{"ip": "10.0.0.1"}, {"hostname": "lb.example.com"}]),
    ));
    publisher.publish(&built(vec![]), &ours).await;
    assert_eq!(mock.count(Seen::is_status_patch), 1);

    // Someone else overwrote it: written again.
    view.put(with_status(
        ingress("apps", "a", "15"),
        json!([{"ip": "192.0.2.1"}]),
    ));
    publisher.publish(&built(vec![]), &ours).await;
    assert_eq!(mock.count(Seen::is_status_patch), 2);
}

#[tokio::test]
async fn status_follows_the_publish_service_and_is_cleared_on_shutdown_when_asked() {
    let mock = MockApi::default().with_leases().start();
    let view = FakeView::of([ingress("apps", "a", "10")]);
    let mut settings = publisher_settings(StatusAddresses::Service);
    settings.update_status_on_shutdown = true;
    let (_elector, publisher) = leader_publisher(&mock, &view, settings).await;
    let ours = [ingress_ref("apps", "a")];

    // No publish Service (yet): existing status is left alone.
    publisher.publish(&built(vec![]), &ours).await;
    assert_eq!(mock.count(Seen::is_status_patch), 0);

    *view.publish_service.lock().unwrap() = Some(Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "portcullis", "namespace": "ingress"},
            "spec": {"clusterIP": "10.96.0.10", "type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}},
        }))
        .unwrap(),
    ));
    publisher.publish(&built(vec![]), &ours).await;
    let patch = mock.seen().into_iter().find(Seen::is_status_patch).unwrap();
    assert_eq!(
        patch.body,
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}})
    );

    view.put(with_status(
        ingress("apps", "a", "11"),
        json!([{"ip": "203.0.113.9"}]),
    ));
    publisher.shutdown(&ours).await;
    let patches = mock.seen_where(Seen::is_status_patch);
    assert_eq!(patches.len(), 2);
    assert_eq!(
        patches[1].body,
        json!({"status": {"loadBalancer": {"ingress": null}}})
    );
}

#[tokio::test]
async fn events_are_posted_once_per_diagnostic_and_again_when_it_returns() {
    let mock = MockApi::default().with_leases().start();
    let view = FakeView::of([]);
    // Every namespace watched, so the cluster-scoped IngressClass's Event goes to `default`
    // (with --watch-namespace it is not posted at all: see event_scope.rs).
    let settings = PublisherSettings {
        watch_namespace: None,
        ..publisher_settings(StatusAddresses::None)
    };
    let (_elector, publisher) = leader_publisher(&mock, &view, settings).await;
    let ours = [ingress_ref("apps", "a")];
    let annotation = Diagnostic::error(
        ingress_ref("apps", "a"),
        "metadata.annotations[\"portcullis.io/tls-mode\"]",
        Reason::InvalidAnnotation,
        "\"sideways\" is not one of terminate, passthrough, reencrypt",
    );
    let secret = Diagnostic::warning(
        ObjectRef::namespaced("Secret", "apps", "tls"),
        "data[\"tls.key\"]",
        Reason::InvalidSecret,
        "the key does not match the certificate",
    );
    let class = Diagnostic::error(
        ObjectRef::cluster("IngressClass", "portcullis"),
        "spec.parameters",
        Reason::InvalidParams,
        "IngressClassParams default does not exist",
    );
    let never = vec![
        // Ingresses not ours (of another class; in another namespace), a file.
        Diagnostic::error(
            ingress_ref("apps", "theirs"),
            "spec",
            Reason::InvalidSpec,
            "x",
        ),
        Diagnostic::error(
            ingress_ref("elsewhere", "a"),
            "spec",
            Reason::InvalidSpec,
            "x",
        ),
        Diagnostic::error(
            ObjectRef::cluster("File", "/m/a.yaml"),
            "line 1",
            Reason::InvalidManifest,
            "x",
        ),
    ];
    let all: Vec<Diagnostic> = [annotation.clone(), secret.clone(), class.clone()]
        .into_iter()
        .chain(never)
        .collect();
    let is_event =
        |r: &Seen| r.method == Method::POST && r.path.starts_with("/apis/events.k8s.io/");

    let outcome = publisher.publish(&built(all.clone()), &ours).await;
    assert_eq!(outcome.events_posted, 3, "{outcome:?}");
    publisher.publish(&built(all.clone()), &ours).await;
    assert_eq!(
        mock.count(is_event),
        3,
        "the same diagnostics are not posted again"
    );

    let events = mock.seen_where(is_event);
    let e = events
        .iter()
        .find(|e| e.body["reason"] == "InvalidAnnotation")
        .unwrap();
    assert_eq!(e.path, "/apis/events.k8s.io/v1/namespaces/apps/events");
    let b = &e.body;
    assert_eq!(b["apiVersion"], "events.k8s.io/v1");
    assert_eq!(b["type"], "Warning");
    assert_eq!(
        b["note"],
        "metadata.annotations[\"portcullis.io/tls-mode\"]: \"sideways\" is not one of terminate, passthrough, reencrypt"
    );
    assert_eq!(
        b["regarding"],
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "a", "namespace": "apps", "uid": "uid-a"})
    );
    assert_eq!(b["reportingController"], "portcullis.io/ingress-controller");
    assert_eq!(b["reportingInstance"], "pod-a");
    assert_eq!(b["action"], "BuildRoutingTable");
    assert_eq!(b["metadata"]["namespace"], "apps");
    assert!(b["metadata"]["name"].as_str().unwrap().starts_with("a."));
    assert!(b["eventTime"].is_string());
    let warning = events
        .iter()
        .find(|e| e.body["reason"] == "InvalidSecret")
        .unwrap();
    assert_eq!(
        warning.body["type"], "Warning",
        "warnings are Warning events too"
    );
    assert_eq!(warning.body["regarding"]["apiVersion"], "v1");
    let cluster_scoped = events
        .iter()
        .find(|e| e.body["reason"] == "InvalidParams")
        .unwrap();
    assert_eq!(
        cluster_scoped.path,
        "/apis/events.k8s.io/v1/namespaces/default/events"
    );
    assert_eq!(cluster_scoped.body["regarding"].get("namespace"), None);

    // Gone, then back: posted again.
    publisher
        .publish(&built(vec![secret.clone(), class.clone()]), &ours)
        .await;
    assert_eq!(mock.count(is_event), 3);
    publisher.publish(&built(all), &ours).await;
    assert_eq!(mock.count(is_event), 4);
}

#[tokio::test]
async fn losing_the_lease_stops_writes_at_once() {
    let conflict = Arc::new(AtomicBool::new(false));
    let flag = conflict.clone();
    let mock = MockApi::default().with_leases().serve(move |r| {
        (r.is(Method::PUT, LEASE) && flag.load(Ordering::SeqCst))
            .then(|| Reply::error(409, "Conflict"))
    });
    let view = FakeView::of([ingress("apps", "a", "10")]);
    let addresses = StatusAddresses::Static(parse_status_addresses("10.0.0.1"));
    let (mut elector, publisher) =
        leader_publisher(&mock, &view, publisher_settings(addresses)).await;
    let ours = [ingress_ref("apps", "a")];
    let diagnostics = vec![Diagnostic::error(
        ingress_ref("apps", "a"),
        "spec",
        Reason::InvalidSpec,
        "bad",
    )];

    // Someone else wrote the lease: the renewal conflicts, and we stop at once.
    conflict.store(true, Ordering::SeqCst);
    assert!(!elector.step().await.unwrap());
    assert!(!elector.leadership().is_leader());
    let outcome = publisher.publish(&built(diagnostics), &ours).await;
    assert!(outcome.not_leader);
    assert_eq!(mock.count(Seen::is_status_patch), 0);
    assert_eq!(
        mock.count(|r| r.path.starts_with("/apis/events.k8s.io/")),
        0
    );
}

/// On tokio's paused clock: the renew deadline is measured on that clock.
#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_writing_at_the_renew_deadline() {
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let mock = MockApi::default().with_leases().serve(move |r| {
        (r.path.starts_with(LEASES) && flag.load(Ordering::SeqCst))
            .then(|| Reply::error(500, "InternalError"))
    });
    let mut lease = lease_settings();
    lease.renew_deadline = Duration::from_millis(300);
    let view = FakeView::of([ingress("apps", "a", "10")]);
    let addresses = StatusAddresses::Static(parse_status_addresses("10.0.0.1"));
    let (mut elector, publisher) =
        leader_publisher_with(&mock, &view, publisher_settings(addresses), lease).await;
    let ours = [ingress_ref("apps", "a")];

    failing.store(true, Ordering::SeqCst);
    assert!(elector.step().await.is_err());
    assert!(
        elector.leadership().is_leader(),
        "one failed renewal is within the deadline"
    );
    tokio::time::advance(Duration::from_millis(350)).await;
    assert!(!elector.leadership().is_leader(), "past the renew deadline");
    let outcome = publisher.publish(&built(vec![]), &ours).await;
    assert!(outcome.not_leader);
    assert_eq!(mock.count(Seen::is_status_patch), 0);
}
