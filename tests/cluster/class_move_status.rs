//! Ingresses that stop being ours lose the status address we wrote, and only that: the whole
//! controller against the mocked API server, the moves told by watch events. An Ingress of
//! ours gets our address; it moves to another class (`spec.ingressClassName`, or the legacy
//! `kubernetes.io/ingress.class` annotation), or its IngressClass is handed to another
//! controller, and the leader clears its status, with the resourceVersion it decided on as a
//! precondition; one whose new controller already wrote its own address is not touched. Every
//! call stays within src/cluster/rbac.rs (the mock checks it).

use crate::support::backends::{self, Backend};
use crate::support::mock_api::{
    INGRESSES, Mock, MockApi, Seen, T, controller_settings, ingress_class, loopback, web_ingress,
    web_lists,
};
use crate::support::wait::wait_until;

use http::Method;
use portcullis::cluster::Controller;
use serde_json::{Value, json};

/// Where the IngressClass watch events are pushed (cluster-scoped).
const INGRESS_CLASSES: &str = "/apis/networking.k8s.io/v1/ingressclasses";

fn status_path(name: &str) -> String {
    format!("{INGRESSES}/{name}/status")
}

/// `ingress` at resourceVersion `rv`, showing `lb` in `status.loadBalancer.ingress`.
fn shown(mut ingress: Value, rv: &str, lb: Value) -> Value {
    ingress["metadata"]["resourceVersion"] = json!(rv);
    ingress["status"] = json!({"loadBalancer": {"ingress": lb}});
    ingress
}

/// [`web_ingress`] `name` at resourceVersion `rv`.
fn web_ingress_at(name: &str, rv: &str) -> Value {
    let mut ingress = web_ingress(name);
    ingress["metadata"]["resourceVersion"] = json!(rv);
    ingress
}

/// Our address, as `--publish-status-address 10.0.0.1` ([`controller_settings`]) writes it.
fn our_address() -> Value {
    json!([{"ip": "10.0.0.1"}])
}

/// A status patch that clears `status.loadBalancer.ingress`.
fn is_clear(r: &Seen) -> bool {
    r.is_status_patch() && r.body["status"]["loadBalancer"].get("ingress") == Some(&Value::Null)
}

fn modified(mock: &Mock, path: &str, object: Value) {
    mock.push(path, json!({"type": "MODIFIED", "object": object}));
}

/// The controller serving `ingresses` (all ours), once each that showed no status has had
/// our address patched in (the store does not show it yet: see [`shown`]), and the Ingress
/// watch is open.
async fn publishing(ingresses: Vec<Value>) -> (Mock, Controller, Backend) {
    let backend = backends::http("web").await;
    let names: Vec<String> = ingresses
        .iter()
        .filter(|i| i.get("status").is_none())
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let mock = MockApi::new(web_lists(&backend, ingresses))
        .with_leases()
        .start();
    let controller = mock.controller(loopback(), controller_settings()).await;
    for name in &names {
        let path = status_path(name);
        mock.wait_count(1, |r| r.is(Method::PATCH, &path)).await;
    }
    assert!(
        wait_until(T, || async { mock.open_watches(INGRESSES) >= 1 }).await,
        "no Ingress watch"
    );
    (mock, controller, backend)
}

