//! The publisher and refused Ingresses, against the mocked API server: an Ingress the model
//! refused for an annotation (an error diagnostic with reason `UnsupportedAnnotation` or
//! `UnknownAnnotation`, see docs/migrating.md) is not served, so it gets no status address and
//! an address it shows is cleared; the same reasons as warnings (a class that relaxes them)
//! leave the Ingress served and published; once fixed it gets its address again.

use crate::support::mock_api::{
    FakeView, Mock, MockApi, Seen, built, ingress, lease_settings, with_status,
};

use std::sync::Arc;

use portcullis::cluster::status::{
    ClusterView, LeaderElector, Publisher, PublisherSettings, StatusAddresses,
    parse_status_addresses,
};
use portcullis::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use serde_json::{Value, json};

fn ingress_ref(name: &str) -> ObjectRef {
    ObjectRef::namespaced("Ingress", "apps", name)
}

/// The diagnostic a refusal (`error`) or a relaxed refusal (`warning`) of `name` carries.
fn unsupported(name: &str, error: bool) -> Diagnostic {
    let field = "metadata.annotations[\"nginx.ingress.kubernetes.io/whitelist-source-range\"]";
    let message = "annotation nginx.ingress.kubernetes.io/whitelist-source-range is not supported";
    if error {
        Diagnostic::error(
            ingress_ref(name),
            field,
            Reason::UnsupportedAnnotation,
            message,
        )
    } else {
        Diagnostic::warning(
            ingress_ref(name),
            field,
            Reason::UnsupportedAnnotation,
            message,
        )
    }
}

async fn leader_publisher(mock: &Mock, view: &Arc<FakeView>) -> (LeaderElector, Publisher) {
    let mut elector = LeaderElector::new(mock.client(), lease_settings());
    assert!(elector.step().await.unwrap());
    let settings = PublisherSettings {
        addresses: StatusAddresses::Static(parse_status_addresses("10.0.0.1")),
        watch_namespace: Some("apps".into()),
        update_status_on_shutdown: false,
        identity: "pod-a".into(),
    };
    let view: Arc<dyn ClusterView> = view.clone();
    let publisher = Publisher::new(mock.client(), settings, elector.leadership(), view);
    (elector, publisher)
}

/// The status patches sent so far, as (Ingress name, patch body).
fn patches(mock: &Mock) -> Vec<(String, Value)> {
    mock.seen_where(Seen::is_status_patch)
        .into_iter()
        .map(|p| {
            let name = p
                .path
                .trim_end_matches("/status")
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            (name, p.body)
        })
        .collect()
}

#[tokio::test]
async fn refused_ingresses_get_no_status_address_and_lose_the_one_they_had() {
    let mock = MockApi::default().with_leases().start();
    let view = Arc::new(FakeView::default());
    // `served` and `fresh` show nothing; `refused` still shows the address of its last good
    // version; `relaxed` carries the same annotation under a class that only warns.
    view.put(ingress("apps", "served", "10"));
    view.put(with_status(
        ingress("apps", "refused", "11"),
        json!([{"ip": "10.0.0.1"}]),
    ));
    view.put(ingress("apps", "fresh", "12"));
    view.put(ingress("apps", "relaxed", "13"));
    let (_elector, publisher) = leader_publisher(&mock, &view).await;
    let ours = [
        ingress_ref("fresh"),
        ingress_ref("refused"),
        ingress_ref("relaxed"),
        ingress_ref("served"),
    ];
    let build = built(vec![
        unsupported("refused", true),
        unsupported("fresh", true),
        unsupported("relaxed", false),
    ]);

    let outcome = publisher.publish(&build, &ours).await;
    assert_eq!(outcome.status_patched, 3, "{outcome:?}");
    let mut sent = patches(&mock);
    sent.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        sent,
        [
            (
                "refused".to_string(),
                json!({"status": {"loadBalancer": {"ingress": null}}})
            ),
            (
                "relaxed".to_string(),
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}})
            ),
            (
                "served".to_string(),
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}})
            ),
        ],
        "a refused Ingress with no address gets none; one with an address has it cleared"
    );

    // The cleared status reached the store: nothing more to write for it.
    view.put(ingress("apps", "refused", "14"));
    view.put(with_status(
        ingress("apps", "served", "15"),
        json!([{"ip": "10.0.0.1"}]),
    ));
    view.put(with_status(
        ingress("apps", "relaxed", "16"),
        json!([{"ip": "10.0.0.1"}]),
    ));
    publisher.publish(&build, &ours).await;
    assert_eq!(mock.count(Seen::is_status_patch), 3);

    // Fixed (no refusal in the next build): the address is published again.
    let fixed = built(vec![unsupported("fresh", true)]);
    publisher.publish(&fixed, &ours).await;
    let sent = patches(&mock);
    assert_eq!(sent.len(), 4, "{sent:#?}");
    assert_eq!(
        sent[3],
        (
            "refused".to_string(),
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}})
        )
    );
}
