//! Events only where RBAC grants them: with `--watch-namespace`, the chart grants Events in
//! that namespace alone, so a diagnostic whose Event would go elsewhere (the cluster-scoped
//! IngressClass's goes to `default`; the default certificate's to our own namespace) gets no
//! Event (it is in the log) instead of a 403 on every rebuild; the rest are posted as usual.

use crate::support::backends;
use crate::support::mock_api::{
    FakeView, INGRESSES, MockApi, OWN_NAMESPACE, Seen, T, built, controller_settings,
    lease_settings, loopback, web_ingress, web_lists,
};
use crate::support::wait::wait_until;

use std::sync::Arc;

use http::Method;
use portcullis::cluster::rbac;
use portcullis::cluster::status::{
    ClusterView, LeaderElector, Publisher, PublisherSettings, StatusAddresses,
};
use portcullis::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use serde_json::{Value, json};

const APPS_EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/apps/events";

fn is_event(r: &Seen) -> bool {
    r.method == Method::POST && r.path.starts_with("/apis/events.k8s.io/")
}

/// An Event about the Ingress `name`, in `apps`.
fn is_event_about(name: &str) -> impl Fn(&Seen) -> bool + '_ {
    move |r| r.is(Method::POST, APPS_EVENTS) && r.body["regarding"]["name"] == name
}

/// [`web_ingress`] `name` at resourceVersion `rv` with an invalid annotation (an Event on it).
fn bad_ingress(name: &str, rv: &str) -> Value {
    let mut ingress = web_ingress(name);
    ingress["metadata"]["resourceVersion"] = json!(rv);
    ingress["metadata"]["annotations"] = json!({"portcullis.io/tls-mode": "sideways"});
    ingress
}

/// The whole controller watching `apps`, with an IngressClass whose parameters name an
/// IngressClassParams that does not exist (a diagnostic about the cluster-scoped class, in
/// every build): no Event goes outside `apps`, and nothing it calls needs more than the
/// chart grants in that mode, while Events about `apps` and status keep being written.
#[tokio::test]
async fn watching_one_namespace_no_event_goes_outside_it() {
    let backend = backends::http("web").await;
    let class = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "portcullis", "resourceVersion": "2"},
        "spec": {"controller": "portcullis.io/ingress-controller",
                 "parameters": {"apiGroup": "portcullis.io", "kind": "IngressClassParams",
                                "name": "missing"}},
    });
    // A rule for the path answers before `web_lists`' rule for the resource.
    let lists = web_lists(
        &backend,
        vec![web_ingress("web"), bad_ingress("bad-1", "10")],
    )
    .of("/apis/networking.k8s.io/v1/ingressclasses", vec![class]);
    let mock = MockApi::new(lists).with_leases().start();
    let controller = mock.controller(loopback(), controller_settings()).await;

    mock.wait_count(1, is_event_about("bad-1")).await;
    let class_diagnostic = controller.status().current().is_some_and(|b| {
        b.diagnostics
            .iter()
            .any(|d| d.object.kind == "IngressClass" && d.reason == Reason::InvalidParams)
    });
    assert!(class_diagnostic, "the class's diagnostic is in the build");
    // A barrier instead of a sleep: publishes run one after another, so the one that posts
    // `bad-2`'s Event starts after the one that posted `bad-1`'s (which had the class's
    // diagnostic too) has finished.
    assert!(
        wait_until(T, || async { mock.open_watches(INGRESSES) >= 1 }).await,
        "no Ingress watch"
    );
    mock.push(
        INGRESSES,
        json!({"type": "ADDED", "object": bad_ingress("bad-2", "11")}),
    );
    mock.wait_count(1, is_event_about("bad-2")).await;
    let status = format!("{INGRESSES}/web/status");
    mock.wait_count(1, |r| r.is(Method::PATCH, &status)).await;

    let outside: Vec<Seen> = mock.seen_where(|r| is_event(r) && r.path != APPS_EVENTS);
    assert!(outside.is_empty(), "Events outside apps: {outside:#?}");
    let grants = rbac::grants(OWN_NAMESPACE, Some("apps"));
    let refused: Vec<String> = mock
        .seen()
        .iter()
        .filter_map(|r| r.refused_by(&grants))
        .collect();
    assert!(
        refused.is_empty(),
        "refused by the Roles of --watch-namespace apps: {refused:#?}"
    );
    controller.until_stopped(async {}).await.unwrap();
}

/// The publisher alone, watching `apps`: a diagnostic about the IngressClass (Event in
/// `default`) or about the default certificate (Event in our own namespace) is skipped, and
/// counted (logged) once while it stays present, again when it comes back; the Ingress's is
/// posted. Watching `default`, the class's Event is allowed there and posted.
#[tokio::test]
async fn events_outside_the_watched_namespace_are_skipped_and_logged_once() {
    let mock = MockApi::default().with_leases().start();
    let mut elector = LeaderElector::new(mock.client(), lease_settings());
    assert!(elector.step().await.unwrap());
    let publisher = |watch_namespace: &str| {
        let settings = PublisherSettings {
            addresses: StatusAddresses::None,
            watch_namespace: Some(watch_namespace.into()),
            update_status_on_shutdown: false,
            identity: "pod-a".into(),
        };
        let view: Arc<dyn ClusterView> = Arc::new(FakeView::default());
        Publisher::new(mock.client(), settings, elector.leadership(), view)
    };
    let ingress = ObjectRef::namespaced("Ingress", "apps", "a");
    let ours = [ingress.clone()];
    let on_ingress = Diagnostic::error(ingress, "spec", Reason::InvalidSpec, "bad");
    let on_class = Diagnostic::error(
        ObjectRef::cluster("IngressClass", "portcullis"),
        "spec.parameters",
        Reason::InvalidParams,
        "IngressClassParams missing does not exist; using defaults",
    );
    let on_certificate = Diagnostic::warning(
        ObjectRef::namespaced("Secret", OWN_NAMESPACE, "default-cert"),
        "data[\"tls.crt\"]",
        Reason::InvalidSecret,
        "not a certificate",
    );
    let all = vec![on_ingress.clone(), on_class.clone(), on_certificate.clone()];

    let apps = publisher("apps");
    let first = apps.publish(&built(all.clone()), &ours).await;
    assert_eq!(
        (first.events_posted, first.events_skipped),
        (1, 2),
        "{first:?}"
    );
    let again = apps.publish(&built(all.clone()), &ours).await;
    assert_eq!(
        (again.events_posted, again.events_skipped),
        (0, 0),
        "{again:?}"
    );
    // The class's diagnostic goes away and comes back: logged again, still not posted.
    apps.publish(&built(vec![on_ingress.clone(), on_certificate]), &ours)
        .await;
    let back = apps.publish(&built(all), &ours).await;
    assert_eq!(
        (back.events_posted, back.events_skipped),
        (0, 1),
        "{back:?}"
    );
    let paths: Vec<String> = mock
        .seen_where(is_event)
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(paths, [APPS_EVENTS], "one Event, about the Ingress in apps");

    // Watching `default`, Events about cluster-scoped objects are allowed there.
    let default = publisher("default");
    let outcome = default.publish(&built(vec![on_class]), &[]).await;
    assert_eq!(
        (outcome.events_posted, outcome.events_skipped),
        (1, 0),
        "{outcome:?}"
    );
    let last = mock.seen_where(is_event).pop().map(|r| r.path);
    assert_eq!(
        last.as_deref(),
        Some("/apis/events.k8s.io/v1/namespaces/default/events")
    );
}