#[tokio::test]
async fn an_ingress_moved_to_another_class_loses_the_address_we_wrote() {
    let mut legacy = web_ingress("legacy");
    if let Some(spec) = legacy["spec"].as_object_mut() {
        spec.remove("ingressClassName");
    }
    legacy["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "portcullis"});
    let (mock, controller, _backend) = publishing(vec![web_ingress("moved"), legacy.clone()]).await;
    // The store catches up with what we wrote.
    modified(
        &mock,
        INGRESSES,
        shown(web_ingress("moved"), "11", our_address()),
    );
    modified(&mock, INGRESSES, shown(legacy.clone(), "12", our_address()));

    // Both move to nginx, one by its class name, one by the legacy annotation; neither has
    // been picked up by the new controller yet, so both still show our address.
    let mut moved = shown(web_ingress("moved"), "13", our_address());
    moved["spec"]["ingressClassName"] = json!("nginx");
    modified(&mock, INGRESSES, moved);
    let mut legacy = shown(legacy, "14", our_address());
    legacy["metadata"]["annotations"]["kubernetes.io/ingress.class"] = json!("nginx");
    modified(&mock, INGRESSES, legacy);

    mock.wait_count(2, is_clear).await;
    let mut clears: Vec<(String, Value)> = mock
        .seen_where(is_clear)
        .into_iter()
        .map(|r| (r.path, r.body))
        .collect();
    clears.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        clears,
        [
            (
                status_path("legacy"),
                json!({"metadata": {"resourceVersion": "14"},
                       "status": {"loadBalancer": {"ingress": null}}})
            ),
            (
                status_path("moved"),
                json!({"metadata": {"resourceVersion": "13"},
                       "status": {"loadBalancer": {"ingress": null}}})
            ),
        ],
        "cleared once each, on the version that moved"
    );
    controller.until_stopped(async {}).await.unwrap();
}

#[tokio::test]
async fn ingresses_of_a_class_handed_to_another_controller_lose_the_address_we_wrote() {
    // `web` is listed with our address already (written before this replica started), so
    // the store shows it whatever the order of the two watches' events; `probe`'s patch shows
    // that a publish has seen both as ours.
    let (mock, controller, _backend) = publishing(vec![
        shown(web_ingress("web"), "10", our_address()),
        web_ingress("probe"),
    ])
    .await;
    assert!(
        wait_until(T, || async { mock.open_watches(INGRESS_CLASSES) >= 1 }).await,
        "no IngressClass watch"
    );
    // IngressClass `portcullis` now names another controller: its Ingresses are not ours.
    // `probe` shows nothing in the store (its write was never echoed), so it needs no clear.
    let mut class = ingress_class();
    class["metadata"]["resourceVersion"] = json!("12");
    class["spec"]["controller"] = json!("k8s.io/ingress-nginx");
    modified(&mock, INGRESS_CLASSES, class);

    mock.wait_count(1, is_clear).await;
    let clear = mock.seen_where(is_clear).remove(0);
    assert_eq!(clear.path, status_path("web"));
    assert_eq!(clear.body["metadata"]["resourceVersion"], "10");
    controller.until_stopped(async {}).await.unwrap();
}

#[tokio::test]
async fn an_ingress_its_new_controller_already_published_is_left_alone() {
    let (mock, controller, _backend) = publishing(vec![web_ingress("taken")]).await;
    modified(
        &mock,
        INGRESSES,
        shown(web_ingress("taken"), "11", our_address()),
    );
    // Moved to nginx, whose controller has already written its own address.
    let mut taken = shown(web_ingress("taken"), "12", json!([{"ip": "192.0.2.50"}]));
    taken["spec"]["ingressClassName"] = json!("nginx");
    modified(&mock, INGRESSES, taken);

    // A barrier instead of a sleep: publishes run one after another, each on the newest
    // build. `probe-1` comes after the move on the same watch, so the publish that writes its
    // status has seen `taken` leave; `probe-2`, added once that write is seen, is written by a
    // later publish, which starts only when that one has finished.
    for (name, rv) in [("probe-1", "13"), ("probe-2", "14")] {
        mock.push(
            INGRESSES,
            json!({"type": "ADDED", "object": web_ingress_at(name, rv)}),
        );
        let path = status_path(name);
        mock.wait_count(1, |r| r.is(Method::PATCH, &path)).await;
    }
    let taken_path = status_path("taken");
    assert_eq!(
        mock.count(|r| r.is(Method::PATCH, &taken_path)),
        1,
        "only our first write: the new controller's address is not ours to clear: {:#?}",
        mock.seen_where(Seen::is_status_patch)
    );
    assert_eq!(mock.count(is_clear), 0);
    controller.until_stopped(async {}).await.unwrap();
}
